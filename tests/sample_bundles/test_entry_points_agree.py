"""One answer everywhere (issue 14): every sample bundle gives the same visits, units, pair
status and finding ids through ``check``, the order-sign and encounter-discharge services, the
sandbox's timeline API and the SMART app.

Each answer is reduced to one normalised value: per visit (date, discipline, total timed
minutes, units per code, pair status, finding ids), plus the ids of the findings outside any
visit. ``check`` runs the plugin pipeline on a bundle (what ``check --format json`` prints); the
services get the request :func:`plugin.hook_request.build_hook_request` builds, posted in process,
with the ``procedures`` prefetch cut down to what an EHR filling the declared template
(``Procedure?patient=..&encounter=..``) returns: the context encounter's Procedures.

Where an entry point legitimately sees less than the bundle, the expected value is ``check`` on
exactly the data that entry point is given, and the difference is stated:

* without FHIR access a service sees the context encounter only, so it equals ``check`` on the
  bundle without the other encounters' Procedures (this differs from ``check`` on the whole
  bundle for :data:`SEVERAL_ENCOUNTERS`); with FHIR access (respx at the transport) it searches
  the patient's Procedures of the day and equals ``check`` on the whole bundle;
* order-sign with no draft charge (the two encounter-discharge scenarios) gives no cards;
* the SMART app, launched by the loopback fake EHR (``tests/plugin/web/fake_ehr.py``: SMART
  authorization and FHIR server over the sample's resources) for the hook's patient and
  encounter, reads the visit, its charges and the patient's Procedures of the day itself, so it
  equals ``check`` on the whole bundle;
* the bulk audit (``therapy-cds audit``) over the samples folder gives every visit of every
  sample ``check``'s billed units per code (``visits.csv`` ``units_billed`` and ``check``'s
  ``billed_units``), its allowed units and the difference (over- and under-billed units);
* encounter-discharge carries no draft orders (they belong to order-sign), so it equals
  ``check`` on the bundle without its draft ServiceRequests: for the order-sign scenarios no
  charge line can be read there, and the answer says so (I-CHARGES-NOT-AVAILABLE) instead of
  claiming what was billed.
"""

from __future__ import annotations

import copy
import csv
import json
import re
import sys
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import httpx
import pytest
import respx
from fastapi import FastAPI
from scenario_support import BUNDLES, bundle, scenarios
from typer.testing import CliRunner

from fhir_mappings import map_bundle
from plugin.app import cds_config, create_app
from plugin.cli import app as cli_app
from plugin.hook_request import build_hook_request
from plugin.pipeline import check_record
from plugin.rules import analysis_to_json
from plugin.rules.catalogue import RuleId
from plugin.services import DISCHARGE_SERVICE, EXTENSION_KEY, ORDER_SIGN_SERVICE
from plugin.settings import Settings
from plugin.web.install import install_web
from plugin.web.settings import WebSettings

# the web tests' fake EHR (SMART authorization server + FHIR server)
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "plugin" / "web"))
from fake_ehr import FakeEhr, make_fake_ehr_app

pytestmark = pytest.mark.anyio

FHIR = "https://ehr.example.org/fhir"
TOKEN = "fhir-access-token-i14"
SAMPLES = [s["file"] for s in scenarios()]
#: The samples whose Procedures sit in more than one encounter of the day.
SEVERAL_ENCOUNTERS = {
    "two-encounters-same-day.json",
    "xe-separate-encounters.json",
    "co-treatment-pt-ot-xp.json",
    "co-treatment-no-modifier.json",
    "co-treatment-overlap.json",
}
ENTRY_POINTS = [
    "order-sign",
    "order-sign+fhir",
    "encounter-discharge",
    "encounter-discharge+fhir",
    "sandbox",
    "smart",
]
SMART_EHR = "http://ehr.test"
RULE_IDS = {r.value for r in RuleId}
NOT_POOLED_NOTE = "Count covers this encounter only"

Visit = tuple[str, str, int, tuple[tuple[str, int], ...], str, tuple[str, ...]]
Answer = tuple[tuple[Visit, ...], tuple[str, ...]]
Json = dict[str, Any]


# ---------------------------------------------------------------- normalised answers


def from_check_json(document: Mapping[str, Any]) -> Answer:
    visits = tuple(
        sorted(
            (
                v["date"],
                v["discipline"],
                v["total_timed_minutes"],
                tuple(sorted(v["units"].items())),
                v["pair"],
                tuple(sorted({f["rule"] for f in v["findings"]})),
            )
            for v in document["visits"]
        )
    )
    return visits, tuple(sorted({f["rule"] for f in document["findings"]}))


def from_timeline(document: Mapping[str, Any]) -> Answer:
    visits = tuple(
        sorted(
            (
                v["date"],
                v["discipline"],
                v["totalTimedMinutes"],
                tuple(sorted(v["units"].items())),
                v["pair"],
                tuple(sorted({f["rule"] for f in v["findings"]})),
            )
            for v in document["visits"]
        )
    )
    return visits, tuple(sorted({f["rule"] for f in document["findings"]}))


_SUMMARY = re.compile(r"^(\w+) (\d{4}-\d{2}-\d{2}): .*\((\d+) timed min, (?:CMS|AMA)\)$")
_ROW = re.compile(r"^\| (\w+) \| \d+ \| \d+ \| (\d+) \|$", re.MULTILINE)
_PAIR = re.compile(r"97140/97530 pair: \*\*(\w+)\*\*")
_LISTED = re.compile(r"^- \*\*([EWI]-[A-Z0-9-]+)\*\*:", re.MULTILINE)
_PROBLEMS = re.compile(r"^Problems: (.*)$", re.MULTILINE)
_ID = re.compile(r"\*\*([EWI]-[A-Z0-9-]+)\*\*")
_SAME_CAUSE = re.compile(r"^Same cause: (.*)$", re.MULTILINE)


def from_cards(cards: Iterable[Mapping[str, Any]]) -> Answer:
    """The answer under the card policy ``all``: each visit's ``info`` summary card gives its
    units table, pair status, its problems (``Problems:``, by id) and informational findings;
    the card for findings outside any visit lists them. The problem cards themselves are
    checked against these lists (:func:`shown_by_problem_cards`)."""
    visits: list[Visit] = []
    outside: set[str] = set()
    for card in cards:
        summary = _SUMMARY.match(card["summary"])
        detail = card.get("detail", "")
        if card["indicator"] == "info" and summary:
            pair = _PAIR.search(detail)
            assert pair is not None, detail
            units = tuple(sorted((code, int(n)) for code, n in _ROW.findall(detail)))
            problems = _PROBLEMS.search(detail)
            found = set(_LISTED.findall(detail)) | set(_ID.findall(problems[1] if problems else ""))
            visits.append(
                (
                    summary[2],
                    summary[1],
                    int(summary[3]),
                    units,
                    pair[1],
                    tuple(sorted(found)),
                )
            )
        elif card["indicator"] == "info" and card["summary"].endswith("not tied to any visit"):
            outside.update(_LISTED.findall(detail))
    return tuple(sorted(visits)), tuple(sorted(outside))


def shown_by_problem_cards(cards: Iterable[Mapping[str, Any]]) -> set[str]:
    """The finding ids the problem cards show: their topics and the findings grouped under."""
    shown: set[str] = set()
    for card in cards:
        topic = card["source"].get("topic", {}).get("code")
        if topic not in RULE_IDS or card["summary"].endswith("not tied to any visit"):
            continue
        if card["indicator"] == "info" and topic != "I-CHARGES-NOT-AVAILABLE":
            continue  # policy `all`: an informational finding's own card
        same = _SAME_CAUSE.search(card.get("detail", ""))
        shown |= {topic, *(_ID.findall(same[1]) if same else ())}
    return shown


# ---------------------------------------------------------------- the data each entry point gets


def _without(data: Json, drop: Callable[[Json], bool]) -> Json:
    out = copy.deepcopy(data)
    out["entry"] = [e for e in out["entry"] if not drop(e["resource"])]
    return out


def _is_draft(resource: Json) -> bool:
    return resource["resourceType"] == "ServiceRequest" and resource.get("status") == "draft"


def _elsewhere(encounter_id: str) -> Callable[[Json], bool]:
    """A Procedure of another encounter than ``encounter_id``."""

    def drop(resource: Json) -> bool:
        reference = (resource.get("encounter") or {}).get("reference")
        return resource["resourceType"] == "Procedure" and reference != f"Encounter/{encounter_id}"

    return drop


def _per_encounter(request: Json) -> Json:
    """The request with ``prefetch.procedures`` as an EHR fills the declared template."""
    keep = _elsewhere(request["context"]["encounterId"])
    procedures = request["prefetch"]["procedures"]
    procedures["entry"] = [e for e in procedures.get("entry", []) if not keep(e["resource"])]
    procedures["total"] = sum(1 for e in procedures["entry"] if e["search"]["mode"] == "match")
    return request


def check(data: Json) -> Answer:
    result = check_record(map_bundle(data), payer_rule="cms", pair_rule="cms")
    return from_check_json(analysis_to_json(result.analysis))


def _searchset(data: Json, resource_type: str) -> Json:
    entries = [
        {"fullUrl": f"{FHIR}/{resource_type}/{e['resource']['id']}", "resource": e["resource"]}
        for e in data["entry"]
        if e["resource"]["resourceType"] == resource_type
    ]
    return {"resourceType": "Bundle", "type": "searchset", "total": len(entries), "entry": entries}


# ---------------------------------------------------------------- the service in process


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def client(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    settings = Settings(
        require_auth=False,
        dev_mode=True,
        database_url=f"sqlite:///{tmp_path / 'agree.db'}",
        fhir_server_allowlist=[FHIR],
        log_level="WARNING",
    )
    app = create_app(settings)
    # No lifespan: nothing here needs its background work (the periodic cards-shown flush).
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://cds.test") as c:
        yield c


def _with_fhir_access(request: Json) -> Json:
    request["fhirServer"] = FHIR
    request["fhirAuthorization"] = {
        "access_token": TOKEN,
        "token_type": "Bearer",
        "expires_in": 300,
        "scope": "user/Procedure.read",
        "subject": "therapy-cds",
    }
    return request


async def call_service(
    client: httpx.AsyncClient, data: Json, hook: str, *, fhir: bool, policy: str | None = "all"
) -> tuple[list[Json], int]:
    """POST the hook request for ``data`` asking for the cards of ``policy`` (None: the
    service's default); returns the cards and the FHIR searches made."""
    request = _per_encounter(build_hook_request(data, hook))  # type: ignore[arg-type]
    if policy is not None:
        request["extension"] = {EXTENSION_KEY: {"cardPolicy": policy}}
    service = ORDER_SIGN_SERVICE if hook == "order-sign" else DISCHARGE_SERVICE
    if not fhir:
        response = await client.post(f"/cds-services/{service}", json=request)
        assert response.status_code == 200, response.text
        return response.json()["cards"], 0
    with respx.mock(assert_all_mocked=True, assert_all_called=False) as mock:
        route = mock.get(url__startswith=f"{FHIR}/Procedure?").respond(
            json=_searchset(data, "Procedure")
        )
        # encounter-discharge also searches the encounter's Claims (the optional `claims` key)
        mock.get(url__startswith=f"{FHIR}/Claim?").respond(json=_searchset(data, "Claim"))
        response = await client.post(f"/cds-services/{service}", json=_with_fhir_access(request))
    assert response.status_code == 200, response.text
    for call in route.calls:
        params = call.request.url.params
        assert params["patient"] == request["context"]["patientId"]
        assert re.fullmatch(r"\d{4}-\d{2}-\d{2}", params["date"])
        assert call.request.headers["Authorization"] == f"Bearer {TOKEN}"
    return response.json()["cards"], route.call_count


# ---------------------------------------------------------------- the SMART app

_PANEL = re.compile(
    r'<section class="panel visit-panel" data-date="([^"]*)" data-discipline="([^"]*)"\s+'
    r'data-minutes="(\d+)" data-pair="(\w+)"\s+data-units="([^"]*)">'
)
_RULE = re.compile(r'data-rule="([EWI]-[A-Z0-9-]+)"')


def from_smart_page(html: str) -> Answer:
    """Each visit panel's data attributes and finding rows; the rows outside any visit."""
    head, _, outside = html.partition('<section class="panel outside-findings">')
    parts = _PANEL.split(head)
    visits = []
    for i in range(1, len(parts), 6):
        date, discipline, minutes, pair, units, body = parts[i : i + 6]
        visits.append(
            (
                date,
                discipline,
                int(minutes),
                tuple(
                    sorted(
                        (c, int(n)) for c, _, n in (u.partition(":") for u in units.split(",") if u)
                    )
                ),
                pair,
                tuple(sorted(set(_RULE.findall(body)))),
            )
        )
    return tuple(sorted(visits)), tuple(sorted(set(_RULE.findall(outside))))


async def call_smart_app(data: Json, tmp_path: Path) -> tuple[str, FakeEhr]:
    """An EHR launch of the app for the hook's patient and encounter; the page it shows."""
    context = build_hook_request(data, "order-sign")["context"]  # type: ignore[arg-type]
    ehr = FakeEhr(
        base=SMART_EHR,
        resources=[copy.deepcopy(e["resource"]) for e in data["entry"]],
        app_context=json.dumps({"encounter": context["encounterId"]}),
        patient=context["patientId"],
    )
    ehr_app = make_fake_ehr_app(ehr)
    settings = Settings(
        require_auth=False,
        dev_mode=True,
        database_url=f"sqlite:///{tmp_path / 'smart.db'}",
        fhir_server_allowlist=[f"{SMART_EHR}/fhir"],
        log_level="WARNING",
    )
    cds_config(settings)
    app = FastAPI()
    install_web(app, settings, WebSettings(), http_transport=httpx.ASGITransport(app=ehr_app))
    async with (
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://cds.test") as c,
        httpx.AsyncClient(transport=httpx.ASGITransport(app=ehr_app), base_url=SMART_EHR) as e,
    ):
        start = await c.get("/smart/launch", params={"iss": f"{SMART_EHR}/fhir", "launch": "L"})
        assert start.status_code == 302, start.text
        authorize = await e.get(start.headers["location"])
        back = httpx.URL(authorize.headers["location"])
        callback = await c.get(f"{back.path}?{back.query.decode()}")
        assert callback.status_code == 303, callback.text
        page = await c.get(callback.headers["location"])
    assert page.status_code == 200, page.text
    return page.text, ehr


# ---------------------------------------------------------------- the table


@pytest.mark.parametrize("entry_point", ENTRY_POINTS)
@pytest.mark.parametrize("sample", SAMPLES)
async def test_every_entry_point_gives_the_same_answer(
    client: httpx.AsyncClient, sample: str, entry_point: str, tmp_path: Path
) -> None:
    data = bundle(sample)
    whole = check(data)
    if entry_point == "smart":
        html, ehr = await call_smart_app(data, tmp_path)
        assert from_smart_page(html) == whole
        assert NOT_POOLED_NOTE not in html
        assert "about another patient" not in html
        # it asked for the charges and read them, and searched the patient's day
        scope = ehr.authorize_requests[-1]["scope"].split()
        assert {"user/ServiceRequest.rs", "user/Claim.rs"} <= set(scope)
        assert any(r.startswith("GET ServiceRequest?encounter=") for r in ehr.fhir_requests)
        assert sum("&date=" in r for r in ehr.fhir_requests if r.startswith("GET Procedure?")) == 1
        return
    if entry_point == "sandbox":
        response = await client.post("/sandbox/api/timeline", json={"bundle": data})
        assert response.status_code == 200, response.text
        assert from_timeline(response.json()) == whole
        return

    hook, _, access = entry_point.partition("+")
    fhir = access == "fhir"
    has_drafts = any(_is_draft(e["resource"]) for e in data["entry"])
    cards, searches = await call_service(client, data, hook, fhir=fhir)
    default, _ = await call_service(client, data, hook, fhir=fhir, policy=None)
    if hook == "order-sign" and not has_drafts:
        # the encounter-discharge scenarios sign nothing: order-sign gives no guidance
        assert cards == []
        assert default == []
        return
    answer = from_cards(cards)
    # every error and warning is on a problem card, under `all` and under the default policy,
    # which shows nothing else: no card at all for a visit with nothing to act on
    raised = {r for visit in answer[0] for r in visit[5]} | set(answer[1])
    # a warning with nothing to act on (advice not to bill a code the charges do not bill)
    # gets its own info card under `all` and rides in a note under the default policy
    advice = {
        c["source"]["topic"]["code"]
        for c in cards
        if c["indicator"] == "info" and c["source"]["topic"]["code"][:2] in ("E-", "W-")
    }
    assert advice <= {"W-CODE-ZERO-UNITS", "W-MIN-UNDER-8"}
    to_act_on = {r for r in raised if r[0] in "EW" or r == "I-CHARGES-NOT-AVAILABLE"}
    problems = {r for r in shown_by_problem_cards(cards) if r[0] in "EW"}
    assert problems | advice == {r for r in to_act_on if r[0] in "EW"}
    assert {r for r in shown_by_problem_cards(default) if r[0] in "EW"} == problems
    assert bool(default) == bool(to_act_on - (advice - problems))
    assert all(c["source"]["topic"]["code"] != "units-summary" for c in default)
    given = data if hook == "order-sign" else _without(data, _is_draft)
    encounter = build_hook_request(data, hook)["context"]["encounterId"]  # type: ignore[arg-type]
    if fhir:
        # the day's other Procedures are searched and pooled: check on everything the EHR has
        assert searches == 1
        assert answer == check(given)
        assert not any(NOT_POOLED_NOTE in c.get("detail", "") for c in cards)
    else:
        # this encounter only, and every summary card says so in one line
        assert answer == check(_without(given, _elsewhere(encounter)))
        summaries = [c for c in cards if _SUMMARY.match(c["summary"])]
        assert all(NOT_POOLED_NOTE in c["detail"] for c in summaries)
        assert (answer != check(given)) == (sample in SEVERAL_ENCOUNTERS)

    if hook == "order-sign":
        if fhir:
            assert answer == whole
        return
    # encounter-discharge: no draft orders in the hook; the Claim / extension samples keep
    # their charge lines, the others have none and no rule claims what was billed.
    if has_drafts:
        ids = {rule for visit in answer[0] for rule in visit[5]} | set(answer[1])
        assert "E-PAIR-NO-MODIFIER" not in ids
        assert "E-UNITS-EXCEED" not in ids
        assert all("I-CHARGES-NOT-AVAILABLE" in visit[5] for visit in answer[0])
    else:
        assert answer == (whole if fhir else check(_without(data, _elsewhere(encounter))))


@pytest.fixture(scope="module")
def audited(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[dict[str, str]]]:
    """``therapy-cds audit`` over the samples folder: ``visits.csv`` rows by sample file."""
    out = tmp_path_factory.mktemp("audit") / "out"
    result = CliRunner().invoke(cli_app, ["audit", str(BUNDLES), "--out", str(out), "-q"])
    assert result.exit_code == 0, result.output
    rows: dict[str, list[dict[str, str]]] = {}
    with (out / "visits.csv").open(encoding="utf-8", newline="") as handle:
        for row in csv.DictReader(handle):
            rows.setdefault(Path(row["source"]).name, []).append(row)
    return rows


@pytest.mark.parametrize("sample", SAMPLES)
def test_billed_units_agree_between_check_and_audit(
    sample: str, audited: dict[str, list[dict[str, str]]]
) -> None:
    result = check_record(map_bundle(bundle(sample)), payer_rule="cms", pair_rule="cms")
    visits = analysis_to_json(result.analysis)["visits"]

    def per_code(cell: str) -> dict[str, int]:
        return {c: int(n) for c, _, n in (p.partition("=") for p in cell.split(";") if p)}

    from_check = sorted(
        (
            v["date"],
            v["discipline"],
            v["billed_units"],
            sum(max(0, n - v["units"].get(c, 0)) for c, n in (v["billed_units"] or {}).items()),
            sum(max(0, v["units"].get(c, 0) - n) for c, n in (v["billed_units"] or {}).items()),
        )
        for v in visits
    )
    from_audit = sorted(
        (
            r["date"],
            r["discipline"],
            per_code(r["units_billed"]) if r["units_over_billed"] else None,
            int(r["units_over_billed"] or 0),
            int(r["units_under_billed"] or 0),
        )
        for r in audited[sample]
    )
    assert from_audit == from_check


def test_the_table_covers_every_sample() -> None:
    on_disk = sorted(p.name for p in BUNDLES.glob("*.json") if p.name != "scenarios.json")
    assert sorted(SAMPLES) == on_disk
    several = {
        name
        for name in SAMPLES
        if len(
            {
                (e["resource"].get("encounter") or {}).get("reference")
                for e in bundle(name)["entry"]
                if e["resource"]["resourceType"] == "Procedure"
            }
        )
        > 1
    }
    assert several == SEVERAL_ENCOUNTERS
