"""The built-in synthetic national cohort: FHIR R4 (NDJSON or Bundles), DICOM radiographs, audit findings, and
the ground-truth manifests of fraud and dirty data. Entry point: :func:`pipelines.synth.cohort.generate`."""
