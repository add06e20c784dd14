"""All configuration in one place: environment variables with the ``THERAPY_CDS_`` prefix.

The names and defaults are fixed by the product contract. Unsafe combinations are refused at
start-up with a message that says what to change, rather than discovered on the first request.
"""

from __future__ import annotations

import base64
import binascii
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Literal

from pydantic import (
    ByteSize,
    Field,
    SecretStr,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from fhir_mappings import DEFAULT_MAX_FILE_BYTES
from plugin.rules.payer import (
    PayerMapping,
    PayerMappingError,
    load_payer_mapping,
    shipped_payer_mapping,
)
from plugin.rules.vocabulary import (
    CHOICES,
    CardPolicy,
    PairRule,
    PayerRule,
    Vocabulary,
    VocabularyError,
    parse,
)

__all__ = ["CARD_POLICIES", "CardPolicy", "PairRule", "PayerRule", "Settings", "get_settings"]

#: The card policies, in the enum's order (for scripts that check a policy name).
CARD_POLICIES: tuple[CardPolicy, ...] = tuple(CardPolicy)

LogFormat = Literal["text", "json"]

SANDBOX_ORIGIN = "https://sandbox.cds-hooks.org"

MAX_PROCEDURES_PER_VISIT = 200
"""The default cap on the therapy Procedures of one visit
(``THERAPY_CDS_MAX_PROCEDURES_PER_VISIT``).

A real outpatient visit documents a handful; 200 is a day of one-minute blocks over three hours.
The rules' work and output grow with the Procedures (never with the pairs among them), so the
cap bounds every answer; over it nothing of the visit is analysed and the caller is told."""


#: THERAPY_CDS_SESSION_KEY: this many random bytes (AES-256-GCM), written in base64.
SESSION_KEY_BYTES = 32
SESSION_KEY_HOWTO = "generate one with `openssl rand -base64 32`"


def decode_session_key(text: str) -> bytes:
    """The AES-256 key a ``THERAPY_CDS_SESSION_KEY`` value names: 32 bytes in base64 (standard
    or URL-safe alphabet, padding optional). The value itself is never put in an error."""
    raw = text.strip()
    try:
        key = base64.b64decode(
            raw.replace("-", "+").replace("_", "/") + "=" * (-len(raw) % 4), validate=True
        )
    except (binascii.Error, ValueError):
        raise ValueError(f"THERAPY_CDS_SESSION_KEY is not base64; {SESSION_KEY_HOWTO}") from None
    if len(key) != SESSION_KEY_BYTES:
        raise ValueError(
            f"THERAPY_CDS_SESSION_KEY must be {SESSION_KEY_BYTES} bytes in base64, this one is "
            f"{len(key)} bytes; {SESSION_KEY_HOWTO}"
        )
    return key


def _split_commas(value: object) -> object:
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


class Settings(BaseSettings):
    """Service settings (product contract, "Settings")."""

    model_config = SettingsConfigDict(
        env_prefix="THERAPY_CDS_",
        extra="ignore",
        frozen=True,
        validate_default=True,
        hide_input_in_errors=True,  # a refused METRICS_TOKEN must not be printed
    )

    # The rule choices (plugin.rules.vocabulary); read with its parse, so a refused value says
    # the variable and the accepted values as every other entry point does.
    payer_rule: PayerRule = PayerRule.CMS
    # Beyond the contract (issue 15): the payer mapping (TOML) that picks each visit's payer
    # rule from the patient's Coverage; None: the shipped one (plugin/data/payer_rules.toml).
    # Read and validated at start-up; `payer_rule` stays the default for unmapped payers.
    payer_rules_file: Path | None = None
    pair_interval_rule: PairRule = PairRule.CMS
    # Beyond the contract (issue 13): which cards a call answers with; a call may choose
    # another with the request extension member `cardPolicy`.
    card_policy: CardPolicy = CardPolicy.PROBLEMS
    database_url: str = "sqlite:///./therapy-cds.db"
    require_auth: bool = True
    trusted_issuers_file: Path | None = None
    public_base_url: str | None = None
    fhir_server_allowlist: Annotated[list[str], NoDecode] = Field(default_factory=list)
    cors_origins: Annotated[list[str], NoDecode] = Field(default_factory=lambda: [SANDBOX_ORIGIN])
    # Beyond the contract: call an allow-listed fhirServer without a token when the request
    # carries none (the public sandbox's open servers, checklist P-12). Off in production.
    allow_unauthenticated_fhir: bool = False
    fhir_timeout_seconds: float = Field(default=2.0, gt=0, le=30)
    fhir_deadline_seconds: float = Field(default=4.0, gt=0, le=60)
    # Beyond the contract (issue 17): the most therapy Procedures one visit -- and one CDS call --
    # may carry; over it the services answer 413, `check` and `audit` refuse the visit.
    max_procedures_per_visit: int = Field(default=MAX_PROCEDURES_PER_VISIT, ge=1, le=100_000)
    # Largest answer read from a FHIR or authorization server (prefetch fallback and the SMART
    # app): streamed, and refused at the first byte over the cap.
    fhir_max_response_bytes: int = Field(default=10 * 1024 * 1024, gt=0)
    # `serve --workers N` (N > 1): how long a worker may take to answer the supervisor's health
    # check, start-up included, before it is replaced. uvicorn's own default (5 s) kills workers
    # that are still importing on a busy machine, over and over.
    worker_healthcheck_seconds: int = Field(default=30, ge=1, le=600)
    # Development mode: set by `therapy-cds serve --dev` (and so `make serve`); announced loudly.
    dev_mode: bool = False
    log_level: str = "INFO"
    # Log lines as `time level logger key=value ...` text, or one JSON object per line.
    log_format: LogFormat = "text"
    # The CLI's cap on one input file (decompressed size for gzip): `5GB`, `300MB`, `512MiB` or
    # bytes; `check`/`audit`/`invoke --max-file-size` override it for one run.
    max_file_size: ByteSize = Field(default=ByteSize(DEFAULT_MAX_FILE_BYTES), gt=0)
    # Issue 15: CMS quarterly data files, comma-separated, each `path` or `path@YYYY-MM-DD` (the
    # first date of service it applies to; README "CMS data"). PTP: Practitioner PTP edit files
    # (none: the built-in rule-book excerpt). MUE: Practitioner Services MUE tables (none: no
    # E-MUE-EXCEEDED). Read at start-up; an unusable file stops the start with its line.
    ptp_files: Annotated[list[str], NoDecode] = Field(default_factory=list)
    mue_files: Annotated[list[str], NoDecode] = Field(default_factory=list)

    # --- operator endpoints: what is served beside the CDS Hooks API (issue 17) ---
    # GET /metrics. None: served in development; in production only with METRICS_TOKEN set.
    # true: served (with the token when one is set). false: never.
    metrics: bool | None = None
    # When set, GET /metrics needs `Authorization: Bearer <token>` (at least 16 characters).
    metrics_token: SecretStr | None = None
    # /docs and /openapi.json. None: served in development only. true / false: always / never.
    api_docs: bool | None = None
    # /rules/feedback (the feedback report page). None: served in development only.
    # true / false: always / never (counts and reason codes, no patient data; see the README).
    feedback_page: bool | None = None
    # ---
    # Beyond the contract (issue 19): the AES-256-GCM key the SMART app's sessions (launch state,
    # access tokens) are encrypted with in the database; 32 random bytes in base64, the same on
    # every worker and node. Set it in production; when unset a key is generated beside a SQLite
    # database, with a warning (README).
    session_key: SecretStr | None = None
    # Seconds between two writes of a worker's counts of cards shown (and at shutdown).
    feedback_flush_seconds: float = Field(default=5.0, gt=0, le=3600)

    @property
    def development(self) -> bool:
        """`serve --dev`, or client authentication off (what the sandbox also goes by)."""
        return self.dev_mode or not self.require_auth

    def metrics_served(self) -> bool:
        """Whether GET /metrics is mounted (see ``metrics``)."""
        if self.metrics is not None:
            return self.metrics
        return self.development or self.metrics_token is not None

    def api_docs_served(self) -> bool:
        """Whether /docs and /openapi.json are served (see ``api_docs``)."""
        return self.api_docs if self.api_docs is not None else self.development

    def feedback_page_served(self) -> bool:
        """Whether /rules/feedback is served (see ``feedback_page``)."""
        return self.feedback_page if self.feedback_page is not None else self.development

    def session_key_bytes(self) -> bytes | None:
        """The decoded ``session_key`` (None when it is not set)."""
        if self.session_key is None:
            return None
        return decode_session_key(self.session_key.get_secret_value())

    @field_validator("session_key")
    @classmethod
    def _session_key_readable(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            decode_session_key(value.get_secret_value())
        return value

    @field_validator("payer_rule", "pair_interval_rule", "card_policy", mode="before")
    @classmethod
    def _rule_choice(cls, value: object, info: ValidationInfo) -> object:
        kind = cls.model_fields[str(info.field_name)].annotation
        if not (isinstance(kind, type) and issubclass(kind, Vocabulary)):
            raise TypeError(f"{info.field_name} is not a rule choice")  # a field list slip
        try:
            return parse(kind, value, CHOICES[kind].setting)
        except VocabularyError as exc:  # the message as it is ("Value error, " left out)
            raise PydanticCustomError("rule_choice", "{message}", {"message": str(exc)}) from None

    @field_validator("metrics_token")
    @classmethod
    def _strong_token(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value().strip()) < 16:
            raise ValueError("THERAPY_CDS_METRICS_TOKEN must be at least 16 characters")
        return value

    @field_validator(
        "fhir_server_allowlist", "cors_origins", "ptp_files", "mue_files", mode="before"
    )
    @classmethod
    def _comma_separated(cls, value: object) -> object:
        return _split_commas(value)

    @field_validator("public_base_url")
    @classmethod
    def _no_trailing_slash(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        value = value.strip().rstrip("/")
        if not value.startswith(("https://", "http://")):
            raise ValueError("THERAPY_CDS_PUBLIC_BASE_URL must be an absolute http(s) URL")
        return value

    def payer_mapping(self) -> PayerMapping:
        """The payer mapping in force (the file, read once per process, or the shipped one)."""
        if self.payer_rules_file is None:
            return shipped_payer_mapping()
        return _payer_mapping_file(self.payer_rules_file)

    @field_validator("payer_rules_file")
    @classmethod
    def _payer_mapping_readable(cls, value: Path | None) -> Path | None:
        if value is not None:
            try:
                _payer_mapping_file(value)
            except PayerMappingError as exc:
                raise ValueError(f"THERAPY_CDS_PAYER_RULES_FILE: {exc}") from None
        return value

    @model_validator(mode="after")
    def _refuse_unsafe(self) -> Settings:
        if self.require_auth and not self.dev_mode:
            missing = [
                name
                for name, value in (
                    ("THERAPY_CDS_TRUSTED_ISSUERS_FILE", self.trusted_issuers_file),
                    ("THERAPY_CDS_PUBLIC_BASE_URL", self.public_base_url),
                )
                if value is None
            ]
            if missing:
                raise ValueError(
                    "client authentication is on (THERAPY_CDS_REQUIRE_AUTH=true) but "
                    + " and ".join(missing)
                    + " is not set; set it, or run `therapy-cds serve --dev` for local development"
                )
            if self.trusted_issuers_file is not None and not self.trusted_issuers_file.is_file():
                raise ValueError(
                    f"THERAPY_CDS_TRUSTED_ISSUERS_FILE points to {self.trusted_issuers_file}, "
                    "which is not a readable file"
                )
        if self.fhir_deadline_seconds < self.fhir_timeout_seconds:
            raise ValueError(
                "THERAPY_CDS_FHIR_DEADLINE_SECONDS must be >= THERAPY_CDS_FHIR_TIMEOUT_SECONDS"
            )
        return self


@lru_cache(maxsize=4)
def _payer_mapping_file(path: Path) -> PayerMapping:
    return load_payer_mapping(path)


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read once from the environment."""
    return Settings()
