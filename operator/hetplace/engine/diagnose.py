"""Human reasons: why a workload has no placement, and why each unchosen option lost."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from hetplace.engine.decision import GroupPlan, Rejection
from hetplace.engine.groups import Candidate, GroupTable, RouteTable
from hetplace.engine.queueing import compute_latency_s
from hetplace.engine.snapshot import Traffic, Workload


@dataclass(frozen=True)
class NearMiss:
    """The closest a route came to feasible; `ratio` > 1 says by how much it missed.

    Misses of different kinds are not comparable by ratio, so `kind` orders them first: a route
    that only misses the latency is closer than one that needs more replicas than allowed, which
    is closer than one whose link cannot carry it at all.
    """

    kind: int        # 0 latency, 1 replicas, 2 link
    ratio: float
    text: str

    @property
    def closeness(self) -> tuple[int, float, str]:
        return (self.kind, self.ratio, self.text)


def best_case_compute_s(w: Workload, sites: tuple[Traffic, ...], cands: list[Candidate]) -> np.ndarray:
    """(G, k): compute latency of each site alone on each candidate with every replica allowed."""
    most = np.array([max(1, min(c.replicas_that_fit, w.replicas_max)) for c in cands], dtype=float)[:, None]
    concurrency = np.array([c.variant.concurrency for c in cands], dtype=float)[:, None]
    latency = np.array([c.variant.latency_ms for c in cands])[:, None]
    tail = np.array([c.variant.tail_latency_ms for c in cands])[:, None]
    rps = np.array([t.requests_per_second for t in sites])[None, :]
    return compute_latency_s(most, concurrency, np.broadcast_to(rps, (len(cands), len(sites))), latency, tail,
                             w.percentile)


def near_miss(w: Workload, g: int, s: int, t: Traffic, cand: Candidate, routes: RouteTable,
              compute_s: float) -> NearMiss | None:
    """Best case for site s on candidate g alone: every replica the pool and spec allow."""
    label = f"{t.site} -> {cand.pool.name}/{cand.variant.name}"
    most = max(1, min(cand.replicas_that_fit, w.replicas_max))
    load = t.requests_per_second * cand.variant.latency_ms / 1000.0
    servers = most * cand.variant.concurrency
    best: NearMiss | None = None
    for e, enc in enumerate(w.encodings):
        util = float(routes.utilization[g, s, e])
        net_s = float(routes.seconds[g, s, e])
        if not np.isfinite(util):
            continue  # no link or accuracy too low: not a near miss, a hard rejection
        if not np.isfinite(net_s):
            miss = NearMiss(2, util / w.max_link_utilization,
                            f"{label} with {enc.name} would load the link to {util:.0%}, "
                            f"over spec.policy.maxLinkUtilization {w.max_link_utilization:.0%}")
        elif load > w.max_utilization * servers + 1e-9:
            miss = NearMiss(1, load / (w.max_utilization * servers),
                            f"{label} would need more than {most} replicas "
                            f"(at most {most} fit or are allowed by spec.replicas.max)")
        else:
            latency_ms = (net_s + compute_s) * 1000.0
            miss = NearMiss(0, latency_ms / w.slo_latency_ms,
                            f"{label} with {enc.name} predicts p{w.percentile:g} {latency_ms:.1f} ms with "
                            f"{most} replicas, {latency_ms - w.slo_latency_ms:.1f} ms over the "
                            f"{w.slo_latency_ms:g} ms SLO")
        if best is None or miss.closeness < best.closeness:
            best = miss
    return best


def _site_miss(w: Workload, sites: tuple[Traffic, ...], s: int, cands: list[Candidate], routes: RouteTable) -> str:
    best_compute = best_case_compute_s(w, sites, cands)
    misses = [m for g, c in enumerate(cands) if (m := near_miss(w, g, s, sites[s], c, routes, best_compute[g, s]))]
    if misses:
        return "closest: " + min(misses, key=lambda m: m.closeness).text
    hard = sorted({v.reason for g in range(len(cands)) for v in routes.verdicts(w, sites, cands, g, s)})
    return "; ".join(hard[:3]) if hard else "no pool passes the filters"


def explain_infeasible(
    w: Workload,
    sites: tuple[Traffic, ...],
    cands: list[Candidate],
    routes: RouteTable,
    table: GroupTable,
    cheapest_over_budget: float | None,
    pools_needed: int | None,
) -> str:
    """One message naming what blocks the workload and the closest option."""
    if cheapest_over_budget is not None:
        limit = w.max_cost_per_hour or 0.0
        return (f"the cheapest placement costs ${cheapest_over_budget:.4f}/h, "
                f"${cheapest_over_budget - limit:.4f}/h over spec.policy.maxCostPerHour ${limit:g}/h")
    if not cands:
        return "no pool passes the filters for any variant (see rejected)"
    stranded = [s for s in range(len(sites)) if not table.feasible[:, 1 << s].any()]
    if stranded:
        parts = [f"site {sites[s].site} has no route within the SLO ({_site_miss(w, sites, s, cands, routes)})"
                 for s in stranded]
        return "; ".join(parts)
    if pools_needed is not None and pools_needed > w.max_pools:
        return (f"every site can be served, but together they need at least {pools_needed} pools "
                f"and spec.constraints.maxPools is {w.max_pools}")
    return ("every site can be served alone, but no combination fits one variant per pool "
            f"within spec.constraints.maxPools={w.max_pools}")


def explain_rejections(
    w: Workload,
    sites: tuple[Traffic, ...],
    cands: list[Candidate],
    routes: RouteTable,
    table: GroupTable,
    chosen: tuple[GroupPlan, ...],
    chosen_cost: float,
    cheapest_with: np.ndarray,
) -> list[Rejection]:
    """Why each candidate group that passed the filters is not in the placement."""
    taken = {(p.pool, p.variant) for p in chosen}
    best_compute = best_case_compute_s(w, sites, cands)
    out = []
    for g, c in enumerate(cands):
        if (c.pool.name, c.variant.name) in taken:
            continue
        if table.feasible[g].any():
            servable = [t.site for s, t in enumerate(sites) if table.feasible[g, 1 << s]]
            scope = "every site" if len(servable) == len(sites) else "only " + ", ".join(servable)
            with_it = float(cheapest_with[g])
            if not np.isfinite(with_it):
                reason = (f"meets the SLO for {scope}, but the other sites cannot then be served within "
                          f"spec.constraints.maxPools={w.max_pools}")
            elif w.objective == "MinLatency":
                worst = max(r.predicted_latency_ms for p in chosen for r in p.routes)
                reason = (f"meets the SLO for {scope}; not on the fastest placement within budget "
                          f"(worst p{w.percentile:g} {worst:.1f} ms)")
            else:
                reason = (f"meets the SLO for {scope}; a placement using it costs at least "
                          f"${with_it:.4f}/h (+${with_it - chosen_cost:.4f}/h)")
            out.append(Rejection(c.pool.name, c.variant.name, "Objective", reason))
        else:
            misses = [m for s, t in enumerate(sites) if (m := near_miss(w, g, s, t, c, routes, best_compute[g, s]))]
            if misses:
                reason = "no site meets the SLO here; closest: " + min(misses, key=lambda m: m.closeness).text
                out.append(Rejection(c.pool.name, c.variant.name, "Latency", reason))
            else:
                reasons = sorted({v.reason for s in range(len(sites)) for v in routes.verdicts(w, sites, cands, g, s)})
                out.append(Rejection(c.pool.name, c.variant.name, "Route", "; ".join(reasons[:3])))
    return out
