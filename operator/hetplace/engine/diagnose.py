"""Human reasons: why a workload has no placement, and why each unchosen option lost."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from hetplace.engine.decision import GroupPlan, Rejection
from hetplace.engine.groups import Candidate, GroupTable, RouteTable
from hetplace.engine.queueing import compute_latency_s
from hetplace.engine.snapshot import Traffic, Workload


LATENCY, REPLICAS, LINK, NONE = 0, 1, 2, 3


@dataclass
class Misses:
    """How close every route (candidate g, site s, encoding e) comes to feasible, on its own.

    Best case: the site alone on the candidate with every replica the pool and spec allow.
    `kind` orders misses that ratios cannot compare: a route that only misses the latency is
    closer than one needing more replicas than allowed, which is closer than one its link cannot
    carry; NONE marks hard rejections (no link, accuracy). `ratio` > 1 says by how much it missed.
    """

    w: Workload
    sites: tuple[Traffic, ...]
    cands: list[Candidate]
    routes: RouteTable
    kind: np.ndarray         # (G, k, E)
    ratio: np.ndarray        # (G, k, E)
    latency_ms: np.ndarray   # (G, k, E) best-case latency where kind is LATENCY
    most: np.ndarray         # (G,) replicas allowed

    def closest(self, g: slice | int = slice(None), s: slice | int = slice(None)) -> tuple[int, int, int] | None:
        """(g, s, e) of the closest miss among the given candidates and sites, or None."""
        chosen = np.zeros(self.kind.shape, dtype=bool)
        chosen[g, s] = True
        kind = np.where(chosen, self.kind, NONE).ravel()
        first = np.lexsort((np.where(chosen, self.ratio, np.inf).ravel(), kind))[0]
        return None if kind[first] == NONE else tuple(int(i) for i in np.unravel_index(first, self.kind.shape))

    def describe(self, g: int, s: int, e: int) -> str:
        w, cand = self.w, self.cands[g]
        label = f"{self.sites[s].site} -> {cand.pool.name}/{cand.variant.name}"
        kind, most = self.kind[g, s, e], int(self.most[g])
        if kind == LINK:
            cap = float(self.routes.link_cap[g, s])
            if cap < w.max_link_utilization - 1e-12:
                return (f"{label} with {w.encodings[e].name} would load the link to "
                        f"{self.routes.utilization[g, s, e]:.0%}, but the routes already on it meet their SLO "
                        f"only up to {max(cap, 0):.0%}")
            return (f"{label} with {w.encodings[e].name} would load the link to {self.routes.utilization[g, s, e]:.0%}, "
                    f"over spec.policy.maxLinkUtilization {w.max_link_utilization:.0%}")
        if kind == REPLICAS:
            return f"{label} would need more than {most} replicas (at most {most} fit or are allowed by spec.replicas.max)"
        ms = float(self.latency_ms[g, s, e])
        return (f"{label} with {w.encodings[e].name} predicts p{w.percentile:g} {ms:.1f} ms with {most} replicas, "
                f"{ms - w.slo_latency_ms:.1f} ms over the {w.slo_latency_ms:g} ms SLO")


def misses(w: Workload, sites: tuple[Traffic, ...], cands: list[Candidate], routes: RouteTable) -> Misses:
    most = np.array([max(1, min(c.replicas_that_fit, w.replicas_max)) for c in cands], dtype=float)
    concurrency = np.array([c.variant.concurrency for c in cands], dtype=float)
    latency = np.array([c.variant.latency_ms for c in cands], dtype=float)
    tail = np.array([c.variant.tail_latency_ms for c in cands], dtype=float)
    rps = np.array([t.requests_per_second for t in sites], dtype=float)
    shape = (len(cands), len(sites))
    compute_s = compute_latency_s(most[:, None], concurrency[:, None], np.broadcast_to(rps[None, :], shape),
                                  latency[:, None], tail[:, None], w.percentile)                  # (G, k)
    load = rps[None, :] * latency[:, None] / 1000.0
    allowed_load = w.max_utilization * (most * concurrency)[:, None]
    latency_ms = (routes.seconds + compute_s[:, :, None]) * 1000.0                                # (G, k, E)
    over_link = ~np.isfinite(routes.seconds)
    over_replicas = np.broadcast_to((load > allowed_load + 1e-9)[:, :, None], routes.seconds.shape)
    kind = np.where(over_link, LINK, np.where(over_replicas, REPLICAS, LATENCY))
    kind = np.where(np.isfinite(routes.utilization), kind, NONE)
    with np.errstate(invalid="ignore", divide="ignore"):
        ratio = np.where(kind == LINK, routes.utilization / np.maximum(routes.link_cap, 1e-9)[:, :, None],
                         np.where(kind == REPLICAS, np.broadcast_to((load / allowed_load)[:, :, None], kind.shape),
                                  latency_ms / w.slo_latency_ms))
    return Misses(w, sites, cands, routes, kind, np.where(kind == NONE, np.inf, ratio), latency_ms, most)


def _site_miss(w: Workload, sites: tuple[Traffic, ...], s: int, cands: list[Candidate], routes: RouteTable,
               found: Misses) -> str:
    best = found.closest(s=s)
    if best is not None:
        return "closest: " + found.describe(*best)
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
        found = misses(w, sites, cands, routes)
        parts = [f"site {sites[s].site} has no route within the SLO ({_site_miss(w, sites, s, cands, routes, found)})"
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
    found = misses(w, sites, cands, routes)
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
            best = found.closest(g=g)
            if best is not None:
                reason = "no site meets the SLO here; closest: " + found.describe(*best)
                out.append(Rejection(c.pool.name, c.variant.name, "Latency", reason))
            else:
                reasons = sorted({v.reason for s in range(len(sites)) for v in routes.verdicts(w, sites, cands, g, s)})
                out.append(Rejection(c.pool.name, c.variant.name, "Route", "; ".join(reasons[:3])))
    return out
