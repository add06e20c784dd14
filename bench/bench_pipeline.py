"""Benchmark: where one order-sign call spends its CPU, phase by phase, in-process.

For the generated visits of ``bench/payloads.py`` (10 and 100 Procedures; ``--bodies``
compact and/or realistic, ``--variants`` error and/or clean, as in ``bench/bench_service.py``)
it times, each on already-prepared input:

  * ``parse``   the request body bytes -> JSON (orjson)
  * ``map``     CDS Hooks draftOrders + prefetch -> TherapyRecord (``map_cds_hooks``)
  * ``rules``   TherapyRecord -> visits and findings (``check_record``)
  * ``cards``   findings -> cards (``cards_for``)
  * ``encode``  cards -> response body bytes
  * ``app``     the whole HTTP call through the ASGI application (no network, no server)

``app`` is what the service does per request minus the HTTP server itself; the server adds
about what the floor in ``bench/bench_service.py`` costs. Numbers are CPU milliseconds per
call (best of ``--rounds`` rounds, each the mean of ``--repeat`` calls).

Back-to-back calls flatter the code: every call finds the previous one's instructions and
data still in the CPU caches. A served call does not (between two calls the server parses
HTTP, the kernel moves packets, or the core idles), and on the 2-vCPU benchmark VM that made
the same call cost about 1.5x as much. ``--pause-us 500`` lets the core idle before each call
and reports those colder costs; compare them with the server's CPU ms per request.

Run: .venv/bin/python bench/bench_pipeline.py [--procedures 10,100] [--repeat N] [--rounds R]
     [--pause-us N] [--bodies compact,realistic] [--variants error,clean]
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import orjson

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from payloads import order_sign_request  # noqa: E402

from cds_hooks.models import CdsResponse  # noqa: E402
from fhir_mappings import map_cds_hooks  # noqa: E402
from fhir_mappings.orders import draft_service_requests  # noqa: E402
from fhir_mappings.writeback import DraftOrders, warm_up  # noqa: E402
from plugin.cards import CardOptions, cards_for  # noqa: E402
from plugin.pipeline import check_record  # noqa: E402
from plugin.services import ORDER_SIGN_SERVICE  # noqa: E402


def best_of(call: Callable[[], object], repeat: int, rounds: int, pause: float = 0.0) -> float:
    """CPU ms per call: the best round's mean. With ``pause`` (seconds) the core idles that
    long before each call, and the CPU the pauses themselves cost is subtracted."""
    call()
    best = float("inf")
    for _ in range(rounds):
        started = time.process_time()
        for _ in range(repeat):
            if pause:
                time.sleep(pause)
            call()
        best = min(best, (time.process_time() - started) / repeat * 1000)
    if pause:
        idle = float("inf")
        for _ in range(rounds):
            started = time.process_time()
            for _ in range(repeat):
                time.sleep(pause)
            idle = min(idle, (time.process_time() - started) / repeat * 1000)
        best -= idle
    return best


def asgi_caller(app: Any, path: str, body: bytes) -> Callable[[], Awaitable[int]]:
    """One POST through the ASGI application, returning the status."""
    headers = [
        (b"host", b"127.0.0.1"),
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
    ]
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": headers,
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000),
    }

    async def call() -> int:
        delivered = False
        status = 0

        async def receive() -> dict[str, Any]:
            nonlocal delivered
            if delivered:
                return {"type": "http.disconnect"}
            delivered = True
            return {"type": "http.request", "body": body, "more_body": False}

        async def send(message: dict[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]

        await app(dict(scope), receive, send)
        return status

    return call


def measure(
    app: Any,
    loop: asyncio.AbstractEventLoop,
    request: dict[str, Any],
    repeat: int,
    rounds: int,
    pause: float,
) -> list[float]:
    """CPU ms per call of each phase for one order-sign ``request``."""
    body = orjson.dumps(request)
    context, prefetch = request["context"], request["prefetch"]
    orders = context["draftOrders"]
    resolved = {k: prefetch.get(k) for k in ("procedures", "patient", "encounter", "carePlans")}
    record = map_cds_hooks(orders, resolved, patient_id=context["patientId"])
    result = check_record(record, payer_rule="cms", pair_rule="cms")
    options = CardOptions(
        hook_instance=request["hookInstance"],
        drafts=DraftOrders(draft_service_requests(orders), record.fhir_version),
    )
    cards = cards_for(result.analysis, options)
    call = asgi_caller(app, f"/cds-services/{ORDER_SIGN_SERVICE}", body)
    assert loop.run_until_complete(call()) == 200
    return [
        best_of(lambda: orjson.loads(body), repeat, rounds, pause),
        best_of(
            lambda: map_cds_hooks(orders, resolved, patient_id=context["patientId"]),
            repeat,
            rounds,
            pause,
        ),
        best_of(
            lambda: check_record(record, payer_rule="cms", pair_rule="cms"),
            repeat,
            rounds,
            pause,
        ),
        best_of(lambda: cards_for(result.analysis, options), repeat, rounds, pause),
        best_of(lambda: CdsResponse(cards=cards).encode(), repeat, rounds, pause),
        best_of(lambda: loop.run_until_complete(call()), repeat, rounds, pause),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--procedures", default="10,100", help="visit sizes, comma-separated")
    parser.add_argument("--repeat", type=int, default=0, help="calls per round (0: by size)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument(
        "--pause-us",
        type=int,
        default=0,
        help="let the core idle this many microseconds before each call (see the notes above)",
    )
    parser.add_argument("--bodies", default="compact", help="body styles: compact, realistic")
    parser.add_argument("--variants", default="error", help="visit variants: error, clean")
    args = parser.parse_args()
    styles = [x.strip() for x in args.bodies.split(",") if x.strip()]
    variants = [x.strip() for x in args.variants.split(",") if x.strip()]
    if not set(styles) <= {"realistic", "compact"} or not set(variants) <= {"clean", "error"}:
        parser.error("--bodies takes compact,realistic and --variants error,clean")

    from plugin.app import create_app
    from plugin.settings import Settings

    workdir = Path(tempfile.mkdtemp(prefix="therapy-cds-pipeline-"))
    app = create_app(Settings(require_auth=False, database_url=f"sqlite:///{workdir / 'bench.db'}"))
    logging.getLogger().setLevel(logging.INFO)  # as served: one line per call
    for handler in logging.getLogger().handlers:
        handler.setStream(open(workdir / "service.log", "a"))  # noqa: SIM115 - kept open
    warm_up()
    loop = asyncio.new_event_loop()
    # The app's lifespan, as the server runs it (start-up tuning included).
    lifespan = app.router.lifespan_context(app)
    loop.run_until_complete(lifespan.__aenter__())

    print(f"python {sys.version.split()[0]}; CPU ms per call, best of {args.rounds} rounds")
    print(
        f"{'visit':26}{'KiB':>5}{'parse':>8}{'map':>8}{'rules':>8}{'cards':>8}{'encode':>8}"
        f"{'app':>8}"
    )
    for style in styles:
        for size in [int(x) for x in args.procedures.split(",") if x.strip()]:
            for variant in variants:
                request = order_sign_request(
                    size, clean=variant == "clean", realistic=style == "realistic"
                )
                repeat = args.repeat or max(200, 4000 // size)
                timings = measure(app, loop, request, repeat, args.rounds, args.pause_us / 1e6)
                label = f"{size:>3} proc {style} {variant}"
                kib = len(orjson.dumps(request)) / 1024
                print(f"{label:26}{kib:5.0f}" + "".join(f"{t:8.3f}" for t in timings))
    loop.run_until_complete(lifespan.__aexit__(None, None, None))
    loop.close()


if __name__ == "__main__":
    main()
