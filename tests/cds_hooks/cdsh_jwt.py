"""Test-only JWT minting with generated keys (never a published private key as a trust root)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import uuid
from typing import Any

from joserfc import jws, jwt
from joserfc.jwk import ECKey, RSAKey

BASE = "https://cds.example.org"
NOW = 1_800_000_000.0
EC_ISS = "https://ehr-ec.example.org"
RSA_ISS = "https://ehr-rsa.example.org"
RSA_JWKS_URL = "https://ehr-rsa.example.org/.well-known/jwks.json"
EC_JWKS_URL = "https://ehr-ec.example.org/jwks.json"

EC_KEY = ECKey.generate_key("P-384", parameters={"kid": "ec-1", "alg": "ES384", "use": "sig"})
EC_KEY_256 = ECKey.generate_key("P-256", parameters={"kid": "ec-256"})
RSA_KEY = RSAKey.generate_key(2048, parameters={"kid": "rsa-1", "use": "sig"})
OTHER_EC_KEY = ECKey.generate_key("P-384", parameters={"kid": "ec-1"})  # same kid, wrong key


def public_jwks(*keys: ECKey | RSAKey) -> dict[str, Any]:
    return {"keys": [k.as_dict(private=False) for k in keys]}


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def claims(aud: str | list[str], **overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "iss": EC_ISS,
        "aud": aud,
        "iat": int(NOW),
        "exp": int(NOW) + 300,
        "jti": str(uuid.uuid4()),
    }
    body.update(overrides)
    return {k: v for k, v in body.items() if v is not None}


def token(
    aud: str | list[str],
    *,
    key: ECKey | RSAKey = EC_KEY,
    alg: str = "ES384",
    header: dict[str, Any] | None = None,
    **claim_overrides: Any,
) -> str:
    head: dict[str, Any] = {"alg": alg, "typ": "JWT", "kid": key.kid}
    head.update(header or {})
    head = {k: v for k, v in head.items() if v is not None}
    return jwt.encode(head, claims(aud, **claim_overrides), key, algorithms=[alg])


def unsigned_token(aud: str) -> str:
    head = b64(json.dumps({"alg": "none", "typ": "JWT", "kid": "ec-1"}).encode())
    return f"{head}.{b64(json.dumps(claims(aud)).encode())}."


def hs256_with_public_key(aud: str, key: ECKey | RSAKey = EC_KEY) -> str:
    """The classic confusion attack: HMAC keyed with the verifier's public key."""
    head = b64(json.dumps({"alg": "HS256", "typ": "JWT", "kid": key.kid}).encode())
    body = b64(json.dumps(claims(aud)).encode())
    secret = json.dumps(key.as_dict(private=False)).encode()
    mac = hmac.new(secret, f"{head}.{body}".encode(), hashlib.sha256).digest()
    return f"{head}.{body}.{b64(mac)}"


def tampered(aud: str) -> str:
    good = token(aud)
    head, _, signature = good.split(".")
    forged = b64(json.dumps(claims(aud, iss=EC_ISS, tenant="other")).encode())
    return f"{head}.{forged}.{signature}"


def signed_claims_text(aud: str, *, extra: dict[str, Any] | None = None, **overrides: Any) -> str:
    """A correctly signed token whose claims are written by ``json.dumps``, which writes
    ``NaN`` and ``Infinity``: what a careless client library can produce. ``extra`` members
    are set as given (``None`` included)."""
    payload = json.dumps({**claims(aud, **overrides), **(extra or {})}).encode()
    header = {"alg": "ES384", "typ": "JWT", "kid": EC_KEY.kid}
    return jws.serialize_compact(header, payload, EC_KEY, algorithms=["ES384"])


def with_header_text(header: bytes) -> str:
    """A token whose header segment is ``header`` as given (not necessarily JSON)."""
    return f"{b64(header)}.{b64(json.dumps({'iss': EC_ISS}).encode())}.c2ln"
