"""Service declarations (B-4..B-8) and configuration validation."""

from __future__ import annotations

from typing import Any

import pytest

from cds_hooks import (
    CdsHooksConfig,
    CdsResponse,
    CdsService,
    Invocation,
    ServiceRegistry,
    TrustedIssuer,
)
from cds_hooks.config import load_trusted_issuers, parse_trusted_issuers


async def handler(invocation: Invocation) -> CdsResponse:
    return CdsResponse(cards=())


def service(**overrides: Any) -> CdsService:
    fields: dict[str, Any] = {
        "id": "svc",
        "hook": "order-sign",
        "title": "T",
        "description": "D",
        "handler": handler,
    }
    fields.update(overrides)
    return CdsService(**fields)


@pytest.mark.parametrize("bad_id", ["a/b", "", "..", "with space", "x?y", "é"])
def test_service_ids_are_path_safe(bad_id: str) -> None:
    with pytest.raises(ValueError, match="B-7"):
        service(id=bad_id)


def test_sync_handler_is_refused() -> None:
    def sync(invocation: Invocation) -> CdsResponse:
        return CdsResponse(cards=())

    with pytest.raises(TypeError, match="async"):
        service(handler=sync)


def test_async_callable_object_is_accepted() -> None:
    class Handler:
        async def __call__(self, invocation: Invocation) -> CdsResponse:
            return CdsResponse(cards=())

    assert service(handler=Handler()).id == "svc"


def test_one_id_per_hook() -> None:
    registry = ServiceRegistry([service()])
    with pytest.raises(ValueError, match="already registered"):
        registry.add(service(hook="encounter-discharge"))


def test_bad_template_is_refused_at_declaration() -> None:
    with pytest.raises(ValueError, match="P-4"):
        service(prefetch={"patient": "Patient/{{patient}}"})


def test_descriptor_prunes_unset_members() -> None:
    descriptor = service(usage_requirements="Needs FHIR access").descriptor()
    dumped = descriptor.model_dump(mode="json", by_alias=True)
    assert dumped == {
        "hook": "order-sign",
        "id": "svc",
        "title": "T",
        "description": "D",
        "usageRequirements": "Needs FHIR access",
    }


def test_required_context_per_hook() -> None:
    assert service().context_requirements == ("userId", "patientId", "draftOrders")
    assert service(hook="encounter-discharge").context_requirements == (
        "userId",
        "patientId",
        "encounterId",
    )
    assert service(hook="com.example.custom").context_requirements == ()
    assert service(hook="x", required_context=("a",)).context_requirements == ("a",)


# ---------------------------------------------------------------- config


def test_auth_needs_a_public_base_url() -> None:
    with pytest.raises(ValueError, match="public_base_url"):
        CdsHooksConfig()
    config = CdsHooksConfig(public_base_url="https://cds.example.org/")
    assert config.public_base_url == "https://cds.example.org"


@pytest.mark.parametrize("algs", [("none",), ("HS256",), ("ES384", "HS512"), ()])
def test_symmetric_and_none_algorithms_are_refused(algs: tuple[str, ...]) -> None:
    with pytest.raises(ValueError, match="S-9"):
        CdsHooksConfig(require_auth=False, allowed_algorithms=algs)


@pytest.mark.parametrize(
    "entry",
    ["ftp://ehr.example.org", "https://user:pw@ehr.example.org", "https://ehr/?q=1", "ehr.org"],
)
def test_allowlist_entries_are_plain_base_urls(entry: str) -> None:
    with pytest.raises(ValueError, match="fhir_server_allowlist"):
        CdsHooksConfig(require_auth=False, fhir_server_allowlist=(entry,))


def test_allowlist_accepts_comma_separated_string() -> None:
    config = CdsHooksConfig(
        require_auth=False,
        fhir_server_allowlist="https://a.example/fhir/, https://b.example",  # type: ignore[arg-type]
    )
    assert config.fhir_server_allowlist == ("https://a.example/fhir", "https://b.example")


def test_trusted_issuers_file(tmp_path: Any) -> None:
    path = tmp_path / "issuers.json"
    path.write_text(
        '[{"iss": "https://sandbox.cds-hooks.org",'
        ' "jwks_url": "https://sandbox.cds-hooks.org/.well-known/jwks.json"},'
        ' {"iss": "https://ehr.example.org", "jwks": {"keys": []}, "tenants": ["t1"]}]'
    )
    issuers = load_trusted_issuers(path)
    assert issuers[1] == TrustedIssuer(
        iss="https://ehr.example.org", jwks={"keys": []}, tenants=("t1",)
    )
    config = CdsHooksConfig(public_base_url="https://cds.example.org", trusted_issuers=issuers)
    assert config.issuer("https://ehr.example.org") is issuers[1]
    assert config.issuer("https://other") is None


@pytest.mark.parametrize(
    "data",
    [
        {"iss": "x"},
        [{"iss": "x"}],
        [{"iss": "x", "jwks_url": "not a url"}],
        [{"iss": "x", "jwks": {"nokeys": 1}}],
        [{"iss": "x", "jwks": {"keys": []}, "extra": 1}],
        [{"iss": "x", "jwks": {"keys": []}}, {"iss": "x", "jwks": {"keys": []}}],
    ],
)
def test_bad_trusted_issuers(data: Any) -> None:
    with pytest.raises(ValueError, match="issuer"):
        parse_trusted_issuers(data)


def test_unreadable_trusted_issuers_file_names_the_file(tmp_path: Any) -> None:
    path = tmp_path / "missing.json"
    with pytest.raises(ValueError, match=r"missing\.json"):
        load_trusted_issuers(path)


def test_cors_origins_accept_comma_separated_string() -> None:
    config = CdsHooksConfig(
        require_auth=False,
        cors_origins="https://sandbox.cds-hooks.org, http://localhost:8080/",  # type: ignore[arg-type]
    )
    assert config.cors_origins == ("https://sandbox.cds-hooks.org", "http://localhost:8080")


def test_required_prefetch_must_be_declared() -> None:
    with pytest.raises(ValueError, match="required_prefetch"):
        service(required_prefetch=("patient",))
