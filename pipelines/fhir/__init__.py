"""FHIR R4: read (Bundle, NDJSON, gzip), validate, de-identify, flatten to tables."""
