"""Hostile DICOM files built with pydicom, for the bounded-decoding tests (imaging and service).

Each builder returns the bytes of a whole DICOM file (preamble, DICM, file meta): a deflate bomb whose dataset
inflates to hundreds of MB from a few hundred KB, RLE and JPEG files whose frames encode another size than their
Rows and Columns declare, and a header that declares an enormous image.
"""

from __future__ import annotations

import copy
import io
import struct
import zlib

import numpy as np
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset, write_file_meta_info
from pydicom.uid import (
    ComputedRadiographyImageStorage,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRLittleEndian,
    JPEGBaseline8Bit,
    RLELossless,
)

MiB = 2**20


def radiograph(rows: int = 64, columns: int = 64, bits: int = 16, pixels: bool = True) -> Dataset:
    """A small, valid greyscale CR dataset (native pixel data unless ``pixels`` is False)."""
    ds = Dataset()
    ds.SOPClassUID = ComputedRadiographyImageStorage
    ds.SOPInstanceUID = "1.2.826.0.1.3680043.10.9.1"
    ds.StudyInstanceUID = "1.2.826.0.1.3680043.10.9"
    ds.SeriesInstanceUID = "1.2.826.0.1.3680043.10.9.0"
    ds.Modality = "CR"
    ds.PatientID = "850315300012"
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = rows, columns
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = bits, bits, bits - 1, 0
    if pixels:
        dtype = "<u2" if bits == 16 else "u1"
        values = (np.arange(rows * columns) % (2**bits)).astype(dtype).reshape(rows, columns)
        ds.PixelData = values.tobytes()
    return with_file_meta(ds)


def with_file_meta(ds: Dataset) -> Dataset:
    """``ds`` with the file meta of an explicit VR little endian file of its SOP class and instance."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta = meta
    return ds


def to_bytes(ds: Dataset) -> bytes:
    """The dataset as a DICOM file."""
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def _explicit_le(ds: Dataset) -> bytes:
    out = DicomBytesIO()
    out.is_little_endian, out.is_implicit_VR = True, False
    write_dataset(out, ds)
    return out.getvalue()


def deflate_bomb(inflated: int = 400 * MiB, base: Dataset | None = None) -> bytes:
    """A Deflated Explicit VR Little Endian file whose dataset inflates to more than ``inflated`` bytes.

    The dataset is ``base`` (an ordinary 64 x 64 radiograph by default) plus a zero-filled private OB element of
    ``inflated`` bytes; the deflate stream is produced in 1 MiB steps, so building it never holds the inflated
    dataset (about 400 KB for 400 MiB).
    """
    ds = radiograph() if base is None else copy.deepcopy(base)
    head, tail = Dataset(), Dataset()
    for elem in ds:
        if elem.tag.group != 0x0009:  # the private block below takes group 0009
            (head if elem.tag < 0x00090010 else tail).add(elem)
    head.add_new(0x00090010, "LO", "SHIPA HOSTILE")
    meta = ds.file_meta
    meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    prefix = DicomBytesIO()
    prefix.write(b"\0" * 128 + b"DICM")
    write_file_meta_info(prefix, meta, enforce_standard=True)
    deflater = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    parts = [prefix.getvalue(), deflater.compress(_explicit_le(head))]
    # (0009,1000) OB, private block 0x10 of the creator above, explicit VR long form: tag, VR, 2 reserved, length.
    parts.append(deflater.compress(struct.pack("<HH2sHI", 0x0009, 0x1000, b"OB", 0, inflated)))
    zeros = bytes(MiB)
    for _ in range(inflated // MiB):
        parts.append(deflater.compress(zeros))
    parts.append(deflater.compress(bytes(inflated % MiB)))
    parts.append(deflater.compress(_explicit_le(tail)))
    parts.append(deflater.flush())
    return b"".join(parts)


def rle_lying(declared: tuple[int, int] = (64, 64), encoded: tuple[int, int] = (256, 256)) -> bytes:
    """An RLE Lossless CR file encoded by pydicom at ``encoded`` size whose header then declares ``declared``."""
    ds = radiograph(*encoded)
    ds.compress(RLELossless, encoding_plugin="pydicom")
    ds.Rows, ds.Columns = declared
    return to_bytes(ds)


def rle_zero_frame(rows: int, columns: int) -> bytes:
    """One RLE Lossless frame of a 16-bit all-zero image of ``rows`` x ``columns``, in replicate runs of 128.

    Built directly (pydicom's encoder is pure Python and slow at this size): each segment is ``rows x columns`` zero
    bytes as runs of (0x81, 0x00), so a 16384 x 16384 frame is about 8 MiB and expands to 512 MiB.
    """
    plane = rows * columns
    runs, rest = divmod(plane, 128)
    segment = b"\x81\x00" * runs + (bytes([257 - rest, 0]) if rest > 1 else b"\x00\x00" if rest else b"")
    header = struct.pack("<16I", 2, 64, 64 + len(segment), *([0] * 13))
    return header + segment + segment


def _with_header(base: Dataset | None, declared: tuple[int, int], bits: int) -> Dataset:
    """``base`` (or a fresh radiograph) with no pixel data, declaring ``declared`` pixels of ``bits`` bits."""
    if base is None:
        return radiograph(*declared, bits=bits, pixels=False)
    ds = copy.deepcopy(base)
    del ds.PixelData
    ds.Rows, ds.Columns = declared
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = bits, bits, bits - 1, 0
    ds.SamplesPerPixel = 1
    for keyword in ("NumberOfFrames", "WindowCenter", "WindowWidth", "VOILUTSequence"):
        if keyword in ds:
            delattr(ds, keyword)
    return ds


def rle_bomb(
    declared: tuple[int, int] = (64, 64), encoded: tuple[int, int] = (16384, 16384), base: Dataset | None = None
) -> bytes:
    """An RLE Lossless file declaring ``declared`` whose frame expands to ``encoded`` (512 MiB by default)."""
    ds = _with_header(base, declared, 16)
    ds.PixelData = encapsulate([rle_zero_frame(*encoded)])
    ds["PixelData"].VR = "OB"
    ds.file_meta.TransferSyntaxUID = RLELossless
    return to_bytes(ds)


def jpeg_lying(
    declared: tuple[int, int] = (64, 64), encoded: tuple[int, int] = (4096, 4096), base: Dataset | None = None
) -> bytes:
    """A JPEG Baseline file (8-bit greyscale, encoded by Pillow at ``encoded`` size) declaring ``declared``."""
    image = Image.new("L", (encoded[1], encoded[0]), 0)
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=90)
    ds = _with_header(base, declared, 8)
    ds.PixelData = encapsulate([buffer.getvalue()])
    ds["PixelData"].VR = "OB"
    ds.file_meta.TransferSyntaxUID = JPEGBaseline8Bit
    return to_bytes(ds)


def enormous_header(rows: int = 65535, columns: int = 65535, base: Dataset | None = None) -> bytes:
    """A native file declaring ``rows`` x ``columns`` x 16 bits with 64 x 64 pixels of data."""
    ds = _with_header(base, (rows, columns), 16)
    ds.PixelData = bytes(64 * 64 * 2)
    ds["PixelData"].VR = "OW"
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    return to_bytes(ds)
