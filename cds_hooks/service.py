"""Declaring CDS services: :class:`CdsService`, the :class:`ServiceRegistry` and
:class:`Invocation`, the one argument every handler receives.

A handler is ``async def handler(invocation: Invocation) -> CdsResponse``. It may raise
:class:`~cds_hooks.errors.PrefetchUnavailable` (412) -- typically through
``invocation.prefetch.require(key)`` -- or :class:`~cds_hooks.errors.InvalidRequest` (400) when
the context cannot be processed; anything else becomes a logged 500, never ``200 {"cards": []}``.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

from cds_hooks.auth import ClientIdentity
from cds_hooks.errors import InvalidRequest
from cds_hooks.models import (
    NOT_BLANK,
    CdsRequest,
    CdsResponse,
    DiscoveryResponse,
    ServiceDescriptor,
)
from cds_hooks.prefetch import Prefetch, validate_template

__all__ = [
    "CONTEXT_KINDS",
    "HOOK_REQUIRED_CONTEXT",
    "NOT_BLANK",
    "CdsService",
    "ContextKind",
    "FhirAccess",
    "Handler",
    "Invocation",
    "ServiceRegistry",
    "context_kind",
    "has_text",
]

#: REQUIRED context fields per hook (Hook Library STU1 1.0.1); a request without them is a 400.
#: Other hooks have no protocol-level context check beyond ``context`` being an object.
HOOK_REQUIRED_CONTEXT: Mapping[str, tuple[str, ...]] = {
    "order-sign": ("userId", "patientId", "draftOrders"),
    "order-select": ("userId", "patientId", "selections", "draftOrders"),
    "encounter-discharge": ("userId", "patientId", "encounterId"),
    "encounter-start": ("userId", "patientId", "encounterId"),
    "patient-view": ("userId", "patientId"),
}

_HAS_TEXT = re.compile(NOT_BLANK)


def has_text(value: str) -> bool:
    """Whether ``value`` has a character that is not white space (see :data:`NOT_BLANK`)."""
    return _HAS_TEXT.search(value) is not None


@dataclass(frozen=True)
class ContextKind:
    """What a required context member must be: ``schema`` (its JSON Schema, as the OpenAPI
    document gives it per service) and ``problem`` (what is wrong with a value, e.g. "must be
    an array", or ``None`` when the value is one the schema allows)."""

    schema: Mapping[str, Any]
    problem: Callable[[object], str | None]


def _bundle_problem(value: object) -> str | None:
    if not isinstance(value, dict):
        return "must be a JSON object"
    if value.get("resourceType", "Bundle") != "Bundle":
        return "must be a FHIR Bundle"
    return None


def _array_problem(value: object) -> str | None:
    return None if isinstance(value, list) else "must be an array"


def _id_problem(value: object) -> str | None:
    return None if isinstance(value, str) and has_text(value) else "must be a non-empty string"


#: A Bundle of resources (``resourceType`` may be left out).
BUNDLE = ContextKind(
    {"type": "object", "properties": {"resourceType": {"const": "Bundle"}}}, _bundle_problem
)
#: An array (of references).
ARRAY = ContextKind({"type": "array"}, _array_problem)
#: An id or reference: a string that is not blank.
ID = ContextKind({"type": "string", "pattern": NOT_BLANK}, _id_problem)

#: The kind of each context member the hooks define (Hook Library STU1 1.0.1). A member not
#: listed here (a service may require its own, see ``CdsService.required_context``) is an id.
#: The request check (``CdsService.check_context``) and the per-service request schema of the
#: OpenAPI document both read this table.
CONTEXT_KINDS: Mapping[str, ContextKind] = {
    "userId": ID,
    "patientId": ID,
    "encounterId": ID,
    "draftOrders": BUNDLE,
    "dispatchedOrders": BUNDLE,
    "appointments": BUNDLE,
    "selections": ARRAY,
}


def context_kind(name: str) -> ContextKind:
    """The kind of the context member ``name`` (:data:`CONTEXT_KINDS`, an id otherwise)."""
    return CONTEXT_KINDS.get(name, ID)


#: B-7: the id is a URL path segment.
_SERVICE_ID = re.compile(r"^[A-Za-z0-9_.\-]{1,128}$")


class FhirAccess(Protocol):
    """Extra FHIR queries from inside a handler (P-1, P-2, P-12), bound to one invocation."""

    async def fetch(self, relative_url: str, *, key: str = "query") -> dict[str, Any] | None:
        """GET ``{fhirServer}/{relative_url}``; a searchset comes back with its pages merged.

        Returns ``None`` for a read that finds nothing (404/410). Raises
        :class:`~cds_hooks.errors.PrefetchUnavailable` naming ``key`` when the data cannot be had
        (server not allowed, no token, timeout, HTTP error), so an uncaught failure is a 412.
        """
        ...


def _is_async_callable(obj: object) -> bool:
    if inspect.iscoroutinefunction(obj):
        return True
    call = getattr(type(obj), "__call__", None)  # noqa: B004 -- async callable objects too
    return call is not None and inspect.iscoroutinefunction(call)


@dataclass(frozen=True)
class Invocation:
    """One hook call as the handler sees it.

    ``prefetch`` is already resolved: present data, ``null`` markers, and -- when the request
    allowed it -- keys fetched from ``fhirServer``. ``fhir`` lets a handler run an extra query
    against the client's FHIR server under the same allowlist, token and deadline (``None`` when
    the request gives no usable FHIR access).
    """

    service: CdsService
    request: CdsRequest
    prefetch: Prefetch
    fhir: FhirAccess | None = None
    #: The authenticated CDS client (issuer, tenant, jti); ``None`` when auth is off.
    client: ClientIdentity | None = None
    #: Fields the handler adds to the call's one log line (ids, counts, timings and rule
    #: names only: never resource content, patient identifiers or tokens).
    log: dict[str, str | int | float] = field(default_factory=dict)

    @property
    def context(self) -> dict[str, Any]:
        return self.request.context

    @property
    def hook_instance(self) -> str:
        return self.request.hook_instance

    def __repr__(self) -> str:  # no request content in reprs
        return f"Invocation(service={self.service.id!r}, prefetch={self.prefetch!r})"


class Handler(Protocol):
    def __call__(self, invocation: Invocation, /) -> Awaitable[CdsResponse]: ...


H = TypeVar("H", bound=Handler)


@dataclass(frozen=True)
class CdsService:
    """A CDS service declaration (B-4..B-7, B-10).

    ``prefetch`` maps key -> template (P-3..P-6), validated here. ``required_context`` overrides
    :data:`HOOK_REQUIRED_CONTEXT` (e.g. to accept real-world requests without ``userId``).
    ``required_prefetch`` names keys without which the handler is not called at all: the layer
    answers 412 itself (P-13) -- the "fail" policy per key; other keys are the handler's call
    (``prefetch.require`` to fail, ``prefetch.get`` to carry on without).
    """

    id: str
    hook: str
    title: str
    description: str
    handler: Handler = field(repr=False)
    prefetch: Mapping[str, str] = field(default_factory=dict)
    usage_requirements: str | None = None
    extension: Mapping[str, Any] | None = None
    required_context: tuple[str, ...] | None = None
    required_prefetch: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not _SERVICE_ID.match(self.id) or self.id in (".", ".."):
            raise ValueError(
                f"service id {self.id!r} must be URL-path-safe: letters, digits, '-', '_', '.' "
                "(B-7)"
            )
        if not self.hook or not self.title or not self.description:
            raise ValueError(f"service {self.id!r}: hook, title and description are required")
        if not _is_async_callable(self.handler):
            raise TypeError(f"service {self.id!r}: handler must be an async function")
        for key, template in self.prefetch.items():
            validate_template(key, template)
        object.__setattr__(self, "prefetch", dict(self.prefetch))
        object.__setattr__(self, "required_prefetch", tuple(self.required_prefetch))
        unknown = [k for k in self.required_prefetch if k not in self.prefetch]
        if unknown:
            raise ValueError(f"service {self.id!r}: required_prefetch {unknown} not in prefetch")
        if self.extension is not None and not isinstance(self.extension, Mapping):
            raise ValueError(f"service {self.id!r}: extension must be an object (X-1)")

    @property
    def context_requirements(self) -> tuple[str, ...]:
        if self.required_context is not None:
            return self.required_context
        return HOOK_REQUIRED_CONTEXT.get(self.hook, ())

    def check_context(self, context: Mapping[str, Any]) -> None:
        """Raise :class:`InvalidRequest` unless ``context`` carries every member this service
        requires, each of its kind (:data:`CONTEXT_KINDS`). The message names the member and
        what it must be, never the value."""
        for name in self.context_requirements:
            value = context.get(name)
            if value is None:
                raise InvalidRequest(f"member 'context.{name}' is required for {self.hook}")
            problem = context_kind(name).problem(value)
            if problem is not None:
                raise InvalidRequest(f"member 'context.{name}' {problem}")

    def descriptor(self) -> ServiceDescriptor:
        return ServiceDescriptor(
            hook=self.hook,
            id=self.id,
            title=self.title,
            description=self.description,
            prefetch=dict(self.prefetch),
            usage_requirements=self.usage_requirements,
            extension=dict(self.extension) if self.extension else None,
        )


class ServiceRegistry:
    """The services one application offers, in registration order.

    One id per hook (B-8 sandbox caveat): registering an id twice is an error.
    """

    def __init__(self, services: list[CdsService] | None = None) -> None:
        self._services: dict[str, CdsService] = {}
        self._listeners: list[Callable[[CdsService], None]] = []
        for service in services or ():
            self.add(service)

    def add(self, service: CdsService) -> CdsService:
        if service.id in self._services:
            raise ValueError(f"service id {service.id!r} is already registered (one id per hook)")
        self._services[service.id] = service
        for listener in self._listeners:
            listener(service)
        return service

    def subscribe(self, listener: Callable[[CdsService], None]) -> None:
        """Call ``listener`` with each service added from now on (the HTTP layer adds the
        service's documented route)."""
        self._listeners.append(listener)

    def service(
        self,
        *,
        id: str,
        hook: str,
        title: str,
        description: str,
        prefetch: Mapping[str, str] | None = None,
        usage_requirements: str | None = None,
        extension: Mapping[str, Any] | None = None,
        required_context: tuple[str, ...] | None = None,
        required_prefetch: tuple[str, ...] = (),
    ) -> Callable[[H], H]:
        """Decorator form::

        @registry.service(id="x", hook="order-sign", title="...", description="...")
        async def x(invocation: Invocation) -> CdsResponse: ...
        """

        def register(handler: H) -> H:
            self.add(
                CdsService(
                    id=id,
                    hook=hook,
                    title=title,
                    description=description,
                    handler=handler,
                    prefetch=dict(prefetch or {}),
                    usage_requirements=usage_requirements,
                    extension=extension,
                    required_context=required_context,
                    required_prefetch=required_prefetch,
                )
            )
            return handler

        return register

    def get(self, service_id: str) -> CdsService | None:
        return self._services.get(service_id)

    def __iter__(self) -> Iterator[CdsService]:
        return iter(self._services.values())

    def __len__(self) -> int:
        return len(self._services)

    def __contains__(self, service_id: object) -> bool:
        return service_id in self._services

    def discovery(self) -> DiscoveryResponse:
        """The discovery document (B-2, B-4)."""
        return DiscoveryResponse(services=tuple(s.descriptor() for s in self))
