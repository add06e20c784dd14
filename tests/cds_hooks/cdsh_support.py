"""Helpers for the protocol-layer tests: an in-memory feedback store, probe services for
the spec's hooks, an in-process client, and access to the spec fixtures (read in place)."""

from __future__ import annotations

import json
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI

from cds_hooks import (
    Card,
    CdsHooks,
    CdsHooksConfig,
    CdsResponse,
    FeedbackItem,
    Invocation,
    ServiceRegistry,
    Source,
    install_cds_hooks,
)

REPO_ROOT = Path(__file__).resolve().parents[2]
SPEC_FIXTURES = REPO_ROOT.parent / "shared" / "reference" / "fixtures" / "cds-hooks-spec"
IMPLEMENTER_REQUESTS = (
    REPO_ROOT.parent / "shared" / "reference" / "fixtures" / "fhir-examples" / "cdshooks"
)

SANDBOX_ORIGIN = "https://sandbox.cds-hooks.org"
MARKER = "MARKER-7f3a9c"
PATIENT_ID = "PAT-55321-SECRET"


def spec_fixture(relative: str) -> Path:
    """Path of a spec fixture; skips the test when the shared reference folder is absent."""
    path = SPEC_FIXTURES / relative
    if not path.exists():
        pytest.skip(f"CDS Hooks spec fixtures not available ({relative})")
    return path


def spec_json(relative: str) -> Any:
    text = spec_fixture(relative).read_text(encoding="utf-8")
    if relative.endswith(".fragment.txt"):
        text = "{" + text + "}"
    return json.loads(text)


class MemoryFeedbackStore:
    """Idempotent in-memory FeedbackStore (F-8): a repeat of the same item is not new."""

    def __init__(self) -> None:
        self.items: dict[tuple[str, str, str, str], FeedbackItem] = {}
        self._lock = threading.Lock()

    def record(self, service_id: str, items: Sequence[FeedbackItem]) -> int:
        new = 0
        with self._lock:
            for item in items:
                key = (service_id, item.card, item.outcome, item.outcome_timestamp)
                if key not in self.items:
                    self.items[key] = item
                    new += 1
        return new


def probe_card(invocation: Invocation) -> CdsResponse:
    present = sorted(k for k in invocation.prefetch if invocation.prefetch.is_present(k))
    summary = f"{invocation.service.id}: {len(present)} prefetch key(s) present"
    return CdsResponse(
        cards=(Card(summary=summary, indicator="info", source=Source(label="probe")),)
    )


def probe_registry() -> ServiceRegistry:
    """One probe service per hook the spec examples use; order-sign requires 'patient'."""
    registry = ServiceRegistry()

    @registry.service(
        id="probe-order-sign",
        hook="order-sign",
        title="Probe (order-sign)",
        description="Test service",
        prefetch={
            "patient": "Patient/{{context.patientId}}",
            "encounter": "Encounter/{{context.encounterId}}",
        },
    )
    async def order_sign(invocation: Invocation) -> CdsResponse:
        invocation.prefetch.require("patient")
        return probe_card(invocation)

    for hook in ("patient-view", "order-select", "encounter-discharge"):

        async def handler(invocation: Invocation) -> CdsResponse:
            return probe_card(invocation)

        registry.service(
            id=f"probe-{hook}",
            hook=hook,
            title=f"Probe ({hook})",
            description="Test service",
            prefetch={"patient": "Patient/{{context.patientId}}"},
        )(handler)
    return registry


def make_app(
    registry: ServiceRegistry | None = None,
    config: CdsHooksConfig | None = None,
    store: MemoryFeedbackStore | None = None,
    **kwargs: Any,
) -> FastAPI:
    runtime = CdsHooks(
        registry if registry is not None else probe_registry(),
        config or CdsHooksConfig(require_auth=False),
        store or MemoryFeedbackStore(),
        **kwargs,
    )
    app = FastAPI(lifespan=runtime.lifespan)
    install_cds_hooks(app, runtime)
    return app


def order_sign_request(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "hook": "order-sign",
        "hookInstance": "d1577c69-dfbe-44ad-ba6d-3e05e953b2ea",
        "context": {
            "userId": "Practitioner/example",
            "patientId": PATIENT_ID,
            "draftOrders": {"resourceType": "Bundle", "entry": []},
        },
        "prefetch": {"patient": {"resourceType": "Patient", "id": PATIENT_ID}},
    }
    body.update(overrides)
    return body
