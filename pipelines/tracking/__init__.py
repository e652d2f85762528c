"""MLflow tracking: run context, lineage tags, pyfunc logging, registry, gate, model cards, reproduce.

The only code in Shipa that imports MLflow. Functions take the tracking URI and paths as arguments; they never
read params.yaml or the environment. Modules (one job each; see README.md for the tag names and the design):

- ``tags``: every ``shipa.*`` tag name and the aliases ``challenger`` / ``champion``.
- ``lineage``: git commit and dirty flag, DVC data versions, params hash, host, device, package versions.
- ``runs``: ``stage_run``, one run per stage nested under one parent run per pipeline run.
- ``pyfunc``: ``log_pyfunc_model``, the extension point for the diagnosis and fraud wrappers.
- ``registry``: versions, aliases, version tags and descriptions, history.
- ``gate``: the promotion rules (pure); ``promotion``: applying them, overrides, their records.
- ``card_text`` / ``model_card``: model cards in JSON and Markdown.
- ``reproduce``: rebuild a registered version from its lineage in a scratch git worktree.
- ``server``: a local ``mlflow server`` for tests and the UI.
- ``client``, ``keys``, ``git``, ``errors``: plumbing.
"""
