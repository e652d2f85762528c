"""Install a verified release: a new venv, filled from the bundle's wheelhouse with no package index.

With the project's own wheel in the wheelhouse, that wheel and the torch build are installed and pip takes their
dependencies from the wheelhouse (``pip install --no-index --find-links <bundle>/wheels <shipa wheel> <torch
wheel>``): the wheelhouse holds one version of each distribution, the lock's, so the venv gets the pinned runtime
set and none of the lock's development tools (pytest, ruff, mypy ...). A wheelhouse without the project's wheel is
installed whole. Either way pip fails (nothing is fetched) when a dependency is missing.
"""

from __future__ import annotations

import logging
import shlex
import subprocess
import sys
from pathlib import Path

from pipelines.release.build import WHEELS
from pipelines.release.errors import ReleaseError
from pipelines.release.verify import VerifiedBundle
from pipelines.release.wheelhouse import wheel_of

log = logging.getLogger(__name__)

_TAIL_LINES = 15


def venv_python(venv: Path) -> Path:
    """The interpreter of a venv (POSIX layout)."""
    return Path(venv) / "bin" / "python"


PROJECT = "shipa"
TORCH = "torch"


def install_targets(wheels: list[Path]) -> list[Path]:
    """The wheels to name to pip: the project's and torch's when the project's is there, else all of them."""
    names = {w: wheel_of(w).name for w in wheels}
    if PROJECT not in names.values():
        return wheels
    return [w for w in wheels if names[w] in (PROJECT, TORCH)]


def _run(cmd: list[str], what: str) -> None:
    log.info("%s", what)
    log.debug("%s", shlex.join(cmd))  # one path per wheel: hundreds of them
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        tail = "\n".join((done.stdout + done.stderr).strip().splitlines()[-_TAIL_LINES:])
        raise ReleaseError(f"{what} failed (exit {done.returncode}):\n{tail}")


def install_wheelhouse(bundle: VerifiedBundle, venv: Path) -> list[str]:
    """Create ``venv`` and install the verified bundle's wheelhouse into it, offline (see the module docstring).

    Returns:
        The wheel file names named to pip (their dependencies come from the wheelhouse too).

    Raises:
        ReleaseError: the venv exists already, the bundle has no wheelhouse, or venv / pip failed.
    """
    wheels_dir = bundle.root / WHEELS
    wheels = sorted(p for p in wheels_dir.glob("*.whl")) if wheels_dir.is_dir() else []
    if not wheels:
        raise ReleaseError(f"{wheels_dir}: the release has no wheelhouse to install from")
    if Path(venv).exists():
        raise ReleaseError(f"{venv} exists already: a release is installed into a new venv")
    targets = install_targets(wheels)
    what = (
        f"all {len(wheels)} wheels" if targets == wheels else f"{', '.join(w.name for w in targets)} with dependencies"
    )
    _run([sys.executable, "-m", "venv", str(venv)], f"creating the venv {venv}")
    _run(
        [
            str(venv_python(venv)),
            "-m",
            "pip",
            "--disable-pip-version-check",
            "install",
            "--no-index",
            "--find-links",
            str(wheels_dir),
            *(str(w) for w in targets),
        ],
        f"installing {what} into {venv} (pip --no-index)",
    )
    return [w.name for w in targets]
