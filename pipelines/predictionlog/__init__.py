"""The prediction log: the append-only, HMAC-chained record of every request that reached a model.

Written by the service (``pipelines.service``), read and verified by the auditors' reports (``pipelines.audit``)
and by ``shipa audit verify``. It sits below both and imports no other ``pipelines`` package, so neither of
them needs the other. Modules: ``log`` (:class:`~pipelines.predictionlog.log.PredictionLog`, the record to
append, the ``audit_events``/``audit_head`` tables and ``verify``), ``checkpoints`` (the signed checkpoints of
the chain's head, appended to a file outside the database after each commit), ``entry`` (``LogEntry``, a stored
record), ``fhir`` (an entry as a FHIR R4 AuditEvent), ``db`` (the SQLAlchemy engine the service's tokens share),
``roles`` (the token roles and purposes of use an entry records). The table names keep their ``audit_``
prefix: they are the stored format of existing databases.
"""
