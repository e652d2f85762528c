"""Stage ``train``: fit a model per DVC ``foreach`` item (``shipa train diagnosis`` / ``shipa train fraud``).

One module per item (``diagnosis.py``, ``fraud.py``), each with a ``run`` function, so that each item's DVC deps
list only the code that item imports.
"""
