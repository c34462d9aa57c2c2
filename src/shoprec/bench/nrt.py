"""Near-real-time benchmark (``shoprec bench --nrt``): how long an event takes to change what
the API answers, under a steady event load while reads run.

It starts the whole stack (tritonserver, gateway, feature updater) on free ports over the
dataset's Triton repository and feature repo, with a write key of its own, and runs for
``seconds``:

* an event load: ``events_per_s`` purchase events of known customers and articles, posted in
  batches of ``batch`` at a steady pace (work for the updater: each recomputes a customer);
* a read load: ``readers`` threads asking personalised recommendations of known customers
  back to back;
* probes, one at a time:

  - ``purchase -> personalised``: a purchase of a customer the store does not know; the time
    from the 202 of ``POST /v1/events`` to the first ``GET .../recommendations`` answered with
    ``source: personalised`` (the updater read the log, recomputed the customer with
    ``encode_customer_state`` and wrote the store; the gateway read it and Triton ranked);
  - ``not_interested -> excluded``: a known customer's top article marked ``not_interested``;
    the time from the 202 to the first answer without it (the shopper-state path);
  - ``article insert -> retrievable``: a copy of a random catalog article under a new id
    (``PUT /v1/articles``, its display fields); the time from the 201 to the first
    ``GET /v1/articles/{original}/similar`` that lists the new id (the updater read the
    ``article_put``, Triton's ``article_encoder`` encoded it, the delta was written, and the
    ``similar_items`` step merged it). The copy is deleted after the probe (a deleted delta
    article is never listed).

  The probing client polls every ``poll_ms`` (the resolution of the measurement).

Before the loads start, the personalised read latency at one user is measured alone
(``idle_read``) for comparison with ``shoprec bench --users 1``.

Latencies in milliseconds, nearest-rank percentiles (:func:`shoprec.bench.stats.percentile`).
Targets: event-to-effect p99 <= 1,000 ms; article insert to retrievable p99 <= 5,000 ms.
"""

from __future__ import annotations

import json
import random
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

import httpx
import pyarrow.parquet as pq

from shoprec import schema as s
from shoprec.bench.config import BenchError
from shoprec.bench.machine import machine_facts
from shoprec.bench.stats import percentile
from shoprec.featurestore.tables import ARTICLES_FILE, CUSTOMERS_FILE, ONLINE_DATA_DIR
from shoprec.featurestore.versions import current_dir

BENCH_NRT_JSON: Final = "bench-nrt.json"
BENCH_NRT_MD: Final = "bench-nrt.md"
TARGET_EFFECT_P99_MS: Final = 1000.0
TARGET_INSERT_P99_MS: Final = 5000.0
UNLIMITED: Final = "100000000/second"


@dataclass(frozen=True)
class NrtBenchConfig:
    """What the NRT benchmark runs (see the module docstring)."""

    name: str
    triton_repo: Path
    feature_repo: Path
    out_dir: Path
    seconds: float = 30.0
    events_per_s: float = 200.0
    batch: int = 10
    readers: int = 1
    poll_ms: float = 10.0
    idle_seconds: float = 10.0
    probe_timeout_s: float = 10.0
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("seconds", "events_per_s", "poll_ms", "idle_seconds", "probe_timeout_s"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")
        if self.batch < 1 or self.readers < 0:
            raise ValueError(
                f"batch must be >= 1 and readers >= 0, got {self.batch}, {self.readers}"
            )


@dataclass
class Series:
    """Observations of one measured quantity (ms) and the failures."""

    values_ms: list[float] = field(default_factory=list)
    failures: int = 0

    def summary(self) -> dict[str, Any]:
        ordered = sorted(self.values_ms)
        out: dict[str, Any] = {"n": len(ordered), "failures": self.failures}
        for p in (50, 95, 99):
            out[f"p{p}_ms"] = round(percentile(ordered, p), 2) if ordered else None
        out["max_ms"] = round(ordered[-1], 2) if ordered else None
        return out


def _now() -> str:
    return datetime.now(UTC).isoformat()


class _Client:
    def __init__(self, base_url: str, key: str) -> None:
        self.http = httpx.Client(base_url=base_url, timeout=10.0)
        self.write = {"X-API-Key": key}

    def recommend(self, customer_id: str, k: int = 12) -> dict[str, Any]:
        response = self.http.get(f"/v1/customers/{customer_id}/recommendations", params={"k": k})
        response.raise_for_status()
        body: dict[str, Any] = response.json()
        return body

    def post(self, events: list[dict[str, Any]]) -> None:
        batch = [{"event_id": uuid.uuid4().hex, "timestamp": _now(), **e} for e in events]
        response = self.http.post("/v1/events", json={"events": batch}, headers=self.write)
        if response.status_code != 202 or response.json()["stored"] != len(batch):
            raise BenchError(f"events not stored: {response.status_code} {response.text[:300]}")

    def similar(self, article_id: str, k: int = 12) -> list[str]:
        response = self.http.get(f"/v1/articles/{article_id}/similar", params={"k": k})
        response.raise_for_status()
        return _ids(response.json())

    def copy_article(self, article_id: str, new_id: str) -> None:
        """PUT ``new_id`` with the display fields of ``article_id``."""
        shown = self.http.get(f"/v1/articles/{article_id}")
        shown.raise_for_status()
        fields = {k: v for k, v in shown.json().items() if k in s.ARTICLE_FIELDS and v}
        response = self.http.put(f"/v1/articles/{new_id}", json=fields, headers=self.write)
        if response.status_code != 201:
            raise BenchError(f"article not put: {response.status_code} {response.text[:300]}")

    def delete_article(self, article_id: str) -> None:
        self.http.delete(f"/v1/articles/{article_id}", headers=self.write).raise_for_status()

    def close(self) -> None:
        self.http.close()


def _ids(body: dict[str, Any]) -> list[str]:
    return [item[s.ARTICLE_ID] for item in body["items"]]


def _until(check: Callable[[], bool], timeout_s: float, poll_s: float) -> float | None:
    """Seconds until ``check()`` was true (None after ``timeout_s``)."""
    start = time.perf_counter()
    while time.perf_counter() - start < timeout_s:
        if check():
            return time.perf_counter() - start
        time.sleep(poll_s)
    return None


def run_nrt_benchmark(
    config: NrtBenchConfig, gateway_url: str, write_key: str, log: Callable[[str], None] = print
) -> dict[str, Any]:
    """Run the loads and probes against a running stack (its updater included); the result
    as written to ``out_dir/bench-nrt.json``.

    Raises:
        BenchError: the stack rejects the benchmark's requests.
    """
    data = current_dir(config.feature_repo) / ONLINE_DATA_DIR
    customers = pq.read_table(data / CUSTOMERS_FILE, columns=[s.CUSTOMER_ID]).column(0).to_pylist()
    articles = pq.read_table(data / ARTICLES_FILE, columns=[s.ARTICLE_ID]).column(0).to_pylist()
    rng = random.Random(config.seed)
    client = _Client(gateway_url, write_key)
    results: dict[str, Series] = {
        "idle_read": Series(),
        "loaded_read": Series(),
        "purchase_to_personalised": Series(),
        "not_interested_to_excluded": Series(),
        "article_insert_to_retrievable": Series(),
        "event_post": Series(),
    }

    log(f"idle personalised reads, 1 user, {config.idle_seconds:.0f} s")
    end = time.perf_counter() + config.idle_seconds
    while time.perf_counter() < end:
        t = time.perf_counter()
        try:
            client.recommend(rng.choice(customers))
            results["idle_read"].values_ms.append((time.perf_counter() - t) * 1000)
        except httpx.HTTPError:
            results["idle_read"].failures += 1

    stop = threading.Event()

    def event_load() -> None:
        own = _Client(gateway_url, write_key)
        interval = config.batch / config.events_per_s
        next_at = time.perf_counter()
        while not stop.is_set():
            events = [
                {
                    "type": "purchase",
                    "customer_id": rng.choice(customers),
                    "article_id": rng.choice(articles),
                    "price": 1.0,
                }
                for _ in range(config.batch)
            ]
            t = time.perf_counter()
            try:
                own.post(events)
                results["event_post"].values_ms.append((time.perf_counter() - t) * 1000)
            except (httpx.HTTPError, BenchError):
                results["event_post"].failures += 1
            next_at += interval
            time.sleep(max(0.0, next_at - time.perf_counter()))
        own.close()

    def read_load() -> None:
        own = _Client(gateway_url, write_key)
        while not stop.is_set():
            t = time.perf_counter()
            try:
                own.recommend(rng.choice(customers))
                results["loaded_read"].values_ms.append((time.perf_counter() - t) * 1000)
            except httpx.HTTPError:
                results["loaded_read"].failures += 1
        own.close()

    threads = [threading.Thread(target=event_load, daemon=True)]
    threads += [threading.Thread(target=read_load, daemon=True) for _ in range(config.readers)]
    log(
        f"event load {config.events_per_s:.0f} events/s (batches of {config.batch}), "
        f"{config.readers} reader(s), probes for {config.seconds:.0f} s"
    )
    for thread in threads:
        thread.start()
    poll_s = config.poll_ms / 1000
    end = time.perf_counter() + config.seconds
    n = 0
    while time.perf_counter() < end:
        n += 1
        fresh = f"bench-nrt-{uuid.uuid4().hex[:12]}"
        client.post(
            [{"type": "purchase", "customer_id": fresh, "article_id": rng.choice(articles)}]
        )
        took = _until(
            lambda c=fresh: client.recommend(c)["source"] == "personalised",  # type: ignore[misc]
            config.probe_timeout_s,
            poll_s,
        )
        _record(results["purchase_to_personalised"], took)

        known = rng.choice(customers)
        top = _ids(client.recommend(known))
        if top:
            client.post([{"type": "not_interested", "customer_id": known, "article_id": top[0]}])
            took = _until(
                lambda c=known, a=top[0]: a not in _ids(client.recommend(c)),  # type: ignore[misc]
                config.probe_timeout_s,
                poll_s,
            )
            _record(results["not_interested_to_excluded"], took)

        original = rng.choice(articles)
        copy = f"bench-new-{uuid.uuid4().hex[:12]}"
        client.copy_article(original, copy)
        took = _until(
            lambda a=original, c=copy: c in client.similar(a),  # type: ignore[misc]
            config.probe_timeout_s,
            poll_s,
        )
        _record(results["article_insert_to_retrievable"], took)
        client.delete_article(copy)
    stop.set()
    for thread in threads:
        thread.join(timeout=30)
    client.close()
    seconds = config.seconds
    out = {
        "name": config.name,
        "config": {k: str(v) if isinstance(v, Path) else v for k, v in asdict(config).items()},
        "machine": machine_facts(),
        "events_posted_per_s": round(
            (len(results["event_post"].values_ms) * config.batch) / seconds, 1
        ),
        "probes": n,
        "results": {name: series.summary() for name, series in results.items()},
        "target_effect_p99_ms": TARGET_EFFECT_P99_MS,
        "target_insert_p99_ms": TARGET_INSERT_P99_MS,
    }
    config.out_dir.mkdir(parents=True, exist_ok=True)
    (config.out_dir / BENCH_NRT_JSON).write_text(json.dumps(out, indent=2) + "\n")
    (config.out_dir / BENCH_NRT_MD).write_text(render_nrt(out))
    return out


def _record(series: Series, took: float | None) -> None:
    if took is None:
        series.failures += 1
    else:
        series.values_ms.append(took * 1000)


LABELS: Final = {
    "purchase_to_personalised": "purchase -> personalised (new customer), event to effect",
    "not_interested_to_excluded": "not_interested -> excluded, event to effect",
    "article_insert_to_retrievable": "PUT article (copy) -> in /similar of its original",
    "event_post": "POST /v1/events (load batches)",
    "idle_read": "personalised read, 1 user, no event load",
    "loaded_read": "personalised read during the event load",
}


def render_nrt(result: dict[str, Any]) -> str:
    """The result as a Markdown table (ms)."""
    c = result["config"]
    lines = [
        f"# shoprec bench --nrt: {result['name']}",
        "",
        f"{c['events_per_s']} events/s requested in batches of {c['batch']} "
        f"({result['events_posted_per_s']} acknowledged/s), {c['readers']} reader(s), "
        f"{c['seconds']} s, {result['probes']} probes, polled every {c['poll_ms']} ms.",
        "",
        "| measurement | n | failures | p50 ms | p95 ms | p99 ms | max ms |",
        "|---|---|---|---|---|---|---|",
    ]
    for key, label in LABELS.items():
        r = result["results"][key]
        cells = [
            r[f] if r[f] is not None else "n/a" for f in ("p50_ms", "p95_ms", "p99_ms", "max_ms")
        ]
        lines.append(
            f"| {label} | {r['n']} | {r['failures']} | " + " | ".join(map(str, cells)) + " |"
        )
    lines += [
        "",
        f"Targets: event-to-effect p99 <= {result['target_effect_p99_ms']:.0f} ms, article "
        f"insert to retrievable p99 <= {result.get('target_insert_p99_ms', 5000.0):.0f} ms.",
        "",
    ]
    return "\n".join(lines)
