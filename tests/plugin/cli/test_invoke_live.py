"""``therapy-cds invoke`` against a live ``therapy-cds serve`` on a loopback port (no mocks).

Two servers are started as subprocesses: one with ``--dev`` (no client authentication) and one
with authentication on (a temporary trusted-issuers file holding a generated ES384 JWK Set, and
``THERAPY_CDS_PUBLIC_BASE_URL`` set to the loopback URL so that the ``aud`` check matches).
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests
from joserfc.jwk import ECKey, KeySet
from typer.testing import CliRunner

from plugin.cli import app

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("plugin.app") is None,
    reason="plugin.app (the service behind `therapy-cds serve`) is not there yet",
)

ROOT = Path(__file__).resolve().parents[3]
BUNDLES = ROOT / "sample_bundles"
MANIFEST = json.loads((BUNDLES / "scenarios.json").read_text(encoding="utf-8"))
ISSUER = "https://ehr.example.org"
STARTUP_SECONDS = 60.0


@dataclass
class LiveServer:
    url: str
    process: subprocess.Popen[bytes]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _start(
    tmp: Path, extra_env: dict[str, str], *args: str, port: int | None = None
) -> Iterator[LiveServer]:
    port = port or _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("THERAPY_CDS_")}
    env["THERAPY_CDS_DATABASE_URL"] = f"sqlite:///{tmp / 'therapy-cds.db'}"
    env.update(extra_env)
    log = tmp / "serve.log"
    with log.open("wb") as sink:
        process = subprocess.Popen(
            [
                sys.executable,
                "-c",
                "from plugin.cli import main; main()",
                "serve",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                *args,
            ],
            cwd=tmp,
            env=env,
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + STARTUP_SECONDS
        while True:
            if process.poll() is not None:
                pytest.fail(f"therapy-cds serve exited early:\n{log.read_text(errors='replace')}")
            try:
                requests.get(f"{url}/cds-services", timeout=1)
                break
            except requests.ConnectionError:
                if time.monotonic() > deadline:
                    pytest.fail(f"therapy-cds serve did not start:\n{log.read_text()}")
                time.sleep(0.1)
        yield LiveServer(url, process)
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


@pytest.fixture(scope="module")
def dev_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    yield from _start(tmp_path_factory.mktemp("serve-dev"), {}, "--dev")


@dataclass
class AuthServer(LiveServer):
    key_file: Path
    kid: str


@pytest.fixture(scope="module")
def auth_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AuthServer]:
    tmp = tmp_path_factory.mktemp("serve-auth")
    kid = "invoke-test-key"
    key = ECKey.generate_key("P-384", parameters={"kid": kid, "alg": "ES384", "use": "sig"})
    key_file = tmp / "client-private.pem"
    key_file.write_bytes(key.as_pem(private=True))
    issuers = tmp / "trusted-issuers.json"
    issuers.write_text(json.dumps([{"iss": ISSUER, "jwks": KeySet([key]).as_dict(private=False)}]))
    # PUBLIC_BASE_URL must name the port before the server starts: pick it first.
    port = _free_port()
    env = {
        "THERAPY_CDS_REQUIRE_AUTH": "true",
        "THERAPY_CDS_TRUSTED_ISSUERS_FILE": str(issuers),
        "THERAPY_CDS_SESSION_KEY": "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=",
        "THERAPY_CDS_PUBLIC_BASE_URL": f"http://127.0.0.1:{port}",
    }
    for server in _start(tmp, env, port=port):
        yield AuthServer(server.url, server.process, key_file, kid)


def _invoke(*args: str) -> Any:
    return CliRunner().invoke(app, ["invoke", *args])


def _cards(result: Any) -> list[dict[str, Any]]:
    assert result.exit_code == 0, result.output
    answer = json.loads(result.stdout)
    cards: list[dict[str, Any]] = answer["cards"]
    return cards


_SAME_CAUSE = re.compile(r"^Same cause: (.*)$", re.MULTILINE)


def _card_rule_ids(card: dict[str, Any]) -> set[str]:
    """The card's primary finding (its topic) and the findings it groups with it."""
    grouped = _SAME_CAUSE.search(card.get("detail", ""))
    listed = set(re.findall(r"\*\*([EWI]-[A-Z0-9-]+)\*\*", grouped[1])) if grouped else set()
    return {card["source"]["topic"]["code"], *listed}


def _rule_ids(cards: list[dict[str, Any]], prefix: str) -> set[str]:
    """The finding ids starting with ``prefix`` that the cards show, primary or grouped."""
    return {r for c in cards for r in _card_rule_ids(c) if r.startswith(prefix)}


# ---------------------------------------------------------------------------------------------
# Development mode


@pytest.mark.parametrize("item", MANIFEST["scenarios"], ids=lambda s: s["file"])
def test_every_scenario_gives_the_manifest_cards(
    dev_server: LiveServer, item: dict[str, Any]
) -> None:
    path = str(BUNDLES / item["file"])
    cards = _cards(_invoke(dev_server.url, path, "--hook", item["hook"], "--json"))
    everything = _cards(
        _invoke(dev_server.url, path, "--hook", item["hook"], "--json", "--card-policy", "all")
    )
    expected = item["expected"]["cms"]  # the server runs with the default payer rule
    visit_rules = {r for v in expected["visits"] for r in v["findings"]}
    # advice with nothing to act on (not to bill a code the charges do not bill) is an info
    # card of its own under `all`, a note under the default policy
    advice = {
        c["source"]["topic"]["code"]
        for c in everything
        if c["indicator"] == "info" and c["source"]["topic"]["code"][:2] in ("E-", "W-")
    }
    for shown in (cards, everything):  # every error and warning, under any policy
        assert _rule_ids(shown, "E-") == {r for r in visit_rules if r.startswith("E-")}
        assert _rule_ids(shown, "W-") | advice == {r for r in visit_rules if r.startswith("W-")}
    # the default policy shows only what to act on; `all` adds each visit's summary
    to_act_on = {r for r in visit_rules if r[0] in "EW" or r == "I-CHARGES-NOT-AVAILABLE"}
    assert bool(cards) == bool(to_act_on - (advice - _rule_ids(cards, "W-")))
    summaries = [c for c in everything if c["source"]["topic"]["code"] == "units-summary"]
    assert len(summaries) >= len(expected["visits"])
    for card in cards + everything:
        assert card["source"]["topic"]["system"] == (
            "https://therapy-cds.github.io/fhir/CodeSystem/finding"
        )
        assert card["uuid"]


def test_readable_output(dev_server: LiveServer) -> None:
    result = _invoke(dev_server.url, str(BUNDLES / "pair-no-modifier.json"))
    assert result.exit_code == 0, result.output
    assert "/cds-services/therapy-timed-codes" in result.stdout
    assert "CRITICAL" in result.stdout


@pytest.mark.parametrize(
    "file", ["discharge-procedure-extensions.json", "discharge-claim-lines.json"]
)
def test_a_discharge_sample_on_order_sign_hints_the_discharge_hook(
    dev_server: LiveServer, file: str
) -> None:
    result = _invoke(dev_server.url, str(BUNDLES / file))
    assert result.exit_code == 0, result.output
    assert "0 cards from" in result.stdout
    assert "use --hook encounter-discharge" in result.stderr
    # the right hook: the visit is clean, so the default policy answers no card and says why
    discharge = _invoke(dev_server.url, str(BUNDLES / file), "--hook", "encounter-discharge")
    assert discharge.exit_code == 0, discharge.output
    assert "0 cards" in discharge.stdout
    assert "use --hook encounter-discharge" not in discharge.stderr
    assert "nothing to act on" in discharge.stderr
    summary = _invoke(
        dev_server.url,
        str(BUNDLES / file),
        *("--hook", "encounter-discharge", "--card-policy", "summary"),
    )
    assert summary.exit_code == 0, summary.output
    assert "1 card from" in summary.stdout
    assert "units-summary" in summary.stdout
    assert "hint" not in summary.stderr
    assert "nothing to act on" not in summary.stderr


def test_no_hint_when_order_sign_had_drafts_to_check(dev_server: LiveServer) -> None:
    result = _invoke(dev_server.url, str(BUNDLES / "pair-no-modifier.json"))
    assert result.exit_code == 0, result.output
    assert "hint" not in result.stderr


def test_discovery_url_and_service_url_forms(dev_server: LiveServer) -> None:
    bundle = str(BUNDLES / "clean-pair-59-on-97530.json")
    for url in (
        f"{dev_server.url}/cds-services",
        f"{dev_server.url}/cds-services/therapy-timed-codes",
    ):
        assert _cards(_invoke(url, bundle, "--json")) is not None
    assert _cards(
        _invoke(
            dev_server.url,
            bundle,
            *("--service", "therapy-timed-codes", "--card-policy", "summary", "--json"),
        )
    )


def test_unknown_service_is_a_4xx(dev_server: LiveServer) -> None:
    result = _invoke(dev_server.url, str(BUNDLES / "clean-pair-59-on-97530.json"), "--service", "x")
    assert result.exit_code == 2
    assert "404" in result.stderr


# ---------------------------------------------------------------------------------------------
# Authentication on


def test_signed_call_is_accepted(auth_server: AuthServer) -> None:
    result = _invoke(
        auth_server.url,
        str(BUNDLES / "pair-no-modifier.json"),
        "--jwt-key",
        str(auth_server.key_file),
        "--iss",
        ISSUER,
        "--kid",
        auth_server.kid,
        "--json",
    )
    assert "E-PAIR-NO-MODIFIER" in _rule_ids(_cards(result), "E-")


def test_unsigned_call_is_401(auth_server: AuthServer) -> None:
    result = _invoke(auth_server.url, str(BUNDLES / "pair-no-modifier.json"))
    assert result.exit_code == 2
    assert "401 Unauthorized" in result.stderr
    assert "--jwt-key KEYFILE --iss ISS" in result.stderr


def test_wrong_key_is_401(auth_server: AuthServer, tmp_path: Path) -> None:
    impostor = tmp_path / "other.pem"
    impostor.write_bytes(ECKey.generate_key("P-384").as_pem(private=True))
    result = _invoke(
        auth_server.url,
        str(BUNDLES / "pair-no-modifier.json"),
        "--jwt-key",
        str(impostor),
        "--iss",
        ISSUER,
        "--kid",
        auth_server.kid,
    )
    assert result.exit_code == 2
    assert "401 Unauthorized" in result.stderr
    assert "JWT was rejected" in result.stderr


def test_untrusted_issuer_is_401(auth_server: AuthServer) -> None:
    result = _invoke(
        auth_server.url,
        str(BUNDLES / "pair-no-modifier.json"),
        "--jwt-key",
        str(auth_server.key_file),
        "--iss",
        "https://stranger.example.org",
        "--kid",
        auth_server.kid,
    )
    assert result.exit_code == 2
    assert "401 Unauthorized" in result.stderr
