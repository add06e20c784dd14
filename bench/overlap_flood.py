"""Issue 17, item 2: an order-sign request whose Procedures all overlap each other.

``flood_request(n)`` is one visit with ``n`` Procedures of 97140 and 97530 whose starts are
spread evenly over 8 hours, each lasting 14 minutes: each one overlaps the others that start
within 14 minutes of it, so the overlapping pairs grow with n squared (about n * n / 34: 800
Procedures, about 270 KB of JSON, make some 18,800 pairs; the shape of the issue's
reproduction). Answers used to grow with the pairs (one W-OVERLAP card per pair); they must
grow at most with n, and a visit over the Procedure cap must get a 413 OperationOutcome.

    python bench/overlap_flood.py 800 > flood.json                  # the request body
    python bench/overlap_flood.py --post URL 800 1600 5000          # post, print what came back

``--post`` prints, per size: the request bytes, the HTTP status, the wall time, the number of
cards, the answer bytes and (on an error) the OperationOutcome's diagnostics. Nothing here is
patient data: names and ids are invented. Runs against 127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import sys
import time
import urllib.error
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from plugin.hook_request import build_hook_request  # noqa: E402

CPT = "http://www.ama-assn.org/go/cpt"
HOOK_INSTANCE = "0f4d3c2b-1a09-4e8d-9c7b-6a5f4e3d2c1b"
START = datetime(2025, 3, 4, 13, 0, tzinfo=UTC)
WINDOW = timedelta(hours=8)  # the starts are spread over this
LENGTH = timedelta(minutes=14)  # each Procedure lasts this long


def _ref(kind: str, ident: str) -> dict[str, str]:
    return {"reference": f"{kind}/{ident}"}


def flood_bundle(procedures: int) -> dict[str, Any]:
    """One visit with ``procedures`` overlapping Procedures (see above) and two draft charges."""
    entries: list[dict[str, Any]] = [
        {"resource": {"resourceType": "Patient", "id": "pat-flood"}},
        {
            "resource": {
                "resourceType": "Encounter",
                "id": "enc-flood",
                "status": "finished",
                "class": {"code": "AMB"},
                "subject": _ref("Patient", "pat-flood"),
                "period": {
                    "start": START.isoformat(),
                    "end": (START + WINDOW + LENGTH).isoformat(),
                },
            }
        },
    ]
    step = WINDOW / procedures
    for index in range(procedures):
        start = START + step * index
        entries.append(
            {
                "resource": {
                    "resourceType": "Procedure",
                    "id": f"p{index}",
                    "status": "completed",
                    "code": {"coding": [{"system": CPT, "code": ("97140", "97530")[index % 2]}]},
                    "subject": _ref("Patient", "pat-flood"),
                    "encounter": _ref("Encounter", "enc-flood"),
                    "performedPeriod": {
                        "start": start.isoformat(),
                        "end": (start + LENGTH).isoformat(),
                    },
                }
            }
        )
    for index, code in enumerate(("97140", "97530")):
        entries.append(
            {
                "resource": {
                    "resourceType": "ServiceRequest",
                    "id": f"chg-{index}",
                    "status": "draft",
                    "intent": "order",
                    "code": {"coding": [{"system": CPT, "code": code}]},
                    "quantityQuantity": {"value": 2, "unit": "unit"},
                    "subject": _ref("Patient", "pat-flood"),
                    "encounter": _ref("Encounter", "enc-flood"),
                    "occurrenceDateTime": "2025-03-04",
                }
            }
        )
    return {"resourceType": "Bundle", "type": "collection", "entry": entries}


def flood_request(procedures: int) -> dict[str, Any]:
    """The order-sign request for :func:`flood_bundle` (fixed ``hookInstance``)."""
    return build_hook_request(flood_bundle(procedures), hook_instance=HOOK_INSTANCE)


def post(url: str, procedures: int, timeout: float) -> dict[str, Any]:
    """Post the flood request of ``procedures`` Procedures; what came back and how long it took."""
    if not url.startswith(("http://127.0.0.1", "http://localhost")):
        raise SystemExit("overlap_flood: posts only to http://127.0.0.1 or http://localhost")
    body = orjson.dumps(flood_request(procedures))
    request = urllib.request.Request(
        url, data=body, method="POST", headers={"Content-Type": "application/json"}
    )
    started = time.perf_counter()
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            status, answer = response.status, response.read()
    except urllib.error.HTTPError as error:
        status, answer = error.code, error.read()
    except (urllib.error.URLError, TimeoutError) as error:
        raise SystemExit(f"overlap_flood: {url}: {getattr(error, 'reason', error)}") from None
    elapsed = time.perf_counter() - started
    parsed = orjson.loads(answer) if answer else {}
    result: dict[str, Any] = {
        "procedures": procedures,
        "request_bytes": len(body),
        "status": status,
        "seconds": round(elapsed, 3),
        "answer_bytes": len(answer),
    }
    if isinstance(parsed, dict) and "cards" in parsed:
        result["cards"] = len(parsed["cards"])
    elif isinstance(parsed, dict) and parsed.get("resourceType") == "OperationOutcome":
        result["diagnostics"] = parsed["issue"][0].get("diagnostics")
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("sizes", type=int, nargs="+", help="Procedures per request")
    parser.add_argument("--post", metavar="URL", help="post to this loopback service URL")
    parser.add_argument("--timeout", type=float, default=120.0)
    args = parser.parse_args()
    if args.post is None:
        sys.stdout.buffer.write(orjson.dumps(flood_request(args.sizes[0])))
        return
    for size in args.sizes:
        print(orjson.dumps(post(args.post, size, args.timeout)).decode(), flush=True)


if __name__ == "__main__":
    main()
