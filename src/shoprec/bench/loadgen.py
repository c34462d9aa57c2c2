"""The load generator: the child process ``python -m shoprec.bench.loadgen SPEC RESULT`` that
:func:`shoprec.bench.runner.run_benchmark` starts, running every phase with locust as a
library (headless, closed loop: each user sends its next request as soon as the last one is
answered).

Why a child process, and why :func:`main` imports locust before anything else: importing
locust monkey-patches the standard library with gevent, and gRPC must be switched to gevent
mode (``grpc.experimental.gevent.init_gevent``) before its first channel, else a blocking call
stalls every simulated user. Neither is safe in a process that already started threads and
gRPC channels (the stack's readiness probes, Feast), so the child imports locust first. Hence
nothing at this module's level, nor in ``shoprec.bench``, imports locust, gevent, gRPC, numpy
or the store, and ``shoprec.bench`` does not import this module (running it with ``-m`` would
then import it twice).

``SPEC`` (JSON, written by the runner): ``endpoints`` (``gateway_url``, ``triton_grpc_url``,
``triton_metrics_url``; the Triton ones null for the write side), ``users`` (levels),
``workloads`` (:class:`Workload` values, run in this order within each level), ``seconds``
and ``warmup_s`` (per phase), ``k``, ``seed``, ``breakdown_users`` (the level whose phases
snapshot the servers' ``/metrics``), ``samples`` (:class:`Samples` as a dict), ``features``
(an ``.npz`` of encoded customer features, one row per customer, for ``triton_recommend``)
and, for the write workloads, ``write_key`` (the ``X-API-Key`` of ``POST /v1/events``;
every answer must be 202 with every event stored).

``RESULT`` (JSON): ``{"phases": [...]}``, per phase the workload, users, the
:class:`LatencySummary` as a dict, ``loadgen_cpu_pct`` (% of one core), ``machine_cpu_pct``
(% of all cores, or null), the five most frequent ``errors`` and ``metrics`` (the Prometheus
texts ``gateway_before`` / ``gateway_after`` / ``triton_before`` / ``triton_after``, or null).
One progress line per phase goes to stdout (the runner logs it); locust's and gRPC's
messages go to stderr (the runner's ``loadgen.log``).
"""

from __future__ import annotations

import json
import os
import random
import sys
import time
import urllib.request
from collections import Counter
from dataclasses import asdict
from pathlib import Path
from typing import Any

from shoprec.bench.config import REQUEST_TIMEOUT_S, BenchError
from shoprec.bench.machine import busy_percent, cpu_times
from shoprec.bench.report import format_cell
from shoprec.bench.stats import summarize
from shoprec.bench.workloads import (
    EVENT_BATCHES,
    EVENTS_ROUTE,
    GATEWAY_ROUTES,
    TRITON_MODELS,
    WORKLOAD_LABELS,
    Samples,
    Workload,
    event_batch,
    gateway_paths,
)


class Recorder:
    """locust ``request`` event listener keeping the latencies (ms) of a measured window only."""

    def __init__(self) -> None:
        self.recording = False
        self.latencies_ms: list[float] = []
        self.failures = 0
        self.errors: Counter[str] = Counter()

    def __call__(
        self,
        request_type: str,
        name: str,
        response_time: float,
        response_length: int,
        exception: BaseException | None = None,
        **kwargs: Any,
    ) -> None:
        if not self.recording:
            return
        if exception is None:
            self.latencies_ms.append(response_time)
        else:
            self.failures += 1
            self.errors[f"{type(exception).__name__}: {exception}"[:200]] += 1


def _fetch(url: str) -> str:
    with urllib.request.urlopen(url, timeout=REQUEST_TIMEOUT_S) as response:
        text: str = response.read().decode()
    return text


def _user_class_name(workload: Workload) -> str:
    """``GatewayRecommendUser`` for ``gateway_recommend`` (the name locust logs)."""
    return "".join(part.title() for part in workload.value.split("_")) + "User"


def main(spec_path: Path, result_path: Path) -> None:
    """Run every phase of the spec at ``spec_path`` with locust; write the phase results to
    ``result_path``, then end the process (``os._exit(0)``, see below)."""
    import locust  # first: monkey-patches the standard library with gevent
    from grpc.experimental import gevent as grpc_gevent

    grpc_gevent.init_gevent()  # before any gRPC channel exists

    import gevent
    import numpy as np
    import tritonclient.grpc as grpcclient
    from locust.contrib.fasthttp import FastHttpUser
    from locust.env import Environment

    from shoprec import schema as s
    from shoprec.gateway.triton import RANKED_OUTPUTS, recommend_inputs, similar_inputs

    spec = json.loads(spec_path.read_text())
    endpoints, samples, k = spec["endpoints"], Samples(**spec["samples"]), spec["k"]
    workloads = [Workload(w) for w in spec["workloads"]]
    rng = random.Random(spec["seed"])

    paths = {w: gateway_paths(w, samples, k) for w in workloads if w in GATEWAY_ROUTES}
    triton_requests: dict[Workload, list[Any]] = {}
    if Workload.TRITON_RECOMMEND in workloads:
        with np.load(spec["features"]) as arrays:
            features = {name: arrays[name] for name in arrays.files}
        rows = len(next(iter(features.values())))
        triton_requests[Workload.TRITON_RECOMMEND] = [
            recommend_inputs({n: a[i : i + 1] for n, a in features.items()}) for i in range(rows)
        ]
    if Workload.TRITON_SIMILAR in workloads:
        triton_requests[Workload.TRITON_SIMILAR] = [similar_inputs([a]) for a in samples.articles]

    class GatewayUser(FastHttpUser):
        abstract = True
        network_timeout = REQUEST_TIMEOUT_S
        connection_timeout = REQUEST_TIMEOUT_S
        wait_time = locust.constant(0)
        paths: list[str] = []
        label = ""

        @locust.task
        def get(self) -> None:
            self.client.get(self.paths[rng.randrange(len(self.paths))], name=self.label)

    class EventsUser(FastHttpUser):
        """Posts batches of new purchases; a failure unless every event is stored."""

        abstract = True
        network_timeout = REQUEST_TIMEOUT_S
        connection_timeout = REQUEST_TIMEOUT_S
        wait_time = locust.constant(0)
        size = 1
        label = ""

        def on_start(self) -> None:
            self.prefix = f"bench-{os.getpid()}-{id(self):x}-{rng.randrange(1 << 30):x}"
            self.serial = 0
            self.headers = {"X-API-Key": spec["write_key"]}

        @locust.task
        def post(self) -> None:
            body = event_batch(samples, self.size, self.prefix, self.serial, rng)
            self.serial += self.size
            with self.client.post(
                EVENTS_ROUTE, json=body, headers=self.headers, name=self.label, catch_response=True
            ) as answer:
                if answer.status_code != 202:
                    answer.failure(f"HTTP {answer.status_code}: {answer.text[:200]}")
                elif answer.json()["stored"] != self.size:
                    answer.failure(f"not every event stored: {answer.text[:200]}")

    class TritonUser(locust.User):
        abstract = True
        wait_time = locust.constant(0)
        model = ""
        requests: list[Any] = []
        label = ""

        def on_start(self) -> None:
            self.triton = grpcclient.InferenceServerClient(endpoints["triton_grpc_url"])
            self.outputs = [grpcclient.InferRequestedOutput(n) for n in RANKED_OUTPUTS]

        def on_stop(self) -> None:
            self.triton.close()

        @locust.task
        def infer(self) -> None:
            inputs = self.requests[rng.randrange(len(self.requests))]
            error: Exception | None = None
            length = 0
            start = time.perf_counter()
            try:
                answer = self.triton.infer(
                    self.model, inputs, outputs=self.outputs, client_timeout=REQUEST_TIMEOUT_S
                )
                ids = answer.as_numpy(s.T_ARTICLE_IDS)
                if ids is None:
                    raise BenchError(f"{self.model}: no {s.T_ARTICLE_IDS} output")
                length = int(ids.size)
            except Exception as exc:  # any failure of the call is a failed request
                error = exc
            self.environment.events.request.fire(
                request_type="grpc",
                name=self.label,
                response_time=(time.perf_counter() - start) * 1e3,
                response_length=length,
                exception=error,
                context={},
            )

    def user_class(workload: Workload) -> type[locust.User]:
        attrs: dict[str, Any] = {"label": WORKLOAD_LABELS[workload]}
        if workload in GATEWAY_ROUTES:
            base: type[locust.User] = GatewayUser
            attrs["paths"] = paths[workload]
        elif workload in EVENT_BATCHES:
            base = EventsUser
            attrs["size"] = EVENT_BATCHES[workload]
        else:
            base = TritonUser
            attrs.update(model=TRITON_MODELS[workload], requests=triton_requests[workload])
        return type(_user_class_name(workload), (base,), attrs)

    def metrics() -> dict[str, str]:
        snapshot = {"gateway": _fetch(f"{endpoints['gateway_url']}/metrics")}
        if endpoints.get("triton_metrics_url"):
            snapshot["triton"] = _fetch(endpoints["triton_metrics_url"])
        return snapshot

    phases = []
    for users in spec["users"]:
        for workload in workloads:
            env = Environment(
                user_classes=[user_class(workload)],
                host=endpoints["gateway_url"],
                stop_timeout=REQUEST_TIMEOUT_S,
            )
            recorder = Recorder()
            env.events.request.add_listener(recorder)
            runner = env.create_local_runner()
            runner.start(users, spawn_rate=users)
            gevent.sleep(spec["warmup_s"])
            with_metrics = users == spec["breakdown_users"]
            before = metrics() if with_metrics else {}
            cpu0, machine0, t0 = time.process_time(), cpu_times(), time.perf_counter()
            recorder.recording = True
            gevent.sleep(spec["seconds"])
            recorder.recording = False
            elapsed = time.perf_counter() - t0
            cpu1, machine1 = time.process_time(), cpu_times()
            after = metrics() if with_metrics else {}
            runner.quit()
            summary = summarize(recorder.latencies_ms, recorder.failures, elapsed)
            phases.append(
                {
                    "workload": workload.value,
                    "users": users,
                    "summary": asdict(summary),
                    "loadgen_cpu_pct": 100 * (cpu1 - cpu0) / elapsed,
                    "machine_cpu_pct": busy_percent(machine0, machine1),
                    "errors": dict(recorder.errors.most_common(5)),
                    "metrics": {
                        f"{source}_{when}": text
                        for when, snap in (("before", before), ("after", after))
                        for source, text in snap.items()
                    }
                    or None,
                }
            )
            print(
                f"{users:>3} users  {WORKLOAD_LABELS[workload]:<28} {summary.requests:>6} req "
                f"{summary.failures:>4} failed {summary.throughput_rps:8.1f} req/s  "
                f"p50 {format_cell(summary.p50_ms)} p99 {format_cell(summary.p99_ms)} ms",
                flush=True,
            )
            for message, count in recorder.errors.most_common(3):
                print(f"      {count} x {message}", flush=True)
    result_path.write_text(json.dumps({"phases": phases}))
    sys.stdout.flush()
    sys.stderr.flush()
    # Skip interpreter shutdown: gRPC's gevent integration can block it on its poller threads.
    os._exit(0)


if __name__ == "__main__":
    if len(sys.argv) != 3:
        raise SystemExit(
            "usage: python -m shoprec.bench.loadgen SPEC_JSON RESULT_JSON "
            "(run by shoprec.bench.run_benchmark)"
        )
    main(Path(sys.argv[1]), Path(sys.argv[2]))
