"""Bounded decoding over HTTP: hostile DICOM uploads to the real diagnosis endpoint of ``shipa serve`` (a server
process of its own, serving the tiny cohort's registered champion) get a 4xx OperationOutcome, and the server's
peak resident memory (VmHWM, /proc/<pid>/status) rises by less than 150 MB over its value before each request.

The hostile files carry the header of one of the cohort's own radiographs, so what refuses them is the decoding
limits and nothing else: a deflate bomb that inflates to 419 MB (400 MiB) from about 400 KB, an RLE frame of
16384 x 16384 (512 MiB expanded) behind a 64 x 64 header, a JPEG frame of 4096 x 4096 behind a 64 x 64 header and a
header declaring 65535 x 65535 pixels.
"""

from __future__ import annotations

import io
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import psutil
import pydicom
import pytest
from imaging import hostile  # tests/imaging/hostile.py (tests/ is on sys.path: rootdir-relative packages)
from pydicom.dataset import Dataset

from pipelines.imaging.dicom import normalize_pixels, read_dicom
from pipelines.imaging.errors import DicomError
from pipelines.predictionlog.db import make_engine
from pipelines.predictionlog.roles import Role
from pipelines.service.tokens import TokenStore

from .helpers import PEPPER, auth, free_port, serve_env
from .test_model_endpoints import Registry, registry  # noqa: F401 - the module-scoped fixture, reused

MB = 1e6
MAX_RISE_MB = 150


@dataclass
class Server:
    """A ``shipa serve`` process and a clinician token."""

    base: str
    process: psutil.Process
    token: str


def _vm_hwm_mb(process: psutil.Process) -> float:
    for line in Path(f"/proc/{process.pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024 / MB
    raise AssertionError("no VmHWM")


def _handler(proc: subprocess.Popen[bytes]) -> psutil.Process:
    """The process that answers requests: the server itself, or its one worker when it spawned one."""
    supervisor = psutil.Process(proc.pid)
    workers = [c for c in supervisor.children() if "multiprocessing.spawn" in " ".join(c.cmdline())]
    return workers[0] if len(workers) == 1 else supervisor


@pytest.fixture(scope="module")
def server(registry: Registry, tiny_cohort: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:  # noqa: F811
    work = tmp_path_factory.mktemp("bounded-decoding")
    state = work / "state"
    state.mkdir()
    db, env = serve_env(state, tiny_cohort / "data" / "interim" / "tables")
    token = TokenStore(make_engine(db), PEPPER.encode()).add("clinician-1", Role.clinician)
    port = free_port()
    args = ["serve", "--workers", "1", "--port", str(port), "--tracking-uri", registry.uri]
    proc = subprocess.Popen([sys.executable, "-m", "pipelines.cli", *args], cwd=work, env=env)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 240
        while True:
            assert proc.poll() is None, "the server exited before it was ready"
            assert time.monotonic() < deadline, "the server was not ready in 240 s"
            try:
                if httpx.get(f"{base}/ready", headers=auth(token), timeout=5).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        yield Server(base, _handler(proc), token)
    finally:
        proc.terminate()
        proc.wait(timeout=60)


@pytest.fixture(scope="module")
def radiograph(tiny_cohort: Path) -> tuple[bytes, Dataset]:
    """One of the cohort's chest radiographs (bytes and dataset) that ingest accepts."""
    for path in sorted((tiny_cohort / "data" / "raw" / "dicom").rglob("*.dcm")):
        data = path.read_bytes()
        try:
            normalize_pixels(read_dicom(data))
        except DicomError:
            continue  # one of the injected defects
        return data, pydicom.dcmread(io.BytesIO(data))
    raise AssertionError("no readable radiograph in the tiny cohort")


def _post(server: Server, data: bytes) -> tuple[httpx.Response, float, float]:
    """(response, seconds, VmHWM rise in MB) of one diagnosis request with ``data`` as the DICOM file."""
    before = _vm_hwm_mb(server.process)
    start = time.perf_counter()
    with httpx.Client(base_url=server.base, timeout=120) as client:
        response = client.post(
            "/diagnosis/pneumonia",
            files={"file": ("study.dcm", data, "application/dicom")},
            headers=auth(server.token),
        )
    return response, time.perf_counter() - start, _vm_hwm_mb(server.process) - before


def test_hostile_dicom_gets_a_4xx_and_the_server_stays_small(
    server: Server, radiograph: tuple[bytes, Dataset], capsys: pytest.CaptureFixture[str]
) -> None:
    honest, header = radiograph
    # An honest radiograph first: the model, the decoders and the request path are warm before anything is measured.
    warm, _, _ = _post(server, honest)
    assert warm.status_code == 200, warm.text
    hostile_files = {
        "deflate bomb": (hostile.deflate_bomb(400 * hostile.MiB, base=header), 413, "too-costly", "dicom_too_large"),
        "RLE lying": (hostile.rle_bomb((64, 64), (16384, 16384), base=header), 400, "structure", "dicom_unreadable"),
        "JPEG lying": (hostile.jpeg_lying((64, 64), (4096, 4096), base=header), 400, "structure", "dicom_unreadable"),
        "enormous header": (hostile.enormous_header(base=header), 413, "too-costly", "dicom_too_large"),
    }
    measured = []
    for name, (data, status, code, reason) in hostile_files.items():
        response, seconds, rise = _post(server, data)
        measured.append(f"{name}: {len(data)} bytes -> {response.status_code} in {seconds:.3f} s, VmHWM +{rise:.1f} MB")
        assert response.status_code == status, (name, response.text)
        outcome = response.json()
        assert outcome["resourceType"] == "OperationOutcome"
        issue = outcome["issue"][0]
        assert (issue["severity"], issue["code"], issue["expression"]) == ("error", code, ["file"]), name
        assert issue["diagnostics"].startswith(f"{reason}: "), (name, issue["diagnostics"])
        assert "probability" not in response.text
        assert rise < MAX_RISE_MB, (name, rise)
    assert len(hostile_files["deflate bomb"][0]) < 1_000_000
    with capsys.disabled():
        print("\n" + "\n".join(measured), f"\nserver VmHWM {_vm_hwm_mb(server.process):.0f} MB")
    # The server is still answering.
    again, _, _ = _post(server, honest)
    assert again.status_code == 200
