"""Install a verified release: a new venv, filled from the bundle's wheelhouse with no package index.

Every wheel of the wheelhouse is installed (``pip install --no-index --find-links <bundle>/wheels <every wheel>``):
the wheelhouse is exactly the pinned dependency set, so the venv is too, and pip fails (nothing is fetched) when a
dependency is missing from it.
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

log = logging.getLogger(__name__)

_TAIL_LINES = 15


def venv_python(venv: Path) -> Path:
    """The interpreter of a venv (POSIX layout)."""
    return Path(venv) / "bin" / "python"


def _run(cmd: list[str], what: str) -> None:
    log.info("%s", what)
    log.debug("%s", shlex.join(cmd))  # one path per wheel: hundreds of them
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        tail = "\n".join((done.stdout + done.stderr).strip().splitlines()[-_TAIL_LINES:])
        raise ReleaseError(f"{what} failed (exit {done.returncode}):\n{tail}")


def install_wheelhouse(bundle: VerifiedBundle, venv: Path) -> list[str]:
    """Create ``venv`` and install every wheel of the verified bundle's wheelhouse into it, offline.

    Returns:
        The wheel file names installed.

    Raises:
        ReleaseError: the venv exists already, the bundle has no wheelhouse, or venv / pip failed.
    """
    wheels_dir = bundle.root / WHEELS
    wheels = sorted(p for p in wheels_dir.glob("*.whl")) if wheels_dir.is_dir() else []
    if not wheels:
        raise ReleaseError(f"{wheels_dir}: the release has no wheelhouse to install from")
    if Path(venv).exists():
        raise ReleaseError(f"{venv} exists already: a release is installed into a new venv")
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
            *(str(w) for w in wheels),
        ],
        f"installing {len(wheels)} wheels into {venv} (pip --no-index)",
    )
    return [w.name for w in wheels]
