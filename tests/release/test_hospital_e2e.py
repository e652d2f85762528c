"""A hospital's first scored study, end to end and offline: release -> install -> serve -> PACS.

The tiny cohort's diagnosis and fraud champions (trained and registered by the real stages) are released with the
full wheelhouse of the lock file and the Makefile's torch build, signed; ``shipa install`` verifies the bundle and
builds a fresh venv with ``pip install --no-index`` from it (no project source, no system site-packages); that
venv's ``shipa serve --release`` serves the bundle with a real Orthanc as its PACS; a radiograph pushed to Orthanc is
scored through ``POST /diagnosis/pneumonia/studies/{uid}`` and its Structured Report appears in Orthanc.

The wheelhouse is downloaded from the package registry (about 1 GB besides torch, which comes from the local build),
so this test is marked slow; it skips without Orthanc.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pydicom
import pytest
from pacs.orthanc import running_orthanc  # tests/pacs/orthanc.py (tests/ is on sys.path)
from service.helpers import PEPPER, auth, free_port, serve_env
from service.test_model_endpoints import Case, Registry, case, registry  # noqa: F401 - module fixtures, reused

from pipelines.predictionlog.db import make_engine
from pipelines.predictionlog.roles import Role
from pipelines.release.build import WheelhouseOptions, build_release
from pipelines.release.keys import generate_key_pair, load_private_key
from pipelines.release.wheelhouse import torch_spec_from_makefile
from pipelines.service.tokens import TokenStore

REPO = Path(__file__).resolve().parents[2]
SERVE_TIMEOUT_S = 240


@pytest.fixture(scope="module")
def installed(registry: Registry, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Path, Path]]:  # noqa: F811
    """(bundle, public key, venv): the champions released with the full wheelhouse and installed offline."""
    folder = tmp_path_factory.mktemp("hospital")
    generate_key_pair(folder / "publisher.pem", folder / "publisher.pub")
    bundle = folder / "shipa.shipa-release"
    build_release(
        ["models:/shipa-diagnosis-pneumonia@champion", "models:/shipa-fraud@champion"],
        bundle,
        tracking_uri=registry.uri,
        key=load_private_key((folder / "publisher.pem").read_text()),
        name="shipa",
        wheelhouse=WheelhouseOptions(
            lock=REPO / "constraints.txt", project=REPO, torch_spec=torch_spec_from_makefile(REPO / "Makefile")
        ),
    )
    venv = folder / "venv"
    result = subprocess.run(
        [
            str(REPO / ".venv" / "bin" / "shipa"),
            "install",
            str(bundle),
            "--trusted-key",
            str(folder / "publisher.pub"),
            "--venv",
            str(venv),
        ],
        capture_output=True,
        text=True,
        env={**os.environ, "SHIPA_RELEASES_DIR": str(folder / "releases")},
        timeout=900,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    yield bundle, folder / "publisher.pub", venv


@pytest.mark.slow
def test_a_study_pushed_to_the_pacs_is_scored_by_the_installed_release_and_its_report_filed(
    installed: tuple[Path, Path, Path],
    tiny_cohort: Path,
    case: Case,  # noqa: F811
    tmp_path: Path,
) -> None:
    bundle, public_key, venv = installed
    shipa = venv / "bin" / "shipa"
    assert shipa.exists() and not (venv / "lib" / "python3.11" / "site-packages" / "pytest").exists()
    state = tmp_path / "state"
    state.mkdir()
    with running_orthanc(tmp_path / "orthanc") as orthanc:
        db, env = serve_env(state, tiny_cohort / "data" / "interim" / "tables")
        env["SHIPA_SERVICE_DICOMWEB_URL"] = orthanc.dicomweb
        env.pop("MLFLOW_TRACKING_URI", None)  # the release's models, nothing else
        token = TokenStore(make_engine(db), PEPPER.encode()).add("dr-seitkali", Role.clinician)
        port = free_port()
        # The installed venv's own interpreter and packages: not the project's .venv, not its source tree.
        command = [str(shipa), "serve", "--release", str(bundle), "--trusted-key", str(public_key)]
        server = subprocess.Popen(
            [*command, "--port", str(port)], cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
        )
        base = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + SERVE_TIMEOUT_S
            ready = None
            while time.monotonic() < deadline and server.poll() is None:
                try:
                    ready = httpx.get(f"{base}/ready", headers=auth(token), timeout=5)
                    if ready.status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                time.sleep(1)
            assert ready is not None and ready.status_code == 200, server.poll()
            study_uid = str(pydicom.dcmread(case.dicom).StudyInstanceUID)
            orthanc.push(case.dicom.read_bytes())
            answer = httpx.post(f"{base}/diagnosis/pneumonia/studies/{study_uid}", headers=auth(token), timeout=120)
            assert answer.status_code == 200, answer.text
            kinds = {s["MainDicomTags"].get("Modality") for s in orthanc.series(study_uid)}
            assert {"SR", "OT"} <= kinds, kinds
        finally:
            server.terminate()
            try:
                server.wait(timeout=30)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait(timeout=10)
    bundle_report = answer.json()
    assert bundle_report["resourceType"] == "Bundle"
    assert any(e["resource"]["resourceType"] == "RiskAssessment" for e in bundle_report["entry"])
