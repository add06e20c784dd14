"""Issue 14, the service half: the patient in context is the patient analysed; the day's visits
are pooled when the EHR gives FHIR access (respx stands in for its FHIR server); a visit with no
charge line says so instead of claiming what was billed."""

from __future__ import annotations

import copy
import json
import logging
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import respx

from fhir_mappings import group_visits, map_bundle, map_cds_hooks
from plugin.app import create_app
from plugin.hook_request import build_hook_request
from plugin.pipeline import check_record
from plugin.rules import analysis_to_json
from plugin.services import DISCHARGE_SERVICE, EXTENSION_KEY, ORDER_SIGN_SERVICE
from plugin.settings import Settings

pytestmark = pytest.mark.anyio

ROOT = Path(__file__).resolve().parents[2]
SAMPLES = ROOT / "sample_bundles"
FHIR = "https://ehr.example.org/fhir"
TOKEN = "fhir-token-i14-SECRET"
VIGGO = "pat-viggo-59xu"  # the patient of modifier-59-with-xu.json
OTHER = "8724317"
Json = dict[str, Any]


def _bundle(name: str) -> Json:
    data: Json = json.loads((SAMPLES / name).read_text(encoding="utf-8"))
    return data


def _service(hook: str) -> str:
    return ORDER_SIGN_SERVICE if hook == "order-sign" else DISCHARGE_SERVICE


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def client(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    settings = Settings(
        require_auth=False,
        dev_mode=True,
        database_url=f"sqlite:///{tmp_path / 'i14.db'}",
        fhir_server_allowlist=[FHIR],
        log_level="INFO",
    )
    app = create_app(settings)
    # No lifespan: nothing here needs its background work (the periodic cards-shown flush).
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://cds.test") as c:
        yield c


def _topics(cards: list[Json]) -> list[str]:
    return [c["source"]["topic"]["code"] for c in cards]


# ---------------------------------------------------------------- (a) the patient in context


@pytest.mark.parametrize("hook", ["order-sign", "encounter-discharge"])
async def test_the_reproduction_another_patients_prefetch_is_refused(
    client: httpx.AsyncClient, hook: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Issue 14: context.patientId 8724317, prefetch about Patient/pat-viggo-59xu -> was 200
    with cards about pat-viggo; now 400, naming neither patient."""
    request = build_hook_request(_bundle("modifier-59-with-xu.json"), hook)
    request["context"]["patientId"] = OTHER
    with caplog.at_level(logging.INFO):
        response = await client.post(f"/cds-services/{_service(hook)}", json=request)
    assert response.status_code == 400, response.text
    body = response.json()
    assert body["resourceType"] == "OperationOutcome"
    assert "another patient than context.patientId" in response.text
    assert VIGGO not in response.text
    assert OTHER not in response.text
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert VIGGO not in logged
    assert "viggo" not in logged


def _foreign_procedure(reference: object, *, r5: bool = False, pid: str = "p-foreign") -> Json:
    procedure: Json = {
        "resourceType": "Procedure",
        "id": pid,
        "status": "completed",
        "code": {"coding": [{"system": "http://www.ama-assn.org/go/cpt", "code": "97110"}]},
        "subject": reference,
    }
    period = {"start": "2025-03-04T09:40:00-05:00", "end": "2025-03-04T10:40:00-05:00"}
    procedure["occurrencePeriod" if r5 else "performedPeriod"] = period
    return procedure


@pytest.mark.parametrize(
    "subject",
    [
        {"reference": "Patient/pat-somebody-else"},
        {"reference": "https://ehr/fhir/Patient/pat-somebody-else"},
        {"reference": "https://ehr/fhir/Patient/pat-somebody-else/_history/3"},
        # an unresolvable subject is not assumed to be the patient in context
        {"identifier": {"system": "urn:mrn", "value": "MRN-1"}},
        {"display": "Somebody Else"},
        {"reference": "urn:uuid:8f1c0f9e-2a43-4c38-9a54-6b4f2f0d3b11"},
        {"reference": "Patient?identifier=urn:mrn|MRN-1"},
        {"reference": "Practitioner/prac-1"},
    ],
    ids=["relative", "absolute", "history", "identifier", "display", "urn", "conditional", "type"],
)
@pytest.mark.parametrize("hook", ["order-sign", "encounter-discharge"])
async def test_other_patients_resources_are_left_out_and_counted(
    client: httpx.AsyncClient, hook: str, subject: Json
) -> None:
    data = _bundle("clean-pair-59-on-97530.json")
    request = build_hook_request(data, hook)  # type: ignore[arg-type]
    before = await client.post(f"/cds-services/{_service(hook)}", json=request)
    planted = copy.deepcopy(request)
    entries = planted["prefetch"]["procedures"]["entry"]
    entries.append({"resource": _foreign_procedure(subject), "search": {"mode": "match"}})
    # a CarePlan, an Encounter and a Claim about the other patient too
    field = {"CarePlan": "subject", "Encounter": "subject", "Claim": "patient"}
    for rtype, member in field.items():
        foreign: Json = {"resourceType": rtype, "id": f"x-{rtype.lower()}", member: subject}
        entries.append({"resource": foreign, "search": {"mode": "include"}})
    after = await client.post(f"/cds-services/{_service(hook)}", json=planted)
    assert after.status_code == 200, after.text
    cards = after.json()["cards"]
    warning = cards[0]
    assert warning["indicator"] == "warning"
    assert warning["summary"] == "4 resource(s) about another patient were left out"
    assert warning["source"]["topic"]["code"] == "other-patient-data"
    # the rest of the answer is the patient's own, unchanged, and names nothing planted
    assert [c["summary"] for c in cards[1:]] == [c["summary"] for c in before.json()["cards"]]
    for marker in ("pat-somebody-else", "p-foreign", "x-careplan", "MRN-1", "Somebody"):
        assert marker not in after.text


def test_the_mapping_filters_r4_and_r5_shapes_and_draft_orders() -> None:
    me = "pat-1"
    draft_other: Json = {
        "resourceType": "ServiceRequest",
        "id": "sr-other",
        "status": "draft",
        "intent": "order",
        "subject": {"reference": "Patient/pat-2"},
        "code": {
            "concept": {"coding": [{"system": "http://www.ama-assn.org/go/cpt", "code": "97110"}]}
        },
    }
    mine = _foreign_procedure({"reference": f"Patient/{me}"}, r5=True, pid="p-mine")
    theirs = _foreign_procedure({"reference": "https://ehr/fhir/Patient/pat-2"}, r5=True)
    no_subject = _foreign_procedure(None, r5=True, pid="p-none")
    del no_subject["subject"]
    prefetch = {
        "patient": {"resourceType": "Patient", "id": "pat-2"},
        "procedures": {
            "resourceType": "Bundle",
            "type": "searchset",
            "entry": [{"resource": r} for r in (mine, theirs, no_subject)],
        },
    }
    draft_orders = {"resourceType": "Bundle", "entry": [{"resource": draft_other}]}
    record = map_cds_hooks(draft_orders, prefetch, patient_id=me)
    assert record.other_patient_resources == 3  # Patient/pat-2, its Procedure, its draft
    assert sorted(s.ref for s in record.services) == ["Procedure/p-mine", "Procedure/p-none"]
    assert record.charges == ()
    assert record.patients == ()
    assert not any("pat-2" in repr(i) or "p-foreign" in repr(i) for i in record.issues)
    # without a patient in context (check): nothing is left out
    assert map_cds_hooks(draft_orders, prefetch).other_patient_resources == 0


# ---------------------------------------------------------------- (b) same-day pooling

TWO = "two-encounters-same-day.json"


def _afternoon_only(request: Json) -> Json:
    """prefetch.procedures as the EHR fills ``Procedure?patient=..&encounter=..``; the call
    asks for each visit's summary card (``cardPolicy: summary``), which says how the day was
    covered."""
    request["extension"] = {EXTENSION_KEY: {"cardPolicy": "summary"}}
    encounter = f"Encounter/{request['context']['encounterId']}"
    procedures = request["prefetch"]["procedures"]
    procedures["entry"] = [
        e
        for e in procedures["entry"]
        if e["resource"]["resourceType"] != "Procedure"
        or e["resource"]["encounter"]["reference"] == encounter
    ]
    return request


def _with_access(request: Json, server: str = FHIR) -> Json:
    request["fhirServer"] = server
    request["fhirAuthorization"] = {
        "access_token": TOKEN,
        "token_type": "Bearer",
        "expires_in": 300,
        "scope": "user/Procedure.read",
        "subject": "therapy-cds",
    }
    return request


def _day_search(data: Json) -> Json:
    procedures = [
        e["resource"] for e in data["entry"] if e["resource"]["resourceType"] == "Procedure"
    ]
    return {
        "resourceType": "Bundle",
        "type": "searchset",
        "total": len(procedures),
        "entry": [{"resource": p, "search": {"mode": "match"}} for p in procedures],
    }


def _shown(cards: list[Json]) -> set[str]:
    """The finding ids the cards show: their topics and the findings grouped under them."""
    shown = set(_topics(cards))
    for card in cards:
        same = re.search(r"^Same cause: (.*)$", card.get("detail", ""), re.MULTILINE)
        shown.update(re.findall(r"\*\*([EWI]-[A-Z0-9-]+)\*\*", same[1]) if same else ())
    return shown


def _summary(cards: list[Json]) -> Json:
    (card,) = [c for c in cards if c["indicator"] == "info" and "timed min" in c["summary"]]
    return card


@pytest.mark.parametrize("hook", ["order-sign", "encounter-discharge"])
async def test_without_fhir_access_the_afternoon_is_alone_and_says_so(
    client: httpx.AsyncClient, hook: str
) -> None:
    """The reproduction: the afternoon visit alone is 19 min, 97110 x 0, W-CODE-ZERO-UNITS."""
    request = _afternoon_only(build_hook_request(_bundle(TWO), hook))  # type: ignore[arg-type]
    response = await client.post(f"/cds-services/{_service(hook)}", json=request)
    assert response.status_code == 200
    cards = response.json()["cards"]
    summary = _summary(cards)
    assert "(19 timed min, CMS)" in summary["summary"]
    assert "W-CODE-ZERO-UNITS" in _shown(cards)
    assert summary["detail"].count("Count covers this encounter only") == 1
    assert "(no FHIR access was given)" in summary["detail"]
    # without the summary card the note rides once, on the card carrying the units table
    del request["extension"]
    response = await client.post(f"/cds-services/{_service(hook)}", json=request)
    cards = response.json()["cards"]
    assert "units-summary" not in _topics(cards)
    noted = [c for c in cards if "Count covers this encounter only" in c["detail"]]
    assert len(noted) == 1
    assert "| code |" in noted[0]["detail"]


@pytest.mark.parametrize("hook", ["order-sign", "encounter-discharge"])
async def test_with_fhir_access_the_day_is_pooled_as_check_pools_it(
    client: httpx.AsyncClient, hook: str
) -> None:
    data = _bundle(TWO)
    request = _with_access(_afternoon_only(build_hook_request(data, hook)))  # type: ignore[arg-type]
    with respx.mock(assert_all_mocked=True) as mock:
        route = mock.get(url__startswith=f"{FHIR}/Procedure?").respond(json=_day_search(data))
        response = await client.post(f"/cds-services/{_service(hook)}", json=request)
    assert response.status_code == 200, response.text
    assert route.call_count == 1
    sent = route.calls.last.request
    assert dict(sent.url.params) == {"patient": "pat-quinn-twovisits", "date": "2025-03-13"}
    assert sent.headers["Authorization"] == f"Bearer {TOKEN}"
    cards = response.json()["cards"]
    summary = _summary(cards)
    assert summary["summary"] == "PT 2025-03-13: 97110×1, 97530×2 (39 timed min, CMS)"
    assert "W-CODE-ZERO-UNITS" not in _shown(cards)
    assert "Count covers this encounter only" not in summary["detail"]
    # the same as check over the whole bundle
    document = analysis_to_json(
        check_record(map_bundle(data), payer_rule="cms", pair_rule="cms").analysis
    )
    (visit,) = document["visits"]
    assert (visit["total_timed_minutes"], visit["units"]) == (39, {"97110": 1, "97530": 2})
    assert f"pair: **{visit['pair']}**" in summary["detail"]


@pytest.mark.parametrize(
    "failure",
    [
        httpx.Response(500),
        httpx.Response(200, json={"resourceType": "OperationOutcome", "issue": []}),
        httpx.Response(200, content=b"not json"),
        httpx.ConnectError("down"),
    ],
    ids=["500", "outcome", "not-json", "down"],
)
async def test_a_failed_day_search_degrades_to_this_encounter_with_the_note(
    client: httpx.AsyncClient, failure: object
) -> None:
    data = _bundle(TWO)
    request = _with_access(_afternoon_only(build_hook_request(data)))
    with respx.mock(assert_all_mocked=True) as mock:
        route = mock.get(url__startswith=f"{FHIR}/Procedure?")
        if isinstance(failure, Exception):
            route.mock(side_effect=failure)
        else:
            route.mock(return_value=failure)
        response = await client.post(f"/cds-services/{ORDER_SIGN_SERVICE}", json=request)
    assert response.status_code == 200, response.text
    summary = _summary(response.json()["cards"])
    assert "(19 timed min, CMS)" in summary["summary"]
    assert "Count covers this encounter only" in summary["detail"]
    assert "(the FHIR search for them failed)" in summary["detail"]


async def test_no_request_goes_to_a_server_off_the_allowlist(client: httpx.AsyncClient) -> None:
    request = _with_access(
        _afternoon_only(build_hook_request(_bundle(TWO))), server="https://evil.example/fhir"
    )
    with respx.mock(assert_all_mocked=True, assert_all_called=False) as mock:
        route = mock.get(url__startswith="https://evil.example")
        response = await client.post(f"/cds-services/{ORDER_SIGN_SERVICE}", json=request)
    assert response.status_code == 200
    assert route.call_count == 0
    assert "(no FHIR access was given)" in _summary(response.json()["cards"])["detail"]


# ---------------------------------------------------------------- (c) charges not available


@pytest.mark.parametrize(
    ("sample", "before"),
    [
        ("clean-pair-59-on-97530.json", "SUPPORTED"),
        ("cms-vs-ama-24-plus-23.json", "SUPPORTED"),
        ("plan-period-expired.json", "SUPPORTED"),
        ("pair-no-modifier.json", "NOT_SUPPORTED"),
    ],
)
def test_without_charge_lines_no_rule_claims_what_was_billed(sample: str, before: str) -> None:
    """What the issue's SMART app read (Encounter, Procedures, CarePlans; no charges) gave
    NOT_SUPPORTED + E-PAIR-NO-MODIFIER for clean-pair-59-on-97530; now: charges not available."""
    data = _bundle(sample)
    full = analysis_to_json(
        check_record(map_bundle(data), payer_rule="cms", pair_rule="cms").analysis
    )
    assert full["visits"][0]["pair"] == before
    data["entry"] = [e for e in data["entry"] if e["resource"]["resourceType"] != "ServiceRequest"]
    record = map_bundle(data)
    assert [v.charge_lines_read for v in group_visits(record).visits] == [False]
    document = analysis_to_json(check_record(record, payer_rule="cms", pair_rule="cms").analysis)
    (visit,) = document["visits"]
    rules = {f["rule"] for f in visit["findings"]}
    assert visit["pair"] == "INDETERMINATE"
    assert "I-CHARGES-NOT-AVAILABLE" in rules
    assert not rules & {"E-PAIR-NO-MODIFIER", "E-UNITS-EXCEED", "W-MODIFIER-ON-COL1"}
    assert visit["units"] in full["visits"][0]["allocations"]  # what the documentation supports


@pytest.mark.parametrize(
    "sample", ["discharge-claim-lines.json", "discharge-procedure-extensions.json"]
)
def test_claim_lines_and_billing_extensions_are_charge_lines(sample: str) -> None:
    visits = group_visits(map_bundle(_bundle(sample))).visits
    assert visits
    assert all(v.charge_lines_read for v in visits)


def test_check_of_a_request_file_leaves_another_patient_out_and_says_how_many(
    tmp_path: Path,
) -> None:
    from typer.testing import CliRunner

    from plugin.cli import app

    request = build_hook_request(_bundle("modifier-59-with-xu.json"))
    stranger = _foreign_procedure({"reference": "Patient/pat-somebody-else"})
    request["prefetch"]["procedures"]["entry"].append({"resource": stranger})
    path = tmp_path / "request.json"
    path.write_text(json.dumps(request), encoding="utf-8")
    result = CliRunner().invoke(app, ["check", str(path), "--format", "json"])
    assert result.exit_code == 0, result.output
    assert "1 resource(s) about another patient were left out" in result.stderr
    assert "somebody" not in result.output
    document = json.loads(result.stdout)
    assert [v["patient"] for v in document["visits"]] == [f"Patient/{VIGGO}"]
