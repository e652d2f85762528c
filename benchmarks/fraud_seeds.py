"""The fraud model against both baselines on cohorts with other seeds: the table behind the README's sentence.

For each synthesize seed, in a temporary folder: generate the built-in cohort (``params.yaml``'s ``synthesize``
section with that seed; ``--patients`` to change its size), ingest it, build the fraud features, train the fraud
model and both baselines, and evaluate them on the test months, all through the same stage functions that
``dvc repro`` runs (``pipelines.stages``) with the repository's ``params.yaml``. It prints, per seed, PR-AUC with
its bootstrap CI for the model, gbm and rules, and which of model and gbm is ahead; then one summary line.

Not named ``bench_*`` on purpose: ``make bench`` runs every ``bench_*.py``, and this takes minutes per seed.

    python benchmarks/fraud_seeds.py                                   # seeds 1-4, 4,000 patients each
    python benchmarks/fraud_seeds.py --seeds 11,12 --patients 2000     # other seeds, smaller cohorts
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
DEFAULT_SEEDS = "1,2,3,4"

log = logging.getLogger("fraud_seeds")


def run_seed(seed: int, patients: int | None, imaging_rate: float | None, n_boot: int | None, work: Path) -> dict:
    """Generate, ingest, featurise, train and evaluate one cohort; return its ``metrics.json``."""
    from pipelines.config import (
        EvaluateParams,
        FeaturesParams,
        IngestParams,
        SynthesizeParams,
        TrainParams,
        load_section,
    )
    from pipelines.stages import ingest, synthesize
    from pipelines.stages.evaluate import fraud as evaluate_fraud
    from pipelines.stages.features import fraud as features_fraud
    from pipelines.stages.train import fraud as train_fraud

    params_file = REPO / "params.yaml"
    synth = load_section(SynthesizeParams, "synthesize", params_file)
    overrides: dict[str, Any] = {"seed": seed}
    if patients:
        overrides["n_patients"] = patients
    if imaging_rate is not None:
        overrides["imaging_rate"] = imaging_rate
    synth = synth.model_copy(update=overrides)
    feats = load_section(FeaturesParams, "features", params_file).fraud
    train_params = load_section(TrainParams, "train", params_file).fraud
    eval_params = load_section(EvaluateParams, "evaluate", params_file)
    if n_boot:
        eval_params = eval_params.model_copy(update={"n_boot": n_boot})

    raw, interim = work / "raw", work / "interim"
    processed, models = work / "processed" / "fraud", work / "models" / "fraud"
    steps: list[tuple[str, float]] = []

    def step(name: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        out = fn(*args, **kwargs)
        steps.append((name, time.perf_counter() - start))
        return out

    step("synthesize", synthesize.run, synth, raw, progress=False)
    step(
        "ingest", ingest.run, load_section(IngestParams, "ingest", params_file), raw, interim, key=None, progress=False
    )
    step("features", features_fraud.run, feats, interim, processed)
    step("train", train_fraud.run, train_params, processed, models / "train")
    metrics = step(
        "evaluate",
        evaluate_fraud.run,
        eval_params,
        processed,
        models / "train",
        models / "eval",
        models / "metrics.json",
        raw=raw,
        tables=interim / "tables",
    )
    metrics["_steps_s"] = {name: round(s, 1) for name, s in steps}
    metrics["_patients"] = synth.n_patients
    return metrics


def _ci(metric: dict[str, Any]) -> str:
    return f"{metric['value']:.3f} [{metric['low']:.3f}, {metric['high']:.3f}]"


def main() -> None:
    """Run every seed and print the table."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", default=DEFAULT_SEEDS, help="synthesize seeds, comma-separated")
    parser.add_argument("--patients", type=int, help="patients per cohort (default: params.yaml's, 4,000)")
    parser.add_argument("--imaging-rate", type=float, help="share of imaged patients (default: params.yaml's)")
    parser.add_argument("--n-boot", type=int, help="bootstrap resamples for the CIs (default: params.yaml's)")
    parser.add_argument("--keep", type=Path, help="keep each seed's folders under this path (default: temporary)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s", stream=sys.stderr)
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    os.environ.setdefault("OMP_NUM_THREADS", "1")

    rows = []
    with tempfile.TemporaryDirectory(prefix="shipa-fraud-seeds-") as tmp:
        # A store of its own: these runs are not the pipeline's and must not land in the repository's mlflow.db.
        os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{Path(tmp) / 'mlflow.db'}"
        os.environ.pop("SHIPA_PIPELINE_RUN_ID", None)
        for seed in (int(s) for s in args.seeds.split(",")):
            work = (args.keep or Path(tmp)) / f"seed-{seed}"
            start = time.perf_counter()
            metrics = run_seed(seed, args.patients, args.imaging_rate, args.n_boot, work)
            log.info("seed %d: %.0f s %s", seed, time.perf_counter() - start, metrics["_steps_s"])
            rows.append((seed, metrics))
            auprc = {name: comp["auprc"] for name, comp in metrics["comparison"].items()}
            print(json.dumps({"seed": seed, "auprc": auprc, "steps_s": metrics["_steps_s"]}), flush=True)

    patients = rows[0][1]["_patients"] if rows else 0
    print(f"\nfraud model vs baselines on other seeds ({patients:,} patients each; test months; PR-AUC, 95 % CI)")
    print(f"{'seed':>6} {'test claims':>11} {'model':>24} {'gbm':>24} {'rules':>24}  ahead (model - gbm)")
    model_auprc, gbm_auprc, ahead = [], [], 0
    for seed, m in rows:
        comp = {name: comp["auprc"] for name, comp in m["comparison"].items()}
        diff = comp["model"]["value"] - comp["gbm"]["value"]
        ahead += diff > 0
        model_auprc.append(comp["model"]["value"])
        gbm_auprc.append(comp["gbm"]["value"])
        who = "model" if diff > 0 else "gbm"
        n = m.get("n", "")
        print(
            f"{seed:>6} {n!s:>11} {_ci(comp['model']):>24} {_ci(comp['gbm']):>24} {_ci(comp['rules']):>24}  "
            f"{who} ({diff:+.3f})"
        )
    if rows:
        print(
            f"model PR-AUC {min(model_auprc):.2f}-{max(model_auprc):.2f} against gbm's "
            f"{min(gbm_auprc):.2f}-{max(gbm_auprc):.2f}; model ahead on {ahead} of {len(rows)} seeds"
        )


if __name__ == "__main__":
    main()
