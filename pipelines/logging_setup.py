"""One place that configures logging for the CLI and the service."""

from __future__ import annotations

import logging


def configure_logging(level: str = "INFO") -> None:
    """Log to stderr as ``time level logger: message``; quiet the chattiest third-party loggers."""
    logging.basicConfig(
        level=level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
        force=True,
    )
    for noisy in ("urllib3", "alembic", "matplotlib", "PIL", "fsspec", "git"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
