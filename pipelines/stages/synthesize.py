"""Stage ``synthesize``: write the built-in synthetic national cohort (docs/raw-data.md) into ``data/raw``.

The cohort is generated into a hidden sibling folder and renamed over the destination only when complete, so a
killed run never leaves a folder that looks finished.
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path
from typing import Any

from pipelines.config import ConfigError, SynthesizeParams
from pipelines.synth.cohort import generate
from pipelines.synth.spec import CohortSpec, SpecError

log = logging.getLogger(__name__)


def run(params: SynthesizeParams, out_dir: Path, *, progress: bool = True) -> dict[str, Any]:
    """Generate the cohort and atomically replace ``out_dir`` with it.

    Args:
        params: the validated ``synthesize`` params section.
        out_dir: destination folder (replaced whole if it exists).
        progress: show a progress bar.

    Returns:
        The counts written (also stored in ``COHORT.json``).

    Raises:
        ConfigError: the params describe a cohort that cannot be generated.
    """
    try:
        spec = CohortSpec.from_mapping(params.model_dump())
    except SpecError as exc:
        raise ConfigError(f"synthesize: {exc}") from None
    out_dir = Path(out_dir)
    parent = out_dir.parent
    parent.mkdir(parents=True, exist_ok=True)
    tmp = parent / f".{out_dir.name}.tmp-{os.getpid()}"
    old = parent / f".{out_dir.name}.old-{os.getpid()}"
    for leftover in (tmp, old, *_stale(parent, out_dir.name)):
        if leftover.exists():
            shutil.rmtree(leftover)
    try:
        counts = generate(spec, tmp, progress=progress)
        if out_dir.exists():
            os.replace(out_dir, old)
        os.replace(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    shutil.rmtree(old, ignore_errors=True)
    log.info("cohort ready in %s", out_dir)
    return counts


def _stale(parent: Path, name: str) -> list[Path]:
    """Temporary folders left by killed runs (their process is gone)."""
    out = []
    for path in parent.glob(f".{name}.*-*"):
        pid = path.name.rsplit("-", 1)[-1]
        if path.is_dir() and pid.isdigit() and not _alive(int(pid)):
            out.append(path)
    return sorted(out)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
