"""``report.html``: one self-contained page a billing auditor can read, print or mail.

Totals, findings by rule, the 97140/97530 pair status, findings by month, units by code, the
reconciliation of what was read, and the visits with findings -- each opening its visit
timeline, drawn by :mod:`plugin.web.timeline` exactly as the sandbox page draws it. Inline CSS
and SVG only: no script, no font, no image or style sheet to fetch. Every value from the input
is escaped. Patients appear as references (pseudonyms with ``--pseudonymize``), never names.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from html import escape
from pathlib import Path
from typing import Any

from fhir_mappings.codes import code_info
from plugin.audit.charts import Bar, Series, bar_chart, stacked_bar, trend_chart
from plugin.audit.tally import NOT_RECORDED
from plugin.audit.tasks import ReportVisit
from plugin.rules import CATALOGUE, RuleId
from plugin.rules.vocabulary import PayerRule

SEVERITY_COLOUR = {"error": "#c5221f", "warning": "#e8710a", "info": "#1a73e8"}
PAIR_COLOUR = {
    "SUPPORTED": "#188038",
    "NOT_SUPPORTED": "#c5221f",
    "INDETERMINATE": "#e8710a",
    "NOT_APPLICABLE": "#9aa0a6",
}
PAIR_MEANING = {
    "SUPPORTED": "both codes billable, distinct time blocks, modifier in place",
    "NOT_SUPPORTED": "both codes billed but the pair would be denied as documented",
    "INDETERMINATE": "a 97140 or 97530 service lacks a start or end time",
    "NOT_APPLICABLE": "the visit does not earn units of both codes",
}
PAYER_RULE_NAME = {rule.value: rule.label for rule in PayerRule}


def _payer_text(rules: Mapping[str, Any]) -> str:
    """The payer rule line: the rule given with --payer-rule, or each visit's from its Coverage
    with the configured default (issue 15; summaries without ``payer_rule_source`` read as the
    former)."""
    rule = str(PAYER_RULE_NAME.get(rules["payer_rule"], rules["payer_rule"]))
    source = str(rules.get("payer_rule_source") or "")
    if not source or source.startswith("chosen with"):
        return rule
    return f"payer rule per visit from its Coverage ({source}), else {rule}"


_CSS = """
:root{--ink:#202124;--muted:#5f6368;--line:#dadce0;--soft:#f8f9fa;--accent:#1a73e8}
*{box-sizing:border-box}
body{margin:0;font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:var(--ink);
background:#f1f3f4}
main{max-width:1080px;margin:0 auto;padding:28px 24px 48px}
header.top{background:#fff;border-bottom:1px solid var(--line)}
header.top .inner{max-width:1080px;margin:0 auto;padding:22px 24px}
h1{font-size:24px;margin:0 0 4px;font-weight:600}
h2{font-size:17px;margin:0 0 4px;font-weight:600}
p.lede{margin:0;color:var(--muted)}
p.run{margin:6px 0 0;color:var(--muted);font-size:12px}
section{background:#fff;border:1px solid var(--line);border-radius:10px;padding:20px 22px;
margin:18px 0}
section .hint{color:var(--muted);margin:0 0 14px;font-size:13px}
.tiles{display:grid;grid-template-columns:repeat(auto-fill,minmax(150px,1fr));gap:12px;
margin:18px 0}
.tile{background:#fff;border:1px solid var(--line);border-radius:10px;padding:14px 16px}
.tile .value{font-size:26px;font-weight:600;letter-spacing:-.02em}
.tile .label{color:var(--muted);font-size:12px;text-transform:uppercase;letter-spacing:.04em}
.tile .sub{color:var(--muted);font-size:12px}
.tile.error .value{color:#c5221f}.tile.ok .value{color:#188038}
table{border-collapse:collapse;width:100%;font-size:13px}
th,td{text-align:left;padding:6px 8px;border-bottom:1px solid #eceff1;vertical-align:top}
th{color:var(--muted);font-weight:600;font-size:12px;letter-spacing:.02em}
td.num,th.num{text-align:right;font-variant-numeric:tabular-nums}
.sev{display:inline-block;border-radius:10px;padding:0 8px;font-size:11px;font-weight:600;
color:#fff;white-space:nowrap}
.sev.error{background:#c5221f}.sev.warning{background:#e8710a}.sev.info{background:#1a73e8}
.legend{display:flex;flex-wrap:wrap;gap:6px 18px;margin-top:10px;font-size:13px}
.legend span.swatch{display:inline-block;width:11px;height:11px;border-radius:2px;margin-right:6px;
vertical-align:-1px}
.two{display:grid;grid-template-columns:1fr 1fr;gap:18px}
@media (max-width:860px){.two{grid-template-columns:1fr}}
.visits .head,.visits summary{display:grid;grid-template-columns:minmax(150px,2fr) 88px 72px
64px minmax(100px,1fr) minmax(90px,.9fr) 118px minmax(150px,1.3fr);gap:12px;align-items:center;
padding:7px 8px}
.visits .head{color:var(--muted);font-size:12px;font-weight:600;
border-bottom:1px solid var(--line)}
.visits .head span,.visits summary>span{min-width:0}
.visits details{border-bottom:1px solid #eceff1}
.visits summary{cursor:pointer;list-style:none}
.visits summary::-webkit-details-marker{display:none}
.visits summary:hover{background:var(--soft)}
.visits details[open] summary{background:#e8f0fe}
.visits .body{padding:10px 12px 16px;background:var(--soft)}
.visits .body svg.timeline{background:#fff;border:1px solid var(--line);border-radius:6px;
max-width:100%;height:auto}
.ref{font-family:ui-monospace,SFMono-Regular,Menlo,monospace;font-size:12px;overflow-wrap:anywhere}
.pid{font-family:ui-monospace,SFMono-Regular,Menlo,monospace;font-size:12px;white-space:nowrap;
overflow:hidden;text-overflow:ellipsis}
.chip{display:inline-block;font-family:ui-monospace,SFMono-Regular,Menlo,monospace;font-size:11px;
border-radius:4px;padding:0 5px;margin:1px 3px 1px 0;white-space:nowrap;border:1px solid}
.chip.error{color:#c5221f;border-color:#f1b5b1;background:#fce8e6}
.chip.warning{color:#b55b00;border-color:#f7cfa3;background:#fef3e5}
.chip.info{color:#1967d2;border-color:#aecbfa;background:#e8f0fe}
.hbar td{vertical-align:middle}
.hbar .track{background:#f1f3f4;border-radius:3px;height:14px;min-width:60px}
.hbar .fill{height:14px;border-radius:3px}
.over{color:#c5221f;font-weight:600}.under{color:#1967d2;font-weight:600}
a{color:var(--accent)}
.rule{font-family:ui-monospace,SFMono-Regular,Menlo,monospace;font-size:12px;white-space:nowrap}
.badges .sev{margin:1px 3px 1px 0}
.pair{font-size:12px;font-weight:600}
.ok{color:#188038}.bad{color:#c5221f}
footer{color:var(--muted);font-size:12px;text-align:center;margin-top:24px}
@media print{body{background:#fff}section,.tile{break-inside:avoid}}
"""


def _e(value: object) -> str:
    return escape(str(value), quote=True)


def _n(value: int) -> str:
    return f"{value:,}"


def _pct(part: int, whole: int) -> str:
    return f"{part / whole:.1%}" if whole else "–"


def _tile(label: str, value: str, sub: str = "", css: str = "") -> str:
    return (
        f'<div class="tile {css}"><div class="label">{_e(label)}</div>'
        f'<div class="value">{_e(value)}</div><div class="sub">{_e(sub)}</div></div>'
    )


def _meaning(rule: str) -> tuple[str, str]:
    try:
        entry = CATALOGUE[RuleId(rule)]
    except ValueError:
        return "info", ""
    return entry.severity.value, entry.meaning


def _engine_text(run: Mapping[str, Any]) -> str:
    """Which engine ran the audit: local processes, or a Dask cluster (issue 19)."""
    if run.get("engine") == "dask":
        shipped = ", shard data sent to them" if run.get("storage") == "shipped" else ""
        return (
            f"on Dask at {run.get('scheduler', '?')} ({run.get('workers', '?')} worker(s), "
            f"{run['jobs']} thread(s){shipped})"
        )
    return f"with {run['jobs']} local process(es)"


def _header(summary: Mapping[str, Any]) -> str:
    rules = summary["rules"]
    inputs = summary["inputs"]
    run = summary["run"]
    pseudo = " · patients pseudonymized" if summary.get("patients_pseudonymized") else ""
    # issue 15: every table loaded, each by its label (CMS file and first date, or the built-in
    # excerpt said to be no CMS table); an older summary names only the PTP version
    tables = [t["label"] for t in rules.get("tables", ())] or [
        f"NCCI PTP table {rules['ptp_version']}"
    ]
    mue = any(t.get("kind") == "mue" for t in rules.get("tables", ()))
    return (
        '<header class="top"><div class="inner"><h1>Therapy billing audit</h1>'
        f'<p class="lede">{_e(_payer_text(rules))} · '
        f"97140/97530 pair rule: {_e(rules['pair_rule'])}{_e(pseudo)}</p>"
        f'<p class="run">Tables: {_e("; ".join(tables))}'
        f"{'' if mue else ' · no MUE table loaded: E-MUE-EXCEEDED not checked'}</p>"
        f'<p class="run">{_n(inputs["document_files"])} document file(s), '
        f"{_n(inputs['export_files'])} export file(s) · started {_e(run['started'])} · "
        f"{_e(run['seconds'])} s {_e(_engine_text(run))}</p>"
        f'<p class="run">Beside this page: {_links()}</p></div></header>'
    )


def _totals(summary: Mapping[str, Any]) -> str:
    t = summary["totals"]
    r = summary["reconciliation"]
    visits = t["visits"]
    balanced = "balanced" if r["balanced"] else f"{_n(r['unaccounted'])} unaccounted"
    return (
        '<div class="tiles">'
        + _tile("Visits", _n(visits), f"{_n(t['patients'])} patients")
        + _tile(
            "Visits with findings",
            _n(t["visits_with_findings"]),
            f"{_pct(t['visits_with_findings'], visits)} of visits",
        )
        + _tile(
            "Visits with errors",
            _n(t["visits_with_errors"]),
            f"{_pct(t['visits_with_errors'], visits)} of visits",
            "error" if t["visits_with_errors"] else "ok",
        )
        + _tile(
            "Findings",
            _n(t["findings"]),
            f"{_n(t['errors'])} errors · {_n(t['warnings'])} warnings · {_n(t['infos'])} info",
        )
        + _tile("Timed minutes", _n(t["timed_minutes"]), f"{_n(t['units_allowed'])} units allowed")
        + _tile(
            "Resources read",
            _n(r["resources_read"]),
            f"{_n(r['rejected'])} rejected · {balanced}",
            "error" if not r["balanced"] else "",
        )
        + "</div>"
    )


def _findings_by_rule(summary: Mapping[str, Any]) -> str:
    by_rule: Mapping[str, int] = summary["findings_by_rule"]
    not_on_visit: Mapping[str, int] = summary["findings_not_on_a_visit_by_rule"]
    top = max(by_rule.values(), default=0) or 1
    rows = []
    for rule, count in by_rule.items():
        severity, meaning = _meaning(rule)
        colour = SEVERITY_COLOUR.get(severity, "#5f6368")
        share = max(1.0, 100 * count / top)
        rows.append(
            f'<tr><td>{_e(_sentence(meaning) or rule)} <span class="chip {_e(severity)}">'
            f"{_e(rule)}</span></td>"
            f'<td style="width:32%"><div class="track"><div class="fill" style="width:'
            f'{share:.1f}%;background:{colour}" title="{_e(rule)}: {_n(count)}"></div></div></td>'
            f'<td class="num">{_n(count)}</td>'
            f'<td class="num">{_n(not_on_visit.get(rule, 0))}</td></tr>'
        )
    legend = "".join(
        f'<span><span class="swatch" style="background:{c}"></span>{_e(s)}</span>'
        for s, c in SEVERITY_COLOUR.items()
    )
    table = (
        '<table class="hbar"><thead><tr><th>finding (rule id)</th><th></th>'
        '<th class="num">findings</th><th class="num">not on a visit</th></tr></thead><tbody>'
        + "".join(rows)
        + "</tbody></table>"
        if rows
        else '<p class="hint">No finding.</p>'
    )
    return (
        '<section id="findings-by-rule"><h2>Findings by rule</h2>'
        '<p class="hint">Every finding of every visit, and those not tied to a visit (services '
        "set aside for their status or a missing date, charges no visit supports), most "
        "frequent first; each line says what the finding means, its rule id beside it.</p>"
        + table
        + f'<div class="legend">{legend}</div></section>'
    )


def _sentence(meaning: str) -> str:
    """A catalogue meaning as a label: its first letter capitalised."""
    return meaning[:1].upper() + meaning[1:]


def _pair(summary: Mapping[str, Any]) -> str:
    pair: Mapping[str, int] = summary["pair_status"]
    total = sum(pair.values())
    order = ("SUPPORTED", "NOT_SUPPORTED", "INDETERMINATE", "NOT_APPLICABLE")
    segments = [Bar(s, pair.get(s, 0), PAIR_COLOUR[s]) for s in order]
    rows = "".join(
        f'<tr><td><span class="swatch" style="display:inline-block;width:11px;height:11px;'
        f'border-radius:2px;margin-right:6px;background:{PAIR_COLOUR[s]}"></span>{_e(s)}</td>'
        f'<td class="num">{_n(pair.get(s, 0))}</td><td class="num">{_pct(pair.get(s, 0), total)}'
        f"</td><td>{_e(PAIR_MEANING[s])}</td></tr>"
        for s in order
    )
    both = total - pair.get("NOT_APPLICABLE", 0)
    return (
        '<section id="pair-status"><h2>97140 + 97530 pair status</h2>'
        f'<p class="hint">{_n(both)} visit(s) have both manual therapy (97140) and therapeutic '
        f"activities (97530) in play: {_n(pair.get('NOT_SUPPORTED', 0))} would be denied as "
        f"documented (NCCI edit, rule book I-4) and {_n(pair.get('INDETERMINATE', 0))} cannot "
        "be judged for missing times.</p>"
        + stacked_bar(segments)
        + '<table style="margin-top:10px"><thead><tr><th>status</th><th class="num">visits</th>'
        '<th class="num">share</th><th>meaning</th></tr></thead><tbody>'
        + rows
        + "</tbody></table></section>"
    )


def _by_month(summary: Mapping[str, Any]) -> str:
    months: Mapping[str, Mapping[str, int]] = summary["by_month"]
    labels = list(months)
    chart = trend_chart(
        labels,
        [
            Series("visits", [m["visits"] for m in months.values()], "#dadce0", "column"),
            Series(
                "visits with findings",
                [m["visits_with_findings"] for m in months.values()],
                "#e8710a",
            ),
            Series(
                "visits with errors", [m["visits_with_errors"] for m in months.values()], "#c5221f"
            ),
        ],
    )
    rows = "".join(
        f'<tr><td>{_e(month)}</td><td class="num">{_n(m["visits"])}</td>'
        f'<td class="num">{_n(m["visits_with_findings"])}</td>'
        f'<td class="num">{_pct(m["visits_with_findings"], m["visits"])}</td>'
        f'<td class="num">{_n(m["errors"])}</td><td class="num">{_n(m["warnings"])}</td>'
        f'<td class="num">{_n(m["infos"])}</td></tr>'
        for month, m in months.items()
    )
    return (
        '<section id="by-month"><h2>Findings by month</h2>'
        '<p class="hint">By date of service. A rising share of visits with findings is the '
        "trend to act on.</p>"
        + chart
        + '<details style="margin-top:12px"><summary>Month by month</summary><table><thead><tr>'
        '<th>month</th><th class="num">visits</th><th class="num">with findings</th>'
        '<th class="num">share</th><th class="num">errors</th><th class="num">warnings</th>'
        '<th class="num">info</th></tr></thead><tbody>'
        + rows
        + "</tbody></table></details></section>"
    )


def _units(summary: Mapping[str, Any]) -> str:
    codes: Mapping[str, Mapping[str, int]] = summary["units_by_code"]
    ordered = sorted(codes.items(), key=lambda kv: (-kv[1]["units"], kv[0]))
    bars = []
    rows = []
    for code, c in ordered:
        info = code_info(code)
        descriptor = info.descriptor if info else ""
        short = descriptor.split(",")[0].split("(")[0].strip()[:30]
        bars.append(Bar(f"{short} ({code})" if short else code, c["units"], "#1a73e8", descriptor))
        rows.append(
            f'<tr><td class="ref">{_e(code)}</td><td>{_e(descriptor)}</td>'
            f'<td class="num">{_n(c["visits"])}</td><td class="num">{_n(c["documented_minutes"])}'
            f'</td><td class="num">{_n(c["counted_minutes"])}</td>'
            f'<td class="num">{_n(c["units"])}</td></tr>'
        )
    return (
        '<section id="units-by-code"><h2>Units by code</h2>'
        '<p class="hint">Timed units the documentation supports under the payer rule, per code. '
        "Counted minutes are documented minutes after overlaps are attributed to one code.</p>"
        + bar_chart(bars, label_width=280, css="units-by-code")
        + '<table style="margin-top:10px"><thead><tr><th>code</th><th>descriptor</th>'
        '<th class="num">visits</th><th class="num">documented min</th>'
        '<th class="num">counted min</th><th class="num">units</th></tr></thead><tbody>'
        + "".join(rows)
        + "</tbody></table></section>"
    )


def _count_cell(value: int, css: str) -> str:
    """A number cell, coloured (over red, under blue) only when it is not zero."""
    return f'<td class="num {css if value else ""}">{_n(value)}</td>'


def _billing(summary: Mapping[str, Any]) -> str:
    by_rule: Mapping[str, Mapping[str, int]] = summary["billing_by_payer_rule"]
    months: Mapping[str, Mapping[str, int]] = summary["by_month"]
    rows = "".join(
        f"<tr><td>{_e(PAYER_RULE_NAME.get(rule, rule))}</td>"
        f'<td class="num">{_n(b["visits_with_charges"])}</td>'
        f'<td class="num">{_n(b["visits_without_charges"])}</td>'
        f'<td class="num">{_n(b["units_billed"])}</td><td class="num">{_n(b["units_allowed"])}</td>'
        f"{_count_cell(b['units_over_billed'], 'over')}"
        f'<td class="num">{_n(b["visits_over_billed"])}</td>'
        f"{_count_cell(b['units_under_billed'], 'under')}"
        f'<td class="num">{_n(b["visits_under_billed"])}</td></tr>'
        for rule, b in by_rule.items()
    )
    chart = trend_chart(
        list(months),
        [
            Series(
                "units over-billed", [m["units_over_billed"] for m in months.values()], "#c5221f"
            ),
            Series(
                "units under-billed", [m["units_under_billed"] for m in months.values()], "#1a73e8"
            ),
        ],
    )
    month_rows = "".join(
        f'<tr><td>{_e(month)}</td><td class="num">{_n(m["visits"])}</td>'
        f'<td class="num">{_n(m["visits_without_charges"])}</td>'
        f"{_count_cell(m['units_over_billed'], 'over')}"
        f"{_count_cell(m['units_under_billed'], 'under')}</tr>"
        for month, m in months.items()
    )
    return (
        '<section id="billed-vs-allowed"><h2>Billed beside allowed</h2>'
        '<p class="hint">Per visit and timed code, the units billed (charges: ServiceRequests, '
        "Claim or EOB items, billed-units extensions) beside the units the documented minutes "
        "allow under the payer rule. Over-billed: billed above allowed, a repayment risk; "
        "under-billed: documented time not billed. Visits without any charge line are counted "
        "apart and not compared. Per visit in "
        '<a href="visits.csv">visits.csv</a> (units_billed, units_over_billed, '
        "units_under_billed).</p>"
        '<table><thead><tr><th>payer rule</th><th class="num">visits with charges</th>'
        '<th class="num">without charges</th><th class="num">units billed</th>'
        '<th class="num">units allowed</th><th class="num">units over-billed</th>'
        '<th class="num">visits over</th><th class="num">units under-billed</th>'
        '<th class="num">visits under</th></tr></thead><tbody>'
        + rows
        + "</tbody></table>"
        + f'<div style="margin-top:14px">{chart}</div>'
        + '<details style="margin-top:12px"><summary>Month by month</summary><table><thead>'
        '<tr><th>month</th><th class="num">visits</th><th class="num">without charges</th>'
        '<th class="num">units over-billed</th><th class="num">units under-billed</th></tr>'
        "</thead><tbody>" + month_rows + "</tbody></table></details></section>"
    )


def _name_cell(name: str, key: str) -> str:
    if name:
        return _e(name)
    if key == NOT_RECORDED:
        return '<span class="hint">none named in the input</span>'
    return '<span class="hint">no name in the input</span>'


#: Rows shown in the by-practitioner and by-site tables (all of them are in summary.json).
PARTY_ROWS = 50


def _parties(summary: Mapping[str, Any], member: str, title: str, what: str, hint: str) -> str:
    table: Mapping[str, Mapping[str, Any]] = summary[member]
    shown = list(table.items())[:PARTY_ROWS]
    rows = "".join(
        f"<tr><td>{_name_cell(row['name'], key)}</td>"
        f'<td class="ref">{_e(key)}</td><td class="num">{_n(row["visits"])}</td>'
        f'<td class="num">{_n(row["findings"])}</td><td class="num">{_n(row["errors"])}</td>'
        f'<td class="num">{_n(row["warnings"])}</td>'
        f"{_count_cell(row['units_over_billed'], 'over')}"
        f"{_count_cell(row['units_under_billed'], 'under')}</tr>"
        for key, row in shown
    )
    more = (
        f" The {_n(len(shown))} with the most findings of {_n(len(table))}; all are in "
        '<a href="summary.json">summary.json</a>.'
        if len(table) > len(shown)
        else ""
    )
    return (
        f'<section id="{_e(member.replace("_", "-"))}"><h2>{_e(title)}</h2>'
        f'<p class="hint">{hint}{more}</p>'
        f"<table><thead><tr><th>{_e(what)}</th><th>reference</th>"
        '<th class="num">visits</th><th class="num">findings</th><th class="num">errors</th>'
        '<th class="num">warnings</th><th class="num">units over-billed</th>'
        '<th class="num">units under-billed</th></tr></thead><tbody>'
        + (rows or '<tr><td colspan="8">No visit.</td></tr>')
        + "</tbody></table></section>"
    )


def _reconciliation(summary: Mapping[str, Any], rejected_sample: Sequence[Sequence[str]]) -> str:
    r = summary["reconciliation"]
    status = (
        '<span class="ok">balanced</span>'
        if r["balanced"]
        else f'<span class="bad">{_n(r["unaccounted"])} unaccounted</span>'
    )
    lines = [
        ("Resources read", r["resources_read"]),
        ("used by the rules", r["used"]),
        ("out of scope", r["out_of_scope"]),
        ("identical duplicates", r["duplicates"]),
        ("rejected (listed in rejected.csv)", r["rejected"]),
    ]
    main_rows = "".join(
        f'<tr><td>{_e(label)}</td><td class="num">{_n(value)}</td></tr>' for label, value in lines
    )
    scope = ", ".join(f"{_e(k)} {_n(v)}" for k, v in r["out_of_scope_by_type"].items()) or "none"
    reasons = ", ".join(f"{_e(k)} {_n(v)}" for k, v in r["rejected_by_reason"].items()) or "none"
    css = ("rule", "rule", "ref", "rule", "ref", "")
    sample = "".join(
        "<tr>"
        + "".join(f'<td class="{c}">{_e(v)}</td>' for c, v in zip(css, row, strict=False))
        + "</tr>"
        for row in rejected_sample
    )

    sample_table = (
        '<details style="margin-top:12px"><summary>First rows of rejected.csv</summary>'
        "<table><thead><tr><th>kind</th><th>code</th><th>source</th><th>location</th>"
        "<th>resource</th><th>reason</th></tr></thead><tbody>"
        + sample
        + "</tbody></table></details>"
        if rejected_sample
        else ""
    )
    return (
        '<section id="reconciliation"><h2>What was read</h2>'
        f'<p class="hint">Every resource read is used, out of scope, a duplicate or rejected: '
        f"{status}. {_n(r['files_read'])} file(s) read, {_n(r['files_rejected'])} file(s) "
        f"rejected, {_n(r['bulk_manifests'])} Bulk Data manifest(s) noted; "
        f"{_n(r['values_not_used'])} value(s) inside used resources could not be read (also in "
        "rejected.csv, kind <i>value</i>).</p>"
        '<div class="two"><table><tbody>'
        + main_rows
        + f"</tbody></table><div><p><b>Out of scope</b>: {scope}</p><p><b>Rejected</b>: "
        f"{reasons}</p></div></div>" + sample_table + "</section>"
    )


def _billed_cell(visit: ReportVisit) -> str:
    if visit.over_billed is None or visit.under_billed is None:
        return '<span class="hint" title="no charge line was read for this visit">no charges</span>'
    parts = []
    if visit.over_billed:
        parts.append(f'<span class="over">+{_n(visit.over_billed)} over</span>')
    if visit.under_billed:
        parts.append(f'<span class="under">−{_n(visit.under_billed)} under</span>')
    shown = " ".join(parts) or "as allowed"
    return f'<span title="billed {_e(visit.billed.replace(";", " "))}">{shown}</span>'


def _visit(index: int, visit: ReportVisit) -> str:
    severity_of: dict[str, str] = {}
    for finding in visit.findings:
        severity_of.setdefault(finding[0], finding[1])
    chips = "".join(
        f'<span class="chip {_e(sev)}" title="{_e(_sentence(_meaning(rule)[1]))}">{_e(rule)}</span>'
        for rule, sev in sorted(
            severity_of.items(),
            key=lambda kv: (
                ("error", "warning", "info").index(kv[1])
                if kv[1] in ("error", "warning", "info")
                else 3,
                kv[0],
            ),
        )
    )
    pair_css = {"SUPPORTED": "ok", "NOT_SUPPORTED": "bad"}.get(visit.pair, "")
    findings = "".join(
        f'<tr><td><span class="sev {_e(f[1])}">{_e(f[1])}</span></td><td class="rule" '
        f'title="{_e(_sentence(_meaning(f[0])[1]))}">{_e(f[0])}</td><td>{_e(f[4])}</td>'
        f'<td class="ref">{_e(f[3])}</td></tr>'
        for f in visit.findings
    )
    timeline = visit.svg or "<p>No timeline for this visit.</p>"
    zone = (
        f'<p class="hint">Clock times in {_e(visit.zone)}, the offset the visit was recorded '
        "in (as the sandbox shows it).</p>"
        if visit.svg and visit.zone
        else ""
    )
    billed = (
        f'<p class="hint">Units billed: {_e(visit.billed.replace(";", " ")) or "none"} · '
        f"allowed: {_e(visit.units.replace(';', ' ')) or 'none'}</p>"
        if visit.over_billed is not None
        else '<p class="hint">No charge line was read for this visit: billed units not '
        "compared.</p>"
    )
    source = f'<p class="hint ref">Source: {_e(visit.source)}</p>' if visit.source else ""
    return (
        f'<details class="visit" id="visit-{index}"><summary>'
        f'<span class="pid" title="{_e(visit.patient)}">{_e(visit.patient)}</span>'
        f"<span>{_e(visit.date)}</span>"
        f"<span>{_e(visit.discipline)}</span><span>{_n(visit.total_timed_minutes)} min</span>"
        f'<span class="ref">{_e(visit.units.replace(";", " "))}</span>'
        f"<span>{_billed_cell(visit)}</span>"
        f'<span class="pair {pair_css}">{_e(visit.pair)}</span>'
        f'<span class="badges">{chips}</span></summary>'
        f'<div class="body">{zone}{timeline}{billed}'
        '<table style="margin-top:10px"><thead><tr><th>severity</th><th>rule</th><th>finding</th>'
        f"<th>resources</th></tr></thead><tbody>{findings}</tbody></table>{source}</div></details>"
    )


def _visits(summary: Mapping[str, Any], visits: Sequence[ReportVisit]) -> str:
    total = summary["totals"]["visits_with_findings"]
    shown = len(visits)
    note = (
        f"All {_n(total)} visits with findings, most serious first."
        if shown >= total
        else f"The {_n(shown)} most serious of {_n(total)} visits with findings; all of them are "
        'in <a href="visits.csv">visits.csv</a> and <a href="findings.csv">findings.csv</a>.'
    )
    body = "".join(_visit(i, v) for i, v in enumerate(visits, start=1))
    return (
        '<section id="visits" class="visits"><h2>Visits with findings</h2>'
        f'<p class="hint">{note} The rules each visit hit are listed (point at one for its '
        "meaning). Open a visit to see its timeline, in the clock the visit was recorded in: "
        "one lane per code, overlaps in red.</p>"
        '<div class="head"><span>patient</span><span>date</span><span>discipline</span>'
        "<span>minutes</span><span>units allowed</span><span>billed</span><span>pair</span>"
        "<span>rules hit</span></div>"
        + (body or '<p class="hint">No visit has a finding.</p>')
        + "</section>"
    )


_OUTPUT_LINKS = (
    ("visits.csv", "one row per visit"),
    ("findings.csv", "one row per finding"),
    ("rejected.csv", "what could not be read"),
    ("summary.json", "every number on this page"),
)


def _links() -> str:
    return " · ".join(
        f'<a href="{name}" title="{_e(what)}">{name}</a>' for name, what in _OUTPUT_LINKS
    )


def render_report(
    summary: Mapping[str, Any],
    visits: Sequence[ReportVisit],
    rejected_sample: Sequence[Sequence[str]] = (),
) -> str:
    """The whole page as one string."""
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        '<meta name="robots" content="noindex">'
        "<title>Therapy billing audit</title>"
        f"<style>{_CSS}</style></head><body>"
        + _header(summary)
        + "<main>"
        + _totals(summary)
        + _findings_by_rule(summary)
        + _pair(summary)
        + _by_month(summary)
        + _billing(summary)
        + _units(summary)
        + _parties(
            summary,
            "by_practitioner",
            "By practitioner",
            "practitioner",
            "The therapists who performed each visit's services (Procedure.performer: "
            "Practitioner or PractitionerRole); a visit with two counts under both. "
            f"{_e(NOT_RECORDED)}: no performer recorded.",
        )
        + _parties(
            summary,
            "by_site",
            "By site",
            "site",
            "Where each visit took place: the Procedure's location, else the Encounter's "
            f"location, else its service provider. {_e(NOT_RECORDED)}: none recorded.",
        )
        + _visits(summary, visits)
        + _reconciliation(summary, rejected_sample)
        + "<footer>therapy-cds audit · the same rules as <code>therapy-cds check</code> · "
        + _links()
        + " sit beside this page</footer>"
        + "</main></body></html>\n"
    )


def write_report(
    path: Path,
    summary: Mapping[str, Any],
    visits: Sequence[ReportVisit],
    rejected_sample: Sequence[Sequence[str]] = (),
) -> None:
    path.write_text(render_report(summary, visits, rejected_sample), encoding="utf-8")
