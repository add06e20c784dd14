"""CDS Hooks 2.0 protocol layer: wire models, discovery, invocation, prefetch, feedback, auth.

Knows nothing about billing; the therapy plugin declares services on top of it::

    registry = ServiceRegistry()

    @registry.service(id="my-service", hook="order-sign", title="...", description="...",
                      prefetch={"patient": "Patient/{{context.patientId}}"})
    async def my_service(invocation: Invocation) -> CdsResponse:
        patient = invocation.prefetch.require("patient")  # 412 when unavailable
        return CdsResponse(cards=())

    install_cds_hooks(app, registry, CdsHooksConfig(...), feedback_store)
"""

from cds_hooks.app import (
    Authenticator,
    CdsHooks,
    PrefetchResolver,
    RequestOnlyResolver,
    install_cds_hooks,
)
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
from cds_hooks.service import CdsService, FhirAccess, Handler, Invocation, ServiceRegistry

__all__ = [
    "Action",
    "Authenticator",
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
