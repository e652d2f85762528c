"""Worker processes that exit when the process that started them dies, even by ``kill -9``.

A ``ProcessPoolExecutor`` worker waits for work on a pipe whose write end it holds itself (forked workers inherit
it), so it never sees end-of-file when the parent is killed: ``kill -9`` of ``shipa ingest`` left its workers
blocked forever. :func:`die_with_parent`, run first thing in each worker (a pool's ``initializer``), arranges that
the worker exits when its parent does:

- on Linux the kernel sends the worker SIGKILL when its parent dies (``prctl(PR_SET_PDEATHSIG)``). The signal
  follows the parent *thread* that started the worker, so the pool must be used within the thread that made it
  (a ``with`` block, as every pool of Shipa's is);
- elsewhere (macOS), or where ``prctl`` cannot be called, a daemon thread compares ``os.getppid()`` with the
  parent's pid every half second and ends the process with ``os._exit``.

Either way the parent's pid is checked once right after, for a parent that died before the worker got this far.
The parent's pid is passed in (``os.getpid()`` in the parent) rather than read in the worker, which could already
see its new parent (init, or a subreaper).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import signal
import sys
import threading
import time
from typing import Literal

log = logging.getLogger(__name__)

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
POLL_S = 0.5
EXIT_CODE = 1  # status of a worker that exits because its parent is gone

Mechanism = Literal["auto", "pdeathsig", "poll"]


def die_with_parent(
    parent_pid: int, mechanism: Mechanism = "auto", poll_s: float = POLL_S
) -> Literal["pdeathsig", "poll"]:
    """Make this process exit when the process ``parent_pid`` (its parent) dies.

    Args:
        parent_pid: the parent's pid, taken in the parent before the worker started.
        mechanism: "auto" (the kernel's parent-death signal on Linux, else polling), or one of them explicitly
            (tests run the polling used on macOS on Linux too).
        poll_s: the polling interval.

    Returns:
        The mechanism in place: "pdeathsig" or "poll".
    """
    used: Literal["pdeathsig", "poll"] = "poll"
    if mechanism != "poll" and sys.platform.startswith("linux") and _set_pdeathsig(signal.SIGKILL):
        used = "pdeathsig"
    if used == "poll":
        threading.Thread(target=_watch, args=(parent_pid, poll_s), name="parent-watch", daemon=True).start()
    # The signal is not sent for a parent that died before prctl ran, and the thread may not have polled yet.
    if os.getppid() != parent_pid:
        os._exit(EXIT_CODE)
    return used


def _set_pdeathsig(sig: int) -> bool:
    """``prctl(PR_SET_PDEATHSIG, sig)``; False when libc or the call is unavailable."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        if libc.prctl(PR_SET_PDEATHSIG, ctypes.c_ulong(sig), 0, 0, 0) != 0:
            log.debug("prctl(PR_SET_PDEATHSIG) failed: errno %d", ctypes.get_errno())
            return False
    except (OSError, AttributeError):
        return False
    return True


def _watch(parent_pid: int, poll_s: float) -> None:
    while True:
        if os.getppid() != parent_pid:
            os._exit(EXIT_CODE)  # no cleanup: the worker's state belongs to a run that is gone
        time.sleep(poll_s)
