"""``python -m pipelines.cli`` runs ``shipa``."""

from pipelines.cli import main

main()
