"""Image out-of-distribution score: the Mahalanobis distance of a study's embedding from the training images.

The header gate (:mod:`pipelines.imaging.domain`) believes what a DICOM header says. When the header lies (a CT
slice, an ultrasound frame or a photograph sent with a chest-radiograph header), the pixels still look nothing like
the training radiographs, and the network's embedding shows it. Following Lee et al. (2018, "A simple unified
framework for detecting out-of-distribution samples and adversarial attacks"), the score is the squared
Mahalanobis distance of the embedding (the input of the image branch's last linear layer) to the nearest
class mean of the training images, under one covariance shared by the classes. The covariance is shrunk
(Ledoit-Wolf) so that it stays invertible when there are fewer training images than embedding dimensions.

**The threshold** is chosen on two sets the training never saw, by a stated rule (:func:`choose_threshold`):

- ``t_in``, from the validation images: the conformal quantile that refuses at most ``max_false_refusal / 2``
  of exchangeable in-domain images (with a small validation set, this is the largest validation score);
- ``t_out``, from the calibration images of other modalities: the largest of their scores that at least
  ``min_catch`` of them reach (at most ``1 - min_catch`` of them score lower).

When ``t_out > t_in`` the threshold is their geometric mean (squared distances spread multiplicatively), which
leaves a margin on both sides; otherwise it is ``t_in`` (false refusals of real patients' studies are bounded
first) and the summary says the catch target was not met on the calibration images. The images used to report
catches must be others than these calibration images (see ``benchmarks/ood_catches.py``).
"""

from __future__ import annotations

import io
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from pipelines.errors import InputError

OOD_VERSION = 1
METHOD = "mahalanobis-tied-ledoit-wolf"


def ood_file(mode: str) -> str:
    """The file name of a diagnosis mode's image OOD score in the evaluation folder (``eval/``)."""
    return f"image_ood_{mode}.npz"


@dataclass(frozen=True)
class ThresholdChoice:
    """The threshold and the two quantiles it was chosen from (see the module docstring)."""

    threshold: float
    t_in: float
    t_out: float | None
    catch_target_met: bool | None


def _ledoit_wolf(centered: np.ndarray) -> tuple[np.ndarray, float]:
    """Ledoit-Wolf shrunk covariance of already-centred rows (the closed form of Ledoit & Wolf, 2004)."""
    n, d = centered.shape
    sample = centered.T @ centered / n
    mu = float(np.trace(sample)) / d
    delta = sample - mu * np.eye(d)
    d2 = float((delta**2).sum()) / d
    squares = centered**2
    b2_full = float(((squares.T @ squares) / n - sample**2).sum()) / (d * n)
    b2 = min(b2_full, d2)
    shrinkage = 0.0 if d2 == 0 else b2 / d2
    return (1.0 - shrinkage) * sample + shrinkage * mu * np.eye(d), shrinkage


def choose_threshold(
    val_scores: npt.ArrayLike,
    calibration_scores: npt.ArrayLike | None,
    *,
    max_false_refusal: float,
    min_catch: float,
) -> ThresholdChoice:
    """The refusal threshold from validation (in-domain) scores and calibration (other-modality) scores.

    Args:
        val_scores: scores of the validation images (in domain, not used to fit the score).
        calibration_scores: scores of other-modality images used only here; None or empty: ``t_in`` alone.
        max_false_refusal: the share of in-domain images that may be refused (``t_in`` targets half of it).
        min_catch: the share of other-modality images that should score above the threshold.

    Raises:
        InputError: there are no validation scores.
    """
    val = np.sort(np.asarray(val_scores, dtype=np.float64))
    if val.size == 0:
        raise InputError("the image OOD threshold needs validation images")
    alpha = max_false_refusal / 2
    rank = math.ceil((val.size + 1) * (1 - alpha))  # conformal: 1-based rank of the quantile
    t_in = float(val[min(rank, val.size) - 1])
    cal = np.asarray(calibration_scores if calibration_scores is not None else [], dtype=np.float64)
    if cal.size == 0:
        return ThresholdChoice(t_in, t_in, None, None)
    # "lower": a calibration score, with at most a (1 - min_catch) share of the scores below it.
    t_out = float(np.quantile(cal, 1 - min_catch, method="lower"))
    threshold = float(math.sqrt(t_in * t_out)) if t_out > t_in > 0 else t_in
    return ThresholdChoice(threshold, t_in, t_out, bool((cal > threshold).mean() >= min_catch))


@dataclass(frozen=True)
class ImageOOD:
    """A fitted image OOD score: class means, the shared precision matrix and the refusal threshold.

    Attributes:
        means: ``(n_classes, d)`` training-class means of the embedding.
        precision: ``(d, d)`` inverse of the shrunk shared covariance.
        threshold: scores above it are refused.
        summary: how it was fitted and chosen (counts on every set; JSON-serialisable, no study ids).
    """

    means: np.ndarray
    precision: np.ndarray
    threshold: float
    summary: dict[str, Any] = field(default_factory=dict)

    @property
    def dim(self) -> int:
        """The embedding width the score expects."""
        return int(self.precision.shape[0])

    def scores(self, embeddings: npt.ArrayLike) -> np.ndarray:
        """Squared Mahalanobis distance of each row to the nearest class mean, shape ``(n,)``.

        Raises:
            InputError: the embeddings are not ``(n, dim)``.
        """
        x = np.asarray(embeddings, dtype=np.float64)
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise InputError(f"image OOD score: embeddings of shape {x.shape}, expected (n, {self.dim})")
        per_class = [np.einsum("ij,jk,ik->i", x - m, self.precision, x - m) for m in self.means]
        nearest: np.ndarray = np.min(np.stack(per_class), axis=0)
        return nearest

    def refuses(self, embeddings: npt.ArrayLike) -> np.ndarray:
        """True for each row whose score is above the threshold."""
        return self.scores(embeddings) > self.threshold

    def to_bytes(self) -> bytes:
        """The ``.npz`` bytes (arrays, and the threshold and summary as JSON; loadable without pickle)."""
        buffer = io.BytesIO()
        header = {"version": OOD_VERSION, "method": METHOD, "threshold": self.threshold, "summary": self.summary}
        np.savez(buffer, means=self.means, precision=self.precision, header=np.array(json.dumps(header)))
        return buffer.getvalue()

    def save(self, path: Path) -> None:
        """Write :meth:`to_bytes` to ``path``."""
        Path(path).write_bytes(self.to_bytes())

    @classmethod
    def load(cls, path: Path) -> ImageOOD:
        """Read a file :meth:`save` wrote.

        Raises:
            InputError: the file is missing, not an ``.npz`` of this format, or inconsistent.
        """
        try:
            with np.load(Path(path), allow_pickle=False) as data:
                means = np.asarray(data["means"], dtype=np.float64)
                precision = np.asarray(data["precision"], dtype=np.float64)
                header = json.loads(str(data["header"]))
        except (OSError, ValueError, KeyError) as exc:
            raise InputError(f"{path}: not an image OOD file ({type(exc).__name__})") from None
        if header.get("version") != OOD_VERSION or header.get("method") != METHOD:
            raise InputError(f"{path}: image OOD format {header.get('method')} v{header.get('version')} is unknown")
        d = precision.shape[0] if precision.ndim == 2 else -1
        if precision.shape != (d, d) or means.ndim != 2 or means.shape[1] != d:
            raise InputError(f"{path}: image OOD arrays do not fit together ({means.shape}, {precision.shape})")
        return cls(means, precision, float(header["threshold"]), dict(header.get("summary", {})))


def fit_ood(
    train: npt.ArrayLike,
    labels: npt.ArrayLike,
    val: npt.ArrayLike,
    calibration: npt.ArrayLike | None,
    *,
    max_false_refusal: float = 0.01,
    min_catch: float = 0.95,
    calibration_names: list[str] | None = None,
) -> ImageOOD:
    """Fit the score on training embeddings and choose its threshold (validation and calibration embeddings).

    Args:
        train: ``(n, d)`` embeddings of the training images.
        labels: their class labels (the class means are taken per label).
        val: validation embeddings (in domain).
        calibration: embeddings of other-modality images used to choose the threshold; None: none.
        max_false_refusal: see :func:`choose_threshold`.
        min_catch: see :func:`choose_threshold`.
        calibration_names: what the calibration images were (recorded in the summary).

    Raises:
        InputError: fewer than two training images, or shapes that do not agree.
    """
    x = np.asarray(train, dtype=np.float64)
    y = np.asarray(labels)
    if x.ndim != 2 or x.shape[0] < 2 or y.shape != (x.shape[0],):
        raise InputError(f"image OOD fit: needs (n >= 2, d) training embeddings with n labels, got {x.shape}")
    classes = np.unique(y)
    means = np.stack([x[y == c].mean(axis=0) for c in classes])
    centered = x - means[np.searchsorted(classes, y)]
    covariance, shrinkage = _ledoit_wolf(centered)
    precision = np.linalg.pinv(covariance, hermitian=True)
    unfitted = ImageOOD(means, precision, math.inf)
    s_val = unfitted.scores(val)
    others = np.asarray(calibration if calibration is not None else np.zeros((0, x.shape[1])), dtype=np.float64)
    s_cal = unfitted.scores(others) if others.shape[0] else np.zeros(0)
    choice = choose_threshold(s_val, s_cal, max_false_refusal=max_false_refusal, min_catch=min_catch)
    summary: dict[str, Any] = {
        "method": METHOD,
        "embedding_dim": int(x.shape[1]),
        "shrinkage": round(shrinkage, 6),
        "n_train": int(x.shape[0]),
        "max_false_refusal": max_false_refusal,
        "min_catch": min_catch,
        "t_in": choice.t_in,
        "t_out": choice.t_out,
        "threshold": choice.threshold,
        "val": {"n": int(s_val.size), "refused": int((s_val > choice.threshold).sum())},
        "calibration": {
            "n": int(s_cal.size),
            "caught": int((s_cal > choice.threshold).sum()),
            "catch_target_met": choice.catch_target_met,
            "images": sorted(calibration_names or []),
        },
    }
    return ImageOOD(means, precision, choice.threshold, summary)
