"""A small process supervisor: children in their own process groups, restarted with backoff.

What supervisord and systemd do for a service (``autorestart``/``Restart=``, ``startsecs``,
exponential back-off, ``KillMode=control-group``), for the processes of the local online stack
(``shoprec serve``: tritonserver and the gateway; the near-real-time updater the same way):

* every child runs in a new session (process group); stopping it signals the **whole group**
  (SIGTERM, SIGKILL after a grace period) and waits until no process of the group is left, so
  no Python-backend stub outlives a killed tritonserver;
* after a child's group is gone its ``cleanup`` runs (tritonserver: its ``/dev/shm`` regions);
* a child that exits is restarted per its :class:`Restart` policy after a :class:`Backoff`
  delay (1 s, 2 s, 4 s ... up to 30 s; back to 1 s once it has run for 60 s);
* its output is appended to a log file that survives restarts (rotated once past a size), and
  every exit and restart is logged on the ``shoprec.supervisor`` logger.

Example::

    sup = Supervisor([ChildSpec("updater", lambda: ["python", "-m", "x"], log_file=Path("u.log"))])
    sup.start_child("updater")
    sup.watch()       # a background thread restarts children that exit
    ...
    sup.stop()        # every child's group, in reverse order of the specs
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Final

logger = logging.getLogger("shoprec.supervisor")

MAX_LOG_BYTES: Final = 64 * 1024 * 1024  # a child's log is rotated (one old copy) past this


class Restart(StrEnum):
    """When a child that exited is started again."""

    ALWAYS = "always"  # whatever its exit code
    ON_FAILURE = "on-failure"  # when its exit code is not 0 (or it was killed by a signal)
    NEVER = "never"


@dataclass(frozen=True)
class Backoff:
    """Restart delays in seconds: ``initial_s * factor**n`` for the n-th restart in a row,
    at most ``max_s``; a child that ran ``reset_after_s`` seconds starts the count again."""

    initial_s: float = 1.0
    factor: float = 2.0
    max_s: float = 30.0
    reset_after_s: float = 60.0

    def delay(self, failures: int) -> float:
        """Seconds before restart number ``failures`` (0-based) of a row of failures."""
        return float(min(self.max_s, self.initial_s * self.factor**failures))


@dataclass(frozen=True)
class ChildSpec:
    """One supervised process.

    Attributes:
        name: how logs and the API call it.
        command: the command line, built at every start.
        log_file: stdout and stderr, appended across restarts.
        env: its environment (None: this process's).
        cwd: its working directory.
        restart / backoff: the restart policy.
        cleanup: called after its process group is gone (every exit and stop).
        stop_grace_s: SIGTERM to SIGKILL, seconds.
    """

    name: str
    command: Callable[[], Sequence[str]]
    log_file: Path
    env: Mapping[str, str] | None = None
    cwd: Path | None = None
    restart: Restart = Restart.ALWAYS
    backoff: Backoff = field(default_factory=Backoff)
    cleanup: Callable[[], object] | None = None
    stop_grace_s: float = 25.0


def group_alive(pgid: int) -> bool:
    """Whether any process of process group ``pgid`` still exists."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def signal_group(pgid: int, sig: signal.Signals) -> None:
    """Send ``sig`` to process group ``pgid``; nothing if it is gone."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, sig)


def reap_group(pgid: int, grace_s: float) -> None:
    """After a group's leader exited: wait up to ``grace_s`` seconds for the rest of the group,
    then SIGKILL what is left and wait until it is gone."""
    deadline = time.monotonic() + grace_s
    while group_alive(pgid) and time.monotonic() < deadline:
        time.sleep(0.05)
    if group_alive(pgid):
        signal_group(pgid, signal.SIGKILL)
        while group_alive(pgid) and time.monotonic() < deadline + grace_s:
            time.sleep(0.05)


def rotate_log(path: Path, max_bytes: int = MAX_LOG_BYTES) -> None:
    """Move ``path`` to ``path.1`` (replacing it) when it is larger than ``max_bytes``."""
    with contextlib.suppress(FileNotFoundError):
        if path.stat().st_size > max_bytes:
            os.replace(path, path.with_name(path.name + ".1"))


class ProcessGroup:
    """One child process in a new session; :meth:`stop` ends its whole process group."""

    def __init__(self, process: subprocess.Popen[bytes]) -> None:
        self.process = process
        self.started = time.monotonic()

    @classmethod
    def start(
        cls,
        command: Sequence[str],
        log_file: Path,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
    ) -> ProcessGroup:
        """Start ``command`` with its output appended to ``log_file`` (created, rotated)."""
        log_file.parent.mkdir(parents=True, exist_ok=True)
        rotate_log(log_file)
        with log_file.open("ab") as log:  # the child keeps its own descriptor
            process = subprocess.Popen(
                list(command),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=None if env is None else dict(env),
                cwd=cwd,
                start_new_session=True,
            )
        return cls(process)

    @property
    def pid(self) -> int:
        """The leader's pid, which is also the process group id."""
        return self.process.pid

    def poll(self) -> int | None:
        return self.process.poll()

    def stop(self, grace_s: float = 25.0) -> int:
        """SIGTERM the group, SIGKILL it after ``grace_s`` seconds; returns when no process of
        the group is left, with the leader's exit code."""
        signal_group(self.pid, signal.SIGTERM)
        try:
            code = self.process.wait(grace_s)
        except subprocess.TimeoutExpired:
            signal_group(self.pid, signal.SIGKILL)
            code = self.process.wait()
        reap_group(self.pid, grace_s)
        return code


@dataclass
class ChildState:
    """What the supervisor knows of one child (read it under no lock: a snapshot)."""

    spec: ChildSpec
    group: ProcessGroup | None = None
    wanted: bool = False  # started and not stopped by the supervisor's user
    restarts: int = 0  # restarts so far
    failures: int = 0  # restarts in a row (the backoff exponent)
    restart_at: float | None = None  # monotonic time of the pending restart
    last_exit: int | None = None


class Supervisor:
    """Starts, watches and stops :class:`ChildSpec` processes (see the module docstring).

    Thread-safe: :meth:`watch` runs the restarts on a daemon thread while the caller waits.
    """

    def __init__(self, specs: Sequence[ChildSpec], poll_s: float = 0.2) -> None:
        names = [s.name for s in specs]
        if len(set(names)) != len(names):
            raise ValueError(f"child names must be unique, got {names}")
        self._children = {s.name: ChildState(s) for s in specs}
        self._poll_s = poll_s
        self._lock = threading.RLock()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    def child(self, name: str) -> ChildState:
        """The state of child ``name``.

        Raises:
            KeyError: no such child.
        """
        return self._children[name]

    def pid(self, name: str) -> int | None:
        """The process (group) id of child ``name`` while it runs, else None."""
        group = self._children[name].group
        return None if group is None or group.poll() is not None else group.pid

    def running(self, name: str) -> bool:
        return self.pid(name) is not None

    def start_child(self, name: str) -> int:
        """Start child ``name`` now (it is then restarted per its policy); returns its pid."""
        with self._lock:
            state = self._children[name]
            if state.group is not None and state.group.poll() is None:
                raise RuntimeError(f"{name} is already running (pid {state.group.pid})")
            spec = state.spec
            state.group = ProcessGroup.start(spec.command(), spec.log_file, spec.env, spec.cwd)
            state.wanted, state.restart_at = True, None
            logger.info("%s started (pid %d)", name, state.group.pid)
            return state.group.pid

    def stop_child(self, name: str) -> int | None:
        """Stop child ``name`` (its whole group) and do not restart it; returns its exit code
        (None if it was not running)."""
        with self._lock:
            state = self._children[name]
            state.wanted, state.restart_at = False, None
            group, state.group = state.group, None
        if group is None:
            return None
        code = group.stop(state.spec.stop_grace_s)
        self._cleanup(state)
        return code

    def watch(self) -> None:
        """Restart exited children from a daemon thread until :meth:`stop`."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="supervisor", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        """Stop watching, then every child in reverse order of the specs. Idempotent."""
        self._stopping.set()
        if self._thread is not None:
            self._thread.join()
        for name in reversed(list(self._children)):
            self.stop_child(name)

    def check(self) -> None:
        """One round: notice exited children (end their groups, clean up, schedule a restart)
        and start those whose restart is due. :meth:`watch` calls it every ``poll_s``."""
        now = time.monotonic()
        for name, state in self._children.items():
            with self._lock:
                if not state.wanted or self._stopping.is_set():
                    continue
                group = state.group
                if group is not None and (code := group.poll()) is not None:
                    self._exited(name, state, group, code, now)
                elif group is None and state.restart_at is not None and now >= state.restart_at:
                    state.restarts += 1
                    self.start_child(name)

    def _exited(
        self, name: str, state: ChildState, group: ProcessGroup, code: int, now: float
    ) -> None:
        uptime = now - group.started
        # What is left of the group are orphans (e.g. Python-backend stubs of a killed
        # tritonserver): nothing coordinates them any more, so they get SIGKILL at once.
        signal_group(group.pid, signal.SIGKILL)
        reap_group(group.pid, state.spec.stop_grace_s)
        state.group, state.last_exit = None, code
        self._cleanup(state)
        spec = state.spec
        if spec.restart is Restart.NEVER or (spec.restart is Restart.ON_FAILURE and code == 0):
            state.wanted = False
            logger.warning("%s exited with code %d after %.1f s; not restarted", name, code, uptime)
            return
        if uptime >= spec.backoff.reset_after_s:
            state.failures = 0
        delay = spec.backoff.delay(state.failures)
        state.failures += 1
        state.restart_at = now + delay
        logger.warning(
            "%s exited with code %d after %.1f s; restart %d in %.1f s",
            name,
            code,
            uptime,
            state.restarts + 1,
            delay,
        )

    def _cleanup(self, state: ChildState) -> None:
        if state.spec.cleanup is not None:
            try:
                state.spec.cleanup()
            except Exception:
                logger.exception("%s: cleanup failed", state.spec.name)

    def _loop(self) -> None:
        while not self._stopping.wait(self._poll_s):
            try:
                self.check()
            except Exception:  # a failed start: retried on the next round's schedule
                logger.exception("supervisor round failed")
