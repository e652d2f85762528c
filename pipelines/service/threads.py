"""Thread settings for the numeric libraries, applied once at start-up (torch is never imported here)."""

from __future__ import annotations

import os
import sys

THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


def apply_thread_settings(threads: int) -> None:
    """Set the OpenMP/BLAS thread counts, and torch's if the model code has imported it already.

    Call it before the model provider imports torch (the environment variables only act on first import);
    the app's start-up calls it again so torch gets the count either way.
    """
    if threads < 1:
        raise ValueError("threads must be >= 1")
    for name in THREAD_VARIABLES:
        os.environ[name] = str(threads)
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_num_threads(threads)
