"""The ``shoprec`` command line: thin wrappers that parse arguments and call the package."""

from __future__ import annotations

import json
import time
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from shoprec.config import Paths, PipelineConfig
from shoprec.errors import ShoprecError

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="shoprec: e-commerce recommendations (Two-Tower + DLRM + FAISS).")
console = Console(highlight=False)


class Source(StrEnum):
    """Input data sources."""

    COMPLETEJOURNEY = "completejourney"
    HM = "hm"
    SYNTHETIC = "synthetic"


NameOpt = Annotated[str | None, typer.Option(
    "--name", help="Dataset name: data/<name>, models/<name>. Default: the source name.")]
DataRoot = Annotated[Path, typer.Option("--data-root", help="Root of data/<name>.")]
ModelsRoot = Annotated[Path, typer.Option("--models-root", help="Root of models/<name>.")]
ConfigOpt = Annotated[Path | None, typer.Option(
    "--config", help="JSON file overriding PipelineConfig sections, e.g. "
    '{"two_tower": {"epochs": 2}}.', exists=True, dir_okay=False)]


def _paths(name: str, data_root: Path, models_root: Path) -> Paths:
    return Paths.for_name(name, data_root, models_root)


def _config(path: Path | None) -> PipelineConfig:
    if path is None:
        return PipelineConfig()
    try:
        return PipelineConfig.from_dict(json.loads(path.read_text()))
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        raise typer.BadParameter(f"{path}: {exc}", param_hint="--config") from exc


def _log(message: str) -> None:
    console.print(f"[dim]{time.strftime('%H:%M:%S')}[/dim] {message}")


def _fail(exc: Exception) -> typer.Exit:
    console.print(f"[bold red]error:[/bold red] {exc}")
    return typer.Exit(code=2)


def _table(title: str, rows: list[dict[str, Any]]) -> Table:
    table = Table(title=title)
    for col in rows[0] if rows else []:
        table.add_column(str(col), justify="right" if not isinstance(rows[0][col], str) else "left")
    for r in rows:
        table.add_row(*[f"{v:.4f}" if isinstance(v, float) else str(v) for v in r.values()])
    return table


def do_ingest(source: Source, paths: Paths, raw_dir: Path | None, scale: str, seed: int) -> None:
    """Ingest one source into ``paths.canonical``."""
    from shoprec.ingest import generate_synthetic, ingest_completejourney, ingest_hm

    if source is Source.COMPLETEJOURNEY:
        report = ingest_completejourney(paths.canonical)
    else:
        if source is Source.SYNTHETIC:
            raw_dir = raw_dir or paths.data_dir / "raw"
            counts = generate_synthetic(raw_dir, scale=scale, seed=seed)
            _log(f"synthetic H&M-schema CSVs ({scale}) written to {raw_dir}: {counts}")
        if raw_dir is None:
            raise typer.BadParameter("hm needs --raw-dir holding the Kaggle CSVs",
                                     param_hint="--raw-dir")
        report = ingest_hm(raw_dir, paths.canonical)
    info = report.to_dict()
    _log(f"ingested {source.value} into {paths.canonical}: {json.dumps(info, default=str)}")


@app.command()
def ingest(
    source: Annotated[Source, typer.Argument(help="completejourney | hm | synthetic")],
    raw_dir: Annotated[Path | None, typer.Option(
        "--raw-dir", help="hm: folder with articles.csv, customers.csv, transactions_train.csv;"
        " synthetic: where to write them (default data/<name>/raw).")] = None,
    scale: Annotated[str, typer.Option(help="synthetic: tiny | small | hm")] = "tiny",
    seed: Annotated[int, typer.Option(help="synthetic: random seed")] = 0,
    name: NameOpt = None,
    data_root: DataRoot = Path("data"),
    models_root: ModelsRoot = Path("models"),
) -> None:
    """Ingest raw data into the canonical Parquet tables (data/<name>/canonical)."""
    try:
        do_ingest(source, _paths(name or source.value, data_root, models_root), raw_dir, scale,
                  seed)
    except ShoprecError as exc:
        raise _fail(exc) from exc


def do_build_dataset(paths: Paths, config: PipelineConfig) -> None:
    from shoprec.pipeline import dataset_summary, run_build_dataset

    data = run_build_dataset(paths, config)
    console.print(_table(f"labelled dataset -> {paths.dataset}", dataset_summary(data)))


@app.command("build-dataset")
def build_dataset_cmd(name: Annotated[str, typer.Option(help="Dataset name")] = "completejourney",
                      config: ConfigOpt = None, data_root: DataRoot = Path("data"),
                      models_root: ModelsRoot = Path("models")) -> None:
    """Chronological windows, features as of each window, labels and sampled negatives."""
    try:
        do_build_dataset(_paths(name, data_root, models_root), _config(config))
    except ShoprecError as exc:
        raise _fail(exc) from exc


def do_train(paths: Paths, config: PipelineConfig) -> None:
    from shoprec.pipeline import run_train

    summary = run_train(paths, config, _log)
    console.print(_table(f"trained -> {paths.models_dir}", [
        {"step": k, "seconds": v} for k, v in summary["seconds"].items()]))


@app.command()
def train(name: Annotated[str, typer.Option(help="Dataset name")] = "completejourney",
          config: ConfigOpt = None, data_root: DataRoot = Path("data"),
          models_root: ModelsRoot = Path("models")) -> None:
    """Fit the preprocessing workflow, train Two-Tower and DLRM, build FAISS indexes."""
    try:
        do_train(_paths(name, data_root, models_root), _config(config))
    except ShoprecError as exc:
        raise _fail(exc) from exc


def do_evaluate(paths: Paths) -> dict[str, Any]:
    from shoprec.pipeline import run_evaluate

    report = run_evaluate(paths, log=_log)
    console.print(_table(
        f"test window {report['test_window']['start']}..{report['test_window']['end']}, "
        f"{report['test_customers']} customers",
        [{"model": n, **{m.upper(): v for m, v in r.items()}}
         for n, r in report["metrics"].items()]))
    console.print(_table("retrieval and ranker", [
        *({"metric": key, "value": v} for key, v in report["retrieval"].items()),
        *({"metric": f"ranker (labelled test set) {key}", "value": v}
          for key, v in report["ranker_test_set"].items()),
        *({"metric": f"ranker (test candidates) {key}", "value": v}
          for key, v in report["ranker_test_candidates"].items()),
    ]))
    console.print(f"report: {paths.models_dir / 'report.md'}")
    return report


@app.command()
def evaluate(name: Annotated[str, typer.Option(help="Dataset name")] = "completejourney",
             data_root: DataRoot = Path("data"), models_root: ModelsRoot = Path("models")) -> None:
    """Evaluate the two-stage pipeline and the baselines on the test window."""
    try:
        do_evaluate(_paths(name, data_root, models_root))
    except ShoprecError as exc:
        raise _fail(exc) from exc


@app.command()
def pipeline(
    source: Annotated[Source, typer.Argument(help="completejourney | hm | synthetic")] =
    Source.COMPLETEJOURNEY,
    raw_dir: Annotated[Path | None, typer.Option("--raw-dir", help="hm: Kaggle CSV folder")] = None,
    scale: Annotated[str, typer.Option(help="synthetic: tiny | small | hm")] = "tiny",
    seed: Annotated[int, typer.Option(help="synthetic: random seed")] = 0,
    name: NameOpt = None,
    config: ConfigOpt = None,
    data_root: DataRoot = Path("data"),
    models_root: ModelsRoot = Path("models"),
) -> None:
    """Run ingest -> build-dataset -> train -> evaluate end to end and print the report."""
    paths = _paths(name or source.value, data_root, models_root)
    cfg = _config(config)
    start = time.perf_counter()
    steps: list[dict[str, Any]] = []
    try:
        for step, fn in (
            ("ingest", lambda: do_ingest(source, paths, raw_dir, scale, seed)),
            ("build-dataset", lambda: do_build_dataset(paths, cfg)),
            ("train", lambda: do_train(paths, cfg)),
            ("evaluate", lambda: do_evaluate(paths)),
        ):
            t = time.perf_counter()
            _log(f"[bold]{step}[/bold]")
            fn()
            steps.append({"step": step, "seconds": round(time.perf_counter() - t, 1)})
    except ShoprecError as exc:
        raise _fail(exc) from exc
    steps.append({"step": "total", "seconds": round(time.perf_counter() - start, 1)})
    console.print(_table("pipeline wall time", steps))


class StoreKind(StrEnum):
    """Feast online stores."""

    SQLITE = "sqlite"
    REDIS = "redis"


@app.command()
def materialize(
    name: Annotated[str, typer.Option(help="Dataset name")] = "completejourney",
    online_store: Annotated[StoreKind, typer.Option(
        "--online-store", help="sqlite (default, a file under models/<name>) or redis")] =
    StoreKind.SQLITE,
    redis_url: Annotated[str, typer.Option("--redis-url", help="host:port of Redis")] =
    "127.0.0.1:6379",
    data_root: DataRoot = Path("data"),
    models_root: ModelsRoot = Path("models"),
) -> None:
    """Export encoded customer features and article display fields, load the Feast online store."""
    from shoprec.featurestore import materialize as run_materialize

    paths = _paths(name, data_root, models_root)
    try:
        report = run_materialize(paths.models_dir, paths.dataset, paths.canonical,
                                 online_store=online_store.value, redis_url=redis_url)
    except ShoprecError as exc:
        raise _fail(exc) from exc
    rows = [{"item": f"rows {view}", "value": n} for view, n in report.rows.items()]
    rows += [{"item": "popular articles", "value": report.n_popular}]
    rows += [{"item": f"seconds {step}", "value": sec} for step, sec in report.seconds.items()]
    console.print(_table(f"feature store {report.project} ({report.online_store.value}) -> "
                         f"{report.repo_path}", rows))


@app.command()
def gateway(
    host: Annotated[str, typer.Option(help="Bind address")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="HTTP port")] = 8080,
    name: Annotated[str | None, typer.Option(
        help="Dataset name: sets SHOPREC_FEATURE_REPO to models/<name>/feature_repo unless set")]
    = None,
    models_root: ModelsRoot = Path("models"),
    workers: Annotated[int, typer.Option(help="uvicorn worker processes")] = 1,
) -> None:
    """Run the REST gateway (FastAPI + uvicorn); settings from SHOPREC_* variables."""
    import os

    import uvicorn

    if name is not None and "SHOPREC_FEATURE_REPO" not in os.environ:
        os.environ["SHOPREC_FEATURE_REPO"] = str(models_root / name / "feature_repo")
    uvicorn.run("shoprec.gateway.main:make_app", factory=True, host=host, port=port,
                workers=workers, log_level="warning")


if __name__ == "__main__":
    app()
