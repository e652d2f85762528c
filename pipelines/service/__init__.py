"""The inference service: FastAPI app (``app.create_app``), tokens and roles, FHIR errors, limits, audit log.

See README.md in this folder. Import submodules directly; this package imports nothing so that ``shipa`` commands
that only need the audit log stay light.
"""
