"""Service settings: environment prefix, derived defaults, and refusal of placeholder secrets outside demo mode."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipelines.predictionlog.log import DEMO_AUDIT_KEY
from pipelines.service.errors import ServiceConfigError
from pipelines.service.settings import DEMO_TOKEN_PEPPER, load_audit_settings, load_service_settings


@pytest.mark.parametrize("pepper", [None, "", "change-me", "CHANGEME", "changethis", "short-secret", "   "])
def test_placeholder_pepper_refused_outside_demo(monkeypatch: pytest.MonkeyPatch, pepper: str | None) -> None:
    if pepper is not None:
        monkeypatch.setenv("SHIPA_SERVICE_TOKEN_PEPPER", pepper)
    with pytest.raises(ServiceConfigError, match="SHIPA_SERVICE_TOKEN_PEPPER is empty, a placeholder") as err:
        load_service_settings()
    if pepper and pepper.strip():
        assert pepper not in str(err.value)


def test_demo_mode_accepts_missing_pepper(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SHIPA_SERVICE_DEMO_MODE", "true")
    settings = load_service_settings()
    assert settings.pepper() == DEMO_TOKEN_PEPPER.encode()
    monkeypatch.setenv("SHIPA_SERVICE_TOKEN_PEPPER", "change-me")
    assert load_service_settings().pepper() == b"change-me"


def test_environment_values_and_defaults(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("SHIPA_SERVICE_TOKEN_PEPPER", "a-real-secret-of-enough-length")
    monkeypatch.setenv("SHIPA_SERVICE_AUDIT_KEY", "another-real-secret-of-enough-length")
    monkeypatch.setenv("SHIPA_SERVICE_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("SHIPA_SERVICE_CORS_ORIGINS", "https://a.example, https://b.example")
    monkeypatch.setenv("SHIPA_SERVICE_RATE_PER_S", "7.5")
    monkeypatch.setenv("SHIPA_SERVICE_BURST", "9")
    settings = load_service_settings()
    assert settings.database_url == f"sqlite:///{tmp_path / 'state' / 'service.db'}"
    assert settings.cors_origins == ("https://a.example", "https://b.example")
    assert (settings.rate_per_s, settings.burst, settings.host, settings.threads) == (7.5, 9, "127.0.0.1", 1)
    assert settings.content_types == ("application/json", "application/fhir+json")
    assert "a-real-secret" not in repr(settings) and "another-real-secret" not in repr(settings)
    assert settings.audit_key_bytes() == b"another-real-secret-of-enough-length"
    assert settings.audit_checkpoints == tmp_path / "state" / "service.audit-checkpoints.jsonl"
    explicit = load_service_settings(database_url="postgresql+psycopg://svc@db/shipa")
    assert explicit.database_url == "postgresql+psycopg://svc@db/shipa"


def test_bad_value_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SHIPA_SERVICE_DEMO_MODE", "true")
    monkeypatch.setenv("SHIPA_SERVICE_PORT", "99999")
    with pytest.raises(ServiceConfigError, match="SHIPA_SERVICE_PORT"):
        load_service_settings()


def test_batching_and_token_cache_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SHIPA_SERVICE_DEMO_MODE", "true")
    defaults = load_service_settings()
    assert (defaults.batch_max_claims, defaults.batch_max_wait_ms, defaults.token_cache_s) == (32, 2.0, 1.0)
    assert (defaults.inline_max_bytes, defaults.batch_max_images) == (64 * 1024, 8)
    monkeypatch.setenv("SHIPA_SERVICE_BATCH_MAX_CLAIMS", "8")
    monkeypatch.setenv("SHIPA_SERVICE_BATCH_MAX_WAIT_MS", "0.5")
    monkeypatch.setenv("SHIPA_SERVICE_TOKEN_CACHE_S", "0")
    monkeypatch.setenv("SHIPA_SERVICE_INLINE_MAX_BYTES", "0")
    settings = load_service_settings()
    assert (settings.batch_max_claims, settings.batch_max_wait_ms, settings.token_cache_s) == (8, 0.5, 0.0)
    assert settings.inline_max_bytes == 0
    monkeypatch.setenv("SHIPA_SERVICE_BATCH_MAX_CLAIMS", "0")
    with pytest.raises(ServiceConfigError, match="SHIPA_SERVICE_BATCH_MAX_CLAIMS"):
        load_service_settings()
    monkeypatch.setenv("SHIPA_SERVICE_BATCH_MAX_CLAIMS", "8")
    monkeypatch.setenv("SHIPA_SERVICE_INLINE_MAX_BYTES", "-1")
    with pytest.raises(ServiceConfigError, match="SHIPA_SERVICE_INLINE_MAX_BYTES"):
        load_service_settings()


@pytest.mark.parametrize("key", [None, "", "change-me", "short-secret", DEMO_AUDIT_KEY.decode()])
def test_an_unusable_audit_key_is_refused_outside_demo(monkeypatch: pytest.MonkeyPatch, key: str | None) -> None:
    monkeypatch.setenv("SHIPA_SERVICE_TOKEN_PEPPER", "a-real-secret-of-enough-length")
    if key is not None:
        monkeypatch.setenv("SHIPA_SERVICE_AUDIT_KEY", key)
    for load in (load_service_settings, load_audit_settings):
        with pytest.raises(ServiceConfigError, match="SHIPA_SERVICE_AUDIT_KEY is empty, a placeholder, the public"):
            load()


def test_the_audit_key_is_its_own_secret_and_verifying_needs_no_pepper(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("SHIPA_SERVICE_TOKEN_PEPPER", "a-real-secret-of-enough-length")
    monkeypatch.setenv("SHIPA_SERVICE_AUDIT_KEY", "a-real-secret-of-enough-length")
    with pytest.raises(ServiceConfigError, match="SHIPA_SERVICE_AUDIT_KEY must not be the token pepper"):
        load_service_settings()
    monkeypatch.delenv("SHIPA_SERVICE_TOKEN_PEPPER")
    audit = load_audit_settings(database_url=f"sqlite:///{tmp_path / 'x' / 'svc.db'}")
    assert audit.audit_key_bytes() == b"a-real-secret-of-enough-length"
    assert audit.audit_checkpoints == tmp_path / "x" / "svc.audit-checkpoints.jsonl"
    assert load_audit_settings(database_url="postgresql+psycopg://svc@db/shipa").audit_checkpoints == Path(
        "service-state/service.audit-checkpoints.jsonl"
    )
    assert load_audit_settings(database_url="sqlite://").audit_checkpoints is None


def test_demo_mode_has_a_public_audit_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SHIPA_SERVICE_DEMO_MODE", "true")
    assert load_service_settings().audit_key_bytes() == DEMO_AUDIT_KEY


def test_tls_files_go_together_and_must_be_readable(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from pipelines.service.server import uvicorn_config

    monkeypatch.setenv("SHIPA_SERVICE_DEMO_MODE", "true")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert.write_text("certificate")
    key.write_text("key")
    monkeypatch.setenv("SHIPA_SERVICE_SSL_CERTFILE", str(cert))
    with pytest.raises(
        ServiceConfigError, match="SHIPA_SERVICE_SSL_CERTFILE and SHIPA_SERVICE_SSL_KEYFILE go together"
    ):
        load_service_settings()
    monkeypatch.setenv("SHIPA_SERVICE_SSL_KEYFILE", str(tmp_path / "missing.pem"))
    with pytest.raises(ServiceConfigError, match="SHIPA_SERVICE_SSL_KEYFILE is not a readable file") as err:
        load_service_settings()
    assert "missing.pem" not in str(err.value)
    monkeypatch.setenv("SHIPA_SERVICE_SSL_KEYFILE", str(key))
    settings = load_service_settings()
    config = uvicorn_config(None, settings)  # type: ignore[arg-type]
    assert (config.ssl_certfile, config.ssl_keyfile) == (str(cert), str(key))
    monkeypatch.delenv("SHIPA_SERVICE_SSL_CERTFILE")
    monkeypatch.delenv("SHIPA_SERVICE_SSL_KEYFILE")
    plain = uvicorn_config(None, load_service_settings())  # type: ignore[arg-type]
    assert plain.ssl_certfile is None and plain.ssl_keyfile is None
