"""Prometheus metrics at ``/metrics``: request latency per service, prefetch key states,
findings by rule id and feedback stored.

Always collected; served as the settings say (``THERAPY_CDS_METRICS``, ``..._METRICS_TOKEN``):
in development, and in production only to a scraper that sends the token.

Every label value comes from a closed set -- the registered service ids, the declared prefetch
keys, the rule catalogue, fixed outcome names -- never from request content, so a caller can
neither put patient data into the metrics nor blow up their cardinality with made-up paths.

Each application gets its own :class:`~prometheus_client.CollectorRegistry` (tests build many
apps in one process). With several uvicorn workers set ``PROMETHEUS_MULTIPROC_DIR`` to an empty
directory shared by the workers: every worker writes its samples there and ``/metrics``, on
whichever worker answers, reports the sum over all of them.

Metric names:

- ``therapy_cds_request_duration_seconds{service,endpoint}`` -- histogram, whole request on
  the CDS Hooks routes (``endpoint``: ``invoke``, ``feedback``, ``discovery``);
- ``therapy_cds_responses_total{service,endpoint,status}`` -- responses by HTTP status;
- ``therapy_cds_prefetch_keys_total{service,key,state}`` -- each declared prefetch key after
  resolution: ``present`` (a hit), ``null``, ``fetched`` (filled from the FHIR server) or
  ``missing`` (a miss);
- ``therapy_cds_findings_total{service,rule,severity}`` -- findings by rule id;
- ``therapy_cds_feedback_items_total{service,result}`` -- feedback items received, ``stored``
  (new) or ``duplicate`` (already stored, F-8).
"""

from __future__ import annotations

import hmac
import os
import re
import time
from collections.abc import Awaitable, Callable, MutableMapping, Sequence
from typing import TYPE_CHECKING, Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from prometheus_client import multiprocess as prometheus_multiprocess
from starlette.requests import Request
from starlette.responses import Response

if TYPE_CHECKING:
    from fastapi import FastAPI

    from cds_hooks import CdsHooks
    from cds_hooks.models import CdsRequest, FeedbackItem
    from cds_hooks.prefetch import Prefetch
    from cds_hooks.service import CdsService, FhirAccess
    from plugin.rules import Finding

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

METRICS_PATH = "/metrics"
# Hook calls answer in milliseconds; the EHR gives up around a second.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
_ROUTE = re.compile(r"^/cds-services/+(?P<id>[^/]+)(?P<feedback>/feedback)?/?$")
_UNKNOWN = "-"


class ServiceMetrics:
    """The service's collectors, bound to one registry."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry(auto_describe=True)
        self.service_ids: frozenset[str] = frozenset()
        self._children: dict[tuple[int, tuple[str, ...]], Any] = {}
        self.latency = Histogram(
            "therapy_cds_request_duration_seconds",
            "Time to answer a CDS Hooks request, by service and endpoint",
            ("service", "endpoint"),
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.responses = Counter(
            "therapy_cds_responses",
            "CDS Hooks responses by service, endpoint and HTTP status",
            ("service", "endpoint", "status"),
            registry=self.registry,
        )
        self.prefetch = Counter(
            "therapy_cds_prefetch_keys",
            "Declared prefetch keys after resolution: present (hit), null, fetched, missing",
            ("service", "key", "state"),
            registry=self.registry,
        )
        self.findings = Counter(
            "therapy_cds_findings",
            "Findings raised, by rule id and severity",
            ("service", "rule", "severity"),
            registry=self.registry,
        )
        self.feedback = Counter(
            "therapy_cds_feedback_items",
            "Feedback items received: stored (new) or duplicate",
            ("service", "result"),
            registry=self.registry,
        )

    # ------------------------------------------------------------------ observers

    def child(self, metric: Any, *labels: str) -> Any:
        """``metric.labels(*labels)``, looked up once per label set. The label values are
        bounded (declared service ids, rule ids, prefetch keys and states, status codes), so
        the cache is too; it saves the client library's validation and locking per call."""
        key = (id(metric), labels)
        found = self._children.get(key)
        if found is None:
            found = self._children[key] = metric.labels(*labels)
        return found

    def observe_findings(self, service_id: str, findings: Sequence[Finding]) -> None:
        """Count one invocation's findings (called by the services with the analysis)."""
        counts: dict[tuple[str, str], int] = {}
        for finding in findings:
            key = (finding.rule.value, finding.severity.value)
            counts[key] = counts.get(key, 0) + 1
        for (rule, severity), count in counts.items():
            self.child(self.findings, service_id, rule, severity).inc(count)

    def observe_prefetch(self, service: CdsService, prefetch: Prefetch) -> None:
        for key in service.prefetch:
            entry = prefetch.entry(key)
            state = "fetched" if entry.fetched else entry.state.value
            self.child(self.prefetch, service.id, key, state).inc()

    def observe_feedback(self, service_id: str, items: int, new: int) -> None:
        if new:
            self.child(self.feedback, service_id, "stored").inc(new)
        if items > new:
            self.child(self.feedback, service_id, "duplicate").inc(items - new)

    def labels_for(self, path: str, method: str) -> tuple[str, str] | None:
        """(service, endpoint) for a CDS Hooks path, or None for any other path."""
        if path.rstrip("/") == "/cds-services":
            return _UNKNOWN, "discovery"
        match = _ROUTE.match(path)
        if match is None:
            return None
        service = match.group("id") if match.group("id") in self.service_ids else _UNKNOWN
        return service, "feedback" if match.group("feedback") else "invoke"

    # ------------------------------------------------------------------ exposition

    def render(self) -> bytes:
        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            combined = CollectorRegistry()
            prometheus_multiprocess.MultiProcessCollector(combined)  # type: ignore[no-untyped-call]
            return generate_latest(combined)
        return generate_latest(self.registry)


class LatencyMiddleware:
    """ASGI middleware timing the CDS Hooks routes (outermost, so it sees every answer)."""

    def __init__(self, app: ASGIApp, metrics: ServiceMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        labels = (
            self.metrics.labels_for(scope.get("path", ""), scope.get("method", ""))
            if scope["type"] == "http"
            else None
        )
        if labels is None:
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_and_record(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_and_record)
        finally:
            metrics = self.metrics
            metrics.child(metrics.latency, *labels).observe(time.perf_counter() - started)
            metrics.child(metrics.responses, *labels, str(status)).inc()


class _PrefetchObserver:
    """Wraps the runtime's prefetch resolver to count the state of every declared key."""

    def __init__(self, inner: Any, metrics: ServiceMetrics) -> None:
        self.inner = inner
        self.metrics = metrics

    async def resolve(
        self, service: CdsService, request: CdsRequest
    ) -> tuple[Prefetch, FhirAccess | None]:
        prefetch, fhir = await self.inner.resolve(service, request)
        self.metrics.observe_prefetch(service, prefetch)
        return prefetch, fhir


class _FeedbackObserver:
    """Wraps the feedback store to count stored and duplicate items."""

    def __init__(self, inner: Any, metrics: ServiceMetrics) -> None:
        self.inner = inner
        self.metrics = metrics

    def record(self, service_id: str, items: Sequence[FeedbackItem]) -> int:
        new: int = self.inner.record(service_id, items)
        self.metrics.observe_feedback(service_id, len(items), new)
        return new

    def __getattr__(self, name: str) -> Any:  # count(), outcomes() ... pass through
        return getattr(self.inner, name)


def install_metrics(
    app: FastAPI,
    runtime: CdsHooks,
    metrics: ServiceMetrics,
    *,
    serve: bool = True,
    token: str | None = None,
) -> None:
    """Attach the collectors to the CDS Hooks runtime and, when ``serve``, mount ``/metrics``.

    With ``token``, a scrape must send ``Authorization: Bearer <token>`` (compared in constant
    time); anything else is a 401 that says what to send, never the token."""
    metrics.service_ids = frozenset(service.id for service in runtime.registry)
    runtime.resolver = _PrefetchObserver(runtime.resolver, metrics)
    runtime.feedback_store = _FeedbackObserver(runtime.feedback_store, metrics)
    app.add_middleware(LatencyMiddleware, metrics=metrics)
    if not serve:
        return
    expected = f"Bearer {token}".encode() if token is not None else None

    async def metrics_endpoint(request: Request) -> Response:
        if expected is not None:
            sent = request.headers.get("authorization", "").strip().encode()
            if not hmac.compare_digest(sent, expected):
                return Response(
                    "/metrics needs Authorization: Bearer <THERAPY_CDS_METRICS_TOKEN>\n",
                    status_code=401,
                    headers={"WWW-Authenticate": 'Bearer realm="metrics"'},
                    media_type="text/plain",
                )
        return Response(metrics.render(), media_type=CONTENT_TYPE_LATEST)

    app.add_api_route(METRICS_PATH, metrics_endpoint, methods=["GET"], include_in_schema=False)


__all__ = [
    "LATENCY_BUCKETS",
    "METRICS_PATH",
    "LatencyMiddleware",
    "ServiceMetrics",
    "install_metrics",
]
