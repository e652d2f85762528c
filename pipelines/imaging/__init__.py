"""Imaging: DICOM read and pixel normalisation (shared by ingest, training and serving), de-identification, ingest.

- ``dicom``: :func:`read_dicom`, :func:`normalize_pixels`, :func:`resample`, :func:`load_image`.
- ``deid``: :func:`deidentify_dataset` (PS3.15 basic profile, allow-list), :func:`header_json`.
- ``ingest``: :func:`ingest_dicom` (files to ``.npy`` images, a pseudonymous manifest and quarantine records).
- ``errors``: :class:`DicomError` with a quarantine reason code.
"""
