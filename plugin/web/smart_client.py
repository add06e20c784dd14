"""The SMART app's calls out: discovery, the token exchange, and the FHIR reads of one visit.

Only ``iss`` servers in ``FHIR_SERVER_ALLOWLIST`` are contacted (the caller checks, and paging
links must stay under ``iss``); the authorization and token endpoints a server names must be on
the issuer's own origin or under an allow-list entry; redirects are not followed. Every answer
is streamed and refused past ``FHIR_MAX_RESPONSE_BYTES`` (the FHIR fallback's reader and cap).
Errors carry a message fit for the page and the log: what failed, never a URL's query, a token
or resource content.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, quote, urlsplit

import httpx
import orjson

from cds_hooks.errors import PrefetchUnavailable
from cds_hooks.fhir_client import ResponseTooLarge, read_capped, url_within
from fhir_mappings.codes import PROGRESS_NOTE_TYPES
from plugin.services import HISTORY_KEYS

JsonObject = dict[str, Any]
FHIR_JSON = "application/fhir+json"
MAX_PAGES = 10
_FHIR_ID = re.compile(r"^[A-Za-z0-9\-.]{1,64}$")


class SmartError(Exception):
    """A launch step failed; ``message`` is safe to show and to log. ``upstream``: the HTTP
    status the other server answered, when it answered one."""

    def __init__(
        self, message: str, *, status_code: int = 502, upstream: int | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status_code = status_code
        self.upstream = upstream


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
    need_patient_banner: bool = False


def is_fhir_id(value: object) -> bool:
    return isinstance(value, str) and bool(_FHIR_ID.match(value))


def origin(url: str) -> str:
    """``scheme://host[:port]`` of ``url``."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def _endpoint(value: object, iss: str, name: str, allowlist: Sequence[str]) -> str:
    """An endpoint from the server's SMART configuration, if this service may send to it: on
    the issuer's own origin (scheme, host and port) or under an allow-list entry."""
    if not isinstance(value, str):
        raise SmartError(f"the server's SMART configuration has no {name}")
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise SmartError(f"the server's {name} is not an absolute http(s) URL")
    if urlsplit(iss).scheme == "https" and parts.scheme != "https":
        raise SmartError(f"the server's {name} is not https although the FHIR server is")
    if not (
        url_within(value, origin(iss), allow_query=True)
        or any(url_within(value, entry, allow_query=True) for entry in allowlist)
    ):
        raise SmartError(
            f"the server's SMART configuration names a {name} that is neither on the FHIR "
            "server's own origin nor in THERAPY_CDS_FHIR_SERVER_ALLOWLIST, so it was not "
            "contacted; add the authorization server to the allow-list if it is trusted"
        )
    return value


def _as_list(value: object) -> list[Any]:
    """A JSON array member, or nothing when the server sent another shape."""
    return value if isinstance(value, list) else []


async def _request_json(
    client: httpx.AsyncClient,
    method: str,
    url: str,
    *,
    what: str,
    unreachable: str,
    limit: int,
    headers: Mapping[str, str],
    data: Mapping[str, str] | None = None,
    refused: str | None = None,
) -> JsonObject:
    """One call whose answer must be a JSON object of at most ``limit`` bytes, read as a
    stream with the FHIR fallback's reader (:func:`cds_hooks.fhir_client.read_capped`).
    ``refused``: the message for a 401/403 answer (else it is reported as any other status)."""
    try:
        async with client.stream(method, url, headers=headers, data=data) as response:
            status = response.status_code
            if refused is not None and status in (401, 403):
                raise SmartError(f"{refused} (HTTP {status})", upstream=status)
            if status != 200:
                raise SmartError(f"{what} answered HTTP {status}", upstream=status)
            raw = await read_capped(response, limit)
    except ResponseTooLarge:
        raise SmartError(
            f"{what} answered more than {limit:,} bytes, the most this service reads "
            "(THERAPY_CDS_FHIR_MAX_RESPONSE_BYTES); reading stopped there"
        ) from None
    except httpx.HTTPError:
        raise SmartError(unreachable) from None
    try:
        decoded = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise SmartError(f"{what} did not answer JSON") from None
    if not isinstance(decoded, dict):
        raise SmartError(f"{what} did not answer a JSON object")
    return decoded


async def discover(
    client: httpx.AsyncClient, iss: str, *, allowlist: Sequence[str], limit: int
) -> SmartConfiguration:
    """``{iss}/.well-known/smart-configuration`` (SMART App Launch 2.0, §Discovery)."""
    data = await _request_json(
        client,
        "GET",
        f"{iss}/.well-known/smart-configuration",
        what="the SMART configuration endpoint",
        unreachable="the FHIR server's SMART configuration could not be fetched",
        limit=limit,
        headers={"Accept": "application/json"},
    )
    methods = data.get("code_challenge_methods_supported")
    if isinstance(methods, list) and "S256" not in methods:
        raise SmartError("the authorization server does not support PKCE with S256")
    return SmartConfiguration(
        authorization_endpoint=_endpoint(
            data.get("authorization_endpoint"), iss, "authorization_endpoint", allowlist
        ),
        token_endpoint=_endpoint(data.get("token_endpoint"), iss, "token_endpoint", allowlist),
    )


#: A failed discovery is remembered this long at most, so a flood does not refetch it either.
DISCOVERY_FAILURE_SECONDS = 10.0
#: Distinct issuers whose SMART configuration is kept (the least recently used is dropped).
DISCOVERY_CACHE_ENTRIES = 256


class DiscoveryCache:
    """Each issuer's SMART configuration (or its failure), reused for ``ttl_seconds``; one fetch
    at a time per issuer, however many launches wait for it."""

    def __init__(
        self,
        *,
        ttl_seconds: float,
        max_entries: int = DISCOVERY_CACHE_ENTRIES,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.ttl = ttl_seconds
        self.max_entries = max_entries
        self._clock = clock
        self._entries: OrderedDict[str, tuple[float, SmartConfiguration | SmartError]] = (
            OrderedDict()
        )
        self._loading: dict[str, asyncio.Task[SmartConfiguration | SmartError]] = {}

    def __len__(self) -> int:
        return len(self._entries)

    async def get(
        self, iss: str, fetch: Callable[[], Awaitable[SmartConfiguration]]
    ) -> SmartConfiguration:
        """``iss``'s configuration from the cache, else from ``fetch()`` (shared by every
        launch that asks while it runs)."""
        cached = self._entries.get(iss)
        if cached is not None and cached[0] > self._clock():
            self._entries.move_to_end(iss)
            value = cached[1]
        else:
            task = self._loading.get(iss)
            if task is None:
                task = asyncio.ensure_future(self._load(iss, fetch))
                self._loading[iss] = task
            value = await asyncio.shield(task)
        if isinstance(value, SmartError):
            raise SmartError(value.message, status_code=value.status_code)
        return value

    async def _load(
        self, iss: str, fetch: Callable[[], Awaitable[SmartConfiguration]]
    ) -> SmartConfiguration | SmartError:
        value: SmartConfiguration | SmartError
        try:
            value, ttl = await fetch(), self.ttl
        except SmartError as exc:
            value, ttl = exc, min(self.ttl, DISCOVERY_FAILURE_SECONDS)
        finally:
            self._loading.pop(iss, None)
        self._entries[iss] = (self._clock() + ttl, value)
        self._entries.move_to_end(iss)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)
        return value


def _app_context_encounter(value: object) -> str | None:
    """``appContext`` as the card link sent it: a JSON string (or an object some servers
    decode) with ``encounter``."""
    if isinstance(value, str):
        try:
            value = orjson.loads(value)
        except orjson.JSONDecodeError:
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
    limit: int,
) -> TokenResponse:
    """Authorization code + PKCE verifier -> access token and launch context (public client)."""
    data = await _request_json(
        client,
        "POST",
        token_endpoint,
        what="the token endpoint",
        unreachable="the token endpoint could not be reached",
        limit=limit,
        headers={"Accept": "application/json"},
        data={
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": redirect_uri,
            "client_id": client_id,
            "code_verifier": code_verifier,
        },
    )
    token = data.get("access_token")
    if not isinstance(token, str) or not token:
        raise SmartError("the token endpoint answered without an access_token")
    token_type = data.get("token_type")
    if not isinstance(token_type, str) or token_type.lower() != "bearer":
        raise SmartError("the token endpoint answered a token_type other than Bearer")
    expires = data.get("expires_in")
    patient = data.get("patient")
    scope = data.get("scope")
    encounter = _app_context_encounter(data.get("appContext")) or data.get("encounter")
    return TokenResponse(
        access_token=token,
        expires_in=float(expires)
        if isinstance(expires, int | float) and not isinstance(expires, bool)
        else None,
        scope=scope if isinstance(scope, str) else "",
        patient=patient if is_fhir_id(patient) else None,
        encounter=encounter if is_fhir_id(encounter) else None,
        need_patient_banner=data.get("need_patient_banner") is True,
    )


class FhirReader:
    """Reads from one FHIR server with one bearer token, each answer at most ``limit`` bytes."""

    def __init__(self, client: httpx.AsyncClient, base: str, token: str, *, limit: int) -> None:
        self._client = client
        self._base = base.rstrip("/")
        self._headers = {"Accept": FHIR_JSON, "Authorization": f"Bearer {token}"}
        self._limit = limit

    def __repr__(self) -> str:
        return "FhirReader(<token hidden>)"

    async def _get(self, url: str, what: str) -> JsonObject:
        return await _request_json(
            self._client,
            "GET",
            url,
            what=f"the FHIR server ({what})",
            unreachable=f"the FHIR server could not be reached for {what}",
            limit=self._limit,
            headers=self._headers,
            refused=f"the FHIR server refused {what}",
        )

    async def read(self, resource_type: str, ident: str) -> JsonObject:
        if not is_fhir_id(ident):
            raise SmartError(f"not a FHIR id for {resource_type}", status_code=400)
        data = await self._get(f"{self._base}/{resource_type}/{quote(ident)}", resource_type)
        if data.get("resourceType") != resource_type:
            raise SmartError(f"the FHIR server did not answer a {resource_type}")
        return data

    async def search(
        self, resource_type: str, params: Mapping[str, str], *, enough: int | None = None
    ) -> list[JsonObject]:
        """Every match of a search (or the first ``enough``), following ``next`` links under
        the same server, at most ``MAX_PAGES`` pages."""
        query = "&".join(f"{quote(k)}={quote(v, safe='')}" for k, v in params.items())
        url: str | None = f"{self._base}/{resource_type}?{query}"
        found: list[JsonObject] = []
        pages = 0
        while url is not None and pages < MAX_PAGES:
            pages += 1
            bundle = await self._get(url, f"the {resource_type} search")
            if bundle.get("resourceType") != "Bundle":
                raise SmartError(f"the {resource_type} search did not answer a Bundle")
            for entry in _as_list(bundle.get("entry")):
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
            if enough is not None and len(found) >= enough:
                break
            url = None
            for link in _as_list(bundle.get("link")):
                if isinstance(link, dict) and link.get("relation") == "next":
                    target = link.get("url")
                    if isinstance(target, str) and url_within(target, self._base, allow_query=True):
                        url = target
        return found


def reference_id(value: object, resource_type: str) -> str | None:
    """The id a Reference names for ``resource_type`` (``Type/id`` or an absolute URL ending
    in it, a version dropped); None for any other reference or shape."""
    reference = value.get("reference") if isinstance(value, Mapping) else None
    if not isinstance(reference, str):
        return None
    parts = reference.split("/")
    if len(parts) >= 4 and parts[-2] == "_history":
        parts = parts[:-2]
    if len(parts) < 2 or parts[-2] != resource_type or not is_fhir_id(parts[-1]):
        return None
    return parts[-1]


def subject_patient(resource: Mapping[str, Any]) -> str | None:
    return reference_id(resource.get("subject"), "Patient")


def searchset(resources: Sequence[JsonObject]) -> JsonObject:
    """Resources found by a search, as the searchset Bundle a CDS Hooks prefetch would hold."""
    return {
        "resourceType": "Bundle",
        "type": "searchset",
        "entry": [{"resource": r, "search": {"mode": "match"}} for r in resources],
    }


class ReaderAccess:
    """:class:`cds_hooks.service.FhirAccess` over a :class:`FhirReader`: the services' same-day
    search (``Procedure?patient=..&date=..``) run with the app's token and caps."""

    def __init__(self, reader: FhirReader) -> None:
        self._reader = reader

    async def fetch(self, relative_url: str, *, key: str = "query") -> dict[str, Any] | None:
        resource_type, _, query = relative_url.partition("?")
        if not query or not resource_type.isalpha():
            raise PrefetchUnavailable(key, "only searches are run from the SMART app")
        try:
            found = await self._reader.search(resource_type, dict(parse_qsl(query)))
        except SmartError as exc:
            raise PrefetchUnavailable(key, exc.message) from None
        return searchset(found)


#: Answers meaning "this server does not hold, or this token may not read, that resource type":
#: the read is treated as finding nothing (charges then count as not available).
NOT_OFFERED = frozenset({400, 403, 404, 405, 410, 501})
#: The patient's most recent Claims read to find the visit's (``_sort=-created``).
MAX_CLAIMS = 50
#: Other encounters of the same day whose charges are read (each one search).
MAX_SAME_DAY_ENCOUNTERS = 4


async def _optional(search: Awaitable[list[JsonObject]]) -> list[JsonObject]:
    try:
        return await search
    except SmartError as exc:
        if exc.upstream in NOT_OFFERED:
            return []
        raise


async def read_patient(reader: FhirReader, patient_id: str) -> JsonObject | None:
    """The Patient, or None when the server does not let this token read it."""
    try:
        return await reader.read("Patient", patient_id)
    except SmartError as exc:
        if exc.upstream in NOT_OFFERED:
            return None
        raise


def claims_about(
    claims: Sequence[JsonObject], procedures: Iterable[str], encounters: Iterable[str]
) -> list[JsonObject]:
    """The Claims whose ``procedure`` names one of ``procedures`` (ids) or whose items'
    ``encounter`` names one of ``encounters`` (ids): the charge lines of those visits."""
    wanted_procedures, wanted_encounters = set(procedures), set(encounters)
    kept = []
    for claim in claims:
        named = {
            reference_id(p.get("procedureReference"), "Procedure")
            for p in _as_list(claim.get("procedure"))
            if isinstance(p, Mapping)
        }
        seen = {
            reference_id(e, "Encounter")
            for item in _as_list(claim.get("item"))
            if isinstance(item, Mapping)
            for e in _as_list(item.get("encounter"))
        }
        if named & wanted_procedures or seen & wanted_encounters:
            kept.append(claim)
    return kept


def _ids(resources: Iterable[Mapping[str, Any]]) -> list[str]:
    return [r["id"] for r in resources if is_fhir_id(r.get("id"))]


@dataclass(frozen=True, slots=True)
class VisitRead:
    """What the app read of one visit: prefetch-like keys for the services' mapping entry."""

    resolved: dict[str, object]
    patient: JsonObject | None
    claims: list[JsonObject]  # the patient's recent Claims, for the same day's other visits
    resources: list[JsonObject]  # the Encounter and its Procedures (the clock's offset)
    visit_history: bool = False  # the patient's encounters and progress reports were read
    # issue 15: why the patient's Coverage could not be read (None: read, found or not)
    coverage_unread: str | None = None


async def read_visit(
    reader: FhirReader, encounter: JsonObject, patient_id: str | None
) -> VisitRead:
    """The visit's Procedures, its charges (ServiceRequests by encounter; the patient's Claims
    naming its Procedures or encounter), the Patient and the patient's CarePlans, keyed as the
    services' prefetch. A server that does not offer ServiceRequest, Claim or Patient to this
    token gives none of them (403, 404, ...): then no charge line is read, and the checks say so
    rather than claim what was billed."""
    encounter_id = encounter["id"]
    by_encounter = {"encounter": f"Encounter/{encounter_id}"}
    procedures = await reader.search("Procedure", by_encounter)
    requests = await _optional(reader.search("ServiceRequest", by_encounter))
    patient: JsonObject | None = None
    care_plans: list[JsonObject] = []
    claims: list[JsonObject] = []
    history: dict[str, object] | None = None
    coverage: list[JsonObject] = []
    coverage_unread: str | None = "no patient in context to read the coverage of"
    if patient_id is not None:
        coverage, coverage_unread = await read_coverage(reader, patient_id)
        patient = await read_patient(reader, patient_id)
        care_plans = await reader.search("CarePlan", {"patient": f"Patient/{patient_id}"})
        claims = await _optional(
            reader.search(
                "Claim",
                {
                    "patient": f"Patient/{patient_id}",
                    "_sort": "-created",
                    "_count": str(MAX_CLAIMS),
                },
                enough=MAX_CLAIMS,
            )
        )
        claims = claims[:MAX_CLAIMS]
        history = await _history(reader, patient_id)
    performers = await read_performers(reader, procedures)
    procedure_set = searchset(procedures)
    procedure_set["entry"] += [{"resource": r, "search": {"mode": "include"}} for r in performers]
    return VisitRead(
        resolved={
            "patient": patient,
            "encounter": encounter,
            "procedures": procedure_set,
            "carePlans": searchset(care_plans),
            "coverage": searchset(coverage),
            "charges": searchset(
                [*requests, *claims_about(claims, _ids(procedures), [encounter_id])]
            ),
            **(history or {}),
        },
        patient=patient,
        claims=claims,
        resources=[encounter, *procedures],
        coverage_unread=coverage_unread,
        visit_history=history is not None,
    )


async def _history(reader: FhirReader, patient_id: str) -> dict[str, object] | None:
    """The patient's encounters and progress reports under the services' history keys, as
    their prefetch templates ask (R-E6); ``None`` when the server does not offer them to
    this token: the progress-report interval is then not checked, and the page says so."""
    patient = {"patient": f"Patient/{patient_id}"}
    types = ",".join(PROGRESS_NOTE_TYPES)  # as the services' template asks
    try:
        encounters = await reader.search("Encounter", patient)
        reports = await reader.search("DocumentReference", {**patient, "type": types})
    except SmartError as exc:
        if exc.upstream in NOT_OFFERED:
            return None
        raise
    encounters_key, reports_key = HISTORY_KEYS
    return {encounters_key: searchset(encounters), reports_key: searchset(reports)}


#: Distinct performers (Practitioner / PractitionerRole) read for one visit (R-G3).
MAX_PERFORMERS = 8


async def read_performers(reader: FhirReader, procedures: Sequence[JsonObject]) -> list[JsonObject]:
    """The Procedures' performers (PractitionerRole, Practitioner) and the Practitioners those
    roles name -- what ``_include=Procedure:performer`` returns -- for the assistant modifiers
    (R-G3); at most :data:`MAX_PERFORMERS` reads. A server that does not offer them to this
    token gives none: the services' performers then stay unknown and nothing is guessed."""
    wanted: list[tuple[str, str]] = []
    for procedure in procedures:
        for performer in _as_list(procedure.get("performer")):
            actor = performer.get("actor") if isinstance(performer, Mapping) else None
            for kind in ("PractitionerRole", "Practitioner"):
                ident = reference_id(actor, kind)
                if ident is not None and (kind, ident) not in wanted:
                    wanted.append((kind, ident))
    found: list[JsonObject] = []
    done: set[tuple[str, str]] = set()
    while wanted and len(done) < MAX_PERFORMERS:
        kind, ident = wanted.pop(0)
        done.add((kind, ident))
        try:
            resource = await reader.read(kind, ident)
        except SmartError as exc:
            if exc.upstream in NOT_OFFERED:
                continue
            raise
        found.append(resource)
        practitioner = reference_id(resource.get("practitioner"), "Practitioner")
        if practitioner is not None and ("Practitioner", practitioner) not in done | set(wanted):
            wanted.append(("Practitioner", practitioner))
    return found


async def read_coverage(reader: FhirReader, patient_id: str) -> tuple[list[JsonObject], str | None]:
    """The patient's active Coverages (the services' ``coverage`` key), or ``([], why)`` when
    they cannot be read: optional, so any failure leaves the payer rule to the default."""
    try:
        found = await reader.search(
            "Coverage", {"patient": f"Patient/{patient_id}", "status": "active"}
        )
    except SmartError as exc:
        if exc.upstream in NOT_OFFERED:
            return [], "coverage not offered by the EHR to this app"
        return [], "coverage could not be read (the FHIR search failed)"
    return found, None


async def same_day_charges(
    reader: FhirReader, visit: VisitRead, encounter_id: str, day: Mapping[str, Any]
) -> dict[str, object]:
    """The charges of the same day's other encounters, given the day's Procedures (the
    services' same-day searchset): their ServiceRequests by encounter (at most
    ``MAX_SAME_DAY_ENCOUNTERS`` encounters) and the Claims naming them."""
    procedures = [
        e["resource"]
        for e in _as_list(day.get("entry"))
        if isinstance(e, Mapping) and isinstance(e.get("resource"), Mapping)
    ]
    others: list[str] = []
    for procedure in procedures:
        other = reference_id(procedure.get("encounter"), "Encounter")
        if other is not None and other != encounter_id and other not in others:
            others.append(other)
    requests: list[JsonObject] = []
    for other in others[:MAX_SAME_DAY_ENCOUNTERS]:
        requests += await _optional(
            reader.search("ServiceRequest", {"encounter": f"Encounter/{other}"})
        )
    claims = claims_about(visit.claims, _ids(procedures), others)
    return {"sameDayCharges": searchset([*requests, *claims])}


async def patient_encounters(reader: FhirReader, patient_id: str) -> list[JsonObject]:
    """The patient's most recent encounters, to pick one after a standalone launch."""
    found = await reader.search(
        "Encounter",
        {"patient": f"Patient/{patient_id}", "_sort": "-date", "_count": "20"},
        enough=20,
    )
    return found[:20]
