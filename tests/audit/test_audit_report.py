"""What ``report.html`` and ``visits.csv`` tell a compliance manager (issues 13 and 18): billed
units beside allowed, the rules each visit hit, by practitioner and by site, the clock of the
timelines, links to the files beside the report; everything from the input escaped."""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import Any

import pytest
from audit_support import SAMPLES, audit, check_json, read_csv, summary

from plugin.audit.report import PARTY_ROWS
from plugin.audit.tally import NOT_RECORDED


@pytest.fixture(scope="module")
def samples_out(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("report") / "out"
    assert audit(str(SAMPLES), "--out", str(out), "-j", "1", "-q").exit_code == 0
    return out


def _per_code(cell: str) -> dict[str, int]:
    return {c: int(n) for c, _, n in (p.partition("=") for p in cell.split(";") if p)}


def test_visits_csv_has_check_billed_units_and_their_difference(samples_out: Path) -> None:
    expected = {
        (v["patient"], v["date"], v["discipline"]): v for v in check_json(SAMPLES)["visits"]
    }
    rows = read_csv(samples_out / "visits.csv")
    assert len(rows) == len(expected)
    over_total = 0
    for row in rows:
        visit = expected[(row["patient"], row["date"], row["discipline"])]
        assert visit["billed_units"] is not None  # every sample carries charges
        assert _per_code(row["units_billed"]) == visit["billed_units"]
        differences = [n - visit["units"].get(c, 0) for c, n in visit["billed_units"].items()]
        assert int(row["units_over_billed"]) == sum(d for d in differences if d > 0)
        assert int(row["units_under_billed"]) == -sum(d for d in differences if d < 0)
        over_total += int(row["units_over_billed"])
    exceed = {r["source"] for r in rows if "E-UNITS-EXCEED" in r["finding_ids"]}
    assert exceed == {r["source"] for r in rows if int(r["units_over_billed"])}
    body = summary(samples_out)
    assert body["billing_by_payer_rule"]["cms"]["units_over_billed"] == over_total > 0
    assert sum(m["units_over_billed"] for m in body["by_month"].values()) == over_total


def test_a_visit_without_charges_leaves_billed_empty_not_zero(tmp_path: Path) -> None:
    data = json.loads((SAMPLES / "billed-units-exceed.json").read_text())
    data["entry"] = [e for e in data["entry"] if e["resource"]["resourceType"] != "ServiceRequest"]
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "no-charges.json").write_text(json.dumps(data))
    out = tmp_path / "out"
    assert audit(str(tmp_path / "in"), "--out", str(out), "-q").exit_code == 0
    (row,) = read_csv(out / "visits.csv")
    assert (row["units_billed"], row["units_over_billed"], row["units_under_billed"]) == ("",) * 3
    billing = summary(out)["billing_by_payer_rule"]["cms"]
    assert billing["visits_without_charges"] == 1
    assert billing["units_billed"] == billing["units_over_billed"] == 0
    assert "no charges" in (out / "report.html").read_text()


def test_the_visit_list_names_the_rules_each_visit_hit(samples_out: Path) -> None:
    html = (samples_out / "report.html").read_text()
    visits = re.findall(r'<details class="visit".*?</summary>', html, re.S)
    assert visits
    rows = {
        (r["patient"], r["date"], r["discipline"]): r for r in read_csv(samples_out / "visits.csv")
    }
    exceed = next(v for v in visits if "pat-nils-exceed" in v)
    assert re.search(
        r'<span class="chip error" title="Billed units exceed[^"]*">E-UNITS-EXCEED</span>', exceed
    )
    assert '<span class="over">+1 over</span>' in exceed
    for visit in visits:
        found = re.search(
            r'title="([^"]+)">[^<]*</span><span>([\d-]+)</span><span>(\w+)</span>', visit
        )
        assert found is not None
        hit = set(re.findall(r'<span class="chip \w+" title="[^"]+">([EWI]-[A-Z0-9-]+)<', visit))
        assert hit == set(rows[found.groups()]["finding_ids"].split(";"))


def test_chart_labels_say_what_the_finding_means(samples_out: Path) -> None:
    html = (samples_out / "report.html").read_text()
    section = html.split('<section id="findings-by-rule">')[1].split("</section>")[0]
    assert "No charge line" not in section  # not in the samples
    assert re.search(
        r"<td>Billed units exceed the units the documented minutes support[^<]*"
        r'<span class="chip error">E-UNITS-EXCEED</span></td>',
        section,
    )


def test_links_to_the_files_beside_the_report_are_relative(samples_out: Path) -> None:
    html = (samples_out / "report.html").read_text()
    hrefs = set(re.findall(r'href="([^"]+)"', html))
    assert {"visits.csv", "findings.csv", "rejected.csv", "summary.json"} <= hrefs
    assert all((samples_out / href).is_file() for href in hrefs)


def test_by_practitioner_names_the_therapists_and_counts_their_visits(samples_out: Path) -> None:
    body = summary(samples_out)
    practitioners = body["by_practitioner"]
    assert practitioners["Practitioner/prac-morgan-achebe"]["name"] == "Morgan Achebe"
    # a visit counts under each of its performers: assistant-cq-missing.json has two (PT, PTA)
    assert sum(p["visits"] for p in practitioners.values()) == body["totals"]["visits"] + 1
    assert practitioners["PractitionerRole/role-casey-lind-pta"]["name"] == "Casey Lind"
    # the co-treatment samples' Encounters name the clinic as serviceProvider; no other sample
    # records a site
    assert set(body["by_site"]) == {NOT_RECORDED, "Organization/org-lakeside-rehab"}
    # the Practitioners the Procedures name are read, no longer out of scope
    assert "Practitioner" not in body["reconciliation"]["out_of_scope_by_type"]
    assert body["reconciliation"]["balanced"] is True
    html = (samples_out / "report.html").read_text()
    assert "<td>Jordan Reyes</td>" in html
    assert '<section id="by-site">' in html


def _with_site(data: dict[str, Any], name: str, on_encounter: bool) -> dict[str, Any]:
    out = copy.deepcopy(data)
    out["entry"].append({"resource": {"resourceType": "Location", "id": "loc-1", "name": name}})
    for entry in out["entry"]:
        resource = entry["resource"]
        if on_encounter and resource["resourceType"] == "Encounter":
            resource["location"] = [{"location": {"reference": "Location/loc-1"}}]
        if not on_encounter and resource["resourceType"] == "Procedure":
            resource["location"] = {"reference": "Location/loc-1"}
    return out


@pytest.mark.parametrize("on_encounter", [True, False])
def test_by_site_reads_the_location_and_escapes_its_name(
    tmp_path: Path, on_encounter: bool
) -> None:
    data = json.loads((SAMPLES / "overlapping-time-blocks.json").read_text())
    hostile = '<img src=x onerror="alert(1)"> Clinic & Co'
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "site.json").write_text(json.dumps(_with_site(data, hostile, on_encounter)))
    out = tmp_path / "out"
    assert audit(str(tmp_path / "in"), "--out", str(out), "-q").exit_code == 0
    body = summary(out)
    assert body["by_site"] == {
        "Location/loc-1": {
            "name": hostile,
            "visits": 1,
            "findings": body["totals"]["findings"],
            "errors": body["totals"]["errors"],
            "warnings": body["totals"]["warnings"],
            "units_over_billed": 0,
            "units_under_billed": 0,
        }
    }
    assert body["reconciliation"]["out_of_scope_by_type"] == {"Patient": 1}
    html = (out / "report.html").read_text()
    assert "<img" not in html
    assert "&lt;img src=x onerror=&quot;alert(1)&quot;&gt; Clinic &amp; Co" in html


def test_the_tables_are_capped_in_the_page_not_in_the_summary(tmp_path: Path) -> None:
    data = json.loads((SAMPLES / "clean-pair-59-on-97530.json").read_text())
    (tmp_path / "in").mkdir()
    for n in range(PARTY_ROWS + 3):
        copy_ = copy.deepcopy(data)
        for entry in copy_["entry"]:
            resource = entry["resource"]
            if resource["resourceType"] == "Procedure":
                resource["performer"] = [{"actor": {"reference": f"Practitioner/t{n}"}}]
        (tmp_path / "in" / f"v{n}.json").write_text(json.dumps(copy_))
    out = tmp_path / "out"
    assert audit(str(tmp_path / "in"), "--out", str(out), "-q").exit_code == 0
    assert len(summary(out)["by_practitioner"]) == PARTY_ROWS + 3
    html = (out / "report.html").read_text()
    section = html.split('<section id="by-practitioner">')[1].split("</section>")[0]
    assert section.count("<tr><td>") == PARTY_ROWS
    assert f"The {PARTY_ROWS} with the most findings of {PARTY_ROWS + 3}" in section


def test_headers_and_patient_ids_keep_their_words(samples_out: Path) -> None:
    html = (samples_out / "report.html").read_text()
    css = html.split("<style>")[1].split("</style>")[0]
    head_rule = re.search(r"\.visits \.head\{[^}]*\}", css)
    assert head_rule is not None
    assert "text-transform" not in head_rule[0]
    assert "word-break:break-all" not in css
    assert re.search(r"\.pid\{[^}]*white-space:nowrap", css)
    assert '<span class="pid" title="Patient/' in html


@pytest.mark.parametrize("jobs", ["1", "2"])
def test_an_export_names_its_practitioners_too(tmp_path: Path, jobs: str) -> None:
    """Bulk Data NDJSON: Practitioner lines name no patient; pass 1 reads their names."""
    data = json.loads((SAMPLES / "group-delivery-97530.json").read_text())
    export = tmp_path / "export"
    export.mkdir()
    by_type: dict[str, list[str]] = {}
    for entry in data["entry"]:
        resource = entry["resource"]
        by_type.setdefault(resource["resourceType"], []).append(json.dumps(resource))
    for rtype, lines in by_type.items():
        (export / f"{rtype}.ndjson").write_text("\n".join(lines) + "\n")
    out = tmp_path / "out"
    assert audit(str(export), "--out", str(out), "-q", "-j", jobs).exit_code == 0
    body = summary(out)
    (key,) = body["by_practitioner"]
    assert body["by_practitioner"][key]["name"] == "Morgan Achebe"
    assert body["by_practitioner"][key]["visits"] == 1
    assert "Practitioner" not in body["reconciliation"]["out_of_scope_by_type"]
    assert body["reconciliation"]["balanced"] is True
