"""Service settings from the environment (prefix ``SHIPA_SERVICE_``), refusing placeholder secrets outside demo mode."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict
from sqlalchemy.engine import make_url

from pipelines.predictionlog.log import DEMO_AUDIT_KEY
from pipelines.service.errors import ServiceConfigError

if TYPE_CHECKING:
    from pipelines.pacs.client import DicomWebConfig

ENV_PREFIX = "SHIPA_SERVICE_"
DEFAULT_STATE_DIR = Path("service-state")
# Used only when demo_mode is on and no pepper is set: tokens made with it are worthless outside a demo.
DEMO_TOKEN_PEPPER = "shipa-demo-token-pepper-not-for-production"
# The audit key of demo mode (when none is set) is pipelines.predictionlog.log.DEMO_AUDIT_KEY: public, so a chain
# hashed and checkpointed under it proves nothing outside a demo.
CHECKPOINTS_SUFFIX = ".audit-checkpoints.jsonl"
_NEW_SECRET = "python -c 'import secrets; print(secrets.token_urlsafe(32))'"
MIN_SECRET_CHARS = 16
PLACEHOLDER_SECRETS = frozenset(
    {"change-me", "changeme", "change_me", "changethis", "secret", "password", "placeholder", "todo", "xxx"}
)
DEFAULT_CONTENT_TYPES = ("application/json", "application/fhir+json")


def is_placeholder_secret(value: str) -> bool:
    """True for an empty, short or well-known placeholder secret."""
    stripped = value.strip()
    return len(stripped) < MIN_SECRET_CHARS or stripped.lower() in PLACEHOLDER_SECRETS or "change-me" in stripped


def _split_list(value: Any) -> Any:
    """Accept a comma-separated string from the environment as well as a list."""
    if isinstance(value, str):
        return tuple(part.strip() for part in value.split(",") if part.strip())
    return value


def default_checkpoints(database_url: str, state_dir: Path) -> Path | None:
    """Where the audit checkpoints go by default: beside an SQLite file, else in ``state_dir``; None in memory."""
    url = make_url(database_url)
    if url.get_backend_name() != "sqlite":
        return state_dir / f"service{CHECKPOINTS_SUFFIX}"
    database = url.database or ""
    if database in ("", ":memory:") or database.startswith("file::memory:"):
        return None  # the chain dies with the process: nothing outside it to anchor
    path = Path(database).expanduser()
    return path.with_name(path.stem + CHECKPOINTS_SUFFIX)


class AuditSettings(BaseSettings):
    """What reading and verifying the prediction log needs, from ``SHIPA_SERVICE_*``: no token pepper.

    ``audit_key`` keys the HMAC chain and the checkpoints (its own secret: never the token pepper); anyone holding
    it can rewrite the chain undetectably, so only the service and the auditors get it. ``audit_checkpoints`` is
    the append-only file of signed heads (default: ``<database stem>.audit-checkpoints.jsonl`` beside an SQLite
    database, else ``<state_dir>/service.audit-checkpoints.jsonl``); every service process and CLI writing the log
    must use the same file.
    """

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore", frozen=True)

    demo_mode: bool = False
    state_dir: Path = DEFAULT_STATE_DIR
    database_url: str = ""
    audit_key: SecretStr = SecretStr("")
    audit_checkpoints: Path | None = Field(
        None, description="the file of signed checkpoints of the audit chain's head (default: beside the database)"
    )

    def _secret_problems(self) -> list[str]:
        """What is wrong with the secrets, one sentence each (never a secret's value)."""
        key = self.audit_key.get_secret_value()
        if self.demo_mode:
            return []
        if is_placeholder_secret(key) or key.strip().encode("utf-8") == DEMO_AUDIT_KEY:
            return [
                f"{ENV_PREFIX}AUDIT_KEY is empty, a placeholder, the public demo key or shorter than "
                f"{MIN_SECRET_CHARS} characters; set a random secret of its own ({_NEW_SECRET}) "
                f"or {ENV_PREFIX}DEMO_MODE=true for a demo"
            ]
        return []

    @model_validator(mode="after")
    def _check(self) -> AuditSettings:
        problems = self._secret_problems()
        if problems:
            raise ValueError("; ".join(problems))
        # Frozen model: fill the derived defaults once, here, rather than on every read.
        if not self.database_url:
            object.__setattr__(self, "database_url", f"sqlite:///{self.state_dir / 'service.db'}")
        if self.audit_checkpoints is None:
            object.__setattr__(self, "audit_checkpoints", default_checkpoints(self.database_url, self.state_dir))
        return self

    def audit_key_bytes(self) -> bytes:
        """The audit key; the documented demo key when demo mode runs without one."""
        value = self.audit_key.get_secret_value()
        if self.demo_mode and not value.strip():
            return DEMO_AUDIT_KEY
        return value.encode("utf-8")


class DicomWebSettings(BaseSettings):
    """The hospital PACS over DICOMweb, from ``SHIPA_SERVICE_DICOMWEB_*``: read by the service (``POST
    /diagnosis/{task}/studies/{uid}``) and by ``shipa watch``. Without a URL the PACS route answers 501.
    The token or the password is a secret of the environment, never written to a file or a log."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore", frozen=True)

    dicomweb_url: str | None = Field(None, description="the PACS's DICOMweb root, e.g. http://pacs:8042/dicom-web")
    dicomweb_token: SecretStr | None = Field(None, description="a bearer token for the PACS (else user/password)")
    dicomweb_user: str | None = Field(None, description="HTTP basic-auth user for the PACS")
    dicomweb_password: SecretStr | None = Field(None, description="HTTP basic-auth password for the PACS")
    dicomweb_timeout_s: float = Field(30.0, gt=0, le=600, description="PACS connect and read timeout in seconds")
    dicomweb_max_instances: int = Field(
        64, ge=1, le=10_000, description="most instances of a study whose headers are read to find one to score"
    )
    dicomweb_max_bytes: int = Field(
        256 * 1024 * 1024, ge=1024, description="most bytes received from the PACS for one request"
    )

    def dicomweb_config(self) -> DicomWebConfig | None:
        """The PACS these settings name, with its credentials; None without ``SHIPA_SERVICE_DICOMWEB_URL``."""
        from pipelines.pacs.client import DicomWebConfig

        if not self.dicomweb_url:
            return None
        return DicomWebConfig(
            url=self.dicomweb_url,
            token=self.dicomweb_token.get_secret_value() if self.dicomweb_token else None,
            username=self.dicomweb_user,
            password=self.dicomweb_password.get_secret_value() if self.dicomweb_password else None,
            timeout_s=self.dicomweb_timeout_s,
            max_bytes=self.dicomweb_max_bytes,
        )


class ServiceSettings(AuditSettings, DicomWebSettings):
    """Deployment settings of the inference service, read from ``SHIPA_SERVICE_*`` environment variables.

    ``database_url`` defaults to an SQLite file ``service.db`` under ``state_dir``; any SQLAlchemy URL works
    (PostgreSQL included). ``token_pepper`` keys the token hashes: changing it invalidates every token. The audit
    key and checkpoint file are :class:`AuditSettings`'.
    """

    token_pepper: SecretStr = SecretStr("")
    # Real CR/DX files are 5-30 MB, so the default admits a radiograph with its Bundle.
    max_body_bytes: int = Field(64 * 1024 * 1024, ge=1024, description="largest accepted request body")
    rate_per_s: float = Field(50.0, gt=0, description="requests per second per token (token bucket refill)")
    burst: int = Field(100, ge=1, description="requests a token may make at once (token bucket size)")
    cors_origins: Annotated[tuple[str, ...], NoDecode] = ()
    content_types: Annotated[tuple[str, ...], NoDecode] = DEFAULT_CONTENT_TYPES
    max_claims_per_request: int = Field(1000, ge=1)
    threads: int = Field(1, ge=1, description="OMP/torch threads per worker")
    workers: int = Field(
        1, ge=1, le=64, description="server processes sharing the port, each with its own models (about one per core)"
    )
    max_concurrent_per_token: int = Field(
        32, ge=1, description="requests one token may have in progress at once, per worker (then: 429)"
    )
    header_timeout_s: float = Field(
        10.0, gt=0, le=300, description="seconds a client may take to send a request's headers (then: closed)"
    )
    body_timeout_s: float = Field(
        30.0, gt=0, le=600, description="longest silence while a request body is read (then: closed)"
    )
    token_cache_s: float = Field(
        1.0, ge=0, le=60, description="seconds an active token is trusted without a database lookup (0: never)"
    )
    batch_max_claims: int = Field(32, ge=1, description="most claims of concurrent requests scored in one model call")
    batch_max_images: int = Field(8, ge=1, description="most images of concurrent diagnosis requests in one model call")
    batch_max_wait_ms: float = Field(
        2.0, ge=0, le=1000, description="how long an idle model waits for requests still being read to join a batch"
    )
    inline_max_bytes: int = Field(
        64 * 1024,
        ge=0,
        description="fraud requests up to this size are handled on the event loop, larger ones in threads (0: all)",
    )
    tracking_uri: str | None = None
    fraud_history: Path | None = Field(
        None, description="the ingest's tables folder fraud claims are scored against (default: data/interim/tables)"
    )
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=1, le=65535)
    ssl_certfile: Path | None = Field(None, description="TLS certificate (PEM) uvicorn serves with; with ssl_keyfile")
    ssl_keyfile: Path | None = Field(None, description="TLS private key (PEM) of ssl_certfile")
    log_level: str = "INFO"
    service_name: str = Field("shipa-service", min_length=1, description="AuditEvent.source.observer display")

    @field_validator("cors_origins", "content_types", mode="before")
    @classmethod
    def _lists(cls, value: Any) -> Any:
        return _split_list(value)

    @field_validator("content_types")
    @classmethod
    def _lower_types(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(v.lower() for v in value)

    def _secret_problems(self) -> list[str]:
        problems = []
        pepper = self.token_pepper.get_secret_value()
        if not self.demo_mode and is_placeholder_secret(pepper):
            problems.append(
                f"{ENV_PREFIX}TOKEN_PEPPER is empty, a placeholder or shorter than {MIN_SECRET_CHARS} characters; "
                f"set a random secret ({_NEW_SECRET}) or {ENV_PREFIX}DEMO_MODE=true for a demo"
            )
        problems += super()._secret_problems()
        problems += self._tls_problems()
        if pepper.strip() and pepper.strip() == self.audit_key.get_secret_value().strip():
            # One leaked secret would then both forge tokens and rewrite the audit chain.
            problems.append(f"{ENV_PREFIX}AUDIT_KEY must not be the token pepper: give each its own secret")
        return problems

    def _tls_problems(self) -> list[str]:
        # Checked at start, so a wrong path is one clear line, not a TLS handshake failure for every client.
        files = {"SSL_CERTFILE": self.ssl_certfile, "SSL_KEYFILE": self.ssl_keyfile}
        if (self.ssl_certfile is None) != (self.ssl_keyfile is None):
            return [f"{ENV_PREFIX}SSL_CERTFILE and {ENV_PREFIX}SSL_KEYFILE go together: set both or neither"]
        return [
            f"{ENV_PREFIX}{name} is not a readable file" for name, path in files.items() if path and not _readable(path)
        ]

    def pepper(self) -> bytes:
        """The token-hashing pepper; the documented demo pepper when demo mode runs without one."""
        value = self.token_pepper.get_secret_value()
        if self.demo_mode and not value.strip():
            value = DEMO_TOKEN_PEPPER
        return value.encode("utf-8")


def _readable(path: Path) -> bool:
    try:
        with Path(path).open("rb"):
            return True
    except OSError:
        return False


_S = TypeVar("_S", bound=AuditSettings)


def load_service_settings(**overrides: Any) -> ServiceSettings:
    """Read the service settings from the environment now (never at import time).

    Args:
        overrides: field values that take precedence over the environment (e.g. from CLI options).

    Raises:
        ServiceConfigError: a setting is invalid; the message names the environment variable, never its value.
    """
    return _load(ServiceSettings, overrides)


def load_audit_settings(**overrides: Any) -> AuditSettings:
    """Read what verifying the prediction log needs (database, audit key, checkpoints): no token pepper.

    Raises:
        ServiceConfigError: as :func:`load_service_settings`.
    """
    return _load(AuditSettings, overrides)


def _load(kind: type[_S], overrides: dict[str, Any]) -> _S:
    try:
        return kind(**overrides)
    except ValidationError as exc:
        parts = []
        for err in exc.errors():
            loc = ".".join(str(p) for p in err["loc"])
            msg = str(err["msg"]).removeprefix("Value error, ")
            parts.append(f"{ENV_PREFIX}{loc.upper()}: {msg}" if loc else msg)
        raise ServiceConfigError("invalid service settings: " + "; ".join(parts)) from None
