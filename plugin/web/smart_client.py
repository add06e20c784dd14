"""The SMART app's calls out: discovery, the token exchange, and the FHIR reads of one visit.

Only ``iss`` servers in ``FHIR_SERVER_ALLOWLIST`` are contacted (the caller checks, and paging
links must stay under ``iss``); redirects are not followed. Errors carry a message fit for the
page and the log: what failed, never a URL's query, a token or resource content.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, urlsplit

import httpx

from cds_hooks.fhir_client import url_within

JsonObject = dict[str, Any]
FHIR_JSON = "application/fhir+json"
MAX_PAGES = 10
_FHIR_ID = re.compile(r"^[A-Za-z0-9\-.]{1,64}$")


class SmartError(Exception):
    """A launch step failed; ``message`` is safe to show and to log."""

    def __init__(self, message: str, *, status_code: int = 502) -> None:
        super().__init__(message)
        self.message = message
        self.status_code = status_code


@dataclass(frozen=True, slots=True)
class SmartConfiguration:
    authorization_endpoint: str
    token_endpoint: str


@dataclass(frozen=True, slots=True)
class TokenResponse:
    access_token: str = field(repr=False)
    expires_in: float | None
    scope: str
    patient: str | None = field(repr=False)
    encounter: str | None = field(repr=False)


def is_fhir_id(value: object) -> bool:
    return isinstance(value, str) and bool(_FHIR_ID.match(value))


def _endpoint(value: object, iss: str, name: str) -> str:
    if not isinstance(value, str):
        raise SmartError(f"the server's SMART configuration has no {name}")
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise SmartError(f"the server's {name} is not an absolute http(s) URL")
    if urlsplit(iss).scheme == "https" and parts.scheme != "https":
        raise SmartError(f"the server's {name} is not https although the FHIR server is")
    return value


async def _json(response: httpx.Response, what: str) -> JsonObject:
    if response.status_code != 200:
        raise SmartError(f"{what} answered HTTP {response.status_code}")
    try:
        data = response.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise SmartError(f"{what} did not answer JSON") from None
    if not isinstance(data, dict):
        raise SmartError(f"{what} did not answer a JSON object")
    return data


async def discover(client: httpx.AsyncClient, iss: str) -> SmartConfiguration:
    """``{iss}/.well-known/smart-configuration`` (SMART App Launch 2.0, §Discovery)."""
    try:
        response = await client.get(
            f"{iss}/.well-known/smart-configuration", headers={"Accept": "application/json"}
        )
    except httpx.HTTPError:
        raise SmartError("the FHIR server's SMART configuration could not be fetched") from None
    data = await _json(response, "the SMART configuration endpoint")
    methods = data.get("code_challenge_methods_supported")
    if isinstance(methods, list) and "S256" not in methods:
        raise SmartError("the authorization server does not support PKCE with S256")
    return SmartConfiguration(
        authorization_endpoint=_endpoint(
            data.get("authorization_endpoint"), iss, "authorization_endpoint"
        ),
        token_endpoint=_endpoint(data.get("token_endpoint"), iss, "token_endpoint"),
    )


def _app_context_encounter(value: object) -> str | None:
    """``appContext`` as the card link sent it: a JSON string (or an object some servers
    decode) with ``encounter``."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            return None
    if isinstance(value, Mapping):
        encounter = value.get("encounter")
        if isinstance(encounter, str):
            encounter = encounter.removeprefix("Encounter/")
            return encounter if is_fhir_id(encounter) else None
    return None


async def exchange_code(
    client: httpx.AsyncClient,
    token_endpoint: str,
    *,
    code: str,
    redirect_uri: str,
    client_id: str,
    code_verifier: str,
) -> TokenResponse:
    """Authorization code + PKCE verifier -> access token and launch context (public client)."""
    try:
        response = await client.post(
            token_endpoint,
            data={
                "grant_type": "authorization_code",
                "code": code,
                "redirect_uri": redirect_uri,
                "client_id": client_id,
                "code_verifier": code_verifier,
            },
            headers={"Accept": "application/json"},
        )
    except httpx.HTTPError:
        raise SmartError("the token endpoint could not be reached") from None
    data = await _json(response, "the token endpoint")
    token = data.get("access_token")
    if not isinstance(token, str) or not token:
        raise SmartError("the token endpoint answered without an access_token")
    token_type = data.get("token_type")
    if not isinstance(token_type, str) or token_type.lower() != "bearer":
        raise SmartError("the token endpoint answered a token_type other than Bearer")
    expires = data.get("expires_in")
    patient = data.get("patient")
    encounter = _app_context_encounter(data.get("appContext")) or data.get("encounter")
    return TokenResponse(
        access_token=token,
        expires_in=float(expires) if isinstance(expires, int | float) else None,
        scope=str(data.get("scope", "")),
        patient=patient if is_fhir_id(patient) else None,
        encounter=encounter if is_fhir_id(encounter) else None,
    )


class FhirReader:
    """Reads from one FHIR server with one bearer token."""

    def __init__(self, client: httpx.AsyncClient, base: str, token: str) -> None:
        self._client = client
        self._base = base.rstrip("/")
        self._headers = {"Accept": FHIR_JSON, "Authorization": f"Bearer {token}"}

    def __repr__(self) -> str:
        return "FhirReader(<token hidden>)"

    async def _get(self, url: str, what: str) -> JsonObject:
        try:
            response = await self._client.get(url, headers=self._headers)
        except httpx.HTTPError:
            raise SmartError(f"the FHIR server could not be reached for {what}") from None
        if response.status_code in (401, 403):
            raise SmartError(f"the FHIR server refused {what} (HTTP {response.status_code})")
        return await _json(response, f"the FHIR server ({what})")

    async def read(self, resource_type: str, ident: str) -> JsonObject:
        if not is_fhir_id(ident):
            raise SmartError(f"not a FHIR id for {resource_type}", status_code=400)
        data = await self._get(f"{self._base}/{resource_type}/{quote(ident)}", resource_type)
        if data.get("resourceType") != resource_type:
            raise SmartError(f"the FHIR server did not answer a {resource_type}")
        return data

    async def search(self, resource_type: str, params: Mapping[str, str]) -> list[JsonObject]:
        """Every match of a search, following ``next`` links under the same server."""
        query = "&".join(f"{quote(k)}={quote(v, safe='')}" for k, v in params.items())
        url: str | None = f"{self._base}/{resource_type}?{query}"
        found: list[JsonObject] = []
        pages = 0
        while url is not None and pages < MAX_PAGES:
            pages += 1
            bundle = await self._get(url, f"the {resource_type} search")
            if bundle.get("resourceType") != "Bundle":
                raise SmartError(f"the {resource_type} search did not answer a Bundle")
            for entry in bundle.get("entry") or ():
                if not isinstance(entry, dict):
                    continue
                resource, search = entry.get("resource"), entry.get("search")
                mode = search.get("mode", "match") if isinstance(search, dict) else "match"
                if (
                    isinstance(resource, dict)
                    and resource.get("resourceType") == resource_type
                    and mode == "match"
                ):
                    found.append(resource)
            url = None
            for link in bundle.get("link") or ():
                if isinstance(link, dict) and link.get("relation") == "next":
                    target = link.get("url")
                    if isinstance(target, str) and url_within(target, self._base, allow_query=True):
                        url = target
        return found


def subject_patient(resource: Mapping[str, Any]) -> str | None:
    subject = resource.get("subject")
    reference = subject.get("reference") if isinstance(subject, Mapping) else None
    if isinstance(reference, str) and reference.startswith("Patient/"):
        ident = reference.removeprefix("Patient/")
        return ident if is_fhir_id(ident) else None
    return None


async def read_visit(reader: FhirReader, encounter_id: str, patient_id: str | None) -> JsonObject:
    """A ``collection`` Bundle of the Encounter, its Procedures and the patient's CarePlans."""
    encounter = await reader.read("Encounter", encounter_id)
    patient = subject_patient(encounter) or patient_id
    procedures = await reader.search("Procedure", {"encounter": f"Encounter/{encounter_id}"})
    care_plans = (
        await reader.search("CarePlan", {"patient": f"Patient/{patient}"}) if patient else []
    )
    return {
        "resourceType": "Bundle",
        "type": "collection",
        "entry": [{"resource": r} for r in (encounter, *procedures, *care_plans)],
    }


async def patient_encounters(reader: FhirReader, patient_id: str) -> list[JsonObject]:
    """The patient's most recent encounters, to pick one after a standalone launch."""
    found = await reader.search(
        "Encounter", {"patient": f"Patient/{patient_id}", "_sort": "-date", "_count": "20"}
    )
    return found[:20]
