"""PACS over DICOMweb: a bounded client (QIDO-RS, WADO-RS, STOW-RS through ``dicomweb-client``), the retrieval of
one study's instance a model may read, and the results stored back into the study (a Basic Text Structured
Report and a Secondary Capture of the saliency overlay).

A plain library: it reads no environment and keeps no state; the service and the CLI pass the PACS address and
credentials in (:class:`~pipelines.pacs.client.DicomWebConfig`).
"""
