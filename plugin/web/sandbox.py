"""``/sandbox``: fire a hook at this service with a sample (or your own) bundle, as an EHR would.

The page asks the server to build the CDS Hooks request
(:func:`plugin.hook_request.build_hook_request`), then POSTs it itself to
``/cds-services/{id}`` -- the same endpoint, authentication and feedback store an EHR uses --
and renders the cards. The timeline comes from the same pipeline.

Accepting a suggestion does what an EHR does: the page records the feedback, then
:func:`apply_actions` applies the suggestion's ``create``/``update``/``delete`` actions to the
draft orders of the bundle the cards were computed from, the page shows the changed charge lines
and fires again with the changed bundle.

Served only in development (client authentication off) unless ``THERAPY_CDS_SANDBOX=true``; with
authentication on the page asks for a client JWT and sends it, so it is never a way around it.
The three helpers (request, timeline, apply) only compute on what is posted to them: they read no
stored data and call no other server.
"""

from __future__ import annotations

import copy
import logging
import uuid
from dataclasses import dataclass
from typing import Any, Final, Literal, TypeVar, cast

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from cds_hooks.body import read_json_object
from cds_hooks.errors import CdsError, error_response
from fhir_mappings import Charge, map_cds_hooks
from fhir_mappings.orders import draft_service_requests
from plugin.hook_request import HOOKS, BundleError, build_hook_request
from plugin.pipeline import TooManyProceduresError
from plugin.rules.payer import PayerChoice
from plugin.rules.vocabulary import (
    CHOICES,
    FROM_COVERAGE,
    CardPolicy,
    PairRule,
    PayerRule,
    Vocabulary,
    VocabularyError,
    parse,
    parse_payer_choice,
)
from plugin.services import (
    DISCHARGE_SERVICE,
    EXTENSION_KEY,
    ORDER_SIGN_SERVICE,
)
from plugin.settings import Settings
from plugin.web.pages import BodyError, json_error, render
from plugin.web.samples import scenario_bundle, scenarios
from plugin.web.settings import WebSettings
from plugin.web.visits import analyse_bundle

logger = logging.getLogger(__name__)

SERVICE_FOR_HOOK = {"order-sign": ORDER_SIGN_SERVICE, "encounter-discharge": DISCHARGE_SERVICE}
_Rule = TypeVar("_Rule", bound=Vocabulary)


def _choice(data: dict[str, Any], key: str, allowed: tuple[str, ...], default: str) -> str:
    value = data.get(key, default)
    if value not in allowed:
        raise BodyError(400, f"'{key}' must be one of {', '.join(allowed)}")
    return str(value)


def _rule(data: dict[str, Any], kind: type[_Rule], default: _Rule) -> _Rule:
    """The body's member for a rule choice (``pairRule``, ``cardPolicy``), or ``default``."""
    name = CHOICES[kind].member
    try:
        return parse(kind, data.get(name, default), f"'{name}'")
    except VocabularyError as exc:  # names the member and the accepted values, not the value
        raise BodyError(400, str(exc)) from None


def _payer(data: dict[str, Any]) -> PayerRule | None:
    """The body's ``payerRule``: a rule chosen on the page, or None (absent or ``coverage``):
    from the patient's Coverage, else THERAPY_CDS_PAYER_RULE (issue 15)."""
    name = CHOICES[PayerRule].member
    try:
        return parse_payer_choice(data.get(name, FROM_COVERAGE), f"'{name}'")
    except VocabularyError as exc:
        raise BodyError(400, str(exc)) from None


def _bundle(data: dict[str, Any]) -> dict[str, Any]:
    bundle = data.get("bundle")
    if not isinstance(bundle, dict) or bundle.get("resourceType") != "Bundle":
        raise BodyError(400, "'bundle' must be a FHIR Bundle (resourceType 'Bundle')")
    return bundle


JsonObject = dict[str, Any]
ACTION_TYPES: Final = ("create", "update", "delete")
DRAFT_TYPE: Final = "ServiceRequest"


class SuggestionRefusedError(ValueError):
    """The suggestion's actions cannot all be applied, so none is: ``reasons`` holds one line per
    refused action, naming it by position and type and saying why (never its content)."""

    def __init__(self, reasons: list[tuple[int, str]]) -> None:
        self.reasons = reasons
        super().__init__(
            "the suggestion was not applied: "
            + "; ".join(f"action {index}: {reason}" for index, reason in reasons)
        )


@dataclass(frozen=True, slots=True)
class Applied:
    """The bundle after a suggestion's actions, and each draft order they touched."""

    bundle: JsonObject
    changes: list[JsonObject]


def _draft_id(entry: JsonObject) -> str | None:
    """The id of an entry that is a draft ServiceRequest (an order being signed), else None."""
    resource = entry["resource"]
    ident = resource.get("id")
    if (
        resource.get("resourceType") == DRAFT_TYPE
        and resource.get("status") == "draft"
        and isinstance(ident, str)
        and ident
    ):
        return ident
    return None


def _delete_target(action: JsonObject) -> str | None:
    """The id a ``delete`` names: ``resourceId`` as ``ServiceRequest/{id}`` (CDS Hooks 2.0) or a
    bare id; None when it names no ServiceRequest."""
    rid = action.get("resourceId")
    if not isinstance(rid, str) or not rid.strip():
        return None
    parts = rid.strip().split("/")
    if len(parts) == 1:
        return parts[0]
    if len(parts) == 2 and parts[0] == DRAFT_TYPE and parts[1]:
        return parts[1]
    return None


def _line(charge: Charge | None) -> JsonObject | None:
    if charge is None:
        return None
    return {"code": charge.code, "units": charge.units, "modifiers": list(charge.modifiers)}


def _lines(drafts: list[JsonObject]) -> dict[str, Charge]:
    """The charge lines the service reads from these draft orders, by ``ServiceRequest/{id}``."""
    orders = {"resourceType": "Bundle", "entry": [{"resource": r} for r in drafts]}
    return {c.ref: c for c in map_cds_hooks(orders, None).charges}


def apply_actions(bundle: JsonObject, hook: str, actions: object) -> Applied:
    """Apply a suggestion's actions to ``bundle`` as an EHR applies them to its draft orders.

    The draft orders are those of the request :func:`build_hook_request` makes from ``bundle``
    for ``hook``. ``update`` replaces the draft ServiceRequest with the resource's id; ``delete``
    removes the draft named by ``resourceId`` (``ServiceRequest/{id}`` or a bare id); ``create``
    adds a draft ServiceRequest (given a fresh id when it has none). An action on anything that
    is not a draft order of the request -- another resource type, a signed order, an id the
    request does not have -- is refused, and then none is applied (:class:`SuggestionRefusedError`).
    Actions apply in order, so a later one sees what an earlier one created or removed.

    ``bundle`` is not modified. Each entry is looked up through an index, so the work is linear
    in the bundle and the actions.
    """
    if not isinstance(actions, list) or not actions:
        raise BodyError(400, "'actions' must be a non-empty list of CDS Hooks actions")
    request = build_hook_request(bundle, cast(Literal["order-sign", "encounter-discharge"], hook))
    if "draftOrders" not in request["context"]:
        reason = f"an {hook} request has no draft orders to change"
        raise SuggestionRefusedError([(index, reason) for index in range(1, len(actions) + 1)])
    before = draft_service_requests(request["context"]["draftOrders"])
    entries: list[JsonObject | None] = [dict(e) for e in bundle.get("entry") or []]
    drafts: dict[str, list[int]] = {}  # draft id -> positions of its entries
    taken: set[str] = set()  # every ServiceRequest id in the bundle
    for position, entry in enumerate(entries):
        assert entry is not None
        ident = _draft_id(entry)
        if ident is not None and f"{DRAFT_TYPE}/{ident}" in before:
            drafts.setdefault(ident, []).append(position)
        resource = entry["resource"]
        if resource.get("resourceType") == DRAFT_TYPE and isinstance(resource.get("id"), str):
            taken.add(resource["id"])
    refused: list[tuple[int, str]] = []
    touched: list[str] = []
    not_draft = "its ServiceRequest is not a draft order of this request"
    for index, action in enumerate(actions, start=1):
        if not isinstance(action, dict) or action.get("type") not in ACTION_TYPES:
            refused.append((index, "not an action of type create, update or delete"))
            continue
        kind = action["type"]
        if kind == "delete":
            ident = _delete_target(action)
            if ident is None:
                refused.append((index, "delete: 'resourceId' names no ServiceRequest"))
            elif ident not in drafts:
                refused.append((index, f"delete: {not_draft}"))
            else:
                for position in drafts.pop(ident):
                    entries[position] = None
                touched.append(ident)
            continue
        resource = action.get("resource")
        if not isinstance(resource, dict) or resource.get("resourceType") != DRAFT_TYPE:
            refused.append((index, f"{kind}: the resource is not a ServiceRequest"))
            continue
        resource = copy.deepcopy(resource)
        ident = resource.get("id")
        if kind == "update":
            if not isinstance(ident, str) or ident not in drafts:
                refused.append((index, f"update: {not_draft}"))
                continue
            positions = drafts.pop(ident)
            for position in positions:
                old = entries[position]
                assert old is not None
                entries[position] = {**old, "resource": resource}
            if resource.get("status") == "draft":
                drafts[ident] = positions
            touched.append(ident)
            continue
        if resource.get("status") != "draft":
            refused.append((index, "create: the ServiceRequest must have status 'draft'"))
            continue
        if ident is None:
            ident = resource["id"] = str(uuid.uuid4())
        elif not isinstance(ident, str) or not ident or ident in taken:
            refused.append((index, "create: the ServiceRequest's id is missing or already used"))
            continue
        taken.add(ident)
        drafts[ident] = [len(entries)]
        entries.append({"resource": resource})
        touched.append(ident)
    if refused:
        raise SuggestionRefusedError(refused)

    kept = [e for e in entries if e is not None]
    after = {
        f"{DRAFT_TYPE}/{ident}": e["resource"]
        for e in kept
        if (ident := _draft_id(e)) is not None and ident in drafts
    }
    lines_before = _lines(list(before.values()))
    lines_after = _lines(list(after.values()))
    changes: list[JsonObject] = []
    for ref in dict.fromkeys(f"{DRAFT_TYPE}/{ident}" for ident in touched):
        was, now = ref in before, ref in after
        changes.append(
            {
                "ref": ref,
                "change": "updated" if was and now else "removed" if was else "added",
                "before": _line(lines_before.get(ref)),
                "after": _line(lines_after.get(ref)),
            }
        )
    changed = {key: value for key, value in bundle.items() if key != "entry"}
    if kept:
        changed["entry"] = kept
    return Applied(changed, changes)


def sandbox_router(settings: Settings, web: WebSettings) -> APIRouter:
    """The sandbox page and its three helpers."""
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
                "payer_rule": FROM_COVERAGE,
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
            payer = _payer(data)
            pair = _rule(data, PairRule, settings.pair_interval_rule)
            policy = _rule(data, CardPolicy, settings.card_policy)
            built = build_hook_request(
                _bundle(data), cast(Literal["order-sign", "encounter-discharge"], hook)
            )
        except CdsError as exc:  # the body itself: media type, size, JSON limits
            return error_response(exc)
        except BodyError as exc:
            return json_error(exc.status_code, exc.message)
        except BundleError as exc:  # says which entry and what is missing, never the content
            return json_error(422, str(exc))
        ours = {CHOICES[PairRule].member: pair.value, CHOICES[CardPolicy].member: policy.value}
        if payer is not None:  # a rule chosen on the page overrides the Coverage
            ours[CHOICES[PayerRule].member] = payer.value
        built["extension"] = {EXTENSION_KEY: ours}
        return JSONResponse({"serviceId": SERVICE_FOR_HOOK[hook], "request": built})

    @router.post("/sandbox/api/apply")
    async def apply(request: Request) -> Response:
        """Body ``{bundle, hook, actions}`` -> ``{bundle, changes}``: the suggestion applied."""
        try:
            data = await read_json_object(request, max_bytes=web.sandbox_max_bytes)
            hook = _choice(data, "hook", HOOKS, "order-sign")
            applied = await run_in_threadpool(
                apply_actions, _bundle(data), hook, data.get("actions")
            )
        except CdsError as exc:  # the body itself: media type, size, JSON limits
            return error_response(exc)
        except BodyError as exc:
            return json_error(exc.status_code, exc.message)
        except BundleError as exc:
            return json_error(422, str(exc))
        except SuggestionRefusedError as exc:
            return JSONResponse(
                {
                    "error": str(exc),
                    "refused": [{"action": i, "reason": r} for i, r in exc.reasons],
                },
                status_code=422,
                headers={"Cache-Control": "no-store"},
            )
        except (TypeError, ValueError, KeyError, AttributeError) as exc:
            logger.warning("sandbox apply could not read the bundle: %s", type(exc).__name__)
            return json_error(
                422, "the bundle could not be analysed: an entry has an unexpected shape"
            )
        logger.info("sandbox apply changes=%d", len(applied.changes))
        return JSONResponse({"bundle": applied.bundle, "changes": applied.changes})

    @router.post("/sandbox/api/timeline")
    async def timeline(request: Request) -> Response:
        """Body ``{bundle, payerRule, pairRule}`` -> every visit's timeline and findings."""
        try:
            data = await read_json_object(request, max_bytes=web.sandbox_max_bytes)
            payer = _payer(data)
            pair = _rule(data, PairRule, settings.pair_interval_rule)
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
                payer_rule=payer or settings.payer_rule,
                pair_rule=pair,
                max_procedures_per_visit=settings.max_procedures_per_visit,
                payer=PayerChoice(
                    mapping=settings.payer_mapping(),
                    override=None if payer is None else "chosen in the sandbox",
                ),
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
