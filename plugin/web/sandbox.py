"""``/sandbox``: fire a hook at this service with a sample (or your own) bundle, as an EHR would.

The page asks the server to build the CDS Hooks request
(:func:`plugin.hook_request.build_hook_request`), then POSTs it itself to
``/cds-services/{id}`` -- the same endpoint, authentication and feedback store an EHR uses --
and renders the cards. The timeline comes from the same pipeline.

Served only in development (client authentication off) unless ``THERAPY_CDS_SANDBOX=true``; with
authentication on the page asks for a client JWT and sends it, so it is never a way around it.
The two helpers (request, timeline) only compute on what is posted to them: they read no stored
data and call no other server.
"""

from __future__ import annotations

import logging
from typing import Any, Literal, cast

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from cds_hooks.body import read_json_object
from cds_hooks.errors import CdsError, error_response
from plugin.hook_request import HOOKS, BundleError, build_hook_request
from plugin.pipeline import TooManyProceduresError
from plugin.services import DISCHARGE_SERVICE, EXTENSION_KEY, ORDER_SIGN_SERVICE
from plugin.settings import CARD_POLICIES, Settings
from plugin.web.pages import BodyError, json_error, render
from plugin.web.samples import scenario_bundle, scenarios
from plugin.web.settings import WebSettings
from plugin.web.visits import analyse_bundle

logger = logging.getLogger(__name__)

SERVICE_FOR_HOOK = {"order-sign": ORDER_SIGN_SERVICE, "encounter-discharge": DISCHARGE_SERVICE}
PAYER_RULES = ("cms", "ama")
PAIR_RULES = ("cms", "strict")


def _choice(data: dict[str, Any], key: str, allowed: tuple[str, ...], default: str) -> str:
    value = data.get(key, default)
    if value not in allowed:
        raise BodyError(400, f"'{key}' must be one of {', '.join(allowed)}")
    return str(value)


def _bundle(data: dict[str, Any]) -> dict[str, Any]:
    bundle = data.get("bundle")
    if not isinstance(bundle, dict) or bundle.get("resourceType") != "Bundle":
        raise BodyError(400, "'bundle' must be a FHIR Bundle (resourceType 'Bundle')")
    return bundle


def sandbox_router(settings: Settings, web: WebSettings) -> APIRouter:
    """The sandbox page and its two helpers."""
    router = APIRouter(include_in_schema=False)
    samples_dir = web.sample_bundles_dir

    @router.get("/sandbox")
    async def sandbox_page() -> Response:
        return render(
            "sandbox.html",
            {
                "page": "sandbox",
                "sandbox_on": True,
                "scenarios": scenarios(samples_dir),
                "hooks": HOOKS,
                "services": SERVICE_FOR_HOOK,
                "payer_rule": settings.payer_rule,
                "pair_rule": settings.pair_interval_rule,
                "card_policy": settings.card_policy,
                "auth_required": settings.require_auth,
                "extension_key": EXTENSION_KEY,
            },
        )

    @router.get("/sandbox/samples/{file}")
    async def sample(file: str) -> Response:
        bundle = scenario_bundle(samples_dir, file)
        if bundle is None:
            return json_error(404, "no sample bundle of that name")
        return JSONResponse(bundle)

    @router.post("/sandbox/api/request")
    async def hook_request(request: Request) -> Response:
        """Body ``{bundle, hook, payerRule, pairRule, cardPolicy}`` -> ``{serviceId, request}``;
        the choices travel in the request extension, as any EHR may send them."""
        try:
            data = await read_json_object(request, max_bytes=web.sandbox_max_bytes)
            hook = _choice(data, "hook", HOOKS, "order-sign")
            payer = _choice(data, "payerRule", PAYER_RULES, settings.payer_rule)
            pair = _choice(data, "pairRule", PAIR_RULES, settings.pair_interval_rule)
            policy = _choice(data, "cardPolicy", CARD_POLICIES, settings.card_policy)
            built = build_hook_request(
                _bundle(data), cast(Literal["order-sign", "encounter-discharge"], hook)
            )
        except CdsError as exc:  # the body itself: media type, size, JSON limits
            return error_response(exc)
        except BodyError as exc:
            return json_error(exc.status_code, exc.message)
        except BundleError as exc:  # says which entry and what is missing, never the content
            return json_error(422, str(exc))
        built["extension"] = {
            EXTENSION_KEY: {"payerRule": payer, "pairRule": pair, "cardPolicy": policy}
        }
        return JSONResponse({"serviceId": SERVICE_FOR_HOOK[hook], "request": built})

    @router.post("/sandbox/api/timeline")
    async def timeline(request: Request) -> Response:
        """Body ``{bundle, payerRule, pairRule}`` -> every visit's timeline and findings."""
        try:
            data = await read_json_object(request, max_bytes=web.sandbox_max_bytes)
            payer = _choice(data, "payerRule", PAYER_RULES, settings.payer_rule)
            pair = _choice(data, "pairRule", PAIR_RULES, settings.pair_interval_rule)
            bundle = _bundle(data)
        except CdsError as exc:  # the body itself: media type, size, JSON limits
            return error_response(exc)
        except BodyError as exc:
            return json_error(exc.status_code, exc.message)
        try:
            # Mapping, rules and drawing are CPU work: run them on a worker thread, so the event
            # loop (and /healthz, and every other call) keeps answering meanwhile.
            view = await run_in_threadpool(
                analyse_bundle,
                bundle,
                payer_rule=cast(Literal["cms", "ama"], payer),
                pair_rule=cast(Literal["cms", "strict"], pair),
                max_procedures_per_visit=settings.max_procedures_per_visit,
            )
        except TooManyProceduresError as exc:  # the cap, said as it is (issue 17)
            return json_error(413, f"{exc}; send one visit's Procedures")
        except (TypeError, ValueError, KeyError, AttributeError) as exc:
            # The mapping is lenient by design; a shape it still trips on is the bundle's
            # problem to the user, and a bug to us: log its type and place, not the content.
            logger.warning("sandbox timeline could not analyse the bundle: %s", type(exc).__name__)
            return json_error(
                422, "the bundle could not be analysed: an entry has an unexpected shape"
            )
        logger.info("sandbox timeline visits=%d", len(view.visits))
        return JSONResponse(view.to_json())

    return router
