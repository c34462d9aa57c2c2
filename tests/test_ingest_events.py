"""``shoprec ingest events``: the event log folded into the canonical tables, through the CLI.

The log is written with the SQLite backend's own writer; the canonical tables are the toy
data (tests/toydata.py: prices are 1 + the article's number, so a0 costs 1.0 and a7 8.0).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from typer.testing import CliRunner

from shoprec import schema as s
from shoprec.cli import app
from shoprec.data.ingest.canonical import read_canonical, read_report, write_canonical
from shoprec.events import ArticleFields, Customer, Event, EventLog, EventType, open_event_log
from toydata import make_canonical

WHEN = datetime(2020, 2, 12, 9, 30, tzinfo=UTC)  # the day after the toy data's last purchase


def purchase(event_id: str, customer_id: str, article_id: str, **extra: Any) -> Event:
    return Event.model_validate(
        {
            "event_id": event_id,
            "type": EventType.PURCHASE,
            "customer_id": customer_id,
            "article_id": article_id,
            "timestamp": WHEN,
            **extra,
        }
    )


def view(event_id: str, customer_id: str, article_id: str) -> Event:
    return purchase(event_id, customer_id, article_id).model_copy(update={"type": EventType.VIEW})


def write_log(path: Path, *steps: tuple[str, Any]) -> None:
    """Apply (method, argument) steps to the SQLite log at ``path``."""

    async def main() -> None:
        log: EventLog = open_event_log(str(path))
        try:
            for method, argument in steps:
                if method == "events":
                    await log.append_events(argument)
                elif method == "customer":
                    await log.put_customer(argument)
                elif method == "article":
                    await log.put_article(*argument)
                elif method == "hide":
                    await log.set_hidden(argument, True)
                elif method == "delete":
                    await log.delete_article(argument)
                else:
                    await log.erase_customer(argument)
        finally:
            await log.close()

    asyncio.run(main())


@pytest.fixture
def roots(tmp_path: Path) -> tuple[Path, Path]:
    """data/ and models/ roots with the toy canonical tables as dataset "toy"."""
    data, models = tmp_path / "data", tmp_path / "models"
    write_canonical(make_canonical(), data / "toy" / "canonical", {"source": "toy"})
    (models / "toy").mkdir(parents=True)
    return data, models


def cli(*args: str | Path) -> Any:
    return CliRunner().invoke(app, [str(a) for a in args], catch_exceptions=False)


def fold(roots: tuple[Path, Path], *extra: str) -> Any:
    data, models = roots
    return cli(
        "ingest", "events", "--name", "toy", "--data-root", data, "--models-root", models, *extra
    )


def flat(text: str) -> str:
    """``text`` without whitespace and box borders (rich wraps long lines anywhere)."""
    return "".join(text.replace("│", " ").split())


def rows(frame: pl.DataFrame, key: str, ids: Sequence[str]) -> list[dict[str, Any]]:
    return frame.filter(pl.col(key).is_in(list(ids))).sort(key).to_dicts()


def test_fold_adds_purchases_customers_articles_and_applies_erasures(
    roots: tuple[Path, Path],
) -> None:
    data, models = roots
    before = make_canonical()
    write_log(
        models / "toy" / "events.db",
        ("customer", Customer(customer_id="new-1", age=40, segment="S")),
        ("customer", Customer(customer_id="c0", age=26)),  # replaces c0's attributes
        ("article", ("n-art", ArticleFields(name="Oat drink", department="grocery"))),
        ("article", ("a3", ArticleFields(name="Dress 3 renamed"))),
        ("article", ("n-unsold", ArticleFields(name="Never sold"))),
        ("delete", "n-unsold"),  # dropped: no transaction needs it
        ("delete", "a7"),  # kept: sold before
        ("hide", "a6"),
        (
            "events",
            [
                purchase("p1", "c0", "a1", price=9.5, quantity=3),
                purchase("p2", "visitor-9", "a2"),  # no price: a2's mean price, 3.0
                purchase("p3", "new-1", "n-art", price=2.0),
                view("v1", "c0", "a4"),
                purchase("p4", "c5", "a5", price=1.0),  # erased below
            ],
        ),
        ("erase", "c5"),
    )
    result = fold(roots)
    assert result.exit_code == 0, result.output
    after = read_canonical(data / "toy" / "canonical")
    new_lines = after.transactions.filter(pl.col(s.T_DAT) == date(2020, 2, 12))
    assert new_lines.sort(s.CUSTOMER_ID).to_dicts() == [
        {s.T_DAT: date(2020, 2, 12), s.CUSTOMER_ID: "c0", s.ARTICLE_ID: "a1", s.PRICE: 9.5,
         s.QUANTITY: 3, s.SALES_CHANNEL_ID: 2},
        {s.T_DAT: date(2020, 2, 12), s.CUSTOMER_ID: "new-1", s.ARTICLE_ID: "n-art", s.PRICE: 2.0,
         s.QUANTITY: 1, s.SALES_CHANNEL_ID: 2},
        {s.T_DAT: date(2020, 2, 12), s.CUSTOMER_ID: "visitor-9", s.ARTICLE_ID: "a2",
         s.PRICE: 3.0, s.QUANTITY: 1, s.SALES_CHANNEL_ID: 2},
    ]  # fmt: skip
    c5_lines = before.transactions.filter(pl.col(s.CUSTOMER_ID) == "c5").height
    assert after.transactions.height == before.transactions.height - c5_lines + 3
    assert "c5" not in after.customers.get_column(s.CUSTOMER_ID).to_list()
    assert rows(after.customers, s.CUSTOMER_ID, ["c0", "new-1", "visitor-9"]) == [
        {s.CUSTOMER_ID: "c0", s.AGE: 26.0, s.SEGMENT: None, s.HOUSEHOLD: None, s.POSTAL_CODE: None},
        {s.CUSTOMER_ID: "new-1", s.AGE: 40.0, s.SEGMENT: "S", s.HOUSEHOLD: None,
         s.POSTAL_CODE: None},
        {s.CUSTOMER_ID: "visitor-9", s.AGE: None, s.SEGMENT: None, s.HOUSEHOLD: None,
         s.POSTAL_CODE: None},
    ]  # fmt: skip
    articles = after.articles.get_column(s.ARTICLE_ID).to_list()
    assert "n-art" in articles and "a7" in articles and "a6" in articles
    assert "n-unsold" not in articles
    assert rows(after.articles, s.ARTICLE_ID, ["a3"])[0][s.NAME] == "Dress 3 renamed"
    report = read_report(data / "toy" / "canonical")
    assert report["source"] == "toy"  # the source's report is kept
    events = report["events"]
    assert (events["from_offset"], events["to_offset"], events["entries"]) == (0, 14, 13)
    assert events["events"] == {"purchase": 3, "view": 1}  # c5's purchase was erased
    assert (events["transactions_added"], events["price_imputed"]) == (3, 1)
    assert (events["customers_added"], events["customers_updated"]) == (2, 1)
    assert (events["articles_added"], events["articles_updated"]) == (2, 1)
    assert (events["deleted_articles_dropped"], events["deleted_articles_kept"]) == (1, 1)
    assert (events["erasures"], events["customers_erased"]) == (1, 1)
    assert events["transactions_erased"] == c5_lines
    assert events["warnings"] == []


def test_folding_again_adds_only_what_came_since(roots: tuple[Path, Path]) -> None:
    data, models = roots
    log = models / "toy" / "events.db"
    write_log(log, ("events", [purchase("p1", "c0", "a1", price=1.0)]))
    assert fold(roots).exit_code == 0
    first = read_canonical(data / "toy" / "canonical").transactions.height
    assert fold(roots).exit_code == 0  # nothing new
    assert read_canonical(data / "toy" / "canonical").transactions.height == first
    assert read_report(data / "toy" / "canonical")["events"]["entries"] == 0
    write_log(log, ("events", [purchase("p1", "c0", "a1"), purchase("p2", "c1", "a1", price=2.0)]))
    assert fold(roots).exit_code == 0
    assert read_canonical(data / "toy" / "canonical").transactions.height == first + 1
    assert read_report(data / "toy" / "canonical")["events"]["from_offset"] == 1


def test_a_gap_after_the_canonical_data_is_warned(roots: tuple[Path, Path]) -> None:
    _, models = roots
    late = purchase("late", "c0", "a1", price=1.0, timestamp=datetime(2026, 1, 1, tzinfo=UTC))
    write_log(models / "toy" / "events.db", ("events", [late]))
    result = fold(roots)
    assert result.exit_code == 0
    assert flat(
        "warning: the log's purchases start 2151 days after the last canonical one (2020-02-11)"
    ) in flat(result.output)


def test_fold_errors_name_what_is_wrong(roots: tuple[Path, Path], tmp_path: Path) -> None:
    data, models = roots
    missing = cli("ingest", "events", "--data-root", data, "--models-root", models)
    assert missing.exit_code == 2 and flat("events needs --name") in flat(missing.output)
    no_log = fold(roots)
    assert no_log.exit_code == 2
    assert flat(f"event log {models / 'toy' / 'events.db'} not found") in flat(no_log.output)
    bad_url = fold(roots, "--event-log", "kafka://x")
    assert bad_url.exit_code == 2 and flat("expected sqlite:///path") in flat(bad_url.output)
    pipeline = cli("pipeline", "events", "--data-root", data, "--models-root", models)
    assert pipeline.exit_code == 2 and flat("pipeline needs a data source") in flat(pipeline.output)
    # A purchase of an article the canonical tables never had fails validation, naming it;
    # the tables stay as they were.
    write_log(models / "toy" / "events.db", ("events", [purchase("x", "c0", "ghost", price=1.0)]))
    before = (data / "toy" / "canonical" / "transactions.parquet").read_bytes()
    result = fold(roots)
    assert result.exit_code == 2
    assert flat("'ghost' is not in articles") in flat(result.output)
    assert (data / "toy" / "canonical" / "transactions.parquet").read_bytes() == before


def test_a_source_ingest_folds_the_datasets_own_log(tmp_path: Path) -> None:
    data, models = tmp_path / "data", tmp_path / "models"
    common = ("--name", "syn", "--data-root", data, "--models-root", models)
    assert cli("ingest", "synthetic", "--scale", "tiny", *common).exit_code == 0
    canonical = read_canonical(data / "syn" / "canonical")
    article = canonical.articles.get_column(s.ARTICLE_ID)[0]
    (models / "syn").mkdir(parents=True)
    write_log(
        models / "syn" / "events.db", ("events", [purchase("e", "web-1", article, price=5.0)])
    )
    result = cli("ingest", "synthetic", "--scale", "tiny", *common)
    assert result.exit_code == 0, result.output
    assert "folded the event log" in result.output
    again = read_canonical(data / "syn" / "canonical")
    assert again.transactions.height == canonical.transactions.height + 1
    assert (
        json.loads((data / "syn" / "canonical" / "ingest_report.json").read_text())["events"][
            "transactions_added"
        ]
        == 1
    )
