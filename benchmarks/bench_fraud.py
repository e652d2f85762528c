"""Benchmark: fraud feature building and scoring throughput, and peak memory at two sizes.

Each size runs in its own subprocess on the same generated claims (``make_tables``: a national-looking stream
of claims with items, encounters, observations, deaths and referrals, built directly as the normalised tables
so that generation does not dominate). In that subprocess:

- ``features``: :meth:`pipelines.features.fraud_engine.FraudHistory.features` (all feature groups) including
  building the history from the tables (:meth:`FraudHistory.from_tables`), claims/s;
- ``engine`` vs ``pandas``: nine of those features (clinical trace, death, near-duplicates, daily volume,
  unbundling, peer-median amount ratio) computed by a plain pandas groupby implementation, timed in the same run
  against the engine's time for all of its features (it computes every feature of a claim in one pass and has no
  way to compute nine alone, so the ratio, pandas seconds / engine seconds, is the pandas side's best case). The
  pandas side gets its tables already converted (``to_pandas()`` and the date columns, outside its timing), as a
  pandas shop would hold them. The nine columns must agree (``numpy.allclose``): the benchmark exits non-zero,
  naming the columns that differ, when they do not;
- ``request``: :meth:`FraudHistory.request_features` of one bare claim (its claims and items rows) against the
  history, as the service scores one Claim: median and p99 milliseconds over 2,000 claims after a warm-up; each
  record must equal the claim's batch record;
- ``score``: the trained fraud model's :func:`pipelines.modeling.fraud_model.score` on every claim, claims/s;
- ``explain``: reasons for 1,000 claims, claims/s;
- peak RSS of the subprocess.

Threads are pinned per subprocess: ``POLARS_MAX_THREADS`` (set before polars is imported), ``OMP_NUM_THREADS``
and the BLAS thread counts all get the same budget, and torch ``set_num_threads``. The feature engine (plain
Python) and pandas use one thread whatever the budget; scoring uses the budget. ``--threads 1,N`` (default: 1 and
the number of cores) gives the per-core ratio and the ratio at N threads.

    python benchmarks/bench_fraud.py                         # 20,000 and 100,000 claims, 1 and N threads
    python benchmarks/bench_fraud.py --sizes 5000,20000 --threads 1      # a quick check
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

# The thread budget must be in the environment before polars (and numpy's BLAS) is imported: the parent passes it
# to each subprocess; run directly without one, this process pins one thread.
_THREADS = os.environ.setdefault("POLARS_MAX_THREADS", "1")
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, _THREADS)

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import polars as pl  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from pipelines import codes  # noqa: E402
from pipelines.features import fraud as F  # noqa: E402
from pipelines.features.fraud_engine import FraudHistory  # noqa: E402
from pipelines.features.fraud_tables import FraudTables  # noqa: E402

START = dt.date(2023, 1, 1)
DAYS = 730
SUBSET = (
    "has_encounter",
    "encounter_observations",
    "days_after_death",
    "dup_prior_same_service",
    "dup_min_days",
    "provider_day_services",
    "package_unbundled",
    "unbundling_excess_kzt",
    "amount_ratio_dx",
)


# --- input
# ----------------------------------------------------------------------------------------------------------


def _ids(prefix: str, n: int) -> list[str]:
    return [f"{prefix}{i:028x}" for i in range(n)]


def make_tables(n_claims: int, seed: int = 0) -> FraudTables:
    """Normalised fraud tables with ``n_claims`` claims: ~3 per patient, 40 providers per 10,000 claims."""
    rng = np.random.default_rng(seed)
    n_pat = max(50, n_claims // 3)
    n_org = max(10, n_claims // 250)
    regions = np.array(list(codes.REGIONS))
    orgs = pl.DataFrame(
        {
            "organization_id": _ids("o", n_org),
            "kind": np.where(np.arange(n_org) % 3 == 2, "hospital", "polyclinic"),
            "region": regions[np.arange(n_org) % len(regions)],
        }
    )
    roles = pl.DataFrame(
        {
            "organization_id": np.repeat(orgs["organization_id"].to_numpy(), 8),
            "practitioner_id": _ids("r", n_org * 8),
            "active": np.ones(n_org * 8, dtype=bool),
        }
    )
    death = np.where(rng.random(n_pat) < 0.03, rng.integers(0, DAYS, n_pat), -1)
    patients = pl.DataFrame(
        {
            "patient_id": _ids("p", n_pat),
            "deceased_date": [START + dt.timedelta(days=int(d)) if d >= 0 else None for d in death],
            "region": regions[rng.integers(0, len(regions), n_pat)],
        },
        schema_overrides={"deceased_date": pl.Date},
    )
    pat = rng.integers(0, n_pat, n_claims)
    # 2 % near-duplicates: the previous claim (a day or less earlier, days are sorted) billed again for its
    # patient.
    dup = np.flatnonzero(rng.random(n_claims) < 0.02)
    dup = dup[dup > 0]
    pat[dup] = pat[dup - 1]
    home = pat % n_org
    org = np.where(rng.random(n_claims) < 0.9, home, rng.integers(0, n_org, n_claims))
    day = np.sort(rng.integers(0, DAYS - 15, n_claims))
    created = day + 1 + rng.integers(0, 10, n_claims)
    has_enc = rng.random(n_claims) > 0.01
    claim_ids = _ids("c", n_claims)
    enc_ids = np.array(_ids("e", n_claims), dtype=object)
    dx = rng.choice(list(codes.ICD10_CODES), n_claims)
    service_dates = [START + dt.timedelta(days=int(d)) for d in day]
    # Items: a visit code and 0-3 labs or a package.
    visit = rng.choice(["A01", "A02", "A03", "P01", "P02", "H01"], n_claims, p=[0.5, 0.2, 0.05, 0.1, 0.1, 0.05])
    extra = rng.integers(0, 4, n_claims)
    lines = [
        [str(visit[i]), *map(str, rng.choice(["L01", "L02", "L03", "L04", "I01"], extra[i], replace=False))]
        for i in range(n_claims)
    ]
    for i in dup:
        lines[i] = lines[i - 1]
        org[i] = org[i - 1] if rng.random() < 0.5 else org[i]
    item_claim = [i for i, codes_ in enumerate(lines) for _ in codes_]
    item_code = [code for codes_ in lines for code in codes_]
    item_claim_arr = np.array(item_claim)
    price = np.array([codes.TARIFFS[c].price_kzt for c in item_code], dtype=float)
    qty = np.where(np.array(item_code) == "H01", rng.integers(2, 8, len(item_code)), 1).astype(float)
    items = pl.DataFrame(
        {
            "claim_id": np.array(claim_ids, dtype=object)[item_claim_arr].tolist(),
            "tariff_code": item_code,
            "quantity": qty,
            "unit_price": price,
            "net": price * qty,
            "serviced_date": [service_dates[i] for i in item_claim],
        },
        schema_overrides={"serviced_date": pl.Date},
    )
    totals = items.group_by("claim_id").agg(pl.col("net").sum().alias("total"))
    claims = (
        pl.DataFrame(
            {
                "claim_id": claim_ids,
                "patient_id": np.array(patients["patient_id"].to_list(), dtype=object)[pat].tolist(),
                "provider_id": np.array(orgs["organization_id"].to_list(), dtype=object)[org].tolist(),
                "encounter_id": np.where(has_enc, enc_ids, None).tolist(),
                "type_code": "professional",
                "asof": [START + dt.timedelta(days=int(d)) for d in created],
                "service_start": service_dates,
                "service_end": service_dates,
                "primary_diagnosis": np.where(has_enc, None, dx).tolist(),
                "referral_id": None,
            },
            schema_overrides={
                "asof": pl.Date,
                "service_start": pl.Date,
                "service_end": pl.Date,
                "referral_id": pl.String,
                "primary_diagnosis": pl.String,
            },
        )
        .with_columns(pl.col("asof").cast(pl.Datetime("us", "UTC")).alias("created"))
        .join(totals, on="claim_id", how="left")
    )
    enc_rows = np.flatnonzero(has_enc)
    encounters = pl.DataFrame(
        {
            "encounter_id": enc_ids[enc_rows].tolist(),
            "patient_id": claims["patient_id"].to_numpy()[enc_rows],
            "organization_id": claims["provider_id"].to_numpy()[enc_rows],
            "class_code": np.where(visit[enc_rows] == "H01", "IMP", "AMB"),
            "date": [service_dates[i] for i in enc_rows],
        },
        schema_overrides={"date": pl.Date},
    )
    obs_rows = np.repeat(enc_rows, 3)
    loinc = np.tile(np.array(["8310-5", "8867-4", "59408-5"]), len(enc_rows))
    observations = pl.DataFrame(
        {
            "encounter_id": enc_ids[obs_rows].tolist(),
            "patient_id": claims["patient_id"].to_numpy()[obs_rows],
            "loinc_code": loinc,
            "value": np.where(loinc == "8310-5", 36.8, np.where(loinc == "8867-4", 75.0, 97.0))
            + rng.normal(0, 1, len(obs_rows)),
            "date": [service_dates[i] for i in obs_rows],
        },
        schema_overrides={"date": pl.Date},
    )
    conditions = pl.DataFrame(
        {
            "encounter_id": enc_ids[enc_rows].tolist(),
            "icd10_code": dx[enc_rows],
            "condition_id": _ids("k", len(enc_rows)),
            "date": [service_dates[i] for i in enc_rows],
        },
        schema_overrides={"date": pl.Date},
    )
    sr_rows = enc_rows[rng.random(len(enc_rows)) < 0.02]
    service_requests = pl.DataFrame(
        {
            "service_request_id": _ids("s", len(sr_rows)),
            "patient_id": claims["patient_id"].to_numpy()[sr_rows],
            "encounter_id": enc_ids[sr_rows].tolist(),
            "performer_id": np.array(orgs["organization_id"].to_list(), dtype=object)[
                rng.integers(0, n_org, len(sr_rows))
            ].tolist(),
            "date": [service_dates[i] for i in sr_rows],
        },
        schema_overrides={"date": pl.Date},
    )
    procedures = pl.DataFrame(
        {"encounter_id": [], "patient_id": [], "tariff_code": [], "date": []},
        schema={
            "encounter_id": pl.String,
            "patient_id": pl.String,
            "tariff_code": pl.String,
            "date": pl.Date,
        },
    )
    return FraudTables(
        claims=claims,
        claim_items=items,
        encounters=encounters,
        observations=observations,
        procedures=procedures,
        conditions=conditions,
        patients=patients,
        organizations=orgs,
        practitioner_roles=roles,
        service_requests=service_requests,
    )


# --- the same nine features, with plain pandas groupbys
# ---------------------------------------------------------


def to_pandas_tables(t: FraudTables) -> dict[str, pd.DataFrame]:
    """The tables the pandas baseline reads, as pandas frames with datetime columns (not timed)."""
    frames = {
        "claims": t.claims.to_pandas(),
        "items": t.claim_items.to_pandas(),
        "encounters": t.encounters.to_pandas(),
        "observations": t.observations.to_pandas(),
        "patients": t.patients.to_pandas(),
        "organizations": t.organizations.to_pandas(),
        "conditions": t.conditions.to_pandas(),
    }
    for name, cols in (
        ("claims", ("asof", "service_start", "service_end")),
        ("items", ("serviced_date",)),
        ("encounters", ("date",)),
        ("observations", ("date",)),
        ("patients", ("deceased_date",)),
        ("conditions", ("date",)),
    ):
        for col in cols:
            frames[name][col] = pd.to_datetime(frames[name][col])
    return frames


def pandas_subset(frames: dict[str, pd.DataFrame], opt: F.FraudFeatureOptions) -> pd.DataFrame:
    """:data:`SUBSET` computed with pandas merges and groupbys (the baseline), from :func:`to_pandas_tables`."""
    c = frames["claims"]
    items, enc, obs = frames["items"], frames["encounters"], frames["observations"]
    pats, orgs, conds = frames["patients"], frames["organizations"], frames["conditions"]
    c = c.sort_values(["asof", "claim_id"]).reset_index(drop=True)
    c["ord"] = np.arange(len(c))
    c = c.merge(
        enc[["encounter_id", "date", "class_code"]].rename(columns={"date": "_ed"}),
        on="encounter_id",
        how="left",
    )
    out = pd.DataFrame({"claim_id": c["claim_id"]})
    has = c["_ed"].notna() & (c["_ed"] <= c["asof"])
    out["has_encounter"] = has.astype(float)
    o = c[["claim_id", "encounter_id", "asof"]].merge(obs[["encounter_id", "date"]], on="encounter_id")
    n_obs = o[o["date"] <= o["asof"]].groupby("claim_id").size()
    out["encounter_observations"] = out["claim_id"].map(n_obs).fillna(0).astype(float)

    d = c[["claim_id", "patient_id", "asof", "service_end"]].merge(pats, on="patient_id", how="left")
    known = d["deceased_date"].notna() & (d["deceased_date"] <= d["asof"])
    days = (d["service_end"] - d["deceased_date"]).dt.days.clip(lower=0)
    out["days_after_death"] = np.where(known, days, 0).astype(float)

    sig = items.groupby("claim_id")["tariff_code"].agg(lambda s: "+".join(sorted(set(s))))
    c["_sig"] = c["claim_id"].map(sig)
    prior = c[["patient_id", "_sig", "ord", "service_start"]].rename(columns={"ord": "_o", "service_start": "_s"})
    pairs = c[["claim_id", "patient_id", "_sig", "ord", "service_start"]].merge(prior, on=["patient_id", "_sig"])
    pairs["_gap"] = (pairs["_s"] - pairs["service_start"]).dt.days.abs()
    pairs = pairs[(pairs["_o"] < pairs["ord"]) & (pairs["_gap"] <= opt.duplicate_days)]
    g = pairs.groupby("claim_id")
    out["dup_prior_same_service"] = out["claim_id"].map(g.size()).fillna(0).astype(float)
    out["dup_min_days"] = out["claim_id"].map(g["_gap"].min()).fillna(opt.duplicate_days + 1).astype(float)

    kinds = {code: tariff.kind for code, tariff in codes.TARIFFS.items()}
    it = items.merge(c[["claim_id", "ord", "patient_id", "provider_id"]], on="claim_id")
    svc = it[it["tariff_code"].map(kinds).fillna("other") != "inpatient"]
    svc = svc.sort_values(["provider_id", "serviced_date", "ord"])
    svc["_cum"] = svc.groupby(["provider_id", "serviced_date"]).cumcount() + 1
    per_day = svc.groupby(["claim_id", "provider_id", "serviced_date"])["_cum"].max()
    out["provider_day_services"] = out["claim_id"].map(per_day.groupby(level=0).max()).fillna(0).astype(float)

    pk = pd.DataFrame(
        [
            (p.code, comp, float(p.price_kzt), len(p.components))
            for p in codes.TARIFFS.values()
            if p.kind == "package"
            for comp in p.components
        ],
        columns=["package", "tariff_code", "package_price", "n_components"],
    )
    keys = ["patient_id", "provider_id", "serviced_date"]
    claim_days = it[it["tariff_code"].isin(pk["tariff_code"])][["claim_id", "ord", *keys]].drop_duplicates()
    ctx = claim_days.merge(it[[*keys, "ord", "tariff_code", "net"]].rename(columns={"ord": "_o"}), on=keys)
    ctx = ctx[ctx["_o"] <= ctx["ord"]]
    billed = ctx[ctx["tariff_code"].isin(pk["package"])][["claim_id", "serviced_date", "tariff_code"]]
    billed = billed.drop_duplicates().rename(columns={"tariff_code": "package"}).assign(_pkg=True)
    per = (
        ctx.merge(pk, on="tariff_code")
        .groupby(["claim_id", "serviced_date", "package"])
        .agg(
            _k=("tariff_code", "nunique"),
            _sum=("net", "sum"),
            price=("package_price", "first"),
            n=("n_components", "first"),
        )
        .reset_index()
        .merge(billed, on=["claim_id", "serviced_date", "package"], how="left")
    )
    per["_full"] = (per["_k"] == per["n"]) & per["_pkg"].isna()
    per["_x"] = np.where(per["_full"], (per["_sum"] - per["price"]).clip(lower=0), 0.0)
    g = per.groupby("claim_id")
    out["package_unbundled"] = out["claim_id"].map(g["_full"].any().astype(float)).fillna(0.0)
    out["unbundling_excess_kzt"] = out["claim_id"].map(g["_x"].max()).fillna(0.0)

    first_dx = conds.sort_values(["encounter_id", "date", "condition_id"]).groupby("encounter_id").first()
    c["_dx"] = c["encounter_id"].map(first_dx["icd10_code"])
    c["_dxd"] = c["encounter_id"].map(first_dx["date"])
    c["dx"] = c["primary_diagnosis"].fillna(c["_dx"].where(c["_dxd"].isna() | (c["_dxd"] <= c["asof"])))
    c["dx"] = c["dx"].fillna("none")
    c["setting"] = c["class_code"].where(c["_ed"] <= c["asof"]).fillna("none")
    c = c.merge(
        orgs.rename(columns={"organization_id": "provider_id", "kind": "pk", "region": "pr"}),
        on="provider_id",
        how="left",
    )
    c["pk"] = c["pk"].fillna("unknown")
    c["pr"] = c["pr"].fillna("unknown")
    c["month"] = c["asof"].dt.to_period("M").dt.to_timestamp()
    median = pd.Series(np.nan, index=c.index)
    levels = (["dx", "setting", "pr", "pk"], ["dx", "setting", "pk"], ["dx", "setting"], ["dx"])
    for level in levels:
        parts = []
        for m in sorted(c["month"].unique()):
            window = c[(c["asof"] < m) & (c["asof"] >= m - pd.Timedelta(days=opt.peer_window_days or 10**6))]
            agg = window.groupby(level)["total"].agg(["median", "size"])
            parts.append(agg[agg["size"] >= opt.peer_min_count]["median"].reset_index().assign(month=m))
        if parts:
            snap = pd.concat(parts)
            found = c[[*level, "month"]].merge(snap, on=[*level, "month"], how="left")["median"]
            median = median.fillna(pd.Series(found.to_numpy(), index=c.index))
    ratio = (c["total"] / median).replace([np.inf, -np.inf], np.nan).fillna(1.0).clip(0, 1000)
    out["amount_ratio_dx"] = ratio.to_numpy()
    return out


def request_rows(t: FraudTables) -> dict[str, dict[str, list[dict[str, Any]]]]:
    """Per claim id, the flattened rows of a request holding only that claim (its claims row and items rows)."""
    items: dict[str, list[dict[str, Any]]] = {}
    for row in t.claim_items.select(
        "claim_id", "tariff_code", "quantity", "unit_price", "net", "serviced_date"
    ).iter_rows(named=True):
        items.setdefault(row["claim_id"], []).append(row)
    out = {}
    for row in t.claims.iter_rows(named=True):
        claim = {
            "claim_id": row["claim_id"],
            "patient_id": row["patient_id"],
            "provider_id": row["provider_id"],
            "encounter_id": row["encounter_id"],
            "type_code": row["type_code"],
            "created": row["created"],
            "billable_start": row["service_start"],
            "billable_end": row["service_end"],
            "total": row["total"],
            "primary_diagnosis": row["primary_diagnosis"],
            "referral_id": row["referral_id"],
        }
        out[row["claim_id"]] = {"claims": [claim], "claim_items": items.get(row["claim_id"], [])}
    return out


def request_latency(history: FraudHistory, feats: pl.DataFrame, t: FraudTables, n: int = 2000) -> tuple[float, float]:
    """Median and p99 milliseconds of scoring one bare claim against ``history`` (after a warm-up of 200); exits
    non-zero when a record differs from the claim's batch record."""
    rows = request_rows(t)
    rng = np.random.default_rng(1)
    ids = [str(i) for i in rng.choice(feats["claim_id"].to_numpy(), min(n, feats.height), replace=False)]
    for claim_id in ids[:200]:
        history.request_features(rows[claim_id], order=[claim_id])
    times, records = [], []
    for claim_id in ids:
        t0 = time.perf_counter()
        records.append(history.request_features(rows[claim_id], order=[claim_id]))
        times.append(time.perf_counter() - t0)
    got = pl.concat(records)
    want = feats.join(pl.DataFrame({"claim_id": ids, "_p": range(len(ids))}), on="claim_id").sort("_p").drop("_p")
    if not got.equals(want):
        sys.exit("bench_fraud: a bare claim's request record differs from its batch record")
    ms = np.array(times) * 1e3
    return float(np.median(ms)), float(np.percentile(ms, 99))


# --- one size, in a subprocess
# ------------------------------------------------------------------------------------


def _timed(fn: Any, *args: Any) -> tuple[Any, float]:
    t0 = time.perf_counter()
    out = fn(*args)
    return out, time.perf_counter() - t0


def child(n: int) -> dict[str, Any]:
    """Measure one size in this process; returns the numbers (peak RSS last)."""
    import torch

    from pipelines.modeling.fraud_attribution import explain
    from pipelines.modeling.fraud_model import FraudModelConfig, score, train_fraud_model

    threads = int(_THREADS)
    if pl.thread_pool_size() != threads:
        sys.exit(f"bench_fraud: polars runs {pl.thread_pool_size()} threads, not the budget of {threads}")
    torch.set_num_threads(threads)
    opt = F.FraudFeatureOptions()
    t, gen_s = _timed(make_tables, n)
    rss_tables = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    history, build_s = _timed(FraudHistory.from_tables, t, opt)
    rss_history = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    feats, only_feat_s = _timed(history.features)
    feat_s = build_s + only_feat_s
    request_median_ms, request_p99_ms = request_latency(history, feats, t)
    frames = to_pandas_tables(t)
    pan, pan_s = _timed(pandas_subset, frames, opt)
    a = feats.sort("claim_id").select(SUBSET).to_numpy()
    b = pl.from_pandas(pan).sort("claim_id").select(SUBSET).to_numpy()
    differ = [
        f"{col} (max |diff| {np.nanmax(np.abs(a[:, i] - b[:, i])):.6g})"
        for i, col in enumerate(SUBSET)
        if not np.allclose(a[:, i], b[:, i], equal_nan=True)
    ]
    if differ:
        sys.exit(f"bench_fraud: the engine and pandas disagree at {n} claims on: {', '.join(differ)}")
    # A model to score with: labels from the obvious flags (the benchmark times scoring, not accuracy).
    y = (feats["after_death"] > 0) | (feats["has_encounter"] == 0) | (feats["dup_prior_same_service"] > 0)
    y = y.cast(pl.Int64).to_numpy()
    half = n // 2
    cfg = FraudModelConfig(epochs=3, iforest_trees=50)
    model = train_fraud_model(
        feats[:half],
        y[:half],
        feats[half:],
        y[half:],
        numeric=F.NUMERIC_FEATURES,
        categorical=F.CATEGORICAL_FEATURES,
        config=cfg,
    )
    _, score_s = _timed(score, model, feats)
    sample = feats.head(1000)
    _, explain_s = _timed(explain, model, sample)
    return {
        "claims": n,
        "threads": threads,
        "generate_s": round(gen_s, 2),
        "history_build_s": round(build_s, 2),
        "history_rss_mb": round((rss_history - rss_tables) / 1024, 1),
        "features_s": round(feat_s, 2),
        "features_claims_per_s": round(n / feat_s),
        "request_median_ms": round(request_median_ms, 3),
        "request_p99_ms": round(request_p99_ms, 3),
        "subset_pandas_s": round(pan_s, 3),
        "speedup_vs_pandas": round(pan_s / feat_s, 2),
        "subset_equal": True,
        "score_claims_per_s": round(n / score_s),
        "explain_claims_per_s": round(sample.height / explain_s),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }


def main() -> None:
    """Run every size and thread budget in its own subprocess; print one JSON line each and a summary table."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="20000,100000", help="claims per run, comma-separated")
    parser.add_argument("--threads", help="thread budgets, comma-separated (default: 1 and the number of cores)")
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child)))
        return
    cores = len(os.sched_getaffinity(0))
    budgets = sorted({int(b) for b in (args.threads or f"1,{cores}").split(",")})
    rows = []
    for n in (int(s) for s in args.sizes.split(",")):
        for threads in budgets:
            env = {**os.environ, **{v: str(threads) for v in ("POLARS_MAX_THREADS", "OMP_NUM_THREADS")}}
            env.update({v: str(threads) for v in ("OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")})
            cmd = [sys.executable, __file__, "--child", str(n)]
            proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
            if proc.returncode != 0:
                lines = proc.stderr.strip().splitlines()
                sys.exit(lines[-1] if lines else f"bench_fraud: {n} claims, {threads} threads: exit {proc.returncode}")
            row = json.loads(proc.stdout.strip().splitlines()[-1])
            rows.append(row)
            print(json.dumps(row), flush=True)
    print(f"\nfraud features benchmark ({cores} cores); ratio = pandas seconds for nine features / engine seconds for")
    print("all features (history build included), the nine checked equal; the engine and pandas use one thread of the")
    print("budget; per core = the rate divided by the budget; request = one bare claim against the history (ms)")
    cols = (
        f"{'claims':>7} {'threads':>7} {'features claims/s':>17} {'per core':>8} {'pandas s/engine s':>17} "
        f"{'equal':>5} {'request ms p50/p99':>18} {'score claims/s':>14} {'explain claims/s':>16} "
        f"{'history MB':>10} {'peak RSS MB':>11}"
    )
    print(cols)
    for row in rows:
        t = row["threads"]
        latency = f"{row['request_median_ms']:.3f}/{row['request_p99_ms']:.3f}"
        print(
            f"{row['claims']:>7} {t:>7} {row['features_claims_per_s']:>17} {row['features_claims_per_s'] / t:>8.0f} "
            f"{row['speedup_vs_pandas']:>16.2f}x {row['subset_equal']!s:>5} {latency:>18} "
            f"{row['score_claims_per_s']:>14} {row['explain_claims_per_s']:>16} {row['history_rss_mb']:>10} "
            f"{row['peak_rss_mb']:>11}"
        )
    for n in sorted({row["claims"] for row in rows}):
        by = {row["threads"]: row for row in rows if row["claims"] == n}
        text = ", ".join(
            f"{by[t]['speedup_vs_pandas']:.2f}x at {t} thread{'s' if t > 1 else ''}"
            + (" (per core)" if t == 1 else " (total)")
            for t in sorted(by)
        )
        print(f"summary {n} claims: pandas (nine features) / engine (all features) {text}")


if __name__ == "__main__":
    main()
