"""Settings of the web pages (sandbox, SMART app, rule catalogue), prefix ``THERAPY_CDS_``.

Kept apart from :mod:`plugin.settings` (the service's contract settings) so the pages can grow
without touching it; both read the same environment.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

#: SMART App Launch 2.0 scopes: read (r) and search (s) on what the timeline needs: the visit,
#: its Procedures and charges (ServiceRequests, Claims), the Patient (banner), CarePlans,
#: Coverage (the payer rule), and the visit history (the patient's Encounters and
#: progress-report DocumentReferences, R-E6).
_READS = (
    "user/Patient.r user/Encounter.rs user/Procedure.rs user/ServiceRequest.rs user/Claim.rs"
    " user/CarePlan.rs user/DocumentReference.rs user/Coverage.rs"
)
DEFAULT_SMART_SCOPE = f"launch {_READS}"
DEFAULT_STANDALONE_SCOPE = f"launch/patient launch/encounter {_READS}"


def default_sample_bundles_dir() -> Path:
    """``sample_bundles/`` of the source tree this package runs from."""
    return Path(__file__).resolve().parents[2] / "sample_bundles"


class WebSettings(BaseSettings):
    """Settings of the pages served next to the CDS Hooks endpoints."""

    model_config = SettingsConfigDict(
        env_prefix="THERAPY_CDS_", extra="ignore", frozen=True, validate_default=True
    )

    # The sandbox page: None = on exactly when client authentication is off (development);
    # true = also with authentication on (the page then asks for a client JWT and sends it);
    # false = never.
    sandbox: bool | None = None
    sample_bundles_dir: Path = Field(default_factory=default_sample_bundles_dir)
    # Largest bundle the sandbox helpers accept (bytes).
    sandbox_max_bytes: int = Field(default=5_000_000, gt=0)

    smart_client_id: str = "therapy-cds"
    smart_scope: str = DEFAULT_SMART_SCOPE
    smart_standalone_scope: str = DEFAULT_STANDALONE_SCOPE
    # Launch sessions (PKCE verifier, state, access token; in the database, sealed) live this long.
    smart_session_seconds: int = Field(default=900, ge=60, le=24 * 3600)
    # Authorized sessions (a token exchange succeeded); when full, the least recently used goes.
    smart_max_sessions: int = Field(default=1000, ge=1)
    # Launches waiting for the authorization server, all clients together and per client
    # address: a flood of launches only pushes out other pending launches, never a session.
    smart_max_pending_launches: int = Field(default=1000, ge=1)
    smart_max_pending_per_client: int = Field(default=20, ge=1)
    # How long an EHR's .well-known/smart-configuration is reused (a failed fetch: 10 s at most).
    smart_configuration_cache_seconds: int = Field(default=300, ge=1, le=24 * 3600)
    # The allow-listed FHIR servers offered on /smart/launch: None = only when client
    # authentication is off (development); true/false to force.
    smart_list_servers: bool | None = None
    smart_http_timeout_seconds: float = Field(default=5.0, gt=0, le=60)
    # "lax" works when the EHR opens the app in a window or tab. An EHR that shows it in a
    # cross-site frame needs "none" (the cookie is then always Secure, so HTTPS only).
    smart_cookie_samesite: Literal["lax", "none"] = "lax"

    @field_validator("smart_client_id")
    @classmethod
    def _client_id(cls, value: str) -> str:
        value = value.strip()
        if not value:
            raise ValueError("THERAPY_CDS_SMART_CLIENT_ID must not be empty")
        return value

    def sandbox_enabled(self, *, require_auth: bool) -> bool:
        """Whether ``/sandbox`` is served: explicitly set, else only in development."""
        return self.sandbox if self.sandbox is not None else not require_auth

    def smart_servers_listed(self, *, require_auth: bool) -> bool:
        """Whether ``/smart/launch`` offers the allow-list: explicitly set, else only in
        development (it tells anyone which EHRs this service talks to)."""
        return self.smart_list_servers if self.smart_list_servers is not None else not require_auth
