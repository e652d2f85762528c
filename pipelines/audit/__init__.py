"""Auditors' tools: the per-version report (HTML + PDF), the trace of one prediction, and their MLflow searches."""
