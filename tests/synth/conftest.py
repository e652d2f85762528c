"""Small cohorts shared by the synth tests (generated once per session into temporary folders)."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipelines.synth.cohort import generate

from .cohorts import large_spec, small_spec


@pytest.fixture(scope="session")
def ndjson_cohort(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small NDJSON cohort."""
    root = tmp_path_factory.mktemp("synth") / "ndjson"
    generate(small_spec(), root, progress=False)
    return root


@pytest.fixture(scope="session")
def bundle_gz_cohort(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small cohort of gzipped transaction Bundles."""
    root = tmp_path_factory.mktemp("synth") / "bundle"
    generate(small_spec(format="bundle", gzip=True, seed=8), root, progress=False)
    return root


@pytest.fixture(scope="session")
def ndjson_gz_cohort(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small gzipped NDJSON cohort."""
    root = tmp_path_factory.mktemp("synth") / "ndjson_gz"
    generate(small_spec(gzip=True, seed=9, n_patients=40), root, progress=False)
    return root


@pytest.fixture(scope="session")
def large_cohort(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The 2,000-patient cohort of :func:`cohorts.large_spec`."""
    root = tmp_path_factory.mktemp("synth") / "large"
    generate(large_spec(), root, progress=False)
    return root
