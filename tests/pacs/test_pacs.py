"""PACS over DICOMweb against a real Orthanc: a study pushed to the PACS is pulled by the service, scored by the
tiny cohort's champion (registered by the real stages), and its Structured Report and saliency capture are stored
back into the study; a CT is refused from its headers with nothing stored; a stopped PACS is a 502; ``shipa watch
--once`` scores a new study exactly once.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import shutil
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pydicom
import pytest
from fhir.resources.R4B import get_fhir_model_class
from service.helpers import PEPPER, auth, served
from service.test_model_endpoints import (  # noqa: F401 - the module-scoped fixtures, reused
    DX_NAME,
    Case,
    Registry,
    Service,
    case,
    registry,
)
from typer.testing import CliRunner

from pipelines.cli.pacs import STATE_NAME
from pipelines.cli.pacs import app as watch_app
from pipelines.config import DEMO_PSEUDONYM_KEY
from pipelines.fhir.pseudonym import Pseudonymizer
from pipelines.pacs.client import DicomWebConfig, PacsClient
from pipelines.pacs.errors import NoUsableInstance, PacsRefused, StudyTooLarge
from pipelines.pacs.retrieve import retrieve_for_model
from pipelines.pacs.watch import study_key
from pipelines.predictionlog.roles import Role
from pipelines.service.assemble import build_app
from pipelines.service.mlflow_source import MlflowModelSource
from pipelines.service.settings import ServiceSettings

from .orthanc import Orthanc, require_orthanc, running_orthanc

SR_CLASS = "1.2.840.10008.5.1.4.1.1.88.11"
SC_CLASS = "1.2.840.10008.5.1.4.1.1.7"
EXPECTED_ENTRIES = ["DiagnosticReport", "Observation", "RiskAssessment", "Device", "Provenance", "ImagingStudy"]


@pytest.fixture(scope="module")
def orthanc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Orthanc]:
    """One Orthanc for the module's route tests."""
    require_orthanc()
    with running_orthanc(tmp_path_factory.mktemp("orthanc")) as server:
        yield server


@pytest.fixture(scope="module")
def pacs_service(
    orthanc: Orthanc,  # first: without Orthanc the test skips before any model is trained
    registry: Registry,  # noqa: F811
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Service]:
    """``build_app`` with the MLflow provider and the module's Orthanc as its PACS, served by uvicorn."""
    state = tmp_path_factory.mktemp("pacs-service-state")
    settings = ServiceSettings(
        demo_mode=True,  # the tiny cohort was ingested with the demo key
        token_pepper=PEPPER,
        state_dir=state,
        database_url=f"sqlite:///{state / 'service.db'}",
        tracking_uri=registry.uri,
        rate_per_s=1000.0,
        burst=1000,
        dicomweb_url=orthanc.dicomweb,
        dicomweb_timeout_s=10.0,
    )
    provider = MlflowModelSource(tracking_uri=registry.uri, cache_dir=state / "models", ingest_image_size=32)
    app = build_app(settings, provider=provider, key=DEMO_PSEUDONYM_KEY)
    tokens = {role.value: app.state.tokens.add(f"{role.value}-1", role) for role in Role}
    with served(app, settings) as base:
        yield Service(base, app, tokens)


@contextlib.contextmanager
def pacs_at(service: Service, url: str | None) -> Iterator[None]:
    """The served app pointed at another PACS (``SHIPA_SERVICE_DICOMWEB_URL``) for the duration."""
    before = service.app.state.settings
    service.app.state.settings = before.model_copy(update={"dicomweb_url": url})
    try:
        yield
    finally:
        service.app.state.settings = before


def _post(service: Service, study_uid: str, role: str = "clinician") -> httpx.Response:
    with httpx.Client(base_url=service.base, timeout=120) as client:
        return client.post(f"/diagnosis/pneumonia/studies/{study_uid}", headers=auth(service.tokens[role]))


def _records(service: Service) -> list[Any]:
    return list(service.app.state.audit_log.iter_all())


def _text_values(ds: pydicom.Dataset) -> dict[str, str]:
    return {item.ConceptNameCodeSequence[0].CodeMeaning: item.TextValue for item in ds.ContentSequence}


def test_a_pacs_study_is_scored_and_its_report_and_overlay_are_stored_back(
    pacs_service: Service,
    orthanc: Orthanc,
    case: Case,  # noqa: F811
    caplog: pytest.LogCaptureFixture,
    tmp_path: Path,
) -> None:
    source = pydicom.dcmread(case.dicom)
    study_uid = str(source.StudyInstanceUID)
    orthanc.push(case.dicom.read_bytes())
    assert [s["MainDicomTags"]["Modality"] for s in orthanc.series(study_uid)] == ["CR"]
    before = len(_records(pacs_service))

    with caplog.at_level(logging.INFO):
        response = _post(pacs_service, study_uid)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/fhir+json")
    body = response.json()
    get_fhir_model_class("Bundle").model_validate(body)
    for entry in body["entry"]:
        get_fhir_model_class(entry["resource"]["resourceType"]).model_validate(entry["resource"])
    assert [e["resource"]["resourceType"] for e in body["entry"]] == EXPECTED_ENTRIES
    report, observation, _, device, _, stored = (e["resource"] for e in body["entry"])
    probability = observation["valueQuantity"]["value"]
    assert 0.0 <= probability <= 1.0 and report["status"] == "preliminary"
    assert (device["deviceName"][0]["name"], device["version"][0]["value"]) == (DX_NAME, "1")

    # The same path as an upload of the same file: the same probability.
    with httpx.Client(base_url=pacs_service.base, timeout=120) as client:
        upload = client.post(
            "/diagnosis/pneumonia",
            files={"file": ("study.dcm", case.dicom.read_bytes(), "application/dicom")},
            headers=auth(pacs_service.tokens["clinician"]),
        )
    assert upload.status_code == 200, upload.text
    assert upload.json()["entry"][1]["resource"]["valueQuantity"]["value"] == pytest.approx(probability, abs=1e-9)

    # Orthanc now holds the radiograph, a Structured Report and a Secondary Capture in the same study.
    series = {s["MainDicomTags"]["Modality"]: s for s in orthanc.series(study_uid)}
    assert sorted(series) == ["CR", "OT", "SR"]
    assert stored["identifier"][0] == {"system": "urn:dicom:uid", "value": f"urn:oid:{study_uid}"}
    named = {s["modality"]["code"]: s for s in stored["series"]}
    assert sorted(named) == ["OT", "SR"]
    sr = pydicom.dcmread(io.BytesIO(orthanc.instance_file(series["SR"]["Instances"][0])))
    sc = pydicom.dcmread(io.BytesIO(orthanc.instance_file(series["OT"]["Instances"][0])))
    for ds, modality, sop_class in ((sr, "SR", SR_CLASS), (sc, "OT", SC_CLASS)):
        assert ds.SOPClassUID == sop_class
        assert (ds.SeriesInstanceUID, ds.SOPInstanceUID) == (
            named[modality]["uid"],
            named[modality]["instance"][0]["uid"],
        )
        assert named[modality]["instance"][0]["sopClass"]["code"] == f"urn:oid:{sop_class}"
        assert ds.StudyInstanceUID == study_uid and ds.SeriesInstanceUID != source.SeriesInstanceUID
        for keyword in ("PatientID", "PatientName", "PatientBirthDate", "PatientSex", "AccessionNumber", "StudyDate"):
            assert ds[keyword].value == source[keyword].value, keyword
    texts = _text_values(sr)
    assert texts["Calibrated probability"] == f"{probability:.4f}"
    assert f"calibrated probability {probability:.4f}" in texts["Finding"]
    assert texts["Model"] == f"{DX_NAME} version 1" and texts["Task"] == "pneumonia"
    assert texts["Result"] == (
        "positive" if observation["interpretation"][0]["coding"][0]["code"] == "POS" else "negative"
    )
    assert "preliminary, for clinician review" in texts["Status"]
    assert (sr.PreliminaryFlag, sr.VerificationFlag, sr.CompletionFlag) == ("PRELIMINARY", "UNVERIFIED", "COMPLETE")
    evidence = sr.CurrentRequestedProcedureEvidenceSequence[0]
    referenced = evidence.ReferencedSeriesSequence[0].ReferencedSOPSequence[0]
    assert evidence.StudyInstanceUID == study_uid
    assert (referenced.ReferencedSOPClassUID, referenced.ReferencedSOPInstanceUID) == (
        source.SOPClassUID,
        source.SOPInstanceUID,
    )
    assert (sc.PhotometricInterpretation, sc.SamplesPerPixel, sc.BitsAllocated) == ("RGB", 3, 8)
    assert sc.pixel_array.shape == (sc.Rows, sc.Columns, 3) and sc.pixel_array.std() > 0
    assert sc.SourceImageSequence[0].ReferencedSOPInstanceUID == source.SOPInstanceUID
    if shutil.which("dsrdump"):  # DCMTK reads the stored report as a Basic Text SR document
        path = tmp_path / "sr.dcm"
        path.write_bytes(orthanc.instance_file(series["SR"]["Instances"][0]))
        dump = subprocess.run(["dsrdump", str(path)], capture_output=True, check=False)
        assert dump.returncode == 0, dump.stderr
        assert b"Basic Text SR Document" in dump.stdout and b"Calibrated probability" in dump.stdout
        assert b"E: " not in dump.stderr, dump.stderr

    # One audit record per request: the PACS study by its pseudonym, the stored objects, never the raw UID.
    records = _records(pacs_service)[before:]
    assert [r.endpoint for r in records] == ["/diagnosis/{task}/studies/{StudyInstanceUID}", "/diagnosis/{task}"]
    output = records[0].output
    assert output["pacs_study"] == Pseudonymizer(DEMO_PSEUDONYM_KEY).uid(study_uid)
    assert output["probability"] == pytest.approx(probability, abs=1e-6)
    assert {s["modality"] for s in output["stored"]} == {"SR", "OT"}
    assert study_uid not in records[0].output_json
    # The service's own lines and the DICOMweb client's (which logs UIDs at INFO: the route keeps it at WARNING).
    assert logging.getLogger("dicomweb_client").getEffectiveLevel() >= logging.WARNING
    ours = [r.getMessage() for r in caplog.records if r.name.startswith(("pipelines", "dicomweb_client"))]
    assert any("/diagnosis/{task}/studies/{StudyInstanceUID} 200" in line for line in ours)  # the access line
    assert not [line for line in ours if study_uid in line]


def test_a_ct_study_is_refused_from_its_headers_and_nothing_is_stored(pacs_service: Service, orthanc: Orthanc) -> None:
    ct = Path(pydicom.data.get_testdata_file("CT_small.dcm"))  # type: ignore[arg-type]
    study_uid = str(pydicom.dcmread(ct).StudyInstanceUID)
    orthanc.push(ct.read_bytes())
    before = len(_records(pacs_service))
    response = _post(pacs_service, study_uid)
    assert response.status_code == 422, response.text
    issue = response.json()["issue"][0]
    assert issue["code"] == "not-supported"
    assert "none of the study's 1 instances is inside this model's intended use" in issue["diagnostics"]
    assert "SOPClassUID '1.2.840.10008.5.1.4.1.1.2'" in issue["diagnostics"]  # CT Image Storage
    assert "probability" not in response.text.lower()
    assert [s["MainDicomTags"]["Modality"] for s in orthanc.series(study_uid)] == ["CT"]
    (record,) = _records(pacs_service)[before:]
    assert record.output["status"] == 422 and record.output["pacs_study"] == Pseudonymizer(DEMO_PSEUDONYM_KEY).uid(
        study_uid
    )
    # A clinician route: an investigator's token is refused before the PACS is asked.
    assert _post(pacs_service, study_uid, role="investigator").status_code == 403
    # A study the PACS does not hold.
    missing = _post(pacs_service, "1.2.3.4.5.6.7")
    assert missing.status_code == 404 and "does not hold this study" in missing.json()["issue"][0]["diagnostics"]


def test_a_stopped_pacs_is_a_502_and_no_pacs_is_a_404(
    pacs_service: Service,
    case: Case,  # noqa: F811
    tmp_path: Path,
) -> None:
    study_uid = str(pydicom.dcmread(case.dicom).StudyInstanceUID)
    with running_orthanc(tmp_path / "orthanc") as server:
        server.push(case.dicom.read_bytes())
        server.stop()
        with pacs_at(pacs_service, server.dicomweb):
            before = len(_records(pacs_service))
            response = _post(pacs_service, study_uid)
    assert response.status_code == 502, response.text
    assert response.headers["content-type"].startswith("application/fhir+json")
    outcome = response.json()
    assert outcome["resourceType"] == "OperationOutcome" and outcome["issue"][0]["code"] == "transient"
    assert "the PACS could not be reached" in outcome["issue"][0]["diagnostics"]
    assert study_uid not in response.text
    (record,) = _records(pacs_service)[before:]
    assert record.output["status"] == 502 and record.outcome == "8"  # serious failure

    with pacs_at(pacs_service, None):
        response = _post(pacs_service, study_uid)
    assert response.status_code == 404
    assert "SHIPA_SERVICE_DICOMWEB_URL" in response.json()["issue"][0]["diagnostics"]


def test_retrieval_is_bounded_in_bytes_and_instances(orthanc: Orthanc, case: Case) -> None:  # noqa: F811
    study_uid = str(pydicom.dcmread(case.dicom).StudyInstanceUID)
    orthanc.push(case.dicom.read_bytes())
    small = DicomWebConfig(orthanc.dicomweb, max_bytes=case.dicom.stat().st_size // 2)
    with PacsClient(small) as client, pytest.raises(StudyTooLarge, match="exceed the retrieval bound"):
        retrieve_for_model(client, study_uid, None)
    with PacsClient(DicomWebConfig(orthanc.dicomweb)) as client:
        got = retrieve_for_model(client, study_uid, None, max_instances=1)
        assert (
            pydicom.dcmread(io.BytesIO(got.dicom)).pixel_array.tobytes()
            == pydicom.dcmread(case.dicom).pixel_array.tobytes()
        )
        ct_uid = str(pydicom.dcmread(pydicom.data.get_testdata_file("CT_small.dcm")).StudyInstanceUID)
        orthanc.push(Path(pydicom.data.get_testdata_file("CT_small.dcm")).read_bytes())  # type: ignore[arg-type]
        from pipelines.imaging.domain import InputDomain

        with pytest.raises(NoUsableInstance, match="Modality 'CT'"):
            retrieve_for_model(client, ct_uid, InputDomain(modalities=("CR", "DX")))


def test_watch_once_scores_a_new_study_exactly_once(
    pacs_service: Service,
    case: Case,  # noqa: F811
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    study_uid = str(pydicom.dcmread(case.dicom).StudyInstanceUID)
    state_dir = tmp_path / "state"
    monkeypatch.setenv("SHIPA_WATCH_TOKEN", pacs_service.tokens["clinician"])
    monkeypatch.setenv("SHIPA_SERVICE_STATE_DIR", str(state_dir))
    runner = CliRunner()
    with running_orthanc(tmp_path / "orthanc") as server, pacs_at(pacs_service, server.dicomweb):
        monkeypatch.setenv("SHIPA_SERVICE_DICOMWEB_URL", server.dicomweb)
        server.push(case.dicom.read_bytes())
        args = ["--once", "--service", pacs_service.base, "--since", "2000-01-01"]
        first = runner.invoke(watch_app, args)
        assert first.exit_code == 0, first.output
        assert json.loads(first.stdout) == {"found": 1, "scored": 1, "refused": 0, "failed": 0}
        assert sorted(s["MainDicomTags"]["Modality"] for s in server.series(study_uid)) == ["CR", "OT", "SR"]
        second = runner.invoke(watch_app, args)
        assert second.exit_code == 0, second.output
        assert json.loads(second.stdout) == {"found": 0, "scored": 0, "refused": 0, "failed": 0}
        assert len(server.series(study_uid)) == 3  # nothing stored twice
        # A date range that excludes the study finds nothing (even with a fresh state).
        fresh = [
            "--once",
            "--service",
            pacs_service.base,
            "--until",
            "2000-01-01",
            "--state",
            str(tmp_path / "s2.json"),
        ]
        assert json.loads(runner.invoke(watch_app, fresh).stdout)["found"] == 0
    state = state_dir / STATE_NAME
    assert stat.S_IMODE(state.stat().st_mode) == 0o600
    text = state.read_text()
    assert study_uid not in text and study_key(study_uid) in text

    monkeypatch.delenv("SHIPA_WATCH_TOKEN")
    missing = runner.invoke(watch_app, ["--once", "--service", pacs_service.base])
    assert missing.exit_code != 0 and "SHIPA_WATCH_TOKEN is not set" in missing.output


def test_basic_auth_credentials_reach_the_pacs_and_a_wrong_password_is_refused(tmp_path: Path) -> None:
    with running_orthanc(tmp_path / "orthanc", users={"shipa": "a-test-password"}) as server:
        good = DicomWebConfig(server.dicomweb, username="shipa", password="a-test-password")
        with PacsClient(good) as client:
            assert client.search_studies({"ModalitiesInStudy": "CR"}) == []
        for bad in (
            DicomWebConfig(server.dicomweb, username="shipa", password="wrong"),
            DicomWebConfig(server.dicomweb),
        ):
            with PacsClient(bad) as client, pytest.raises(PacsRefused, match="HTTP 401") as refused:
                client.search_studies({})
            assert refused.value.status == 401 and "wrong" not in str(refused.value)
        assert "a-test-password" not in repr(good)


def test_a_clinician_picks_a_study_from_the_pacs_list_and_sees_its_result(
    pacs_service: Service,
    orthanc: Orthanc,
    case: Case,  # noqa: F811
) -> None:
    """The PACS list (``GET /pacs/studies``, no patient name or identifier) and the page's pick of one study."""
    from clinic.pages import csrf_of, fields, sign_in

    source = pydicom.dcmread(case.dicom)
    study_uid = str(source.StudyInstanceUID)
    orthanc.push(case.dicom.read_bytes())
    with httpx.Client(base_url=pacs_service.base, timeout=120) as client:
        listed = client.get("/pacs/studies", headers=auth(pacs_service.tokens["clinician"]))
        assert listed.status_code == 200, listed.text
        (study,) = [s for s in listed.json()["studies"] if s["study_uid"] == study_uid]
        assert study["date"] == str(source.StudyDate) and {"CR", "DX"} & set(study["modalities"])
        for secret in (str(source.PatientID), str(source.PatientName)):
            assert secret not in listed.text
        investigator = client.get("/pacs/studies", headers=auth(pacs_service.tokens["investigator"]))
        assert investigator.status_code == 403

        assert sign_in(client, pacs_service.tokens["clinician"]).status_code == 303
        page = client.get("/clinic")
        assert 'id="pacs-studies"' in page.text and f'value="{study_uid}"' in page.text
        before = len(orthanc.series(study_uid))
        fields_ = fields(csrf=csrf_of(page.text), lang="en", task="pneumonia", study_uid=study_uid)
        result = client.post("/clinic/pacs", files=fields_)
        assert result.status_code == 200, result.text
        assert 'id="probability"' in result.text and 'id="overlay"' in result.text
        assert len(orthanc.series(study_uid)) == before + 2  # its Structured Report and overlay were filed
        forged = client.post(
            "/clinic/pacs", files=fields(csrf="x" * 43, lang="en", task="pneumonia", study_uid=study_uid)
        )
        assert forged.status_code == 403
