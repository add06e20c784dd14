"""The therapy services end to end, in process: request -> prefetch -> mapping -> rules -> cards.

Covers the foundation slice (clean visit: no warning; overlapping visit: a critical pair card),
the same findings through ``check`` and through the service for every sample scenario, the
sandbox's non-therapy order-sign, 412 without data, feedback storage, suggestions, and per-call
rule overrides.
"""

from __future__ import annotations

import json
import logging
import re
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from fhir_mappings import load_path, map_document
from plugin.app import create_app
from plugin.hook_request import build_hook_request
from plugin.pipeline import check_record
from plugin.rules.catalogue import CATALOGUE
from plugin.services import DISCHARGE_SERVICE, EXTENSION_KEY, ORDER_SIGN_SERVICE
from plugin.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
SAMPLES = ROOT / "sample_bundles"
SCENARIOS: list[dict[str, Any]] = json.loads((SAMPLES / "scenarios.json").read_text())["scenarios"]
FINDING_SYSTEM = "https://therapy-cds.github.io/fhir/CodeSystem/finding"
PAYLOAD_MARKER = "ZZ-PLANTED-MARKER-7731"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(
        dev_mode=True, require_auth=False, database_url=f"sqlite:///{tmp_path / 'cds.db'}"
    )


@pytest.fixture
def app_and_client(settings: Settings) -> tuple[Any, httpx.AsyncClient]:
    app = create_app(settings)
    client = httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://cds.test")
    return app, client


@pytest.fixture
async def client(app_and_client: tuple[Any, httpx.AsyncClient]) -> AsyncIterator[httpx.AsyncClient]:
    async with app_and_client[1] as client:
        yield client


def _bundle(name: str) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((SAMPLES / name).read_text())
    return loaded


def _service_for(hook: str) -> str:
    return ORDER_SIGN_SERVICE if hook == "order-sign" else DISCHARGE_SERVICE


async def _invoke(
    client: httpx.AsyncClient, name: str, hook: str = "order-sign", **extension: str
) -> list[dict[str, Any]]:
    body = build_hook_request(_bundle(name), hook=hook)  # type: ignore[arg-type]
    if extension:
        body["extension"] = {EXTENSION_KEY: extension}
    response = await client.post(f"/cds-services/{_service_for(hook)}", json=body)
    assert response.status_code == 200, response.text
    cards: list[dict[str, Any]] = response.json()["cards"]
    return cards


def _topics(cards: list[dict[str, Any]], *indicators: str) -> list[str]:
    return sorted(c["source"]["topic"]["code"] for c in cards if c["indicator"] in indicators)


_SAME_CAUSE = re.compile(r"^Same cause: (.*)$", re.MULTILINE)


def _card_rules(card: dict[str, Any]) -> list[str]:
    """The finding ids a card shows: its topic (the primary) and those grouped with it."""
    grouped = _SAME_CAUSE.search(card.get("detail", ""))
    listed = re.findall(r"\*\*([EWI]-[A-Z0-9-]+)\*\*", grouped[1]) if grouped else []
    return [card["source"]["topic"]["code"], *listed]


# ------------------------------------------------------------------------------ discovery


@pytest.mark.anyio
async def test_discovery_lists_both_services_with_contract_prefetch_keys(
    client: httpx.AsyncClient,
) -> None:
    response = await client.get("/cds-services")
    assert response.status_code == 200
    services = {s["id"]: s for s in response.json()["services"]}
    assert services[ORDER_SIGN_SERVICE]["hook"] == "order-sign"
    assert services[DISCHARGE_SERVICE]["hook"] == "encounter-discharge"
    assert services[DISCHARGE_SERVICE]["prefetch"]["claims"] == (
        "Claim?patient={{context.patientId}}&encounter={{context.encounterId}}"
    )
    assert "claims" not in services[ORDER_SIGN_SERVICE]["prefetch"]
    for service in services.values():
        # the contract's four keep their names; further keys may be added (issue 15: the visit
        # history for progress reports, R-E6; the optional `coverage`)
        assert set(service["prefetch"]) >= {
            "patient",
            "encounter",
            "procedures",
            "carePlans",
            "therapyHistory",
            "progressReports",
            "coverage",
        }
        assert service["title"]
        assert service["description"]


@pytest.mark.anyio
async def test_one_log_line_per_call_carries_the_analysis(
    client: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    await _invoke(client, "overlapping-time-blocks.json")
    service_loggers = ("cds_hooks", "plugin", "fhir_mappings", "therapy_cds")
    lines = [
        r.getMessage()
        for r in caplog.records
        if r.levelno == logging.INFO and r.name.split(".")[0] in service_loggers
    ]
    assert len(lines) == 1, lines
    (line,) = lines
    assert "event=invoke status=200" in line
    assert "visits=1" in line
    assert "E-PAIR-SAME-TIMEBLOCK" in line
    assert "payer_rule=cms" in line


# ------------------------------------------------------------------------- the first slice


@pytest.mark.anyio
async def test_clean_pair_with_59_gives_no_warning(client: httpx.AsyncClient) -> None:
    assert await _invoke(client, "clean-pair-59-on-97530.json") == []  # nothing to act on
    cards = await _invoke(client, "clean-pair-59-on-97530.json", cardPolicy="summary")
    (summary,) = cards
    assert summary["indicator"] == "info"
    assert "97140×1" in summary["summary"]
    assert "97530×2" in summary["summary"]
    assert "SUPPORTED" in summary["detail"]


@pytest.mark.anyio
async def test_overlapping_blocks_give_a_critical_pair_card(client: httpx.AsyncClient) -> None:
    cards = await _invoke(client, "overlapping-time-blocks.json")
    critical = [c for c in cards if c["indicator"] == "critical"]
    assert [c["source"]["topic"] for c in critical] == [
        {
            "system": FINDING_SYSTEM,
            "code": "E-PAIR-SAME-TIMEBLOCK",
            "display": critical[0]["source"]["topic"]["display"],
        }
    ]
    # one cause, one card: the overlap warning is listed in it, not a card of its own
    (card,) = cards
    assert _card_rules(card) == ["E-PAIR-SAME-TIMEBLOCK", "W-OVERLAP"]
    # the units table once per visit: on this card, or only on the summary card when asked for
    assert card["detail"].count("| code |") == 1
    assert "| 97140 |" in card["detail"]
    with_summary = await _invoke(client, "overlapping-time-blocks.json", cardPolicy="summary")
    assert [c["indicator"] for c in with_summary] == ["critical", "info"]
    assert sum(c["detail"].count("| code |") for c in with_summary) == 1
    assert "| code |" in with_summary[-1]["detail"]


# ------------------------------------------------------- same findings: check vs service


#: Advice not to bill a code: nothing to act on when the charges do not bill it.
_DO_NOT_BILL = {"W-CODE-ZERO-UNITS", "W-MIN-UNDER-8"}


def _expected_rules(name: str, payer_rule: str, pair_rule: str) -> tuple[Counter[str], set[str]]:
    """The errors and warnings to act on, and the advice with nothing to act on (an ``info``
    card of its own under ``all``, a note otherwise)."""
    record = map_document(load_path(SAMPLES / name))
    analysis = check_record(record, payer_rule=payer_rule, pair_rule=pair_rule).analysis  # type: ignore[arg-type]
    findings = [f for v in analysis.visits for f in v.findings] + list(analysis.findings)
    idle = [f for f in findings if f.rule.value in _DO_NOT_BILL and f.facts.units_billed == 0]
    return (
        Counter(
            f.rule.value
            for f in findings
            if f.severity.value != "info" and all(f is not i for i in idle)
        ),
        {f.rule.value for f in idle},
    )


@pytest.mark.anyio
@pytest.mark.parametrize("scenario", SCENARIOS, ids=[s["file"] for s in SCENARIOS])
async def test_service_and_check_agree_on_every_sample(
    client: httpx.AsyncClient, scenario: dict[str, Any]
) -> None:
    payer, pair = scenario["payer_rule"], scenario["pair_rule"]
    expected, idle = _expected_rules(scenario["file"], payer, pair)
    visits = scenario["expected"][payer]["visits"]
    by_policy = {
        policy: await _invoke(
            client,
            scenario["file"],
            scenario["hook"],
            payerRule=payer,
            pairRule=pair,
            cardPolicy=policy,
        )
        for policy in ("problems", "summary", "all")
    }
    for policy, cards in by_policy.items():
        # every error and warning is on exactly one card, as its topic or grouped under it
        problems = [c for c in cards if c["indicator"] != "info"]
        shown = Counter(r for c in problems for r in _card_rules(c) if r[0] in "EW")
        assert shown == expected, policy
        summaries = [c for c in cards if c["source"]["topic"]["code"] == "units-summary"]
        assert len(summaries) == (0 if policy == "problems" else len(visits)), policy
        ranks = [{"critical": 0, "warning": 1, "info": 2}[c["indicator"]] for c in cards]
        assert ranks == sorted(ranks), policy
    # the default shows what to act on; `summary` adds a card per visit, `all` one per info
    problems, summary, everything = by_policy.values()
    outside = 1 if scenario["expected"][payer]["findings"] else 0  # one card lists them
    assert len(summary) == len(problems) + len(visits) + outside
    infos = {r for v in visits for r in v["findings"] if r.startswith("I-")}
    assert {r for c in everything for r in _card_rules(c)} >= infos
    assert {c["source"]["topic"]["code"] for c in everything if c["indicator"] == "info"} >= idle
    for card in [c for cards in by_policy.values() for c in cards]:  # hygiene, every card
        assert card["uuid"]
        assert 0 < len(card["summary"]) < 140
        assert card["source"]["topic"]["system"] == FINDING_SYSTEM
        code = card["source"]["topic"]["code"]
        assert code in {r.value for r in CATALOGUE} or code == "units-summary"
        if card.get("suggestions"):
            assert card["selectionBehavior"] in ("at-most-one", "any")
        assert "Patient/" not in card["summary"]
        for reason in card.get("overrideReasons", []):
            assert reason["display"]


# --------------------------------------------------------------------- suggestions, rules


@pytest.mark.anyio
async def test_missing_modifier_card_suggests_adding_59_to_the_97530_draft(
    client: httpx.AsyncClient,
) -> None:
    from fhir.resources.R4B.servicerequest import ServiceRequest

    cards = await _invoke(client, "pair-no-modifier.json")
    (card,) = [c for c in cards if c["source"]["topic"]["code"] == "E-PAIR-NO-MODIFIER"]
    (suggestion,) = card["suggestions"]
    (action,) = suggestion["actions"]
    assert action["type"] == "update"
    resource = action["resource"]
    ServiceRequest.model_validate(resource)  # valid FHIR, full resource
    codes = [c["code"] for d in resource["orderDetail"] for c in d.get("coding", [])]
    assert "59" in codes
    assert resource["code"]["coding"][0]["code"] == "97530"


@pytest.mark.anyio
async def test_a_modifier_coding_with_a_non_string_system_is_passed_over(
    client: httpx.AsyncClient,
) -> None:
    """A coding whose system is a JSON array is no modifier (the mapper passes it over); the
    suggestion adds 59 beside it instead of failing the call."""
    bundle = _bundle("pair-no-modifier.json")
    odd = {"system": ["not", "a", "uri"], "code": "59"}
    for entry in bundle["entry"]:
        resource = entry["resource"]
        if resource["resourceType"] == "ServiceRequest" and "97530" in json.dumps(resource["code"]):
            resource["orderDetail"] = [{"coding": [odd]}, *resource.get("orderDetail", [])]
    body = build_hook_request(bundle, hook="order-sign")
    response = await client.post(f"/cds-services/{ORDER_SIGN_SERVICE}", json=body)
    assert response.status_code == 200, response.text
    cards = response.json()["cards"]
    (card,) = [c for c in cards if c["source"]["topic"]["code"] == "E-PAIR-NO-MODIFIER"]
    (action,) = card["suggestions"][0]["actions"]
    details = action["resource"]["orderDetail"]
    assert {"coding": [odd]} in details
    added = [c for d in details for c in d["coding"] if isinstance(c.get("system"), str)]
    assert [c["code"] for c in added if c["code"] == "59"] == ["59"]


@pytest.mark.anyio
async def test_payer_rule_override_per_call(client: httpx.AsyncClient) -> None:
    cms = await _invoke(client, "cms-vs-ama-24-plus-23.json", payerRule="cms", cardPolicy="summary")
    ama = await _invoke(client, "cms-vs-ama-24-plus-23.json", payerRule="ama", cardPolicy="summary")
    cms_summary = next(c for c in cms if c["indicator"] == "info")["summary"]
    ama_summary = next(c for c in ama if c["indicator"] == "info")["summary"]
    assert "CMS" in cms_summary
    assert "AMA" in ama_summary
    assert cms_summary != ama_summary


@pytest.mark.anyio
async def test_a_bad_card_policy_is_a_400_naming_it(client: httpx.AsyncClient) -> None:
    body = build_hook_request(_bundle("clean-pair-59-on-97530.json"), hook="order-sign")
    body["extension"] = {EXTENSION_KEY: {"cardPolicy": PAYLOAD_MARKER}}
    response = await client.post(f"/cds-services/{ORDER_SIGN_SERVICE}", json=body)
    assert response.status_code == 400
    assert "cardPolicy" in response.text
    assert PAYLOAD_MARKER not in response.text


@pytest.mark.anyio
async def test_the_setting_chooses_the_default_policy(tmp_path: Path) -> None:
    settings = Settings(
        require_auth=False,
        dev_mode=True,
        card_policy="summary",
        database_url=f"sqlite:///{tmp_path / 'policy.db'}",
        log_level="WARNING",
    )
    transport = httpx.ASGITransport(app=create_app(settings))
    async with httpx.AsyncClient(transport=transport, base_url="http://cds.test") as c:
        cards = await _invoke(c, "clean-pair-59-on-97530.json")
        assert _topics(cards, "info") == ["units-summary"]
        assert await _invoke(c, "clean-pair-59-on-97530.json", cardPolicy="problems") == []


@pytest.mark.anyio
async def test_bad_override_is_a_400_without_echo(client: httpx.AsyncClient) -> None:
    body = build_hook_request(_bundle("clean-pair-59-on-97530.json"), hook="order-sign")
    body["extension"] = {EXTENSION_KEY: {"payerRule": PAYLOAD_MARKER}}
    response = await client.post(f"/cds-services/{ORDER_SIGN_SERVICE}", json=body)
    assert response.status_code == 400
    assert PAYLOAD_MARKER not in response.text


# ------------------------------------------------------------- sandbox shapes, 412, feedback


@pytest.mark.anyio
async def test_sandbox_rx_sign_with_a_medication_gets_no_cards(client: httpx.AsyncClient) -> None:
    body = {
        "hookInstance": "d1577c69-dfbe-44ad-ba6d-3e05e953b2ea",
        "hook": "order-sign",
        "fhirServer": "https://launch.smarthealthit.org/v/r4/fhir",
        "context": {
            "patientId": "smart-1288992",
            "userId": "Practitioner/COREPRACTITIONER1",
            "draftOrders": {
                "resourceType": "Bundle",
                "entry": [
                    {
                        "resource": {
                            "resourceType": "MedicationRequest",
                            "id": "request-123",
                            "status": "draft",
                            "category": {"coding": [{"code": "community"}]},
                        }
                    }
                ],
            },
        },
    }
    response = await client.post(f"/cds-services/{ORDER_SIGN_SERVICE}", json=body)
    assert response.status_code == 200
    assert response.json() == {"cards": []}


@pytest.mark.anyio
async def test_therapy_charges_without_documentation_or_fhir_access_are_a_412(
    client: httpx.AsyncClient,
) -> None:
    body = build_hook_request(_bundle("clean-pair-59-on-97530.json"), hook="order-sign")
    del body["prefetch"]
    body["context"].pop("encounterId", None)
    response = await client.post(f"/cds-services/{ORDER_SIGN_SERVICE}", json=body)
    assert response.status_code == 412
    outcome = response.json()
    assert outcome["resourceType"] == "OperationOutcome"
    assert "procedures" in json.dumps(outcome)


@pytest.mark.anyio
async def test_feedback_is_stored_once_in_the_database(
    app_and_client: tuple[Any, httpx.AsyncClient],
) -> None:
    app, client = app_and_client
    async with client:
        cards = await _invoke(client, "pair-no-modifier.json")
        card = next(c for c in cards if c.get("suggestions"))
        feedback = {
            "feedback": [
                {
                    "card": card["uuid"],
                    "outcome": "accepted",
                    "acceptedSuggestions": [{"id": card["suggestions"][0]["uuid"]}],
                    "outcomeTimestamp": "2025-03-04T15:00:00.123Z",
                }
            ]
        }
        url = f"/cds-services/{ORDER_SIGN_SERVICE}/feedback"
        for _ in range(2):
            response = await client.post(url, json=feedback)
            assert response.status_code == 200
    assert app.state.feedback_store.count(ORDER_SIGN_SERVICE) == 1


@pytest.mark.anyio
async def test_card_uuids_are_stable_for_a_retried_hook_instance(
    client: httpx.AsyncClient,
) -> None:
    body = build_hook_request(_bundle("pair-no-modifier.json"), hook="order-sign")
    url = f"/cds-services/{ORDER_SIGN_SERVICE}"
    first = (await client.post(url, json=body)).json()["cards"]
    second = (await client.post(url, json=body)).json()["cards"]
    assert [c["uuid"] for c in first] == [c["uuid"] for c in second]
    assert len({c["uuid"] for c in first}) == len(first)


@pytest.mark.anyio
async def test_a_charge_with_no_billable_units_is_suggested_for_removal(
    client: httpx.AsyncClient,
) -> None:
    cards = await _invoke(client, "missing-end-time.json")
    (card,) = [c for c in cards if c["source"]["topic"]["code"] == "E-UNITS-EXCEED"]
    (action,) = card["suggestions"][0]["actions"]
    assert action["type"] == "delete"
    assert action["resourceId"].startswith("ServiceRequest/")
    assert "resource" not in action


@pytest.mark.anyio
async def test_two_cards_never_suggest_conflicting_edits_of_one_charge(
    client: httpx.AsyncClient,
) -> None:
    cards = await _invoke(client, "group-delivery-97530.json")
    edited: Counter[str] = Counter()
    for card in cards:
        for suggestion in card.get("suggestions", []):
            for action in suggestion["actions"]:
                edited[
                    action.get("resourceId") or "ServiceRequest/" + action["resource"]["id"]
                ] += 1
    assert edited
    assert max(edited.values()) == 1
    # E-UNITS-EXCEED and E-GROUP-NOT-ONE-ON-ONE change the same charge: one card, and its
    # suggestion replaces the code rather than re-sizing the line; group delivery is the
    # cause (it excluded the minutes), so it is the card's primary
    (group,) = cards
    assert _card_rules(group) == ["E-GROUP-NOT-ONE-ON-ONE", "E-UNITS-EXCEED"]
    resource = group["suggestions"][0]["actions"][0]["resource"]
    assert resource["code"]["coding"][0]["code"] == "97150"
    assert resource["quantityQuantity"]["value"] == 1


@pytest.mark.anyio
async def test_without_encounter_id_the_visit_is_searched_by_patient_and_draft_date(
    tmp_path: Path,
) -> None:
    """The CDS Hooks Sandbox never sends encounterId, so the `procedures` template cannot be
    filled; with FHIR access the service searches the patient's Procedures on the drafts' date."""
    import respx

    fhir = "https://ehr.example.org/fhir"
    body = build_hook_request(_bundle("pair-no-modifier.json"), hook="order-sign")
    documentation = body.pop("prefetch")
    body["context"].pop("encounterId")
    body["fhirServer"] = fhir
    body["fhirAuthorization"] = {
        "access_token": "opaque-token",
        "token_type": "Bearer",
        "expires_in": 300,
        "scope": "patient/*.read",
        "subject": "therapy-cds",
    }
    patient = body["context"]["patientId"]
    settings = Settings(
        dev_mode=True,
        require_auth=False,
        database_url=f"sqlite:///{tmp_path / 'cds.db'}",
        fhir_server_allowlist=[fhir],
    )
    app = create_app(settings)
    with respx.mock(assert_all_called=False) as ehr:
        ehr.get(f"{fhir}/Patient/{patient}").respond(json=documentation["patient"])
        ehr.get(f"{fhir}/CarePlan", params={"patient": patient}).respond(
            json=documentation["carePlans"]
        )
        search = ehr.get(f"{fhir}/Procedure", params={"patient": patient, "date": "2025-03-04"})
        search.respond(json=documentation["procedures"])
        transport = httpx.ASGITransport(app)
        async with httpx.AsyncClient(transport=transport, base_url="http://cds.test") as client:
            response = await client.post(f"/cds-services/{ORDER_SIGN_SERVICE}", json=body)
    assert response.status_code == 200, response.text
    assert search.called
    assert search.calls.last.request.headers["Authorization"] == "Bearer opaque-token"
    assert _topics(response.json()["cards"], "critical") == ["E-PAIR-NO-MODIFIER"]


def _with_deep_notes(request: dict[str, Any], depth: int) -> dict[str, Any]:
    """Each draft order's ``note`` nested ``depth`` objects deep (free text the cards quote when
    they suggest updating the order)."""
    note: Any = "n"
    for _ in range(depth):
        note = {"text": note}
    for entry in request["context"]["draftOrders"]["entry"]:
        entry["resource"]["note"] = [note]
    return request


def _depth(value: Any) -> int:
    if isinstance(value, dict):
        return 1 + max((_depth(v) for v in value.values()), default=0)
    if isinstance(value, list):
        return 1 + max((_depth(v) for v in value), default=0)
    return 0


@pytest.mark.anyio
async def test_a_draft_order_note_nested_250_deep_is_a_400_not_a_500(
    client: httpx.AsyncClient,
) -> None:
    """Issue 17 item 8: the order-sign card that suggests updating the order quotes it; at 250
    levels orjson refused to write the answer (its limit is 255) and the call was a 500. The
    body's nesting is bounded on input, and at the bound the same card is written."""
    from cds_hooks.body import MAX_JSON_DEPTH

    deep = _with_deep_notes(build_hook_request(_bundle("pair-no-modifier.json")), 250)
    response = await client.post(f"/cds-services/{ORDER_SIGN_SERVICE}", json=deep)
    assert response.status_code == 400
    assert f"more than {MAX_JSON_DEPTH} levels deep" in response.json()["issue"][0]["diagnostics"]

    request = build_hook_request(_bundle("pair-no-modifier.json"))
    base = _depth(_with_deep_notes(json.loads(json.dumps(request)), 10)) - 10
    at_limit = _with_deep_notes(request, MAX_JSON_DEPTH - base)
    assert _depth(at_limit) == MAX_JSON_DEPTH
    response = await client.post(f"/cds-services/{ORDER_SIGN_SERVICE}", json=at_limit)
    assert response.status_code == 200
    resources = [
        action["resource"]
        for card in response.json()["cards"]
        for suggestion in card.get("suggestions", ())
        for action in suggestion.get("actions", ())
        if "resource" in action
    ]
    assert resources
    assert all("note" in resource for resource in resources)


def test_draft_orders_coded_with_the_cpt_oid_are_therapy_charges() -> None:
    """Order-sign answers for charges coded under CPT's HL7 OID as it does under its URI."""
    from plugin.services import bills_therapy

    def draft(system: str) -> dict[str, object]:
        return {
            "resourceType": "ServiceRequest",
            "id": "a",
            "status": "draft",
            "intent": "order",
            "code": {"coding": [{"system": system, "code": "97530"}]},
        }

    assert bills_therapy({"ServiceRequest/a": draft("urn:oid:2.16.840.1.113883.6.12")})
    assert bills_therapy({"ServiceRequest/a": draft("http://www.ama-assn.org/go/cpt")})
    assert not bills_therapy({"ServiceRequest/a": draft("http://snomed.info/sct")})
