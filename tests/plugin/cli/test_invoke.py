"""``therapy-cds invoke``: endpoints, JWT, rendering and the error paths, against real sockets.

A tiny ``http.server`` on a loopback port stands in for a service (no mocks); the tests against a
live ``therapy-cds serve`` are in ``test_invoke_live.py``.
"""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from joserfc import jwt
from joserfc.jwk import ECKey, KeySet, RSAKey
from rich.console import Console
from typer.testing import CliRunner

from plugin.cli import app
from plugin.cli.invoke import (
    InvokeError,
    Signer,
    choose_service,
    load_request,
    render_cards,
    resolve_endpoints,
)

ROOT = Path(__file__).resolve().parents[3]
CLEAN = ROOT / "sample_bundles" / "clean-pair-59-on-97530.json"
DISCOVERY = {
    "services": [
        {"id": "therapy-timed-codes", "hook": "order-sign", "description": "d"},
        {"id": "therapy-timed-codes-discharge", "hook": "encounter-discharge", "description": "d"},
    ]
}
CARDS = {
    "cards": [
        {
            "uuid": "0b0b0b0b-0000-4000-8000-000000000001",
            "summary": "97530 needs modifier 59",
            "indicator": "critical",
            "detail": "Add **59** to the 97530 line.",
            "source": {
                "label": "therapy-cds",
                "topic": {
                    "system": "https://therapy-cds.github.io/fhir/CodeSystem/finding",
                    "code": "E-PAIR-NO-MODIFIER",
                },
            },
            "suggestions": [{"label": "Add modifier 59 to 97530", "isRecommended": True}],
            "links": [{"label": "NCCI policy", "url": "https://www.cms.gov/", "type": "absolute"}],
        },
        {
            "uuid": "0b0b0b0b-0000-4000-8000-000000000002",
            "summary": "Units: 97140 x 1, 97530 x 2",
            "indicator": "info",
            "source": {"label": "therapy-cds"},
        },
    ]
}


# ---------------------------------------------------------------------------------------------
# A tiny local HTTP server


@dataclass
class Reply:
    status: int
    body: bytes
    content_type: str = "application/json"


@dataclass
class Seen:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class TinyServer:
    url: str
    routes: dict[tuple[str, str], Reply] = field(default_factory=dict)
    seen: list[Seen] = field(default_factory=list)

    def route(self, method: str, path: str, status: int, body: Any, content_type: str = "") -> None:
        raw = body if isinstance(body, bytes) else json.dumps(body).encode()
        self.routes[(method, path)] = Reply(status, raw, content_type or "application/json")


@pytest.fixture
def tiny() -> Iterator[TinyServer]:
    state = TinyServer(url="")

    class Handler(BaseHTTPRequestHandler):
        def _answer(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            state.seen.append(Seen(self.command, self.path, dict(self.headers), body))
            reply = state.routes.get((self.command, self.path), Reply(404, b'{"detail": "nope"}'))
            self.send_response(reply.status)
            self.send_header("Content-Type", reply.content_type)
            self.send_header("Content-Length", str(len(reply.body)))
            self.end_headers()
            self.wfile.write(reply.body)

        do_GET = _answer  # noqa: N815
        do_POST = _answer  # noqa: N815

        def log_message(self, format: str, *args: Any) -> None:
            return

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def _run(*args: str) -> Any:
    return CliRunner().invoke(app, ["invoke", *args])


def _one_line_error(result: Any) -> str:
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("therapy-cds invoke: ")
    assert "Traceback" not in result.output
    return str(lines[0])


# ---------------------------------------------------------------------------------------------
# Endpoints


@pytest.mark.parametrize(
    ("url", "service", "discovery", "service_url"),
    [
        ("http://h:8000", None, "http://h:8000/cds-services", None),
        ("http://h:8000/", None, "http://h:8000/cds-services", None),
        ("http://h:8000/cds-services", None, "http://h:8000/cds-services", None),
        ("http://h:8000/cds-services/", None, "http://h:8000/cds-services", None),
        (
            "https://h/base/cds-services/svc",
            None,
            "https://h/base/cds-services",
            "https://h/base/cds-services/svc",
        ),
        ("https://h/base", "svc", "https://h/base/cds-services", "https://h/base/cds-services/svc"),
        (
            "http://h/cds-services/svc",
            "svc",
            "http://h/cds-services",
            "http://h/cds-services/svc",
        ),
    ],
)
def test_resolve_endpoints(url: str, service: str | None, discovery: str, service_url: str) -> None:
    got = resolve_endpoints(url, service)
    assert got.discovery_url == discovery
    assert got.service_url == service_url


@pytest.mark.parametrize(
    ("url", "service"),
    [
        ("h:8000", None),
        ("ftp://h/cds-services", None),
        ("http://h/cds-services?x=1", None),
        ("http://h/cds-services/a/b", None),
        ("http://h/cds-services/a", "b"),
    ],
)
def test_resolve_endpoints_refuses(url: str, service: str | None) -> None:
    with pytest.raises(InvokeError):
        resolve_endpoints(url, service)


def test_choose_service_by_hook() -> None:
    base = "http://h/cds-services"
    assert choose_service(DISCOVERY, base, "order-sign") == f"{base}/therapy-timed-codes"
    assert choose_service(DISCOVERY, base, "encounter-discharge") == (
        f"{base}/therapy-timed-codes-discharge"
    )
    with pytest.raises(InvokeError, match="no service for hook 'patient-view'"):
        choose_service(DISCOVERY, base, "patient-view")
    with pytest.raises(InvokeError, match="not a CDS Hooks discovery"):
        choose_service({"cards": []}, base, "order-sign")


# ---------------------------------------------------------------------------------------------
# Input


def test_load_request_from_bundle_and_from_request(tmp_path: Path) -> None:
    request = load_request(CLEAN, "order-sign")
    assert request["hook"] == "order-sign"
    assert request["context"]["patientId"] == "pat-avery-clean"
    saved = tmp_path / "request.json"
    saved.write_text(json.dumps(request))
    again = load_request(saved, "encounter-discharge")
    assert again["hook"] == "order-sign"  # a ready request keeps its hook
    assert again["hookInstance"] != request["hookInstance"]
    assert again["context"] == request["context"]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "file not found"),
        ("{not json", "not valid JSON (line 1"),
        ('{"resourceType": "Patient", "id": "x"}', "expected a FHIR Bundle"),
        (b"\xff\xfe\x00", "cannot read the file"),
    ],
)
def test_unreadable_bundle_exits_2(
    tmp_path: Path, content: str | bytes | None, message: str
) -> None:
    path = tmp_path / "visit.json"
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif content is not None:
        path.write_text(content)
    line = _one_line_error(_run("http://127.0.0.1:9", str(path)))
    assert message in line
    assert str(path) in line


# ---------------------------------------------------------------------------------------------
# JWT


def _verify(token: str, key: ECKey | RSAKey, alg: str) -> tuple[dict[str, Any], dict[str, Any]]:
    decoded = jwt.decode(token, key, algorithms=[alg])
    return dict(decoded.header), dict(decoded.claims)


def test_signer_es384_from_pem(tmp_path: Path) -> None:
    key = ECKey.generate_key("P-384")
    path = tmp_path / "client.pem"
    path.write_bytes(key.as_pem(private=True))
    signer = Signer.from_file(path, "https://ehr.example.org", kid="k-1")
    header, claims = _verify(signer.token("http://h/cds-services/x"), key, "ES384")
    assert header == {"alg": "ES384", "typ": "JWT", "kid": "k-1"}
    assert claims["iss"] == "https://ehr.example.org"
    assert claims["aud"] == "http://h/cds-services/x"
    assert claims["exp"] - claims["iat"] == 300
    assert len(claims["jti"]) == 36
    assert signer.token("a") != signer.token("a")  # fresh jti each time


def test_signer_rs384_from_jwk_with_thumbprint_kid(tmp_path: Path) -> None:
    key = RSAKey.generate_key(2048)
    path = tmp_path / "client.jwk.json"
    path.write_text(json.dumps(key.as_dict(private=True)))
    signer = Signer.from_file(path, "iss")
    header, _ = _verify(signer.token("aud"), key, "RS384")
    assert header["alg"] == "RS384"
    assert header["kid"] == key.thumbprint()


def test_signer_from_jwks_picks_kid(tmp_path: Path) -> None:
    first = ECKey.generate_key("P-384", parameters={"kid": "one"})
    second = ECKey.generate_key("P-384", parameters={"kid": "two"})
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps(KeySet([first, second]).as_dict(private=True)))
    signer = Signer.from_file(path, "iss", kid="two")
    header, _ = _verify(signer.token("aud"), second, "ES384")
    assert header["kid"] == "two"
    with pytest.raises(InvokeError, match="no private key with kid 'three'"):
        Signer.from_file(path, "iss", kid="three")


@pytest.mark.parametrize(
    "content",
    [
        "not a key",
        json.dumps(ECKey.generate_key("P-384").as_dict(private=False)),
        json.dumps({"kty": "oct", "k": "c2VjcmV0"}),
    ],
)
def test_signer_refuses_what_is_not_a_private_key(tmp_path: Path, content: str) -> None:
    path = tmp_path / "key"
    path.write_text(content)
    with pytest.raises(InvokeError, match="not a private EC or RSA key"):
        Signer.from_file(path, "iss")


def test_signer_refuses_an_algorithm_that_does_not_fit(tmp_path: Path) -> None:
    key = ECKey.generate_key("P-256", parameters={"alg": "ES384"})
    path = tmp_path / "k.json"
    path.write_text(json.dumps(key.as_dict(private=True)))
    with pytest.raises(InvokeError, match="cannot sign ES384 with this key"):
        Signer.from_file(path, "iss")
    plain = tmp_path / "p256.pem"
    plain.write_bytes(ECKey.generate_key("P-256").as_pem(private=True))
    assert Signer.from_file(plain, "iss").alg == "ES256"


def test_jwt_key_and_iss_go_together(tmp_path: Path) -> None:
    line = _one_line_error(_run("http://127.0.0.1:9", str(CLEAN), "--iss", "x"))
    assert "--jwt-key and --iss go together" in line


# ---------------------------------------------------------------------------------------------
# HTTP paths


def test_posts_to_the_discovered_service_and_prints_cards(tiny: TinyServer) -> None:
    tiny.route("GET", "/cds-services", 200, DISCOVERY)
    tiny.route("POST", "/cds-services/therapy-timed-codes", 200, CARDS)
    result = _run(tiny.url, str(CLEAN))
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert f"2 cards from {tiny.url}/cds-services/therapy-timed-codes" in out
    assert "CRITICAL" in out
    assert "97530 needs modifier 59" in out
    assert "Add modifier 59 to 97530" in out
    assert "(recommended)" in out
    assert "E-PAIR-NO-MODIFIER" in out
    assert "https://www.cms.gov/" in out
    assert [s.method for s in tiny.seen] == ["GET", "POST"]
    sent = json.loads(tiny.seen[1].body)
    assert sent["hook"] == "order-sign"
    assert sent["context"]["patientId"] == "pat-avery-clean"
    assert "Authorization" not in tiny.seen[1].headers


def test_discharge_hook_picks_the_discharge_service(tiny: TinyServer) -> None:
    tiny.route("GET", "/cds-services", 200, DISCOVERY)
    tiny.route("POST", "/cds-services/therapy-timed-codes-discharge", 200, {"cards": []})
    bundle = ROOT / "sample_bundles" / "discharge-procedure-extensions.json"
    result = _run(tiny.url + "/cds-services", str(bundle), "--hook", "encounter-discharge")
    assert result.exit_code == 0, result.output
    assert "0 cards" in result.stdout
    assert json.loads(tiny.seen[1].body)["hook"] == "encounter-discharge"


def test_service_url_skips_discovery_and_json_prints_raw(tiny: TinyServer) -> None:
    tiny.route("POST", "/cds-services/therapy-timed-codes", 200, CARDS)
    result = _run(f"{tiny.url}/cds-services/therapy-timed-codes", str(CLEAN), "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == CARDS
    assert [s.method for s in tiny.seen] == ["POST"]


def test_jwt_sent_with_exact_audience_and_never_printed(tiny: TinyServer, tmp_path: Path) -> None:
    key = ECKey.generate_key("P-384")
    pem = tmp_path / "k.pem"
    pem.write_bytes(key.as_pem(private=True))
    tiny.route("GET", "/cds-services", 200, DISCOVERY)
    tiny.route("POST", "/cds-services/therapy-timed-codes", 401, b"", "text/plain")
    result = _run(tiny.url, str(CLEAN), "--jwt-key", str(pem), "--iss", "https://ehr.example.org")
    line = _one_line_error(result)
    assert "401 Unauthorized" in line
    assert "JWT was rejected" in line
    for seen, aud in zip(
        tiny.seen,
        [f"{tiny.url}/cds-services", f"{tiny.url}/cds-services/therapy-timed-codes"],
        strict=True,
    ):
        token = seen.headers["Authorization"].removeprefix("Bearer ")
        assert jwt.decode(token, key, algorithms=["ES384"]).claims["aud"] == aud
        assert token not in result.output
        assert token.split(".")[1] not in result.output


def test_401_without_a_key_says_how_to_authenticate(tiny: TinyServer) -> None:
    tiny.route("POST", "/cds-services/x", 401, {"detail": "unauthorized"})
    line = _one_line_error(_run(tiny.url, str(CLEAN), "--service", "x"))
    assert "401 Unauthorized" in line
    assert "--jwt-key KEYFILE --iss ISS" in line


def test_412_shows_operation_outcome_diagnostics(tiny: TinyServer) -> None:
    outcome = {
        "resourceType": "OperationOutcome",
        "issue": [
            {
                "severity": "error",
                "code": "not-found",
                "diagnostics": "prefetch 'procedures' is missing and there is no fhirServer",
            }
        ],
    }
    tiny.route("POST", "/cds-services/x", 412, outcome)
    line = _one_line_error(_run(tiny.url, str(CLEAN), "--service", "x"))
    assert "412 Precondition Failed" in line
    assert "prefetch 'procedures' is missing and there is no fhirServer" in line


def test_400_with_details_text(tiny: TinyServer) -> None:
    outcome = {
        "resourceType": "OperationOutcome",
        "issue": [{"severity": "error", "code": "invalid", "details": {"text": "bad context"}}],
    }
    tiny.route("POST", "/cds-services/x", 400, outcome)
    line = _one_line_error(_run(tiny.url, str(CLEAN), "--service", "x"))
    assert "400 Bad Request: bad context" in line


def test_500_is_reported(tiny: TinyServer) -> None:
    tiny.route("POST", "/cds-services/x", 500, b"oops", "text/plain")
    assert "500 Internal Server Error" in _one_line_error(
        _run(tiny.url, str(CLEAN), "--service", "x")
    )


def test_non_json_answer(tiny: TinyServer) -> None:
    tiny.route("POST", "/cds-services/x", 200, b"<html>hello</html>", "text/html")
    line = _one_line_error(_run(tiny.url, str(CLEAN), "--service", "x"))
    assert "the answer is not JSON (200, text/html)" in line


def test_json_that_is_not_a_cds_response(tiny: TinyServer) -> None:
    tiny.route("POST", "/cds-services/x", 200, {"hello": "world"})
    assert "no cards array" in _one_line_error(_run(tiny.url, str(CLEAN), "--service", "x"))


def test_discovery_without_the_hook(tiny: TinyServer) -> None:
    tiny.route("GET", "/cds-services", 200, {"services": [{"id": "a", "hook": "patient-view"}]})
    line = _one_line_error(_run(tiny.url, str(CLEAN)))
    assert "no service for hook 'order-sign' (services: a (patient-view))" in line


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_unreachable_port() -> None:
    url = f"http://127.0.0.1:{_free_port()}"
    line = _one_line_error(_run(url, str(CLEAN)))
    assert f"{url}/cds-services: cannot connect (is the service running?)" in line


def test_timeout_is_reported() -> None:
    with socket.socket() as listener:  # accepts, never answers
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        url = f"http://127.0.0.1:{listener.getsockname()[1]}/cds-services/x"
        line = _one_line_error(_run(url, str(CLEAN), "--timeout", "0.3"))
    assert "no answer within 0.3 s" in line


# ---------------------------------------------------------------------------------------------
# Rendering


def test_render_cards_colours_and_parts() -> None:
    console = Console(record=True, width=100, color_system="truecolor", force_terminal=True)
    render_cards(console, CARDS, "http://h/cds-services/x")
    text = console.export_text(clear=False)
    assert "2 cards from http://h/cds-services/x" in text
    assert " CRITICAL " in text
    assert "97530 needs modifier 59" in text
    assert " INFO " in text
    assert "Units: 97140 x 1, 97530 x 2" in text
    assert "Source: therapy-cds [E-PAIR-NO-MODIFIER]" in text
    assert "Link: NCCI policy https://www.cms.gov/" in text
    html = console.export_html()
    assert "#800000" in html or "#ff0000" in html  # critical is red


def test_render_tolerates_sparse_cards() -> None:
    console = Console(record=True, width=80)
    render_cards(console, {"cards": [{"summary": "s"}, "junk"], "systemActions": [{}]}, "u")
    text = console.export_text()
    assert "1 card from u" in text
    assert "1 system action(s) proposed" in text


def test_hook_hint_only_when_no_card() -> None:
    from plugin.cli.invoke import (
        DISCHARGE_HINT,
        NOTHING_TO_ACT_ON_HINT,
        hook_hint,
        with_card_policy,
    )

    no_drafts = {"hook": "order-sign", "context": {"draftOrders": {"resourceType": "Bundle"}}}
    drafts = {
        "hook": "order-sign",
        "context": {"draftOrders": {"resourceType": "Bundle", "entry": [{"resource": {}}]}},
    }
    discharge = {"hook": "encounter-discharge", "context": {}}
    assert hook_hint(no_drafts, {"cards": []}) == DISCHARGE_HINT
    assert hook_hint(no_drafts, {"cards": [{"summary": "x"}]}) is None
    # charges were checked and nothing is to act on: said, under the default policy only
    assert hook_hint(drafts, {"cards": []}) == NOTHING_TO_ACT_ON_HINT
    assert hook_hint(discharge, {"cards": []}) == NOTHING_TO_ACT_ON_HINT
    assert hook_hint(with_card_policy(discharge, "all"), {"cards": []}) is None
    assert hook_hint(with_card_policy(discharge, "problems"), {"cards": []}) is not None
    assert hook_hint(discharge, {"cards": [{"summary": "x"}]}) is None


def test_card_policy_goes_in_the_extension_beside_the_other_members() -> None:
    from plugin.cli.invoke import with_card_policy

    request = {"hook": "order-sign", "extension": {"io.github.therapy-cds": {"payerRule": "ama"}}}
    assert with_card_policy(request, None) is request
    assert with_card_policy(request, "summary")["extension"] == {
        "io.github.therapy-cds": {"payerRule": "ama", "cardPolicy": "summary"}
    }
    assert request["extension"] == {"io.github.therapy-cds": {"payerRule": "ama"}}
