"""Worker processes die with their parent: ``kill -9`` of ``shipa ingest`` leaves none of its workers behind.

Before, the pool workers waited forever on a pipe they themselves held open (hundreds of MB each). Each worker now
runs :func:`pipelines.parent_watch.die_with_parent` first: the kernel's parent-death signal on Linux, a polling
thread elsewhere; both are checked here (the polling one on Linux too).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from pipelines.config import SynthesizeParams
from pipelines.stages import synthesize

DEATH_S = 5.0  # the bound: no process of the killed ingest after 5 s


def _gone(pid: int) -> bool:
    """Whether ``pid`` has exited (a zombie waiting for a reaper counts: it holds no memory and runs nothing)."""
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def _wait_until_gone(pids: list[int], timeout_s: float) -> list[int]:
    """The pids still alive after up to ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    alive = list(pids)
    while alive and time.monotonic() < deadline:
        time.sleep(0.05)
        alive = [pid for pid in alive if not _gone(pid)]
    return alive


def _shipa() -> list[str]:
    script = Path(sys.executable).with_name("shipa")
    if script.exists():
        return [str(script)]
    found = shutil.which("shipa")
    if found is None:
        pytest.skip("the shipa console script is not installed")
    return [found]


def _clean_up(proc: subprocess.Popen[str] | subprocess.Popen[bytes], pids: list[int]) -> None:
    """After a failed assertion: kill what is left of the processes this test started (psutil checks that a pid
    still names the same process before it signals)."""
    for pid in pids:
        with contextlib.suppress(psutil.NoSuchProcess):
            process = psutil.Process(pid)
            if process.status() != psutil.STATUS_ZOMBIE:
                process.kill()
    if proc.poll() is None:
        proc.kill()
    proc.wait(timeout=10)


def test_kill_9_of_ingest_leaves_no_worker(tmp_path: Path) -> None:
    raw = tmp_path / "raw"
    # About 9,000 resources: the first pass keeps two workers busy for several seconds on a loaded machine.
    synthesize.run(
        SynthesizeParams(n_patients=600, imaging_rate=0.0, n_organizations=6, months=12, seed=5), raw, progress=False
    )
    env = {k: v for k, v in os.environ.items() if k != "SHIPA_PSEUDONYM_KEY"}  # the demo key, built-in cohort
    cmd = [*_shipa(), "ingest", "--input", str(raw), "--out", str(tmp_path / "out"), "--workers", "2"]
    proc = subprocess.Popen(
        [*cmd, "--no-progress"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # so that nothing of the test's own process group is involved
    )
    children: list[int] = []
    try:
        parent = psutil.Process(proc.pid)
        deadline = time.monotonic() + 60
        while len(children) < 2:
            assert proc.poll() is None, f"shipa ingest exited ({proc.returncode}) before its workers were seen"
            assert time.monotonic() < deadline, "the ingest workers did not start within 60 s"
            time.sleep(0.05)
            try:
                children = [c.pid for c in parent.children(recursive=True)]
            except psutil.NoSuchProcess:
                children = []
        time.sleep(0.3)  # let the workers take work (the hang was in workers waiting for or doing work)
        children = sorted({*children, *(c.pid for c in parent.children(recursive=True))})

        os.kill(proc.pid, signal.SIGKILL)  # the parent only
        proc.wait(timeout=10)
        alive = _wait_until_gone(children, DEATH_S)
        assert not alive, f"workers {alive} of the killed ingest still alive after {DEATH_S:g} s"
    finally:
        _clean_up(proc, children)


# A middle process starts a worker that calls die_with_parent(middle's pid, mechanism), then sleeps.
_MIDDLE = r"""
import os, subprocess, sys, time
worker = (
    "import sys, time\n"
    "from pipelines.parent_watch import die_with_parent\n"
    "print(die_with_parent(int(sys.argv[1]), sys.argv[2], poll_s=0.2), flush=True)\n"
    "time.sleep(120)\n"
)
cmd = [sys.executable, "-c", worker, str(os.getpid()), sys.argv[1]]
child = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
print(child.pid, child.stdout.readline().strip(), flush=True)
time.sleep(120)
"""


@pytest.mark.parametrize("mechanism", ["pdeathsig", "poll"])
def test_a_worker_exits_when_its_parent_is_killed(mechanism: str, tmp_path: Path) -> None:
    if mechanism == "pdeathsig" and not sys.platform.startswith("linux"):
        pytest.skip("PR_SET_PDEATHSIG is Linux only")
    middle = subprocess.Popen(
        [sys.executable, "-c", _MIDDLE, mechanism],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    worker = 0
    try:
        assert middle.stdout is not None
        pid, used = middle.stdout.readline().split()
        worker = int(pid)
        assert used == mechanism  # the mechanism asked for is the one in place
        assert not _gone(worker)
        os.kill(middle.pid, signal.SIGKILL)
        middle.wait(timeout=10)
        assert not _wait_until_gone([worker], DEATH_S), f"the {mechanism} worker outlived its parent"
    finally:
        _clean_up(middle, [worker] if worker else [])
