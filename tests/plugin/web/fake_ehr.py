"""A tiny EHR for the SMART tests: authorization server and FHIR server in one FastAPI app.

Serves ``{base}/fhir/.well-known/smart-configuration``, ``/auth/authorize`` (redirects back with
a code at once, as if the user had approved), ``/auth/token`` (checks the PKCE verifier against
the S256 challenge, the client id and the redirect URI), and FHIR reads and searches over the
resources of one sample bundle, each requiring the issued bearer token. It records what it saw so
tests can assert on the exchange.
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, RedirectResponse, Response

ROOT = Path(__file__).resolve().parents[3]
BUNDLES = ROOT / "sample_bundles"


@dataclass
class Grant:
    client_id: str
    redirect_uri: str
    challenge: str
    launch: str | None
    scope: str


@dataclass
class FakeEhr:
    base: str  # e.g. "http://127.0.0.1:5555" (no trailing slash)
    resources: list[dict[str, Any]]
    client_id: str = "therapy-cds"
    app_context: str | None = None  # what the card link's appContext carried
    patient: str | None = None
    grants: dict[str, Grant] = field(default_factory=dict)
    tokens: set[str] = field(default_factory=set)
    authorize_requests: list[dict[str, str]] = field(default_factory=list)
    token_requests: list[dict[str, str]] = field(default_factory=list)
    fhir_requests: list[str] = field(default_factory=list)  # "GET Encounter/x" etc.
    pkce_verified: int = 0
    configuration_requests: int = 0  # fetches of .well-known/smart-configuration
    challenge_methods: list[str] = field(default_factory=lambda: ["S256"])
    need_patient_banner: bool = False
    #: Resource types this server does not offer: searches and reads answer 404.
    not_offered: set[str] = field(default_factory=set)
    #: Searches using any of these parameters answer 500 (a server failing on them).
    failing_params: set[str] = field(default_factory=set)

    @property
    def fhir_base(self) -> str:
        return f"{self.base}/fhir"

    def of_type(self, resource_type: str) -> list[dict[str, Any]]:
        return [r for r in self.resources if r.get("resourceType") == resource_type]


def load_bundle_resources(name: str) -> list[dict[str, Any]]:
    bundle = json.loads((BUNDLES / name).read_text(encoding="utf-8"))
    return [e["resource"] for e in bundle["entry"]]


def _challenge(verifier: str) -> str:
    return (
        base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    )


def _searchset(resources: list[dict[str, Any]]) -> dict[str, Any]:
    bundle: dict[str, Any] = {
        "resourceType": "Bundle",
        "type": "searchset",
        "total": len(resources),
    }
    if resources:
        bundle["entry"] = [{"resource": r, "search": {"mode": "match"}} for r in resources]
    return bundle


def _ref_id(value: str, kind: str) -> str:
    return value.removeprefix(f"{kind}/")


def _days(resource: dict[str, Any]) -> set[str]:
    """The dates (YYYY-MM-DD, as recorded) a Procedure's performed/occurrence time touches."""
    days: set[str] = set()
    for member in ("performedPeriod", "occurrencePeriod"):
        period = resource.get(member) or {}
        days.update(str(period[k])[:10] for k in ("start", "end") if k in period)
    for member in ("performedDateTime", "occurrenceDateTime"):
        if member in resource:
            days.add(str(resource[member])[:10])
    return days


def make_fake_ehr_app(ehr: FakeEhr) -> FastAPI:
    app = FastAPI()

    @app.get("/fhir/.well-known/smart-configuration")
    async def smart_configuration() -> dict[str, Any]:
        ehr.configuration_requests += 1
        return {
            "authorization_endpoint": f"{ehr.base}/auth/authorize",
            "token_endpoint": f"{ehr.base}/auth/token",
            "capabilities": [
                "launch-ehr",
                "launch-standalone",
                "client-public",
                "context-ehr-encounter",
            ],
            "code_challenge_methods_supported": ehr.challenge_methods,
            "grant_types_supported": ["authorization_code"],
        }

    @app.get("/.well-known/smart-configuration")
    async def not_a_fhir_base() -> Response:
        # the server's root is a prefix of the FHIR base, not one: a web page, as a launcher's is
        return Response("<!doctype html><title>EHR</title>", media_type="text/html")

    @app.get("/auth/authorize")
    async def authorize(request: Request) -> Response:
        q = dict(request.query_params)
        ehr.authorize_requests.append(q)
        if (
            q.get("response_type") != "code"
            or q.get("client_id") != ehr.client_id
            or q.get("code_challenge_method") != "S256"
            or not q.get("code_challenge")
            or q.get("aud") != ehr.fhir_base
        ):
            return JSONResponse({"error": "invalid_request"}, status_code=400)
        code = secrets.token_urlsafe(16)
        ehr.grants[code] = Grant(
            client_id=q["client_id"],
            redirect_uri=q["redirect_uri"],
            challenge=q["code_challenge"],
            launch=q.get("launch"),
            scope=q.get("scope", ""),
        )
        target = q["redirect_uri"] + "?" + urlencode({"code": code, "state": q.get("state", "")})
        return RedirectResponse(target, status_code=302)

    @app.post("/auth/token")
    async def token(request: Request) -> Response:
        # application/x-www-form-urlencoded, parsed by hand (no multipart library needed)
        form = {k: v[0] for k, v in parse_qs((await request.body()).decode()).items()}
        ehr.token_requests.append(dict(form))
        grant = ehr.grants.pop(str(form.get("code", "")), None)
        if (
            grant is None
            or form.get("grant_type") != "authorization_code"
            or form.get("client_id") != grant.client_id
            or form.get("redirect_uri") != grant.redirect_uri
            or _challenge(str(form.get("code_verifier", ""))) != grant.challenge
        ):
            return JSONResponse({"error": "invalid_grant"}, status_code=400)
        ehr.pkce_verified += 1
        access_token = "tok-" + secrets.token_urlsafe(24)
        ehr.tokens.add(access_token)
        body: dict[str, Any] = {
            "access_token": access_token,
            "token_type": "Bearer",
            "expires_in": 3600,
            "scope": grant.scope,
        }
        if ehr.patient:
            body["patient"] = ehr.patient
        if grant.launch and ehr.app_context:
            body["appContext"] = ehr.app_context
        if ehr.need_patient_banner:
            body["need_patient_banner"] = True
        return JSONResponse(body)

    def authorized(request: Request) -> bool:
        header = request.headers.get("authorization", "")
        return header.startswith("Bearer ") and header[7:] in ehr.tokens

    @app.get("/fhir/{resource_type}/{ident}")
    async def read(resource_type: str, ident: str, request: Request) -> Response:
        ehr.fhir_requests.append(f"GET {resource_type}/{ident}")
        if not authorized(request):
            return JSONResponse({"resourceType": "OperationOutcome"}, status_code=401)
        if resource_type in ehr.not_offered:
            return JSONResponse({"resourceType": "OperationOutcome"}, status_code=404)
        for resource in ehr.of_type(resource_type):
            if resource.get("id") == ident:
                return JSONResponse(resource, media_type="application/fhir+json")
        return JSONResponse({"resourceType": "OperationOutcome"}, status_code=404)

    @app.get("/fhir/{resource_type}")
    async def search(resource_type: str, request: Request) -> Response:
        ehr.fhir_requests.append(f"GET {resource_type}?{request.url.query}")
        if not authorized(request):
            return JSONResponse({"resourceType": "OperationOutcome"}, status_code=401)
        if resource_type in ehr.not_offered:
            return JSONResponse({"resourceType": "OperationOutcome"}, status_code=404)
        params = request.query_params
        if ehr.failing_params & set(params.keys()):
            return JSONResponse({"resourceType": "OperationOutcome"}, status_code=500)
        found = ehr.of_type(resource_type)
        if "encounter" in params:
            wanted = _ref_id(params["encounter"], "Encounter")
            found = [
                r
                for r in found
                if _ref_id((r.get("encounter") or {}).get("reference", ""), "Encounter") == wanted
            ]
        if "patient" in params:
            wanted = _ref_id(params["patient"], "Patient")
            member = (
                "patient"
                if resource_type in ("Claim", "ExplanationOfBenefit")
                else "beneficiary"
                if resource_type == "Coverage"
                else "subject"
            )
            found = [
                r
                for r in found
                if _ref_id((r.get(member) or {}).get("reference", ""), "Patient") == wanted
            ]
        if "status" in params:
            found = [r for r in found if r.get("status") == params["status"]]
        if "date" in params:  # Procedure: performed/occurrence on that day (no prefixes)
            found = [r for r in found if params["date"] in _days(r)]
        return JSONResponse(_searchset(found), media_type="application/fhir+json")

    return app
