"""Provider network: shared patients, referral loops and communities, as graphs of plain Python values.

Per claim (see :mod:`pipelines.features.fraud_engine`): how many providers billed the same patient around the
service, whether the visit passed a referral on, and whether the patient's referrals between providers form a
loop through the billing provider. Per provider (one :class:`ProviderGraphs` per month, built from the trailing
window before the month began): the largest share of patients it shares with one of the patient's other
providers, its community in the shared-patient graph (label propagation), the share of its patients seen by three
or more providers, and the size of its strongly connected component in the provider referral graph (a referral
loop between providers).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Hashable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

_N = TypeVar("_N", bound=Hashable)

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


@dataclass(frozen=True, slots=True)
class ProviderGraphs:
    """The provider graphs of one snapshot.

    Attributes:
        pairs: (p, q) -> (shared patients, shared / the smaller of the two providers' patient sets).
        community: provider -> size of its community (providers with a strong shared-patient edge only).
        multi: provider -> share of its patients seen by three or more providers.
        scc: provider -> (its referral component: the component's smallest node, the component's size).
    """

    pairs: Mapping[tuple[Any, Any], tuple[int, float]]
    community: Mapping[Any, int]
    multi: Mapping[Any, float]
    scc: Mapping[Any, tuple[str, int]]


def provider_graphs(
    visits: Iterable[tuple[Any, Any]], referrals: Iterable[tuple[str, str]], min_shared: int
) -> ProviderGraphs:
    """The provider graphs of (provider, patient) visits (patient may be null) and (src, dst) referral links.

    Two providers share a patient when both billed them; an edge of the community graph needs ``min_shared``
    shared patients and weighs their share of the smaller patient set.
    """
    pp = set(visits)
    n_of: Counter[Any] = Counter(p for p, _ in pp)
    providers_of: dict[Any, list[Any]] = defaultdict(list)
    for p, patient in pp:
        if patient is not None:
            providers_of[patient].append(p)
    shared: Counter[tuple[Any, Any]] = Counter()
    for providers in providers_of.values():
        if len(providers) > 1:
            for p in providers:
                for q in providers:
                    if p != q:
                        shared[(p, q)] += 1
    pairs = {(p, q): (s, s / min(n_of[p], n_of[q])) for (p, q), s in shared.items()}
    strong = sorted((p, q, r) for (p, q), (s, r) in pairs.items() if s >= min_shared)
    labels = label_propagation(strong)
    sizes = Counter(labels.values())
    community = {p: sizes[lab] for p, lab in labels.items()}
    flags: dict[Any, list[bool]] = defaultdict(list)
    for providers in providers_of.values():
        for p in providers:
            flags[p].append(len(providers) >= 3)
    multi = {p: sum(f) / len(f) for p, f in flags.items()}
    return ProviderGraphs(pairs, community, multi, strongly_connected(set(referrals)))


def reaches(graph: Mapping[_N, Iterable[_N]], start: _N | None, target: _N | None) -> bool:
    """Whether a path of one or more edges leads from ``start`` to ``target`` in a directed graph."""
    seen: set[_N] = set()
    todo = list(graph.get(start, ())) if start is not None else []
    while todo:
        node = todo.pop()
        if node == target:
            return True
        if node not in seen:
            seen.add(node)
            todo.extend(graph.get(node, ()))
    return False
