"""Registered model versions keep loading across module renames.

MLflow cloudpickles a pyfunc wrapper (``python_model.pkl``) when a version is logged; the pickle names the module
and class of every object it holds. Our wrappers are pickled empty (weights and settings are artifacts, loaded
by ``load_context``), so a pickle names ``pipelines.tracking.pyfunc_fraud`` / ``pyfunc_diagnosis`` and nothing
else of ours: renaming any other module (issue 13 renamed ``modeling.fraud_reasons``, ``fraud.reasons``,
``service.provider`` ...) cannot break an older version, and these two modules must keep their paths (or get an
alias module) for as long as such versions are served.
"""

from __future__ import annotations

import io
import pickle
from typing import Any

import cloudpickle
import pytest

from pipelines.tracking.pyfunc_diagnosis import DiagnosisPyfunc
from pipelines.tracking.pyfunc_fraud import FraudPyfunc

# The module paths a stored pickle may name; each must stay importable (see the module docstring).
PICKLED_MODULES = {"pipelines.tracking.pyfunc_fraud", "pipelines.tracking.pyfunc_diagnosis"}

# ``python_model.pkl`` as MLflow wrote it before the renames: cloudpickle.dumps of each wrapper on commit 3a8e63e.
STORED_BEFORE_RENAMES = {
    FraudPyfunc: (
        b"\x80\x05\x95D\x00\x00\x00\x00\x00\x00\x00\x8c\x1fpipelines.tracking.pyfunc_fraud\x94"
        b"\x8c\x0bFraudPyfunc\x94\x93\x94)\x81\x94}\x94\x8c\x06_model\x94Nsb."
    ),
    DiagnosisPyfunc: (
        b"\x80\x05\x95P\x00\x00\x00\x00\x00\x00\x00\x8c#pipelines.tracking.pyfunc_diagnosis\x94"
        b"\x8c\x0fDiagnosisPyfunc\x94\x93\x94)\x81\x94}\x94\x8c\n_predictor\x94Nsb."
    ),
}


class _Recorder(pickle.Unpickler):
    """An unpickler that notes every ``module.name`` a pickle asks for."""

    def __init__(self, data: bytes) -> None:
        super().__init__(io.BytesIO(data))
        self.names: set[tuple[str, str]] = set()

    def find_class(self, module: str, name: str) -> Any:
        self.names.add((module, name))
        return super().find_class(module, name)


@pytest.mark.parametrize("wrapper", [FraudPyfunc, DiagnosisPyfunc], ids=lambda c: c.__name__)
def test_a_logged_wrapper_names_only_its_own_module(wrapper: type) -> None:
    recorder = _Recorder(cloudpickle.dumps(wrapper()))
    loaded = recorder.load()
    ours = {module for module, _ in recorder.names if module.split(".")[0] == "pipelines"}
    assert ours == {wrapper.__module__} and ours <= PICKLED_MODULES
    assert type(loaded) is wrapper


@pytest.mark.parametrize("wrapper", [FraudPyfunc, DiagnosisPyfunc], ids=lambda c: c.__name__)
def test_a_wrapper_pickled_before_the_renames_still_loads(wrapper: type) -> None:
    loaded = pickle.loads(STORED_BEFORE_RENAMES[wrapper])
    assert type(loaded) is wrapper
    with pytest.raises(RuntimeError, match="not loaded"):  # empty until MLflow calls load_context
        _ = loaded.scorer if wrapper is FraudPyfunc else loaded.predictor
