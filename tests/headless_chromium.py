"""Headless Chromium for the browser tests (the auditors' report, the service's /docs page).

Needs Debian's chromium package (``/usr/bin/chromium``, installed by ``make test``); tests skip without it.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

CHROMIUM = Path("/usr/bin/chromium")
MISSING = "needs Debian's chromium package at /usr/bin/chromium"
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--hide-scrollbars",
    "--enable-logging=stderr",
    "--v=0",
]


def run_chromium(args: list[str], profile: Path) -> subprocess.CompletedProcess[str]:
    """Chromium with :data:`FLAGS` and its own profile folder, then ``args``."""
    cmd = [str(CHROMIUM), *FLAGS, f"--user-data-dir={profile}", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)


def page_messages(stderr: str) -> list[str]:
    """Console messages, network errors and refused loads of the page (not Chromium's own start-up warnings)."""
    marks = (":CONSOLE", "net::", "Failed to load", "Refused to")
    return [line for line in stderr.splitlines() if any(mark in line for mark in marks)]
