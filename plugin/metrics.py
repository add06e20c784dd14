"""Prometheus metrics at ``/metrics``: request latency per service, prefetch key states,
findings by rule id and feedback stored.

Always collected; served as the settings say (``THERAPY_CDS_METRICS``, ``..._METRICS_TOKEN``):
in development, and in production only to a scraper that sends the token.

:class:`ServiceMetrics` observes the protocol layer (a ``cds_hooks.CallObserver``, given to
``install_cds_hooks``) and the services' findings. Every label value comes from a closed set --
the registered service ids, the declared prefetch keys, the rule catalogue, fixed outcome
names -- never from request content, so a caller can neither put patient data into the
metrics nor blow up their cardinality with made-up paths.

Each application gets its own :class:`~prometheus_client.CollectorRegistry` (tests build many
apps in one process). With several uvicorn workers set ``PROMETHEUS_MULTIPROC_DIR`` to an empty
directory shared by the workers: every worker writes its samples there and ``/metrics``, on
whichever worker answers, reports the sum over all of them.

Metric names:

- ``therapy_cds_request_duration_seconds{service,endpoint}`` -- histogram, the time the CDS
  Hooks runtime took to answer a call (``endpoint``: ``invoke``, ``feedback``, ``discovery``);
- ``therapy_cds_responses_total{service,endpoint,status}`` -- its answers by HTTP status
  (405 and plain ``OPTIONS`` included; CORS preflights, answered before the runtime, are not);
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
from collections.abc import Sequence
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

    from cds_hooks.prefetch import Prefetch
    from cds_hooks.runtime import CallEvent
    from cds_hooks.service import CdsService
    from plugin.rules import Finding

METRICS_PATH = "/metrics"
# Hook calls answer in milliseconds; the EHR gives up around a second.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
_UNKNOWN = "-"


class ServiceMetrics:
    """The service's collectors, bound to one registry."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry(auto_describe=True)
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

    # The protocol layer's calls (cds_hooks.runtime.CallObserver).

    def on_call(
        self, event: CallEvent, service: CdsService | None, status: int, seconds: float
    ) -> None:
        service_id = service.id if service is not None else _UNKNOWN
        self.child(self.latency, service_id, event).observe(seconds)
        self.child(self.responses, service_id, event, str(status)).inc()

    def on_prefetch(self, service: CdsService, prefetch: Prefetch) -> None:
        for key in service.prefetch:
            entry = prefetch.entry(key)
            state = "fetched" if entry.fetched else entry.state.value
            self.child(self.prefetch, service.id, key, state).inc()

    def on_feedback(self, service: CdsService, items: int, new: int) -> None:
        if new:
            self.child(self.feedback, service.id, "stored").inc(new)
        if items > new:
            self.child(self.feedback, service.id, "duplicate").inc(items - new)

    # ------------------------------------------------------------------ exposition

    def render(self) -> bytes:
        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            combined = CollectorRegistry()
            prometheus_multiprocess.MultiProcessCollector(combined)  # type: ignore[no-untyped-call]
            return generate_latest(combined)
        return generate_latest(self.registry)


def serve_metrics(app: FastAPI, metrics: ServiceMetrics, *, token: str | None = None) -> None:
    """Mount ``GET /metrics``. With ``token``, a scrape must send ``Authorization: Bearer
    <token>`` (compared in constant time); anything else is a 401 that says what to send,
    never the token. (The collectors count whether or not they are served: they observe the
    CDS Hooks runtime, see ``create_app``.)"""
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
    "ServiceMetrics",
    "serve_metrics",
]
