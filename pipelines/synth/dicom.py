"""Synthetic chest radiographs written as real DICOM files (CR or DX, 16-bit, Explicit VR Little Endian).

The picture is a procedural chest: soft-tissue thorax, two dark lung fields cut by domed hemidiaphragms, mediastinum,
heart, spine, clavicles, ribs as faint arcs, hilar vessel markings and parenchymal texture. Patients vary in size,
position, rotation, heart size and breast shadows; exposures vary in gain, gamma, heel effect and noise.
Pneumonia adds opacities (soft blobs, patchy consolidations, diffuse haze) inside the lung fields whose number, size
and density grow with ``severity``: at low severity they are hard to see, and some normal images carry confounders
(a small nodule, heavy vessel markings, a large heart), so a good classifier scores well but not perfectly.

Everything is drawn from the caller's ``numpy.random.Generator`` and the writer adds no timestamps, so the same
generator state gives a byte-identical file. The encoding varies like a real archive: modality CR or DX,
BitsStored 12/14/16, MONOCHROME2 or (inverted) MONOCHROME1, identity or non-trivial rescale slope/intercept, and a
window centre/width that covers the exposed range.
"""

from __future__ import annotations

import datetime as dt
import io
import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    UID,
    ComputedRadiographyImageStorage,
    DigitalXRayImageStorageForPresentation,
    ExplicitVRLittleEndian,
)

DEFECTS = ("dicom_unreadable", "dicom_not_dicom", "dicom_no_pixels")

# (slope, intercept) pairs used when the rescale is non-trivial; strings keep the DS encoding exact.
_RESCALES = (("1", "-1024"), ("0.5", "0"), ("2", "-4096"), ("1.5", "100"))

# Contents of a file named .dcm that is not DICOM: what PACS exports and mail gateways leave behind.
_NOT_DICOM = (
    b"<html><head><title>502 Bad Gateway</title></head><body><h1>502 Bad Gateway</h1></body></html>\n",
    b"Study export failed: the archive returned no objects for this request.\r\n",
    b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x01\x00\x00\x00\x01\x00\x08\x00\x00\x00\x00",
    b"PK\x03\x04\x14\x00\x00\x00\x08\x00",
    b"\xff\xd8\xff\xe0\x00\x10JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00",
)


@dataclass(frozen=True)
class RadiographSpec:
    """What one chest radiograph shows and the identifiers a PACS would write into it.

    Attributes:
        size: rows and columns of the image.
        pneumonia: whether to draw pneumonic opacities.
        severity: 0..1, scales the number, size and density of the opacities (ignored without pneumonia).
        iin: the patient's IIN, written as PatientID.
        patient_name: Latin name, either DICOM PN (``Family^Given``) or plain ``Given [Middle] Family``.
        birth_date: PatientBirthDate.
        sex: ``"male"`` or ``"female"`` (PatientSex M/F).
        study_uid: StudyInstanceUID.
        series_uid: SeriesInstanceUID.
        sop_uid: SOPInstanceUID.
        study_date: StudyDate.
        accession: AccessionNumber.
        institution: InstitutionName.
    """

    size: int
    pneumonia: bool
    severity: float
    iin: str
    patient_name: str
    birth_date: dt.date
    sex: str
    study_uid: str
    series_uid: str
    sop_uid: str
    study_date: dt.date
    accession: str
    institution: str


@dataclass(frozen=True)
class WrittenRadiograph:
    """How the writer encoded a radiograph (it picks CR or DX itself; the ImagingStudy must say the same)."""

    modality: str
    sop_class_uid: str


def write_radiograph(path: Path, spec: RadiographSpec, *, rng: np.random.Generator) -> WrittenRadiograph:
    """Write one synthetic chest radiograph as a DICOM file (atomically).

    Args:
        path: destination ``.dcm`` file; parent folders are created.
        spec: what the image shows and its identifiers.
        rng: the only source of randomness; the same state gives the same bytes.

    Returns:
        The modality and SOP class the file was written with.
    """
    ds = _build_dataset(spec, rng)
    _write_bytes(path, _encode(ds))
    return WrittenRadiograph(modality=str(ds.Modality), sop_class_uid=str(ds.SOPClassUID))


def write_defective_dicom(path: Path, defect: str, spec: RadiographSpec, *, rng: np.random.Generator) -> None:
    """Write a broken ``.dcm`` file of one defect kind (see docs/raw-data.md).

    Args:
        path: destination file.
        defect: ``dicom_unreadable`` (a real file truncated inside its pixel data), ``dicom_not_dicom`` (text or
            another format under a .dcm name) or ``dicom_no_pixels`` (a valid dataset without PixelData).
        spec: what the underlying image would have shown.
        rng: the only source of randomness.

    Raises:
        ValueError: an unknown defect name.
    """
    if defect not in DEFECTS:
        raise ValueError(f"unknown DICOM defect {defect!r}; expected one of {', '.join(DEFECTS)}")
    if defect == "dicom_not_dicom":
        _write_bytes(path, _NOT_DICOM[int(rng.integers(len(_NOT_DICOM)))])
        return
    ds = _build_dataset(spec, rng)
    if defect == "dicom_no_pixels":
        del ds.PixelData
        _write_bytes(path, _encode(ds))
        return
    data = _encode(ds)
    pixel_bytes = len(ds.PixelData)
    header = len(data) - pixel_bytes
    # Cut somewhere inside the pixel data, like an interrupted transfer; the header stays whole.
    cut = header + int(pixel_bytes * rng.uniform(0.05, 0.95))
    _write_bytes(path, data[:cut])


# --- dataset --------------------------------------------------------------------------------------------------


def _build_dataset(spec: RadiographSpec, rng: np.random.Generator) -> Dataset:
    if spec.sex not in ("male", "female"):
        raise ValueError(f"sex must be 'male' or 'female', got {spec.sex!r}")
    if not 0.0 <= spec.severity <= 1.0:
        raise ValueError(f"severity must be in [0, 1], got {spec.severity}")
    if spec.size < 16:
        raise ValueError(f"size must be at least 16 pixels, got {spec.size}")

    # Encoding choices first, so that they do not depend on how much randomness the picture used.
    is_dx = bool(rng.random() < 0.4)
    monochrome1 = bool(rng.random() < 0.2)
    bits_stored = int(rng.choice((12, 12, 14, 16)))
    slope, intercept = ("1", "0") if rng.random() < 0.65 else _RESCALES[int(rng.integers(len(_RESCALES)))]
    view = "PA" if rng.random() < 0.75 else "AP"
    fov_mm = float(rng.uniform(350.0, 430.0))
    study_seconds = int(rng.integers(8 * 3600, 20 * 3600))
    low_frac = float(rng.uniform(0.02, 0.12))
    high_frac = float(rng.uniform(0.75, 0.97))
    window_pad = float(rng.uniform(1.0, 1.1))

    image = _chest_image(
        rng, spec.size, pneumonia=spec.pneumonia, severity=spec.severity, sex=spec.sex, ap_view=view == "AP"
    )

    max_value = (1 << bits_stored) - 1
    low, high = low_frac * max_value, high_frac * max_value
    stored = np.rint(low + image * (high - low))
    centre_stored = (low + high) / 2.0
    if monochrome1:
        stored = max_value - stored
        centre_stored = max_value - centre_stored
    pixels = np.clip(stored, 0, max_value).astype("<u2")
    slope_f, intercept_f = float(slope), float(intercept)
    centre = centre_stored * slope_f + intercept_f
    width = (high - low) * window_pad * slope_f

    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.ImageType = ["ORIGINAL", "PRIMARY"]
    ds.SOPClassUID = DigitalXRayImageStorageForPresentation if is_dx else ComputedRadiographyImageStorage
    ds.SOPInstanceUID = spec.sop_uid
    ds.StudyDate = spec.study_date.strftime("%Y%m%d")
    ds.SeriesDate = ds.StudyDate
    ds.ContentDate = ds.StudyDate
    ds.StudyTime = f"{study_seconds // 3600:02d}{study_seconds // 60 % 60:02d}{study_seconds % 60:02d}"
    ds.SeriesTime = ds.StudyTime
    ds.ContentTime = ds.StudyTime
    ds.AccessionNumber = spec.accession
    ds.Modality = "DX" if is_dx else "CR"
    ds.Manufacturer = "Shipa Synthetic"
    ds.InstitutionName = spec.institution
    ds.ReferringPhysicianName = ""
    ds.StudyDescription = "XR CHEST " + view
    ds.PatientName = _person_name(spec.patient_name)
    ds.PatientID = spec.iin
    ds.PatientBirthDate = spec.birth_date.strftime("%Y%m%d")
    ds.PatientSex = "M" if spec.sex == "male" else "F"
    ds.PatientAge = f"{min(_age_years(spec.birth_date, spec.study_date), 999):03d}Y"
    ds.BodyPartExamined = "CHEST"
    ds.ViewPosition = view
    ds.StudyInstanceUID = spec.study_uid
    ds.SeriesInstanceUID = spec.series_uid
    ds.StudyID = "1"
    ds.SeriesNumber = 1
    ds.InstanceNumber = 1
    ds.PatientOrientation = ["L", "F"]
    ds.BurnedInAnnotation = "NO"
    ds.LossyImageCompression = "00"
    if is_dx:
        ds.PresentationIntentType = "FOR PRESENTATION"
        ds.PixelIntensityRelationship = "LOG"
        # +1: lower stored values mean less beam intensity (denser), as in MONOCHROME1 here.
        ds.PixelIntensityRelationshipSign = 1 if monochrome1 else -1
    spacing = f"{fov_mm / spec.size:.4f}"
    ds.ImagerPixelSpacing = [spacing, spacing]
    ds.PixelSpacing = [spacing, spacing]
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME1" if monochrome1 else "MONOCHROME2"
    ds.Rows = spec.size
    ds.Columns = spec.size
    ds.BitsAllocated = 16
    ds.BitsStored = bits_stored
    ds.HighBit = bits_stored - 1
    ds.PixelRepresentation = 0
    ds.RescaleIntercept = intercept
    ds.RescaleSlope = slope
    ds.RescaleType = "US"
    ds.WindowCenter = f"{centre:.1f}"
    ds.WindowWidth = f"{width:.1f}"
    ds.VOILUTFunction = "LINEAR"
    ds.PixelData = pixels.tobytes()

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = UID(spec.sop_uid)
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta = meta
    return ds


def _person_name(name: str) -> str:
    """DICOM PN (``Family^Given^Middle``) from a PN string or a plain ``Given [Middle] Family`` name."""
    if "^" in name:
        return name
    parts = name.split()
    if len(parts) < 2:
        return name
    return "^".join([parts[-1], parts[0], *([" ".join(parts[1:-1])] if len(parts) > 2 else [])])


def _age_years(birth: dt.date, on: dt.date) -> int:
    return max(0, on.year - birth.year - ((on.month, on.day) < (birth.month, birth.day)))


def _encode(ds: Dataset) -> bytes:
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def _write_bytes(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


# --- picture --------------------------------------------------------------------------------------------------


def _chest_image(
    rng: np.random.Generator,
    size: int,
    *,
    pneumonia: bool,
    severity: float,
    sex: str = "male",
    ap_view: bool = False,
) -> np.ndarray:
    """A synthetic frontal chest radiograph in display space (bright = dense), float32 in [0, 1].

    Args:
        rng: the only source of randomness.
        size: rows and columns.
        pneumonia: whether to draw opacities in the lung fields.
        severity: 0..1, scales the opacities.
        sex: ``"female"`` adds breast shadows over the lower lung fields in most patients.
        ap_view: AP films magnify the heart and are noisier (portable, supine patients).
    """
    f32 = np.float32
    # Patient and exposure parameters, all drawn before any array so the draw order is fixed.
    width = rng.uniform(0.88, 1.06)  # chest width relative to the field
    scale = rng.uniform(0.9, 1.04)
    shift_x, shift_y = rng.uniform(-0.05, 0.05), rng.uniform(-0.06, 0.04)
    angle = math.radians(rng.uniform(-4.0, 4.0))
    heart = rng.uniform(0.85, 1.15) * (1.12 if ap_view else 1.0)
    cardiomegaly = rng.random() < 0.08
    if cardiomegaly:
        heart *= 1.25
    dome_right, dome_left = rng.uniform(0.22, 0.34), rng.uniform(0.28, 0.40)
    rib_spacing = rng.uniform(0.115, 0.145)
    rib_phase = rng.uniform(0.0, 2 * math.pi)
    rib_amp = rng.uniform(0.035, 0.07)
    vessel_amp = rng.uniform(0.02, 0.05)
    if rng.random() < 0.2:  # confounder: prominent vessel markings
        vessel_amp *= 2.2
    vessel_count = int(rng.integers(9, 15))
    vessel_phase = rng.uniform(0.0, 2 * math.pi)
    breasts = sex == "female" and rng.random() < 0.75
    breast_amp = rng.uniform(0.03, 0.09)
    nodule = rng.random() < 0.2  # confounder: a small benign nodule
    nodule_side = int(rng.integers(2))
    nodule_uv = rng.uniform(-0.6, 0.6, size=2)
    nodule_r = rng.uniform(0.015, 0.035)
    nodule_amp = rng.uniform(0.08, 0.22)
    gain = rng.uniform(0.85, 1.15)
    offset = rng.uniform(-0.05, 0.05)
    gamma = rng.uniform(0.8, 1.25)
    heel = rng.uniform(-0.05, 0.05)
    noise_sd = rng.uniform(0.008, 0.022) * (1.4 if ap_view else 1.0)
    texture_amp = rng.uniform(0.01, 0.03)

    # Each lesion: (lung, u, v, radius, aspect, density, kind) with (u, v) in lung-ellipse units.
    lesions: list[tuple[int, float, float, float, float, float, str]] = []
    if pneumonia:
        count = min(6, 1 + int(rng.poisson(0.3 + 2.0 * severity)))
        for _ in range(count):
            side = int(rng.random() < 0.55)  # image-left lung (patient right) a little more often
            u = rng.uniform(-0.7, 0.7)
            v = rng.uniform(-0.5, 0.8)  # lower zones more often
            aspect = rng.uniform(0.6, 1.6)
            density = (0.03 + 0.27 * severity) * rng.uniform(0.6, 1.3)
            kind = str(rng.choice(("blob", "consolidation", "haze"), p=(0.4, 0.35, 0.25)))
            if kind == "haze":  # diffuse ground-glass: large and faint
                radius, density = rng.uniform(0.2, 0.35), density * 0.6
            elif kind == "consolidation":
                radius = rng.uniform(0.09, 0.16) * (0.6 + 0.9 * severity)
            else:
                radius = rng.uniform(0.05, 0.1) * (0.6 + 0.9 * severity)
            lesions.append((side, u, v, radius, aspect, density, kind))

    # Grid in [-1, 1], y down; patient coordinates after shift, rotation and scale.
    c = ((np.arange(size, dtype=f32) + f32(0.5)) * f32(2.0 / size) - f32(1.0)).astype(f32)
    gx, gy = c[None, :], c[:, None]
    cos_a, sin_a = f32(math.cos(angle) / scale), f32(math.sin(angle) / scale)
    x = cos_a * (gx - f32(shift_x)) + sin_a * (gy - f32(shift_y))
    y = cos_a * (gy - f32(shift_y)) - sin_a * (gx - f32(shift_x))
    ax = np.abs(x)

    torso = _ellipse(x, y, 0.0, 0.3, 0.93 * width, 1.45, 0.1)
    lung_centres = (
        (-0.34 * width, -0.14, 0.26 * width, 0.6, dome_right),
        (0.35 * width, -0.12, 0.25 * width, 0.63, dome_left),
    )
    lung = np.zeros((size, size), dtype=f32)
    for cx, cy, rx, ry, dome in lung_centres:
        diaphragm = np.clip((f32(dome) + f32(1.1) * (x - f32(cx)) ** 2 - y) * f32(25.0), 0.0, 1.0)
        lung += _ellipse(x, y, cx, cy, rx, ry, 0.15) * diaphragm
    # Mediastinum and heart hide the lung behind them (they are in front of it, not added to it).
    central = np.maximum(
        _ellipse(x, y, 0.0, -0.3, 0.13, 0.75, 0.3),
        _ellipse(x, y, 0.1 * width, 0.2, 0.34 * width * heart, 0.23 * heart, 0.3),
    )
    lung_visible = lung * (f32(1.0) - f32(0.9) * central)

    density = f32(0.45) * torso - f32(0.32) * lung_visible + f32(0.05) * central
    spine = np.exp(-((x / f32(0.06)) ** 2)) * (f32(0.85) + f32(0.15) * np.cos(y * f32(44.0)))
    density += f32(0.1) * spine * torso
    # Posterior ribs: arcs y = y0 + k (|x| - 0.3)^2 repeated down the chest, above the diaphragm.
    arc = y - f32(0.75) * (ax - f32(0.3 * width)) ** 2
    ribs = (f32(0.5) + f32(0.5) * np.cos(arc * f32(2 * math.pi / rib_spacing) + f32(rib_phase))) ** 4
    rib_zone = torso * np.clip((f32(0.45) - y) * f32(6.0), 0.0, 1.0) * np.clip((f32(0.8) - ax) * f32(8.0), 0.0, 1.0)
    density += f32(rib_amp) * ribs * rib_zone
    clavicle = y + f32(0.66) - f32(0.22) * ax
    density += f32(0.09) * np.exp(-((clavicle / f32(0.035)) ** 2)) * np.clip((f32(0.6) - ax) * f32(8.0), 0.0, 1.0)
    # Vessel markings radiate from the hila and fade towards the periphery.
    hx, hy = ax - f32(0.14 * width), y + f32(0.02)
    radial = np.sqrt(hx * hx + hy * hy)
    streaks = (
        f32(0.5) + f32(0.5) * np.cos(np.arctan2(hy, hx) * f32(vessel_count) + f32(vessel_phase) + x * f32(3.0))
    ) ** 6
    density += f32(vessel_amp) * lung_visible * streaks * np.exp(-radial / f32(0.3))
    density += f32(texture_amp) * lung_visible * _smooth_noise(rng, size, 24)
    if breasts:
        for breast_side in (-1.0, 1.0):
            density += f32(breast_amp) * _ellipse(x, y, breast_side * 0.45 * width, 0.3, 0.34 * width, 0.32, 1.0)
    if nodule:
        cx, cy, rx, ry, _ = lung_centres[nodule_side]
        nx, ny = cx + nodule_uv[0] * rx, cy + nodule_uv[1] * ry
        density += f32(nodule_amp) * _blob(x, y, nx, ny, nodule_r, nodule_r)

    if lesions:
        opacity = np.zeros((size, size), dtype=f32)
        patches = _smooth_noise(rng, size, 12)
        for side, u, v, radius, aspect, amount, kind in lesions:
            cx, cy, rx, ry, _ = lung_centres[side]
            lx, ly = cx + u * rx, cy + v * ry
            if kind == "consolidation":
                shape = _ellipse(x, y, lx, ly, radius * 1.3 * aspect, radius * 1.3 / aspect, 0.5)
                opacity += f32(amount) * shape * (f32(0.75) + f32(0.5) * patches)
            else:
                opacity += f32(amount) * _blob(x, y, lx, ly, radius * aspect, radius / aspect)
        density += opacity * lung_visible

    image: np.ndarray = f32(offset + 0.12) + f32(gain * 0.95) * density + f32(heel) * gy
    np.clip(image, 0.0, 1.0, out=image)
    image **= f32(gamma)
    image += rng.standard_normal((size, size), dtype=f32) * f32(noise_sd)
    np.clip(image, 0.0, 1.0, out=image)
    return image


def _ellipse(x: np.ndarray, y: np.ndarray, cx: float, cy: float, rx: float, ry: float, edge: float) -> np.ndarray:
    """A filled ellipse with a soft border: 1 inside, falling to 0 over ``edge`` in squared-radius units."""
    r2 = ((x - np.float32(cx)) * np.float32(1.0 / rx)) ** 2 + ((y - np.float32(cy)) * np.float32(1.0 / ry)) ** 2
    out: np.ndarray = np.clip((np.float32(1.0) - r2) * np.float32(1.0 / edge), 0.0, 1.0)
    return out


def _blob(x: np.ndarray, y: np.ndarray, cx: float, cy: float, rx: float, ry: float) -> np.ndarray:
    """A Gaussian blob with standard deviations ``rx``, ``ry``."""
    r2 = ((x - np.float32(cx)) * np.float32(1.0 / rx)) ** 2 + ((y - np.float32(cy)) * np.float32(1.0 / ry)) ** 2
    out: np.ndarray = np.exp(np.float32(-0.5) * r2)
    return out


def _smooth_noise(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
    """Smooth noise in about [-1, 1]: a coarse Gaussian grid upsampled bilinearly (two small matrix products)."""
    coarse = rng.standard_normal((cells, cells), dtype=np.float32)
    pos = (np.arange(size, dtype=np.float32) + 0.5) * np.float32(cells / size) - np.float32(0.5)
    weights = np.maximum(np.float32(0.0), np.float32(1.0) - np.abs(pos[:, None] - np.arange(cells, dtype=np.float32)))
    weights /= weights.sum(axis=1, keepdims=True)
    return (weights @ coarse @ weights.T) * np.float32(0.6)
