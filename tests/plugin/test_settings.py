"""Settings: contract names and defaults, comma lists, unsafe values refused."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest
from pydantic import ValidationError

from plugin.settings import Settings

#: 32 bytes (0, 1, ..., 31) in base64.
SESSION_KEY = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for name in list(os.environ):
        if name.startswith("THERAPY_CDS_"):
            monkeypatch.delenv(name)


def test_contract_defaults_in_dev_mode() -> None:
    settings = Settings(dev_mode=True)
    assert settings.payer_rule == "cms"
    assert settings.pair_interval_rule == "cms"
    assert settings.database_url == "sqlite:///./therapy-cds.db"
    assert settings.require_auth is True
    assert settings.cors_origins == ["https://sandbox.cds-hooks.org"]
    assert settings.fhir_server_allowlist == []


def test_auth_on_without_issuers_is_refused_with_a_useful_message() -> None:
    with pytest.raises(ValidationError) as info:
        Settings()
    message = str(info.value)
    assert "THERAPY_CDS_TRUSTED_ISSUERS_FILE" in message
    assert "THERAPY_CDS_PUBLIC_BASE_URL" in message
    assert "--dev" in message


def test_environment_is_read_with_prefix_and_comma_lists(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    issuers = tmp_path / "issuers.json"
    issuers.write_text("[]")
    monkeypatch.setenv("THERAPY_CDS_TRUSTED_ISSUERS_FILE", str(issuers))
    monkeypatch.setenv("THERAPY_CDS_PUBLIC_BASE_URL", "https://cds.example.org/")
    monkeypatch.setenv("THERAPY_CDS_SESSION_KEY", SESSION_KEY)
    monkeypatch.setenv("THERAPY_CDS_PAYER_RULE", "ama")
    monkeypatch.setenv("THERAPY_CDS_PAIR_INTERVAL_RULE", "strict")
    monkeypatch.setenv(
        "THERAPY_CDS_FHIR_SERVER_ALLOWLIST", "https://ehr.example.org/fhir, https://b.example.org"
    )
    monkeypatch.setenv("THERAPY_CDS_CORS_ORIGINS", "*")
    settings = Settings()
    assert settings.public_base_url == "https://cds.example.org"
    assert settings.payer_rule == "ama"
    assert settings.pair_interval_rule == "strict"
    assert settings.fhir_server_allowlist == [
        "https://ehr.example.org/fhir",
        "https://b.example.org",
    ]
    assert settings.cors_origins == ["*"]
    assert settings.session_key_bytes() == bytes(range(32))


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("THERAPY_CDS_PAYER_RULE", "medicaid"),
        ("THERAPY_CDS_PAIR_INTERVAL_RULE", "loose"),
        ("THERAPY_CDS_PUBLIC_BASE_URL", "cds.example.org"),
        ("THERAPY_CDS_MAX_FILE_SIZE", "lots"),
        ("THERAPY_CDS_MAX_FILE_SIZE", "0"),
    ],
)
def test_bad_values_are_refused(monkeypatch: pytest.MonkeyPatch, name: str, value: str) -> None:
    monkeypatch.setenv("THERAPY_CDS_DEV_MODE", "true")
    monkeypatch.setenv(name, value)
    with pytest.raises(ValidationError):
        Settings()


def test_production_without_a_session_key_still_starts(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The session key is beyond the fixed contract: a deployment configured by the contract's
    settings alone keeps starting (the key is then generated beside the database, warned)."""
    issuers = tmp_path / "issuers.json"
    issuers.write_text("[]")
    monkeypatch.setenv("THERAPY_CDS_TRUSTED_ISSUERS_FILE", str(issuers))
    monkeypatch.setenv("THERAPY_CDS_PUBLIC_BASE_URL", "https://cds.example.org")
    assert Settings().session_key is None
    assert Settings(dev_mode=True).session_key is None


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("not base64 at all!", "not base64"),
        ("c2hvcnQta2V5", "this one is 9 bytes"),  # "short-key"
        ("AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8fHw==", "this one is 34 bytes"),
    ],
)
def test_a_session_key_that_is_not_32_bytes_of_base64_is_refused_and_not_echoed(
    monkeypatch: pytest.MonkeyPatch, value: str, expected: str
) -> None:
    monkeypatch.setenv("THERAPY_CDS_DEV_MODE", "true")
    monkeypatch.setenv("THERAPY_CDS_SESSION_KEY", value)
    with pytest.raises(ValidationError) as info:
        Settings()
    message = str(info.value)
    assert expected in message
    assert value not in message


def test_a_url_safe_session_key_without_padding_is_read(monkeypatch: pytest.MonkeyPatch) -> None:
    key = bytes(range(200, 232))
    text = base64.urlsafe_b64encode(key).decode().rstrip("=")
    assert "-" in text or "_" in text
    monkeypatch.setenv("THERAPY_CDS_SESSION_KEY", text)
    assert Settings(dev_mode=True).session_key_bytes() == key
    assert text not in repr(Settings(dev_mode=True))


def test_missing_issuers_file_is_refused(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("THERAPY_CDS_TRUSTED_ISSUERS_FILE", str(tmp_path / "absent.json"))
    monkeypatch.setenv("THERAPY_CDS_PUBLIC_BASE_URL", "https://cds.example.org")
    with pytest.raises(ValidationError, match="not a readable file"):
        Settings()


def test_every_setting_is_in_the_readme() -> None:
    """Each environment variable the service reads has a row (or a mention) in the README, so a
    new setting cannot ship undocumented."""
    from pathlib import Path

    from plugin.settings import Settings
    from plugin.web.settings import WebSettings

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")
    missing = [
        name.upper()
        for model in (Settings, WebSettings)
        for name in model.model_fields
        if f"`{name.upper()}`" not in readme and f"THERAPY_CDS_{name.upper()}" not in readme
    ]
    assert not missing, f"settings missing from README.md: {missing}"
