"""Names of every tag Shipa writes to MLflow runs and model versions (auditors search the MLflow UI by these).

All tags share the ``shipa.`` prefix. See ``pipelines/tracking/README.md`` for what each one means.
"""

from __future__ import annotations

PREFIX = "shipa."

# Run tags written by lineage.collect_lineage.
STAGE = "shipa.stage"
GIT_COMMIT = "shipa.git_commit"
GIT_DIRTY = "shipa.git_dirty"
PARAMS_SHA256 = "shipa.params_sha256"
DATA_PREFIX = "shipa.data."
DATA_SOURCE = "shipa.data_source"
HOST = "shipa.host"
DEVICE = "shipa.device"
VERSION_PREFIX = "shipa.version."

# Run tags written by runs.stage_run.
PIPELINE_RUN_ID = "shipa.pipeline_run_id"
RUN_KIND = "shipa.run_kind"
RUN_KIND_PIPELINE = "pipeline"
RUN_KIND_STAGE = "stage"

# Run or model-version tag: md5 of the test data an evaluation was computed on.
TEST_DATA_MD5 = "shipa.test_data_md5"
# Model-version tag: one line per test metric, "name: value [low, high]".
METRICS = "shipa.metrics"

# Model-version tags written by promotion.apply_gate / promotion.override.
GATE_DECISION = "shipa.gate.decision"
GATE_REASONS = "shipa.gate.reasons"
GATE_BY = "shipa.gate.by"
GATE_AT = "shipa.gate.at"
GATE_OVERRIDE_REASON = "shipa.gate.override_reason"
GATE_PREVIOUS_CHAMPION = "shipa.gate.previous_champion"

# Aliases (MLflow aliases replace stages).
CHALLENGER = "challenger"
CHAMPION = "champion"

# MLflow's own tag that nests a run under its parent in the UI.
MLFLOW_PARENT_RUN_ID = "mlflow.parentRunId"
