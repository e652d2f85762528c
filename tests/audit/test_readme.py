"""The MLflow searches documented for auditors in pipelines/audit/README.md run as written on a real store."""

from __future__ import annotations

import re
from pathlib import Path

from mlflow import MlflowClient

from .helpers import Registered

README = Path(__file__).resolve().parents[2] / "pipelines" / "audit" / "README.md"
# The README's examples use the values of the test project (helpers.py), so each finds its runs here.
EMPTY_HERE = {"tags.\"shipa.git_dirty\" = 'true'", "tags.\"shipa.device\" != 'cpu'"}


def _searches() -> list[str]:
    rows = [line for line in README.read_text(encoding="utf-8").splitlines() if line.startswith("| ")]
    return [m.group(1) for line in rows for m in [re.search(r"\| `(tags\..+)` \|$", line)] if m]


def test_documented_searches_run_and_find_the_versions_runs(registered: Registered) -> None:
    searches = _searches()
    assert len(searches) == 8
    client = MlflowClient(registered.tracking_uri)
    experiments = [e.experiment_id for e in client.search_experiments()]
    for query in searches:
        found = client.search_runs(experiments, filter_string=query)
        assert (len(found) == 0) if query in EMPTY_HERE else (len(found) >= 1), query
