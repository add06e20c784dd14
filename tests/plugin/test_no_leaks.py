"""No patient data, request body or token ever reaches the logs of the whole service.

The real application with client authentication on, driven through success and every error path
(replayed and garbage tokens, malformed JSON, 412 with an EHR access token, feedback with a
free-text comment), with every log record of every logger captured at DEBUG.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
from joserfc import jwt
from joserfc.jwk import ECKey

from plugin.app import create_app
from plugin.hook_request import build_hook_request
from plugin.services import ORDER_SIGN_SERVICE
from plugin.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
BASE = "https://cds.example.org"
ISSUER = "https://ehr.example.org"
KEY = ECKey.generate_key("P-384", parameters={"kid": "leak-test", "alg": "ES384", "use": "sig"})

PATIENT_NAME = "Okafor"
PATIENT_GIVEN = "Bram"
PATIENT_ID = "pat-bram-nomod"
BODY_MARKER = "ZZ-BODY-MARKER-5521"
ACCESS_TOKEN = "ehr-access-token-ZZ-9931"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def _token(path: str) -> str:
    now = int(time.time())
    claims = {
        "iss": ISSUER,
        "aud": f"{BASE}{path}",
        "iat": now,
        "exp": now + 300,
        "jti": str(uuid.uuid4()),
    }
    header = {"alg": "ES384", "typ": "JWT", "kid": KEY.kid}
    return jwt.encode(header, claims, KEY, algorithms=["ES384"])


def _request_body() -> dict[str, Any]:
    bundle = json.loads((ROOT / "sample_bundles" / "pair-no-modifier.json").read_text())
    return build_hook_request(bundle, hook="order-sign")


@pytest.mark.anyio
async def test_no_patient_data_body_or_token_in_any_log_record(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    issuers = tmp_path / "issuers.json"
    issuers.write_text(
        json.dumps([{"iss": ISSUER, "jwks": {"keys": [KEY.as_dict(private=False)]}}])
    )
    settings = Settings(
        require_auth=True,
        trusted_issuers_file=issuers,
        public_base_url=BASE,
        session_key="AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=",
        database_url=f"sqlite:///{tmp_path / 'cds.db'}",
        log_level="DEBUG",
    )
    app = create_app(settings)
    path = f"/cds-services/{ORDER_SIGN_SERVICE}"
    tokens: list[str] = []

    def auth(token: str) -> dict[str, str]:
        tokens.append(token)
        return {"Authorization": f"Bearer {token}"}

    caplog.set_level(logging.DEBUG)
    transport = httpx.ASGITransport(app)
    async with httpx.AsyncClient(transport=transport, base_url=BASE) as client:
        # 1. success, with patient data throughout the prefetch
        body = _request_body()
        assert PATIENT_NAME in json.dumps(body)
        good = _token(path)
        response = await client.post(path, json=body, headers=auth(good))
        assert response.status_code == 200
        assert response.json()["cards"]
        # 2. the same token again: a replay
        response = await client.post(path, json=body, headers=auth(good))
        assert response.status_code == 401
        # 3. a garbage token carrying a marker
        response = await client.post(path, json=body, headers=auth(f"{BODY_MARKER}.x.y"))
        assert response.status_code == 401
        # 4. malformed JSON with patient data and a marker in it
        broken = (
            f'{{"hook": "order-sign", "context": {{"patientId": "{PATIENT_ID}", '
            f'"x": "{BODY_MARKER}"'
        )
        response = await client.post(
            path,
            content=broken,
            headers={**auth(_token(path)), "Content-Type": "application/json"},
        )
        assert response.status_code == 400
        assert BODY_MARKER not in response.text
        # 5. no documentation, an EHR token for a server we may not call: 412
        starved = _request_body()
        del starved["prefetch"]
        starved["fhirServer"] = "https://not-allowed.example.org/fhir"
        starved["fhirAuthorization"] = {
            "access_token": ACCESS_TOKEN,
            "token_type": "Bearer",
            "expires_in": 300,
            "scope": "patient/*.read",
            "subject": "therapy-cds",
        }
        response = await client.post(path, json=starved, headers=auth(_token(path)))
        assert response.status_code == 412
        assert ACCESS_TOKEN not in response.text
        # 6. feedback with a free-text comment naming the patient
        card = body["hookInstance"]
        feedback = {
            "feedback": [
                {
                    "card": card,
                    "outcome": "overridden",
                    "outcomeTimestamp": "2025-03-04T15:00:00Z",
                    "overrideReason": {"userComment": f"{PATIENT_GIVEN} {PATIENT_NAME} said so"},
                }
            ]
        }
        response = await client.post(
            f"{path}/feedback", json=feedback, headers=auth(_token(f"{path}/feedback"))
        )
        assert response.status_code == 200

    records = caplog.records
    assert records, "the service logged nothing at all"
    forbidden = [PATIENT_NAME, PATIENT_GIVEN, PATIENT_ID, BODY_MARKER, ACCESS_TOKEN, *tokens]
    for record in records:
        texts = [record.getMessage(), *(str(v) for v in vars(record).values())]
        for text in texts:
            for secret in forbidden:
                assert secret not in text, f"{record.name} logged sensitive content"
