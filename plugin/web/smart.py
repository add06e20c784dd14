"""The SMART on FHIR app: ``/smart/launch`` and ``/smart/app`` (SMART App Launch 2.0).

EHR launch (``iss`` + ``launch``) and standalone launch (``iss`` only, or a form to enter it):
discovery at ``{iss}/.well-known/smart-configuration``, authorization code with PKCE (S256) and
``state``, the token exchange done here with httpx, then the visit's Encounter, Procedures and
charges, the Patient and their CarePlans read with the token, run through the services' own
pipeline (:func:`plugin.services.pooled_record`: the launch's patient bound, the day's other
Procedures pooled) and shown as the same timeline and findings. The encounter comes from the
card link's ``appContext`` (``{"encounter": "<id>"}``) or the token response's launch context;
the session stays bound to the launch's patient and encounter.

Only ``iss`` servers in ``FHIR_SERVER_ALLOWLIST`` are contacted, and only authorization and
token endpoints on the issuer's origin or in that list. Each issuer's SMART configuration is
cached. Launch state and tokens stay in a short-lived session in the shared database, sealed
with ``THERAPY_CDS_SESSION_KEY`` (:mod:`plugin.web.smart_session`), apart from the pending
launches anyone can start, so any worker or node serves any step of a launch; the browser holds
an opaque cookie.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import secrets
from collections.abc import Awaitable, Callable, Mapping
from typing import Any
from urllib.parse import urlencode, urlsplit

import httpx
from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response
from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError
from starlette.concurrency import run_in_threadpool

from cds_hooks.fhir_client import redact_httpx_logs, server_allowed
from fhir_mappings import map_cds_hooks
from plugin.cards import other_patient_summary
from plugin.pipeline import TooManyProceduresError, check_record, require_procedures_within
from plugin.rules.payer import PayerChoice
from plugin.rules.vocabulary import (
    CHOICES,
    FROM_COVERAGE,
    PairRule,
    PayerRule,
    VocabularyError,
    parse,
    parse_payer_choice,
)
from plugin.services import history_note, not_pooled_note, pooled_record
from plugin.settings import Settings
from plugin.web.pages import render
from plugin.web.settings import WebSettings
from plugin.web.smart_client import (
    DiscoveryCache,
    FhirReader,
    ReaderAccess,
    SmartConfiguration,
    SmartError,
    discover,
    exchange_code,
    is_fhir_id,
    origin,
    patient_encounters,
    read_visit,
    same_day_charges,
    subject_patient,
)
from plugin.web.smart_session import (
    COOKIE_NAME,
    SessionStore,
    SmartSession,
    code_challenge,
    session_key,
)
from plugin.web.visits import AnalysisView, analysis_view

logger = logging.getLogger(__name__)

REFUSED_ENCOUNTER = (
    "This encounter is not part of the launch: the app shows only the visits of the patient "
    "the EHR launched it for. Open the app again from that patient's chart."
)

#: The launch form suggests at most this many allow-list entries, each probed (SMART discovery,
#: through the cache) for at most PROBE_SECONDS.
MAX_SUGGESTED = 10
PROBE_SECONDS = 2.0
#: What the mapping and the checks may raise on records of a shape or value they cannot read
#: (an overflowing date, say): shown as a page saying so, never a 500.
UNREADABLE_RECORDS = (
    TypeError,
    ValueError,
    LookupError,
    AttributeError,
    ArithmeticError,
    RecursionError,
)


class SmartApp:
    """The app's state: settings, the session store and how to reach other servers."""

    def __init__(
        self,
        settings: Settings,
        web: WebSettings,
        *,
        engine: Engine,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.settings = settings
        self.web = web
        self.sessions = SessionStore(
            engine,
            session_key(settings),
            lifetime_seconds=web.smart_session_seconds,
            max_sessions=web.smart_max_sessions,
            max_pending=web.smart_max_pending_launches,
            max_pending_per_client=web.smart_max_pending_per_client,
        )
        self.configurations = DiscoveryCache(ttl_seconds=web.smart_configuration_cache_seconds)
        self.max_response_bytes = settings.fhir_max_response_bytes
        self.list_servers = web.smart_servers_listed(require_auth=settings.require_auth)
        self._transport = transport
        redact_httpx_logs()  # FHIR URLs hold patient and encounter ids

    def client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(
            transport=self._transport,
            timeout=self.web.smart_http_timeout_seconds,
            follow_redirects=False,
        )

    async def configuration(self, iss: str) -> SmartConfiguration:
        """``iss``'s SMART configuration, fetched at most once per cache lifetime."""

        async def fetch() -> SmartConfiguration:
            async with self.client() as client:
                return await discover(
                    client,
                    iss,
                    allowlist=self.settings.fhir_server_allowlist,
                    limit=self.max_response_bytes,
                )

        return await self.configurations.get(iss, fetch)

    async def answering_bases(self) -> list[str]:
        """The allow-list entries that are themselves FHIR bases answering SMART discovery
        (entries are prefixes; one that is not a base is not suggested). Probed through the
        discovery cache, at most ``MAX_SUGGESTED`` of them, each given ``PROBE_SECONDS``."""

        async def probe(entry: str) -> str | None:
            try:
                await asyncio.wait_for(self.configuration(entry), timeout=PROBE_SECONDS)
            except (SmartError, TimeoutError):
                return None
            return entry

        entries = list(dict.fromkeys(e.rstrip("/") for e in self.settings.fhir_server_allowlist))
        found = await asyncio.gather(*(probe(e) for e in entries[:MAX_SUGGESTED]))
        return [entry for entry in found if entry is not None]

    def launch_form(
        self, *, status_code: int = 200, servers: list[str], error: str = ""
    ) -> Response:
        return render(
            "smart_launch.html",
            {
                "page": "smart",
                "list_servers": self.list_servers,
                "servers": servers,
                "client_id": self.web.smart_client_id,
                "error": error,
            },
            status_code=status_code,
            embeddable=True,
        )

    def redirect_uri(self, request: Request) -> str:
        if self.settings.public_base_url:
            return f"{self.settings.public_base_url}/smart/app"
        return str(request.url_for("smart_app"))

    def error_page(self, message: str, status_code: int) -> Response:
        return render(
            "smart_error.html",
            {"page": "smart", "message": message},
            status_code=status_code,
            embeddable=True,
        )

    def set_cookie(self, response: Response, request: Request, session: SmartSession) -> None:
        samesite = self.web.smart_cookie_samesite
        secure = (
            samesite == "none"
            or request.url.scheme == "https"
            or (self.settings.public_base_url or "").startswith("https://")
        )
        response.set_cookie(
            COOKIE_NAME,
            session.id,
            max_age=self.web.smart_session_seconds,
            path="/smart",
            httponly=True,
            secure=secure,
            # Lax, not Strict: the authorization server sends the browser back with a top-level
            # cross-site GET, which must carry the cookie. "none" for apps framed by the EHR.
            samesite=samesite,
        )


def smart_router(app_state: SmartApp) -> APIRouter:
    router = APIRouter(include_in_schema=False)
    smart = app_state

    def sessions_unavailable_as_page(
        handler: Callable[[Request], Awaitable[Response]],
    ) -> Callable[[Request], Awaitable[Response]]:
        """The database holding the sessions failing (unreachable, locked too long) is a page
        saying so, 503, never a 500."""

        @functools.wraps(handler)
        async def guarded(request: Request) -> Response:
            try:
                return await handler(request)
            except SQLAlchemyError as exc:
                logger.warning("smart app: the session store failed (%s)", type(exc).__name__)
                return smart.error_page(
                    "The app cannot reach its session store (the service's database) right "
                    "now. Try again in a moment; if it persists, tell the service's operator.",
                    503,
                )

        return guarded

    @router.get("/smart/launch")
    @sessions_unavailable_as_page
    async def smart_launch(request: Request) -> Response:
        params = request.query_params
        iss = (params.get("iss") or "").strip().rstrip("/")
        launch = params.get("launch")
        allowlist = smart.settings.fhir_server_allowlist
        if not iss:
            servers = await smart.answering_bases() if smart.list_servers else []
            return smart.launch_form(servers=servers)
        if not server_allowed(iss, allowlist):
            logger.warning("smart launch refused: iss not in THERAPY_CDS_FHIR_SERVER_ALLOWLIST")
            return smart.error_page(
                "This FHIR server is not one this service may contact "
                "(THERAPY_CDS_FHIR_SERVER_ALLOWLIST).",
                400,
            )
        try:
            config = await smart.configuration(iss)
        except SmartError as exc:
            logger.warning("smart launch failed: %s", exc.message)
            message = (
                f"{iss} does not answer as a SMART on FHIR server ({exc.message}). Enter the FHIR"
                " server's base URL: the address its resources are under, where"
                " /.well-known/smart-configuration answers (for example"
                " https://ehr.example.org/fhir)."
            )
            if launch:
                return smart.error_page(message, exc.status_code)
            servers = await smart.answering_bases() if smart.list_servers else []
            return smart.launch_form(status_code=400, servers=servers, error=message)
        session = await run_in_threadpool(
            smart.sessions.create,
            iss=iss,
            token_endpoint=config.token_endpoint,
            redirect_uri=smart.redirect_uri(request),
            client=request.client.host if request.client else "",
        )
        query = {
            "response_type": "code",
            "client_id": smart.web.smart_client_id,
            "redirect_uri": session.redirect_uri,
            "scope": smart.web.smart_scope if launch else smart.web.smart_standalone_scope,
            "state": session.state or "",
            "aud": iss,
            "code_challenge": code_challenge(session.code_verifier or ""),
            "code_challenge_method": "S256",
        }
        if launch:
            query["launch"] = launch
        separator = "&" if urlsplit(config.authorization_endpoint).query else "?"
        response = RedirectResponse(
            config.authorization_endpoint + separator + urlencode(query), status_code=302
        )
        smart.set_cookie(response, request, session)
        response.headers["Cache-Control"] = "no-store"
        response.headers["Referrer-Policy"] = "no-referrer"
        logger.info(
            "smart launch started kind=%s iss_origin=%s",
            "ehr" if launch else "standalone",
            origin(iss),
        )
        return response

    async def callback(request: Request, session: SmartSession | None) -> Response:
        params = request.query_params
        state, code = params.get("state"), params.get("code") or ""
        if session is None or session.state is None or session.code_verifier is None:
            return smart.error_page(
                "This launch has expired or was already used. Start it again from the EHR.", 400
            )
        if state is None or not secrets.compare_digest(state, session.state):
            await run_in_threadpool(smart.sessions.drop, session.id)
            logger.warning("smart callback refused: state does not match")
            return smart.error_page("The authorization answer does not match this launch.", 400)
        # one use, whichever worker is asked first
        verifier = await run_in_threadpool(smart.sessions.claim, session)
        if verifier is None:
            return smart.error_page(
                "This launch has expired or was already used. Start it again from the EHR.", 400
            )
        try:
            async with smart.client() as client:
                token = await exchange_code(
                    client,
                    session.token_endpoint,
                    code=code,
                    redirect_uri=session.redirect_uri,
                    client_id=smart.web.smart_client_id,
                    code_verifier=verifier,
                    limit=smart.max_response_bytes,
                )
        except SmartError as exc:
            await run_in_threadpool(smart.sessions.drop, session.id)
            logger.warning("smart token exchange failed: %s", exc.message)
            return smart.error_page(exc.message, exc.status_code)
        await run_in_threadpool(
            smart.sessions.authorize,
            session,
            access_token=token.access_token,
            patient=token.patient,
            encounter=token.encounter,
            expires_in=token.expires_in,
            need_patient_banner=token.need_patient_banner,
        )
        logger.info("smart token exchange ok")
        # Drop the code from the address bar (and from any later Referer).
        return RedirectResponse(str(request.url_for("smart_app")), status_code=303)

    @router.get("/smart/app", name="smart_app")
    @sessions_unavailable_as_page
    async def smart_app(request: Request) -> Response:
        params = request.query_params
        session = await run_in_threadpool(smart.sessions.get, request.cookies.get(COOKIE_NAME))
        if "error" in params:
            if session is not None:
                await run_in_threadpool(smart.sessions.drop, session.id)
            return smart.error_page(
                f"The authorization server refused the launch ({params.get('error', '')[:64]}).",
                400,
            )
        if "code" in params:
            return await callback(request, session)
        if session is None or not session.authorized:
            return smart.error_page(
                "No authorized launch in this browser session. Open the app from the EHR, or "
                "start a standalone launch.",
                401,
            )
        return await show_visit(request, session)

    async def show_visit(request: Request, session: SmartSession) -> Response:
        params = request.query_params
        payer_name, pair_name = CHOICES[PayerRule].member, CHOICES[PairRule].member
        try:  # the payer rule: None (absent, empty or "coverage") is the Coverage's
            payer = parse_payer_choice(params.get(payer_name) or FROM_COVERAGE, f"'{payer_name}'")
            pair = parse(
                PairRule, params.get(pair_name, smart.settings.pair_interval_rule), f"'{pair_name}'"
            )
        except VocabularyError as exc:
            return smart.error_page(f"{exc}.", 400)
        chosen = params.get("encounter")
        if chosen is not None and not is_fhir_id(chosen):
            return smart.error_page("Not a FHIR id for an Encounter.", 400)
        if chosen not in (None, session.encounter) and session.patient is None:
            # launched for one encounter and no patient: that encounter is all it may show
            logger.warning("smart app refused an encounter other than the launch's")
            return smart.error_page(REFUSED_ENCOUNTER, 403)
        encounter_id = chosen or session.encounter
        cap = smart.settings.max_procedures_per_visit
        try:
            async with smart.client() as client:
                fhir = FhirReader(
                    client, session.iss, session.access_token or "", limit=smart.max_response_bytes
                )
                if encounter_id is None:
                    if session.patient is None:
                        return smart.error_page(
                            "The launch gave neither an encounter nor a patient.", 400
                        )
                    encounters = await patient_encounters(fhir, session.patient)
                    return render(
                        "smart_pick.html",
                        {"page": "smart", "encounters": [_encounter_row(e) for e in encounters]},
                        embeddable=True,
                    )
                encounter = await fhir.read("Encounter", encounter_id)
                if session.patient is not None and _about_another_patient(
                    encounter, session.patient
                ):
                    # never shown, never kept: the session's encounter stays the launch's
                    logger.warning("smart app refused an encounter about another patient")
                    return smart.error_page(REFUSED_ENCOUNTER, 403)
                patient_id = session.patient or subject_patient(encounter)
                visit = await read_visit(fhir, encounter, patient_id)
                record, same_day = await pooled_record(
                    None,
                    visit.resolved,
                    patient_id=patient_id,
                    fhir=ReaderAccess(fhir),
                    more=lambda day: same_day_charges(fhir, visit, encounter_id, day),
                )
            require_procedures_within(len(record.services), cap, "the visit")

            def analyse() -> AnalysisView:
                result = check_record(
                    record,
                    payer_rule=payer or smart.settings.payer_rule,
                    pair_rule=pair,
                    max_procedures_per_visit=cap,
                    visit_history=visit.visit_history,
                    payer=PayerChoice(
                        mapping=smart.settings.payer_mapping(),
                        override=None if payer is None else "chosen in the app",
                        unread=visit.coverage_unread,
                    ),
                )
                return analysis_view(result, resources=visit.resources)

            # CPU work (rules, drawing) on a worker thread: the event loop stays free
            view = await run_in_threadpool(analyse)
        except SmartError as exc:
            logger.warning("smart app read failed: %s", exc.message)
            return smart.error_page(exc.message, exc.status_code)
        except TooManyProceduresError as exc:
            return smart.error_page(
                f"{exc}. Raise THERAPY_CDS_MAX_PROCEDURES_PER_VISIT if real visits are this large.",
                413,
            )
        except UNREADABLE_RECORDS as exc:
            logger.warning("smart app could not analyse the visit: %s", type(exc).__name__)
            return smart.error_page(
                "The EHR's records for this visit have a shape the checks cannot read.", 502
            )
        procedures = len(record.services)
        logger.info(
            "smart app shown visits=%d procedures=%d same_day=%s other_patient_resources=%d",
            len(view.visits),
            procedures,
            same_day,
            record.other_patient_resources,
        )
        care_plans = visit.resolved["carePlans"]
        return render(
            "smart_app.html",
            {
                "page": "smart",
                "view": view,
                "encounter": _encounter_row(encounter),
                "procedures": procedures,
                "care_plans": len(care_plans.get("entry", []))
                if isinstance(care_plans, Mapping)
                else 0,
                "payer_rule": payer or FROM_COVERAGE,
                "pair_rule": pair,
                "iss_origin": origin(session.iss),
                "banner": _banner(visit.patient, patient_id)
                if session.need_patient_banner
                else None,
                "notes": [
                    n
                    for n in (not_pooled_note(same_day), history_note(visit.visit_history))
                    if n is not None
                ],
                "other_patient": other_patient_summary(record.other_patient_resources)
                if record.other_patient_resources
                else None,
            },
            embeddable=True,
        )

    return router


def _about_another_patient(encounter: Mapping[str, Any], patient_id: str) -> bool:
    """Is ``encounter`` about another patient than ``patient_id``, as the services' mapping
    reads a subject (the same filter, so the app and the services never disagree)?"""
    return (
        map_cds_hooks(None, {"encounter": encounter}, patient_id=patient_id).other_patient_resources
        > 0
    )


def _banner(patient: Mapping[str, Any] | None, patient_id: str | None) -> dict[str, str]:
    """What the patient banner shows: the name and birth date (the page escapes them)."""
    name, birth = "", ""
    if patient is not None:
        names = [n for n in _as_list(patient.get("name")) if isinstance(n, Mapping)]
        official = [n for n in names if n.get("use") in ("official", "usual")] or names
        if official:
            first = official[0]
            name = _text(first.get("text")) or " ".join(
                part
                for part in (
                    *(_text(g) for g in _as_list(first.get("given"))),
                    _text(first.get("family")),
                )
                if part
            )
        birth = _text(patient.get("birthDate"))
    return {"name": name[:200], "birth_date": birth[:10], "id": patient_id or ""}


def _as_list(value: object) -> list[Any]:
    return value if isinstance(value, list) else []


def _encounter_row(encounter: Mapping[str, Any]) -> dict[str, str]:
    """What the pages show of an Encounter, whatever shape the server gave its members."""
    period = encounter.get("period") or encounter.get("actualPeriod")
    if not isinstance(period, Mapping):
        period = {}
    return {
        "id": _text(encounter.get("id")),
        "status": _text(encounter.get("status")),
        "start": _moment(period.get("start")),
        "end": _moment(period.get("end")),
        "class": _encounter_class(encounter.get("class")),
    }


def _encounter_class(value: object) -> str:
    """R4 ``class`` (a Coding) or R5 ``class`` (a list of CodeableConcepts): the first display
    or code; empty for any other shape."""
    coding: object = value
    if isinstance(value, list):
        concept = value[0] if value else None
        codings = concept.get("coding") if isinstance(concept, Mapping) else None
        coding = codings[0] if isinstance(codings, list) and codings else None
    if not isinstance(coding, Mapping):
        return ""
    return _text(coding.get("display")) or _text(coding.get("code"))


def _text(value: object) -> str:
    """A string member as is; anything else (a number, object, list) as nothing."""
    return value if isinstance(value, str) else ""


def _moment(value: object) -> str:
    """``2025-03-04T10:00:00-05:00`` -> ``2025-03-04 10:00`` (as recorded, offset dropped)."""
    if not isinstance(value, str):
        return ""
    return value[:16].replace("T", " ") if "T" in value else value[:10]
