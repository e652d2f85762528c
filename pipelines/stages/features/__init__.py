"""Stage ``features``: model-ready datasets and saved splits under ``data/processed/<model>/``.

One module per DVC ``foreach`` item (``diagnosis.py``, ``fraud.py``), each with a ``run`` function, so that each
item's DVC deps list only the code that item imports (``scripts/stage_deps.py``).
"""
