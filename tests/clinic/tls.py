"""The service behind uvicorn's own TLS (``ssl_certfile``, ``ssl_keyfile``), a self-signed certificate."""

from __future__ import annotations

import contextlib
import datetime as dt
import ipaddress
import ssl
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import uvicorn
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from fastapi import FastAPI
from service.helpers import free_port

from pipelines.service.server import uvicorn_config
from pipelines.service.settings import ServiceSettings


def self_signed(folder: Path) -> tuple[Path, Path]:
    """(certificate, key) PEM files for 127.0.0.1, valid for a day."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return cert_path, key_path


@contextlib.contextmanager
def served_over_tls(app: FastAPI, settings: ServiceSettings, folder: Path) -> Iterator[httpx.Client]:
    """A second uvicorn for ``app`` (already started elsewhere: no lifespan) with TLS; yields a client trusting it."""
    cert, key = self_signed(folder)
    # As SHIPA_SERVICE_SSL_CERTFILE and _KEYFILE set them: the service's own uvicorn configuration serves TLS.
    tls = settings.model_copy(update={"ssl_certfile": cert, "ssl_keyfile": key})
    config = uvicorn_config(app, tls, port=free_port())
    assert (config.ssl_certfile, config.ssl_keyfile) == (str(cert), str(key))
    config.lifespan = "off"  # the app's lifespan belongs to the plain-http server of the same app
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    client = httpx.Client(
        base_url=f"https://127.0.0.1:{config.port}", verify=ssl.create_default_context(cafile=str(cert)), timeout=60
    )
    deadline = time.monotonic() + 20
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    try:
        assert server.started, "uvicorn with TLS did not start"
        yield client
    finally:
        client.close()
        server.should_exit = True
        thread.join(timeout=10)
