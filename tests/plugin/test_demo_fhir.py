"""``therapy-cds demo-fhir``: the FHIR R4 API over the sample bundles (in process, Fhir)
and its loading rules (R5 left out, shared ids, references)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from fastapi import FastAPI
from typer.testing import CliRunner

from plugin.cli import app as cli
from plugin.cli.check import expand_paths
from plugin.demo_fhir import create_demo_app, load_store
from plugin.demo_fhir.search import MAX_COUNT
from plugin.demo_fhir.store import renamed_id

ROOT = Path(__file__).resolve().parents[2]
BUNDLES = ROOT / "sample_bundles"
Json = dict[str, Any]


class Fhir:
    """Requests to ``app`` in process (each one on its own event loop)."""

    def __init__(self, app: FastAPI) -> None:
        self.app = app

    def request(self, method: str, url: str, **options: Any) -> httpx.Response:
        async def send() -> httpx.Response:
            transport = httpx.ASGITransport(app=self.app)
            async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as c:
                return await c.request(method, url, **options)

        return asyncio.run(send())

    def get(self, url: str, **options: Any) -> httpx.Response:
        return self.request("GET", url, **options)

    def post(self, url: str, **options: Any) -> httpx.Response:
        return self.request("POST", url, **options)


@pytest.fixture(scope="module")
def samples() -> Fhir:
    return Fhir(create_demo_app(load_store(expand_paths([BUNDLES]))))


def _ids(bundle: Json, resource_type: str | None = None) -> list[str]:
    return [
        e["resource"]["id"]
        for e in bundle.get("entry", [])
        if e["search"]["mode"] == "match"
        and (resource_type is None or e["resource"]["resourceType"] == resource_type)
    ]


def _search(client: Fhir, path: str, **headers: str) -> Json:
    response = client.get(path, headers=headers)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/fhir+json"
    body: Json = response.json()
    assert body["resourceType"] == "Bundle"
    assert body["type"] == "searchset"
    return body


def _refused(client: Fhir, method: str, path: str, status: int, **kw: Any) -> str:
    response = client.request(method, path, **kw)
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/fhir+json"
    outcome = response.json()
    assert outcome["resourceType"] == "OperationOutcome"
    return str(outcome["issue"][0]["diagnostics"])


# ---------------------------------------------------------------- metadata and read


def test_capability_statement_lists_what_is_served(samples: Fhir) -> None:
    response = samples.get("/metadata")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/fhir+json"
    statement = response.json()
    assert statement["resourceType"] == "CapabilityStatement"
    assert statement["fhirVersion"] == "4.0.1"
    assert statement["kind"] == "instance"
    assert statement["status"] == "active"
    assert statement["date"]
    assert statement["format"]
    assert statement["implementation"]["url"] == "http://testserver"
    rest = statement["rest"][0]
    assert rest["mode"] == "server"
    assert "security" in rest
    by_type = {r["type"]: r for r in rest["resource"]}
    assert set(by_type) == {
        "CarePlan", "Claim", "Coverage", "DocumentReference", "Encounter", "Organization",
        "Patient", "Practitioner", "PractitionerRole", "Procedure", "ServiceRequest",
    }  # fmt: skip
    coverage = {p["name"] for p in by_type["Coverage"]["searchParam"]}
    assert coverage == {"_id", "patient", "beneficiary", "status"}
    for resource in by_type.values():
        assert [i["code"] for i in resource["interaction"]] == ["read", "search-type"]
        assert "searchInclude" not in resource
        assert "searchRevInclude" not in resource
    procedure = {p["name"]: p["type"] for p in by_type["Procedure"]["searchParam"]}
    assert procedure == {
        "_id": "token", "patient": "reference", "subject": "reference",
        "encounter": "reference", "date": "date", "status": "token", "code": "token",
    }  # fmt: skip
    assert {p["name"] for p in by_type["ServiceRequest"]["searchParam"]} >= {
        "authored",
        "occurrence",
        "encounter",
    }


def test_read_answers_the_resource_or_an_operation_outcome(samples: Fhir) -> None:
    response = samples.get("/Patient/pat-avery-clean")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/fhir+json"
    patient = response.json()
    assert patient["resourceType"] == "Patient"
    assert patient["id"] == "pat-avery-clean"
    assert next(iter(patient)) == "resourceType"  # served as written, not re-ordered
    assert "no Patient" in _refused(samples, "GET", "/Patient/nobody-here", 404)
    assert "not a FHIR id" in _refused(samples, "GET", "/Patient/bad$id", 400)
    assert "no Observation" in _refused(samples, "GET", "/Observation/x", 404)
    _refused(samples, "GET", "/Patient/pat-avery-clean/_history", 404)


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/Patient"),
        ("PUT", "/Patient/pat-avery-clean"),
        ("PATCH", "/Patient/pat-avery-clean"),
        ("DELETE", "/Patient/pat-avery-clean"),
        ("DELETE", "/Patient"),
        ("POST", "/"),
    ],
)
def test_writes_answer_405(samples: Fhir, method: str, path: str) -> None:
    assert "read-only" in _refused(samples, method, path, 405, json={"resourceType": "Patient"})
    assert samples.get("/Patient/pat-avery-clean").status_code == 200


def test_r5_samples_are_left_out_with_a_note() -> None:
    store = load_store(expand_paths([BUNDLES]))
    assert store.get("Patient", "pat-soren-r5") is None
    assert any("r5-three-codes.json" in n and "R5" in n for n in store.notes)
    assert any("scenarios.json" in n and "not FHIR" in n for n in store.notes)
    # the Practitioner every sample repeats, identical, is served once (the others: the
    # therapists and assistant of the two CQ/CO samples)
    assert store.counts()["Practitioner"] == 5
    assert not store.renamed


# ---------------------------------------------------------------- search


def test_search_by_patient_subject_encounter_id_and_status(samples: Fhir) -> None:
    absolute = "http://testserver/Patient/pat-avery-clean"
    for value in ("pat-avery-clean", "Patient/pat-avery-clean", absolute):
        found = _search(samples, f"/Procedure?patient={value}")
        assert sorted(_ids(found)) == ["proc-avery-clean-1", "proc-avery-clean-2"]
        assert found["total"] == 2
    assert _ids(_search(samples, "/Procedure?subject:Patient=pat-avery-clean")) == _ids(
        _search(samples, "/Procedure?subject=Patient/pat-avery-clean")
    )
    assert _ids(_search(samples, "/Procedure?patient=Practitioner/pat-avery-clean")) == []
    by_encounter = _search(samples, "/ServiceRequest?encounter=Encounter/enc-avery-clean")
    assert len(_ids(by_encounter)) == 2
    both = _search(samples, "/Patient?_id=pat-avery-clean,pat-bram-nomod")
    assert sorted(_ids(both)) == ["pat-avery-clean", "pat-bram-nomod"]
    # a repeated parameter is AND, a comma OR
    assert _ids(_search(samples, "/Patient?_id=pat-avery-clean&_id=pat-bram-nomod")) == []
    voided = _search(samples, "/Procedure?patient=pat-quinn-twovisits&status=entered-in-error")
    assert len(_ids(voided)) == 1
    drafts = _search(samples, "/ServiceRequest?status=draft&patient=pat-avery-clean")
    assert len(_ids(drafts)) == 2
    cpt = "http://www.ama-assn.org/go/cpt"
    coded = _search(samples, f"/Procedure?code={cpt}|97140&patient=pat-avery-clean")
    assert _ids(coded) == ["proc-avery-clean-1"]
    claims = _search(samples, "/Claim?patient=pat-zane-claim&encounter:missing=false")
    assert len(_ids(claims)) == 1
    assert _ids(_search(samples, "/Patient?name=avery")) == ["pat-avery-clean"]
    assert _ids(_search(samples, "/Patient?name:exact=avery")) == []


def test_post_search_equals_get(samples: Fhir) -> None:
    got = _search(samples, "/Procedure?patient=pat-avery-clean&date=2025-03-04")
    posted = samples.post(
        "/Procedure/_search",
        data={"patient": "pat-avery-clean", "date": "2025-03-04"},
    )
    assert posted.status_code == 200
    assert _ids(posted.json()) == _ids(got)
    _refused(samples, "POST", "/Procedure/_search", 415, json={"patient": "x"})


def _dated_bundle(tmp_path: Path) -> Path:
    """Procedures at known local times in two zones, an Encounter, an open-ended CarePlan."""

    def procedure(ident: str, start: str, end: str | None = None) -> Json:
        performed = {"performedPeriod": {"start": start, **({"end": end} if end else {})}}
        return {
            "resourceType": "Procedure",
            "id": ident,
            "status": "completed",
            "subject": {"reference": "Patient/p"},
            **performed,
        }

    resources = [
        {"resourceType": "Patient", "id": "p"},
        procedure("morning", "2025-03-04T09:00:00-05:00", "2025-03-04T09:30:00-05:00"),
        # late evening in Chicago: 2025-03-05 in UTC, 2025-03-04 where it happened
        procedure("late", "2025-03-04T23:10:00-06:00", "2025-03-04T23:40:00-06:00"),
        procedure("crossing", "2025-03-04T23:50:00-05:00", "2025-03-05T00:20:00-05:00"),
        procedure("open", "2025-03-06T10:00:00-05:00"),
        {
            "resourceType": "Procedure",
            "id": "instant",
            "status": "completed",
            "subject": {"reference": "Patient/p"},
            "performedDateTime": "2025-02-27T08:00:00-05:00",
        },
        {
            "resourceType": "CarePlan",
            "id": "plan",
            "status": "active",
            "intent": "plan",
            "subject": {"reference": "Patient/p"},
            "period": {"start": "2025-01-01"},
        },
    ]
    path = tmp_path / "dated.json"
    bundle = {
        "resourceType": "Bundle",
        "type": "collection",
        "entry": [{"resource": r} for r in resources],
    }
    path.write_text(json.dumps(bundle))
    return path


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        # a day without a zone: each resource's own local date
        ("date=2025-03-04", {"morning", "late"}),
        ("date=eq2025-03-04", {"morning", "late"}),
        ("date=2025-03", {"morning", "late", "crossing"}),  # open: no end in March
        ("date=2025", {"morning", "late", "crossing", "instant"}),
        ("date=2025-03-05", set()),
        ("date=ne2025-03-04", {"crossing", "open", "instant"}),
        ("date=gt2025-03-04", {"crossing", "open"}),
        ("date=ge2025-03-04", {"morning", "late", "crossing", "open"}),
        ("date=lt2025-03-04", {"instant"}),
        ("date=le2025-03-04", {"morning", "late", "crossing", "instant"}),
        ("date=sa2025-03-04", {"open"}),
        ("date=eb2025-03-04", {"instant"}),
        ("date=ge2025-03-01&date=lt2025-03-05", {"morning", "late", "crossing"}),
        # with a zone: instants (late starts 2025-03-05T05:10Z)
        ("date=2025-03-05T05:10Z", set()),
        ("date=ge2025-03-05T00:00:00Z&date=le2025-03-05T23:59:59Z", {"late", "crossing"}),
        ("date=sa2025-03-05T04:59:59%2B00:00", {"open", "late"}),
        # an unencoded + arrives as a space
        ("date=ge2025-03-04T09:00:00+05:00&date=lt2025-03-04T12:00:00-05:00", {"morning"}),
        ("date=2025-03-04,2025-02-27", {"morning", "late", "instant"}),
    ],
)
def test_date_search_follows_fhir_range_semantics(
    tmp_path: Path, query: str, expected: set[str]
) -> None:
    client = Fhir(create_demo_app(load_store([(_dated_bundle(tmp_path), True)])))
    assert set(_ids(_search(client, f"/Procedure?{query}"))) == expected


def test_period_dates_with_an_open_end(tmp_path: Path) -> None:
    client = Fhir(create_demo_app(load_store([(_dated_bundle(tmp_path), True)])))
    assert _ids(_search(client, "/CarePlan?date=ge2030-01-01")) == ["plan"]
    assert _ids(_search(client, "/CarePlan?date=2025-06-01")) == []  # not inside one day
    assert _ids(_search(client, "/CarePlan?date=lt2025-01-01")) == []
    assert _ids(_search(client, "/CarePlan?date=le2025-01-01")) == ["plan"]


@pytest.mark.parametrize(
    ("query", "named"),
    [
        ("date=2025-13-01", "date"),
        ("date=yesterday", "date"),
        ("date=ap2025-03-04", "date"),
        ("date=xx2025-03-04", "date"),
        ("date=2025-03-04T25:00Z", "date"),
        ("date:exact=2025-03-04", "date"),
        ("patient=Patient/a/b/c", "patient"),
        ("patient:Practitioner=x", "patient"),
        ("status:text=done", "status"),
        ("status=abc|", "status"),
        ("patient:missing=maybe", "patient"),
        ("_count=-1", "_count"),
        ("_count=ten", "_count"),
        ("_offset=1.5", "_offset"),
        ("_count:exact=1", "_count"),
    ],
)
def test_a_bad_query_is_a_400_naming_the_parameter(samples: Fhir, query: str, named: str) -> None:
    diagnostics = _refused(samples, "GET", f"/Procedure?{query}", 400)
    assert f"'{named}" in diagnostics
    value = query.partition("=")[2]
    assert value not in diagnostics  # the value is never repeated


def test_format_other_than_json_is_406(samples: Fhir) -> None:
    _refused(samples, "GET", "/Procedure?_format=xml", 406)


def test_unknown_parameters_lenient_reported_strict_refused(samples: Fhir) -> None:
    query = "patient=pat-avery-clean&_include=Procedure:subject&colour=red"
    lenient = _search(samples, f"/Procedure?{query}")
    outcome = [e for e in lenient["entry"] if e["search"]["mode"] == "outcome"]
    assert len(outcome) == 1
    issue = outcome[0]["resource"]["issue"][0]
    assert issue["severity"] == "warning"  # not an error: a CDS prefetch reader keeps the data
    assert "_include" in issue["diagnostics"]
    assert "colour" in issue["diagnostics"]
    assert len(_ids(lenient)) == 2
    self_link = next(link["url"] for link in lenient["link"] if link["relation"] == "self")
    assert "colour" not in self_link
    assert "_include" not in self_link
    assert "patient=" in self_link
    diagnostics = _refused(
        samples, "GET", "/Procedure?patient=x&colour=red", 400,
        headers={"Prefer": "handling=strict"},
    )  # fmt: skip
    assert "'colour'" in diagnostics
    assert "strict" in diagnostics
    strict_ok = _search(samples, "/Procedure?patient=pat-avery-clean", Prefer="handling=strict")
    assert all(e["search"]["mode"] == "match" for e in strict_ok["entry"])


def test_paging_walk_visits_every_match_once(samples: Fhir) -> None:
    everything = _search(samples, f"/Procedure?_count={MAX_COUNT}")
    total = everything["total"]
    assert total == len(_ids(everything)) > 20
    seen: list[str] = []
    url: str | None = "/Procedure?_count=7&_sort=_id"
    pages = 0
    while url is not None:
        page = _search(samples, url)
        assert page["total"] == total
        links = {link["relation"]: link["url"] for link in page["link"]}
        assert {"self", "first", "last"} <= set(links)
        assert ("previous" in links) == (pages > 0)
        seen += _ids(page)
        pages += 1
        url = links.get("next")
        if url is not None:
            parts = urlsplit(url)
            assert f"{parts.scheme}://{parts.netloc}" == "http://testserver"
            assert parse_qs(parts.query)["_sort"] == ["_id"]
            url = f"{parts.path}?{parts.query}"
    assert pages == -(-total // 7)
    assert seen == sorted(seen)
    assert len(set(seen)) == total
    assert set(seen) == set(_ids(everything))
    counted = _search(samples, "/Procedure?_summary=count")
    assert counted["total"] == total
    assert "entry" not in counted
    assert _search(samples, "/Procedure?_count=0")["total"] == total
    capped = _search(samples, "/Procedure?_count=100000")
    self_link = next(link["url"] for link in capped["link"] if link["relation"] == "self")
    assert f"_count={MAX_COUNT}" in self_link


def test_sort_by_date_descending(samples: Fhir) -> None:
    found = _search(samples, "/Encounter?patient=pat-quinn-twovisits&_sort=-date")
    starts = [e["resource"]["period"]["start"] for e in found["entry"]]
    assert len(starts) == 2
    assert starts == sorted(starts, reverse=True)


# ---------------------------------------------------------------- ids shared between files


def _visit(patient_name: str) -> Json:
    return {
        "resourceType": "Bundle",
        "type": "collection",
        "entry": [
            {
                "fullUrl": "urn:uuid:6f1f0f6c-0000-4000-8000-000000000001",
                "resource": {
                    "resourceType": "Patient",
                    "id": "p1",
                    "name": [{"family": patient_name}],
                },
            },
            {
                "resource": {
                    "resourceType": "Encounter",
                    "id": "e1",
                    "status": "finished",
                    "class": {"code": "AMB"},
                    "subject": {"reference": "urn:uuid:6f1f0f6c-0000-4000-8000-000000000001"},
                    "period": {"start": "2025-03-04T09:00:00-05:00"},
                }
            },
            {
                "resource": {
                    "resourceType": "Procedure",
                    "id": "pr1",
                    "status": "completed",
                    "subject": {"reference": "Patient/p1"},
                    "encounter": {"reference": "Encounter/e1"},
                    "performer": [{"actor": {"reference": "Practitioner/shared"}}],
                    "performedPeriod": {"start": "2025-03-04T09:00:00-05:00"},
                }
            },
            {"resource": {"resourceType": "Practitioner", "id": "shared"}},
        ],
    }


def test_shared_ids_are_renamed_stably_and_references_follow(tmp_path: Path) -> None:
    (tmp_path / "a.json").write_text(json.dumps(_visit("Alpha")))
    (tmp_path / "b.json").write_text(json.dumps(_visit("Beta")))
    store = load_store(expand_paths([tmp_path]))
    again = load_store(expand_paths([tmp_path]))
    assert store.counts() == {"Encounter": 2, "Patient": 2, "Practitioner": 1, "Procedure": 2}
    assert sorted(store.renamed) == sorted(again.renamed)
    client = Fhir(create_demo_app(store))
    for file, family in (("a.json", "Alpha"), ("b.json", "Beta")):
        patient = renamed_id("p1", file)
        assert client.get(f"/Patient/{patient}").json()["name"][0]["family"] == family
        encounter = client.get(f"/Encounter/{renamed_id('e1', file)}").json()
        assert encounter["subject"]["reference"] == f"Patient/{patient}"  # was a urn:uuid
        procedures = _search(client, f"/Procedure?patient={patient}")
        assert _ids(procedures) == [renamed_id("pr1", file)]
        resource = procedures["entry"][0]["resource"]
        assert resource["encounter"]["reference"] == f"Encounter/{renamed_id('e1', file)}"
        assert resource["performer"][0]["actor"]["reference"] == "Practitioner/shared"
    assert client.get("/Patient/p1").status_code == 404


# ---------------------------------------------------------------- the command


def test_the_command_refuses_what_it_cannot_serve(tmp_path: Path) -> None:
    runner = CliRunner()
    missing = runner.invoke(cli, ["demo-fhir", "--bundles", str(tmp_path / "nowhere")])
    assert missing.exit_code == 2
    assert "no such file or folder" in missing.output
    assert "Traceback" not in missing.output
    manifest = runner.invoke(cli, ["demo-fhir", "--bundles", str(BUNDLES / "scenarios.json")])
    assert manifest.exit_code == 2
    assert "not FHIR" in manifest.output
    empty = runner.invoke(cli, ["demo-fhir", "--bundles", str(tmp_path)])
    assert empty.exit_code == 2
    assert "no FHIR R4 resources" in empty.output
