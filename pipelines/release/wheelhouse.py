"""The wheelhouse: a wheel for every requirement pinned by the lock file, the pinned torch build and the project.

Built with pip, never by hand: ``pip wheel --no-deps -r <lock>`` (one wheel per pin; pip downloads a published
wheel or builds one from the sdist), ``pip wheel --no-deps <project>``, and ``pip download <torch spec> -c <lock>``
(the lock file leaves torch out; the Makefile's ``TORCH_SPEC`` pins it, and a CUDA build brings its own
``nvidia-*`` wheels, which the lock does not list). Or copied from a folder of wheels downloaded earlier
(:func:`copy_wheels`), for a machine without an index.
"""

from __future__ import annotations

import logging
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from packaging.utils import InvalidWheelFilename, canonicalize_name, parse_wheel_filename

from pipelines.release.errors import ReleaseError

log = logging.getLogger(__name__)

_PIN = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._\-]*)\s*==\s*([^\s;#]+)")
_TORCH_SPEC = re.compile(r"^\s*TORCH_SPEC\s*\??=\s*(.+?)\s*$")
_PIP_TAIL_LINES = 15


@dataclass(frozen=True)
class Wheel:
    """One wheel of the wheelhouse: its distribution name (canonical), version and file name."""

    name: str
    version: str
    filename: str


def read_pins(lock: Path) -> dict[str, str]:
    """``name -> version`` of every ``name==version`` line of a lock file (names canonicalised).

    Raises:
        ReleaseError: the lock file cannot be read.
    """
    try:
        lines = Path(lock).read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise ReleaseError(f"{lock}: the lock file cannot be read ({type(exc).__name__})") from None
    pins = {}
    for line in lines:
        match = _PIN.match(line)
        if match:
            pins[str(canonicalize_name(match[1]))] = match[2]
    return pins


def torch_spec_from_makefile(makefile: Path) -> str | None:
    """The value of ``TORCH_SPEC`` in a Makefile (``torch==2.13.0``, maybe with ``--index-url ...``), or None."""
    try:
        lines = Path(makefile).read_text(encoding="utf-8").splitlines()
    except OSError:
        return None
    for line in lines:
        match = _TORCH_SPEC.match(line)
        if match:
            return match[1]
    return None


def wheel_of(path: Path) -> Wheel:
    """The name and version a wheel's file name declares.

    Raises:
        ReleaseError: not a valid wheel file name.
    """
    try:
        name, version, _build, _tags = parse_wheel_filename(Path(path).name)
    except InvalidWheelFilename:
        raise ReleaseError(f"{path}: not a wheel file name") from None
    return Wheel(name=str(name), version=str(version), filename=Path(path).name)


def list_wheels(folder: Path) -> list[Wheel]:
    """The wheels in ``folder`` (not recursive), sorted by file name."""
    return [wheel_of(p) for p in sorted(Path(folder).glob("*.whl"))]


def _pip(args: list[str], what: str) -> None:
    cmd = [sys.executable, "-m", "pip", "--disable-pip-version-check", *args]
    log.info("%s", what)
    log.debug("%s", shlex.join(cmd))  # one path per wheel: hundreds of them
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        tail = "\n".join((done.stdout + done.stderr).strip().splitlines()[-_PIP_TAIL_LINES:])
        raise ReleaseError(f"{what} failed (pip exit {done.returncode}):\n{tail}")


def download_wheels(out: Path, *, lock: Path, project: Path | None, torch_spec: str | None) -> None:
    """Fill ``out`` with the wheels of every lock pin, the project and the torch build (network: the index).

    Args:
        out: the wheelhouse folder.
        lock: the lock file (``constraints.txt``).
        project: the project folder to build a wheel of (None: not included).
        torch_spec: pip arguments of the torch build (None: not included).

    Raises:
        ReleaseError: pip failed (its last lines are in the message).
    """
    out.mkdir(parents=True, exist_ok=True)
    _pip(["wheel", "--no-deps", "-w", str(out), "-r", str(lock)], f"wheels of the pins in {lock}")
    if project is not None:
        _pip(["wheel", "--no-deps", "-w", str(out), str(project)], f"the wheel of {project}")
    if torch_spec:
        # With its dependencies, held to the lock: a CUDA build needs nvidia-* wheels the lock does not list.
        _pip(
            ["download", "--only-binary=:all:", "-d", str(out), "-c", str(lock), *shlex.split(torch_spec)],
            f"the torch build {torch_spec}",
        )


def copy_wheels(source: Path, out: Path) -> int:
    """Copy every ``*.whl`` under ``source`` (recursively, e.g. pip's cache) into ``out``; returns how many.

    When two files carry the same file name, the first in sorted path order is kept.

    Raises:
        ReleaseError: ``source`` is not a folder or holds no wheel.
    """
    if not Path(source).is_dir():
        raise ReleaseError(f"{source}: --wheels-from is not a folder")
    out.mkdir(parents=True, exist_ok=True)
    copied = 0
    for path in sorted(Path(source).rglob("*.whl")):
        wheel_of(path)
        target = out / path.name
        if not target.exists():
            shutil.copyfile(path, target)
            copied += 1
    if copied == 0:
        raise ReleaseError(f"{source}: no wheel found (--wheels-from)")
    return copied


def check_installable(folder: Path) -> None:
    """Resolve every wheel of ``folder`` with pip, offline, installing nothing (``pip install --dry-run``).

    A wheelhouse whose wheels need a distribution it lacks (a lock file that misses a dependency) cannot be
    installed at the hospital: the release fails here, naming it, instead of there.

    Raises:
        ReleaseError: pip cannot resolve the set from ``folder`` alone (its last lines name what is missing).
    """
    wheels = [str(p) for p in sorted(Path(folder).glob("*.whl"))]
    if not wheels:
        raise ReleaseError(f"{folder}: the wheelhouse is empty")
    args = ["install", "-q", "--dry-run", "--ignore-installed", "--no-index", "--find-links", str(folder), *wheels]
    _pip(args, "the offline install check of the wheelhouse (pip --dry-run --no-index)")


def missing_pins(pins: dict[str, str], wheels: list[Wheel]) -> list[str]:
    """``name==version`` of each pin the wheelhouse has no wheel of (same name and version), sorted."""
    have = {(w.name, w.version) for w in wheels}
    return sorted(f"{n}=={v}" for n, v in pins.items() if (n, v) not in have)
