"""Configuration the application hands to the protocol layer.

A plain frozen dataclass so the protocol layer does not depend on how settings are read; the
plugin builds it from its pydantic-settings class (env prefix ``THERAPY_CDS_``). Unsafe values
are refused at construction time, with a message that says what to change.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

__all__ = [
    "ASYMMETRIC_ALGORITHMS",
    "CdsHooksConfig",
    "TrustedIssuer",
    "load_trusted_issuers",
    "parse_trusted_issuers",
]

#: Algorithms that may ever be allowlisted (S-9: never ``none`` nor HMAC).
ASYMMETRIC_ALGORITHMS = frozenset(
    {"ES256", "ES384", "ES512", "RS256", "RS384", "RS512", "PS256", "PS384", "PS512"}
)


def _check_base_url(value: str, what: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{what} must be an absolute http(s) URL")
    if parts.username is not None or parts.password is not None:
        raise ValueError(f"{what} must not contain user information")
    if parts.query or parts.fragment:
        raise ValueError(f"{what} must not contain a query or fragment")
    return value.rstrip("/")


@dataclass(frozen=True)
class TrustedIssuer:
    """One entry of the trusted-issuers file (S-7, S-8).

    ``jwks`` is an inline JWK Set; ``jwks_url`` is where the issuer publishes it. With both, the
    inline set is used first and the URL is fetched only for an unknown ``kid``. A token's
    ``jku`` header is never fetched: with ``jwks_url`` set it must equal it exactly; with an
    inline set only it is ignored (the key comes from the configuration either way).
    ``tenants``, when non-empty, lists the ``tenant`` claim values accepted from this issuer.
    """

    iss: str
    jwks_url: str | None = None
    jwks: Mapping[str, Any] | None = field(default=None, hash=False, compare=False)
    tenants: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not isinstance(self.iss, str) or not self.iss:
            raise ValueError("trusted issuer: 'iss' must be a non-empty string")
        if self.jwks_url is None and self.jwks is None:
            raise ValueError(f"trusted issuer {self.iss!r}: give 'jwks_url' or 'jwks'")
        if self.jwks_url is not None:
            _check_base_url(self.jwks_url, f"trusted issuer {self.iss!r}: 'jwks_url'")
        if self.jwks is not None and not isinstance(self.jwks.get("keys"), list):
            raise ValueError(f"trusted issuer {self.iss!r}: 'jwks' must be a JWK Set with 'keys'")
        object.__setattr__(self, "tenants", tuple(self.tenants))


def parse_trusted_issuers(data: Any) -> tuple[TrustedIssuer, ...]:
    """Parse ``[{"iss", "jwks_url" or "jwks", "tenants"?}]`` (the TRUSTED_ISSUERS_FILE format)."""
    if not isinstance(data, list):
        raise ValueError("trusted issuers: expected a JSON array of issuer objects")
    issuers: list[TrustedIssuer] = []
    for index, entry in enumerate(data):
        if not isinstance(entry, dict):
            raise ValueError(f"trusted issuers[{index}]: expected an object")
        unknown = set(entry) - {"iss", "jwks_url", "jwks", "tenants"}
        if unknown:
            raise ValueError(f"trusted issuers[{index}]: unknown member(s) {sorted(unknown)}")
        tenants = entry.get("tenants") or []
        if not isinstance(tenants, list) or not all(isinstance(t, str) for t in tenants):
            raise ValueError(f"trusted issuers[{index}]: 'tenants' must be a list of strings")
        issuers.append(
            TrustedIssuer(
                iss=entry.get("iss", ""),
                jwks_url=entry.get("jwks_url"),
                jwks=entry.get("jwks"),
                tenants=tuple(tenants),
            )
        )
    seen = [i.iss for i in issuers]
    if len(seen) != len(set(seen)):
        raise ValueError("trusted issuers: each 'iss' may appear only once")
    return tuple(issuers)


def load_trusted_issuers(path: str | Path) -> tuple[TrustedIssuer, ...]:
    """Read the trusted-issuers JSON file; errors name the file and what is wrong."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ValueError(f"{path}: cannot read trusted issuers ({type(exc).__name__})") from exc
    try:
        return parse_trusted_issuers(data)
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from exc


@dataclass(frozen=True)
class CdsHooksConfig:
    """Everything the protocol layer needs to know about its deployment.

    Sequences may be given as lists; they are stored as tuples.
    """

    # --- client authentication (S-2..S-11)
    require_auth: bool = True
    #: External base URL (scheme://host[:port][/prefix]) used to build the exact JWT ``aud``
    #: for each endpoint (S-6, S-11). Required when ``require_auth`` is on.
    public_base_url: str | None = None
    trusted_issuers: tuple[TrustedIssuer, ...] = ()
    allowed_algorithms: tuple[str, ...] = ("ES384", "RS384")
    jwt_leeway_seconds: int = 30
    #: Tokens whose ``exp`` lies further than this in the future are refused, which also bounds
    #: how long the replay store must keep a ``jti`` (S-11: "at most about an hour").
    jwt_max_lifetime_seconds: int = 3600
    jwks_cache_seconds: int = 3600
    #: An unknown ``kid`` triggers a JWKS refresh at most this often per issuer.
    jwks_min_refresh_seconds: int = 60
    jwks_fetch_timeout_seconds: float = 3.0

    # --- CORS (CORS-1, CORS-2)
    cors_origins: tuple[str, ...] = ("https://sandbox.cds-hooks.org",)

    # --- FHIR server fallback (P-1..P-13)
    #: Base-URL prefixes the service may call back. Empty means no FHIR server is ever called.
    fhir_server_allowlist: tuple[str, ...] = ()
    #: Call ``fhirServer`` without a token when no ``fhirAuthorization`` is sent (P-12 practice;
    #: for open sandbox servers only, keep off in production).
    allow_unauthenticated_fhir: bool = False
    fhir_request_timeout_seconds: float = 3.0
    #: Overall budget for all FHIR calls of one hook invocation.
    fhir_deadline_seconds: float = 5.0
    #: Pages fetched per prefetch key, counting the first (P-10).
    fhir_max_pages: int = 10
    fhir_max_response_bytes: int = 10 * 1024 * 1024

    # --- requests
    max_request_bytes: int = 5 * 1024 * 1024

    def __post_init__(self) -> None:
        object.__setattr__(self, "trusted_issuers", tuple(self.trusted_issuers))
        for name in ("allowed_algorithms", "cors_origins"):
            object.__setattr__(self, name, tuple(_as_sequence(getattr(self, name))))
        bad_algs = [a for a in self.allowed_algorithms if a not in ASYMMETRIC_ALGORITHMS]
        if bad_algs or not self.allowed_algorithms:
            raise ValueError(
                "allowed_algorithms must be a non-empty subset of "
                f"{sorted(ASYMMETRIC_ALGORITHMS)}; 'none' and HMAC (HS*) are never allowed (S-9)"
            )
        if self.public_base_url is not None:
            object.__setattr__(
                self, "public_base_url", _check_base_url(self.public_base_url, "public_base_url")
            )
        elif self.require_auth:
            raise ValueError(
                "require_auth needs public_base_url (the external base URL the JWT 'aud' is "
                "checked against); set it, or turn require_auth off for development"
            )
        allowlist = tuple(
            _check_base_url(entry, "fhir_server_allowlist entry")
            for entry in _as_sequence(self.fhir_server_allowlist)
        )
        object.__setattr__(self, "fhir_server_allowlist", allowlist)
        for origin in self.cors_origins:
            if origin != "*":
                _check_base_url(origin, "cors_origins entry")
        object.__setattr__(
            self, "cors_origins", tuple(o if o == "*" else o.rstrip("/") for o in self.cors_origins)
        )
        numbers = {
            "jwt_leeway_seconds": self.jwt_leeway_seconds,
            "jwt_max_lifetime_seconds": self.jwt_max_lifetime_seconds,
            "fhir_request_timeout_seconds": self.fhir_request_timeout_seconds,
            "fhir_deadline_seconds": self.fhir_deadline_seconds,
            "fhir_max_pages": self.fhir_max_pages,
            "max_request_bytes": self.max_request_bytes,
        }
        for name, value in numbers.items():
            if value < 0 or (value == 0 and name != "jwt_leeway_seconds"):
                raise ValueError(f"{name} must be positive")

    def issuer(self, iss: str) -> TrustedIssuer | None:
        for entry in self.trusted_issuers:
            if entry.iss == iss:
                return entry
        return None


def _as_sequence(value: Sequence[str] | str) -> Sequence[str]:
    if isinstance(value, str):  # tolerate a single comma-separated string
        return [v.strip() for v in value.split(",") if v.strip()]
    return value
