"""report.html in headless Chromium: it opens from disk with no network, shows its charts, and a
visit opens onto its timeline. Screenshots go to tests/artifacts/ (git-ignored)."""

from __future__ import annotations

import itertools
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from audit_support import ARTIFACTS, SAMPLES, audit, generate

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(
        not CHROMIUM.exists() and shutil.which("chromium") is None,
        reason="needs Debian's chromium (/usr/bin/chromium)",
    ),
]


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("browser")
    export, _ = generate(600, base, seed=3)
    out = base / "out"
    result = audit(str(export), str(SAMPLES), "--out", str(out), "--jobs", "2", "-q")
    assert result.exit_code == 0, result.output
    return out / "report.html"


@pytest.fixture(scope="module")
def page(report: Path) -> Iterator[Any]:
    sync_api = pytest.importorskip("playwright.sync_api")
    executable = str(CHROMIUM) if CHROMIUM.exists() else shutil.which("chromium")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_FLAGS)
        context = browser.new_context(viewport={"width": 1280, "height": 900})
        tab = context.new_page()
        requests: list[str] = []
        tab.on("request", lambda request: requests.append(request.url))
        tab.goto(report.as_uri())
        tab.wait_for_load_state("load")
        tab.requests = requests  # type: ignore[attr-defined]
        yield tab
        browser.close()


def test_the_report_needs_nothing_but_itself(page: Any, report: Path) -> None:
    assert page.requests == [report.as_uri()]
    assert page.title() == "Therapy billing audit"


def test_the_charts_are_drawn(page: Any) -> None:
    rule_bars = page.locator("#findings-by-rule .fill")
    assert rule_bars.count() >= 5
    assert rule_bars.first.bounding_box()["width"] > 20
    assert page.locator("svg.stacked rect.segment").count() >= 3
    assert page.locator("#by-month svg.trend rect.column").count() >= 12
    assert page.locator("#by-month svg.trend polyline.line").count() == 2
    assert page.locator("#billed-vs-allowed svg.trend polyline.line").count() == 2
    assert page.locator("svg.units-by-code g.bar-row").count() >= 5
    for section in (
        "findings-by-rule",
        "pair-status",
        "by-month",
        "billed-vs-allowed",
        "units-by-code",
        "by-practitioner",
        "by-site",
    ):
        assert page.locator(f"#{section}").is_visible()
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "audit-report.png"), full_page=False)
    page.locator("#by-month").screenshot(path=str(ARTIFACTS / "audit-report-trend.png"))


def test_visit_list_headers_stand_apart_and_patient_ids_keep_one_line(page: Any) -> None:
    boxes = [
        page.locator(".visits .head span").nth(i).bounding_box()
        for i in range(page.locator(".visits .head span").count())
    ]
    assert len(boxes) == 8
    for left, right in itertools.pairwise(boxes):
        assert left["x"] + left["width"] < right["x"], (left, right)  # a gap between headers
    texts = page.locator(".visits .head span").all_inner_texts()
    widths = page.evaluate(
        "() => [...document.querySelectorAll('.visits .head span')]"
        ".map(e => [e.scrollWidth, e.clientWidth])"
    )
    assert all(scroll <= client for scroll, client in widths), (texts, widths)
    line = page.locator(".visits summary .sev, .visits summary .chip").first.bounding_box()
    for pid in page.locator(".visits summary .pid").all()[:10]:
        assert pid.bounding_box()["height"] <= line["height"] * 1.6  # one line, never wrapped


def test_a_visit_opens_onto_its_timeline(page: Any) -> None:
    first = page.locator("details.visit").first
    timeline = first.locator("svg.timeline")
    assert not timeline.is_visible()
    first.locator("summary").click()
    timeline.wait_for(state="visible")
    assert timeline.locator("g.lane").count() >= 1
    assert timeline.locator("rect.bar").count() >= 1
    assert first.locator("td.rule").count() >= 1
    first.scroll_into_view_if_needed()
    first.screenshot(path=str(ARTIFACTS / "audit-report-visit.png"))
