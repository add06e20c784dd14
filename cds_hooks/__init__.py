"""CDS Hooks 2.0 protocol layer: wire models, discovery, invocation, prefetch, feedback, auth.

Its parts: :mod:`cds_hooks.runtime` (answering calls; :class:`CallObserver` for metrics),
:mod:`cds_hooks.install` (the FastAPI routes), :mod:`cds_hooks.openapi` (their documentation),
:mod:`cds_hooks.service`, :mod:`cds_hooks.models`, :mod:`cds_hooks.prefetch`,
:mod:`cds_hooks.auth`.

Knows nothing about billing; an application declares services on top of it::

    from fastapi import FastAPI

    from cds_hooks import (
        Card, CdsHooks, CdsHooksConfig, CdsResponse, Invocation, ServiceRegistry, Source,
        install_cds_hooks,
    )

    registry = ServiceRegistry()

    @registry.service(
        id="greeter",
        hook="patient-view",
        title="Greeter",
        description="Says hello",
        prefetch={"patient": "Patient/{{context.patientId}}"},
    )
    async def greeter(invocation: Invocation) -> CdsResponse:
        patient = invocation.prefetch.require("patient")  # 412 when it cannot be had
        name = "unknown" if patient is None else patient.get("id", "?")
        card = Card(summary=f"Hello {name}", indicator="info", source=Source(label="demo"))
        return CdsResponse(cards=(card,))

    class NoFeedbackStore:
        def record(self, service_id, items):
            return 0

    config = CdsHooksConfig(require_auth=False, cors_origins=["*"])
    runtime = CdsHooks(registry, config, NoFeedbackStore())
    app = FastAPI(lifespan=runtime.lifespan)  # closes the runtime's HTTP pool at shutdown
    install_cds_hooks(app, runtime)
"""

from cds_hooks.auth import ClientAuthenticator, ClientIdentity, InMemoryReplayStore, ReplayStore
from cds_hooks.config import CdsHooksConfig, TrustedIssuer, load_trusted_issuers
from cds_hooks.cors import CorsMiddleware
from cds_hooks.errors import (
    CdsError,
    InternalError,
    InvalidRequest,
    MethodNotAllowed,
    PayloadTooLarge,
    PrefetchUnavailable,
    Unauthorized,
    UnknownService,
    operation_outcome,
)
from cds_hooks.feedback import FeedbackStore
from cds_hooks.fhir_client import FhirFallback, FhirSession, server_allowed
from cds_hooks.install import install_cds_hooks
from cds_hooks.models import (
    Action,
    Card,
    CdsRequest,
    CdsResponse,
    Coding,
    DiscoveryResponse,
    FeedbackItem,
    FeedbackRequest,
    FhirAuthorization,
    Link,
    ServiceDescriptor,
    Source,
    Suggestion,
)
from cds_hooks.prefetch import Prefetch, PrefetchEntry, PrefetchState, render_template
from cds_hooks.runtime import (
    Authenticator,
    CallObserver,
    CdsHooks,
    PrefetchResolver,
    RequestOnlyResolver,
)
from cds_hooks.service import CdsService, FhirAccess, Handler, Invocation, ServiceRegistry

__all__ = [
    "Action",
    "Authenticator",
    "CallObserver",
    "Card",
    "CdsError",
    "CdsHooks",
    "CdsHooksConfig",
    "CdsRequest",
    "CdsResponse",
    "CdsService",
    "ClientAuthenticator",
    "ClientIdentity",
    "Coding",
    "CorsMiddleware",
    "DiscoveryResponse",
    "FeedbackItem",
    "FeedbackRequest",
    "FeedbackStore",
    "FhirAccess",
    "FhirAuthorization",
    "FhirFallback",
    "FhirSession",
    "Handler",
    "InMemoryReplayStore",
    "InternalError",
    "InvalidRequest",
    "Invocation",
    "Link",
    "MethodNotAllowed",
    "PayloadTooLarge",
    "Prefetch",
    "PrefetchEntry",
    "PrefetchResolver",
    "PrefetchState",
    "PrefetchUnavailable",
    "ReplayStore",
    "RequestOnlyResolver",
    "ServiceDescriptor",
    "ServiceRegistry",
    "Source",
    "Suggestion",
    "TrustedIssuer",
    "Unauthorized",
    "UnknownService",
    "install_cds_hooks",
    "load_trusted_issuers",
    "operation_outcome",
    "render_template",
    "server_allowed",
]
