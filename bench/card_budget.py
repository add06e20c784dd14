"""The cards each sample bundle gets: count, total and longest detail characters.

Every scenario of ``sample_bundles/scenarios.json`` is sent to the service in process, as
``therapy-cds invoke`` would send it (its hook, :func:`plugin.hook_request.build_hook_request`,
no FHIR access, authentication off), and the answer is measured. With ``--policy`` the call
carries the ``io.github.therapy-cds`` request extension ``cardPolicy``; without it the service's
default applies. ``--markdown`` prints a Markdown table, ``--json`` the numbers.

Run: .venv/bin/python bench/card_budget.py [--policy problems|summary|all] [--markdown|--json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "sample_bundles"


def measure(policy: str | None = None) -> list[dict[str, Any]]:
    """Per scenario: file, cards, total and longest detail characters, the cards' topics."""
    return asyncio.run(_measure(policy))


async def _measure(policy: str | None) -> list[dict[str, Any]]:
    from plugin.app import create_app
    from plugin.hook_request import build_hook_request
    from plugin.services import DISCHARGE_SERVICE, EXTENSION_KEY, ORDER_SIGN_SERVICE
    from plugin.settings import CARD_POLICIES, Settings

    if policy is not None and policy not in CARD_POLICIES:
        raise SystemExit(f"card_budget: --policy must be one of {', '.join(CARD_POLICIES)}")
    services = {"order-sign": ORDER_SIGN_SERVICE, "encounter-discharge": DISCHARGE_SERVICE}
    manifest = json.loads((SAMPLES / "scenarios.json").read_text(encoding="utf-8"))
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(
            require_auth=False,
            dev_mode=True,
            database_url=f"sqlite:///{Path(tmp) / 'budget.db'}",
            log_level="WARNING",
        )
        # In process, without the lifespan (no background work is needed to answer a hook).
        transport = httpx.ASGITransport(app=create_app(settings))
        async with httpx.AsyncClient(transport=transport, base_url="http://cds.test") as client:
            for scenario in manifest["scenarios"]:
                bundle = json.loads((SAMPLES / scenario["file"]).read_text(encoding="utf-8"))
                request: dict[str, Any] = dict(build_hook_request(bundle, scenario["hook"]))
                if policy is not None:
                    request["extension"] = {EXTENSION_KEY: {"cardPolicy": policy}}
                response = await client.post(
                    f"/cds-services/{services[scenario['hook']]}", json=request
                )
                response.raise_for_status()
                cards = response.json()["cards"]
                details = [len(c.get("detail") or "") for c in cards]
                rows.append(
                    {
                        "file": scenario["file"],
                        "cards": len(cards),
                        "detail_total": sum(details),
                        "detail_longest": max(details, default=0),
                        "topics": [c["source"].get("topic", {}).get("code") for c in cards],
                    }
                )
    return rows


def markdown(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| sample | cards | detail chars (total) | longest detail |",
        "|---|---:|---:|---:|",
    ]
    for row in rows:
        lines.append(
            f"| {row['file'].removesuffix('.json')} | {row['cards']} | {row['detail_total']}"
            f" | {row['detail_longest']} |"
        )
    cards = sum(r["cards"] for r in rows)
    total = sum(r["detail_total"] for r in rows)
    longest = max((r["detail_longest"] for r in rows), default=0)
    lines.append(f"| **all {len(rows)}** | **{cards}** | **{total}** | **{longest}** |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--policy", help="problems, summary or all (the request extension)")
    parser.add_argument("--json", action="store_true", help="print the numbers as JSON")
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    rows = measure(args.policy)
    print(json.dumps(rows, indent=1) if args.json else markdown(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
