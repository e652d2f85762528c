"""Small, read-mostly git queries by subprocess (no GitPython): commit, dirty state, worktrees.

Every query works outside a git repository and answers "unknown" / None instead of failing, because lineage
must never stop a training run.
"""

from __future__ import annotations

import hashlib
import logging
import subprocess
from pathlib import Path

log = logging.getLogger(__name__)

UNKNOWN = "unknown"

# Files a running `dvc repro` itself writes into the work tree: they change while the pipeline runs, so they
# must not make a tree "dirty" (their content is recorded by the shipa.data.* tags instead).
PIPELINE_WRITTEN = (":(exclude,glob)**/dvc.lock", ":(exclude,glob)**/.gitignore")


def _git(repo: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(["git", "-C", str(repo), *args], capture_output=True, check=check, timeout=60)


def head_commit(repo: Path) -> str:
    """The full hash of HEAD, or ``"unknown"`` outside a git repository (or without git)."""
    try:
        return _git(repo, "rev-parse", "--verify", "HEAD").stdout.decode().strip()
    except (OSError, subprocess.SubprocessError):
        return UNKNOWN


def is_dirty(repo: Path) -> bool | None:
    """True when tracked files differ from HEAD or untracked, non-ignored files exist; None outside git.

    ``dvc.lock`` and ``.gitignore`` files are not counted (see :data:`PIPELINE_WRITTEN`).
    """
    try:
        out = _git(repo, "status", "--porcelain", "--untracked-files=normal", "--", ".", *PIPELINE_WRITTEN).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return bool(out.strip())


def state_digest(repo: Path) -> str:
    """sha256 of the uncommitted state (diff to HEAD, untracked names), ignoring pipeline-written files.

    Two calls during one ``dvc repro`` give the same digest, because a running pipeline only writes files that
    are ignored here or by git.
    """
    digest = hashlib.sha256()
    try:
        digest.update(_git(repo, "diff", "HEAD", "--binary", "--", ".", *PIPELINE_WRITTEN).stdout)
        digest.update(_git(repo, "ls-files", "--others", "--exclude-standard", "--", ".", *PIPELINE_WRITTEN).stdout)
    except (OSError, subprocess.SubprocessError):
        digest.update(b"no-git")
    return digest.hexdigest()


def toplevel(repo: Path) -> Path | None:
    """The root folder of the git work tree holding ``repo``, or None outside git."""
    try:
        return Path(_git(repo, "rev-parse", "--show-toplevel").stdout.decode().strip())
    except (OSError, subprocess.SubprocessError):
        return None


def commit_exists(repo: Path, commit: str) -> bool:
    """Whether ``commit`` names a commit object in the repository at ``repo``."""
    if not commit or commit == UNKNOWN:
        return False
    try:
        return _git(repo, "cat-file", "-e", f"{commit}^{{commit}}", check=False).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False
