"""The Python peer for ``bench_service.py``: HealthChain serving one canned card on order-sign.

Run by the benchmark with the interpreter of a throw-away virtual environment that holds
``healthchain`` and ``uvicorn[standard]`` (never the project's); it imports nothing from this
repository. The handler does no work: whatever HealthChain spends is its own request parsing,
validation and response serialisation, which is what the comparison measures.

Usage: ``python bench/peer_healthchain.py PORT`` (serves on 127.0.0.1 only).
"""

from __future__ import annotations

import logging
import sys

import uvicorn
from healthchain.gateway import CDSHooksService, HealthChainAPI
from healthchain.models import CDSRequest, CDSResponse

CANNED_CARD = {
    "summary": "97530 billed with 97140 but neither line has modifier 59/X{EPSU}",
    "indicator": "critical",
    "detail": "Canned card: the peer does no analysis.",
    "source": {"label": "benchmark peer"},
}


def build_app() -> HealthChainAPI:
    app = HealthChainAPI(title="peer", enable_events=False)
    cds = CDSHooksService(use_events=False)

    @cds.hook("order-sign", id="therapy-timed-codes")
    def order_sign(request: CDSRequest) -> CDSResponse:
        return CDSResponse(cards=[CANNED_CARD])

    app.register_service(cds)
    return app


if __name__ == "__main__":
    logging.disable(logging.WARNING)
    port = int(sys.argv[1])
    uvicorn.run(build_app(), host="127.0.0.1", port=port, log_level="warning", access_log=False)
