"""``therapy-cds invoke``: post a scenario bundle to a running service and print its cards.

The bundle becomes a CDS Hooks request through :mod:`plugin.hook_request`; a file that already
is a CDS Hooks request (it has ``hook`` and ``context``) is sent as it is, with a fresh
``hookInstance``. The URL may be the service's base (``http://127.0.0.1:8000``), its discovery
endpoint (``.../cds-services``) or one service (``.../cds-services/{id}``); without a service id the
service registered for ``--hook`` is picked from discovery.

With ``--jwt-key`` every call carries ``Authorization: Bearer <JWT>`` as CDS Hooks 2.0 "Trusting
CDS Clients" describes: header ``alg`` (ES256/ES384/ES512 from the EC curve, RS384 for RSA),
``typ: JWT`` and ``kid``; claims ``iss``, ``aud`` (the exact URL called), ``iat``, ``exp`` (+300 s)
and ``jti``. Tokens are never printed.

Exit codes: 0 when the service answered with cards (any number), 2 when the bundle cannot be read
or the call fails (unreachable, not JSON, 4xx/5xx); one line on stderr says what went wrong.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Final
from urllib.parse import urlsplit

import requests
import typer
from joserfc import jwt
from joserfc.jwk import ECKey, RSAKey
from rich.console import Console, Group
from rich.markdown import Markdown
from rich.panel import Panel
from rich.text import Text

from fhir_mappings import DEFAULT_MAX_FILE_BYTES, InputError, read_input
from plugin.cli._app import app
from plugin.cli._inputs import MaxFileSize, max_file_bytes
from plugin.cli._rules import CardPolicyOption
from plugin.hook_request import BundleError, Hook, build_hook_request
from plugin.keys import PrivateKeyError, load_private_key
from plugin.rules.vocabulary import CHOICES, CardPolicy
from plugin.services import EXTENSION_KEY

JsonObject = dict[str, Any]

TOKEN_LIFETIME_SECONDS: Final = 300
CONNECT_TIMEOUT_SECONDS: Final = 5.0
INDICATOR_STYLE: Final = {"critical": "bold red", "warning": "yellow", "info": "blue"}
EC_ALGORITHMS: Final = {"P-256": "ES256", "P-384": "ES384", "P-521": "ES512"}
# A JSON error body is shown only through these members, never wholesale: it could echo input.
_MAX_MESSAGE = 300


class HookName(StrEnum):
    ORDER_SIGN = "order-sign"
    ENCOUNTER_DISCHARGE = "encounter-discharge"


class InvokeError(Exception):
    """A failure the user can act on; ``str(error)`` is the one-line message."""


# ---------------------------------------------------------------------------------------------
# Input


def load_request(path: Path, hook: Hook, *, max_bytes: int = DEFAULT_MAX_FILE_BYTES) -> JsonObject:
    """Read ``path`` (a Bundle, or a ready CDS Hooks request) and return the request to send.

    The file is read as ``check`` reads its inputs (:func:`fhir_mappings.read_input`): a regular
    file of at most ``max_bytes``, gzip decompressed up to that size."""
    try:
        text = read_input(path, max_bytes).decode("utf-8")
    except InputError as exc:
        raise InvokeError(str(exc)) from None
    except UnicodeDecodeError as exc:
        raise InvokeError(f"{path}: cannot read the file ({type(exc).__name__})") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvokeError(
            f"{path}: not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg})"
        ) from None
    if isinstance(data, dict) and "hook" in data and "context" in data:
        request = dict(data)
        request["hookInstance"] = str(uuid.uuid4())
        return request
    try:
        return build_hook_request(data, hook)
    except BundleError as exc:
        raise InvokeError(f"{path}: {exc}") from None


# ---------------------------------------------------------------------------------------------
# Endpoints


@dataclass(frozen=True, slots=True)
class Endpoints:
    discovery_url: str
    service_url: str | None  # None: pick from discovery


def resolve_endpoints(url: str, service: str | None) -> Endpoints:
    """Accept a base URL, the discovery URL or a service URL (see module doc)."""
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise InvokeError(f"{url!r} is not an http(s) URL, e.g. http://127.0.0.1:8000")
    if parts.query or parts.fragment:
        raise InvokeError(f"{url!r}: give the service URL without a query or fragment")
    path = parts.path.rstrip("/")
    origin = f"{parts.scheme}://{parts.netloc}"
    marker = "/cds-services"
    if path.endswith(marker):
        discovery = origin + path
        service_url = None
    elif marker + "/" in path + "/":
        prefix, _, rest = path.partition(marker + "/")
        if "/" in rest:
            raise InvokeError(f"{url!r}: expected .../cds-services/{{service-id}}")
        discovery = origin + prefix + marker
        service_url = origin + path
    else:
        discovery = origin + path + marker
        service_url = None
    if service:
        if service_url is not None and service_url != f"{discovery}/{service}":
            raise InvokeError(f"--service {service!r} contradicts the service in {url!r}")
        service_url = f"{discovery}/{service}"
    return Endpoints(discovery, service_url)


# ---------------------------------------------------------------------------------------------
# Client authentication


class Signer:
    """Mints one short-lived JWT per call (CDS Hooks 2.0, Trusting CDS Clients)."""

    def __init__(self, key: ECKey | RSAKey, alg: str, kid: str, issuer: str) -> None:
        self._key = key
        self.alg = alg
        self.kid = kid
        self.issuer = issuer

    @classmethod
    def from_file(cls, path: Path, issuer: str, kid: str | None = None) -> Signer:
        """Load a private key: PEM (EC or RSA), a JWK, or a JWK Set (``kid`` picks the key)."""
        try:
            raw = read_input(path, DEFAULT_MAX_FILE_BYTES)  # never a FIFO, never unbounded
        except InputError as exc:
            raise InvokeError(f"--jwt-key {exc}") from None
        try:
            key = load_private_key(raw, f"--jwt-key {path}", kid)
        except PrivateKeyError as exc:
            raise InvokeError(str(exc)) from None
        declared_alg = key.get("alg")
        declared = declared_alg if isinstance(declared_alg, str) else None
        if isinstance(key, RSAKey):
            alg = declared or "RS384"
        else:
            alg = declared or EC_ALGORITHMS.get(str(key.get("crv")), "")
            if not alg:
                raise InvokeError(f"--jwt-key {path}: unsupported EC curve {key.get('crv')!r}")
        signer = cls(key, alg, kid or key.kid or key.thumbprint(), issuer)
        try:
            signer.token("https://probe.invalid/")  # fail here, not half-way through the calls
        except Exception:  # joserfc refuses an algorithm that does not fit the key
            raise InvokeError(f"--jwt-key {path}: cannot sign {alg} with this key") from None
        return signer

    def token(self, audience: str) -> str:
        now = int(time.time())
        header = {"alg": self.alg, "typ": "JWT", "kid": self.kid}
        claims = {
            "iss": self.issuer,
            "aud": audience,
            "iat": now,
            "exp": now + TOKEN_LIFETIME_SECONDS,
            "jti": str(uuid.uuid4()),
        }
        return jwt.encode(header, claims, self._key, algorithms=[self.alg])


# ---------------------------------------------------------------------------------------------
# HTTP


class Client:
    """The calls ``invoke`` makes, with one error vocabulary."""

    def __init__(self, signer: Signer | None, timeout: float) -> None:
        self.signer = signer
        self.timeout = (min(CONNECT_TIMEOUT_SECONDS, timeout), timeout)
        self.session = requests.Session()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.session.close()

    def _headers(self, url: str) -> dict[str, str]:
        headers = {"Accept": "application/json"}
        if self.signer is not None:
            headers["Authorization"] = f"Bearer {self.signer.token(url)}"
        return headers

    def get_json(self, url: str) -> Any:
        return self._call("GET", url, None)

    def post_json(self, url: str, body: JsonObject) -> Any:
        return self._call("POST", url, body)

    def _call(self, method: str, url: str, body: JsonObject | None) -> Any:
        try:
            response = self.session.request(
                method, url, json=body, headers=self._headers(url), timeout=self.timeout
            )
        except requests.Timeout:
            raise InvokeError(f"{url}: no answer within {self.timeout[1]:g} s") from None
        except requests.ConnectionError:
            raise InvokeError(f"{url}: cannot connect (is the service running?)") from None
        except requests.RequestException as exc:
            raise InvokeError(f"{url}: request failed ({type(exc).__name__})") from None
        if response.status_code == 401:
            hint = (
                "the JWT was rejected (check --iss, the key and the service's trusted issuers)"
                if self.signer is not None
                else "the service requires a signed JWT: pass --jwt-key KEYFILE --iss ISS"
            )
            raise InvokeError(f"{method} {url}: 401 Unauthorized: {hint}")
        if response.status_code >= 400:
            reason = response.reason or ""
            detail = _error_detail(response)
            raise InvokeError(
                f"{method} {url}: {response.status_code} {reason}".rstrip()
                + (f": {detail}" if detail else "")
            )
        try:
            return response.json()
        except ValueError:
            kind = response.headers.get("Content-Type", "no content type")
            raise InvokeError(
                f"{method} {url}: the answer is not JSON ({response.status_code}, {kind})"
            ) from None


def _error_detail(response: requests.Response) -> str:
    """The OperationOutcome diagnostics (or a short JSON ``detail``/``error``) of an error."""
    try:
        body = response.json()
    except ValueError:
        return ""
    messages: list[str] = []
    if isinstance(body, dict) and body.get("resourceType") == "OperationOutcome":
        for issue in body.get("issue") or []:
            if not isinstance(issue, dict):
                continue
            details = issue.get("details")
            text = issue.get("diagnostics") or (
                details.get("text") if isinstance(details, dict) else None
            )
            if isinstance(text, str) and text:
                messages.append(text)
    elif isinstance(body, dict):
        for member in ("detail", "error", "message"):
            if isinstance(body.get(member), str):
                messages.append(body[member])
                break
    message = "; ".join(messages).replace("\n", " ")
    return message if len(message) <= _MAX_MESSAGE else message[: _MAX_MESSAGE - 1] + "…"


def choose_service(discovery: Any, discovery_url: str, hook: str) -> str:
    """The URL of the first service registered for ``hook`` in a discovery answer."""
    services = discovery.get("services") if isinstance(discovery, dict) else None
    if not isinstance(services, list):
        raise InvokeError(f"{discovery_url}: not a CDS Hooks discovery answer (no services list)")
    listed = []
    for service in services:
        if not isinstance(service, dict) or not isinstance(service.get("id"), str):
            continue
        if service.get("hook") == hook:
            return f"{discovery_url}/{service['id']}"
        listed.append(f"{service['id']} ({service.get('hook')})")
    offered = ", ".join(listed) or "none"
    raise InvokeError(f"{discovery_url}: no service for hook {hook!r} (services: {offered})")


# ---------------------------------------------------------------------------------------------
# Output


def _mapping(value: object) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def render_cards(console: Console, response: Mapping[str, Any], service_url: str) -> None:
    """Print each card readably: indicator colour, summary, detail, source, suggestions, links."""
    cards = [c for c in response.get("cards") or [] if isinstance(c, Mapping)]
    noun = "card" if len(cards) == 1 else "cards"
    console.print(Text(f"{len(cards)} {noun} from {service_url}", style="bold"))
    for card in cards:
        indicator = str(card.get("indicator", "info"))
        style = INDICATOR_STYLE.get(indicator, "white")
        parts: list[Any] = []
        detail = card.get("detail")
        if isinstance(detail, str) and detail.strip():
            parts.append(Markdown(detail))
        source = _mapping(card.get("source"))
        topic = _mapping(source.get("topic"))
        label = source.get("label")
        if label or topic.get("code"):
            line = Text.assemble(("Source: ", "dim"), str(label or ""))
            if topic.get("code"):
                line.append(f" [{topic['code']}]", style="dim")
            parts.append(line)
        for suggestion in card.get("suggestions") or []:
            if isinstance(suggestion, Mapping):
                line = Text.assemble(("Suggestion: ", "dim"), str(suggestion.get("label", "")))
                if suggestion.get("isRecommended"):
                    line.append(" (recommended)", style="green")
                parts.append(line)
        for link in card.get("links") or []:
            if isinstance(link, Mapping):
                line = Text.assemble(("Link: ", "dim"), str(link.get("label", "")))
                line.append(f" {link.get('url', '')}", style="underline cyan")
                parts.append(line)
        # The summary (<= 140 characters) heads the body: a panel title would be cut short.
        summary = Text(str(card.get("summary", "")), style="bold")
        console.print(
            Panel(
                Group(summary, *parts),
                title=Text(f" {indicator.upper()} ", style=f"reverse {style}"),
                title_align="left",
                border_style=style,
            )
        )
    actions = response.get("systemActions")
    if isinstance(actions, list) and actions:
        console.print(Text(f"{len(actions)} system action(s) proposed", style="dim"))


# ---------------------------------------------------------------------------------------------
# The command


DISCHARGE_HINT = (
    "hint: the bundle has no draft ServiceRequests, so order-sign has no charges to check; "
    "for a visit whose charges are on the encounter use --hook encounter-discharge"
)


NOTHING_TO_ACT_ON_HINT = (
    f"no card: nothing to act on under the card policy '{CardPolicy.PROBLEMS}' (the default);"
    f" {CHOICES[CardPolicy].option} {CardPolicy.SUMMARY} also shows each visit's units summary"
)


def hook_hint(request: Mapping[str, Any], answer: Mapping[str, Any]) -> str | None:
    """What to try when the answer holds no card: order-sign with nothing being signed, or a
    visit with nothing to act on under the default card policy."""
    if answer.get("cards"):
        return None
    context = _mapping(request.get("context"))
    drafts = _mapping(context.get("draftOrders")).get("entry")
    if request.get("hook") == "order-sign" and not drafts:
        return DISCHARGE_HINT
    policy = _mapping(_mapping(request.get("extension")).get(EXTENSION_KEY)).get("cardPolicy")
    return NOTHING_TO_ACT_ON_HINT if policy in (None, CardPolicy.PROBLEMS) else None


def with_card_policy(request: JsonObject, policy: str | None) -> JsonObject:
    """The request asking for ``policy`` in the ``io.github.therapy-cds`` extension (other
    members of the extension kept); unchanged when ``policy`` is None."""
    if policy is None:
        return request
    extension = request.get("extension")
    extension = dict(extension) if isinstance(extension, dict) else {}
    ours = extension.get(EXTENSION_KEY)
    extension[EXTENSION_KEY] = {**(ours if isinstance(ours, dict) else {}), "cardPolicy": policy}
    return {**request, "extension": extension}


def run_invoke(
    url: str,
    path: Path,
    hook: Hook = "order-sign",
    *,
    service: str | None = None,
    signer: Signer | None = None,
    timeout: float = 30.0,
    max_bytes: int = DEFAULT_MAX_FILE_BYTES,
    card_policy: str | None = None,
) -> tuple[str, Any]:
    """Build (or load) the request, find the service, post it; return (service URL, answer)."""
    service_url, answer, _ = _run_invoke(
        url,
        path,
        hook,
        service=service,
        signer=signer,
        timeout=timeout,
        max_bytes=max_bytes,
        card_policy=card_policy,
    )
    return service_url, answer


def _run_invoke(
    url: str,
    path: Path,
    hook: Hook,
    *,
    service: str | None,
    signer: Signer | None,
    timeout: float,
    max_bytes: int,
    card_policy: str | None = None,
) -> tuple[str, Any, JsonObject]:
    endpoints = resolve_endpoints(url, service)
    request = with_card_policy(load_request(path, hook, max_bytes=max_bytes), card_policy)
    service_url = endpoints.service_url
    with Client(signer, timeout) as client:
        if service_url is None:
            discovery = client.get_json(endpoints.discovery_url)
            service_url = choose_service(discovery, endpoints.discovery_url, str(request["hook"]))
        answer = client.post_json(service_url, request)
    if not isinstance(answer, dict) or not isinstance(answer.get("cards"), list):
        raise InvokeError(f"POST {service_url}: not a CDS Hooks response (no cards array)")
    return service_url, answer, request


@app.command()
def invoke(
    url: Annotated[
        str,
        typer.Argument(
            help="Service base (http://127.0.0.1:8000), discovery (.../cds-services) "
            "or service URL (.../cds-services/{id})."
        ),
    ],
    path: Annotated[
        Path, typer.Argument(help="FHIR Bundle of one visit (or a ready CDS Hooks request).")
    ],
    hook: Annotated[HookName, typer.Option("--hook", help="Hook to call.")] = HookName.ORDER_SIGN,
    service: Annotated[
        str | None, typer.Option("--service", help="Service id (default: from discovery).")
    ] = None,
    jwt_key: Annotated[
        Path | None,
        typer.Option("--jwt-key", help="Private key (PEM, JWK or JWK Set) to sign the client JWT."),
    ] = None,
    iss: Annotated[
        str | None, typer.Option("--iss", help="JWT issuer (required with --jwt-key).")
    ] = None,
    kid: Annotated[
        str | None,
        typer.Option("--kid", help="JWT key id (default: the JWK's kid, else its thumbprint)."),
    ] = None,
    timeout: Annotated[
        float, typer.Option("--timeout", min=0.1, help="Seconds to wait for each answer.")
    ] = 30.0,
    as_json: Annotated[bool, typer.Option("--json", help="Print the raw JSON answer.")] = False,
    card_policy: CardPolicyOption = None,
    max_file_size: MaxFileSize = None,
) -> None:
    """Build a CDS Hooks request from a bundle, post it to a running service, print the cards."""
    try:
        if (jwt_key is None) != (iss is None):
            raise InvokeError("--jwt-key and --iss go together")
        signer = Signer.from_file(jwt_key, iss, kid) if jwt_key and iss else None
        if max_file_size is None:
            from plugin.settings import Settings

            max_file_size = max_file_bytes(None, Settings(dev_mode=True))
        service_url, answer, request = _run_invoke(
            url,
            path,
            hook.value,
            service=service,
            signer=signer,
            timeout=timeout,
            max_bytes=max_file_size,
            card_policy=card_policy,
        )
    except InvokeError as exc:
        typer.echo(f"therapy-cds invoke: {exc}", err=True)
        raise typer.Exit(2) from None
    if as_json:
        typer.echo(json.dumps(answer, indent=2, ensure_ascii=False))
    else:
        render_cards(Console(), answer, service_url)
    hint = hook_hint(request, answer)
    if hint:
        typer.echo(f"therapy-cds invoke: {hint}", err=True)
