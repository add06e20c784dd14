"""One rule vocabulary: every entry point that takes a payer rule, a pair rule or a card policy
accepts exactly the enum's values and refuses anything else with the same message (where the
value came from and the accepted values, never the value itself).

Entry points: the settings, the CLI options (check, audit, invoke), the request extension
``io.github.therapy-cds``, the sandbox helpers, the SMART app and the payer mapping file; the
sandbox and SMART forms offer exactly the enum's values."""

from __future__ import annotations

import html
import json
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from fake_ehr import FakeEhr, load_bundle_resources, make_fake_ehr_app
from fastapi import FastAPI
from pydantic import ValidationError
from typer.testing import CliRunner
from web_support import ROOT, dev_settings

from plugin.app import cds_config, create_app
from plugin.cli import app as cli
from plugin.hook_request import build_hook_request
from plugin.rules.payer import PayerMappingError, load_payer_mapping
from plugin.rules.vocabulary import (
    CHOICES,
    FROM_COVERAGE,
    CardPolicy,
    PairRule,
    PayerRule,
    Vocabulary,
    VocabularyError,
    allowed_text,
    parse,
    parse_payer_choice,
)
from plugin.services import EXTENSION_KEY, ORDER_SIGN_SERVICE
from plugin.settings import Settings
from plugin.web.install import install_web
from plugin.web.settings import WebSettings

SAMPLES = ROOT / "sample_bundles"
SAMPLE = "overlapping-time-blocks.json"
EHR = "http://ehr.test"
#: Planted in refused values: it must never come back in a message.
MARKER = "ZZ-VOCAB-MARKER-4471"
#: Text values no entry point accepts: near misses of real values, and the marker.
BAD_TEXT = ["", "CMS", " cms", "cms ", "Strict", "medicare", "cms,ama", "coverage ", MARKER]
#: Values of other JSON types (request extension, sandbox bodies).
BAD_JSON: list[Any] = [None, 1, True, ["cms"], {"value": "cms"}]
#: The values the product contract fixes (settings table, CLI table, README "Cards").
CONTRACT = {
    PayerRule: ("cms", "ama"),
    PairRule: ("cms", "strict"),
    CardPolicy: ("problems", "summary", "all"),
}
FIELD = {PayerRule: "payer_rule", PairRule: "pair_interval_rule", CardPolicy: "card_policy"}
SELECT_ID = {PayerRule: "payer-rule", PairRule: "pair-rule", CardPolicy: "card-policy"}
KINDS = list(CONTRACT)
runner = CliRunner()


def _message(kind: type[Vocabulary], where: str) -> str:
    return str(VocabularyError(kind, where))


def _flat(text: str) -> str:
    """Text with the CLI's box drawing and line wrapping taken out."""
    return " ".join(re.sub(r"[│╭╮╰╯─]", " ", text).split())


def _bundle(name: str = SAMPLE) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((SAMPLES / name).read_text(encoding="utf-8"))
    return data


# ---------------------------------------------------------------- the vocabulary itself


def test_the_values_are_the_contracts_and_each_is_described() -> None:
    assert set(CHOICES) == set(CONTRACT)
    for kind, values in CONTRACT.items():
        assert tuple(member.value for member in kind) == values
        for member in kind:
            assert member == member.value  # a StrEnum: JSON, CSV and templates see the word
            assert member.label.strip()
            assert member.meaning.strip()
            assert not member.meaning.endswith(".")  # sentences are finished where shown
        assert len({member.label for member in kind}) == len(values)
    assert {c.setting for c in CHOICES.values()} == {
        "THERAPY_CDS_PAYER_RULE",
        "THERAPY_CDS_PAIR_INTERVAL_RULE",
        "THERAPY_CDS_CARD_POLICY",
    }
    assert [c.member for c in CHOICES.values()] == ["payerRule", "pairRule", "cardPolicy"]
    assert [c.option for c in CHOICES.values()] == ["--payer-rule", "--pair-rule", "--card-policy"]


@pytest.mark.parametrize("kind", KINDS)
def test_parse_accepts_exactly_the_values(kind: type[Vocabulary]) -> None:
    for member in kind:
        assert parse(kind, member.value, "here") is member
        assert parse(kind, member, "here") is member
    others = {m.value for k in KINDS for m in k} - {m.value for m in kind}
    for bad in [*BAD_TEXT, *BAD_JSON, *sorted(others)]:
        with pytest.raises(VocabularyError) as caught:
            parse(kind, bad, "here")
        assert str(caught.value) == f"here must be {allowed_text(kind)}"
        assert caught.value.allowed == CONTRACT[kind]
        assert caught.value.where == "here"
        assert MARKER not in str(caught.value)


def test_the_message_lists_values_with_their_labels() -> None:
    assert _message(PayerRule, "THERAPY_CDS_PAYER_RULE") == (
        "THERAPY_CDS_PAYER_RULE must be 'cms' (CMS 8-minute rule) or 'ama' (AMA per-code rule)"
    )
    assert _message(CardPolicy, "x").startswith("x must be 'problems' (Problems only), 'summary'")


def test_the_payer_choice_may_also_be_left_to_the_coverage() -> None:
    assert parse_payer_choice(FROM_COVERAGE, "p") is None
    assert parse_payer_choice("ama", "p") is PayerRule.AMA
    with pytest.raises(VocabularyError) as caught:
        parse_payer_choice(MARKER, "p")
    assert str(caught.value) == (
        "p must be 'coverage' (From the patient's coverage), 'cms' (CMS 8-minute rule)"
        " or 'ama' (AMA per-code rule)"
    )


# ---------------------------------------------------------------- settings


@pytest.mark.parametrize("kind", KINDS)
def test_settings_accept_exactly_the_values(
    monkeypatch: pytest.MonkeyPatch, kind: type[Vocabulary]
) -> None:
    monkeypatch.setenv("THERAPY_CDS_DEV_MODE", "true")
    setting = CHOICES[kind].setting
    for member in kind:
        monkeypatch.setenv(setting, member.value)
        assert getattr(Settings(), FIELD[kind]) is member
    for bad in BAD_TEXT:
        monkeypatch.setenv(setting, bad)
        with pytest.raises(ValidationError) as caught:
            Settings()
        assert _message(kind, setting) in str(caught.value)
        assert MARKER not in str(caught.value)


@pytest.mark.parametrize("kind", KINDS)
def test_a_bad_setting_stops_the_cli_with_the_message_alone(kind: type[Vocabulary]) -> None:
    setting = CHOICES[kind].setting
    result = runner.invoke(cli, ["check", str(SAMPLES / SAMPLE)], env={setting: MARKER})
    assert result.exit_code == 2
    assert result.stderr.strip() == (
        f"therapy-cds check: configuration error: {_message(kind, setting)}"
    )


def test_settings_defaults_are_members() -> None:
    settings = Settings(dev_mode=True)
    assert settings.payer_rule is PayerRule.CMS
    assert settings.pair_interval_rule is PairRule.CMS
    assert settings.card_policy is CardPolicy.PROBLEMS


# ---------------------------------------------------------------- CLI


@pytest.mark.parametrize("kind", [PayerRule, PairRule])
def test_check_accepts_exactly_the_values(kind: type[Vocabulary]) -> None:
    option = CHOICES[kind].option
    path = str(SAMPLES / SAMPLE)
    for member in kind:
        result = runner.invoke(cli, ["check", path, "--format", "json", option, member.value])
        assert result.exit_code == 0, result.output
        (visit,) = json.loads(result.stdout)["visits"]
        if kind is PayerRule:
            assert visit["payer_rule"] == member.value
    for bad in BAD_TEXT:
        result = runner.invoke(cli, ["check", path, option, bad])
        assert result.exit_code == 2, result.output
        assert _message(kind, option) in _flat(result.output)
        assert MARKER not in result.output
        assert "Traceback" not in result.output


@pytest.mark.parametrize(
    ("command", "kind"),
    [("audit", PayerRule), ("audit", PairRule), ("invoke", CardPolicy)],
)
def test_audit_and_invoke_refuse_other_values(
    command: str, kind: type[Vocabulary], tmp_path: Path
) -> None:
    option = CHOICES[kind].option
    args = {
        "audit": ["audit", str(SAMPLES / SAMPLE), "--out", str(tmp_path / "out")],
        "invoke": ["invoke", "http://127.0.0.1:9/", str(SAMPLES / SAMPLE)],
    }[command]
    for bad in ("medicare", MARKER):
        result = runner.invoke(cli, [*args, option, bad])
        assert result.exit_code == 2, result.output
        assert _message(kind, option) in _flat(result.output)
        assert MARKER not in result.output
    assert not (tmp_path / "out").exists()  # refused before any work


@pytest.mark.parametrize("kind", [PayerRule, PairRule])
def test_audit_accepts_the_values(kind: type[Vocabulary], tmp_path: Path) -> None:
    for member in kind:
        out = tmp_path / member.value
        result = runner.invoke(
            cli,
            [
                *("audit", str(SAMPLES / SAMPLE), "--out", str(out), "-q", "-j", "1"),
                *(CHOICES[kind].option, member.value),
            ],
        )
        assert result.exit_code == 0, result.output
        rules = json.loads((out / "summary.json").read_text(encoding="utf-8"))["rules"]
        assert rules["payer_rule" if kind is PayerRule else "pair_rule"] == member.value


# ---------------------------------------------------------------- HTTP entry points


@pytest.fixture
async def client(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(dev_settings(tmp_path))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as c:
        yield c


@pytest.mark.anyio
@pytest.mark.parametrize("kind", KINDS)
async def test_the_request_extension_accepts_exactly_the_values(
    client: httpx.AsyncClient, kind: type[Vocabulary]
) -> None:
    member_name = CHOICES[kind].member
    url = f"/cds-services/{ORDER_SIGN_SERVICE}"
    request = build_hook_request(_bundle(), hook="order-sign")
    for member in kind:
        request["extension"] = {EXTENSION_KEY: {member_name: member.value}}
        answer = await client.post(url, json=request)
        assert answer.status_code == 200, answer.text
    where = f"extension '{EXTENSION_KEY}'.{member_name}"
    for bad in [*BAD_TEXT, *BAD_JSON]:
        request["extension"] = {EXTENSION_KEY: {member_name: bad}}
        answer = await client.post(url, json=request)
        assert answer.status_code == 400, (bad, answer.text)
        assert _message(kind, where) in answer.json()["issue"][0]["diagnostics"]
        assert MARKER not in answer.text


@pytest.mark.anyio
@pytest.mark.parametrize("kind", KINDS)
async def test_the_sandbox_accepts_exactly_the_values(
    client: httpx.AsyncClient, kind: type[Vocabulary]
) -> None:
    member_name = CHOICES[kind].member
    accepted: list[str] = [m.value for m in kind]
    if kind is PayerRule:
        accepted.append(FROM_COVERAGE)
    for value in accepted:
        built = await client.post(
            "/sandbox/api/request", json={"bundle": _bundle(), member_name: value}
        )
        assert built.status_code == 200, built.text
        ours = built.json()["request"]["extension"][EXTENSION_KEY]
        assert ours.get(member_name) == (None if value == FROM_COVERAGE else value)
    also = {FROM_COVERAGE: "From the patient's coverage"} if kind is PayerRule else None
    message = str(VocabularyError(kind, f"'{member_name}'", also=also))
    paths = ["/sandbox/api/request"]
    if kind is not CardPolicy:
        paths.append("/sandbox/api/timeline")
    for path in paths:
        for bad in [*BAD_TEXT, *BAD_JSON]:
            refused = await client.post(path, json={"bundle": _bundle(), member_name: bad})
            assert refused.status_code == 400, (path, bad, refused.text)
            assert refused.json() == {"error": message}


def _options(page: str, select_id: str) -> list[str]:
    """The option values of ``<select id=...>`` in ``page``, in order."""
    select = page.split(f'<select id="{select_id}"', 1)[1].split("</select>", 1)[0]
    return re.findall(r'<option value="([^"]*)"', select)


@pytest.mark.anyio
async def test_the_sandbox_form_offers_exactly_the_values(client: httpx.AsyncClient) -> None:
    page = (await client.get("/sandbox")).text
    assert _options(page, "payer-rule") == [FROM_COVERAGE, *CONTRACT[PayerRule]]
    assert _options(page, "pair-rule") == list(CONTRACT[PairRule])
    assert _options(page, "card-policy") == list(CONTRACT[CardPolicy])
    for kind in KINDS:
        for member in kind:
            assert f"{html.escape(member.label)}</option>" in page


@pytest.mark.anyio
async def test_the_rules_page_and_docs_list_every_choice(client: httpx.AsyncClient) -> None:
    page = html.unescape((await client.get("/rules")).text)
    docs = (ROOT / "docs" / "rules.md").read_text(encoding="utf-8")
    for kind, choice in CHOICES.items():
        for name in (choice.setting, choice.option, choice.member):
            assert f"<code>{name}</code>" in page
            assert f"`{name}`" in docs
        for member in kind:
            assert f"<dt><code>{member.value}</code> {member.label}</dt>" in page
            assert f"| `{member.value}` | {member.label} | {member.meaning} |" in docs


# ---------------------------------------------------------------- SMART app


@asynccontextmanager
async def _smart(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    """An authorized SMART session on the sample's encounter, in a fake EHR."""
    resources = load_bundle_resources(SAMPLE)
    encounter = next(r for r in resources if r["resourceType"] == "Encounter")
    ehr = FakeEhr(
        base=EHR, resources=resources, app_context=json.dumps({"encounter": encounter["id"]})
    )
    ehr_app = make_fake_ehr_app(ehr)
    settings = dev_settings(tmp_path, fhir_server_allowlist=[f"{EHR}/fhir"], log_level="WARNING")
    cds_config(settings)
    app = FastAPI()
    install_web(app, settings, WebSettings(), http_transport=httpx.ASGITransport(app=ehr_app))
    async with (
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://cds.test") as c,
        httpx.AsyncClient(transport=httpx.ASGITransport(app=ehr_app), base_url=EHR) as e,
    ):
        start = await c.get("/smart/launch", params={"iss": f"{EHR}/fhir", "launch": "L"})
        assert start.status_code == 302, start.text
        authorize = await e.get(start.headers["location"])
        back = urlsplit(authorize.headers["location"])
        callback = await c.get(f"{back.path}?{back.query}")
        assert callback.status_code == 303, callback.text
        yield c


@pytest.mark.anyio
async def test_the_smart_app_accepts_exactly_the_values(tmp_path: Path) -> None:
    async with _smart(tmp_path) as client:
        page = await client.get("/smart/app")
        assert page.status_code == 200
        assert _options(page.text, "payer-rule") == [FROM_COVERAGE, *CONTRACT[PayerRule]]
        assert _options(page.text, "pair-rule") == list(CONTRACT[PairRule])
        for kind in (PayerRule, PairRule):
            name = CHOICES[kind].member
            for member in kind:
                shown = await client.get("/smart/app", params={name: member.value})
                assert shown.status_code == 200, shown.text
                assert f'<option value="{member.value}" title=' in shown.text
                chosen = shown.text.split(f'<select id="{SELECT_ID[kind]}"', 1)[1]
                assert re.search(rf'value="{member.value}"[^>]*selected', chosen)
            also = {FROM_COVERAGE: "From the patient's coverage"} if kind is PayerRule else None
            message = str(VocabularyError(kind, f"'{name}'", also=also))
            for bad in BAD_TEXT[1:]:  # an empty payerRule is the coverage's, as before
                refused = await client.get("/smart/app", params={name: bad})
                assert refused.status_code == 400, (name, bad)
                assert message in html.unescape(refused.text)
                assert MARKER not in refused.text


# ---------------------------------------------------------------- payer mapping file


def test_the_payer_mapping_file_accepts_exactly_the_payer_rules(tmp_path: Path) -> None:
    path = tmp_path / "payers.toml"
    for member in PayerRule:
        path.write_text(
            f'[[payer]]\nlabel = "x"\nrule = "{member.value}"\nnames = ["a"]\n', encoding="utf-8"
        )
        (entry,) = load_payer_mapping(path).entries
        assert entry.rule is member
    for bad in [*BAD_TEXT, FROM_COVERAGE]:
        path.write_text(
            f'[[payer]]\nlabel = "x"\nrule = "{bad}"\nnames = ["a"]\n', encoding="utf-8"
        )
        with pytest.raises(PayerMappingError) as caught:
            load_payer_mapping(path)
        assert str(caught.value) == _message(PayerRule, f"{path}, [[payer]] #1: 'rule'")
