"""The ``shoprec`` command line: thin wrappers that parse arguments and call the package."""

from __future__ import annotations

import json
import os
import time
from dataclasses import replace
from datetime import UTC, date, datetime
from datetime import time as dt_time
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer
from rich import box
from rich.console import Console
from rich.table import Table

from shoprec.config import Paths, PipelineConfig, RankerConfig, RankerKind, RankerNegatives
from shoprec.errors import ShoprecError

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="shoprec: e-commerce recommendations (Two-Tower + DLRM + FAISS).",
)
console = Console(highlight=False)


class Source(StrEnum):
    """Input data sources."""

    COMPLETEJOURNEY = "completejourney"
    HM = "hm"
    SYNTHETIC = "synthetic"
    EVENTS = "events"  # the write API's event log, folded into existing canonical tables


NameOpt = Annotated[
    str | None,
    typer.Option(
        "--name", help="Dataset name: data/<name>, models/<name>. Default: the source name."
    ),
]
DataRoot = Annotated[Path, typer.Option("--data-root", help="Root of data/<name>.")]
ModelsRoot = Annotated[Path, typer.Option("--models-root", help="Root of models/<name>.")]
ServedName = Annotated[
    str | None,
    typer.Option(
        help="Dataset name: the feature repo is models/<name>/feature_repo unless "
        "SHOPREC_FEATURE_REPO says otherwise"
    ),
]
ConfigOpt = Annotated[
    Path | None,
    typer.Option(
        "--config",
        help='JSON file overriding PipelineConfig sections, e.g. {"two_tower": {"epochs": 2}}.',
        exists=True,
        dir_okay=False,
    ),
]


RegimeOpt = Annotated[
    str,
    typer.Option(
        "--regime",
        help="synthetic: default | grocery (repurchase-heavy) | fashion (nobody buys an "
        "article twice)",
    ),
]
TestStartOpt = Annotated[
    str | None,
    typer.Option(
        "--test-start",
        help="First day (YYYY-MM-DD) of the test window; the validation and training windows "
        "count back from it. Default: the last window_days days of the data.",
    ),
]


def _with_test_start(config: PipelineConfig, test_start: str | None) -> PipelineConfig:
    if test_start is None:
        return config
    return replace(config, dataset=replace(config.dataset, test_start=test_start))


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


def do_fold(paths: Paths, event_log: str | None, namespace: str) -> None:
    """Fold the event log (default ``models/<name>/events.db``) into ``paths.canonical``."""
    from urllib.parse import urlsplit

    from shoprec.data.ingest.events import fold_event_log
    from shoprec.events import DEFAULT_LOG_FILE, open_log_reader

    url = event_log or str(paths.models_dir / DEFAULT_LOG_FILE)
    parts = urlsplit(url)
    shown = url if parts.password is None else url.replace(f":{parts.password}@", ":***@")
    reader = open_log_reader(url, namespace=namespace)
    try:
        report = fold_event_log(paths.canonical, reader, shown)
    finally:
        reader.close()
    info = {k: v for k, v in report.to_dict().items() if k != "warnings"}
    _log(f"folded the event log {shown} into {paths.canonical}: {json.dumps(info)}")
    for warning in report.warnings:
        console.print(f"[bold yellow]warning:[/bold yellow] {warning}")


def do_ingest(
    source: Source,
    paths: Paths,
    raw_dir: Path | None,
    scale: str,
    seed: int,
    regime: str = "default",
) -> None:
    """Ingest one source into ``paths.canonical``; then fold the dataset's own event log
    (``models/<name>/events.db``) when it exists, so the tables are always source + log."""
    from shoprec.data.ingest import generate_synthetic, ingest_completejourney, ingest_hm
    from shoprec.events import DEFAULT_LOG_FILE, DEFAULT_NAMESPACE

    if source is Source.EVENTS:
        do_fold(paths, None, DEFAULT_NAMESPACE)
        return
    if source is Source.COMPLETEJOURNEY:
        report = ingest_completejourney(paths.canonical)
    else:
        if source is Source.SYNTHETIC:
            raw_dir = raw_dir or paths.data_dir / "raw"
            counts = generate_synthetic(raw_dir, scale=scale, seed=seed, regime=regime)
            _log(
                f"synthetic H&M-schema CSVs ({scale}, {regime} regime) written to {raw_dir}: "
                f"{counts}"
            )
        if raw_dir is None:
            raise typer.BadParameter(
                "hm needs --raw-dir holding the Kaggle CSVs", param_hint="--raw-dir"
            )
        report = ingest_hm(raw_dir, paths.canonical)
    info = report.to_dict()
    _log(f"ingested {source.value} into {paths.canonical}: {json.dumps(info, default=str)}")
    if (paths.models_dir / DEFAULT_LOG_FILE).is_file():
        do_fold(paths, None, DEFAULT_NAMESPACE)


@app.command()
def ingest(
    source: Annotated[Source, typer.Argument(help="completejourney | hm | synthetic | events")],
    raw_dir: Annotated[
        Path | None,
        typer.Option(
            "--raw-dir",
            help="hm: folder with articles.csv, customers.csv, transactions_train.csv;"
            " synthetic: where to write them (default data/<name>/raw).",
        ),
    ] = None,
    scale: Annotated[str, typer.Option(help="synthetic: tiny | small | mid | hm")] = "tiny",
    seed: Annotated[int, typer.Option(help="synthetic: random seed")] = 0,
    regime: RegimeOpt = "default",
    event_log: Annotated[
        str | None,
        typer.Option(
            "--event-log",
            help="events: the log to fold, sqlite:///path, a path or redis://[:pw@]host:port/db "
            "(default models/<name>/events.db)",
        ),
    ] = None,
    namespace: Annotated[
        str, typer.Option("--namespace", help="events: key prefix of a Redis log")
    ] = "shoprec",
    name: NameOpt = None,
    data_root: DataRoot = Path("data"),
    models_root: ModelsRoot = Path("models"),
) -> None:
    """Ingest raw data into the canonical Parquet tables (data/<name>/canonical); `events`
    folds the write API's event log (new customers, articles, purchases, erasures) into them."""
    if source is Source.EVENTS and name is None:
        raise typer.BadParameter(
            "events needs --name of the dataset to fold into", param_hint="--name"
        )
    try:
        paths = _paths(name or source.value, data_root, models_root)
        if source is Source.EVENTS:
            do_fold(paths, event_log, namespace)
        else:
            do_ingest(source, paths, raw_dir, scale, seed, regime)
    except ShoprecError as exc:
        raise _fail(exc) from exc
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--event-log") from exc


def do_build_dataset(paths: Paths, config: PipelineConfig) -> None:
    from shoprec.data.dataset import dataset_summary
    from shoprec.pipeline.steps import run_build_dataset

    data = run_build_dataset(paths, config, _log)
    console.print(_table(f"labelled dataset -> {paths.dataset}", dataset_summary(data)))


@app.command("build-dataset")
def build_dataset_cmd(
    name: Annotated[str, typer.Option(help="Dataset name")] = "completejourney",
    config: ConfigOpt = None,
    test_start: TestStartOpt = None,
    data_root: DataRoot = Path("data"),
    models_root: ModelsRoot = Path("models"),
) -> None:
    """Chronological windows, features as of each window, labels and sampled negatives."""
    try:
        do_build_dataset(
            _paths(name, data_root, models_root), _with_test_start(_config(config), test_start)
        )
    except ShoprecError as exc:
        raise _fail(exc) from exc


def do_train(paths: Paths, config: PipelineConfig, ranker: RankerKind | None = None) -> None:
    from shoprec.pipeline.steps import run_train

    if ranker is not None:
        config = replace(config, ranker=replace(config.ranker, kind=ranker))
    summary = run_train(paths, config, _log)
    rows = [
        {"step": k, "seconds": v, "peak RSS MiB": summary["peak_rss_mib"][k]}
        for k, v in summary["seconds"].items()
    ]
    text = summary["text_embeddings"]
    if text["concurrent"]:  # its own process, beside the steps above: not part of their sum
        rows.append(
            {
                "step": "(text process, beside the steps)",
                "seconds": text["seconds"],
                "peak RSS MiB": text["peak_rss_mib"],
            }
        )
    console.print(_table(f"trained -> {paths.models_dir}", rows))


@app.command()
def train(
    name: Annotated[str, typer.Option(help="Dataset name")] = "completejourney",
    config: ConfigOpt = None,
    ranker: Annotated[
        RankerKind | None,
        typer.Option(
            "--ranker",
            help=(
                'Ranker to train and serve; overrides --config\'s "ranker.kind" (default '
                f"{RankerConfig().kind.value})."
            ),
            case_sensitive=False,
        ),
    ] = None,
    data_root: DataRoot = Path("data"),
    models_root: ModelsRoot = Path("models"),
) -> None:
    """Fit the preprocessing workflow, train the Two-Tower and the ranker, build FAISS indexes."""
    try:
        do_train(_paths(name, data_root, models_root), _config(config), ranker)
    except ShoprecError as exc:
        raise _fail(exc) from exc


def do_evaluate(paths: Paths, config: PipelineConfig | None = None) -> dict[str, Any]:
    from shoprec.pipeline.steps import run_evaluate

    report = run_evaluate(paths, config, log=_log)
    served = report["served"]
    _log(
        f"served: {served['recommender']}, MAP@{report['k']} {served['map_ratio']:.3f}x the best "
        f"baseline ({served['best_baseline']}), 95% interval [{served['ci95_low']:.3f}, "
        f"{served['ci95_high']:.3f}]"
    )
    console.print(
        _table(
            f"test window {report['test_window']['start']}..{report['test_window']['end']}, "
            f"{report['test_customers']} customers",
            [
                {"model": n, **{m.upper(): v for m, v in r.items()}}
                for n, r in report["metrics"].items()
            ],
        )
    )
    console.print(
        _table(
            "retrieval and ranker",
            [
                *({"metric": key, "value": v} for key, v in report["retrieval"].items()),
                *(
                    {"metric": f"ranker (labelled test set) {key}", "value": v}
                    for key, v in report["ranker_test_set"].items()
                ),
                *(
                    {"metric": f"ranker (test candidates) {key}", "value": v}
                    for key, v in report["ranker_test_candidates"].items()
                ),
            ],
        )
    )
    console.print(f"report: {paths.models_dir / 'report.md'}")
    return report


@app.command()
def evaluate(
    name: Annotated[str, typer.Option(help="Dataset name")] = "completejourney",
    config: ConfigOpt = None,
    data_root: DataRoot = Path("data"),
    models_root: ModelsRoot = Path("models"),
) -> None:
    """Evaluate the two-stage pipeline and the baselines on the test window (with the trained
    config, or the one --config gives)."""
    try:
        do_evaluate(_paths(name, data_root, models_root), _config(config) if config else None)
    except ShoprecError as exc:
        raise _fail(exc) from exc


def _run_pipeline(
    source: Source,
    paths: Paths,
    cfg: PipelineConfig,
    raw_dir: Path | None,
    scale: str,
    seed: int,
    regime: str = "default",
) -> None:
    from shoprec.pipeline.memory import PeakSpan

    start = time.perf_counter()
    steps: list[dict[str, Any]] = []
    with PeakSpan() as whole:
        for step, fn in (
            ("ingest", lambda: do_ingest(source, paths, raw_dir, scale, seed, regime)),
            ("build-dataset", lambda: do_build_dataset(paths, cfg)),
            ("train", lambda: do_train(paths, cfg)),
            ("evaluate", lambda: do_evaluate(paths, cfg)),
        ):
            t = time.perf_counter()
            _log(f"[bold]{step}[/bold]")
            with PeakSpan() as span:
                fn()
            seconds = round(time.perf_counter() - t, 1)
            steps.append({"step": step, "seconds": seconds, "peak RSS MiB": round(span.mib)})
    total = round(time.perf_counter() - start, 1)
    steps.append({"step": "total", "seconds": total, "peak RSS MiB": round(whole.mib)})
    console.print(_table("pipeline wall time and peak memory", steps))


@app.command()
def pipeline(
    source: Annotated[
        Source, typer.Argument(help="completejourney | hm | synthetic")
    ] = Source.COMPLETEJOURNEY,
    raw_dir: Annotated[Path | None, typer.Option("--raw-dir", help="hm: Kaggle CSV folder")] = None,
    scale: Annotated[str, typer.Option(help="synthetic: tiny | small | mid | hm")] = "tiny",
    seed: Annotated[int, typer.Option(help="synthetic: random seed")] = 0,
    regime: RegimeOpt = "default",
    name: NameOpt = None,
    config: ConfigOpt = None,
    test_start: TestStartOpt = None,
    data_root: DataRoot = Path("data"),
    models_root: ModelsRoot = Path("models"),
) -> None:
    """Run ingest -> build-dataset -> train -> evaluate end to end and print the report."""
    if source is Source.EVENTS:
        raise typer.BadParameter("pipeline needs a data source; fold the log with `ingest events`")
    try:
        _run_pipeline(
            source,
            _paths(name or source.value, data_root, models_root),
            _with_test_start(_config(config), test_start),
            raw_dir,
            scale,
            seed,
            regime,
        )
    except ShoprecError as exc:
        raise _fail(exc) from exc


class StoreKind(StrEnum):
    """Feast online stores."""

    SQLITE = "sqlite"
    REDIS = "redis"


@app.command()
def materialize(
    name: Annotated[str, typer.Option(help="Dataset name")] = "completejourney",
    online_store: Annotated[
        StoreKind,
        typer.Option(
            "--online-store", help="sqlite (default, a file under models/<name>) or redis"
        ),
    ] = StoreKind.SQLITE,
    redis_url: Annotated[
        str, typer.Option("--redis-url", help="host:port of Redis")
    ] = "127.0.0.1:6379",
    data_root: DataRoot = Path("data"),
    models_root: ModelsRoot = Path("models"),
) -> None:
    """Export encoded customer features and article display fields, load the Feast online store."""
    from shoprec.export.online_tables import materialize as run_materialize

    paths = _paths(name, data_root, models_root)
    try:
        report = run_materialize(
            paths.models_dir,
            paths.dataset,
            paths.canonical,
            online_store=online_store.value,
            redis_url=redis_url,
        )
    except ShoprecError as exc:
        raise _fail(exc) from exc
    rows = [{"item": f"rows {view}", "value": n} for view, n in report.rows.items()]
    rows += [{"item": "popular articles", "value": report.n_popular}]
    rows += [
        {"item": "exclude purchased", "value": str(report.exclude_purchased).lower()},
        {"item": "bought pairs (shopper state)", "value": report.n_bought},
    ]
    rows += [{"item": f"seconds {step}", "value": sec} for step, sec in report.seconds.items()]
    console.print(
        _table(
            f"feature store {report.project} ({report.online_store.value}) -> {report.repo_path}",
            rows,
        )
    )


@app.command()
def gateway(
    host: Annotated[str, typer.Option(help="Bind address")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="HTTP port")] = 8080,
    name: ServedName = None,
    models_root: ModelsRoot = Path("models"),
    workers: Annotated[int, typer.Option(min=1, help="uvicorn worker processes")] = 1,
) -> None:
    """Run the REST gateway (FastAPI + uvicorn); settings from SHOPREC_* variables.

    This process becomes the uvicorn server (exec), with the settings in its environment."""
    import os

    from pydantic import ValidationError

    from shoprec.featurestore.store import repo_dir
    from shoprec.gateway.main import uvicorn_command
    from shoprec.gateway.settings import Settings

    try:
        settings = Settings()
        if name is not None and "SHOPREC_FEATURE_REPO" not in os.environ:
            settings = settings.model_copy(update={"feature_repo": repo_dir(models_root / name)})
    except ValidationError as exc:
        raise _fail(exc) from exc
    command = uvicorn_command(host, port, workers)
    os.execve(command[0], command, {**os.environ, **settings.environment()})


@app.command()
def updater(
    name: ServedName = None,
    models_root: ModelsRoot = Path("models"),
    event_log: Annotated[
        str | None,
        typer.Option(
            help="Event log URL (default: SHOPREC_EVENT_LOG, else models/<name>/events.db)"
        ),
    ] = None,
) -> None:
    """Run the near-real-time feature updater: event log -> online store, until Ctrl-C/TERM.

    Settings from the gateway's SHOPREC_* variables (README "Near-real-time")."""
    import os

    from shoprec.featurestore.store import repo_dir
    from shoprec.updater.main import main

    if name is not None and "SHOPREC_FEATURE_REPO" not in os.environ:
        os.environ["SHOPREC_FEATURE_REPO"] = str(repo_dir(models_root / name))
    if event_log is not None:
        os.environ["SHOPREC_EVENT_LOG"] = event_log
    if "SHOPREC_FEATURE_REPO" not in os.environ:
        raise _fail(ValueError("give --name or set SHOPREC_FEATURE_REPO"))
    try:
        code = main()
    except ShoprecError as exc:
        raise _fail(exc) from exc
    raise typer.Exit(code)


TritonRepoOpt = Annotated[
    Path, typer.Option("--triton-repo", help="Triton model repository folder")
]
ExportConfigOpt = Annotated[
    Path | None,
    typer.Option(
        "--export-config",
        help='JSON overriding ExportConfig fields, e.g. {"max_k": 50}.',
        exists=True,
        dir_okay=False,
    ),
]


def do_export(
    paths: Paths, out: Path, config_file: Path | None, ranker: RankerKind | None = None
) -> None:
    from shoprec.export.triton import MANIFEST_FILE, ExportConfig, export_triton_repository

    try:
        fields = json.loads(config_file.read_text()) if config_file else {}
        if ranker is not None:  # asking for a ranker serves it, not the guardrail's rule
            fields["ranker"] = ranker.value
            fields.setdefault("served", "ranker")
        cfg = ExportConfig.from_dict(fields)
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        raise typer.BadParameter(f"{config_file}: {exc}", param_hint="--export-config") from exc
    files = export_triton_repository(paths.models_dir, paths.dataset, out, cfg)
    served = json.loads((out / MANIFEST_FILE).read_text())["export_config"]
    rule = "" if served["served"] == "ranker" else f", serving the {served['served']} rule"
    _log(f"Triton model repository -> {out} ({len(files)} files, ranker {served['ranker']}{rule})")


RankerOpt = Annotated[
    RankerKind | None,
    typer.Option(
        "--ranker",
        help="Ranker the recommend ensemble runs: default the one `shoprec train` trained; "
        "another is taken from `shoprec compare-rankers`. Overrides --export-config's "
        '"ranker" and serves that ranker even where the guardrail of `shoprec train` chose a '
        "rule.",
        case_sensitive=False,
    ),
]


@app.command()
def export(
    name: Annotated[str, typer.Option(help="Dataset name")] = "completejourney",
    triton_repo: TritonRepoOpt = Path("triton_repo"),
    export_config: ExportConfigOpt = None,
    ranker: RankerOpt = None,
    data_root: DataRoot = Path("data"),
    models_root: ModelsRoot = Path("models"),
) -> None:
    """Generate the Triton model repository (recommend ensemble, similar_items)."""
    try:
        do_export(_paths(name, data_root, models_root), triton_repo, export_config, ranker)
    except ShoprecError as exc:
        raise _fail(exc) from exc


def parse_rankers(text: str) -> list[RankerKind]:
    """``"dlrm,gbdt"`` -> ``[RankerKind.DLRM, RankerKind.GBDT]``.

    Raises:
        typer.BadParameter: an unknown name (named in the message), a repeat, or none.
    """
    names = [n.strip().lower() for n in text.split(",") if n.strip()]
    valid = [k.value for k in RankerKind]
    for n in names:
        if n not in valid:
            raise typer.BadParameter(
                f"unknown ranker {n!r}; choose from {', '.join(valid)}", param_hint="--rankers"
            )
    if not names or len(set(names)) != len(names):
        raise typer.BadParameter(f"need distinct rankers, got {text!r}", param_hint="--rankers")
    return [RankerKind(n) for n in names]


@app.command("compare-rankers")
def compare_rankers_cmd(
    name: Annotated[str, typer.Option(help="Dataset name")] = "completejourney",
    rankers: Annotated[
        str,
        typer.Option(
            help="Comma-separated rankers in table order; MAP differences are against the first"
        ),
    ] = ",".join(k.value for k in RankerKind),
    seeds: Annotated[int, typer.Option(min=1, help="Training runs per ranker (mean +- std)")] = 3,
    negatives: Annotated[
        RankerNegatives | None,
        typer.Option(
            help="Training negatives of every ranker: retrieved-not-bought candidates (what "
            "`shoprec train` uses) or the labelled dataset's popularity samples (the reference "
            "design's). Default: the trained config's.",
            case_sensitive=False,
        ),
    ] = None,
    config: Annotated[
        Path | None,
        typer.Option(
            "--config",
            help="JSON overriding keys of the trained config.json, e.g. "
            '{"rankers": {"rf_trees": 50}}.',
            exists=True,
            dir_okay=False,
        ),
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option(
            "--out",
            help="Output folder (default models/<name>/rankers, where `shoprec export "
            "--ranker` reads the rankers from)",
            file_okay=False,
        ),
    ] = None,
    data_root: DataRoot = Path("data"),
    models_root: ModelsRoot = Path("models"),
) -> None:
    """Train and score DLRM, Wide&Deep, DCN-v2, MLP, random forest and GBDT on the same
    examples: AUC / precision / recall on the labelled test set, MAP@12 / NDCG@12 re-ranking
    the test window's candidates -> models/<name>/rankers/comparison.{md,json,png}."""
    from shoprec import artifacts as A
    from shoprec.pipeline.compare import compare_rankers, comparison_config

    kinds = parse_rankers(rankers)
    paths = _paths(name, data_root, models_root)
    try:
        overrides = json.loads(config.read_text()) if config else {}
    except json.JSONDecodeError as exc:
        raise typer.BadParameter(f"{config}: {exc}", param_hint="--config") from exc
    if not isinstance(overrides, dict):
        raise typer.BadParameter(
            f"{config}: expected a JSON object, got {overrides!r}", param_hint="--config"
        )
    if negatives is not None:
        overrides.setdefault("ranker", {})["negatives"] = negatives.value
    try:
        cfg = comparison_config(paths.models_dir, overrides)
    except ShoprecError as exc:
        raise _fail(exc) from exc
    except (KeyError, TypeError, ValueError) as exc:
        source = config or paths.models_dir / "config.json"
        raise typer.BadParameter(f"{source}: {exc}", param_hint="--config") from exc
    try:
        result = compare_rankers(paths, cfg, kinds, seeds, _log, out)
    except ShoprecError as exc:
        raise _fail(exc) from exc
    k = result["k"]
    window = f"{result['test_window']['start']}..{result['test_window']['end']}"
    for title, columns in (
        (
            f"labelled test set (1:1 popularity negatives); mean ± std, {seeds} seed(s)",
            {"auc": "AUC", "precision": "precision", "recall": "recall"},
        ),
        (
            f"AUC on retrieved test candidates: all, from the history, others; {seeds} seed(s)",
            {
                "candidate_auc": "AUC cand.",
                "history_candidate_auc": "AUC hist.",
                "new_candidate_auc": "AUC new",
            },
        ),
        (
            f"re-ranking the candidates of the test window {window}; {seeds} seed(s)",
            {
                f"map@{k}": f"MAP@{k}",
                f"ndcg@{k}": f"NDCG@{k}",
                f"recall@{k}": f"Recall@{k}",
                "fit_seconds": "fit s",
            },
        ),
    ):
        table = Table(title=title, box=box.SIMPLE_HEAD, padding=(0, 1), pad_edge=False)
        table.add_column("ranker", no_wrap=True, min_width=15)  # the table fits 80 columns
        for label in columns.values():
            table.add_column(label, justify="right", no_wrap=True, min_width=13)
        for r in result["rankers"].values():
            m = r["metrics"]
            table.add_row(
                r["label"],
                *(
                    f"{m[key]['mean']:.1f}"
                    if key == "fit_seconds"
                    else "n/a"
                    if m[key]["mean"] is None
                    else f"{m[key]['mean']:.4f} ±{m[key]['std']:.4f}".replace("±0.", "±.")
                    for key in columns
                ),
            )
        console.print(table)
    out = out or paths.models_dir / A.RANKERS_DIR
    console.print(
        f"report: {out / A.COMPARISON_MD}, {out / A.COMPARISON_JSON}, {out / A.COMPARISON_PNG}"
    )


TritonHttpPortOpt = Annotated[int, typer.Option("--triton-http-port", help="Triton HTTP port")]
TritonGrpcPortOpt = Annotated[int, typer.Option("--triton-grpc-port", help="Triton gRPC port")]
TritonMetricsPortOpt = Annotated[
    int, typer.Option("--triton-metrics-port", help="Triton metrics port")
]


def _stack_config(
    paths: Paths,
    triton_repo: Path,
    host: str,
    port: int,
    triton_ports: tuple[int, int, int],
    gateway_settings: dict[str, Any] | None = None,
) -> Any:
    from shoprec.featurestore.store import repo_dir
    from shoprec.serving.stack import StackConfig

    http, grpc, metrics = triton_ports
    log_dir = paths.models_dir / "logs"
    _log_supervisor_events(log_dir)
    return StackConfig(
        triton_repo=triton_repo,
        feature_repo=repo_dir(paths.models_dir),
        host=host,
        gateway_port=port,
        triton_http_port=http,
        triton_grpc_port=grpc,
        triton_metrics_port=metrics,
        log_dir=log_dir,
        gateway_settings=gateway_settings or {},
        triton_admin_key=os.environ.get("SHOPREC_TRITON_ADMIN_KEY") or None,
    )


def _log_supervisor_events(log_dir: Path) -> None:
    """Exits and restarts of the stack's processes: on the console and appended to
    ``log_dir/supervisor.log``."""
    import logging

    log_dir.mkdir(parents=True, exist_ok=True)
    events = logging.getLogger("shoprec.supervisor")
    if not events.handlers:
        events.setLevel(logging.INFO)
        for handler in (logging.StreamHandler(), logging.FileHandler(log_dir / "supervisor.log")):
            handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
            events.addHandler(handler)


def _local_write_key() -> tuple[str | None, dict[str, Any]]:
    """Generate a write key for a stack started here when the environment configures none.

    Returns the key (to print once; stored nowhere) and the gateway settings that add its
    SHA-256 to the configured ``api_keys`` (for ``StackConfig.gateway_settings``); ``(None,
    {})`` when a write key is configured.

    Raises:
        pydantic.ValidationError, KeysFileError: the configured settings or keys are invalid.
    """
    from shoprec.gateway.keys import ApiKey, Role, generate_key, hash_key
    from shoprec.gateway.settings import Settings

    settings = Settings()
    if any(key.role is Role.WRITE for key in settings.all_api_keys()):
        return None, {}
    key = generate_key()
    keys = [*settings.api_keys, ApiKey(name="local-write", role=Role.WRITE, sha256=hash_key(key))]
    return key, {"api_keys": keys}


def _print_write_key(key: str | None) -> None:
    if key is None:
        console.print("write API: keys from SHOPREC_API_KEYS / SHOPREC_API_KEYS_FILE")
    else:
        console.print("write key, generated for this run and stored nowhere (header X-API-Key):")
        console.print(key, soft_wrap=True)
    console.file.flush()  # seen at once also when stdout is a file or a pipe


def _serve_forever(stack: Any) -> None:
    """Block until Ctrl-C/TERM; the supervisor restarts a process that exits meanwhile."""
    console.print(
        f"serving: REST {stack.gateway_url} (docs {stack.gateway_url}/docs), "
        f"Triton gRPC {stack.triton.grpc_url}; logs in {stack.log_dir}. Ctrl-C stops both."
    )
    while True:
        time.sleep(0.5)


@app.command()
def serve(
    name: Annotated[str, typer.Option(help="Dataset name")] = "completejourney",
    triton_repo: TritonRepoOpt = Path("triton_repo"),
    host: Annotated[str, typer.Option(help="Bind address of every port")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Gateway HTTP port")] = 8080,
    triton_http_port: TritonHttpPortOpt = 8000,
    triton_grpc_port: TritonGrpcPortOpt = 8001,
    triton_metrics_port: TritonMetricsPortOpt = 8002,
    data_root: DataRoot = Path("data"),
    models_root: ModelsRoot = Path("models"),
) -> None:
    """Start tritonserver and the gateway, wait until both are ready, restart either when it
    exits (with backoff), stop both on Ctrl-C/TERM. Logs: models/<name>/logs/."""
    from shoprec.serving.stack import ServingStack, sigterm_as_keyboard_interrupt

    paths = _paths(name, data_root, models_root)
    config = _stack_config(
        paths, triton_repo, host, port, (triton_http_port, triton_grpc_port, triton_metrics_port)
    )
    try:
        write_key, gateway_settings = _local_write_key()
        config = replace(config, gateway_settings=gateway_settings)
        _print_write_key(write_key)
        with sigterm_as_keyboard_interrupt(), ServingStack(config) as stack:
            _serve_forever(stack)
    except KeyboardInterrupt:
        console.print("stopped")
    except ShoprecError as exc:
        raise _fail(exc) from exc


def _items_table(title: str, items: list[dict[str, Any]]) -> Table:
    table = Table(title=title, title_justify="left")
    for col in ("#", "article", "name", "department", "product group", "score"):
        table.add_column(col, justify="right" if col in ("#", "score") else "left")
    for i, it in enumerate(items, 1):
        score = it.get("score")
        table.add_row(
            str(i),
            it["article_id"],
            it.get("name") or "",
            it.get("department") or "",
            it.get("product_group") or "",
            "" if score is None else f"{score:.3f}",
        )
    return table


def demo_calls(base_url: str, paths: Paths, k: int = 8, write_key: str | None = None) -> None:
    """REST calls for a long-history customer, a new customer and an article, and (with a
    write key) one purchase posted to the event log; printed."""
    import httpx
    import polars as pl

    from shoprec import schema as s
    from shoprec.data.dataset import LATEST_CUSTOMERS_FILE

    latest = pl.read_parquet(paths.dataset / LATEST_CUSTOMERS_FILE)
    regular = latest.sort([s.N_PURCHASES, s.CUSTOMER_ID], descending=[True, False]).row(
        0, named=True
    )
    articles = pl.read_parquet(paths.canonical / "articles.parquet").select(s.ARTICLE_ID, s.NAME)
    names = dict(articles.iter_rows())
    bought = ", ".join(names.get(a, a) for a in regular[s.HIST_ARTICLE_IDS][:5])
    with httpx.Client(base_url=base_url, timeout=10.0) as http:
        cid = regular[s.CUSTOMER_ID]
        t0 = time.perf_counter()
        rec = http.get(f"/v1/customers/{cid}/recommendations", params={"k": k})
        ms = (time.perf_counter() - t0) * 1e3
        rec.raise_for_status()
        body = rec.json()
        console.print(
            f"\n[bold]GET /v1/customers/{cid}/recommendations?k={k}[/bold] "
            f"({ms:.1f} ms, source: {body['source']})"
        )
        console.print(f"customer {cid}: {regular[s.N_PURCHASES]} purchases; bought most: {bought}")
        console.print(_items_table("selected for you", body["items"]))
        new_id = NEW_CUSTOMER
        cold = http.get(f"/v1/customers/{new_id}/recommendations", params={"k": k}).json()
        console.print(
            f"\n[bold]GET /v1/customers/{new_id}/recommendations?k={k}[/bold] "
            f"(source: {cold['source']}: unknown customer, recent popularity)"
        )
        console.print(_items_table("popular now", cold["items"]))
        article = (
            body["items"][0]["article_id"] if body["items"] else cold["items"][0]["article_id"]
        )
        detail = http.get(f"/v1/articles/{article}").json()
        t0 = time.perf_counter()
        sim = http.get(f"/v1/articles/{article}/similar", params={"k": k})
        ms = (time.perf_counter() - t0) * 1e3
        sim.raise_for_status()
        console.print(f"\n[bold]GET /v1/articles/{article}/similar?k={k}[/bold] ({ms:.1f} ms)")
        console.print(f"viewing: {json.dumps(detail)}")
        console.print(_items_table("you may also like", sim.json()["items"]))
        missing = http.get("/v1/articles/does-not-exist/similar")
        console.print(f"\nunknown article -> HTTP {missing.status_code} {missing.json()}")
        if write_key is not None:
            # On the data's last day, not today: `shoprec ingest` folds the log into the
            # data, and a purchase years after the rest would move every training window.
            when = datetime.combine(data_last_day(paths), dt_time(12), tzinfo=UTC)
            _demo_purchase(http, write_key, cid, article, names, body["recommendation_id"], when)


def data_last_day(paths: Paths) -> date:
    """The last purchase day of the canonical transactions (what demo events are stamped with)."""
    import polars as pl

    from shoprec import schema as s

    transactions = pl.read_parquet(paths.canonical / "transactions.parquet", columns=[s.T_DAT])
    last: date = transactions.get_column(s.T_DAT).max()  # type: ignore[assignment]
    return last


def _demo_purchase(
    http: Any,
    write_key: str,
    customer_id: str,
    article_id: str,
    names: dict[str, str],
    recommendation_id: str,
    when: datetime,
) -> None:
    """POST one purchase at ``when`` (and its replay) to /v1/events; printed."""
    import uuid

    event = {
        "event_id": f"demo-{uuid.uuid4().hex}",
        "type": "purchase",
        "customer_id": customer_id,
        "article_id": article_id,
        "timestamp": when.isoformat(),
        "quantity": 1,
        "recommendation_id": recommendation_id,
    }
    headers = {"X-API-Key": write_key}
    t0 = time.perf_counter()
    first = http.post("/v1/events", json={"events": [event]}, headers=headers)
    ms = (time.perf_counter() - t0) * 1e3
    console.print(
        f"\n[bold]POST /v1/events[/bold] purchase of {names.get(article_id, article_id)} by "
        f"customer {customer_id} -> HTTP {first.status_code} ({ms:.1f} ms): {first.json()}"
    )
    again = http.post("/v1/events", json={"events": [event]}, headers=headers)
    console.print(f"the same event again -> HTTP {again.status_code}: {again.json()}")
    anonymous = http.post("/v1/events", json={"events": [event]})
    console.print(f"without the key -> HTTP {anonymous.status_code}: {anonymous.json()}")


NEW_CUSTOMER = "new-customer-0001"
STOREFRONT_PORT = 8090


def demo_customers(paths: Paths, typical: int = 3) -> list[dict[str, str]]:
    """Customers for the storefront's picker: the longest purchase history of the serving
    snapshot, ``typical`` customers around the median history, and a new customer (unknown to
    the model). Only the new customer when the dataset is not built.

    Returns:
        ``[{"customer_id", "label"}]``, the :class:`shoprec.storefront.settings.DemoCustomer`
        fields.
    """
    import polars as pl

    from shoprec import schema as s
    from shoprec.data.dataset import LATEST_CUSTOMERS_FILE

    new = {"customer_id": NEW_CUSTOMER, "label": "new customer"}
    latest_file = paths.dataset / LATEST_CUSTOMERS_FILE
    if not latest_file.exists():
        return [new]
    latest = pl.read_parquet(latest_file, columns=[s.CUSTOMER_ID, s.N_PURCHASES]).sort(
        [s.N_PURCHASES, s.CUSTOMER_ID], descending=[True, False]
    )
    rows = latest.rows(named=True)
    if not rows:
        return [new]
    longest = rows[0]
    out = [
        {
            "customer_id": str(longest[s.CUSTOMER_ID]),
            "label": f"longest history ({longest[s.N_PURCHASES]} purchases)",
        }
    ]
    middle = len(rows) // 2
    for row in rows[max(1, middle - typical // 2) :][:typical]:
        out.append(
            {
                "customer_id": str(row[s.CUSTOMER_ID]),
                "label": f"typical ({row[s.N_PURCHASES]} purchases)",
            }
        )
    return [*out, new]


@app.command()
def storefront(
    gateway_url: Annotated[
        str, typer.Option(help="The gateway's base URL (SHOPREC_STOREFRONT_GATEWAY_URL)")
    ] = "",
    host: Annotated[str, typer.Option(help="Bind address")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Storefront HTTP port")] = STOREFRONT_PORT,
    name: Annotated[str, typer.Option(help="Dataset whose customers the picker offers")] = (
        "completejourney"
    ),
    data_root: DataRoot = Path("data"),
    models_root: ModelsRoot = Path("models"),
) -> None:
    """Serve the storefront demonstrator (a web shop that calls the gateway's REST API).

    The write key for events comes from SHOPREC_STOREFRONT_WRITE_KEY or
    SHOPREC_STOREFRONT_WRITE_KEY_FILE and stays on the server."""
    from pydantic import ValidationError

    from shoprec.storefront.server import serve as serve_storefront
    from shoprec.storefront.settings import StorefrontSettings

    try:
        settings = StorefrontSettings()
        update: dict[str, Any] = {}
        if gateway_url:
            update["gateway_url"] = gateway_url
        if not settings.demo_customers:
            update["demo_customers"] = demo_customers(_paths(name, data_root, models_root))
        settings = StorefrontSettings.model_validate({**settings.model_dump(), **update})
    except ValidationError as exc:
        raise _fail(ValueError(f"storefront settings: {exc}")) from exc
    console.print(f"storefront: http://{host}:{port}/ (gateway {settings.gateway_url})")
    console.file.flush()
    serve_storefront(settings, host, port)


def _start_storefront(
    gateway_url: str,
    port: int,
    write_key: str | None,
    customers: list[dict[str, str]],
    event_day: date,
    log: Path,
) -> Any:
    """``python -m shoprec.storefront`` in its own process group; the write key travels in
    its environment only. Its events are stamped on ``event_day`` (the data's last day)."""
    import subprocess
    import sys

    env = {
        **os.environ,
        "SHOPREC_STOREFRONT_GATEWAY_URL": gateway_url,
        "SHOPREC_STOREFRONT_DEMO_CUSTOMERS": json.dumps(customers),
        "SHOPREC_STOREFRONT_EVENT_DAY": event_day.isoformat(),
    }
    if write_key is not None:
        env["SHOPREC_STOREFRONT_WRITE_KEY"] = write_key
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "shoprec.storefront", "--port", str(port)],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def _wait_storefront(url: str, process: Any, timeout_s: float = 60.0) -> bool:
    import httpx

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and process.poll() is None:
        try:
            if httpx.get(f"{url}/healthz", timeout=1.0).status_code == 200:
                return True
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    return False


def _stop_storefront(process: Any) -> None:
    import signal
    import subprocess

    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


@app.command()
def demo(
    keep_serving: Annotated[
        bool,
        typer.Option(
            "--keep-serving",
            help="Leave the stack up after the demo calls and start the storefront",
        ),
    ] = False,
    name: Annotated[str, typer.Option(help="Dataset name")] = "completejourney",
    triton_repo: TritonRepoOpt = Path("triton_repo"),
    port: Annotated[int, typer.Option(help="Gateway HTTP port")] = 8080,
    triton_http_port: TritonHttpPortOpt = 8000,
    triton_grpc_port: TritonGrpcPortOpt = 8001,
    triton_metrics_port: TritonMetricsPortOpt = 8002,
    storefront_port: Annotated[
        int, typer.Option(help="Storefront HTTP port (with --keep-serving)")
    ] = STOREFRONT_PORT,
    data_root: DataRoot = Path("data"),
    models_root: ModelsRoot = Path("models"),
) -> None:
    """The main job: offline pipeline on Complete Journey (if not built yet), export, feature
    store, the online stack, and REST calls for real customers and articles."""
    from shoprec import artifacts as art
    from shoprec.serving.stack import ServingStack, sigterm_as_keyboard_interrupt

    paths = _paths(name, data_root, models_root)
    start = time.perf_counter()
    try:
        if not (paths.models_dir / art.REPORT_JSON).exists():
            _log("[bold]offline pipeline[/bold] (artifacts missing)")
            _run_pipeline(Source.COMPLETEJOURNEY, paths, PipelineConfig(), None, "tiny", 0)
        else:
            _log(
                f"artifacts found in {paths.models_dir}; "
                "`make clean` or `shoprec pipeline` rebuilds them"
            )
            console.print((paths.models_dir / art.REPORT_MD).read_text())
        _log("[bold]export[/bold]")
        do_export(paths, triton_repo, None)
        _log("[bold]materialize[/bold] (SQLite online store)")
        from shoprec.export.online_tables import materialize as run_materialize

        run_materialize(paths.models_dir, paths.dataset, paths.canonical)
        _log("[bold]serve[/bold]: starting tritonserver and the gateway")
        write_key, gateway_settings = _local_write_key()
        with (
            sigterm_as_keyboard_interrupt(),
            ServingStack(
                _stack_config(
                    paths,
                    triton_repo,
                    "127.0.0.1",
                    port,
                    (triton_http_port, triton_grpc_port, triton_metrics_port),
                    gateway_settings,
                )
            ) as stack,
        ):
            _log(f"stack ready ({time.perf_counter() - start:.0f} s since start)")
            _print_write_key(write_key)
            demo_calls(stack.gateway_url, paths, write_key=write_key)
            if keep_serving:
                shop_url = f"http://127.0.0.1:{storefront_port}"
                shop = _start_storefront(
                    stack.gateway_url,
                    storefront_port,
                    write_key,
                    demo_customers(paths),
                    data_last_day(paths),
                    paths.models_dir / "logs" / "storefront.log",
                )
                try:
                    if _wait_storefront(shop_url, shop):
                        console.print(
                            f"[bold]storefront: {shop_url}/[/bold] (open it in a browser)"
                        )
                    else:
                        console.print(
                            "storefront did not start: see "
                            f"{paths.models_dir / 'logs' / 'storefront.log'}"
                        )
                    _serve_forever(stack)
                finally:
                    _stop_storefront(shop)
    except KeyboardInterrupt:
        console.print("stopped")
    except ShoprecError as exc:
        raise _fail(exc) from exc
    console.print(
        f"\ndemo finished in {time.perf_counter() - start:.0f} s; the stack is stopped"
        + ("" if keep_serving else " (use --keep-serving to leave it up)")
    )


@app.command("api-key")
def api_key(
    name: Annotated[str, typer.Option(help="Key name (rate limits and metrics use it)")],
    keys_file: Annotated[
        Path,
        typer.Option(
            "--keys-file", help="JSON keys file the gateway reads (SHOPREC_API_KEYS_FILE)"
        ),
    ],
    role: Annotated[str, typer.Option(help="write | read")] = "write",
) -> None:
    """Generate an API key: its SHA-256 is added to the keys file, the key is printed once."""
    from pydantic import ValidationError

    from shoprec.gateway.keys import (
        ApiKey,
        KeysFileError,
        generate_key,
        hash_key,
        read_keys_file,
        write_keys_file,
    )

    try:
        keys = read_keys_file(keys_file) if keys_file.exists() else []
        if any(key.name == name for key in keys):
            raise typer.BadParameter(
                f"{keys_file} already has a key named {name!r}", param_hint="--name"
            )
        key = generate_key()
        entry = ApiKey.model_validate({"name": name, "role": role, "sha256": hash_key(key)})
    except KeysFileError as exc:
        raise _fail(exc) from exc
    except ValidationError as exc:
        raise typer.BadParameter(str(exc.errors()[0]["msg"])) from exc
    write_keys_file(keys_file, [*keys, entry])
    console.print(f"{role} key {name!r} added to {keys_file} (as its SHA-256). The key:")
    console.print(key, soft_wrap=True)


def _bench_write(
    name: str,
    users: str,
    seconds: float,
    out: Path | None,
    log_backends: str,
    appendfsync: str,
    data_root: Path,
    models_root: Path,
) -> None:
    from shoprec.bench import parse_users, rich_tables
    from shoprec.bench.writes import (
        BENCH_WRITE_JSON,
        BENCH_WRITE_MD,
        WriteBenchConfig,
        parse_backends,
        run_write_benchmark,
        write_sections,
    )
    from shoprec.featurestore.store import repo_dir
    from shoprec.serving.stack import sigterm_as_keyboard_interrupt

    paths = _paths(name, data_root, models_root)
    try:
        cfg = WriteBenchConfig(
            name=name,
            feature_repo=repo_dir(paths.models_dir),
            out_dir=out or paths.models_dir / "bench",
            users=parse_users(users),
            seconds=seconds,
            backends=parse_backends(log_backends),
            appendfsync=appendfsync,
        )
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from exc
    try:
        with sigterm_as_keyboard_interrupt():
            result = run_write_benchmark(cfg, log=_log)
    except KeyboardInterrupt:
        console.print("stopped")
        raise typer.Exit(code=130) from None
    except ShoprecError as exc:
        raise _fail(exc) from exc
    for table in rich_tables(write_sections(result)):
        console.print(table)
    console.print(f"report: {cfg.out_dir / BENCH_WRITE_MD}, {cfg.out_dir / BENCH_WRITE_JSON}")


def _bench_nrt(
    name: str,
    triton_repo: Path,
    seconds: float,
    events_per_s: float,
    out: Path | None,
    data_root: Path,
    models_root: Path,
) -> None:
    from shoprec.bench.nrt import BENCH_NRT_MD, NrtBenchConfig, run_nrt_benchmark
    from shoprec.gateway.keys import ApiKey, Role, generate_key, hash_key
    from shoprec.serving.stack import ServingStack, sigterm_as_keyboard_interrupt
    from shoprec.serving.tritonserver import free_port

    paths = _paths(name, data_root, models_root)
    ports: list[int] = []
    while len(ports) < 4:
        port = free_port()
        if port not in ports:
            ports.append(port)
    key = generate_key()
    unlimited = "100000000/second"
    config = _stack_config(
        paths,
        triton_repo,
        "127.0.0.1",
        ports[0],
        (ports[1], ports[2], ports[3]),
        {
            "api_keys": [ApiKey(name="bench", role=Role.WRITE, sha256=hash_key(key))],
            "rate_limit_reads": unlimited,
            "rate_limit_writes": unlimited,
            "rate_limit_events": unlimited,
        },
    )
    try:
        cfg = NrtBenchConfig(
            name=name,
            triton_repo=triton_repo,
            feature_repo=config.feature_repo,
            out_dir=out or paths.models_dir / "bench",
            seconds=seconds,
            events_per_s=events_per_s,
        )
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from exc
    try:
        with sigterm_as_keyboard_interrupt(), ServingStack(config) as stack:
            run_nrt_benchmark(cfg, stack.gateway_url, key, log=_log)
    except KeyboardInterrupt:
        console.print("stopped")
        raise typer.Exit(code=130) from None
    except ShoprecError as exc:
        raise _fail(exc) from exc
    console.print((cfg.out_dir / BENCH_NRT_MD).read_text())


@app.command()
def bench(
    name: Annotated[str, typer.Option(help="Dataset name")] = "completejourney",
    users: Annotated[
        str | None,
        typer.Option(help="Concurrency levels (simulated users), e.g. 1,4,16 (--write: 1,16)"),
    ] = None,
    seconds: Annotated[
        float | None,
        typer.Option(help="Measured seconds per endpoint and level (default 20, --write 10)"),
    ] = None,
    nrt: Annotated[
        bool,
        typer.Option(
            "--nrt",
            help="Near-real-time: event-to-effect latency under a steady event load with reads "
            "running (stack with the updater started on free ports) -> bench-nrt.{json,md}",
        ),
    ] = False,
    events_per_s: Annotated[
        float, typer.Option("--events-per-s", help="--nrt: the steady event load")
    ] = 200.0,
    write: Annotated[
        bool,
        typer.Option(
            "--write",
            help="The write side instead: POST /v1/events with batches of 1 and 100 on each "
            "event-log backend (gateway and redis-server started on free ports)",
        ),
    ] = False,
    log_backends: Annotated[
        str, typer.Option("--log-backends", help="--write: sqlite,redis or one of them")
    ] = "sqlite,redis",
    appendfsync: Annotated[
        str, typer.Option("--appendfsync", help="--write: the Redis log's AOF policy")
    ] = "always",
    out: Annotated[
        Path | None,
        typer.Option(
            "--out", help="Output folder for bench.json and bench.md (default models/<name>/bench)"
        ),
    ] = None,
    triton_repo: TritonRepoOpt = Path("triton_repo"),
    gateway_url: Annotated[
        str | None,
        typer.Option(
            "--gateway-url",
            help="Gateway of a running stack on loopback, e.g. "
            "http://127.0.0.1:8080 (with --triton-grpc-url and --triton-metrics-url); "
            "default: start one on free ports",
        ),
    ] = None,
    triton_grpc_url: Annotated[
        str | None,
        typer.Option("--triton-grpc-url", help="Triton gRPC of that stack, e.g. 127.0.0.1:8001"),
    ] = None,
    triton_metrics_url: Annotated[
        str | None,
        typer.Option(
            "--triton-metrics-url",
            help="Triton metrics of that stack, e.g. http://127.0.0.1:8002/metrics",
        ),
    ] = None,
    data_root: DataRoot = Path("data"),
    models_root: ModelsRoot = Path("models"),
) -> None:
    """Load test the online stack (gateway and Triton) with locust; latency, throughput,
    per-stage times and the latency targets -> bench.json and bench.md. With --write: durable
    events/s and POST /v1/events latency per event-log backend -> bench-write.{json,md}."""
    if nrt:
        _bench_nrt(
            name, triton_repo, 30.0 if seconds is None else seconds, events_per_s, out,
            data_root, models_root,
        )  # fmt: skip
        return
    if write:
        _bench_write(
            name, users or "1,16", 10.0 if seconds is None else seconds, out, log_backends,
            appendfsync, data_root, models_root,
        )  # fmt: skip
        return
    from shoprec.bench import (
        BENCH_JSON,
        BENCH_MD,
        BenchConfig,
        parse_users,
        report_sections,
        rich_tables,
        run_benchmark,
    )
    from shoprec.featurestore.store import repo_dir
    from shoprec.serving.stack import sigterm_as_keyboard_interrupt

    paths = _paths(name, data_root, models_root)
    try:
        cfg = BenchConfig(
            name=name,
            triton_repo=triton_repo,
            feature_repo=repo_dir(paths.models_dir),
            out_dir=out or paths.models_dir / "bench",
            users=parse_users(users or "1,4,16"),
            seconds=20.0 if seconds is None else seconds,
            gateway_url=gateway_url,
            triton_grpc_url=triton_grpc_url,
            triton_metrics_url=triton_metrics_url,
        )
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from exc
    try:
        with sigterm_as_keyboard_interrupt():
            result = run_benchmark(cfg, log=_log)
    except KeyboardInterrupt:
        console.print("stopped")
        raise typer.Exit(code=130) from None
    except ShoprecError as exc:
        raise _fail(exc) from exc
    for table in rich_tables(report_sections(result)):
        console.print(table)
    console.print(f"report: {cfg.out_dir / BENCH_MD}, {cfg.out_dir / BENCH_JSON}")


if __name__ == "__main__":
    app()
