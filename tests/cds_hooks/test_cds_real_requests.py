"""Real CDS Hooks requests from other implementers (CRD test kit, Da Vinci CRD, cqf-ruler, HAPI,
Argonaut PAMA, ...) re-targeted at the probe services: 200/400/412, never a 5xx.

Read in place from the shared reference fixtures; skipped when absent.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest
from cdsh_support import IMPLEMENTER_REQUESTS, make_app, probe_registry

from cds_hooks import CdsService, ServiceRegistry

pytestmark = pytest.mark.anyio

# file -> expected status with the default (spec) context requirements, and why
EXPECTED = {
    "argonaut-pama/scenario-01-outbound-request.json": 200,
    "cqf-ruler/opioidcds-04-request-prefetch.json": 200,
    "cqf-ruler/request-HelloWorld.json": 200,
    "cqf-ruler/unicode-request.json": 200,
    "crd-test-kit/encounter_start_hook_request.json": 400,  # no probe for encounter-start
    "crd-test-kit/fancy_structure_hook_request.json": 400,  # custom hook, no probe
    "crd-test-kit/order_select_hook_request.json": 200,
    "crd-test-kit/order_sign_hook_request.json": 412,  # patient not prefetched, no FHIR access
    "davinci-crd/deviceRequestFullPrefetchWithCoverage_r4.json": 400,  # pre-1.0 top-level user
    "davinci-crd/r4-ordersign-requestWithHydratedPrefetchBundle.json": 412,
    "hapi-fhir/ASLPCrdServiceRequest.json": 400,  # context.userId missing (REQUIRED)
    "hapi-fhir/CdsServiceRequestJson.json": 400,  # placeholder hook name, no hookInstance
    "nexehrs/HookRequest-warfarin-nsaids-order-sign.json": 400,  # context.userId missing
    "nexehrs/case1-scenario1.json": 412,
}
PROBED = ("order-sign", "order-select", "patient-view", "encounter-discharge")


def request_files() -> list[Path]:
    if not IMPLEMENTER_REQUESTS.exists():
        return []
    return sorted(IMPLEMENTER_REQUESTS.glob("*/*.json"))


def load(path: Path) -> tuple[str, dict[str, Any]]:
    body = json.loads(path.read_text(encoding="utf-8"))
    hook = body.get("hook")
    target = f"probe-{hook}" if hook in PROBED else "probe-order-sign"
    return target, body


async def post_all(registry: ServiceRegistry) -> dict[str, int]:
    files = request_files()
    if not files:
        pytest.skip("implementer CDS Hooks requests not available (fixtures/fhir-examples)")
    app = make_app(registry)
    statuses: dict[str, int] = {}
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
        for path in files:
            target, body = load(path)
            response = await c.post(f"/cds-services/{target}", json=body)
            statuses[f"{path.parent.name}/{path.name}"] = response.status_code
    return statuses


async def test_implementer_requests_never_5xx() -> None:
    statuses = await post_all(probe_registry())
    assert all(code in (200, 400, 412) for code in statuses.values()), statuses
    for name, expected in EXPECTED.items():
        if name in statuses:
            assert statuses[name] == expected, name


async def test_relaxed_context_accepts_requests_without_user_id() -> None:
    """A service that does not need the user may relax C-6 through ``required_context``."""
    registry = ServiceRegistry()
    strict = probe_registry()
    for service in strict:
        relaxed = service
        if service.hook == "order-sign":
            relaxed = CdsService(
                id=service.id,
                hook=service.hook,
                title=service.title,
                description=service.description,
                handler=service.handler,
                prefetch=service.prefetch,
                required_context=("patientId", "draftOrders"),
            )
        registry.add(relaxed)
    statuses = await post_all(registry)
    assert statuses.get("hapi-fhir/ASLPCrdServiceRequest.json", 412) == 412
    assert statuses.get("nexehrs/HookRequest-warfarin-nsaids-order-sign.json", 412) != 400
