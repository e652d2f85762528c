"""FHIR R4: read (Bundle, NDJSON, gzip), validate, de-identify, flatten to tables.

Modules: ``read`` (files -> work units), ``worker`` (first pass: parse, validate, deid, flatten), ``validate``
(R4B schema + Shipa's checks), ``deid`` (allow-list de-identification, pseudonyms), ``flatten`` (rows),
``schema`` (table schemas), ``index`` and ``finalize`` (second pass: references, duplicates, dates, tables),
``pipeline`` (both passes with a process pool), ``quarantine``, ``report``, ``labels`` (audit findings),
``refs``, ``dates``, ``keys``, ``defects``, ``errors``, ``pseudonym`` (keyed HMAC pseudonyms), ``fastcheck``
(cached, equivalent versions of fhir_core's per-element validation hooks for one pinned fhir_core version,
installed explicitly by the ingest stage and the service).
"""
