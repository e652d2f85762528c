"""When the header lies: images of other modalities sent under a real chest-radiograph header are refused by the
image out-of-distribution score (422, no probability, audited), while the cohort's own radiographs are answered.

The served model is the tiny cohort's champion, registered by the real stages (its OOD score fitted by
``evaluate@diagnosis`` on its training images, the threshold chosen on its validation images and on pydicom's
bundled files). The disguised images are other files: the ``pydicom-data`` package's (CT, MR, ultrasound, NM,
secondary capture) and, when present, the BreastMNIST export's ultrasound images, each written under the header
of one of the cohort's radiographs, so the header gate passes them and only the pixels differ.
"""

from __future__ import annotations

from pathlib import Path

import httpx
import mlflow
import pandas as pd
import pytest

from pipelines.imaging.catches import calibration_index, shows_other_kind
from pipelines.imaging.dicom import read_dicom
from pipelines.imaging.domain import InputDomain
from pipelines.imaging.other_modality import (
    OtherImage,
    as_chest_radiograph,
    read_folder,
)
from pipelines.service.diagnosis_case import read_image
from pipelines.tracking.pyfunc_diagnosis import OOD_SCORE, OUT_OF_DISTRIBUTION

from .helpers import auth
from .test_model_endpoints import (  # noqa: F401 - the module-scoped fixtures, reused
    DX_NAME,
    Case,
    Registry,
    Service,
    case,
    registry,
    service,
)

BREAST = Path(__file__).resolve().parents[3] / "shared" / "data" / "breastmnist-export" / "dicom"
PER_FOLDER = 25


def _other_images(domain: InputDomain) -> list[OtherImage]:
    """Up to 25 images from each reference folder, none equal to a calibration image, none a chest radiograph."""
    data_store = pytest.importorskip("data_store", reason="the pydicom-data package (a dev dependency) is absent")
    seen = calibration_index()
    images: list[OtherImage] = []
    for folder in (Path(data_store.__file__).parent / "data", BREAST):
        if folder.is_dir():
            found = read_folder(folder, seen=seen, keep=lambda ds: shows_other_kind(domain, ds))
            images += [image for _, image in zip(range(PER_FOLDER), found, strict=False)]
    return images


def test_other_modalities_under_a_chest_header_are_refused_without_a_probability(
    service: Service,  # noqa: F811
    case: Case,  # noqa: F811
) -> None:
    model = service.app.state.provider.snapshot().diagnosis["pneumonia"]
    assert model.predictor.image_ood is not None
    template = read_dicom(case.dicom.read_bytes())
    others = _other_images(model.input_domain)
    assert len(others) >= 20
    assert {"CT", "MR", "US"} <= {o.modality for o in others}
    log = service.app.state.audit_log
    before = sum(1 for _ in log.iter_all())
    refused: list[str] = []
    with httpx.Client(base_url=service.base, timeout=60) as client:
        for image in others:
            data = as_chest_radiograph(template, image.pixels)
            assert model.input_domain.check(read_dicom(data)) is None  # the header gate lets it through
            response = client.post(
                "/diagnosis/pneumonia", files={"file": ("x.dcm", data)}, headers=auth(service.tokens["clinician"])
            )
            assert response.status_code in (200, 422), response.text
            if response.status_code == 422:
                issue = response.json()["issue"][0]
                assert issue["code"] == "not-supported"
                assert issue["diagnostics"].startswith(
                    "the image is outside this model's intended use: it does not look like the radiographs"
                )
                assert "probability" not in response.text.lower()
                refused.append(image.name)
    assert len(refused) >= 0.95 * len(others), sorted({o.name for o in others} - set(refused))
    records = list(log.iter_all())[before:]
    assert len(records) == len(others)  # every request, answered or refused, leaves one record
    assert sum(r.outcome == "4" and r.model_name == DX_NAME for r in records) == len(refused)
    assert log.verify().ok


def test_the_cohorts_own_radiographs_are_answered(service: Service, tiny_cohort: Path) -> None:  # noqa: F811
    """Every raw radiograph of the tiny cohort inside the header domain (train, validation and test studies)."""
    model = service.app.state.provider.snapshot().diagnosis["pneumonia"]
    files = sorted((tiny_cohort / "data" / "raw" / "dicom").rglob("*.dcm"))
    rows = []
    for path in files:
        try:
            ds = read_dicom(path)
        except Exception:
            continue
        if "PixelData" in ds and model.input_domain.check(ds) is None:
            _, pixels = read_image(path.read_bytes(), model.ingest_image_size, model.input_domain)
            rows.append(pixels)
    assert len(rows) >= 20
    frame = pd.DataFrame({"image": rows, **{f: None for f in model.predictor.raw_features}})
    out = model.predict(frame)
    assert out[OUT_OF_DISTRIBUTION].sum() <= max(1, 0.01 * len(rows)), out[OOD_SCORE].describe()


def test_the_registered_pyfunc_reports_the_score(
    registry: Registry,  # noqa: F811
    service: Service,  # noqa: F811
    case: Case,  # noqa: F811
) -> None:
    """A batch user of the registered model reads ``ood_score`` and ``out_of_distribution`` beside the probability."""
    model = service.app.state.provider.snapshot().diagnosis["pneumonia"]
    template = read_dicom(case.dicom.read_bytes())
    ct = next(o for o in _other_images(model.input_domain) if o.modality == "CT")
    _, disguised = read_image(as_chest_radiograph(template, ct.pixels), model.ingest_image_size, model.input_domain)
    _, own = read_image(case.dicom.read_bytes(), model.ingest_image_size, model.input_domain)
    mlflow.set_tracking_uri(registry.uri)
    loaded = mlflow.pyfunc.load_model(f"models:/{DX_NAME}@champion")
    frame = pd.DataFrame({"image": [own.tolist(), disguised.tolist()]})
    for feature in model.predictor.raw_features:
        frame[feature] = [None, None]
    out = loaded.predict(frame.astype({f: "float64" for f in model.predictor.raw_features}))
    assert out[OUT_OF_DISTRIBUTION].tolist() == [False, True]
    threshold = model.predictor.image_ood.threshold
    assert out[OOD_SCORE].iloc[0] <= threshold < out[OOD_SCORE].iloc[1]
