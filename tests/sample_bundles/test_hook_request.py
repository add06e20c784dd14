"""plugin.hook_request: bundle -> CDS Hooks 2.0 request (order-sign / encounter-discharge)."""

from __future__ import annotations

import copy
import json
import uuid
from typing import Any

import pytest
from scenario_support import bundle, cases, scenarios

from cds_hooks.models import CdsRequest
from fhir_mappings import group_visits, map_bundle, map_cds_request
from plugin.hook_request import DEFAULT_USER_ID, BundleError, build_hook_request

CLEAN = "clean-pair-59-on-97530.json"


def _entries(searchset: dict[str, Any]) -> list[tuple[str, str, str]]:
    return [
        (e["resource"]["resourceType"], e["resource"]["id"], e["search"]["mode"])
        for e in searchset.get("entry", [])
    ]


def _minimal(*resources: dict[str, Any]) -> dict[str, Any]:
    return {
        "resourceType": "Bundle",
        "type": "collection",
        "entry": [{"resource": r} for r in resources],
    }


PATIENT = {"resourceType": "Patient", "id": "p1"}
PROC = {
    "resourceType": "Procedure",
    "id": "pr1",
    "status": "completed",
    "subject": {"reference": "Patient/p1"},
    "code": {"coding": [{"system": "http://www.ama-assn.org/go/cpt", "code": "97530"}]},
}


def test_order_sign_request_shape() -> None:
    request = build_hook_request(bundle(CLEAN))
    assert list(request) == ["hookInstance", "hook", "context", "prefetch"]
    assert uuid.UUID(request["hookInstance"]).version == 4
    assert request["hook"] == "order-sign"
    context = request["context"]
    assert context["userId"] == "Practitioner/prac-jordan-reyes"
    assert context["patientId"] == "pat-avery-clean"
    assert context["encounterId"] == "enc-avery-clean"
    drafts = context["draftOrders"]
    assert drafts["resourceType"] == "Bundle"
    assert drafts["type"] == "collection"
    assert [e["resource"]["id"] for e in drafts["entry"]] == [
        "chg-avery-clean-1",
        "chg-avery-clean-2",
    ]
    assert all(e["resource"]["status"] == "draft" for e in drafts["entry"])
    prefetch = request["prefetch"]
    assert set(prefetch) == {
        "patient",
        "encounter",
        "procedures",
        "carePlans",
        "therapyHistory",
        "progressReports",
        "coverage",
    }
    assert _entries(prefetch["therapyHistory"]) == [("Encounter", "enc-avery-clean", "match")]
    assert "entry" not in prefetch["progressReports"]  # the bundle has no progress note
    assert _entries(prefetch["coverage"]) == []  # the sample has no Coverage: an empty search
    assert prefetch["patient"]["id"] == "pat-avery-clean"
    assert prefetch["encounter"]["id"] == "enc-avery-clean"
    assert prefetch["procedures"]["type"] == "searchset"
    assert prefetch["procedures"]["total"] == 2
    assert _entries(prefetch["procedures"]) == [
        ("Procedure", "proc-avery-clean-1", "match"),
        ("Procedure", "proc-avery-clean-2", "match"),
        # the performer, as ``_include=Procedure:performer`` returns it (R-G3)
        ("Practitioner", "prac-jordan-reyes", "include"),
    ]
    assert _entries(prefetch["carePlans"]) == [("CarePlan", "cp-avery-clean", "match")]
    # Full URLs survive, so references resolve as in the bundle.
    assert prefetch["procedures"]["entry"][0]["fullUrl"].endswith("/Procedure/proc-avery-clean-1")
    # The request is what the protocol layer accepts.
    CdsRequest.model_validate(request)


def test_each_call_gets_a_new_hook_instance() -> None:
    data = bundle(CLEAN)
    assert build_hook_request(data)["hookInstance"] != build_hook_request(data)["hookInstance"]
    assert build_hook_request(data, hook_instance="fixed")["hookInstance"] == "fixed"


def test_fhir_server_only_when_given() -> None:
    data = bundle(CLEAN)
    assert "fhirServer" not in build_hook_request(data)
    request = build_hook_request(data, fhir_server="https://ehr.example.org/fhir")
    assert request["fhirServer"] == "https://ehr.example.org/fhir"


def test_encounter_discharge_has_no_draft_orders() -> None:
    request = build_hook_request(
        bundle("discharge-procedure-extensions.json"), "encounter-discharge"
    )
    assert request["hook"] == "encounter-discharge"
    assert set(request["context"]) == {"userId", "patientId", "encounterId"}
    assert request["context"]["encounterId"] == "enc-tamsin-ext"


def test_encounter_discharge_drops_draft_charges_everywhere() -> None:
    request = build_hook_request(bundle(CLEAN), "encounter-discharge")
    assert "draftOrders" not in request["context"]
    assert all(
        kind != "ServiceRequest" for kind, _, _ in _entries(request["prefetch"]["procedures"])
    )


def test_encounter_discharge_needs_an_encounter() -> None:
    with pytest.raises(BundleError, match="Encounter"):
        build_hook_request(_minimal(PATIENT, PROC), "encounter-discharge")


def test_two_encounters_context_is_the_signed_one_other_is_included() -> None:
    request = build_hook_request(bundle("two-encounters-same-day.json"))
    assert request["context"]["encounterId"] == "enc-quinn-pm"
    entries = _entries(request["prefetch"]["procedures"])
    assert ("Encounter", "enc-quinn-am", "include") in entries
    assert ("Encounter", "enc-quinn-pm", "include") not in entries
    # Every Procedure is sent, whatever its status: the service decides what to ignore.
    assert ("Procedure", "proc-quinn-4", "match") in entries


def test_latest_encounter_when_no_charge_names_one() -> None:
    early = {
        "resourceType": "Encounter",
        "id": "e1",
        "period": {"start": "2025-03-04T08:00:00-05:00"},
    }
    late = {
        "resourceType": "Encounter",
        "id": "e2",
        "period": {"start": "2025-03-04T14:00:00-05:00"},
    }
    request = build_hook_request(_minimal(PATIENT, late, early, PROC))
    assert request["context"]["encounterId"] == "e2"


def test_non_draft_resources_the_rules_need_are_included() -> None:
    plan_request = {
        "resourceType": "ServiceRequest",
        "id": "poc1",
        "status": "active",
        "intent": "plan",
        "subject": {"reference": "Patient/p1"},
    }
    claim = {"resourceType": "Claim", "id": "c1", "status": "active"}
    condition = {"resourceType": "Condition", "id": "d1", "subject": {"reference": "Patient/p1"}}
    other = {"resourceType": "Organization", "id": "o1"}
    request = build_hook_request(_minimal(PATIENT, PROC, plan_request, claim, condition, other))
    assert _entries(request["prefetch"]["procedures"]) == [
        ("Procedure", "pr1", "match"),
        ("ServiceRequest", "poc1", "include"),
        ("Claim", "c1", "include"),
        ("Condition", "d1", "include"),
    ]
    assert request["prefetch"]["procedures"]["total"] == 1
    assert "entry" not in request["context"]["draftOrders"]  # no empty arrays in FHIR JSON


def test_defaults_without_practitioner_or_encounter() -> None:
    request = build_hook_request(_minimal(PATIENT, PROC))
    assert request["context"]["userId"] == DEFAULT_USER_ID
    assert "encounterId" not in request["context"]
    assert request["prefetch"]["encounter"] is None
    assert request["prefetch"]["carePlans"] == {
        "resourceType": "Bundle",
        "type": "searchset",
        "total": 0,
    }


def test_user_from_charge_requester_then_practitioner() -> None:
    charge = {
        "resourceType": "ServiceRequest",
        "id": "s1",
        "status": "draft",
        "intent": "order",
        "requester": {"reference": "PractitionerRole/r9"},
    }
    assert build_hook_request(_minimal(PATIENT, PROC, charge))["context"]["userId"] == (
        "PractitionerRole/r9"
    )
    prac = {"resourceType": "Practitioner", "id": "t7"}
    assert build_hook_request(_minimal(PATIENT, PROC, prac))["context"]["userId"] == (
        "Practitioner/t7"
    )


def test_patient_id_from_procedure_subject_when_no_patient() -> None:
    request = build_hook_request(_minimal(PROC))
    assert request["context"]["patientId"] == "p1"
    assert request["prefetch"]["patient"] is None


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"resourceType": "Patient", "id": "x"}, "Bundle"),
        ([], "Bundle"),
        ({"resourceType": "Bundle", "entry": {}}, "not a list"),
        ({"resourceType": "Bundle", "entry": [{"fullUrl": "urn:x"}]}, r"entry\[0\]"),
        (_minimal({"resourceType": "Organization", "id": "o"}), "patientId"),
    ],
)
def test_unusable_input_is_refused(data: Any, message: str) -> None:
    with pytest.raises(BundleError, match=message):
        build_hook_request(data)


def test_unknown_hook_is_refused() -> None:
    with pytest.raises(BundleError, match="unsupported hook"):
        build_hook_request(bundle(CLEAN), "patient-view")  # type: ignore[arg-type]


def test_input_is_not_modified_and_output_is_independent() -> None:
    data = bundle(CLEAN)
    before = copy.deepcopy(data)
    request = build_hook_request(data)
    assert data == before
    request["prefetch"]["patient"]["id"] = "changed"
    assert data == before
    json.dumps(request)


@pytest.mark.parametrize("item", scenarios(), ids=[s["file"] for s in scenarios()])
def test_request_maps_like_the_bundle(item: dict[str, Any]) -> None:
    """What the service reads from the request is what `check` reads from the bundle."""
    data = bundle(item["file"])
    direct = group_visits(map_bundle(data))
    via_hook = group_visits(map_cds_request(build_hook_request(data, item["hook"])))
    assert via_hook.visits == direct.visits
    assert sorted(s.service.ref for s in via_hook.set_aside) == sorted(
        s.service.ref for s in direct.set_aside
    )


@pytest.mark.parametrize(("file", "payer_rule"), cases())
def test_request_gives_the_manifest_result(file: str, payer_rule: str) -> None:
    from scenario_support import reduce_check_json, reduce_expected

    from plugin.pipeline import check_record
    from plugin.rules.engine import analysis_to_json

    item = next(s for s in scenarios() if s["file"] == file)
    request = build_hook_request(bundle(file), item["hook"])
    # the pipeline every entry point runs (a request file under `check`: its prefetch carries
    # the visit history, so the progress-report interval is checked too)
    document = analysis_to_json(
        check_record(map_cds_request(request), payer_rule=payer_rule, pair_rule="cms").analysis  # type: ignore[arg-type]
    )
    assert reduce_check_json(document) == reduce_expected(item["expected"][payer_rule])


def test_performer_roles_and_their_practitioners_are_included() -> None:
    """A PractitionerRole performer is sent with the Practitioner it names (issue 15)."""
    entries = _entries(
        build_hook_request(bundle("assistant-cq-missing.json"))["prefetch"]["procedures"]
    )
    assert ("PractitionerRole", "role-casey-lind-pta", "include") in entries
    assert ("Practitioner", "prac-casey-lind", "include") in entries
    assert ("Practitioner", "prac-rowan-adeyemi", "include") in entries
