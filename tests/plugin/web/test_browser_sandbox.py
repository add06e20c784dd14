"""/sandbox in real headless Chromium against a live service on loopback (dev mode, temp SQLite).

Fires hooks on sample bundles and checks the cards (by topic code) and the timeline bars (by
``data-ref``); accepting a suggestion and dismissing a card with a reason store feedback.
Screenshots go to ``tests/artifacts/``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from web_support import (
    LiveServer,
    chromium_context,
    dev_settings,
    free_port,
    needs_chromium,
    screenshot,
)

from plugin.app import create_app

pytestmark = [pytest.mark.browser, needs_chromium]


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LiveServer, FastAPI]]:
    app = create_app(dev_settings(tmp_path_factory.mktemp("sandbox")))
    with LiveServer(app) as server:
        yield server, app


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with chromium_context() as context:
        yield context


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    page = browser.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    yield page
    page.close()
    assert errors == [], errors


def _fire(page: Any, base: str, scenario: str, policy: str = "problems") -> None:
    """Choose the scenario and the card policy in the page, fire, and wait for the cards (or
    the page saying there are none) and the timeline."""
    page.goto(f"{base}/sandbox")
    page.select_option("#scenario", scenario)
    page.select_option("#card-policy", policy)
    page.wait_for_selector("#bundle-status:has-text('entries')")
    page.click("#fire")
    page.wait_for_selector("body[data-fired]")
    page.wait_for_selector("#cards .card, #cards p.empty")


def _topics(page: Any) -> dict[str, str]:
    cards = page.locator("#cards .card")
    return {
        cards.nth(i).get_attribute("data-topic"): cards.nth(i).get_attribute("data-indicator")
        for i in range(cards.count())
    }


def _bars(page: Any) -> set[str]:
    bars = page.locator("#timeline svg rect.bar")
    return {bars.nth(i).get_attribute("data-ref") for i in range(bars.count())}


def test_firing_a_hook_shows_the_cards_and_the_timeline(
    service: tuple[LiveServer, FastAPI], page: Any
) -> None:
    server, _ = service
    _fire(page, server.url, "overlapping-time-blocks.json")
    topics = _topics(page)
    # one problem, one card (the overlap warning listed in it); no summary by default
    assert topics == {"E-PAIR-SAME-TIMEBLOCK": "critical"}
    assert _bars(page) == {"Procedure/proc-dario-overlap-1", "Procedure/proc-dario-overlap-2"}
    assert page.locator("#timeline svg rect.bar.overlapped").count() == 2
    assert page.locator("#timeline svg rect.overlap").count() == 1
    # Detail Markdown rendered as HTML: the minutes table and the bold totals.
    critical = page.locator('.card[data-topic="E-PAIR-SAME-TIMEBLOCK"]')
    assert critical.locator(".card-detail table tbody tr").count() == 2
    assert critical.locator(".card-detail strong").nth(1).inner_text() == "35"  # after W-OVERLAP
    assert "W-OVERLAP" in critical.locator(".card-detail").inner_text()
    assert critical.locator(".override-reason option").count() == 3  # placeholder + 2 reasons
    page.click("#exchange summary")
    request = json.loads(page.inner_text("#request-json"))
    assert request["hook"] == "order-sign"
    # a sample selects "From the patient's coverage": no payerRule travels
    assert request["extension"]["io.github.therapy-cds"] == {
        "pairRule": "cms",
        "cardPolicy": "problems",
    }
    assert json.loads(page.inner_text("#response-json"))["cards"]
    screenshot(page, "sandbox-overlapping-time-blocks.png")


def _critical_with_suggestion(page: Any) -> Any:
    """The first critical card on the page that offers a suggestion (whatever its rule)."""
    card = page.locator('#cards .card[data-indicator="critical"]:has(button.suggestion)').first
    assert card.count() == 1, "no critical card with a suggestion"
    return card


def _response_suggestion(page: Any, card_uuid: str) -> dict[str, Any]:
    """The suggestion of card ``card_uuid`` as the service sent it (the page's response JSON)."""
    response = json.loads(page.text_content("#response-json"))
    (card,) = [c for c in response["cards"] if c["uuid"] == card_uuid]
    suggestion: dict[str, Any] = card["suggestions"][0]
    return suggestion


def _drafts(page: Any) -> dict[str, dict[str, Any]]:
    bundle = json.loads(page.input_value("#bundle"))
    return {
        e["resource"]["id"]: e["resource"]
        for e in bundle["entry"]
        if e["resource"]["resourceType"] == "ServiceRequest" and e["resource"]["status"] == "draft"
    }


def test_accepting_a_suggestion_applies_it_and_the_critical_card_is_gone_after_the_refire(
    service: tuple[LiveServer, FastAPI], page: Any
) -> None:
    server, app = service
    _fire(page, server.url, "pair-no-modifier.json")
    card = _critical_with_suggestion(page)
    topic = card.get_attribute("data-topic")
    card_uuid = card.get_attribute("data-uuid")
    button = card.locator("button.suggestion").first
    suggestion_uuid = button.get_attribute("data-suggestion")
    suggestion = _response_suggestion(page, card_uuid)
    (action,) = suggestion["actions"]
    assert action["type"] == "update"
    target = action["resource"]["id"]
    assert _drafts(page)[target] != action["resource"]

    button.click()
    page.wait_for_selector("body[data-fired='2']")
    # The automatic re-fire answered on the changed bundle: the card's finding is gone.
    assert topic not in _topics(page)
    assert page.locator('#cards .card[data-indicator="critical"]').count() == 0
    # The changed line is shown, and the bundle editor holds the change for the next fire.
    change = page.locator(f'#applied-list li.change[data-ref="ServiceRequest/{target}"]')
    assert page.is_visible("#applied")
    assert change.get_attribute("data-change") == "updated"
    assert "modifier 59 added" in change.inner_text()
    assert page.inner_text("#applied-list > li > strong") == suggestion["label"]
    assert _drafts(page)[target] == action["resource"]
    assert "suggestion applied" in page.inner_text("#bundle-status")
    assert page.inner_text("#fire-status").startswith("Suggestion applied; hook fired")
    # The feedback went to the real store before the change was applied.
    rows = [r for r in app.state.feedback_store.outcomes() if r["card_uuid"] == card_uuid]
    assert len(rows) == 1
    assert rows[0]["outcome"] == "accepted"
    assert rows[0]["service_id"] == "therapy-timed-codes"
    assert json.loads(rows[0]["accepted_suggestions"]) == [suggestion_uuid]
    screenshot(page, "sandbox-suggestion-applied.png")


def test_a_delete_suggestion_removes_the_charge_and_undo_brings_it_back(
    service: tuple[LiveServer, FastAPI], page: Any
) -> None:
    server, _ = service
    _fire(page, server.url, "under-8-minutes.json")
    card = _critical_with_suggestion(page)
    topic = card.get_attribute("data-topic")
    (action,) = _response_suggestion(page, card.get_attribute("data-uuid"))["actions"]
    assert action["type"] == "delete"
    ref = action["resourceId"]
    assert ref.split("/")[-1] in _drafts(page)

    card.locator("button.suggestion").first.click()
    page.wait_for_selector("body[data-fired='2']")
    assert topic not in _topics(page)
    change = page.locator(f'#applied-list li.change[data-ref="{ref}"]')
    assert change.get_attribute("data-change") == "removed"
    assert change.inner_text().startswith("removed ")
    assert ref.split("/")[-1] not in _drafts(page)

    page.click("#undo-applied")
    page.wait_for_selector("body[data-fired='3']")
    assert _topics(page)[topic] == "critical"
    assert ref.split("/")[-1] in _drafts(page)
    assert not page.is_visible("#applied")


def test_cards_from_an_edited_bundle_are_not_applied_and_the_original_comes_back(
    service: tuple[LiveServer, FastAPI], page: Any
) -> None:
    """A suggestion applies to the bundle its cards were computed from: after an edit the page
    refuses it (no feedback, no change) until the hook is fired again; then it applies, and
    "Back to the original bundle" restores the bundle as it was before the first suggestion."""
    server, app = service
    _fire(page, server.url, "billed-units-exceed.json")
    original = page.input_value("#bundle")
    topic = _critical_with_suggestion(page).get_attribute("data-topic")
    stored = app.state.feedback_store.count()
    page.click("#bundle-editor summary")
    edited = original.replace("{", '{"id": "edited", ', 1)
    page.fill("#bundle", edited)
    card = _critical_with_suggestion(page)
    card.locator("button.suggestion").first.click()
    assert "fire again" in card.locator(".card-feedback").inner_text()
    assert app.state.feedback_store.count() == stored
    assert not page.is_visible("#applied")

    page.click("#fire")
    page.wait_for_selector("body[data-fired='2']")
    _critical_with_suggestion(page).locator("button.suggestion").first.click()
    page.wait_for_selector("body[data-fired='3']")
    assert topic not in _topics(page)
    assert app.state.feedback_store.count() == stored + 1
    assert page.locator("#applied-list li.change").count() == 1
    assert "units 2 → 1" in page.inner_text("#applied-list li.change")

    page.click("#restore-original")
    page.wait_for_selector("body[data-fired='4']")
    assert json.loads(page.input_value("#bundle")) == json.loads(edited)
    assert not page.is_visible("#applied")
    assert _topics(page)[topic] == "critical"


def test_dismissing_with_a_reason_stores_an_overridden_outcome(
    service: tuple[LiveServer, FastAPI], page: Any
) -> None:
    server, app = service
    _fire(page, server.url, "no-plan-of-care.json")
    card = page.locator('.card[data-topic="W-NO-PLAN-OF-CARE"]')
    card_uuid = card.get_attribute("data-uuid")
    card.locator("button.dismiss").click()
    card.locator("select.override-reason").select_option(
        label="Current plan of care is on file outside the EHR"
    )
    card.locator("input.override-comment").fill("Signed plan in the referral packet")
    card.locator("button.confirm-dismiss").click()
    page.wait_for_selector('.card[data-topic="W-NO-PLAN-OF-CARE"][data-feedback="overridden"]')
    rows = [r for r in app.state.feedback_store.outcomes() if r["card_uuid"] == card_uuid]
    assert len(rows) == 1
    assert rows[0]["outcome"] == "overridden"
    assert rows[0]["override_reason_code"] == "plan-on-file"
    assert rows[0]["user_comment"] == "Signed plan in the referral packet"
    screenshot(page, "sandbox-dismissed.png")


def test_the_discharge_hook_and_the_ama_rule_from_the_controls(
    service: tuple[LiveServer, FastAPI], page: Any
) -> None:
    server, _ = service
    _fire(page, server.url, "discharge-procedure-extensions.json")
    assert _topics(page) == {}  # a clean visit: nothing to act on, no card
    assert "No cards" in page.inner_text("#cards")
    _fire(page, server.url, "discharge-procedure-extensions.json", policy="summary")
    assert page.is_checked('input[name="hook"][value="encounter-discharge"]')
    assert page.inner_text("#service-id") == "therapy-timed-codes-discharge"
    assert "units-summary" in _topics(page)
    _fire(page, server.url, "cms-vs-ama-24-plus-23.json")
    assert "E-UNITS-EXCEED" in _topics(page)
    page.select_option("#payer-rule", "ama")
    page.click("#fire")
    page.wait_for_selector("body[data-fired='2']")
    assert "E-UNITS-EXCEED" not in _topics(page)


def test_a_pasted_bundle_and_a_broken_one(
    service: tuple[LiveServer, FastAPI], page: Any, tmp_path: Path
) -> None:
    server, _ = service
    page.goto(f"{server.url}/sandbox")
    page.click("#bundle-editor summary")
    page.fill("#bundle", '{"resourceType": "Bundle", "entry": [')
    page.click("#fire")
    page.wait_for_selector("#fire-status.status-error")
    assert "not valid JSON" in page.inner_text("#fire-status")
    upload = tmp_path / "visit.json"
    upload.write_text(
        (
            Path(__file__).resolve().parents[3] / "sample_bundles" / "split-blocks-10-15-5.json"
        ).read_text()
    )
    page.set_input_files("#bundle-file", str(upload))
    page.wait_for_selector("#bundle-status:has-text('visit.json')")
    page.select_option("#card-policy", "summary")  # the visit is clean: ask for its summary
    page.click("#fire")
    page.wait_for_selector("#cards .card")
    assert page.locator("#timeline svg rect.bar").count() == 3


def test_card_markdown_is_escaped_not_executed(
    service: tuple[LiveServer, FastAPI], page: Any
) -> None:
    server, _ = service
    page.goto(f"{server.url}/sandbox")
    markdown = (
        "<img src=x onerror=alert(1)> **bold** `<b>` [ok](https://example.org) "
        "[bad](javascript:alert(1))\n\n"
        "| a | b |\n|---|--:|\n| <i>x</i> | 2 |\n\n- one\n- *two*"
    )
    html = page.evaluate("(text) => window.CardMarkdown.render(text)", markdown)
    assert "<img" not in html
    assert "&lt;img" in html
    assert "<strong>bold</strong>" in html
    assert "<code>&lt;b&gt;</code>" in html
    assert 'href="https://example.org"' in html
    assert "javascript:" not in html.split("[bad]")[0]
    assert 'href="javascript' not in html
    assert '<td class="align-right">2</td>' in html
    assert "&lt;i&gt;x&lt;/i&gt;" in html
    assert "<ul><li>one</li><li><em>two</em></li></ul>" in html


def test_the_rule_catalogue_page(service: tuple[LiveServer, FastAPI], page: Any) -> None:
    server, _ = service
    page.goto(f"{server.url}/rules")
    assert page.locator("article.rule").count() >= 20
    page.click('#E-PAIR-NO-MODIFIER a[href*="pair-no-modifier.json"]')
    page.wait_for_selector('#cards .card[data-topic="E-PAIR-NO-MODIFIER"]')
    page.goto(f"{server.url}/rules")
    screenshot(page, "rules.png")


def test_with_authentication_on_the_page_sends_one_pasted_jwt_per_call(
    browser: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """THERAPY_CDS_SANDBOX=true with client authentication on: no JWT, no cards; a JWT signed
    for the called URL gets them; feedback needs its own."""
    from joserfc.jwk import ECKey, KeySet

    from plugin.cli.invoke import Signer

    issuer = "https://ehr.example.org"
    key = ECKey.generate_key("P-384", parameters={"kid": "k1", "alg": "ES384", "use": "sig"})
    issuers = tmp_path / "issuers.json"
    issuers.write_text(json.dumps([{"iss": issuer, "jwks": KeySet([key]).as_dict(private=False)}]))
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    monkeypatch.setenv("THERAPY_CDS_SANDBOX", "true")
    settings = dev_settings(
        tmp_path,
        require_auth=True,
        dev_mode=False,
        trusted_issuers_file=issuers,
        public_base_url=base,
        session_key="AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=",
    )
    app = create_app(settings)
    signer = Signer(key, "ES384", "k1", issuer)
    service_url = f"{base}/cds-services/therapy-timed-codes"
    with LiveServer(app, port=port):
        page = browser.new_page()
        page.goto(f"{base}/sandbox")
        page.select_option("#scenario", "pair-no-modifier.json")
        page.wait_for_selector("#bundle-status:has-text('entries')")
        page.click("#fire")
        page.wait_for_selector("body[data-fired='1']")
        assert "401" in page.inner_text("#cards")
        assert page.locator("#cards .card").count() == 0

        page.fill("#jwt", signer.token(service_url))
        page.click("#fire")
        page.wait_for_selector("body[data-fired='2']")
        assert "E-PAIR-NO-MODIFIER" in _topics(page)
        assert page.input_value("#jwt") == ""  # used once, then cleared

        card = page.locator('.card[data-topic="E-PAIR-NO-MODIFIER"]')
        card.locator("button.suggestion").click()
        page.wait_for_selector(".card-feedback.error")
        assert app.state.feedback_store.count() == 0
        page.fill("#jwt", signer.token(f"{service_url}/feedback"))
        card.locator("button.suggestion").click()
        page.wait_for_selector('.card[data-feedback="accepted"]')
        assert app.state.feedback_store.count() == 1
        # Applied to the bundle, but the re-fire waits for a fresh JWT for the service.
        page.wait_for_selector("#applied:not([hidden])")
        assert "fresh JWT" in page.inner_text("#fire-status")
        assert page.get_attribute("body", "data-fired") == "2"
        page.fill("#jwt", signer.token(service_url))
        page.click("#fire")
        page.wait_for_selector("body[data-fired='3']")
        assert "E-PAIR-NO-MODIFIER" not in _topics(page)
        screenshot(page, "sandbox-authentication-on.png")
        page.close()
