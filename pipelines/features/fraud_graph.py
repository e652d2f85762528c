"""Provider network features: shared patients, referral loops and communities, with no look-ahead.

Per claim (records dated on or before the claim's created date): how many providers billed the same patient
around the service, whether the visit passed a referral on, and whether the patient's referrals between
providers form a loop through the billing provider. Per provider (monthly snapshots of the trailing year, see
:mod:`pipelines.features.fraud_history`): the largest share of patients it shares with one of the patient's
other providers, its community in the shared-patient graph (label propagation), the share of its patients seen
by three or more providers, and the size of its strongly connected component in the provider referral graph (a
referral loop between providers).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable

import polars as pl

from pipelines.features.fraud_history import MONTH, monthly, months_of

NETWORK_COLUMNS = (
    "patient_providers_90d",
    "referral_in",
    "referral_out",
    "referral_passthrough",
    "referral_loop_link",
    "patient_referral_cycle",
    "pair_shared_patients",
    "pair_shared_ratio",
)
# Statistics of the provider rather than of the claim (its referral component, its community in the
# shared-patient graph, the share of its patients seen by three or more providers): kept for provider-level
# scores and for investigators, left out of the claim model so that a claim is flagged for its own evidence,
# not its provider's.
PROVIDER_COLUMNS = ("provider_referral_scc", "community_size", "provider_multi_provider_share")
# Computed with the network but kept out of the model: in the built-in cohort it is an artifact of the
# generator (fraudulent providers are drawn whatever the patient's region), so a model leaning on it would not
# transfer.
CONTEXT_NETWORK_COLUMNS = ("out_of_region",)


def _edges(tables_sr: pl.DataFrame, encounters: pl.DataFrame) -> pl.DataFrame:
    """Referral edges between organizations: (patient_id, encounter_id, src, dst, date)."""
    enc = encounters.select("encounter_id", pl.col("organization_id").alias("src"))
    return (
        tables_sr.join(enc, on="encounter_id", how="inner")
        .select("patient_id", "encounter_id", "src", pl.col("performer_id").alias("dst"), "date")
        .filter(pl.col("src").is_not_null() & pl.col("dst").is_not_null() & (pl.col("src") != pl.col("dst")))
        .filter(pl.col("date").is_not_null())
    )


def strongly_connected(edges: Iterable[tuple[str, str]]) -> dict[str, tuple[str, int]]:
    """Strongly connected component of every node of a directed graph (Tarjan, iterative).

    Returns:
        node -> (component id: its smallest node, component size).
    """
    graph: dict[str, list[str]] = defaultdict(list)
    nodes: set[str] = set()
    for a, b in edges:
        graph[a].append(b)
        nodes.update((a, b))
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    comps: dict[str, tuple[str, int]] = {}
    counter = 0
    for root in sorted(nodes):
        if root in index:
            continue
        work = [(root, 0)]
        while work:
            node, i = work.pop()
            if i == 0:
                index[node] = low[node] = counter
                counter += 1
                stack.append(node)
                on_stack.add(node)
            succ = sorted(graph.get(node, ()))
            if i < len(succ):
                work.append((node, i + 1))
                nxt = succ[i]
                if nxt not in index:
                    work.append((nxt, 0))
                elif nxt in on_stack:
                    low[node] = min(low[node], index[nxt])
                continue
            if low[node] == index[node]:
                comp = []
                while True:
                    w = stack.pop()
                    on_stack.discard(w)
                    comp.append(w)
                    if w == node:
                        break
                for w in comp:
                    comps[w] = (min(comp), len(comp))
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
    return comps


def label_propagation(edges: Iterable[tuple[str, str, float]], max_iter: int = 20) -> dict[str, str]:
    """Community label of every node of an undirected weighted graph (deterministic label propagation).

    Nodes are visited in sorted order and take the label with the largest summed edge weight among their
    neighbours, ties going to the smallest label, until no label changes.
    """
    adj: dict[str, dict[str, float]] = defaultdict(dict)
    for a, b, w in edges:
        adj[a][b] = adj[a].get(b, 0.0) + w
        adj[b][a] = adj[b].get(a, 0.0) + w
    labels = {n: n for n in adj}
    for _ in range(max_iter):
        changed = False
        for node in sorted(adj):
            votes: dict[str, float] = defaultdict(float)
            for nb, w in adj[node].items():
                votes[labels[nb]] += w
            best = min(votes, key=lambda lab: (-votes[lab], lab))
            if votes[best] > votes.get(labels[node], 0.0) and best != labels[node]:
                labels[node] = best
                changed = True
        if not changed:
            break
    return labels


def _provider_snapshot(df: pl.DataFrame, min_shared: int) -> pl.DataFrame:
    """Provider-level graph statistics of one snapshot of (provider_id, patient_id) visits."""
    pp = df.select("provider_id", "patient_id").unique()
    schema = pl.Schema(
        {
            "provider_id": pl.String,
            "community_size": pl.Int64,
            "provider_multi_provider_share": pl.Float64,
        }
    )
    if pp.height == 0:
        return pl.DataFrame(schema=schema)
    pairs = _pairs(pp)
    strong = pairs.filter(pl.col("shared") >= min_shared)
    labels = label_propagation(strong.select("p", "q", "ratio").iter_rows())
    sizes: dict[str, int] = defaultdict(int)
    for lab in labels.values():
        sizes[lab] += 1
    per_patient = pp.group_by("patient_id").agg(pl.len().alias("_k"))
    multi = (
        pp.join(per_patient, on="patient_id")
        .group_by("provider_id")
        .agg((pl.col("_k") >= 3).mean().alias("provider_multi_provider_share"))
    )
    comm = pl.DataFrame(
        {
            "provider_id": list(labels),
            "community_size": [sizes[lab] for lab in labels.values()],
        },
        schema={"provider_id": pl.String, "community_size": pl.Int64},
    )
    return multi.join(comm, on="provider_id", how="left").select(list(schema)).cast(schema)


def _pairs(pp: pl.DataFrame) -> pl.DataFrame:
    """Shared patients of every ordered provider pair: p, q, shared, ratio (shared / smaller patient set)."""
    n = pp.group_by("provider_id").agg(pl.len().alias("_n"))
    return (
        pp.join(pp, on="patient_id", suffix="_q")
        .filter(pl.col("provider_id") != pl.col("provider_id_q"))
        .group_by(pl.col("provider_id").alias("p"), pl.col("provider_id_q").alias("q"))
        .agg(pl.len().alias("shared"))
        .join(n.rename({"provider_id": "p", "_n": "n_p"}), on="p")
        .join(n.rename({"provider_id": "q", "_n": "n_q"}), on="q")
        .with_columns((pl.col("shared") / pl.min_horizontal("n_p", "n_q")).alias("ratio"))
        .select("p", "q", pl.col("shared").cast(pl.Int64), pl.col("ratio").cast(pl.Float64))
    )


def _patient_cycles(claims: pl.DataFrame, edges: pl.DataFrame, cycle_days: int) -> pl.DataFrame:
    """1 when the patient's referrals of the last ``cycle_days`` loop through the claim's provider."""
    per_patient: dict[str, list[tuple[object, str, str]]] = defaultdict(list)
    for patient, src, dst, date in edges.select("patient_id", "src", "dst", "date").iter_rows():
        per_patient[patient].append((date, src, dst))
    cand = claims.filter(pl.col("patient_id").is_in(list(per_patient)))
    ids, flags = [], []
    for claim_id, patient, provider, asof in cand.select("claim_id", "patient_id", "provider_id", "asof").iter_rows():
        graph: dict[str, set[str]] = defaultdict(set)
        for date, src, dst in per_patient[patient]:
            if date <= asof and (asof - date).days <= cycle_days:
                graph[src].add(dst)
        ids.append(claim_id)
        flags.append(int(_reaches(graph, provider, provider)))
    return pl.DataFrame(
        {"claim_id": ids, "patient_referral_cycle": flags},
        schema={"claim_id": pl.String, "patient_referral_cycle": pl.Int64},
    )


def _reaches(graph: dict[str, set[str]], start: str, target: str) -> bool:
    seen: set[str] = set()
    todo = list(graph.get(start, ()))
    while todo:
        node = todo.pop()
        if node == target:
            return True
        if node not in seen:
            seen.add(node)
            todo.extend(graph.get(node, ()))
    return False


def network_features(
    claims: pl.DataFrame,
    service_requests: pl.DataFrame,
    encounters: pl.DataFrame,
    patient_region: pl.DataFrame,
    provider_region: pl.DataFrame,
    *,
    window_days: int = 365,
    near_days: int = 90,
    cycle_days: int = 180,
    min_shared: int = 3,
) -> pl.DataFrame:
    """The network features of every claim.

    Args:
        claims: claim_id, patient_id, provider_id, encounter_id, referral_id, asof, service_start, ord, month.
        service_requests: service_request_id, patient_id, encounter_id, performer_id, date (referrals).
        encounters: encounter_id, organization_id (the referring provider of a referral).
        patient_region: patient_id, patient_region.
        provider_region: provider_id, provider_region.
        window_days: trailing window of the provider graphs and of a patient's other providers.
        near_days: window of ``patient_providers_90d`` around the service date.
        cycle_days: how far back a patient's referrals count for a referral loop.
        min_shared: shared patients for an edge of the community graph.

    Returns:
        claim_id, :data:`NETWORK_COLUMNS`, :data:`PROVIDER_COLUMNS` and :data:`CONTEXT_NETWORK_COLUMNS`, one
        row per claim (no nulls).
    """
    v = claims.select("claim_id", "patient_id", "provider_id", "ord", "service_start", MONTH)
    other = v.select(
        "patient_id",
        pl.col("provider_id").alias("q"),
        pl.col("ord").alias("q_ord"),
        pl.col("service_start").alias("q_start"),
    )
    gap = (pl.col("q_start") - pl.col("service_start")).dt.total_days().abs()
    near = v.join(other, on="patient_id").filter((pl.col("q_ord") <= pl.col("ord")) & (gap <= window_days))
    providers_90d = (
        near.filter(gap <= near_days).group_by("claim_id").agg(pl.col("q").n_unique().alias("patient_providers_90d"))
    )

    months = months_of(claims["asof"]) if claims.height else []
    visits = claims.select("asof", "provider_id", "patient_id").filter(pl.col("provider_id").is_not_null())
    pair_snap = monthly(visits, "asof", months, _pairs_or_empty, window_days=window_days)
    partners = near.filter(pl.col("q") != pl.col("provider_id")).select(
        "claim_id", MONTH, pl.col("provider_id").alias("p"), "q"
    )
    pair_feats = (
        partners.join(pair_snap, on=[MONTH, "p", "q"], how="inner")
        .group_by("claim_id")
        .agg(
            pl.col("shared").max().alias("pair_shared_patients"),
            pl.col("ratio").max().alias("pair_shared_ratio"),
        )
    )
    prov_snap = monthly(visits, "asof", months, lambda df: _provider_snapshot(df, min_shared), window_days=window_days)

    edges = _edges(service_requests, encounters)
    scc_snap = monthly(edges.rename({"date": "asof"}), "asof", months, _scc_frame, window_days=window_days)
    # Referrals out of the claim's encounter (known by the claim's date) and the one the claim came in on.
    out_refs = (
        claims.select("claim_id", "encounter_id", "provider_id", "asof", MONTH)
        .join(edges.select("encounter_id", "dst", pl.col("date").alias("_d")), on="encounter_id", how="inner")
        .filter((pl.col("_d") <= pl.col("asof")) & (pl.col("dst") != pl.col("provider_id")))
        .select("claim_id", "provider_id", MONTH, pl.col("dst").alias("other"))
    )
    in_refs = (
        claims.filter(pl.col("referral_id").is_not_null())
        .select("claim_id", "provider_id", "referral_id", MONTH)
        .join(
            service_requests.select(pl.col("service_request_id").alias("referral_id"), "encounter_id"),
            on="referral_id",
            how="inner",
        )
        .join(encounters.select("encounter_id", pl.col("organization_id").alias("other")), on="encounter_id")
        .select("claim_id", "provider_id", MONTH, "other")
    )
    refs_out = out_refs.group_by("claim_id").agg(pl.len().alias("referral_out"))
    # A referral link between two providers of one strongly connected component is a link of a referral loop.
    loop_link = (
        pl.concat([out_refs, in_refs])
        .join(
            scc_snap.rename({"provider_referral_scc": "_scc_p", "component": "_comp_p"}),
            on=["provider_id", MONTH],
        )
        .join(
            scc_snap.rename({"provider_id": "other", "provider_referral_scc": "_scc_o", "component": "_comp_o"}),
            on=["other", MONTH],
        )
        .filter((pl.col("_comp_p") == pl.col("_comp_o")) & (pl.col("_scc_p") > 1))
        .group_by("claim_id")
        .agg(pl.lit(1).alias("referral_loop_link"))
    )
    passthrough = (
        out_refs.join(claims.filter(pl.col("referral_id").is_not_null()).select("claim_id"), on="claim_id", how="semi")
        .group_by("claim_id")
        .agg(pl.lit(1).alias("referral_passthrough"))
    )
    cycles = _patient_cycles(claims, edges, cycle_days)

    out = (
        claims.select("claim_id", "patient_id", "provider_id", "referral_id", MONTH)
        .join(providers_90d, on="claim_id", how="left")
        .join(pair_feats, on="claim_id", how="left")
        .join(prov_snap, on=["provider_id", MONTH], how="left")
        .join(scc_snap.drop("component"), on=["provider_id", MONTH], how="left")
        .join(passthrough, on="claim_id", how="left")
        .join(refs_out, on="claim_id", how="left")
        .join(loop_link, on="claim_id", how="left")
        .join(cycles, on="claim_id", how="left")
        .join(patient_region, on="patient_id", how="left")
        .join(provider_region, on="provider_id", how="left")
    )
    return out.select(
        "claim_id",
        pl.col("patient_providers_90d").fill_null(1).cast(pl.Float64),
        pl.col("referral_id").is_not_null().cast(pl.Float64).alias("referral_in"),
        pl.col("referral_out").fill_null(0).cast(pl.Float64),
        pl.col("referral_passthrough").fill_null(0).cast(pl.Float64),
        pl.col("referral_loop_link").fill_null(0).cast(pl.Float64),
        pl.col("patient_referral_cycle").fill_null(0).cast(pl.Float64),
        pl.col("provider_referral_scc").fill_null(1).cast(pl.Float64),
        pl.col("pair_shared_patients").fill_null(0).cast(pl.Float64),
        pl.col("pair_shared_ratio").fill_null(0.0).cast(pl.Float64),
        pl.col("community_size").fill_null(1).cast(pl.Float64),
        pl.col("provider_multi_provider_share").fill_null(0.0).cast(pl.Float64),
        (
            pl.col("patient_region").is_not_null()
            & pl.col("provider_region").is_not_null()
            & (pl.col("patient_region") != pl.col("provider_region"))
        )
        .cast(pl.Float64)
        .alias("out_of_region"),
    )


def _pairs_or_empty(df: pl.DataFrame) -> pl.DataFrame:
    pp = df.select("provider_id", "patient_id").unique()
    if pp.height == 0:
        return pl.DataFrame(schema={"p": pl.String, "q": pl.String, "shared": pl.Int64, "ratio": pl.Float64})
    return _pairs(pp)


def _scc_frame(df: pl.DataFrame) -> pl.DataFrame:
    comps = strongly_connected(df.select("src", "dst").unique().iter_rows())
    return pl.DataFrame(
        {
            "provider_id": list(comps),
            "component": [c for c, _ in comps.values()],
            "provider_referral_scc": [n for _, n in comps.values()],
        },
        schema={"provider_id": pl.String, "component": pl.String, "provider_referral_scc": pl.Int64},
    )
