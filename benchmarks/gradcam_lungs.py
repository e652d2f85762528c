"""Where the diagnosis model's Grad-CAM heat lies on the built-in radiographs: inside the lungs or outside.

Each test-split image gets its own lung mask rebuilt from the generator's geometry (``pipelines/synth/dicom.py``):
the raw DICOM's PatientID is the IIN, whose serial digits are the patient index, so the image stream
``default_rng([seed, index, 1])`` replays the encoding draws and the patient's shape draws (width, scale, shift,
rotation, heart, domes). Stored images are matched to their raw DICOM by pixel hash (de-identification replaced the
UIDs), and the replay is checked against the file (PixelSpacing from the field of view, modality).

Printed, for positives and negatives separately:

- heat share inside the lungs (sum of the map inside / sum of the map) for the service's Grad-CAM as served
  (``SaliencyExplainer``, scaled by its peak) and with MONAI's default normalizer (which maps the largest value
  to 0: what the service served before the fix), for upright
  Grad-CAM at other layers, for an occlusion map, and for the best a map of that resolution can do (the lung mask
  itself pooled to the layer's grid and upsampled the way MONAI does);
- the lung area share (what heat spread evenly would give) and the heat share in an 8-px frame at the border;
- AUROC of intensity summaries (raw image min/max, preprocessed means inside and outside the lungs);
- occlusion: AUROC and mean probability with the lungs, or everything outside them, replaced by the mean negative
  image (after the training preprocessing).

    .venv/bin/python benchmarks/gradcam_lungs.py                 # image model, test split (~1 min on 2 cores)
    .venv/bin/python benchmarks/gradcam_lungs.py --model models/diagnosis/train/fused
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import math
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pydicom
import torch
import torch.nn.functional as F
import yaml
from monai.visualize.class_activation_maps import GradCAM
from sklearn.metrics import roc_auc_score
from torch import nn

from pipelines.imaging.dicom import normalize_pixels, read_dicom, resample
from pipelines.modeling.data import preprocess_image
from pipelines.modeling.engine import load_model
from pipelines.service.gradcam import SaliencyExplainer, _LogitAsClass
from pipelines.synth.dicom import _RESCALES, _ellipse

REPO = Path(__file__).resolve().parents[1]
# Grad-CAM targets besides the service's one: the full last feature map (all 121 channels, 4x4) and earlier,
# finer maps (8x8, 16x16) of the same network.
EXTRA_LAYERS = {
    "upright, service layer": "net.image_net.features.denseblock3.denselayer6.layers.conv2",
    "upright, norm5 (4x4, all channels)": "net.image_net.features.norm5",
    "upright, denseblock2 (8x8)": "net.image_net.features.denseblock2",
    "upright, denseblock1 (16x16)": "net.image_net.features.denseblock1",
}


def _geometry(seed: int, index: int) -> tuple[dict[str, float], float, str]:
    """Replay the image stream's draws up to the lung geometry; also the field of view and modality for a check."""
    rng = np.random.default_rng([seed, index, 1])
    # _build_dataset's encoding draws, in its order.
    is_dx = bool(rng.random() < 0.4)
    rng.random()  # MONOCHROME1
    rng.choice((12, 12, 14, 16))
    if not rng.random() < 0.65:
        rng.integers(len(_RESCALES))
    ap_view = not rng.random() < 0.75
    fov_mm = float(rng.uniform(350.0, 430.0))
    rng.integers(8 * 3600, 20 * 3600)
    rng.uniform(0.02, 0.12), rng.uniform(0.75, 0.97), rng.uniform(1.0, 1.1)
    # _chest_image's first draws: the patient's shape.
    g = {
        "width": rng.uniform(0.88, 1.06),
        "scale": rng.uniform(0.9, 1.04),
        "shift_x": rng.uniform(-0.05, 0.05),
        "shift_y": rng.uniform(-0.06, 0.04),
        "angle": math.radians(rng.uniform(-4.0, 4.0)),
    }
    heart = rng.uniform(0.85, 1.15) * (1.12 if ap_view else 1.0)
    if rng.random() < 0.08:
        heart *= 1.25
    g["heart"] = heart
    g["dome_right"], g["dome_left"] = rng.uniform(0.22, 0.34), rng.uniform(0.28, 0.40)
    return g, fov_mm, "DX" if is_dx else "CR"


def _lung_visible(g: dict[str, float], size: int) -> np.ndarray:
    """The generator's ``lung_visible`` (lung fields less mediastinum and heart) on a ``size`` grid, in [0, 1]."""
    f32 = np.float32
    c = ((np.arange(size, dtype=f32) + f32(0.5)) * f32(2.0 / size) - f32(1.0)).astype(f32)
    gx, gy = c[None, :], c[:, None]
    cos_a, sin_a = f32(math.cos(g["angle"]) / g["scale"]), f32(math.sin(g["angle"]) / g["scale"])
    x = cos_a * (gx - f32(g["shift_x"])) + sin_a * (gy - f32(g["shift_y"]))
    y = cos_a * (gy - f32(g["shift_y"])) - sin_a * (gx - f32(g["shift_x"]))
    w = g["width"]
    lung = np.zeros((size, size), dtype=f32)
    for cx, cy, rx, ry, dome in (
        (-0.34 * w, -0.14, 0.26 * w, 0.6, g["dome_right"]),
        (0.35 * w, -0.12, 0.25 * w, 0.63, g["dome_left"]),
    ):
        diaphragm = np.clip((f32(dome) + f32(1.1) * (x - f32(cx)) ** 2 - y) * f32(25.0), 0.0, 1.0)
        lung += _ellipse(x, y, cx, cy, rx, ry, 0.15) * diaphragm
    central = np.maximum(
        _ellipse(x, y, 0.0, -0.3, 0.13, 0.75, 0.3),
        _ellipse(x, y, 0.1 * w, 0.2, 0.34 * w * g["heart"], 0.23 * g["heart"], 0.3),
    )
    out: np.ndarray = lung * (f32(1.0) - f32(0.9) * central)
    return out


def _raw_headers(raw: Path, ingest_size: int) -> dict[bytes, pydicom.Dataset]:
    """Stored ingest image bytes -> header of the raw radiograph it came from.

    De-identification replaces the UIDs and PatientID with keyed pseudonyms, so a stored image is found by its
    pixels: ingest's own ``resample(normalize_pixels(...))`` stored as float16 gives the same bytes.
    """
    out = {}
    for path in sorted((raw / "dicom").glob("*/*.dcm")):
        try:
            ds = read_dicom(path)
            image = resample(normalize_pixels(ds), ingest_size).astype(np.float16)
        except Exception:  # the cohort's defective extra files (no ImagingStudy lists them)
            continue
        out[hashlib.sha256(image.tobytes()).digest()] = ds
    return out


def _share(maps: np.ndarray, region: np.ndarray) -> np.ndarray:
    """Per image: share of the map's mass inside ``region`` (both ``(N, S, S)``)."""
    total = maps.sum(axis=(1, 2))
    inside = (maps * region).sum(axis=(1, 2))
    out: np.ndarray = np.where(total > 0, inside / np.maximum(total, 1e-12), np.nan)
    return out


def _ceiling(masks: np.ndarray, grid: int) -> np.ndarray:
    """The map a perfect lung detector gives at a ``grid`` x ``grid`` layer: mask pooled, upsampled, min-max scaled."""
    t = torch.from_numpy(masks).float()[:, None]
    coarse = F.adaptive_avg_pool2d(t, grid)
    up = F.interpolate(coarse, size=masks.shape[1:], mode="bilinear", align_corners=False)[:, 0]
    lo = up.amin(dim=(1, 2), keepdim=True)
    hi = up.amax(dim=(1, 2), keepdim=True)
    out: np.ndarray = ((up - lo) / (hi - lo).clamp_min(1e-12)).numpy()
    return out


class _NegatedLogit(nn.Module):
    """The evidence against pneumonia (minus the logit) as a one-class score: Grad-CAM of the 'normal' answer."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, image: torch.Tensor, ehr: torch.Tensor | None = None) -> torch.Tensor:
        logits: torch.Tensor = self.net(image, ehr)
        return -logits.reshape(-1, 1)


def _upright(x: torch.Tensor) -> torch.Tensor:
    """Min-max to [0, 1] per map with the largest evidence at 1 (MONAI's default maps the max to 0)."""
    lo = x.amin(dim=tuple(range(1, x.ndim)), keepdim=True)
    hi = x.amax(dim=tuple(range(1, x.ndim)), keepdim=True)
    return (x - lo) / (hi - lo).clamp_min(1e-12)


def _gradcam_maps(
    module: nn.Module,
    layer: str,
    images: torch.Tensor,
    ehr: torch.Tensor | None,
    postprocessing: Callable[[torch.Tensor], torch.Tensor] | None = _upright,
) -> np.ndarray:
    """Grad-CAM maps ``(N, S, S)`` in [0, 1], one image at a time as the service computes them (upright unless
    ``postprocessing`` is None: MONAI's default normalizer, which flips them)."""
    extra = {} if postprocessing is None else {"postprocessing": postprocessing}
    cam = GradCAM(nn_module=module, target_layers=layer, **extra)
    maps = []
    for i in range(len(images)):
        kwargs = {} if ehr is None else {"ehr": ehr[i : i + 1]}
        with torch.enable_grad():
            maps.append(np.nan_to_num(cam(images[i : i + 1], class_idx=0, **kwargs)[0, 0].detach().numpy()))
    return np.clip(np.stack(maps), 0.0, 1.0)


def main() -> None:
    """Measure and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dataset", type=Path, default=REPO / "data/processed/diagnosis/dataset.parquet")
    parser.add_argument("--model", type=Path, default=REPO / "models/diagnosis/train/image")
    parser.add_argument("--raw", type=Path, default=REPO / "data/raw")
    parser.add_argument("--params", type=Path, default=REPO / "params.yaml")
    parser.add_argument("--split", default="test")
    args = parser.parse_args()
    torch.set_num_threads(min(2, os.cpu_count() or 1))

    params = yaml.safe_load(args.params.read_text(encoding="utf-8"))
    seed, synth_size = int(params["synthesize"]["seed"]), int(params["synthesize"]["image_size"])
    frame = pd.read_parquet(args.dataset)
    frame = frame[frame["split"] == args.split].reset_index(drop=True)
    net, meta = load_model(args.model)
    size = meta.image_size
    labels = frame["label"].to_numpy().astype(int)
    pos, neg = labels == 1, labels == 0

    # Lung masks from the replayed geometry, at the synthetic size then area-pooled to the model's size.
    headers = _raw_headers(args.raw, int(params["ingest"]["image_size"]))
    stored = [np.load(REPO / p, allow_pickle=False) for p in frame["image_path"]]
    masks, mismatched = [], 0
    pool = synth_size // size
    for array in stored:
        ds = headers[hashlib.sha256(np.ascontiguousarray(array).tobytes()).digest()]
        index = int(str(ds.PatientID)[7:11])  # IIN serial = patient index % 10000 (pipelines/synth/patient.py)
        g, fov_mm, modality = _geometry(seed, index)
        if f"{fov_mm / synth_size:.4f}" != f"{float(ds.PixelSpacing[0]):.4f}" or modality != ds.Modality:
            mismatched += 1
        lv = _lung_visible(g, synth_size).reshape(size, pool, size, pool).mean(axis=(1, 3))
        masks.append(lv >= 0.5)
    lung = np.stack(masks).astype(np.float32)
    border = np.zeros((size, size), dtype=np.float32)
    edge = size // 8
    border[:edge], border[-edge:], border[:, :edge], border[:, -edge:] = 1, 1, 1, 1

    raw = [a.astype(np.float32) for a in stored]
    images = torch.stack([preprocess_image(a, size) for a in raw])
    ehr = None
    if meta.ehr_columns:
        ehr = torch.from_numpy(frame[list(meta.ehr_columns)].to_numpy(dtype=np.float32, copy=True))

    def probs(batch: torch.Tensor) -> np.ndarray:
        with torch.no_grad():
            out: np.ndarray = torch.sigmoid(net(batch, ehr)).numpy()
        return out

    p0 = probs(images)

    # Grad-CAM: the service's explainer, then other target layers of the same wrapper.
    explainer = SaliencyExplainer(net)
    rows: list[tuple[str, np.ndarray]] = []
    service = np.stack(
        [explainer.saliency(images[i], None if ehr is None else ehr[i : i + 1]) for i in range(len(frame))]
    )
    layer_name = explainer.target_layer.split(".")[-3]
    wrapped = _LogitAsClass(copy.deepcopy(net)).eval()
    # What the service served before the fix: MONAI's default normalizer, which maps each map's max to 0.
    before = _gradcam_maps(wrapped, explainer.target_layer, images, ehr, postprocessing=None)
    rows.append((f"MONAI default normalizer ({layer_name}, old)", before))
    rows.append((f"service Grad-CAM as served ({layer_name})", service))
    for module in wrapped.modules():  # hooks on norm5 meet the ReLU after it: no in-place ops on hooked outputs
        if isinstance(module, torch.nn.ReLU):
            module.inplace = False
    for label, layer in EXTRA_LAYERS.items():
        rows.append((f"Grad-CAM {label}", _gradcam_maps(wrapped, layer, images, ehr)))
    negated = _NegatedLogit(wrapped.net).eval()
    rows.append(("upright Grad-CAM of minus the logit", _gradcam_maps(negated, explainer.target_layer, images, ehr)))
    for grid in (4, 8, 16):
        rows.append((f"ceiling: lung mask at {grid}x{grid}", _ceiling(lung, grid)))

    print(
        f"{args.split} split: {len(frame)} images ({pos.sum()} positive), model {args.model.name} "
        f"({meta.network}, {size} px), AUROC {roc_auc_score(labels, p0):.3f}; "
        f"geometry replay mismatches: {mismatched}"
    )
    area = lung.mean(axis=(1, 2))
    print(
        f"lung area share: {area[pos].mean():.3f} pos / {area[neg].mean():.3f} neg; border frame {edge} px: "
        f"{border.mean():.3f} of the image\n"
    )
    print(f"{'heat share inside the lungs':<44} {'pos':>6} {'neg':>6}   {'border pos':>10} {'neg':>6}")
    for name, maps in rows:
        s, b = _share(maps, lung), _share(maps, np.broadcast_to(border, maps.shape))
        print(
            f"{name:<44} {np.nanmean(s[pos]):6.3f} {np.nanmean(s[neg]):6.3f}   "
            f"{np.nanmean(b[pos]):10.3f} {np.nanmean(b[neg]):6.3f}"
        )
    for name, maps in (("with MONAI's default normalizer (old)", before), ("as served", service)):
        peak = maps.reshape(len(frame), -1).argmax(axis=1)
        in_lung = lung.reshape(len(frame), -1)[np.arange(len(frame)), peak]
        print(
            f"service map {name}: peak pixel inside the lungs in {in_lung[pos].mean():.3f} of positives, "
            f"{in_lung[neg].mean():.3f} of negatives"
        )

    cells = service.reshape(len(frame), 4, size // 4, 4, size // 4).mean(axis=(2, 4))
    lung_cells = lung.reshape(len(frame), 4, size // 4, 4, size // 4).mean(axis=(2, 4))
    old_cells = before.reshape(len(frame), 4, size // 4, 4, size // 4).mean(axis=(2, 4))
    print("mean heat per 16-px cell, positives: old (MONAI default) | as served | lung share of the cell")
    for r in range(4):
        old = " ".join(f"{v:4.2f}" for v in old_cells[pos].mean(axis=0)[r])
        served = " ".join(f"{v:4.2f}" for v in cells[pos].mean(axis=0)[r])
        print(f"  {old} | {served} | {' '.join(f'{v:4.2f}' for v in lung_cells.mean(axis=0)[r])}")

    # Occlusion sensitivity: the probability drop when one 8-px patch is replaced by the mean negative image.
    template = torch.from_numpy(images[neg, 0].numpy().mean(axis=0))
    patch = 8
    n_side = size // patch
    drops = np.zeros((len(frame), n_side, n_side), dtype=np.float32)
    for r in range(n_side):
        for c in range(n_side):
            batch = images.clone()
            sl = (slice(r * patch, (r + 1) * patch), slice(c * patch, (c + 1) * patch))
            batch[:, 0, sl[0], sl[1]] = template[sl]
            drops[:, r, c] = p0 - probs(batch)
    heat = np.clip(drops, 0.0, None)
    lung_patch = lung.reshape(len(frame), n_side, patch, n_side, patch).mean(axis=(2, 4))
    occ = _share(heat, lung_patch)
    best = _share(lung_patch, lung_patch)
    print(
        f"occlusion map ({patch}-px patches), share of the drop in the lungs: {np.nanmean(occ[pos]):.3f} pos / "
        f"{np.nanmean(occ[neg]):.3f} neg (ceiling at this grid {np.nanmean(best):.3f}, area {lung_patch.mean():.3f})"
    )

    # Label-correlated intensity outside vs inside the lungs.
    x = images[:, 0].numpy()
    outside = 1.0 - lung
    inside_mean = (x * lung).sum(axis=(1, 2)) / lung.sum(axis=(1, 2))
    outside_mean = (x * outside).sum(axis=(1, 2)) / outside.sum(axis=(1, 2))
    diff = x[pos].mean(axis=0) - x[neg].mean(axis=0)
    always_in, always_out = lung.min(axis=0) > 0, lung.max(axis=0) == 0
    print("\nAUROC of intensity summaries (label vs value)")
    for name, value in (
        ("raw image max (before min-max)", np.array([a.max() for a in raw])),
        ("raw image min (before min-max)", np.array([a.min() for a in raw])),
        ("preprocessed mean, whole image", x.mean(axis=(1, 2))),
        ("preprocessed mean inside the lungs", inside_mean),
        ("preprocessed mean outside the lungs", outside_mean),
    ):
        print(f"  {name:<42} {roc_auc_score(labels, value):.3f}")
    # The same two numbers with the labels shuffled: how large a difference chance alone gives.
    shuffle = np.random.default_rng(0)
    null = []
    for _ in range(200):
        perm = shuffle.permutation(labels) == 1
        d = x[perm].mean(axis=0) - x[~perm].mean(axis=0)
        null.append((abs(d[always_in].mean()), abs(d[always_out].mean())))
    q95 = np.quantile(np.array(null), 0.95, axis=0)
    print(
        f"mean(pos) - mean(neg) per pixel: {diff[always_in].mean():+.4f} where every image has lung "
        f"({always_in.sum()} px), {diff[always_out].mean():+.4f} where none has ({always_out.sum()} px); "
        f"shuffled labels, 95th percentile of |.|: {q95[0]:.4f} / {q95[1]:.4f}"
    )

    # Occlusion: replace a region with the mean negative image.
    m = torch.from_numpy(lung)[:, None]
    print("\nocclusion (region replaced by the mean negative image)   AUROC  mean p pos  mean p neg")
    for name, batch in (
        ("none", images),
        ("lungs replaced", images * (1 - m) + template * m),
        ("outside the lungs replaced", images * m + template * (1 - m)),
    ):
        p = probs(batch)
        print(f"  {name:<54} {roc_auc_score(labels, p):.3f}  {p[pos].mean():10.3f}  {p[neg].mean():10.3f}")


if __name__ == "__main__":
    main()
