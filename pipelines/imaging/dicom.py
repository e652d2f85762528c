"""Read DICOM files and turn their pixels into normalised arrays.

Training, ingest and the inference service all use these functions, so an image is preprocessed the same way
everywhere:

1. :func:`read_dicom` parses a file (or bytes) and classifies failures with a quarantine reason
   (:class:`~pipelines.imaging.errors.DicomError`).
2. :func:`normalize_pixels` decodes one frame (the first by default: a chest radiograph has one, and the other frames
   of a multi-frame object are repeats or tomosynthesis slices that the models do not use), applies the modality
   LUT (rescale slope/intercept) and the VOI LUT or window, inverts MONOCHROME1 so that bright always means dense,
   and returns float32 in [0, 1].
3. :func:`resample` pads the image to a square (centred, with 0 = black, the colour of air) so the anatomy keeps its
   aspect ratio, then resizes it with an antialiased bilinear filter.

Bounded decoding: a small upload must not make the reader allocate gigabytes (a 382 KB deflated file inflates to
392 MB; an RLE or JPEG frame can encode far more pixels than its header declares). Every limit is checked before the
bytes it guards are produced, and refusals carry the reason ``dicom_too_large`` (over a limit) or
``dicom_unreadable`` (the pixel data contradicts the header):

- :data:`MAX_INFLATED_BYTES` (64 MiB, the service's largest plain upload): a Deflated Explicit VR Little Endian
  dataset is inflated here in 1 MiB steps with ``zlib``'s ``max_length`` and refused as soon as it passes the limit;
  pydicom is handed the inflated bytes and never inflates anything itself.
- :data:`MAX_FRAME_PIXELS` (5120 x 5120; a CR/DX radiograph is at most about 4300 x 4300) and :data:`MAX_FRAMES`
  (256): checked on the declared Rows, Columns and NumberOfFrames before any pixel is touched.
- :data:`MAX_DECODED_BYTES` (256 MiB): the declared Rows x Columns x NumberOfFrames x SamplesPerPixel x
  BitsAllocated/8, checked before decoding.
- The pixel data must be what the header declares: native PixelData of exactly the declared length (one pad byte
  allowed); each encapsulated frame's own header (JPEG SOF, JPEG-LS SOF55, JPEG 2000 SIZ) must state the declared
  rows, columns and samples, and each RLE segment must expand to the declared rows x columns (counted without
  expanding it), all before the frame is decoded; the decoded array must have the declared shape.

Only one frame is decoded, so a request's pixel memory is bounded by about 30 bytes per pixel of one frame (the
decoded frame and the float64 LUT arithmetic of :func:`normalize_pixels`), at most ~750 MB at the frame limit and
~500 MB for a 4096 x 4096 radiograph, plus the parsed dataset (at most the upload or :data:`MAX_INFLATED_BYTES`).
"""

from __future__ import annotations

import datetime as dt
import io
import itertools
import warnings
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset, FileDataset, FileMetaDataset
from pydicom.encaps import get_frame
from pydicom.filereader import read_dataset, read_preamble
from pydicom.multival import MultiValue
from pydicom.pixels.decoders.base import get_decoder
from pydicom.pixels.processing import apply_modality_lut, apply_voi_lut
from pydicom.tag import BaseTag
from pydicom.uid import (
    UID,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000TransferSyntaxes,
    JPEGLSTransferSyntaxes,
    JPEGTransferSyntaxes,
    RLELossless,
)

from pipelines.imaging.errors import DicomError, DicomReason

_MONOCHROME = ("MONOCHROME1", "MONOCHROME2")
_UNDEFINED_LENGTH = 0xFFFFFFFF

MiB = 2**20
MAX_INFLATED_BYTES = 64 * MiB
"""Largest inflated dataset of a Deflated Explicit VR Little Endian file (the service's largest plain upload)."""
MAX_FRAME_PIXELS = 5120 * 5120
"""Largest declared Rows x Columns of one frame (a CR/DX radiograph is at most about 4300 x 4300)."""
MAX_FRAMES = 256
"""Largest declared NumberOfFrames."""
MAX_DECODED_BYTES = 256 * MiB
"""Decode budget: largest declared Rows x Columns x NumberOfFrames x SamplesPerPixel x BitsAllocated/8."""
_INFLATE_STEP = MiB


@dataclass(frozen=True)
class DecodeLimits:
    """What :func:`normalize_pixels` agrees to decode, judged on the header before any pixel is decoded.

    Attributes:
        max_frame_pixels: largest declared Rows x Columns of one frame.
        max_frames: largest declared NumberOfFrames.
        max_decoded_bytes: the decode budget, the largest declared Rows x Columns x NumberOfFrames x
            SamplesPerPixel x BitsAllocated/8.
    """

    max_frame_pixels: int = MAX_FRAME_PIXELS
    max_frames: int = MAX_FRAMES
    max_decoded_bytes: int = MAX_DECODED_BYTES


DEFAULT_LIMITS = DecodeLimits()
# An RLE segment may carry a little non-conformant padding (pydicom accepts it with a warning); one row's worth is
# generous and still bounds the memory.
_RLE_SLACK_ROWS = 1
_J2K_TRANSFER_SYNTAXES = frozenset(JPEG2000TransferSyntaxes)  # HTJ2K included
_JPEG_TRANSFER_SYNTAXES = frozenset([*JPEGTransferSyntaxes, *JPEGLSTransferSyntaxes])
# JPEG start-of-frame markers (ITU T.81 B.1.1.3; 0xF7 is JPEG-LS SOF55): each is followed by the frame header.
_JPEG_SOF = frozenset([0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF, 0xF7])
# Markers without a length field: TEM, RSTn, SOI, EOI.
_JPEG_STANDALONE = frozenset([0x01, 0xD0, 0xD1, 0xD2, 0xD3, 0xD4, 0xD5, 0xD6, 0xD7, 0xD8, 0xD9])


def read_dicom(source: Path | bytes, *, max_inflated_bytes: int = MAX_INFLATED_BYTES) -> Dataset:
    """Parse a DICOM file completely and check that it is whole.

    A Deflated Explicit VR Little Endian dataset is inflated here, in steps, and refused once it passes
    ``max_inflated_bytes``: pydicom would inflate all of it in one call, whatever its size.

    Args:
        source: a file path or the file's bytes (e.g. an upload to the service).
        max_inflated_bytes: the largest inflated dataset of a deflated file (default :data:`MAX_INFLATED_BYTES`).

    Returns:
        The dataset, with ``file_meta`` carrying a transfer syntax.

    Raises:
        DicomError: ``dicom_not_dicom`` when the content is not DICOM, ``dicom_unreadable`` when it is DICOM but
            truncated or corrupt, ``dicom_too_large`` when a deflated dataset inflates past the limit.
    """
    data = source.read_bytes() if isinstance(source, Path) else bytes(source)
    if not data:
        raise DicomError("dicom_unreadable", "the file is empty")
    has_preamble = len(data) >= 132 and data[128:132] == b"DICM"
    size = len(data)
    try:
        # pydicom warns with header values in the text; those must not reach logs.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            deflated = _read_deflated(data, has_preamble, max_inflated_bytes)
            if deflated is None:
                ds = pydicom.dcmread(pydicom.filebase.DicomBytesIO(data), force=not has_preamble)
            else:
                ds, size = deflated
    except DicomError:
        raise
    except Exception as exc:  # parsing arbitrary bytes can fail in many ways; all mean the same here
        if has_preamble:
            raise DicomError("dicom_unreadable", f"the DICOM file cannot be parsed ({type(exc).__name__})") from None
        raise DicomError("dicom_not_dicom", "no DICOM preamble and the content does not parse as DICOM") from None
    if not has_preamble and not _looks_like_dataset(ds):
        raise DicomError("dicom_not_dicom", "no DICOM preamble and no SOP Class UID: not a DICOM file")
    problem = _truncation(ds, size)
    if problem:
        raise DicomError("dicom_unreadable", problem)
    if "TransferSyntaxUID" not in ds.file_meta:
        # Preamble-less files without file meta: pydicom has already guessed the encoding while parsing.
        ds.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian if ds.original_encoding[0] else _explicit(ds)
    return ds


def _not_file_meta(tag: BaseTag, vr: str | None, length: int) -> bool:
    return tag >> 16 != 2


def _read_deflated(data: bytes, has_preamble: bool, limit: int) -> tuple[FileDataset, int] | None:
    """(dataset, inflated size) of a Deflated Explicit VR Little Endian file, or None for any other file.

    Mirrors pydicom's ``read_partial`` (preamble, Explicit VR file meta, then the raw-deflated dataset) with the
    inflation bounded by :func:`_inflate`.
    """
    fp = io.BytesIO(data)
    try:
        preamble = read_preamble(fp, not has_preamble)
        meta = FileMetaDataset(read_dataset(fp, is_implicit_VR=False, is_little_endian=True, stop_when=_not_file_meta))
        deflated = meta.get("TransferSyntaxUID") == DeflatedExplicitVRLittleEndian
    except Exception:  # not DICOM, or a file meta that is not Explicit VR: pydicom's own reader judges it
        return None
    if not deflated:
        return None
    buffer = _inflate(memoryview(data)[fp.tell() :], limit)
    size = buffer.getbuffer().nbytes
    dataset = read_dataset(buffer, is_implicit_VR=False, is_little_endian=True)
    meta.set_original_encoding(is_implicit_vr=False, is_little_endian=True, character_encoding="iso8859")
    ds = FileDataset(io.BytesIO(data), dataset, preamble, meta, is_implicit_VR=False, is_little_endian=True)
    ds.set_original_encoding(False, True, dataset.original_character_set)
    return ds, size


def _inflate(stream: memoryview, limit: int) -> io.BytesIO:
    """Inflate a raw deflate stream into a buffer, refusing as soon as the output passes ``limit`` bytes.

    At most ``limit`` plus one step of output is ever held, so a deflate bomb costs about ``limit`` bytes.
    """
    inflater = zlib.decompressobj(-zlib.MAX_WBITS)
    out = io.BytesIO()
    produced, pos = 0, 0
    chunk: bytes | memoryview
    while not inflater.eof:
        if inflater.unconsumed_tail:
            chunk = inflater.unconsumed_tail
        elif pos < len(stream):
            chunk, pos = stream[pos : pos + _INFLATE_STEP], pos + _INFLATE_STEP
        else:
            raise DicomError("dicom_unreadable", "the deflated dataset ends early (truncated file)")
        try:
            piece = inflater.decompress(chunk, min(_INFLATE_STEP, limit + 1 - produced))
        except zlib.error:
            raise DicomError("dicom_unreadable", "the deflated dataset is corrupt") from None
        produced += len(piece)
        if produced > limit:
            raise DicomError(
                "dicom_too_large",
                f"the deflated dataset inflates to more than {_size(limit)}, the inflated size limit "
                "(MAX_INFLATED_BYTES); refused before parsing",
            )
        out.write(piece)
    out.seek(0)
    return out


def _size(n: float) -> str:
    """A byte count in binary units: 256 MiB, 8.0 GiB, 12 KiB."""
    for unit, scale in (("GiB", 2**30), ("MiB", MiB), ("KiB", 2**10)):
        if n >= scale:
            value = n / scale
            return f"{value:.0f} {unit}" if value == int(value) else f"{value:.1f} {unit}"
    return f"{int(n)} bytes"


def _explicit(ds: Dataset) -> UID:
    return ExplicitVRLittleEndian if ds.original_encoding[1] else ExplicitVRBigEndian


def _looks_like_dataset(ds: Dataset) -> bool:
    try:
        sop_class = str(ds.get("SOPClassUID", "") or "")
    except Exception:  # garbage bytes decoded as a UID
        return False
    return sop_class.startswith("1.2.840.10008.")


def _truncation(ds: Dataset, size: int) -> str | None:
    """Why the top-level dataset is incomplete, or None.

    pydicom stops quietly at the end of a file, so a file cut inside an element header loses its tail without an
    error, and one cut inside a value keeps a short value; both show in the raw elements before conversion.
    """
    last_tell, last_end = -1, None
    for tag in ds.keys():  # noqa: SIM118 - iterating a Dataset converts every element; keys() does not
        elem = ds.get_item(tag)
        if not isinstance(elem, RawDataElement):
            continue
        if elem.length != _UNDEFINED_LENGTH and elem.value is not None and len(elem.value) < elem.length:
            return "the file ends inside a data element value (truncated file)"
        if elem.value_tell > last_tell:
            last_tell = elem.value_tell
            last_end = None if elem.length == _UNDEFINED_LENGTH else elem.value_tell + elem.length
    if last_end is not None and 0 < size - last_end < 8:
        return "the file ends inside a data element header (truncated file)"
    return None


def normalize_pixels(ds: Dataset, frame: int = 0, *, limits: DecodeLimits = DEFAULT_LIMITS) -> np.ndarray:
    """Pixels of one frame as a float32 image in [0, 1] where bright means dense (MONOCHROME2 sense).

    Order: modality LUT (RescaleSlope/RescaleIntercept or a Modality LUT Sequence), then the first VOI LUT or
    window (WindowCenter/WindowWidth) scaled by its output range; without any VOI the image's own min..max is
    used. MONOCHROME1 is inverted last.

    Args:
        ds: a dataset from :func:`read_dicom` (or any with pixel data and a transfer syntax).
        frame: which frame of a multi-frame object (0-based; single-frame objects only have frame 0).
        limits: the decoding limits, checked on the header before decoding (:func:`check_decode_limits`).

    Raises:
        DicomError: ``dicom_no_pixels``, ``dicom_unsupported`` (colour, unknown photometric, compressed without a
            decoder, frame out of range), ``dicom_too_large`` (a declared size over ``limits``) or
            ``dicom_unreadable`` (pixel data that does not match the header, found before or after decoding).
    """
    if "PixelData" not in ds:
        kind = "float pixel data" if ("FloatPixelData" in ds or "DoubleFloatPixelData" in ds) else "no pixel data"
        reason: DicomReason = "dicom_unsupported" if kind == "float pixel data" else "dicom_no_pixels"
        raise DicomError(reason, f"the dataset has {kind}")
    photometric = str(ds.get("PhotometricInterpretation", "")).strip()
    if photometric not in _MONOCHROME:
        raise DicomError("dicom_unsupported", f"photometric interpretation '{photometric}' is not greyscale")
    if int(ds.get("SamplesPerPixel", 1) or 1) != 1:
        raise DicomError("dicom_unsupported", "more than one sample per pixel")
    frames = number_of_frames(ds)
    if not 0 <= frame < frames:
        raise DicomError("dicom_unsupported", f"frame {frame} requested but the object has {frames}")

    rows, columns = check_decode_limits(ds, limits)
    check_frame_matches_header(ds, frame)
    arr = _decode_frame(ds, frame)
    if arr.shape != (rows, columns):
        raise DicomError(
            "dicom_unreadable",
            f"the decoded frame is {' x '.join(map(str, arr.shape))} but Rows x Columns declare {rows} x {columns}",
        )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            values = apply_modality_lut(arr, ds)
            low, high = _voi_output_range(ds)
            if low is not None:
                values = apply_voi_lut(values, ds, index=0)
    except (ValueError, TypeError, KeyError, IndexError, AttributeError, NotImplementedError) as exc:
        raise DicomError(
            "dicom_unsupported", f"the modality or VOI LUT cannot be applied ({type(exc).__name__})"
        ) from None
    values = np.asarray(values, dtype=np.float64)
    if low is None or high is None:
        low, high = float(values.min()), float(values.max())
    span = high - low
    if span <= 0:
        out = np.zeros(values.shape, dtype=np.float32)
    else:
        out = ((values - low) / span).astype(np.float32)
        np.clip(out, 0.0, 1.0, out=out)
    if photometric == "MONOCHROME1":
        out = np.float32(1.0) - out
    return out


def number_of_frames(ds: Dataset) -> int:
    """NumberOfFrames, or 1 when absent or empty."""
    try:
        return max(1, int(ds.get("NumberOfFrames", 1) or 1))
    except (TypeError, ValueError):
        return 1


def _declared(ds: Dataset, keyword: str, default: int | None = None) -> int:
    """A declared non-negative integer attribute; missing or garbled is a header that cannot be read."""
    value = ds.get(keyword, default)
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise DicomError("dicom_unreadable", f"{keyword} is missing or not a number") from None
    if number < 0:
        raise DicomError("dicom_unreadable", f"{keyword} is negative")
    return number


def check_decode_limits(ds: Dataset, limits: DecodeLimits = DEFAULT_LIMITS) -> tuple[int, int]:
    """Refuse a header that declares more than ``limits`` allow, before anything is decoded.

    For native (uncompressed) pixel data, the PixelData length must also be the declared size (one pad byte to an
    even length allowed): a shorter or longer value means the header does not describe the pixels.

    Args:
        ds: a dataset with pixel data.
        limits: the limits.

    Returns:
        The declared (Rows, Columns).

    Raises:
        DicomError: ``dicom_too_large`` naming the attribute and the limit; ``dicom_unreadable`` for a missing,
            zero or garbled size or native pixel data of another length; ``dicom_unsupported`` for a BitsAllocated
            no decoder handles.
    """
    rows, columns = _declared(ds, "Rows"), _declared(ds, "Columns")
    samples, bits = _declared(ds, "SamplesPerPixel", 1), _declared(ds, "BitsAllocated")
    frames = number_of_frames(ds)
    if rows == 0 or columns == 0 or samples == 0:
        raise DicomError("dicom_unreadable", "Rows, Columns or SamplesPerPixel is zero")
    if bits not in (1, 8, 16, 32, 64):
        raise DicomError("dicom_unsupported", f"BitsAllocated {bits} is not 1, 8, 16, 32 or 64")
    decoded = rows * columns * frames * samples * bits / 8
    if decoded > limits.max_decoded_bytes:
        raise DicomError(
            "dicom_too_large",
            f"declared {rows} x {columns} x {frames} frames x {samples} samples x {bits} bits (Rows x Columns x "
            f"NumberOfFrames x SamplesPerPixel x BitsAllocated) = {_size(decoded)} exceeds the "
            f"{_size(limits.max_decoded_bytes)} decode budget (MAX_DECODED_BYTES)",
        )
    if frames > limits.max_frames:
        raise DicomError(
            "dicom_too_large", f"declared NumberOfFrames {frames} exceeds the limit of {limits.max_frames} (MAX_FRAMES)"
        )
    if rows * columns > limits.max_frame_pixels:
        raise DicomError(
            "dicom_too_large",
            f"declared Rows x Columns {rows} x {columns} = {rows * columns} pixels per frame exceeds the limit of "
            f"{limits.max_frame_pixels} (MAX_FRAME_PIXELS)",
        )
    if _encapsulated(ds) is False and "PixelData" in ds:
        expected = (rows * columns * frames * samples * bits + 7) // 8
        if str(ds.get("PhotometricInterpretation", "")).strip() == "YBR_FULL_422":
            expected = expected * 2 // 3  # two chroma samples are shared by each pair of pixels
        actual = len(ds.PixelData)
        if actual != expected and not (actual == expected + 1 and expected % 2 == 1):
            raise DicomError(
                "dicom_unreadable",
                f"native PixelData holds {actual} bytes but Rows x Columns x NumberOfFrames x SamplesPerPixel x "
                f"BitsAllocated declare {expected}",
            )
    return rows, columns


def check_frame_matches_header(ds: Dataset, frame: int = 0) -> None:
    """Refuse an encapsulated frame whose own header states another size than the DICOM header, before decoding.

    A decoder sizes its output from the frame's own header (JPEG, JPEG-LS, JPEG 2000) or expands every RLE
    segment completely, so a frame that encodes more pixels than declared would be decoded in full before any
    shape check. JPEG frames are read up to their SOF (or JPEG-LS SOF55) marker, JPEG 2000 frames to their SIZ
    marker; RLE segments are counted run by run without being expanded. Native pixel data is left to
    :func:`check_decode_limits`.

    Raises:
        DicomError: ``dicom_unreadable`` when the frame contradicts Rows, Columns or SamplesPerPixel or cannot be
            found; ``dicom_unsupported`` for an encapsulated transfer syntax without such a check.
    """
    if not _encapsulated(ds):
        return
    tsyntax = ds.file_meta.TransferSyntaxUID
    rows, columns = _declared(ds, "Rows"), _declared(ds, "Columns")
    samples, bits = _declared(ds, "SamplesPerPixel", 1), _declared(ds, "BitsAllocated")
    extended = None
    if "ExtendedOffsetTable" in ds and "ExtendedOffsetTableLengths" in ds:
        extended = (ds.ExtendedOffsetTable, ds.ExtendedOffsetTableLengths)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            data = get_frame(ds.PixelData, frame, extended_offsets=extended, number_of_frames=number_of_frames(ds))
    except Exception as exc:  # a broken offset table or fragment item shows up as many exception types
        raise DicomError(
            "dicom_unreadable", f"frame {frame} cannot be found in the encapsulated pixel data ({type(exc).__name__})"
        ) from None
    declared = (rows, columns, samples)
    if tsyntax in _JPEG_TRANSFER_SYNTAXES:
        stated, what = _jpeg_frame_shape(data), "JPEG frame header (SOF)"
    elif tsyntax in _J2K_TRANSFER_SYNTAXES:
        stated, what = _j2k_frame_shape(data), "JPEG 2000 image header (SIZ)"
    elif tsyntax == RLELossless:
        _check_rle_frame(data, rows, columns, samples, bits)
        return
    else:
        raise DicomError("dicom_unsupported", f"no bounded frame check for transfer syntax {tsyntax}")
    if stated is None:
        raise DicomError("dicom_unreadable", f"the {what} cannot be found in frame {frame}")
    if stated != declared:
        raise DicomError(
            "dicom_unreadable",
            f"the {what} states {stated[0]} x {stated[1]} x {stated[2]} samples but Rows x Columns x "
            f"SamplesPerPixel declare {rows} x {columns} x {samples}; refused before decoding",
        )


def _encapsulated(ds: Dataset) -> bool | None:
    """Whether the transfer syntax encapsulates the pixel data; None when absent or unknown.

    No decoder takes an unknown transfer syntax, so :func:`_decode_frame` refuses those.
    """
    tsyntax = ds.file_meta.get("TransferSyntaxUID") if hasattr(ds, "file_meta") else None
    if tsyntax is None:
        return None
    try:
        return bool(UID(tsyntax).is_encapsulated)
    except ValueError:  # a private or unknown transfer syntax
        return None


def _jpeg_frame_shape(data: bytes) -> tuple[int, int, int] | None:
    """(lines, samples per line, components) from a JPEG or JPEG-LS frame header, or None when there is none."""
    if data[:2] != b"\xff\xd8":
        return None
    pos, end = 2, len(data)
    while pos + 4 <= end:
        if data[pos] != 0xFF:
            return None
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker in _JPEG_STANDALONE:
            pos += 2
            continue
        if marker in _JPEG_SOF:
            if pos + 10 > end:
                return None
            height = int.from_bytes(data[pos + 5 : pos + 7], "big")
            width = int.from_bytes(data[pos + 7 : pos + 9], "big")
            return height, width, data[pos + 9]
        if marker == 0xDA:  # start of scan before any frame header
            return None
        pos += 2 + int.from_bytes(data[pos + 2 : pos + 4], "big")
    return None


def _j2k_frame_shape(data: bytes) -> tuple[int, int, int] | None:
    """(rows, columns, components) from a JPEG 2000 codestream's SIZ marker (also inside a JP2 box), or None."""
    start = 0 if data[:4] == b"\xff\x4f\xff\x51" else data.find(b"\xff\x4f\xff\x51")
    if start < 0 or start + 42 > len(data):
        return None
    siz = data[start + 4 : start + 42]  # Lsiz, Rsiz, Xsiz, Ysiz, XOsiz, YOsiz, 4 tile fields, Csiz
    x_siz, y_siz = int.from_bytes(siz[4:8], "big"), int.from_bytes(siz[8:12], "big")
    x_off, y_off = int.from_bytes(siz[12:16], "big"), int.from_bytes(siz[16:20], "big")
    return y_siz - y_off, x_siz - x_off, int.from_bytes(siz[36:38], "big")


def _check_rle_frame(data: bytes, rows: int, columns: int, samples: int, bits: int) -> None:
    """Refuse an RLE frame (PS3.5 G) whose segments do not expand to Rows x Columns bytes each, without expanding.

    pydicom expands each segment in full and only then compares its length, and a segment expands up to 64 times
    its size, so a frame that lies about its size would cost memory in proportion to its encoded length.
    """
    if len(data) < 64:
        raise DicomError("dicom_unreadable", "the RLE frame is shorter than its 64-byte header")
    count = int.from_bytes(data[:4], "little")
    expected = samples * max(1, bits // 8)
    if count != expected:
        raise DicomError(
            "dicom_unreadable",
            f"the RLE frame has {count} segments but SamplesPerPixel x BitsAllocated/8 declare {expected}",
        )
    offsets = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "little") for i in range(count)] + [len(data)]
    if offsets[0] != 64 or any(b < a for a, b in itertools.pairwise(offsets)):
        raise DicomError("dicom_unreadable", "the RLE segment offsets are out of order or outside the frame")
    plane = rows * columns
    limit = plane + _RLE_SLACK_ROWS * columns
    for index in range(count):
        length = _rle_expanded_length(data, offsets[index], offsets[index + 1], limit)
        if not plane <= length <= limit:
            stated = f"more than {limit}" if length > limit else str(length)
            raise DicomError(
                "dicom_unreadable",
                f"RLE segment {index} expands to {stated} bytes but Rows x Columns declare {rows} x {columns} = "
                f"{plane}; refused before decoding",
            )


def _rle_expanded_length(data: bytes, start: int, end: int, limit: int) -> int:
    """The length one RLE segment expands to (as pydicom expands it), counting stops once it passes ``limit``."""
    length, pos = 0, start
    while pos < end and length <= limit:
        header = data[pos]
        if header > 128:  # replicate the next byte 257 - header times
            length += 257 - header if pos + 1 < end else 0
            pos += 2
        elif header < 128:  # copy the next header + 1 bytes literally
            length += min(header + 1, end - pos - 1)
            pos += header + 2
        else:  # 128 is a no-op
            pos += 1
    return length


def _decode_frame(ds: Dataset, frame: int) -> np.ndarray:
    tsyntax = ds.file_meta.get("TransferSyntaxUID") if hasattr(ds, "file_meta") else None
    if tsyntax is None:
        raise DicomError("dicom_unsupported", "no transfer syntax in the file meta information")
    try:
        decoder = get_decoder(tsyntax)
    except NotImplementedError:
        raise DicomError("dicom_unsupported", f"no pixel decoder for transfer syntax {tsyntax}") from None
    if not decoder.is_available:
        raise DicomError("dicom_unsupported", f"no installed pixel decoder for transfer syntax {tsyntax}") from None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            arr, _ = decoder.as_array(ds, index=frame)
    except (NotImplementedError, RuntimeError) as exc:
        raise DicomError("dicom_unsupported", f"pixel data cannot be decoded ({type(exc).__name__})") from None
    except Exception as exc:  # inconsistent headers surface as ValueError, KeyError, AttributeError...
        raise DicomError(
            "dicom_unreadable", f"pixel data does not match the image header ({type(exc).__name__})"
        ) from None
    return arr


def _voi_output_range(ds: Dataset) -> tuple[float | None, float | None]:
    """The output range of the VOI transform pydicom will apply, or (None, None) when there is none.

    Mirrors pydicom's rules: a VOI LUT maps to 0..2**bits-1; a window maps to the stored range after rescale.
    """
    lut = ds.get("VOILUTSequence")
    if lut:
        bits = int(lut[0].LUTDescriptor[2])
        return 0.0, float(2**bits - 1)
    if not (_has_value(ds, "WindowCenter") and _has_value(ds, "WindowWidth")):
        return None, None
    bits_stored = int(ds.get("BitsStored", ds.get("BitsAllocated", 16)))
    modality_lut = ds.get("ModalityLUTSequence")
    if modality_lut:
        low, high = 0.0, float(2 ** int(modality_lut[0].LUTDescriptor[2]) - 1)
    elif int(ds.get("PixelRepresentation", 0)) == 0:
        low, high = 0.0, float(2**bits_stored - 1)
    else:
        low, high = float(-(2 ** (bits_stored - 1))), float(2 ** (bits_stored - 1) - 1)
    slope, intercept = ds.get("RescaleSlope"), ds.get("RescaleIntercept")
    if slope is not None and intercept is not None:
        low, high = low * float(slope) + float(intercept), high * float(slope) + float(intercept)
    return low, high


def _has_value(ds: Dataset, keyword: str) -> bool:
    value = ds.get(keyword)
    if value is None or value == "":
        return False
    return not (isinstance(value, MultiValue) and len(value) == 0)


def resample(arr: np.ndarray, size: int) -> np.ndarray:
    """Pad a 2-D image to a centred square with zeros, then resize it to ``size x size``.

    The filter is bilinear, widened by the scale factor when shrinking (like PIL's antialiased resize), written as
    two small matrix products so that it needs nothing but numpy.

    Args:
        arr: a 2-D image, typically from :func:`normalize_pixels`.
        size: side of the output.

    Returns:
        float32 array of shape (size, size).
    """
    if arr.ndim != 2:
        raise ValueError(f"resample expects a 2-D image, got shape {arr.shape}")
    if size < 1:
        raise ValueError(f"size must be positive, got {size}")
    rows, cols = arr.shape
    side = max(rows, cols)
    square = np.zeros((side, side), dtype=np.float32)
    top, left = (side - rows) // 2, (side - cols) // 2
    square[top : top + rows, left : left + cols] = arr
    if side == size:
        return square
    weights = _resize_weights(side, size)
    out: np.ndarray = (weights @ square @ weights.T).astype(np.float32)
    return out


def _resize_weights(n_in: int, n_out: int) -> np.ndarray:
    scale = n_in / n_out
    support = max(scale, 1.0)
    centres = (np.arange(n_out, dtype=np.float64) + 0.5) * scale - 0.5
    distance = np.abs(centres[:, None] - np.arange(n_in, dtype=np.float64)[None, :]) / support
    weights = np.maximum(0.0, 1.0 - distance)
    weights /= weights.sum(axis=1, keepdims=True)
    return weights.astype(np.float32)


def load_image(source: Path | bytes, size: int, frame: int = 0) -> np.ndarray:
    """Read a DICOM file and return its normalised, resampled image (float32, ``size x size``, [0, 1]).

    Raises:
        DicomError: as :func:`read_dicom` and :func:`normalize_pixels`.
    """
    return resample(normalize_pixels(read_dicom(source), frame), size)


def parse_da(value: Any) -> dt.date | None:
    """A DICOM DA value (``YYYYMMDD``) as a date, or None when empty or invalid."""
    text = str(value or "").strip()
    if len(text) != 8 or not text.isdigit():
        return None
    try:
        return dt.date(int(text[:4]), int(text[4:6]), int(text[6:]))
    except ValueError:
        return None
