"""Thread settings reach the environment and torch; the service's modules never import torch or MLflow."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from pipelines.service.threads import THREAD_VARIABLES, apply_thread_settings


def test_apply_thread_settings_sets_env_and_loaded_torch(monkeypatch: pytest.MonkeyPatch) -> None:
    torch = pytest.importorskip("torch")
    for name in THREAD_VARIABLES:
        monkeypatch.setenv(name, "1")
    before = torch.get_num_threads()
    try:
        apply_thread_settings(2)
        assert [os.environ[n] for n in THREAD_VARIABLES] == ["2", "2", "2"]
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
    with pytest.raises(ValueError):
        apply_thread_settings(0)


def test_service_modules_stay_light() -> None:
    code = (
        "import sys\n"
        "import pipelines.service.app, pipelines.cli, pipelines.service.server\n"
        "heavy = sorted(m for m in ('torch', 'mlflow', 'monai', 'pandas') if m in sys.modules)\n"
        "print(','.join(heavy))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert result.stdout.strip() == ""
