"""schemathesis against the service's own OpenAPI document: every documented operation, with
the default checks -- no 5xx, documented status codes and content types, responses that match
the documented schemas. ``FUZZ_EXAMPLES`` examples per operation (``make fuzz`` raises it)."""

from __future__ import annotations

import schemathesis
from fuzz_support import EXAMPLES, make_app
from hypothesis import HealthCheck, settings

schema = schemathesis.openapi.from_asgi("/openapi.json", make_app())


@schema.parametrize()
@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
def test_every_documented_operation(case: schemathesis.Case) -> None:
    case.call_and_validate()
