"""Authenticating the CDS client: the bearer JWT on every call (S-3..S-12, B-11, F-10).

Checks, cheapest first (S-11): ``alg`` allowlisted (never ``none`` or HMAC, S-9/S-10), ``typ``
JWT, ``kid`` present (S-5), ``iss`` trusted (S-7), ``jku`` equal to the issuer's configured JWKS
URL or absent (S-7 -- anything else is refused with no outbound request; for an issuer configured
with an inline JWK Set only, the ``jku`` is ignored and never fetched), ``aud`` equal to the
exact endpoint URL (S-6), ``exp``/``iat``/``nbf`` finite numbers checked with a small leeway,
``jti`` present, ``tenant`` allowlisted when configured, then the signature against the issuer's
key for ``kid`` (S-8), and last the ``jti`` replay check, so forged tokens cannot burn real jtis.

A token is read within fixed bounds before any of that: at most ``MAX_TOKEN_CHARS`` long, strict
base64url, strict JSON nested at most ``MAX_TOKEN_JSON_DEPTH`` levels; anything else is a 401.

Every failure is :class:`~cds_hooks.errors.Unauthorized`: the 401 body is generic; the reason
and the token's ``iss``/``kid``/``jti`` go to the log only, never the token itself.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
import math
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import httpx
from fastapi.concurrency import run_in_threadpool
from joserfc import jws
from joserfc.errors import JoseError
from joserfc.jwk import ECKey, RSAKey

from cds_hooks.body import parse_json
from cds_hooks.config import CdsHooksConfig, TrustedIssuer
from cds_hooks.errors import InvalidRequest, Unauthorized
from cds_hooks.http_pool import HttpPool

__all__ = [
    "ClientAuthenticator",
    "ClientIdentity",
    "InMemoryReplayStore",
    "JwksCache",
    "ReplayStore",
]

logger = logging.getLogger("cds_hooks.auth")

Clock = Callable[[], float]

MAX_TOKEN_CHARS = 16_384
#: A JOSE header and our claims are flat objects (a ``jwk`` header member is two levels).
MAX_TOKEN_JSON_DEPTH = 16
MAX_JWKS_BYTES = 512 * 1024
_PRIVATE_MEMBERS = frozenset({"d", "p", "q", "dp", "dq", "qi", "oth", "k"})
_CURVES = {"ES256": "P-256", "ES384": "P-384", "ES512": "P-521"}


class ReplayStore(Protocol):
    """Remembers ``(iss, jti)`` pairs until their token expires (S-11).

    ``remember`` must be atomic: it returns True when the pair is new and records it, False when
    it was already seen (a replay). Implementations shared by several workers (a database table
    with a unique key) make replay protection hold across processes. Called from a worker
    thread, so a blocking implementation is fine.
    """

    def remember(self, issuer: str, jti: str, expires_at: float) -> bool: ...


class InMemoryReplayStore:
    """Single-process replay store. Entries are dropped once their token has expired; when
    full it refuses new tokens rather than forget live ones (fail closed)."""

    def __init__(self, *, clock: Clock = time.time, max_entries: int = 100_000) -> None:
        self._clock = clock
        self._max = max_entries
        self._seen: dict[tuple[str, str], float] = {}
        self._lock = threading.Lock()

    def remember(self, issuer: str, jti: str, expires_at: float) -> bool:
        now = self._clock()
        with self._lock:
            if len(self._seen) >= self._max:
                self._seen = {k: exp for k, exp in self._seen.items() if exp >= now}
                if len(self._seen) >= self._max:
                    return False
            key = (issuer, jti)
            previous = self._seen.get(key)
            if previous is not None and previous >= now:
                return False
            self._seen[key] = expires_at
            return True

    def __len__(self) -> int:
        return len(self._seen)


@dataclass(frozen=True)
class ClientIdentity:
    """Who called, as established by a verified token. Safe to log."""

    iss: str
    jti: str
    tenant: str | None = None


# ---------------------------------------------------------------- JWKS


def _import_public_key(jwk: Mapping[str, Any]) -> ECKey | RSAKey | None:
    """Import one JWK as a public verification key; symmetric and unusable keys are skipped."""
    kty = jwk.get("kty")
    if kty not in ("EC", "RSA") or jwk.get("use", "sig") != "sig":
        return None
    public = {k: v for k, v in jwk.items() if k not in _PRIVATE_MEMBERS}
    try:
        if kty == "EC":
            return ECKey.import_key(public)
        return RSAKey.import_key(public)
    except (JoseError, ValueError, TypeError, KeyError):
        return None


def _key_index(jwks: Mapping[str, Any] | None) -> dict[str, tuple[ECKey | RSAKey, str | None]]:
    index: dict[str, tuple[ECKey | RSAKey, str | None]] = {}
    keys = jwks.get("keys") if jwks else None
    for jwk in keys if isinstance(keys, list) else ():
        if not isinstance(jwk, dict) or not isinstance(jwk.get("kid"), str):
            continue
        key = _import_public_key(jwk)
        if key is not None and jwk["kid"] not in index:  # kids are unique (S-5): first wins
            alg = jwk.get("alg")
            index[jwk["kid"]] = (key, alg if isinstance(alg, str) else None)
    return index


@dataclass
class _IssuerKeys:
    inline: dict[str, tuple[ECKey | RSAKey, str | None]]
    fetched: dict[str, tuple[ECKey | RSAKey, str | None]] = field(default_factory=dict)
    fetched_at: float | None = None
    last_attempt: float | None = None
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


class JwksCache:
    """Verification keys per trusted issuer (S-8): the inline JWK Set first, then the JWKS URL,
    cached for ``jwks_cache_seconds`` and refreshed on an unknown ``kid`` at most once per
    ``jwks_min_refresh_seconds``. Only the issuer's *configured* URL is ever fetched."""

    def __init__(
        self, config: CdsHooksConfig, client: httpx.AsyncClient | HttpPool, clock: Clock
    ) -> None:
        self._config = config
        self._pool = HttpPool.wrap(client)
        self._clock = clock
        self._issuers: dict[str, _IssuerKeys] = {}

    def _state(self, issuer: TrustedIssuer) -> _IssuerKeys:
        state = self._issuers.get(issuer.iss)
        if state is None:
            state = _IssuerKeys(inline=_key_index(issuer.jwks))
            self._issuers[issuer.iss] = state
        return state

    async def key(
        self, issuer: TrustedIssuer, kid: str
    ) -> tuple[ECKey | RSAKey, str | None] | None:
        state = self._state(issuer)
        if kid in state.inline:
            return state.inline[kid]
        if issuer.jwks_url is None:
            return None
        async with state.lock:
            now = self._clock()
            stale = (
                state.fetched_at is None or now - state.fetched_at > self._config.jwks_cache_seconds
            )
            may_fetch = (
                state.last_attempt is None
                or now - state.last_attempt >= self._config.jwks_min_refresh_seconds
            )
            if (stale or kid not in state.fetched) and may_fetch:
                state.last_attempt = now
                fetched = await self._fetch(issuer)
                if fetched is not None:
                    state.fetched, state.fetched_at = fetched, now
            return state.fetched.get(kid)

    async def _fetch(
        self, issuer: TrustedIssuer
    ) -> dict[str, tuple[ECKey | RSAKey, str | None]] | None:
        assert issuer.jwks_url is not None
        timeout = self._config.jwks_fetch_timeout_seconds
        try:
            response = await self._pool.get().get(
                issuer.jwks_url,
                headers={"Accept": "application/json"},
                timeout=httpx.Timeout(timeout),
                follow_redirects=False,
            )
        except httpx.HTTPError as exc:
            logger.warning(
                "jwks fetch failed iss=%s error=%s", _loggable(issuer.iss), type(exc).__name__
            )
            return None
        if response.status_code != 200 or len(response.content) > MAX_JWKS_BYTES:
            logger.warning(
                "jwks fetch failed iss=%s status=%s", _loggable(issuer.iss), response.status_code
            )
            return None
        try:
            data = response.json()
        except ValueError:
            logger.warning("jwks fetch failed iss=%s error=not JSON", _loggable(issuer.iss))
            return None
        return _key_index(data if isinstance(data, dict) else None)


# ---------------------------------------------------------------- the authenticator


def _b64json(segment: str) -> Any:
    """One token segment: strict base64url (no stray characters), then strict JSON nested at
    most :data:`MAX_TOKEN_JSON_DEPTH` levels -- the body parser's rules, with a token's limit."""
    padded = segment + "=" * (-len(segment) % 4)
    raw = base64.b64decode(padded.encode("ascii"), altchars=b"-_", validate=True)
    return parse_json(raw, max_depth=MAX_TOKEN_JSON_DEPTH, what="the token")


def _loggable(value: object, limit: int = 128) -> str:
    """Claims come from an untrusted token: log them short and printable only."""
    if not isinstance(value, str):
        return "-" if value is None else f"<{type(value).__name__}>"
    cleaned = "".join(ch if ch.isprintable() else "?" for ch in value[:limit])
    return cleaned + ("…" if len(value) > limit else "")


def _number(value: object) -> float | None:
    """A NumericDate (RFC 7519 §2): a finite JSON number; booleans and strings are not."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def _key_fits(alg: str, key: ECKey | RSAKey, jwk_alg: str | None) -> bool:
    if jwk_alg is not None and jwk_alg != alg:
        return False
    if alg.startswith("ES"):
        return isinstance(key, ECKey) and key.curve_name == _CURVES.get(alg)
    return isinstance(key, RSAKey) and key.raw_value.key_size >= 2048


class ClientAuthenticator:
    """Verifies ``Authorization: Bearer <JWT>`` for one endpoint audience (S-3..S-11)."""

    def __init__(
        self,
        config: CdsHooksConfig,
        *,
        replay_store: ReplayStore | None = None,
        http_client: httpx.AsyncClient | HttpPool,
        clock: Clock = time.time,
    ) -> None:
        self._config = config
        self._replay: ReplayStore = replay_store or InMemoryReplayStore(clock=clock)
        self._clock = clock
        self.jwks = JwksCache(config, http_client, clock)

    async def authenticate(self, authorization: str | None, audience: str) -> ClientIdentity:
        """Return the caller's identity or raise :class:`Unauthorized` (reason logged only)."""
        token = self._bearer(authorization)
        header, claims = self._decode_unverified(token)
        fields = {
            "iss": _loggable(claims.get("iss")),
            "kid": _loggable(header.get("kid")),
            "jti": _loggable(claims.get("jti")),
        }
        try:
            return await self._verify(token, header, claims, audience)
        except Unauthorized as exc:
            exc.log_fields.update(fields)
            raise

    @staticmethod
    def _bearer(authorization: str | None) -> str:
        if not authorization:
            raise Unauthorized("missing Authorization header")
        scheme, _, token = authorization.strip().partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise Unauthorized("Authorization is not a Bearer token")
        if len(token) > MAX_TOKEN_CHARS:
            raise Unauthorized("token too large")
        return token

    @staticmethod
    def _decode_unverified(token: str) -> tuple[dict[str, Any], dict[str, Any]]:
        parts = token.split(".")
        if len(parts) != 3:
            raise Unauthorized("not a compact JWS")
        try:
            header, claims = _b64json(parts[0]), _b64json(parts[1])
        except (ValueError, binascii.Error, UnicodeError, InvalidRequest):
            raise Unauthorized("malformed token") from None
        if not isinstance(header, dict) or not isinstance(claims, dict):
            raise Unauthorized("malformed token")
        return header, claims

    async def _verify(
        self, token: str, header: dict[str, Any], claims: dict[str, Any], audience: str
    ) -> ClientIdentity:
        config = self._config
        # -- header (S-5, S-9, S-10)
        alg = header.get("alg")
        if not isinstance(alg, str) or alg not in config.allowed_algorithms:
            raise Unauthorized("algorithm not allowed")
        typ = header.get("typ")
        if not isinstance(typ, str) or typ.upper() != "JWT":
            raise Unauthorized("typ is not JWT")
        kid = header.get("kid")
        if not isinstance(kid, str) or not kid:
            raise Unauthorized("kid missing")
        if "crit" in header:
            raise Unauthorized("unsupported critical header")
        # -- issuer and jku (S-7)
        iss = claims.get("iss")
        issuer = config.issuer(iss) if isinstance(iss, str) else None
        if issuer is None:
            raise Unauthorized("untrusted issuer")
        # A jku is only a hint of where the keys are: it is never fetched. With a JWKS URL
        # configured it must name that URL; with an inline JWK Set only (no URL to compare), it
        # is ignored, since the key still comes from the configuration (the CDS Hooks Sandbox
        # sends a jku on every token).
        if "jku" in header and issuer.jwks_url is not None and header["jku"] != issuer.jwks_url:
            raise Unauthorized("jku is not the issuer's configured JWKS URL")
        # -- audience (S-6)
        aud = claims.get("aud")
        audiences = [aud] if isinstance(aud, str) else aud if isinstance(aud, list) else []
        if audience not in [a for a in audiences if isinstance(a, str)]:
            raise Unauthorized("aud does not match this endpoint")
        # -- time (S-6, S-11)
        now = self._clock()
        leeway = config.jwt_leeway_seconds
        if "exp" not in claims or "iat" not in claims:
            raise Unauthorized("exp or iat missing")
        exp, iat = _number(claims["exp"]), _number(claims["iat"])
        nbf = _number(claims["nbf"]) if "nbf" in claims else now
        if exp is None or iat is None or nbf is None:
            raise Unauthorized("exp, iat or nbf is not a finite number")
        if now > exp + leeway:
            raise Unauthorized("token expired")
        if exp > now + config.jwt_max_lifetime_seconds + leeway:
            raise Unauthorized("exp too far in the future")
        if iat > now + leeway:
            raise Unauthorized("iat in the future")
        if nbf > now + leeway:
            raise Unauthorized("token not valid yet (nbf)")
        jti = claims.get("jti")
        if not isinstance(jti, str) or not jti or len(jti) > 256:
            raise Unauthorized("jti missing")
        tenant = claims.get("tenant")
        if issuer.tenants and tenant not in issuer.tenants:
            raise Unauthorized("tenant not allowed")
        # -- signature (S-8)
        found = await self.jwks.key(issuer, kid)
        if found is None:
            raise Unauthorized("unknown kid")
        key, jwk_alg = found
        if not _key_fits(alg, key, jwk_alg):
            raise Unauthorized("key does not fit the algorithm")
        try:
            signed = jws.extract_compact(token.encode("ascii"))
            valid = jws.validate_compact(signed, key, algorithms=[alg])
        except (JoseError, ValueError, UnicodeError):
            valid = False
        if not valid:
            raise Unauthorized("bad signature")
        # -- replay, only for tokens that verified (S-11)
        # Keep the jti as long as the token could still be accepted, leeway included.
        keep_until = exp + leeway
        fresh = await run_in_threadpool(self._replay.remember, issuer.iss, jti, keep_until)
        if not fresh:
            raise Unauthorized("jti replayed")
        return ClientIdentity(
            iss=issuer.iss, jti=jti, tenant=tenant if isinstance(tenant, str) else None
        )
