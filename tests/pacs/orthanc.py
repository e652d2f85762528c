"""A real Orthanc (Debian's ``orthanc`` with its DICOMweb plugin) on 127.0.0.1, started and stopped by the tests.

Its configuration, storage and index live in a temporary folder; HTTP and DICOM ports are free ones; remote access
is off and no user is needed. Stopped by its PID (terminate, then kill after 10 s).
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from service.helpers import free_port

ORTHANC = Path("/usr/sbin/Orthanc")
DICOMWEB_PLUGIN = Path("/usr/share/orthanc/plugins/libOrthancDicomWeb.so")


def require_orthanc() -> None:
    """Skip the test when Orthanc or its DICOMweb plugin is not installed."""
    if not ORTHANC.exists():
        pytest.skip(f"Orthanc is not installed ({ORTHANC} absent): apt-get install orthanc orthanc-dicomweb")
    if not DICOMWEB_PLUGIN.exists():
        pytest.skip(
            f"the Orthanc DICOMweb plugin is not installed ({DICOMWEB_PLUGIN}): apt-get install orthanc-dicomweb"
        )


@dataclass
class Orthanc:
    """A running Orthanc: its REST base URL, its DICOMweb root and its process."""

    base: str
    dicomweb: str
    process: subprocess.Popen[bytes]
    log: Path

    def push(self, dicom: bytes) -> dict[str, Any]:
        """Store one DICOM file through the REST API (``POST /instances``)."""
        response = httpx.post(f"{self.base}/instances", content=dicom, timeout=30)
        response.raise_for_status()
        return dict(response.json())

    def study_id(self, study_uid: str) -> str | None:
        """Orthanc's id of the study with this StudyInstanceUID, or None."""
        found = httpx.post(f"{self.base}/tools/lookup", content=study_uid, timeout=30).json()
        return next((item["ID"] for item in found if item["Type"] == "Study"), None)

    def series(self, study_uid: str) -> list[dict[str, Any]]:
        """The study's series (``GET /studies/{id}/series``), empty when Orthanc lacks the study."""
        study = self.study_id(study_uid)
        if study is None:
            return []
        return list(httpx.get(f"{self.base}/studies/{study}/series", timeout=30).json())

    def instance_file(self, instance_id: str) -> bytes:
        """One stored instance's DICOM file."""
        return httpx.get(f"{self.base}/instances/{instance_id}/file", timeout=30).content

    def stop(self) -> None:
        """Stop Orthanc by its PID."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)


@contextlib.contextmanager
def running_orthanc(
    folder: Path, start_timeout: float = 30.0, users: dict[str, str] | None = None
) -> Iterator[Orthanc]:
    """Start Orthanc with its configuration, storage and index under ``folder``; stop it afterwards.

    ``users`` (name -> password) turns HTTP basic authentication on; without, none is asked.
    """
    require_orthanc()
    folder.mkdir(parents=True, exist_ok=True)
    http_port, dicom_port = free_port(), free_port()
    config = {
        "Name": "shipa-test",
        "StorageDirectory": str(folder / "storage"),
        "IndexDirectory": str(folder / "index"),
        "HttpPort": http_port,
        "DicomPort": dicom_port,
        "RemoteAccessAllowed": False,
        "AuthenticationEnabled": bool(users),
        "RegisteredUsers": users or {},
        "Plugins": [str(DICOMWEB_PLUGIN)],
        "DicomWeb": {"Enable": True, "Root": "/dicom-web/"},
    }
    config_path = folder / "orthanc.json"
    config_path.write_text(json.dumps(config, indent=1), encoding="utf-8")
    log = folder / "orthanc.log"
    with log.open("wb") as out:
        process = subprocess.Popen([str(ORTHANC), str(config_path)], stdout=out, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{http_port}"
    auth = next(iter(users.items())) if users else None
    server = Orthanc(base, f"{base}/dicom-web", process, log)
    try:
        deadline = time.monotonic() + start_timeout
        while True:
            if process.poll() is not None:
                raise RuntimeError(
                    f"Orthanc exited with {process.returncode}: {log.read_text(errors='replace')[-2000:]}"
                )
            try:
                if httpx.get(f"{base}/dicom-web/studies", timeout=1, auth=auth).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"Orthanc did not answer within {start_timeout:.0f} s")
            time.sleep(0.1)
        yield server
    finally:
        server.stop()
