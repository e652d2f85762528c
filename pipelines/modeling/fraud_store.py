"""The on-disk layout of a fraud model folder, written atomically and read without unpickling code.

``metadata.json`` (format, kind, feature names, encoder vocabularies and scaler, hyperparameters, training
summary), ``network.pt`` (a torch ``state_dict``, loaded with ``weights_only=True``) and ``<name>.skops`` for
scikit-learn parts (loaded by skops, which refuses any type outside a short allow-list instead of running
pickled code).
"""

from __future__ import annotations

import io
import json
import os
import shutil
import zipfile
from pathlib import Path
from typing import Any

import torch

from pipelines.errors import InputError

# The three scorers ``train@fraud`` writes (``train/<name>/``) and ``evaluate@fraud`` compares: the model and its
# two baselines.
FRAUD_SCORERS = ("model", "gbm", "rules")

SKOPS_SCHEMA = "schema.json"
ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)  # the earliest date a zip entry can carry: a fixed stamp, not the clock
FORMAT = "shipa-fraud-model/1"
METADATA = "metadata.json"
NETWORK = "network.pt"
# Types a fraud model's scikit-learn parts need beyond skops' defaults (isolation forest, histogram GBM).
TRUSTED_TYPES = frozenset(
    {
        "sklearn.tree._tree.Tree",
        "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor",
        "sklearn.utils.validation.check_array",
        "functools.partial",
    }
)


class ModelFormatError(InputError):
    """A model folder that is missing, of another format, or holds types outside the allow-list."""


def write_model_dir(
    path: Path,
    metadata: dict[str, Any],
    *,
    torch_state: dict[str, torch.Tensor] | None = None,
    sklearn_objects: dict[str, Any] | None = None,
) -> Path:
    """Write a model folder atomically: build it beside ``path``, then swap it in.

    Args:
        path: the model folder (replaced whole if it exists).
        metadata: JSON-ready metadata (must include ``format`` and ``kind``).
        torch_state: a ``state_dict`` saved as ``network.pt``.
        sklearn_objects: name -> fitted scikit-learn object, saved as ``<name>.skops``.

    Returns:
        ``path``.
    """
    import skops.io as sio

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.tmp-{os.getpid()}"
    old = path.parent / f".{path.name}.old-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        if torch_state is not None:
            torch.save(torch_state, tmp / NETWORK)
        for name, obj in (sklearn_objects or {}).items():
            (tmp / f"{name}.skops").write_bytes(canonical_skops(sio.dumps(obj)))
        (tmp / METADATA).write_text(json.dumps(metadata, indent=2, sort_keys=True), encoding="utf-8")
        if path.exists():
            os.replace(path, old)
        os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    shutil.rmtree(old, ignore_errors=True)
    return path


def canonical_skops(data: bytes) -> bytes:
    """A skops file with the same content and no run-to-run noise, so equal models give equal bytes.

    skops names each array file and memo entry after the ``id()`` of its object and stamps the zip with the clock,
    so the same fitted model gives other bytes each run, and DVC (which hashes a stage's outputs into ``dvc.lock``)
    would see a new model every time. Here every ``__id__`` and array ``file`` is renumbered in order of first
    appearance in ``schema.json`` (references between nodes keep pointing at the same node), and every zip entry
    gets a fixed date. Loading is unchanged: skops reads ids only as keys and files by the names in the schema.
    """
    with zipfile.ZipFile(io.BytesIO(data)) as src:
        schema = json.loads(src.read(SKOPS_SCHEMA))
        ids: dict[int, int] = {}
        files: dict[str, str] = {}

        def renumber(node: Any) -> Any:
            if isinstance(node, dict):
                out: dict[str, Any] = {}
                for key, value in node.items():
                    if key == "__id__" and isinstance(value, int):
                        out[key] = ids.setdefault(value, len(ids))
                    elif key == "file" and isinstance(value, str) and node.get("__loader__") == "NdArrayNode":
                        out[key] = files.setdefault(value, f"{len(files):06d}{Path(value).suffix}")
                    else:
                        out[key] = renumber(value)
                return out
            if isinstance(node, list):
                return [renumber(v) for v in node]
            return node

        canonical = renumber(schema)
        members = {SKOPS_SCHEMA: json.dumps(canonical, indent=2).encode()}
        for name in src.namelist():
            if name != SKOPS_SCHEMA:
                if name not in files:
                    raise ModelFormatError(f"skops file holds {name}, which its schema never names")
                members[files[name]] = src.read(name)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_STORED) as dst:
        for name in sorted(members):
            dst.writestr(zipfile.ZipInfo(name, date_time=ZIP_EPOCH), members[name])
    return buffer.getvalue()


def read_metadata(path: Path) -> dict[str, Any]:
    """The metadata of a model folder.

    Raises:
        ModelFormatError: no metadata, invalid JSON, or another format.
    """
    file = Path(path) / METADATA
    if not file.exists():
        raise ModelFormatError(f"{path}: not a fraud model folder ({METADATA} missing)")
    try:
        meta = json.loads(file.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ModelFormatError(f"{file}: not valid JSON ({exc.msg})") from None
    if not isinstance(meta, dict):
        raise ModelFormatError(f"{file}: not a JSON object")
    if meta.get("format") != FORMAT:
        raise ModelFormatError(f"{file}: format {meta.get('format')!r} is not {FORMAT!r}")
    return meta


def read_sklearn(path: Path, name: str) -> Any:
    """Load ``<name>.skops`` from a model folder, trusting only :data:`TRUSTED_TYPES` beyond skops' defaults.

    Raises:
        ModelFormatError: the file is missing or holds a type outside the allow-list.
    """
    import skops.io as sio

    file = Path(path) / f"{name}.skops"
    if not file.exists():
        raise ModelFormatError(f"{file}: missing")
    untrusted = sio.get_untrusted_types(file=file)
    unknown = sorted(set(untrusted) - TRUSTED_TYPES)
    if unknown:
        raise ModelFormatError(f"{file}: refuses to load untrusted type(s) {', '.join(unknown)}")
    return sio.load(file, trusted=untrusted)
