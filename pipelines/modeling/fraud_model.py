"""The claims fraud model: a supervised tabular network and an anomaly score, calibrated together.

- Supervised part: an MLP over the standardised numeric features and learned embeddings of the categorical
  codes (tariff code, provider kind, region, claim type, diagnosis, care setting), trained on audit labels
  with a class-weighted (or focal) loss, because confirmed fraud is about 1-3 % of claims. The network is
  monotone in the features with a risk direction (:data:`pipelines.features.fraud.RISK_DIRECTION`), so
  evidence stronger than any seen in training still raises the score.
- Unsupervised part: an isolation forest on the numeric features of all training claims (labels unused), so
  claims unlike anything seen rise even when no audit has confirmed such a pattern yet.
- Audit labels are positive-unlabelled, and audits are biased: they find some patterns often, others rarely,
  and only at the providers they visit. A claim no audit confirmed is therefore not known to be clean, least of
  all an unusual one. Each unlabelled training claim counts as a negative with weight
  ``exp(-d * max(0, anomaly_z - m))`` (``unlabelled_discount`` ``d``): ordinary claims fully, claims the forest
  finds unusual less and less, so the network is not taught that fraud nobody audited is clean, and the patterns
  it did learn still carry over to them.
- Final score: ``sigmoid(a * mlp_logit + b * max(0, anomaly_z - m) + c)``. The anomaly term only lifts claims
  more than ``m`` standard deviations (``anomaly_margin``) more anomalous than the training mean, with a fixed
  weight ``b`` (``anomaly_weight``): it is set, not fitted, because audit labels only reward the patterns
  audits already find, and fitted on them the weight of a novelty detector is meaningless. ``a`` and ``c`` are
  a Platt recalibration on the validation claims with the anomaly term as an offset, so the score stays a
  calibrated probability of confirmed fraud.

Training is deterministic for a seed (on CPU; CUDA also needs ``CUBLAS_WORKSPACE_CONFIG`` set by the caller).
The model saves to a folder (weights, JSON metadata, the isolation forest) that :func:`load_fraud_model`
reads.
"""

from __future__ import annotations

import copy
import itertools
import logging
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, cast

import numpy as np
import numpy.typing as npt
import polars as pl
import torch
from scipy.optimize import minimize
from sklearn.ensemble import IsolationForest
from torch import nn

from pipelines.evaluation.metrics import average_precision
from pipelines.features.fraud import RISK_DIRECTION
from pipelines.modeling.forest import FlatForest
from pipelines.modeling.fraud_baselines import (
    GBM_KIND,
    RULES_KIND,
    GbmBaseline,
    RulesBaseline,
    median_reference,
)
from pipelines.modeling.fraud_encoding import TabularEncoder
from pipelines.modeling.fraud_store import (
    FORMAT,
    ModelFormatError,
    read_metadata,
    read_sklearn,
    write_model_dir,
)

log = logging.getLogger(__name__)

KIND = "mlp_iforest"


@dataclass(frozen=True)
class FraudModelConfig:
    """Hyperparameters of :func:`train_fraud_model` (mirrors a ``train`` params section).

    Attributes:
        hidden: widths of the MLP's hidden layers.
        embedding_dim: largest embedding width of a categorical feature (smaller for small vocabularies).
        dropout: dropout after each hidden layer.
        epochs: most training epochs.
        batch_size: claims per step.
        lr: AdamW learning rate.
        weight_decay: AdamW weight decay.
        pos_weight: weight of a positive claim in the loss; None means sqrt(negatives / positives).
        focal_gamma: focal-loss exponent (0: plain weighted cross-entropy).
        patience: epochs without a better validation average precision before stopping; 0 trains all
            ``epochs``. Off by default: audit labels are positive-unlabelled (fraud no audit found counts as
            negative), so validation AP against them falls as the model gets better at finding unlabelled
            fraud.
        iforest_trees: trees of the isolation forest.
        iforest_max_samples: claims per isolation tree.
        anomaly_weight: weight ``b`` of the anomaly term in the final log-odds.
        anomaly_margin: anomaly z-score above which the anomaly term starts to count, and above which an
            unlabelled training claim starts to count less as a negative.
        unlabelled_discount: how fast an unlabelled training claim's weight as a negative falls with its
            anomaly z-score above ``anomaly_margin`` (``exp(-d * excess)``); 0 makes every unlabelled claim a
            full negative.
        min_category_count: rarer categories map to "unknown".
        monotone: constrain the network to be monotone in the signed features (see :class:`FraudNet`).
    """

    hidden: tuple[int, ...] = (64, 32)
    embedding_dim: int = 4
    dropout: float = 0.1
    epochs: int = 30
    batch_size: int = 512
    lr: float = 3e-3
    weight_decay: float = 1e-4
    pos_weight: float | None = None
    focal_gamma: float = 0.0
    patience: int = 0
    iforest_trees: int = 200
    iforest_max_samples: int = 2048
    anomaly_weight: float = 0.5
    anomaly_margin: float = 2.0
    unlabelled_discount: float = 3.0
    min_category_count: int = 5
    monotone: bool = True

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> FraudModelConfig:
        """Build from a plain mapping (e.g. a params section's ``model_dump()``); lists become tuples."""
        values = dict(data)
        if "hidden" in values:
            values["hidden"] = tuple(int(h) for h in values["hidden"])
        return cls(**values)


class FraudNet(nn.Module):
    """MLP over numeric features and categorical embeddings; returns one logit per claim.

    With ``directions``, the logit is monotone in every signed numeric input (non-decreasing for +1,
    non-increasing for -1): those inputs enter the first layer through non-negative weights after being
    multiplied by their sign, every later layer has non-negative weights, and each hidden layer mixes convex
    (ReLU) and concave (``-ReLU(-x)``) units, so the network can still bend both ways (Runje and
    Shankaranarayana, 2023, "Constrained monotonic neural networks"). Unsigned inputs and embeddings enter the
    first layer freely.

    Args:
        cardinalities: size of each categorical vocabulary (including "unknown").
        n_dense: numeric input columns.
        hidden: hidden layer widths.
        embedding_dim: largest embedding width.
        dropout: dropout probability.
        directions: per numeric input +1, -1 or 0 (None: no constraint).
    """

    signs: torch.Tensor  # a registered buffer: declared so that attribute reads are typed, not Tensor | Module

    def __init__(
        self,
        cardinalities: Sequence[int],
        n_dense: int,
        hidden: Sequence[int],
        embedding_dim: int,
        dropout: float,
        directions: Sequence[int] | None = None,
    ) -> None:
        super().__init__()
        emb_dims = [max(1, min(embedding_dim, (n + 1) // 2)) for n in cardinalities]
        self.embeddings = nn.ModuleList(nn.Embedding(n, d) for n, d in zip(cardinalities, emb_dims, strict=True))
        signs = torch.tensor(list(directions) if directions is not None else [0] * n_dense, dtype=torch.float32)
        if signs.shape[0] != n_dense:
            raise ValueError(f"directions has {signs.shape[0]} values for {n_dense} numeric inputs")
        self.register_buffer("signs", signs)
        self.monotone = directions is not None
        n_mono = int((signs != 0).sum())
        n_free = n_dense - n_mono + sum(emb_dims)
        widths = [*hidden, 1]
        self.free_in = nn.Linear(n_free, widths[0])
        self.mono_in = nn.Parameter(torch.empty(widths[0], n_mono))
        nn.init.uniform_(self.mono_in, 0.0, 1.0 / math.sqrt(max(1, n_mono + n_free)))
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in itertools.pairwise(widths))
        self.dropout = nn.Dropout(dropout)

    def _weight(self, w: torch.Tensor) -> torch.Tensor:
        return w.abs() if self.monotone else w

    @staticmethod
    def _act(x: torch.Tensor) -> torch.Tensor:
        half = x.shape[1] // 2
        return torch.cat([torch.relu(x[:, half:]), -torch.relu(-x[:, :half])], dim=1)

    def forward(self, codes: torch.Tensor, dense: torch.Tensor) -> torch.Tensor:
        """Logits of shape (N,) from category indices (N, C) and numeric features (N, F)."""
        mono = self.signs != 0
        free = torch.cat([dense[:, ~mono], *(emb(codes[:, j]) for j, emb in enumerate(self.embeddings))], dim=1)
        x: torch.Tensor = self.free_in(free)
        if self.mono_in.shape[1]:
            x = x + nn.functional.linear(dense[:, mono] * self.signs[mono], self._weight(self.mono_in))
        for module in self.layers:
            layer = cast(nn.Linear, module)  # __init__ fills self.layers with nn.Linear only
            x = self.dropout(self._act(x) if self.monotone else torch.relu(x))
            x = nn.functional.linear(x, self._weight(layer.weight), layer.bias)
        return x.squeeze(1)


@dataclass
class FraudModel:
    """A trained fraud model: encoder, network, isolation forest and the calibrated combination.

    Attributes:
        encoder: the fitted preprocessing.
        net: the supervised network (in eval mode).
        iforest: the isolation forest on the dense features.
        anomaly_mean: training mean of the raw anomaly score (``-score_samples``).
        anomaly_std: training standard deviation of the raw anomaly score.
        coef: (a, b, c) of ``a * mlp_logit + b * max(0, anomaly_z - margin) + c``.
        reference: median raw value of each numeric feature over training claims (occlusion baseline).
        config: the hyperparameters.
        info: training summary (epochs, best validation AP, counts, seed) saved in the metadata.
        device: where the network runs.
    """

    encoder: TabularEncoder
    net: FraudNet
    iforest: IsolationForest
    anomaly_mean: float
    anomaly_std: float
    coef: tuple[float, float, float]
    reference: dict[str, float]
    config: FraudModelConfig
    info: dict[str, Any] = field(default_factory=dict)
    device: str = "cpu"
    kind: str = KIND
    _flat: FlatForest | None = field(default=None, init=False, repr=False, compare=False)
    _net64: FraudNet | None = field(default=None, init=False, repr=False, compare=False)

    @property
    def flat_forest(self) -> FlatForest:
        """The isolation forest flattened for fast scoring of small batches (built once)."""
        if self._flat is None:
            self._flat = FlatForest(self.iforest)
        return self._flat

    @property
    def scoring_net(self) -> FraudNet:
        """The network that scores: on CPU a float64 copy (built once), else the trained one.

        A float32 matrix product can round differently with the number of rows in the batch (the BLAS picks its
        kernel by shape), so a claim scored alone by the service and the same claim in the day's batch could
        differ in the 7th digit. In float64 the difference is below 1e-12, which lets the service promise the
        worklist's score to 1e-9; the network is small, so the cost is negligible.
        """
        if self.device != "cpu":
            return self.net
        if self._net64 is None:
            self._net64 = copy.deepcopy(self.net).double().eval()
        return self._net64

    @property
    def feature_names(self) -> list[str]:
        """Input columns the model reads (numeric, then categorical)."""
        return [*self.encoder.numeric, *self.encoder.categorical]

    def parts(self, df: pl.DataFrame) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
        """The network logit and the standardised anomaly score of each record."""
        dense = self.encoder.dense(df)
        codes = self.encoder.codes(df)
        mlp = _predict_logits(self.scoring_net, codes, dense, self.device)
        raw = -self.flat_forest.score_samples(dense) if df.height else np.zeros(0)
        return mlp, (raw - self.anomaly_mean) / self.anomaly_std

    def logit(self, df: pl.DataFrame) -> npt.NDArray[np.float64]:
        """Final logit of each record."""
        mlp, anomaly = self.parts(df)
        a, b, c = self.coef
        return a * mlp + b * anomaly_term(anomaly, self.config.anomaly_margin) + c

    def logit_encoded(self, codes: npt.NDArray[np.int64], dense: npt.NDArray[np.float32]) -> npt.NDArray[np.float64]:
        """Final logit of rows already encoded (``encoder.codes`` and ``encoder.dense``): what :meth:`logit` gives
        the records they encode."""
        mlp = _predict_logits(self.scoring_net, codes, dense, self.device)
        raw = -self.flat_forest.score_samples(dense) if dense.shape[0] else np.zeros(0)
        a, b, c = self.coef
        return a * mlp + b * anomaly_term((raw - self.anomaly_mean) / self.anomaly_std, self.config.anomaly_margin) + c

    def predict(self, df: pl.DataFrame) -> npt.NDArray[np.float64]:
        """Calibrated probability of fraud of each record."""
        return _sigmoid(self.logit(df))

    def save(self, path: Path) -> Path:
        """Write the model folder (see :func:`save_fraud_model`)."""
        meta = {
            "format": FORMAT,
            "kind": self.kind,
            "feature_names": self.feature_names,
            "encoder": self.encoder.to_json(),
            "config": asdict(self.config),
            "combination": {
                "formula": "sigmoid(a * mlp_logit + b * max(0, anomaly_z - margin) + c)",
                "anomaly_z": "(-iforest.score_samples(x) - anomaly_mean) / anomaly_std",
                "margin": self.config.anomaly_margin,
                "a": self.coef[0],
                "b": self.coef[1],
                "c": self.coef[2],
                "anomaly_mean": self.anomaly_mean,
                "anomaly_std": self.anomaly_std,
            },
            "network": {
                "cardinalities": self.encoder.cardinalities,
                "n_dense": self.encoder.n_dense,
                "directions": self.net.signs.tolist() if self.net.monotone else None,
            },
            "reference": self.reference,
            "training": self.info,
        }
        state = {k: v.detach().cpu() for k, v in self.net.state_dict().items()}
        return write_model_dir(path, meta, torch_state=state, sklearn_objects={"iforest": self.iforest})


def _sigmoid(x: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    return 0.5 * (1.0 + np.tanh(0.5 * x))


def probability_of_logit(logits: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """The probability :meth:`FraudModel.predict` gives for these final log-odds."""
    return _sigmoid(np.asarray(logits, dtype=np.float64))


def _predict_logits(
    net: FraudNet,
    codes: npt.NDArray[np.int64],
    dense: npt.NDArray[np.float32],
    device: str,
    batch: int = 65536,
) -> npt.NDArray[np.float64]:
    net.eval()
    out = []
    with torch.inference_mode():
        for start in range(0, codes.shape[0], batch):
            c = torch.from_numpy(codes[start : start + batch]).to(device)
            d = torch.from_numpy(dense[start : start + batch]).to(device, dtype=net.free_in.weight.dtype)
            out.append(net(c, d).double().cpu().numpy())
    return np.concatenate(out).astype(np.float64) if out else np.zeros(0)


def _loss(
    logits: torch.Tensor, y: torch.Tensor, pos_weight: float, gamma: float, weight: torch.Tensor | None = None
) -> torch.Tensor:
    logits = logits.float()
    if gamma <= 0:
        return nn.functional.binary_cross_entropy_with_logits(
            logits, y, weight=weight, pos_weight=torch.tensor(pos_weight, device=logits.device)
        )
    p = torch.sigmoid(logits)
    log_p = nn.functional.logsigmoid(logits)
    log_q = nn.functional.logsigmoid(-logits)
    loss = -(pos_weight * y * (1 - p) ** gamma * log_p + (1 - y) * p**gamma * log_q)
    return (loss if weight is None else loss * weight).mean()


def unlabelled_weights(
    y: npt.NDArray[np.int64], anomaly_z: npt.NDArray[np.float64], margin: float, discount: float
) -> npt.NDArray[np.float32]:
    """Loss weight of each training claim: 1 for audit-confirmed fraud, ``exp(-discount * max(0, z - margin))``
    for an unlabelled claim (fraud no audit found looks unusual more often than a clean claim does)."""
    keep = np.exp(-discount * anomaly_term(anomaly_z, margin))
    return np.where(y == 1, 1.0, keep).astype(np.float32)


def _safe_ap(y: npt.NDArray[np.int64], s: npt.NDArray[np.float64]) -> float:
    if y.size == 0 or y.min() == y.max():
        return float("nan")
    return average_precision(y, s)


def _fit_network(
    enc: TabularEncoder,
    directions: list[int] | None,
    train: tuple[npt.NDArray[np.int64], npt.NDArray[np.float32], npt.NDArray[np.int64]],
    val: tuple[npt.NDArray[np.int64], npt.NDArray[np.float32], npt.NDArray[np.int64]],
    cfg: FraudModelConfig,
    seed: int,
    device: str,
    weights: npt.NDArray[np.float32] | None = None,
) -> tuple[FraudNet, dict[str, Any]]:
    codes, dense, y = train
    n_pos = int(y.sum())
    n_neg = int(y.shape[0] - n_pos)
    pos_weight = cfg.pos_weight if cfg.pos_weight is not None else math.sqrt(max(n_neg, 1) / max(n_pos, 1))
    torch.manual_seed(seed)
    net = FraudNet(enc.cardinalities, enc.n_dense, cfg.hidden, cfg.embedding_dim, cfg.dropout, directions)
    net = net.to(device)
    opt = torch.optim.AdamW(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    amp = device.startswith("cuda")
    gen = torch.Generator().manual_seed(seed)
    t_codes, t_dense = torch.from_numpy(codes).to(device), torch.from_numpy(dense).to(device)
    t_y = torch.from_numpy(y.astype(np.float32)).to(device)
    t_w = torch.from_numpy(weights).to(device) if weights is not None else None
    best_ap, best_epoch, best_state, stale = -1.0, -1, None, 0
    history = []
    for epoch in range(cfg.epochs):
        net.train()
        order = torch.randperm(y.shape[0], generator=gen).to(device)
        total = 0.0
        for start in range(0, y.shape[0], cfg.batch_size):
            idx = order[start : start + cfg.batch_size]
            with torch.autocast(device_type="cuda", dtype=torch.bfloat16, enabled=amp):
                logits = net(t_codes[idx], t_dense[idx])
            loss = _loss(logits, t_y[idx], pos_weight, cfg.focal_gamma, None if t_w is None else t_w[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += float(loss.detach()) * idx.shape[0]
        val_ap = _safe_ap(val[2], _predict_logits(net, val[0], val[1], device))
        history.append(
            {
                "epoch": epoch + 1,
                "loss": total / max(1, y.shape[0]),
                "val_ap": None if math.isnan(val_ap) else val_ap,
            }
        )
        if cfg.patience <= 0:
            continue
        score = val_ap if not math.isnan(val_ap) else -float(total)
        if score > best_ap + 1e-6:
            best_ap, best_epoch, stale = score, epoch + 1, 0
            best_state = {k: v.detach().clone() for k, v in net.state_dict().items()}
        else:
            stale += 1
            if stale >= cfg.patience:
                break
    if best_state is not None:
        net.load_state_dict(best_state)
    else:
        best_epoch = len(history)
    net.eval()
    info = {
        "pos_weight": pos_weight,
        "epochs_run": len(history),
        "best_epoch": best_epoch,
        "best_val_ap": best_ap if best_ap >= 0 else (history[-1]["val_ap"] if history else None),
        "history": history,
    }
    return net, info


def anomaly_term(anomaly_z: npt.NDArray[np.float64], margin: float) -> npt.NDArray[np.float64]:
    """The part of the anomaly z-score above ``margin`` (0 for ordinary claims)."""
    return np.maximum(anomaly_z - margin, 0.0)


def fit_combination(
    mlp: npt.NDArray[np.float64], offset: npt.NDArray[np.float64], y: npt.NDArray[np.int64]
) -> tuple[float, float]:
    """Platt recalibration: ``a`` (>= 0) and ``c`` of ``sigmoid(a * mlp + offset + c)`` on validation claims.

    A small ridge on ``a`` keeps it finite when validation separates perfectly. Without both classes in ``y``
    the network logit is kept as it is: ``(1, 0)``.
    """
    if y.size == 0 or y.min() == y.max():
        return 1.0, 0.0
    yf = y.astype(np.float64)
    prior = math.log(max(yf.mean(), 1e-6) / max(1 - yf.mean(), 1e-6))

    def nll(w: npt.NDArray[np.float64]) -> tuple[float, npt.NDArray[np.float64]]:
        z = w[0] * mlp + offset + w[1]
        g = _sigmoid(z) - yf
        # sum(log(1 + e^z) - y z), computed stably.
        value = float(np.sum(np.logaddexp(0.0, z) - yf * z) + 0.01 * w[0] ** 2)
        return value, np.array([g @ mlp + 0.02 * w[0], g.sum()])

    res = minimize(nll, x0=np.array([1.0, prior]), jac=True, method="L-BFGS-B", bounds=[(0.0, None), (None, None)])
    return float(res.x[0]), float(res.x[1])


def train_fraud_model(
    train_df: pl.DataFrame,
    y_train: npt.ArrayLike,
    val_df: pl.DataFrame,
    y_val: npt.ArrayLike,
    *,
    numeric: Sequence[str],
    categorical: Sequence[str],
    config: FraudModelConfig | None = None,
    directions: Mapping[str, int] | None = None,
    seed: int = 0,
    device: str = "cpu",
) -> FraudModel:
    """Train the fraud model on labelled claims.

    Args:
        train_df: training feature records (see :func:`pipelines.features.fraud.build_claim_features`).
        y_train: 0/1 audit label per training record.
        val_df: validation records (early stopping and the calibrated combination).
        y_val: 0/1 audit label per validation record.
        numeric: numeric feature columns (e.g. ``features.fraud.NUMERIC_FEATURES``).
        categorical: categorical feature columns (e.g. ``features.fraud.CATEGORICAL_FEATURES``).
        config: hyperparameters (defaults when None).
        directions: feature -> +1/-1/0 risk direction for the monotone network (default
            ``features.fraud.RISK_DIRECTION``; unknown features are unconstrained).
        seed: seed of initialisation, shuffling and the isolation forest.
        device: ``"cpu"`` or ``"cuda"`` (bfloat16 autocast on CUDA).

    Returns:
        The trained model (network in eval mode on ``device``).

    Raises:
        ValueError: labels do not match the records or are not 0/1.
    """
    cfg = config or FraudModelConfig()
    started = time.perf_counter()
    ytr = _labels(y_train, train_df.height, "y_train")
    yva = _labels(y_val, val_df.height, "y_val")
    enc = TabularEncoder.fit(train_df, numeric, categorical, min_count=cfg.min_category_count)
    tr = (enc.codes(train_df), enc.dense(train_df), ytr)
    va = (enc.codes(val_df), enc.dense(val_df), yva)
    signs = dense_directions(enc, RISK_DIRECTION if directions is None else directions) if cfg.monotone else None
    forest = IsolationForest(
        n_estimators=cfg.iforest_trees,
        max_samples=min(cfg.iforest_max_samples, max(2, train_df.height)),
        random_state=seed,
    ).fit(tr[1].astype(np.float64))
    raw = -forest.score_samples(tr[1].astype(np.float64))
    a_mean, a_std = float(raw.mean()), float(raw.std()) or 1.0
    weights = unlabelled_weights(ytr, (raw - a_mean) / a_std, cfg.anomaly_margin, cfg.unlabelled_discount)
    with torch.random.fork_rng(devices=[torch.device(device)] if device.startswith("cuda") else []):
        net, info = _fit_network(enc, signs, tr, va, cfg, seed, device, weights)
    val_mlp = _predict_logits(net, va[0], va[1], device)
    val_anom = (-forest.score_samples(va[1].astype(np.float64)) - a_mean) / a_std if val_df.height else np.zeros(0)
    b = cfg.anomaly_weight
    a, c = fit_combination(val_mlp, b * anomaly_term(val_anom, cfg.anomaly_margin), yva)
    coef = (a, b, c)
    reference = median_reference(train_df, enc.numeric)
    info.update(
        {
            "seed": seed,
            "device": device,
            "n_train": train_df.height,
            "n_train_positive": int(ytr.sum()),
            "n_val": val_df.height,
            "n_val_positive": int(yva.sum()),
            "unlabelled_weight_mean": float(weights[ytr == 0].mean()) if (ytr == 0).any() else None,
            "unlabelled_discounted": int(((ytr == 0) & (weights < 0.5)).sum()),
        }
    )  # no wall-clock time in info: it is saved with the model, and the same training must give the same bytes
    log.info(
        "fraud model: %d epochs (best %d, val AP %s), combination a=%.3f b=%.3f c=%.3f, %.1f s",
        info["epochs_run"],
        info["best_epoch"],
        None if info["best_val_ap"] is None else round(info["best_val_ap"], 4),
        *coef,
        time.perf_counter() - started,
    )
    return FraudModel(enc, net, forest, a_mean, a_std, coef, reference, cfg, info, device)


def dense_directions(enc: TabularEncoder, directions: Mapping[str, int]) -> list[int]:
    """Risk direction of each dense column (missing indicators are unconstrained)."""
    return [int(np.sign(directions.get(n, 0))) for n in enc.numeric] + [0] * len(enc.indicators)


def _labels(y: npt.ArrayLike, n: int, name: str) -> npt.NDArray[np.int64]:
    arr = np.asarray(y)
    if arr.ndim != 1 or arr.shape[0] != n:
        raise ValueError(f"{name} must be 1-D with {n} values, got shape {arr.shape}")
    if arr.size and not np.isin(arr, (0, 1)).all():
        raise ValueError(f"{name} must hold only 0 and 1")
    return arr.astype(np.int64)


def load_mlp_model(path: Path, meta: dict[str, Any], device: str = "cpu") -> FraudModel:
    """Rebuild a :class:`FraudModel` from its folder (called by :func:`load_fraud_model`)."""
    enc = TabularEncoder.from_json(meta["encoder"])
    cfg = FraudModelConfig.from_mapping(meta["config"])
    signs = meta["network"].get("directions")
    net = FraudNet(enc.cardinalities, enc.n_dense, cfg.hidden, cfg.embedding_dim, cfg.dropout, signs)
    state = torch.load(path / "network.pt", map_location="cpu", weights_only=True)
    net.load_state_dict(state)
    net.to(device).eval()
    comb = meta["combination"]
    forest = read_sklearn(path, "iforest")
    return FraudModel(
        enc,
        net,
        forest,
        float(comb["anomaly_mean"]),
        float(comb["anomaly_std"]),
        (float(comb["a"]), float(comb["b"]), float(comb["c"])),
        {k: float(v) for k, v in meta["reference"].items()},
        cfg,
        meta.get("training", {}),
        device,
    )


FraudScorer = FraudModel | RulesBaseline | GbmBaseline


def save_fraud_model(model: FraudScorer, path: Path) -> Path:
    """Save any fraud scorer (model or baseline) to a folder, atomically; returns ``path``."""
    return model.save(Path(path))


def load_fraud_model(path: Path, device: str = "cpu") -> FraudScorer:
    """Load a fraud model or baseline saved by :func:`save_fraud_model`.

    Args:
        path: the model folder.
        device: where the network runs (the MLP model only).

    Raises:
        ModelFormatError: not a model folder, another format or kind, or untrusted content.
    """
    path = Path(path)
    meta = read_metadata(path)
    kind = meta.get("kind")
    if kind == KIND:
        return load_mlp_model(path, meta, device)
    if kind == RULES_KIND:
        return RulesBaseline.from_metadata(meta)
    if kind == GBM_KIND:
        return GbmBaseline.load(path, meta)
    raise ModelFormatError(f"{path}: unknown fraud model kind {kind!r}")


def score(model: FraudScorer, features_df: pl.DataFrame) -> npt.NDArray[np.float64]:
    """Fraud score in [0, 1] of each claim feature record (the model's calibrated probability).

    Raises:
        FeatureSchemaError: a feature column the model needs is missing.
    """
    return model.predict(features_df)
