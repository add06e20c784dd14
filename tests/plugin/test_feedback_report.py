"""What clinicians do with the cards (issue 13): cards shown counted in memory and flushed,
feedback attributed to the card's finding, and the report from the CLI and the page.

Expected numbers are taken from the cards the service actually returned (whatever the card
policy), never written down here.
"""

from __future__ import annotations

import asyncio
import csv
import io
import json
import re
from collections import Counter
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import Column, DateTime, Integer, MetaData, String, Table, Text, insert, select
from sqlalchemy.exc import OperationalError
from typer.testing import CliRunner

from plugin.app import create_app
from plugin.cli import app as cli
from plugin.feedback_report import load_report, report_json
from plugin.hook_request import build_hook_request
from plugin.services import ORDER_SIGN_SERVICE
from plugin.settings import Settings
from plugin.storage import (
    UNKNOWN_TOPIC,
    cards_shown_table,
    iso_week,
    make_engine,
)

ROOT = Path(__file__).resolve().parents[2]
SAMPLES = ROOT / "sample_bundles"
INVOKE = f"/cds-services/{ORDER_SIGN_SERVICE}"
FEEDBACK = f"{INVOKE}/feedback"
#: Samples that raise problems (several findings between them).
SIGNED = ("pair-no-modifier.json", "overlapping-time-blocks.json", "under-8-minutes.json")
runner = CliRunner()


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def _url(tmp_path: Path, name: str = "cds.db") -> str:
    return f"sqlite:///{tmp_path / name}"


def _app(database_url: str, **settings: Any) -> FastAPI:
    return create_app(
        Settings(
            dev_mode=True,
            require_auth=False,
            database_url=database_url,
            log_level="ERROR",
            **settings,
        )
    )


def _client(app: FastAPI) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://cds.test")


def _topic(card: dict[str, Any]) -> str:
    topic: str = card["source"]["topic"]["code"]
    return topic


async def _sign(client: httpx.AsyncClient, name: str) -> list[dict[str, Any]]:
    bundle = json.loads((SAMPLES / name).read_text())
    response = await client.post(INVOKE, json=build_hook_request(bundle, hook="order-sign"))
    assert response.status_code == 200, response.text
    cards: list[dict[str, Any]] = response.json()["cards"]
    return cards


async def _sign_all(client: httpx.AsyncClient, names: Sequence[str]) -> list[dict[str, Any]]:
    cards: list[dict[str, Any]] = []
    for name in names:
        cards += await _sign(client, name)
    assert cards, "the samples must return cards for these tests to mean anything"
    return cards


def _stored_shown(database_url: str) -> Counter[str]:
    engine = make_engine(database_url)
    try:
        with engine.connect() as connection:
            table = cards_shown_table.c
            rows = connection.execute(select(table.topic, table.shown))
            found: Counter[str] = Counter()
            for topic, shown in rows:
                found[topic] += shown
            return found
    finally:
        engine.dispose()


def _report(database_url: str) -> dict[str, Any]:
    engine = make_engine(database_url)
    try:
        return report_json(load_report(engine))
    finally:
        engine.dispose()


def _by_finding(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {item["finding"]: item for item in report["findings"]}


def _item(card: str, outcome: str, reason: str | None = None) -> dict[str, Any]:
    item: dict[str, Any] = {
        "card": card,
        "outcome": outcome,
        "outcomeTimestamp": "2025-03-04T15:00:00Z",
    }
    if reason is not None:
        item["overrideReason"] = {"reason": {"code": reason, "system": "https://x.example"}}
    return item


# ------------------------------------------------------------------------------ counting


@pytest.mark.anyio
async def test_several_calls_are_one_flush_and_nothing_is_written_before(tmp_path: Path) -> None:
    url = _url(tmp_path)
    app = _app(url)
    async with _client(app) as client:
        cards = await _sign_all(client, SIGNED + SIGNED[:1])
    expected = Counter(_topic(card) for card in cards)
    assert _stored_shown(url) == Counter()  # no database write on the request path
    assert app.state.cards_shown.flush() == len(cards)
    assert _stored_shown(url) == expected
    assert app.state.cards_shown.flush() == 0  # nothing new: nothing written twice
    assert _stored_shown(url) == expected
    week = iso_week(datetime.now(UTC).date())
    report = _by_finding(_report(url))
    assert {finding: item["shown"] for finding, item in report.items()} == dict(expected)
    assert {item["weeks"][0]["week"] for item in report.values()} == {week}


@pytest.mark.anyio
async def test_the_lifespan_flushes_periodically_and_at_shutdown(tmp_path: Path) -> None:
    url = _url(tmp_path)
    app = _app(url, feedback_flush_seconds=0.05)
    async with app.router.lifespan_context(app), _client(app) as client:
        first = await _sign(client, SIGNED[0])
        for _ in range(100):  # the periodic flush, off the request path
            await asyncio.sleep(0.05)
            if sum(_stored_shown(url).values()) == len(first):
                break
        assert _stored_shown(url) == Counter(_topic(card) for card in first)
        app.state.cards_shown.store.engine.dispose()
    slow = _app(_url(tmp_path, "slow.db"), feedback_flush_seconds=3600)
    async with slow.router.lifespan_context(slow), _client(slow) as client:
        cards = await _sign_all(client, SIGNED)
        assert _stored_shown(_url(tmp_path, "slow.db")) == Counter()
    # the hour has not passed: only the shutdown flush can have written these
    assert _stored_shown(_url(tmp_path, "slow.db")) == Counter(_topic(card) for card in cards)


@pytest.mark.anyio
async def test_two_app_instances_on_one_sqlite_file_add_up(tmp_path: Path) -> None:
    url = _url(tmp_path)
    first, second = _app(url), _app(url)
    async with _client(first) as one, _client(second) as two:
        cards = await _sign_all(one, SIGNED) + await _sign_all(two, SIGNED[:2])
        cards += await _sign_all(one, SIGNED[:1])
        first.state.cards_shown.flush()
        second.state.cards_shown.flush()
        cards += await _sign_all(two, SIGNED)
        second.state.cards_shown.flush()
    assert _stored_shown(url) == Counter(_topic(card) for card in cards)


# ------------------------------------------------------------------------------ attribution


@pytest.mark.anyio
async def test_feedback_is_attributed_to_the_finding_of_its_card(tmp_path: Path) -> None:
    url = _url(tmp_path)
    app = _app(url)
    async with _client(app) as client:
        cards = await _sign_all(client, SIGNED)
        a = cards[0]
        b = next(card for card in reversed(cards) if _topic(card) != _topic(a))
        batch = [
            _item(a["uuid"], "accepted"),
            _item(b["uuid"], "overridden", "payer-exception"),
            _item(b["uuid"], "overridden", "payer-exception") | {"outcomeTimestamp": "2025-03-05"},
            _item(b["uuid"], "overridden", "will-correct-documentation"),
            _item(b["uuid"], "overridden"),  # no reason given
            _item("not-a-card-of-ours", "overridden", "other"),
        ]
        response = await client.post(FEEDBACK, json={"feedback": batch})
        assert response.status_code == 200, response.text
    # attributed before any flush: this worker remembers the cards it returned
    topics = {row["card_uuid"]: row["topic"] for row in app.state.feedback_store.outcomes()}
    assert topics == {a["uuid"]: _topic(a), b["uuid"]: _topic(b), "not-a-card-of-ours": None}
    app.state.cards_shown.flush()
    report = _by_finding(_report(url))
    shown = Counter(_topic(card) for card in cards)
    overridden = report[_topic(b)]
    assert overridden["shown"] == shown[_topic(b)]
    assert overridden["overridden"] == 4
    assert overridden["override_reasons"] == [
        {"code": "payer-exception", "count": 2},
        {"code": "will-correct-documentation", "count": 1},
        {"code": None, "count": 1},
    ]
    assert report[_topic(a)]["accepted"] == 1
    unknown = report[UNKNOWN_TOPIC]
    assert (unknown["shown"], unknown["overridden"]) == (0, 1)
    assert unknown["override_reasons"] == [{"code": "other", "count": 1}]
    assert _report(url)["findings"][0]["finding"] == _topic(b)  # the most overridden first


@pytest.mark.anyio
async def test_feedback_to_another_worker_finds_the_card_flushed_or_not(tmp_path: Path) -> None:
    """Feedback reaches whichever worker: before the showing worker flushed, the report finds
    the finding by the card's uuid once it has; after, the receiving worker stores it."""
    url = _url(tmp_path)
    shows, receives = _app(url), _app(url)
    async with _client(shows) as one, _client(receives) as two:
        early, late = await _sign(one, SIGNED[0]), await _sign(one, SIGNED[1])
        sent = await two.post(FEEDBACK, json={"feedback": [_item(early[0]["uuid"], "accepted")]})
        assert sent.status_code == 200
        shows.state.cards_shown.flush()
        sent = await two.post(
            FEEDBACK, json={"feedback": [_item(late[0]["uuid"], "overridden", "payer-exception")]}
        )
        assert sent.status_code == 200
    stored = {row["card_uuid"]: row["topic"] for row in receives.state.feedback_store.outcomes()}
    assert stored == {early[0]["uuid"]: None, late[0]["uuid"]: _topic(late[0])}
    report = _by_finding(_report(url))
    assert UNKNOWN_TOPIC not in report
    assert report[_topic(early[0])]["accepted"] == 1
    assert report[_topic(late[0])]["overridden"] == 1


def test_memory_is_capped_and_a_failed_flush_keeps_the_counts(tmp_path: Path) -> None:
    from cds_hooks.models import Card, Coding, Source
    from plugin.cards_shown import CardsShown
    from plugin.storage import SqlCardStore

    url = _url(tmp_path)
    store = SqlCardStore(make_engine(url))
    tally = CardsShown(store, remember=3)
    cards = [
        Card(
            summary="s",
            indicator="warning",
            uuid=f"card-{index}",
            source=Source(label="x", topic=Coding(system="s", code=f"T-{index % 2}")),
        )
        for index in range(5)
    ]
    tally.observe("svc", cards)
    assert [tally.topic_of(f"card-{i}") for i in range(5)] == [None, None, "T-0", "T-1", "T-0"]
    assert tally.dropped == 2
    with store.engine.begin() as connection:
        cards_shown_table.drop(connection)
    with pytest.raises(OperationalError, match="cards_shown"):
        tally.flush()
    assert tally.unflushed() == 5
    tally.observe("svc", cards[:1])
    cards_shown_table.create(store.engine)
    assert tally.flush() == 6
    assert _stored_shown(url) == Counter({"T-0": 4, "T-1": 2})


def test_a_feedback_table_from_0_1_0_gets_its_new_columns(tmp_path: Path) -> None:
    url = _url(tmp_path)
    old = MetaData()
    Table(
        "feedback",
        old,
        Column("id", Integer, primary_key=True, autoincrement=True),
        Column("fingerprint", String(64), nullable=False, unique=True),
        Column("service_id", String(128), nullable=False),
        Column("card_uuid", String(128), nullable=False),
        Column("outcome", String(16), nullable=False),
        Column("outcome_timestamp", String(40), nullable=False),
        Column("accepted_suggestions", Text),
        Column("override_reason_system", String(255)),
        Column("override_reason_code", String(128)),
        Column("user_comment", Text),
        Column("received_at", DateTime(timezone=True), nullable=False),
    )
    engine = make_engine(url)
    old.create_all(engine)
    received = datetime(2024, 12, 30, 9, 0, tzinfo=UTC)  # ISO week 2025-W01
    with engine.begin() as connection:
        connection.execute(
            insert(old.tables["feedback"]).values(
                fingerprint="f",
                service_id=ORDER_SIGN_SERVICE,
                card_uuid="old-card",
                outcome="overridden",
                outcome_timestamp="2024-12-30T09:00:00Z",
                override_reason_code="payer-exception",
                received_at=received,
            )
        )
    engine.dispose()
    result = runner.invoke(cli, ["feedback", "--database-url", url])
    assert result.exit_code == 2
    assert "older therapy-cds" in result.stderr
    app = _app(url)  # start-up adds what is missing
    (row,) = app.state.feedback_store.outcomes()
    assert (row["week"], row["topic"]) == ("2025-W01", None)
    report = _by_finding(_report(url))
    assert report[UNKNOWN_TOPIC]["weeks"][0]["week"] == "2025-W01"
    _app(url)  # and a second start-up finds nothing to do


# ------------------------------------------------------------------------------ the CLI


async def _recorded(url: str) -> list[dict[str, Any]]:
    """A database with cards shown and feedback; returns the cards."""
    app = _app(url)
    async with _client(app) as client:
        cards = await _sign_all(client, SIGNED)
        batch = [_item(cards[0]["uuid"], "overridden", '=HYPERLINK("x")')]
        batch += [_item(cards[-1]["uuid"], "accepted")]
        assert (await client.post(FEEDBACK, json={"feedback": batch})).status_code == 200
    app.state.cards_shown.flush()
    return cards


@pytest.mark.anyio
async def test_cli_json_csv_and_text_agree(tmp_path: Path) -> None:
    url = _url(tmp_path)
    cards = await _recorded(url)
    result = runner.invoke(cli, ["feedback", "--database-url", url, "--format", "json"])
    assert result.exit_code == 0, result.stderr
    body = json.loads(result.stdout)
    assert body == _report(url)
    shown = Counter(_topic(card) for card in cards)
    assert {item["finding"]: item["shown"] for item in body["findings"]} == dict(shown)
    first = body["findings"][0]
    assert first["finding"] == _topic(cards[0])  # the only overridden finding comes first

    result = runner.invoke(cli, ["feedback", "--database-url", url, "--format", "csv"])
    assert result.exit_code == 0, result.stderr
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert [(row["finding"], int(row["shown"])) for row in rows] == [
        (item["finding"], item["weeks"][0]["shown"]) for item in body["findings"]
    ]
    assert rows[0]["override_reasons"] == '\'=HYPERLINK("x")=1'  # never a formula

    result = runner.invoke(cli, ["feedback", "--database-url", url], env={"COLUMNS": "160"})
    assert result.exit_code == 0, result.stderr
    for item in body["findings"]:
        line = next(line for line in result.stdout.splitlines() if line.startswith(item["finding"]))
        numbers = re.findall(r"\s(\d+|-)(?=\s)", line + " ")
        assert numbers[:3] == [str(item["shown"]), str(item["accepted"]), str(item["overridden"])]


@pytest.mark.anyio
async def test_cli_since_and_the_default_database(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = _url(tmp_path)
    await _recorded(url)
    monkeypatch.setenv("THERAPY_CDS_DATABASE_URL", url)
    this_week = datetime.now(UTC).date()
    result = runner.invoke(cli, ["feedback", "--since", this_week.isoformat(), "--format", "json"])
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["since_week"] == iso_week(this_week)
    later = (this_week + timedelta(weeks=1)).isoformat()
    result = runner.invoke(cli, ["feedback", "--since", later])
    assert result.exit_code == 1
    assert result.stdout == ""
    assert result.stderr.count("\n") == 1
    assert "no cards shown or feedback" in result.stderr


@pytest.mark.parametrize(
    ("database_url", "message"),
    [
        ("sqlite:///{tmp}/missing.db", "no database file at"),
        ("postgresql://user:s3cret@127.0.0.1:9/x", "cannot read the database"),
        ("not a url", "the database URL is not valid"),
    ],
)
def test_cli_says_in_one_line_when_the_database_cannot_be_read(
    tmp_path: Path, database_url: str, message: str
) -> None:
    result = runner.invoke(cli, ["feedback", "--database-url", database_url.format(tmp=tmp_path)])
    assert result.exit_code == 2
    assert result.stderr.count("\n") == 1, result.stderr
    assert message in result.stderr
    assert "s3cret" not in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "missing.db").exists()  # not created by looking


def test_cli_on_a_database_with_no_data_yet(tmp_path: Path) -> None:
    url = _url(tmp_path)
    _app(url)  # the service started once: tables, no rows
    result = runner.invoke(cli, ["feedback", "--database-url", url])
    assert result.exit_code == 1
    assert "no cards shown or feedback recorded yet" in result.stderr


def test_cli_refuses_a_bad_date(tmp_path: Path) -> None:
    result = runner.invoke(cli, ["feedback", "--database-url", _url(tmp_path), "--since", "3/4"])
    assert result.exit_code == 2
    assert "YYYY-MM-DD" in result.stderr


# ------------------------------------------------------------------------------ the page


def _page_numbers(html: str) -> dict[str, tuple[int, int, int]]:
    """(shown, accepted, overridden) of each finding's total row on the page."""
    found = {}
    for block in re.findall(r'<tbody data-finding="([^"]+)">(.*?)</tr>', html, re.S):
        finding, row = block
        cells = dict(re.findall(r'data-col="(\w+)">([^<]*)<', row))
        found[finding] = (int(cells["shown"]), int(cells["accepted"]), int(cells["overridden"]))
    return found


@pytest.mark.anyio
async def test_the_page_shows_the_cli_numbers_escaped(tmp_path: Path) -> None:
    url = _url(tmp_path)
    app = _app(url)
    async with _client(app) as client:
        cards = await _sign_all(client, SIGNED)
        batch = [_item(cards[0]["uuid"], "overridden", "<script>alert(1)</script>")]
        assert (await client.post(FEEDBACK, json={"feedback": batch})).status_code == 200
        app.state.cards_shown.flush()
        page = await client.get("/rules/feedback")
        catalogue = await client.get("/rules")
        empty = await client.get(f"/rules/feedback?since={datetime.now(UTC).year + 1}-01-01")
        bad = await client.get("/rules/feedback?since=<b>")
    assert page.status_code == 200
    assert "<script>alert(1)</script>" not in page.text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page.text
    assert page.headers["content-security-policy"].startswith("default-src 'self'")
    result = runner.invoke(cli, ["feedback", "--database-url", url, "--format", "json"])
    cli_numbers = {
        item["finding"]: (item["shown"], item["accepted"], item["overridden"])
        for item in json.loads(result.stdout)["findings"]
    }
    assert _page_numbers(page.text) == cli_numbers
    assert list(_page_numbers(page.text)) == list(cli_numbers)  # the same order
    assert 'href="/rules/feedback"' in catalogue.text
    assert empty.status_code == 200
    assert "No cards shown or feedback recorded" in empty.text
    assert bad.status_code == 400
    assert "<b>" not in bad.text


@pytest.mark.anyio
async def test_the_page_is_served_in_production_only_when_asked(tmp_path: Path) -> None:
    issuers = tmp_path / "issuers.json"
    issuers.write_text("[]")
    production = {
        "require_auth": True,
        "trusted_issuers_file": issuers,
        "session_key": "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=",
        "public_base_url": "https://cds.example",
        "database_url": _url(tmp_path),
        "log_level": "ERROR",
    }
    for setting, served in ((None, False), (True, True), (False, False)):
        app = create_app(Settings(**production, feedback_page=setting))
        async with _client(app) as client:
            page = await client.get("/rules/feedback")
            catalogue = await client.get("/rules")
        assert (page.status_code != 404) is served, setting
        assert ('href="/rules/feedback"' in catalogue.text) is served
    development = _app(_url(tmp_path, "dev.db"), feedback_page=False)
    async with _client(development) as client:
        assert (await client.get("/rules/feedback")).status_code == 404
