"""The header gate: a model's input domain fitted on the training images' headers, and what it refuses.

Real DICOM files only: pydicom's own test files (CT, MR plain/RLE/JPEG 2000, a segmentation, RT dose, ultrasound
palette and YBR colour, secondary-capture RGB, multi-frame) and the built-in cohort's radiographs, some edited to
say lateral view, infant, hand or Modality CT. Every refusal is made from the header alone: the datasets are read
with ``stop_before_pixels=True``, or read whole and checked to have decoded nothing.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import orjson
import polars as pl
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.datadict import tag_for_keyword
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.tag import Tag

from pipelines.config import DiagnosisFeaturesParams
from pipelines.imaging.dicom import read_dicom
from pipelines.imaging.domain import (
    INPUT_DOMAIN_FILE,
    KEYWORDS,
    InputDomain,
    InputDomainError,
    OutOfDomainError,
    age_from_as,
)
from pipelines.imaging.errors import DicomError
from pipelines.service.errors import FhirHTTPError
from pipelines.service.input_domain import require_in_domain
from pipelines.stages.features import diagnosis as features_dx

REPO = Path(__file__).resolve().parents[2]
OUTSIDE = "outside this model's intended use"

# pydicom's test files that are not chest radiographs, with the attribute the gate names first (the SOP class:
# each is a CT, MR, segmentation, RT dose, ultrasound or secondary-capture object).
FOREIGN = {
    "CT_small.dcm": "CT Image Storage",
    "MR_small.dcm": "MR Image Storage",
    "MR_small_RLE.dcm": "MR Image Storage",
    "MR_small_jp2klossless.dcm": "MR Image Storage",
    "MR_small_implicit.dcm": "MR Image Storage",
    "693_J2KI.dcm": "CT Image Storage",
    "liver_1frame.dcm": "Segmentation Storage",
    "rtdose.dcm": "RT Dose Storage",
    "rtdose_rle.dcm": "RT Dose Storage",
    "examples_palette.dcm": "Ultrasound Image Storage",
    "examples_ybr_color.dcm": "Ultrasound Multi-frame Image Storage",
    "examples_jpeg2k.dcm": "Ultrasound Image Storage",
    "SC_rgb_rle_2frame.dcm": "Secondary Capture Image Storage",
    "SC_rgb_jpeg_dcmtk.dcm": "Secondary Capture Image Storage",
    "JPEG2000.dcm": "Secondary Capture Image Storage",
    "image_dfl.dcm": "Secondary Capture Image Storage",
}


def _local_testdata(name: str) -> str:
    """A pydicom test file that ships with the package (never downloaded)."""
    path = Path(pydicom.__file__).parent / "data" / "test_files" / name
    if not path.exists():
        pytest.skip(f"{name} is not among pydicom's local test files")
    found = get_testdata_file(name, download=False)
    assert found is not None
    return str(found)


def _header(path: Path) -> Dataset:
    return Dataset.from_json(orjson.loads(path.read_bytes()))


def _headers_of(dataset: pl.DataFrame, split: str) -> list[tuple[str, Dataset]]:
    """(image path, de-identified header ingest kept beside the image) of every study in ``split``."""
    paths = dataset.filter(pl.col("split") == split)["image_path"].to_list()
    return [(p, _header(Path(p).with_suffix(".json"))) for p in paths]


@pytest.fixture(scope="module")
def processed(tiny_cohort: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny cohort's diagnosis features, written by the stage (``input_domain.json`` among them)."""
    out = tmp_path_factory.mktemp("domain-features") / "diagnosis"
    features_dx.run(DiagnosisFeaturesParams(), tiny_cohort / "data" / "interim", out)
    return out


@pytest.fixture(scope="module")
def domain(processed: Path) -> InputDomain:
    return InputDomain.from_json((processed / INPUT_DOMAIN_FILE).read_bytes())


@pytest.fixture(scope="module")
def radiographs(tiny_cohort: Path) -> list[Path]:
    """The tiny cohort's raw radiographs of patients aged at least 2 (all chest, CR or DX, PA or AP)."""
    files = sorted((tiny_cohort / "data" / "raw" / "dicom").rglob("*.dcm"))
    adults = []
    for path in files:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        if (age_from_as(str(ds.get("PatientAge", ""))) or 0.0) >= 2.0:
            adults.append(path)
    assert len(adults) >= 4
    return adults[:4]


# --- fitting ---------------------------------------------------------------------------------------------------


def test_the_stage_fits_the_domain_on_the_train_split(processed: Path, domain: InputDomain) -> None:
    train = pl.read_parquet(processed / "dataset.parquet").filter(pl.col("split") == "train")
    assert domain.n_images == train.height
    assert domain.sop_class_uids == ("1.2.840.10008.5.1.4.1.1.1", "1.2.840.10008.5.1.4.1.1.1.1")
    assert domain.modalities == ("CR", "DX")
    assert domain.body_parts == ("CHEST",)
    assert domain.view_positions == ("AP", "PA")
    assert domain.photometric_interpretations is not None
    assert set(domain.photometric_interpretations) <= {"MONOCHROME1", "MONOCHROME2"}
    assert domain.samples_per_pixel == (1,)
    assert domain.max_frames == 1
    assert domain.missing_allowed == ()
    # The age range starts at the card's 1 year, even though the synthetic cohort holds infants.
    assert domain.age_years is not None and domain.age_years[0] == features_dx.INTENDED_MIN_AGE_YEARS
    assert domain.age_years[1] > float(train["age_years"].max())  # type: ignore[arg-type]
    assert domain.pixel_spacing_mm is not None and domain.pixel_spacing_mm[0] > 0
    # The JSON written by the stage round-trips exactly.
    assert InputDomain.from_json(domain.to_json()) == domain


def test_fit_widens_ranges_by_the_margin_and_honours_overrides() -> None:
    def header(spacing: float, age: str, view: str | None) -> Dataset:
        ds = Dataset()
        ds.Modality, ds.Rows, ds.Columns, ds.PatientAge = "CR ", 1000, 800, age
        ds.PixelSpacing = [spacing, spacing]
        if view is not None:
            ds.ViewPosition = view
        return ds

    headers = [header(0.1, "020Y", "PA"), header(0.2, "060Y", None)]
    fitted = InputDomain.fit(headers, margin=0.1)
    assert fitted.modalities == ("CR",)
    assert fitted.pixel_spacing_mm == pytest.approx((0.09, 0.22))  # 10 % of the larger of span and bound
    assert fitted.age_years == pytest.approx((16.0, 66.0))  # 10 % of the 40-year span
    assert (fitted.min_rows, fitted.min_columns) == (900, 720)
    # A training image without ViewPosition: a missing ViewPosition is accepted, a wrong one is not.
    assert fitted.missing_allowed == ("ViewPosition",)
    assert fitted.check(header(0.15, "030Y", None)) is None
    assert fitted.check(header(0.15, "030Y", "LL")) is not None
    over = InputDomain.fit(headers, overrides={"modalities": ("DX",), "age_years": None})
    assert over.modalities == ("DX",) and over.age_years is None
    with pytest.raises(InputDomainError, match="unknown input domain field"):
        InputDomain.fit(headers, overrides={"colour": "red"})
    with pytest.raises(InputDomainError, match="at least one training header"):
        InputDomain.fit([])


def test_a_domain_is_validated_when_read() -> None:
    with pytest.raises(InputDomainError, match="age_years"):
        InputDomain.from_dict({"age_years": [50, 10]})
    with pytest.raises(InputDomainError, match="missing_allowed"):
        InputDomain.from_dict({"missing_allowed": ["PatientName"]})
    with pytest.raises(InputDomainError, match="not JSON"):
        InputDomain.from_json("{not json")
    with pytest.raises(InputDomainError, match="modalities"):
        InputDomain.from_dict({"modalities": []})


# --- refusals of real foreign objects --------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(FOREIGN))
def test_other_objects_are_refused_from_the_header_alone(domain: InputDomain, name: str) -> None:
    header_only = pydicom.dcmread(_local_testdata(name), stop_before_pixels=True)
    assert "PixelData" not in header_only
    violation = domain.check(header_only)
    assert violation is not None
    assert violation.attribute == "SOPClassUID"
    assert OUTSIDE in violation.message and FOREIGN[name] in violation.message
    assert "Computed Radiography Image Storage" in violation.accepted
    with pytest.raises(OutOfDomainError, match="SOPClassUID"):
        domain.require(header_only)


@pytest.mark.parametrize("name", ["CT_small.dcm", "MR_small_RLE.dcm", "liver_1frame.dcm", "examples_ybr_color.dcm"])
def test_the_service_gate_refuses_before_any_pixel_is_decoded(domain: InputDomain, name: str) -> None:
    """As the service reads an upload (read_dicom on the bytes); the pixel data is never decoded."""
    ds = read_dicom(Path(_local_testdata(name)).read_bytes())
    with pytest.raises(FhirHTTPError) as caught:
        require_in_domain(ds, domain)
    assert caught.value.status_code == 422 and caught.value.code == "not-supported"
    assert caught.value.diagnostics.startswith("SOPClassUID '") and OUTSIDE in caught.value.diagnostics
    assert getattr(ds, "_pixel_array", None) is None  # pydicom caches a decoded array here: none was made


def test_a_real_radiograph_of_another_body_part_is_refused(domain: InputDomain) -> None:
    """pydicom's CR images of a cervical spine (lateral views): the right SOP class and modality, not a chest."""
    folder = Path(pydicom.__file__).parent / "data" / "test_files" / "dicomdirtests" / "77654033"
    files = sorted(p for p in folder.glob("CR*/*") if p.is_file())
    if not files:
        pytest.skip("pydicom's dicomdirtests CR files are not installed")
    for path in files:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        assert (ds.Modality, ds.SOPClassUID) == ("CR", "1.2.840.10008.5.1.4.1.1.1")
        violation = domain.check(ds)
        assert violation is not None
        assert violation.message == f"BodyPartExamined 'CSPINE' is {OUTSIDE} (accepted: CHEST)"


def test_sop_class_alone_is_not_the_only_wall(domain: InputDomain) -> None:
    """A CT whose SOP class was rewritten to CR is still refused, on its Modality."""
    ds = pydicom.dcmread(_local_testdata("CT_small.dcm"), stop_before_pixels=True)
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.1"
    violation = domain.check(ds)
    assert violation is not None and violation.attribute == "Modality"
    assert violation.message == f"Modality 'CT' is {OUTSIDE} (accepted: CR, DX)"


# --- the built-in cohort's radiographs --------------------------------------------------------------------------


def test_every_test_split_radiograph_passes(processed: Path, domain: InputDomain, tiny_cohort: Path) -> None:
    """Studies under the intended age are left out of the dataset (after the split), so every study the model is
    trained and evaluated on is one the gate lets through."""
    dataset = pl.read_parquet(processed / "dataset.parquet")
    summary = json.loads((processed / "summary.json").read_text(encoding="utf-8"))
    assert dataset.filter(pl.col("age_years") < features_dx.INTENDED_MIN_AGE_YEARS).height == 0
    studies = pl.read_parquet(tiny_cohort / "data" / "interim" / "tables" / "imaging_studies.parquet")
    young = studies.filter(pl.col("age_at_event") < features_dx.INTENDED_MIN_AGE_YEARS).height
    assert summary["studies_outside_intended_use"] == young > 0  # the tiny cohort holds infants: they were left out
    test = _headers_of(dataset, "test")
    assert len(test) > 20
    assert [(path, v.message) for path, ds in test if (v := domain.check(ds)) is not None] == []


@pytest.mark.filterwarnings("ignore:Invalid value for VR")  # the edits are invalid on purpose
@pytest.mark.parametrize(
    ("keyword", "value", "attribute", "expected"),
    [
        ("ViewPosition", "LL", "ViewPosition", f"ViewPosition 'LL' is {OUTSIDE} (accepted: AP, PA)"),
        ("ViewPosition", "LATERAL", "ViewPosition", f"ViewPosition 'LATERAL' is {OUTSIDE} (accepted: AP, PA)"),
        ("ViewPosition", None, "ViewPosition", f"ViewPosition is missing: the image is {OUTSIDE} (accepted: AP, PA)"),
        ("PatientAge", "000Y", "PatientAge", "the patient's age is below the accepted range"),
        ("PatientAge", "002M", "PatientAge", "the patient's age is below the accepted range"),
        ("PatientAge", "130Y", "PatientAge", "the patient's age is above the accepted range"),
        ("PatientAge", "4O1Y", "PatientAge", f"PatientAge cannot be read: the image is {OUTSIDE}"),
        ("BodyPartExamined", "HAND", "BodyPartExamined", f"BodyPartExamined 'HAND' is {OUTSIDE} (accepted: CHEST)"),
        ("Modality", "CT", "Modality", f"Modality 'CT' is {OUTSIDE} (accepted: CR, DX)"),
        ("NumberOfFrames", "3", "NumberOfFrames", f"NumberOfFrames '3' is {OUTSIDE} (accepted: at most 1)"),
        ("SamplesPerPixel", 3, "SamplesPerPixel", f"SamplesPerPixel '3' is {OUTSIDE} (accepted: 1)"),
    ],
)
def test_edited_radiographs_are_refused_naming_the_attribute(
    domain: InputDomain, radiographs: list[Path], keyword: str, value: object, attribute: str, expected: str
) -> None:
    for path in radiographs:
        ds = read_dicom(path.read_bytes())
        assert domain.check(ds) is None  # the radiograph as synthesized passes
        if value is None:
            del ds[keyword]
        else:
            setattr(ds, keyword, value)
        buffer = io.BytesIO()
        ds.save_as(buffer, enforce_file_format=True)
        edited = read_dicom(buffer.getvalue())
        with pytest.raises(FhirHTTPError) as caught:
            require_in_domain(edited, domain)
        violation = domain.check(edited)
        assert violation is not None and violation.attribute == attribute
        assert expected in caught.value.diagnostics and OUTSIDE in caught.value.diagnostics
        assert getattr(edited, "_pixel_array", None) is None


def test_an_age_edit_cannot_hide_behind_the_birth_date(domain: InputDomain, radiographs: list[Path]) -> None:
    ds = read_dicom(radiographs[0].read_bytes())
    assert ds.get("PatientBirthDate") and ds.get("StudyDate")
    ds.PatientBirthDate = ds.StudyDate  # born on the day of the study; PatientAge still says an adult
    violation = domain.check(ds)
    assert violation is not None and violation.attribute == "PatientAge"
    del ds.PatientAge
    del ds.PatientBirthDate
    missing = domain.check(ds)
    assert missing is not None and missing.message.startswith("PatientAge is missing")


@pytest.mark.filterwarnings("ignore:Invalid value for VR")
def test_messages_quote_only_cleaned_short_values(domain: InputDomain, radiographs: list[Path]) -> None:
    ds = read_dicom(radiographs[0].read_bytes())
    ds.BodyPartExamined = "HAND'\n<b>"
    violation = domain.check(ds)
    assert violation is not None and violation.value == "HAND???b?"
    assert "\n" not in violation.message and "<" not in violation.message
    ds = read_dicom(radiographs[0].read_bytes())
    ds.PatientAge = "095Y"
    ds.PatientBirthDate = ""
    older = InputDomain.from_dict({**domain.to_dict(), "age_years": (1.0, 80.0)}).check(ds)
    assert older is not None and "95" not in older.message  # an age above 89 identifies: never quoted


@pytest.mark.parametrize("keyword", KEYWORDS)
def test_a_value_pydicom_cannot_convert_is_refused_not_raised(
    domain: InputDomain, radiographs: list[Path], keyword: str
) -> None:
    """A hostile header (3 bytes where a US value needs 2) is refused as unreadable; the gate never raises."""
    ds = read_dicom(radiographs[0].read_bytes())
    tag = Tag(tag_for_keyword(keyword))
    ds._dict[tag] = RawDataElement(tag, "US", 3, b"\x01\x02\x03", 0, False, True)
    violation = domain.check(ds)
    assert violation is not None and violation.attribute == keyword
    assert violation.message.startswith(f"{keyword} cannot be read: the image is {OUTSIDE} (accepted: ")
    assert violation.value is None


def test_pixel_spacing_outside_the_training_range_is_refused(domain: InputDomain, radiographs: list[Path]) -> None:
    ds = read_dicom(radiographs[0].read_bytes())
    for keyword in ("PixelSpacing", "ImagerPixelSpacing"):
        if keyword in ds:
            ds[keyword].value = [0.139, 0.139]
    violation = domain.check(ds)
    assert violation is not None and violation.attribute == "PixelSpacing"
    assert violation.message.startswith(f"PixelSpacing '0.139 x 0.139 mm' is {OUTSIDE} (accepted: ")


# --- the default cohort, when it is there ------------------------------------------------------------------------


def test_the_default_cohorts_test_split_passes_the_recorded_domain() -> None:
    processed = REPO / "data" / "processed" / "diagnosis"
    if not (processed / "dataset.parquet").exists() or not (REPO / "data" / "interim" / "images").is_dir():
        pytest.skip("the default cohort is not built here (make run)")
    dataset = pl.read_parquet(processed / "dataset.parquet").with_columns(
        pl.col("image_path").map_elements(lambda p: str(REPO / p), return_dtype=pl.String)
    )
    domain = features_dx.fit_input_domain(dataset, REPO / "data" / "interim" / "tables")
    test = _headers_of(dataset, "test")
    ages = dict(zip(dataset["image_path"].to_list(), dataset["age_years"].to_list(), strict=True))
    assert all(ages[p] >= features_dx.INTENDED_MIN_AGE_YEARS for p, _ in test)
    assert [(p, v.message) for p, ds in test if (v := domain.check(ds)) is not None] == []


# --- every file of the pydicom-data package ---------------------------------------------------------------------


def _pydicom_files() -> list[Path]:
    """Every DICOM file of pydicom's own test files and of the pydicom-data package."""
    data_store = pytest.importorskip("data_store", reason="the pydicom-data package (a dev dependency) is absent")
    folders = [Path(pydicom.__file__).parent / "data" / "test_files", Path(data_store.__file__).parent / "data"]
    return sorted(p for folder in folders for p in folder.glob("*.dcm"))


def test_every_pydicom_and_pydicom_data_image_is_refused_from_its_header(domain: InputDomain) -> None:
    """CT, enhanced CT, MR (plain, RLE, JPEG 2000, 10 frames), SEG, RT dose, ultrasound (RGB, YBR, palette, 120
    frames), NM, secondary captures and two real CR radiographs (an extremity, and a chest one whose pixel spacing
    is not recorded): every file with pixel data gets the service's 422 naming the attribute, nothing decoded."""
    refused: dict[str, str] = {}
    for path in _pydicom_files():
        try:
            ds = read_dicom(path.read_bytes())
        except DicomError:  # the package also holds deliberately unreadable files
            continue
        if "PixelData" not in ds:
            continue
        with pytest.raises(FhirHTTPError) as caught:
            require_in_domain(ds, domain)
        assert caught.value.status_code == 422 and caught.value.code == "not-supported"
        assert OUTSIDE in caught.value.diagnostics
        assert getattr(ds, "_pixel_array", None) is None
        refused[path.name] = caught.value.diagnostics.split(" ", 1)[0]
    assert len(refused) >= 120
    assert refused["MR_small_RLE.dcm"] == "SOPClassUID"  # MR, RLE
    assert refused["693_UNCI.dcm"] == "SOPClassUID"  # CT
    assert refused["eCT_Supplemental.dcm"] == "SOPClassUID"  # enhanced CT, 2 frames
    assert refused["emri_small_jpeg_2k_lossless.dcm"] == "SOPClassUID"  # enhanced MR, 10 frames
    assert refused["liver.dcm"] == "SOPClassUID"  # segmentation
    assert refused["rtdose.dcm"] == "SOPClassUID"  # RT dose grid
    assert refused["gdcm-US-ALOKA-16.dcm"] == "SOPClassUID"  # palette-colour ultrasound
    assert refused["color3d_jpeg_baseline.dcm"] == "SOPClassUID"  # 120-frame ultrasound
    assert refused["RG3_UNCI.dcm"] == "BodyPartExamined"  # a CR of the tibia
    assert refused["RG1_UNCI.dcm"] == "PixelSpacing"  # a chest CR without pixel spacing
