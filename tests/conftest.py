"""Test-wide set-up: quiet threads, sovereign MLflow defaults, GPU marker, shared data location, PostgreSQL fixtures."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import pytest

# Set before torch/MLflow are imported by any test module.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ["MLFLOW_DISABLE_TELEMETRY"] = "true"
os.environ["DO_NOT_TRACK"] = "1"
# Session-wide default store, so fixtures wider than one test never write into the repository's mlflow.db
# (the Makefile exports MLFLOW_TRACKING_URI for `make run`); each test then gets its own store below.
os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{tempfile.mkdtemp(prefix='shipa-mlflow-')}/mlflow.db"
os.environ.pop("SHIPA_PIPELINE_RUN_ID", None)
# torch.compile's shared on-disk kernel cache (/tmp/torchinductor_<user>) is not keyed by ATEN_CPU_CAPABILITY or
# by the venv: a fresh clone's suite under ATEN_CPU_CAPABILITY=default reused kernels and headers built by another
# run and failed to compile them ('at::vec' has not been declared). Each session compiles into its own cache.
os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", tempfile.mkdtemp(prefix="shipa-torchinductor-"))

# The throwaway PostgreSQL server's fixtures (tests/postgres.py), for every folder: the SQLite tests of the
# prediction log and token store run on PostgreSQL too through its ``database_url``.
pytest_plugins = ["postgres"]

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"
SYNTHEA_DIR = SHARED_DATA / "synthea-r4"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip tests marked ``gpu`` when no CUDA device is present."""
    try:
        import torch

        has_cuda = torch.cuda.is_available()
    except ImportError:  # pragma: no cover
        has_cuda = False
    if has_cuda:
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _isolated_mlflow(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every test gets its own sqlite MLflow store unless it sets another one: no test touches ./mlflow.db."""
    store = tmp_path_factory.mktemp("mlflow")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{store / 'mlflow.db'}")


@pytest.fixture
def synthea_dir() -> Path:
    """The real Synthea R4 bundles beside the repository; skips when they are absent."""
    if not SYNTHEA_DIR.is_dir():
        pytest.skip(f"Synthea R4 sample data not found at {SYNTHEA_DIR}")
    return SYNTHEA_DIR


@pytest.fixture(scope="session")
def tiny_cohort(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny built-in cohort, synthesized and ingested once per test session: ``<root>/data/{raw,interim}``."""
    from pipelines.config import IngestParams, SynthesizeParams
    from pipelines.stages import ingest, synthesize

    root = tmp_path_factory.mktemp("tiny-cohort")
    raw, interim = root / "data" / "raw", root / "data" / "interim"
    synthesize.run(
        SynthesizeParams(n_patients=240, image_size=32, imaging_rate=0.7, n_organizations=6, seed=7),
        raw,
        progress=False,
    )
    ingest.run(IngestParams(workers=1, image_size=32), raw, interim, key=None, progress=False)
    return root


@pytest.fixture(scope="session")
def tiny_fraud(tiny_cohort: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The tiny cohort's claim records (``records``, ``train``) and a small fraud model (``model``, on the CPU)."""
    import polars as pl

    from pipelines.config import FraudFeaturesParams
    from pipelines.features.fraud import CATEGORICAL_FEATURES, NUMERIC_FEATURES
    from pipelines.modeling.fraud_model import FraudModelConfig, train_fraud_model
    from pipelines.stages.features import fraud as features_fr

    root = tmp_path_factory.mktemp("tiny-fraud")
    features_fr.run(FraudFeaturesParams(), tiny_cohort / "data" / "interim", root / "processed")
    df = pl.read_parquet(root / "processed" / "dataset.parquet")
    train, val = df.filter(pl.col("split") == "train"), df.filter(pl.col("split") == "val")
    model = train_fraud_model(
        train, train["label"].to_numpy(), val, val["label"].to_numpy(),
        numeric=NUMERIC_FEATURES, categorical=CATEGORICAL_FEATURES,
        config=FraudModelConfig(epochs=2, iforest_trees=50), seed=0, device="cpu",
    )  # fmt: skip
    return {"records": df, "train": train, "model": model}
