"""The global optimiser: every workload's groups chosen at once under shared capacity and links.

Formulation (docs/design.md §3 "Global"). A *piece* is one candidate group of one workload serving a
subset of its sites: (pool, variant, replicas, an encoding per site), costed and sized on the
pools alone by the single-workload tables (groups.py). The MILP picks pieces:
  - binary x_i per piece, binary u_w "workload w stays unplaced" (priced far above any placement);
  - each site of w is covered by exactly one chosen piece, or w is unplaced;
  - at most one piece per (w, pool) (one variant per pool) and at most maxPools pieces per w;
  - capacity: per pool and resource, Σ replicas·request <= free capacity;
  - links: a piece's route on link ℓ meets its SLO while the total load on ℓ stays under the
    route's *tolerance* T_i = min(maxLinkUtilization·BW, BW − b/(SLO − t_comp − RTT)), so
    x_i = 1 ⇒ load(ℓ) <= T_i (a big-M row, written only where the load could exceed T_i);
  - optional maxCostPerHour per workload.
Routes' latency depends on everyone's load only through these rows, and replicas are fixed per
piece, so a chosen set of pieces is feasible under model v1 exactly when the rows hold. A
piece with one more replica tolerates more load; such pieces are offered where a link could
bind.

HiGHS solves it through scipy.optimize.milp with a time limit and a relative gap. scipy's milp
takes no initial solution, so the greedy (place_in_order: each workload's own optimum on what the
ones before it left) is offered as pieces, enters as the objective cutoff, and is returned when
HiGHS finds nothing better in time. Large models first solve the LP relaxation and search two
neighbourhoods of it (keep the greedy where the LP agrees; fix what the LP settles), then the
whole MILP cut off at the best so far. The LP relaxation gives the lower bound. With an
incumbent (what runs now), its pieces are discounted by minImprovementPercent, so the target
keeps a running placement unless moving pays. When every workload's own optimum fits beside
the others' (often, on a fleet with room), that is the optimum — the sum of solo optima bounds
any fleet placement from below — and no MILP is built.
"""

from __future__ import annotations

import dataclasses
import math
from collections import defaultdict
from dataclasses import dataclass
from typing import Callable, Mapping, Sequence

import numpy as np
from scipy import sparse
from scipy.optimize import Bounds, LinearConstraint, milp

from hetplace.engine.decision import Decision, GroupPlan, RoutePlan
from hetplace.engine.filters import first_group_rejection
from hetplace.engine.fleet import place_in_order
from hetplace.engine.groups import EPS_S, candidates, group_table, route_table
from hetplace.engine.optimise import EXACT_SITE_LIMIT, solve
from hetplace.engine.queueing import compute_latency_s
from hetplace.engine.snapshot import Pool, Resources, Snapshot, Workload
from hetplace.engine.usage import route_bytes_per_s, route_tolerance_bytes_per_s

UNPLACED_PENALTY_PER_HOUR = 1e5          # far above any placement ($1000/node-hour cap × replicas)
TIE_BREAK_PER_RANK = 1e-7                # prefers earlier encodings among equal-cost pieces
RESOURCES = ("cpu_cores", "memory_bytes", "accelerators")


@dataclass(frozen=True)
class PieceRoute:
    site: str
    encoding: str
    requests_per_second: float
    link: tuple[str, str]                # (site, pool)
    bytes_per_s: float
    payload_bytes: float
    tolerance_bytes_per_s: float         # the route meets its SLO while the link's total load stays under this
    bandwidth_bytes_per_s: float
    rtt_s: float


@dataclass(frozen=True)
class Piece:
    """One candidate group of one workload over a subset of its sites."""

    workload: int
    pool: str
    variant: str
    replicas: int
    compute_s: float
    cost_per_hour: float
    rank: int                            # Σ encoding positions: the tie-break of docs/design.md §3
    routes: tuple[PieceRoute, ...]
    request: Resources                   # per replica

    @property
    def sites(self) -> frozenset[str]:
        return frozenset(r.site for r in self.routes)


def pieces_of(w: Workload, index: int, snap: Snapshot, extra_replicas: int = 1, per_subset: int | None = None,
              all_encodings: bool = False) -> list[Piece]:
    """Candidate groups of `w` on the pools alone (others' load is the snapshot's background).

    `per_subset` keeps that many of the cheapest pools per site subset (all when None);
    `extra_replicas` adds pieces with up to that many more replicas (more tolerance to load);
    `all_encodings` offers every combination of usable encodings, not only the preferred one.
    """
    sites = tuple(sorted(w.traffic, key=lambda t: t.site))
    if not sites or len(sites) > EXACT_SITE_LIMIT:
        return []
    passed = [(pool, v) for pool in snap.pools for v in sorted(w.variants, key=lambda v: v.name)
              if first_group_rejection(w, pool, v, snap) is None]
    cands = candidates(w, snap, passed)
    if not cands:
        return []
    routes = route_table(w, snap, sites, cands)
    table = group_table(w, sites, cands, routes)
    slo_s = w.slo_latency_ms / 1000.0
    payload = np.array([e.request_bytes + w.response_bytes for e in w.encodings], dtype=float)
    g_idx, t_idx = np.nonzero(table.feasible)
    if per_subset is not None and len(g_idx):
        keep = set()
        for T in np.unique(t_idx):
            rows = g_idx[t_idx == T]
            best_by_pool: dict[str, tuple[int, int]] = {}
            for g in rows:
                key = (int(table.cost_nano[g, T]), int(table.rank_sum[g, T]))
                name = cands[g].pool.name
                if name not in best_by_pool or key < best_by_pool[name]:
                    best_by_pool[name] = (key, g)
            for _, g in sorted(best_by_pool.values())[:per_subset]:
                keep.add((int(g), int(T)))
        chosen = [(g, T) for g, T in zip(g_idx, t_idx) if (int(g), int(T)) in keep]
    else:
        chosen = list(zip(g_idx, t_idx))

    out: list[Piece] = []
    for g, T in chosen:
        cand = cands[g]
        members = [s for s in range(len(sites)) if table.members[T, s]]
        lam = sum(sites[s].requests_per_second for s in members)
        base_r = int(table.replicas[g, T])
        for r in range(base_r, min(base_r + extra_replicas, cand.replicas_that_fit, w.replicas_max) + 1):
            if r == base_r:
                compute = float(table.compute_s[g, T])
            else:
                v = cand.variant
                compute = float(compute_latency_s(np.array([r]), v.concurrency, np.array([lam]), v.latency_ms,
                                                  v.tail_latency_ms, w.percentile)[0])
            fitting = [[e for e in range(len(w.encodings))
                        if routes.seconds[g, s, e] <= slo_s - compute + EPS_S] for s in members]
            if any(not f for f in fitting):
                continue
            if all_encodings and math.prod(len(f) for f in fitting) <= MAX_ENCODING_COMBINATIONS:
                combos = _combinations(fitting)
            else:
                preferred = tuple(f[0] for f in fitting)
                lightest = tuple(min(f, key=lambda e: payload[e]) for f in fitting)
                combos = [preferred] if lightest == preferred else [preferred, lightest]
            for encs in combos:
                out.append(_piece(w, index, cand.pool, cand.variant.name, cand.variant.resources, r, compute,
                                  r * cand.replica_cost_per_hour, [sites[s] for s in members], encs, slo_s))
    return out


def _combinations(options: list[list[int]]) -> list[tuple[int, ...]]:
    combos: list[tuple[int, ...]] = [()]
    for choice in options:
        combos = [c + (e,) for c in combos for e in choice]
    return combos


def _piece(w: Workload, index: int, pool: Pool, variant: str, request: Resources, replicas: int, compute_s: float,
           cost: float, traffic, encodings: tuple[int, ...], slo_s: float) -> Piece:
    routes = []
    for t, e in zip(traffic, encodings):
        link = pool.link_from(t.site)
        enc = w.encodings[e]
        bandwidth = link.bandwidth_bytes_per_s
        payload = enc.request_bytes + w.response_bytes
        routes.append(PieceRoute(t.site, enc.name, t.requests_per_second, (t.site, pool.name),
                                 route_bytes_per_s(w, enc, t.requests_per_second), float(payload),
                                 route_tolerance_bytes_per_s(link, payload, compute_s, slo_s, w.max_link_utilization),
                                 bandwidth, link.rtt_ms / 1000.0))
    return Piece(index, pool.name, variant, replicas, compute_s, cost, sum(encodings), tuple(routes), request)


# --- checking and decoding a choice of pieces ---------------------------------------------------

def decisions_from(workloads: Sequence[Workload], chosen: Sequence[Sequence[Piece]], snap: Snapshot,
                   method: str, unplaced_reason: Callable[[Workload], str]) -> list[Decision]:
    """Decisions with each route's latency predicted under the final load of its link."""
    load: dict[tuple[str, str], float] = defaultdict(float, snap.link_load_bytes_per_s)
    for pieces in chosen:
        for p in pieces:
            for r in p.routes:
                load[r.link] += r.bytes_per_s
    out = []
    for w, pieces in zip(workloads, chosen):
        if not pieces:
            out.append(Decision(w.key, False, w.objective, 0.0, (), (), unplaced_reason(w), method=method))
            continue
        groups = []
        for p in sorted(pieces, key=lambda p: (p.pool, p.variant)):
            plans = []
            for r in sorted(p.routes, key=lambda r: r.site):
                utilization = load[r.link] / r.bandwidth_bytes_per_s
                network_s = r.rtt_s + r.payload_bytes / (r.bandwidth_bytes_per_s * (1.0 - utilization))
                plans.append(RoutePlan(r.site, r.encoding, r.requests_per_second,
                                       (network_s + p.compute_s) * 1000.0, network_s * 1000.0, p.compute_s * 1000.0,
                                       utilization))
            groups.append(GroupPlan(p.pool, p.variant, p.replicas, p.cost_per_hour, tuple(plans)))
        cost = sum(g.cost_per_hour for g in groups)
        worst = max(g.worst_latency_ms for g in groups)
        out.append(Decision(w.key, True, w.objective, cost, tuple(groups), (),
                            f"{method}: {len(groups)} group(s), ${cost:.4f}/h, worst p{w.percentile:g} "
                            f"{worst:.1f} ms <= SLO {w.slo_latency_ms:g} ms, shared with the fleet",
                            method=method))
    return out


class Room:
    """Free capacity and link tolerances while pieces are chosen one after another (the greedy)."""

    def __init__(self, snap: Snapshot) -> None:
        self.free = {p.name: _vector(p.capacity) - _vector(snap.pool_used.get(p.name, Resources()))
                     for p in snap.pools}
        self.load: dict[tuple[str, str], float] = defaultdict(float, snap.link_load_bytes_per_s)
        self.limit: dict[tuple[str, str], float] = defaultdict(lambda: math.inf, snap.link_limit_bytes_per_s)

    def fits(self, pieces: Sequence[Piece]) -> bool:
        need: dict[str, np.ndarray] = defaultdict(lambda: np.zeros(3))
        added: dict[tuple[str, str], float] = defaultdict(float)
        limit: dict[tuple[str, str], float] = {}
        for p in pieces:
            need[p.pool] = need[p.pool] + _vector(p.request) * p.replicas
            for r in p.routes:
                added[r.link] += r.bytes_per_s
                limit[r.link] = min(limit.get(r.link, math.inf), r.tolerance_bytes_per_s)
        if any((need[name] > self.free[name] + 1e-9 * np.maximum(1.0, self.free[name])).any() for name in need):
            return False
        return all(self.load[link] + rate <= min(self.limit[link], limit[link]) for link, rate in added.items())

    def take(self, pieces: Sequence[Piece]) -> None:
        for p in pieces:
            self.free[p.pool] = self.free[p.pool] - _vector(p.request) * p.replicas
            for r in p.routes:
                self.load[r.link] += r.bytes_per_s
                self.limit[r.link] = min(self.limit[r.link], r.tolerance_bytes_per_s)


def _vector(r: Resources) -> np.ndarray:
    return np.array([r.cpu_cores, r.memory_bytes, float(r.accelerators)])


# --- the solver ---------------------------------------------------------------------------------

EXHAUSTIVE_FLEET_SIZE = 12      # up to this many workloads, every encoding combination and more replicas
MAX_ENCODING_COMBINATIONS = 16  # per group and replicas in the exhaustive mode; beyond, preferred and lightest
MAX_EXHAUSTIVE_PIECES = 2000    # a workload offering more in the exhaustive mode is offered the pruned set
RELAX_AND_FIX_PIECES = 4000     # above this many pieces, workloads the LP settles are fixed before the MILP
IMPROVE_AFTER_FIX_MIN_S = 1.0   # time left after relax-and-fix worth spending on the whole MILP


def pieces_of_decision(w: Workload, index: int, d: Decision, snap: Snapshot) -> list[Piece]:
    """A decision's groups as pieces (to check them together and to offer them to the MILP)."""
    pools = {p.name: p for p in snap.pools}
    variants = {v.name: v for v in w.variants}
    encodings = [e.name for e in w.encodings]
    traffic = {t.site: t for t in w.traffic}
    return [_piece(w, index, pools[g.pool], g.variant, variants[g.variant].resources, g.replicas,
                   g.routes[0].compute_ms / 1000.0, g.cost_per_hour, [traffic[r.site] for r in g.routes],
                   tuple(encodings.index(r.encoding) for r in g.routes), w.slo_latency_ms / 1000.0)
            for g in d.groups]


def solve_fleet(workloads: Sequence[Workload], snapshot: Snapshot, *, time_limit_s: float, mip_rel_gap: float,
                clock=None, incumbent: Mapping[str, Decision] | None = None):
    from hetplace.engine.fleet import FleetPlan

    started = clock() if clock else 0.0
    elapsed = (lambda: clock() - started) if clock else (lambda: 0.0)
    workloads = list(workloads)
    solo = [solve(w, snapshot) for w in workloads]
    solo_pieces = [pieces_of_decision(w, i, d, snapshot) if d.feasible else [] for i, (w, d) in
                   enumerate(zip(workloads, solo))]
    # each MinCost workload costs at least its own optimum in any fleet; a MinLatency one is not
    # placed at its least cost, so it adds nothing to this bound
    solo_bound = sum(d.cost_per_hour for w, d in zip(workloads, solo) if d.feasible and w.objective == "MinCost")

    solo_by_key = {w.key: d for w, d in zip(workloads, solo)}

    def unplaced(w: Workload) -> str:
        d = solo_by_key[w.key]
        return d.reason if not d.feasible else "no room beside the rest of the fleet (capacity or link bandwidth)"

    def plan(chosen, method, bound, proven=None) -> FleetPlan:
        decisions = decisions_from(workloads, chosen, snapshot, method, unplaced)
        decisions = [_with_rejections(d, s) for d, s in zip(decisions, solo)]
        cost = sum(d.cost_per_hour for d in decisions if d.feasible)
        return FleetPlan(tuple(zip(workloads, decisions)), cost, bound, method, elapsed(),
                         sum(d.feasible for d in decisions), bound if proven is None else max(bound, proven))

    def worth_leaving(w: Workload, d: Decision) -> bool:
        running = (incumbent or {}).get(w.key)
        return running is None or not running.feasible or running.fingerprint() == d.fingerprint() or \
            not _pieces_of_running(w, 0, running, snapshot) or \
            d.cost_per_hour <= running.cost_per_hour * (1 - w.min_improvement_percent / 100.0)

    if _fit_together(solo_pieces, snapshot) and all(worth_leaving(w, d) for w, d in zip(workloads, solo)):
        return plan(solo_pieces, "solo-optimal", solo_bound, solo_bound)

    # The fast greedy (each workload in turn on what the ones before it left) is the cutoff and
    # the fallback; its placements are offered to the MILP too, so the MILP never does worse.
    greedy_decisions = [d for _, d in place_in_order(workloads, snapshot, explain=False)]
    greedy = [pieces_of_decision(w, i, d, snapshot) if d.feasible else [] for i, (w, d) in
              enumerate(zip(workloads, greedy_decisions))]
    exhaustive = len(workloads) <= EXHAUSTIVE_FLEET_SIZE
    offered: list[list[Piece]] = []
    for i, w in enumerate(workloads):
        if not solo[i].feasible:
            offered.append([])
            continue
        if w.objective == "MinLatency":
            # held to its latency-optimal placement (alone, or on what the workloads before it
            # left): cost may only decide between those
            offered.append(_unique(solo_pieces[i] + greedy[i]))
            continue
        if len(w.traffic) > EXACT_SITE_LIMIT:
            # too many sites for the subset tables: offer its placement without each pool it uses
            found = [p for pool in {g.pool for g in solo[i].groups}
                     for p in _pieces_without(w, i, snapshot, pool)]
            offered.append(_unique(solo_pieces[i] + greedy[i] + found))
            continue
        found = pieces_of(w, i, snapshot, extra_replicas=3 if exhaustive else 1,
                          per_subset=None if exhaustive else 3, all_encodings=exhaustive)
        if exhaustive and len(found) > MAX_EXHAUSTIVE_PIECES:
            found = pieces_of(w, i, snapshot, extra_replicas=1, per_subset=3)
        offered.append(_unique(solo_pieces[i] + greedy[i] + found))

    # What runs now is offered too, priced down by the saving a move would have to beat
    # (minImprovementPercent): the target then moves a workload only when that pays, or when
    # something else needs its room — so it agrees with the hysteresis it is filtered by.
    bonus: dict[tuple, float] = {}
    for i, w in enumerate(workloads):
        running = (incumbent or {}).get(w.key)
        for p in _pieces_of_running(w, i, running, snapshot) if offered[i] and running is not None else ():
            bonus[_key(p)] = p.cost_per_hour * w.min_improvement_percent / 100.0
            offered[i] = _unique(offered[i] + [p])
    model = _model(workloads, offered, snapshot, bonus)
    # the time limit is HiGHS's: it counts from here (building the pieces is reported in solve_seconds)
    solver_start = elapsed()
    left = lambda: max(0.1, time_limit_s - (elapsed() - solver_start))   # noqa: E731
    # One MILP places as many workloads as it can (leaving one out costs more than any placement)
    # at the least cost, never worse than the greedy. The penalties inflate the objective, so the
    # relative gap HiGHS stops at is scaled to speak of the fleet's dollars.
    c = model.objective(penalised=True)
    penalised = max(float(c @ model.vector(greedy)), 1e-9)
    dollars = max(float(model.dollars @ model.vector(greedy)), 1e-9)
    chosen, method, proven = model.solve(c, greedy, left(), max(1e-9, mip_rel_gap * dollars / penalised), left,
                                         repair=lambda found: _repaired(found, offered, solo_pieces, greedy,
                                                                        snapshot))
    proven -= UNPLACED_PENALTY_PER_HOUR * sum(1 for ps in chosen if not ps) + sum(bonus.values())
    chosen = _polished(chosen, offered, snapshot)
    left_out = sum(1 for c in chosen if not c)
    bound = model.lp_bound(left_out, max(left(), time_limit_s / 4))
    if left_out == 0:
        bound = max(bound, solo_bound)
    return plan(chosen, method, bound, proven)


def _pieces_of_running(w: Workload, index: int, running: Decision, snap: Snapshot) -> list[Piece]:
    """A running placement as pieces, when everything it names still exists and is up."""
    pools = {p.name: p for p in snap.pools}
    if not running.feasible or any(g.pool not in pools or pools[g.pool].down for g in running.groups):
        return []
    if not {g.variant for g in running.groups} <= {v.name for v in w.variants} or \
            not {r.encoding for g in running.groups for r in g.routes} <= {e.name for e in w.encodings} or \
            {r.site for g in running.groups for r in g.routes} != {t.site for t in w.traffic}:
        return []
    return pieces_of_decision(w, index, running, snap)


def _repaired(chosen: list[list[Piece]], offered, solo_pieces, greedy, snap: Snapshot) -> list[list[Piece]]:
    """Workloads a solution left out placed where they still fit: their own optimum, their greedy
    placement, or their cheapest single group."""
    room = Room(snap)
    for pieces in chosen:
        room.take(pieces)
    out = [list(ps) for ps in chosen]
    for i, pieces in enumerate(out):
        if pieces or not offered[i]:
            continue
        sites = {r.site for p in offered[i] for r in p.routes}
        options = [o for o in (solo_pieces[i], greedy[i]) if o] + \
            [[p] for p in sorted(offered[i], key=lambda p: p.cost_per_hour) if p.sites == sites]
        pick = next((o for o in options if room.fits(o)), None)
        if pick:
            room.take(pick)
            out[i] = pick
    return out


def _pieces_without(w: Workload, index: int, snap: Snapshot, pool: str) -> list[Piece]:
    d = solve(w, dataclasses.replace(snap, pools=tuple(p for p in snap.pools if p.name != pool)), explain=False)
    return pieces_of_decision(w, index, d, snap) if d.feasible else []


def _fit_together(chosen: Sequence[Sequence[Piece]], snap: Snapshot) -> bool:
    room = Room(snap)
    for pieces in chosen:
        if not room.fits(pieces):
            return False
        room.take(pieces)
    return True


def _with_rejections(d: Decision, solo: Decision) -> Decision:
    return dataclasses.replace(d, rejected=solo.rejected)


def _key(p: Piece) -> tuple:
    return p.workload, p.pool, p.variant, p.replicas, tuple((r.site, r.encoding) for r in p.routes)


def _unique(pieces: list[Piece]) -> list[Piece]:
    seen, out = set(), []
    for p in pieces:
        if _key(p) not in seen:
            seen.add(_key(p))
            out.append(p)
    return out


@dataclass
class _Model:
    """The MILP over pieces: columns are the pieces, then one 'unplaced' column per workload."""

    cost: np.ndarray               # $/h of each column, tie-break included; 0 for unplaced columns
    dollars: np.ndarray            # $/h of each column alone
    tie_break_slack: float         # the most the tie-breaks can add to any objective value
    bounds: Bounds
    rows: list[LinearConstraint]
    pieces: list[Piece]
    workloads: int

    def __post_init__(self) -> None:
        self._columns = {_key(p): j for j, p in enumerate(self.pieces)}

    @property
    def unplaced_columns(self) -> np.ndarray:
        n = len(self.pieces)
        return np.arange(n, n + self.workloads)

    def objective(self, penalised: bool) -> np.ndarray:
        c = self.cost.copy()
        c[self.unplaced_columns] = UNPLACED_PENALTY_PER_HOUR if penalised else 0.0
        return c


    def _rows(self, c: np.ndarray, left_out: int | None, cutoff: float | None) -> list[LinearConstraint]:
        rows = list(self.rows)
        if left_out is not None:
            count = np.zeros((1, len(c)))
            count[0, self.unplaced_columns] = 1.0
            rows.append(LinearConstraint(count, left_out, left_out))
        if cutoff is not None:
            rows.append(LinearConstraint(c[None, :], -np.inf, cutoff * (1 + 1e-6) + 1e-6))
        return rows

    def column_of(self, piece: Piece) -> int:
        return self._columns[_key(piece)]

    def vector(self, chosen: Sequence[Sequence[Piece]]) -> np.ndarray:
        """The column vector of a choice of pieces (a workload with none is unplaced)."""
        x = np.zeros(len(self.cost))
        for w, pieces in enumerate(chosen):
            for p in pieces:
                x[self.column_of(p)] = 1.0
            if not pieces:
                x[len(self.pieces) + w] = 1.0
        return x

    def chosen(self, x: np.ndarray) -> list[list[Piece]]:
        out: list[list[Piece]] = [[] for _ in range(self.workloads)]
        for i in np.nonzero(x[: len(self.pieces)] > 0.5)[0]:
            out[self.pieces[i].workload].append(self.pieces[i])
        return out

    def solve(self, c: np.ndarray, incumbent: Sequence[Sequence[Piece]], time_limit_s: float, mip_rel_gap: float,
              clock_left=None, repair=None) -> tuple[list[list[Piece]], str, float]:
        """(pieces per workload, method, a proven bound on the objective), never worse than `incumbent`.

        Above RELAX_AND_FIX_PIECES the LP relaxation is solved first, every workload it places
        integrally is fixed there and the MILP decides the contested ones (most of a large fleet
        is not contested); `repair` then places what that left out where it still fits. Then, with
        time left, the whole MILP (cut off at the best so far, for a model that is not large)
        improves on it or proves it.

        A large model gets no cutoff row: a row over every column sends HiGHS's MIP presolve
        (dominatedColumns) into work that does not look at the time limit — seen running > 12 min
        with 4.5 s left on 370,000 columns, where the same MILP without it stopped at 6 s. Each
        answer is compared with the best so far instead. Nor does a large model get the whole MILP
        when its LP relaxation did not solve in time: that LP is the MILP's root.
        """
        left = clock_left or (lambda: time_limit_s)
        best = self.vector(incumbent)
        best_value, method, bound = float(c @ best), "greedy", -math.inf
        large = len(self.pieces) > RELAX_AND_FIX_PIECES
        lp_solved = True
        if large:
            lp = milp(c, integrality=np.zeros_like(c), bounds=self.bounds, constraints=self.rows,
                      options={"time_limit": max(0.1, left() / 2)})
            lp_solved = lp.status == 0
            if lp_solved:
                bound = float(lp.fun)
                # two neighbourhoods of the LP: (1) keep the incumbent where the LP agrees with it and
                # re-decide the rest (feasible by construction: the incumbent is one answer); (2) fix
                # what the LP settles integrally and re-decide the rest, then repair what it left out
                for bounds in (self._fixed_where_agreeing(lp.x, best), self._fixed_where_integral(lp.x)):
                    found = milp(c, integrality=np.ones_like(c), bounds=bounds, constraints=self.rows,
                                 options={"time_limit": max(0.1, left() / 3), "mip_rel_gap": mip_rel_gap})
                    if found.x is not None and found.status in (0, 1):
                        x = self.vector(repair(self.chosen(found.x))) if repair else found.x
                        if float(c @ x) < best_value:
                            best, best_value, method = x, float(c @ x), "milp-relax-and-fix"
        if not large or (lp_solved and left() >= IMPROVE_AFTER_FIX_MIN_S):
            whole = milp(c, integrality=np.ones_like(c), bounds=self.bounds,
                         constraints=self._rows(c, None, None if large else best_value),
                         options={"time_limit": max(0.1, left()), "mip_rel_gap": mip_rel_gap})
            dual = getattr(whole, "mip_dual_bound", None)
            if whole.status == 2 and not large:     # nothing better under the cutoff: the best so far is optimal
                bound = max(bound, best_value)
                method = "milp"
            elif whole.x is not None and whole.status in (0, 1):
                if float(c @ whole.x) <= best_value + 1e-9 * max(1.0, abs(best_value)):
                    best, best_value = whole.x, float(c @ whole.x)
                    method = "milp" if whole.status == 0 else "milp-time-limit"
                elif whole.status == 0:     # the search finished: what it kept is within the gap of optimal
                    method = "milp"
                if dual is not None and np.isfinite(dual):
                    bound = max(bound, float(dual))
            elif dual is not None and np.isfinite(dual):
                bound = max(bound, float(dual))
        return self.chosen(best), method, bound - self.tie_break_slack

    def _owner(self) -> np.ndarray:
        return np.concatenate([[p.workload for p in self.pieces], np.arange(self.workloads)])

    def _fixed_where_agreeing(self, x: np.ndarray, incumbent: np.ndarray) -> Bounds:
        """Bounds with every workload on which the LP and the incumbent agree fixed to the incumbent."""
        owner = self._owner()
        differs = np.zeros(self.workloads, dtype=bool)
        np.logical_or.at(differs, owner, np.abs(x - incumbent) > 1e-6)
        fix = ~differs[owner]
        lower, upper = self.bounds.lb.copy(), self.bounds.ub.copy()
        lower[fix] = upper[fix] = incumbent[fix]
        return Bounds(lower, upper)

    def _fixed_where_integral(self, x: np.ndarray) -> Bounds:
        """Bounds with the columns of every workload the LP placed integrally fixed to the LP's values."""
        owner = self._owner()
        fractional = np.abs(x - np.round(x)) > 1e-6
        unsettled = np.zeros(self.workloads, dtype=bool)
        np.logical_or.at(unsettled, owner, fractional)
        fix = ~unsettled[owner]
        lower, upper = self.bounds.lb.copy(), self.bounds.ub.copy()
        lower[fix] = upper[fix] = np.round(x[fix])
        return Bounds(lower, upper)

    def lp_bound(self, left_out: int, time_limit_s: float) -> float:
        """The LP relaxation's cost with exactly `left_out` workloads unplaced: a lower bound on the
        cost of any placement that places as many (the MILP's count is the most it can place)."""
        c = self.dollars
        lp = milp(c, integrality=np.zeros_like(c), bounds=self.bounds, constraints=self._rows(c, left_out, None),
                  options={"time_limit": time_limit_s})
        return float(lp.fun) if lp.status == 0 else 0.0


def _model(workloads, offered, snap: Snapshot, bonus: Mapping[tuple, float] | None = None) -> _Model:
    pieces = [p for ps in offered for p in ps]
    n, W = len(pieces), len(workloads)
    bonus = bonus or {}
    c = np.concatenate([[p.cost_per_hour + TIE_BREAK_PER_RANK * p.rank - bonus.get(_key(p), 0.0) for p in pieces],
                        np.zeros(W)])
    upper = np.ones(n + W)
    entries: list[tuple[int, int, float]] = []
    lower: list[float] = []
    upper_rows: list[float] = []

    def row(coefficients, lo, hi):
        # rows in bytes/s and bytes are scaled to their largest coefficient: HiGHS's tolerances
        # are absolute, and a 1e9-sized row beside 1-sized ones misleads its presolve
        coefficients = list(coefficients)
        scale = max((abs(a) for _, a in coefficients), default=1.0) or 1.0
        r = len(lower)
        entries.extend((r, j, a / scale) for j, a in coefficients)
        lower.append(lo / scale)
        upper_rows.append(hi / scale)

    covering: dict[tuple[int, str], list[int]] = defaultdict(list)
    per_pool: dict[tuple[int, str], list[int]] = defaultdict(list)
    per_workload: dict[int, list[int]] = defaultdict(list)
    on_link: dict[tuple[str, str], list[tuple[int, float, float]]] = defaultdict(list)
    in_pool: dict[str, list[int]] = defaultdict(list)
    for j, p in enumerate(pieces):
        per_pool[(p.workload, p.pool)].append(j)
        per_workload[p.workload].append(j)
        in_pool[p.pool].append(j)
        for r in p.routes:
            covering[(p.workload, r.site)].append(j)
            on_link[r.link].append((j, r.bytes_per_s, r.tolerance_bytes_per_s))

    for i, w in enumerate(workloads):
        for t in w.traffic:
            row([(j, 1.0) for j in covering[(i, t.site)]] + [(n + i, 1.0)], 1.0, 1.0)
        if len({t.site for t in w.traffic}) > w.max_pools:
            row([(j, 1.0) for j in per_workload[i]], -np.inf, w.max_pools)
        if w.max_cost_per_hour is not None:
            row([(j, pieces[j].cost_per_hour) for j in per_workload[i]], -np.inf, w.max_cost_per_hour + 1e-9)
    for js in per_pool.values():
        if len(js) > 1:
            row([(j, 1.0) for j in js], -np.inf, 1.0)
    pools = {p.name: p for p in snap.pools}
    for name, js in in_pool.items():
        free = _vector(pools[name].capacity) - _vector(snap.pool_used.get(name, Resources()))
        for k in range(3):
            usage = [(j, pieces[j].replicas * _vector(pieces[j].request)[k]) for j in js]
            most_by_workload: dict[int, float] = defaultdict(float)
            for j, a in usage:
                most_by_workload[pieces[j].workload] = max(most_by_workload[pieces[j].workload], a)
            worst = sum(most_by_workload.values())
            if worst > free[k] + 1e-9:
                row([(j, a) for j, a in usage if a > 0], -np.inf, free[k] + 1e-9 * max(1.0, abs(free[k])))
    for link, users in on_link.items():
        # x_j = 1 ⇒ load <= T_j. One plain row holds the loosest tolerance (load is 0 when no piece
        # on the link is chosen); big-M rows only for the pieces that tolerate less, with M cut to it.
        background = snap.link_load_bytes_per_s.get(link, 0.0)
        heaviest: dict[int, float] = defaultdict(float)
        # what the placements outside this solve tolerate on the link bounds every piece's tolerance
        outside = snap.link_limit_bytes_per_s.get(link, math.inf)
        users = [(j, a, min(limit, outside)) for j, a, limit in users]
        for j, a, _ in users:
            heaviest[pieces[j].workload] = max(heaviest[pieces[j].workload], a)
        most = background + sum(heaviest.values())
        loosest = max(limit for _, _, limit in users)
        ceiling = min(most, loosest)
        if loosest < most:
            row([(j, a) for j, a, _ in users], -np.inf, loosest - background)
        for j, a, limit in users:
            if limit < background + a:
                upper[j] = 0.0
            elif limit < ceiling:
                big_m = ceiling - limit
                row([(jj, aa) for jj, aa, _ in users if jj != j] + [(j, a + big_m)], -np.inf,
                    limit - background + big_m)
    r_idx, c_idx, vals = zip(*entries) if entries else ((), (), ())
    matrix = sparse.csr_array((vals, (r_idx, c_idx)), shape=(len(lower), n + W))
    dollars = np.concatenate([[p.cost_per_hour for p in pieces], np.zeros(W)])
    slack = TIE_BREAK_PER_RANK * sum(max((p.rank for p in ps), default=0) * len(w.traffic)
                                     for w, ps in zip(workloads, offered))
    return _Model(c, dollars, slack, Bounds(np.zeros(n + W), upper), [LinearConstraint(matrix, lower, upper_rows)], pieces, W)


def _polished(chosen: list[list[Piece]], offered: list[list[Piece]], snap: Snapshot) -> list[list[Piece]]:
    """Each chosen piece swapped for an equal-cost one with earlier encodings where that still fits
    (the MILP's gap is far wider than the tie-break it carries)."""
    chosen = [list(c) for c in chosen]
    load: dict[tuple[str, str], float] = defaultdict(float, snap.link_load_bytes_per_s)
    users: dict[tuple[str, str], list[Piece]] = defaultdict(list)
    for pieces in chosen:
        for p in pieces:
            for r in p.routes:
                load[r.link] += r.bytes_per_s
                users[r.link].append(p)
    for w, pieces in enumerate(chosen):
        for k, p in enumerate(pieces):
            better = sorted((q for q in offered[w] if q.pool == p.pool and q.variant == p.variant
                             and q.replicas == p.replicas and q.sites == p.sites and q.rank < p.rank),
                            key=lambda q: q.rank)
            for q in better:
                new_load = {r.link: load[r.link] - next(o.bytes_per_s for o in p.routes if o.link == r.link)
                            + r.bytes_per_s for r in q.routes}
                limits_ok = all(
                    new_load[r.link] <= min([r.tolerance_bytes_per_s] +
                                            [o.tolerance_bytes_per_s for u in users[r.link] if u is not p
                                             for o in u.routes if o.link == r.link])
                    for r in q.routes)
                if limits_ok:
                    for r in q.routes:
                        load[r.link] = new_load[r.link]
                        users[r.link] = [q if u is p else u for u in users[r.link]]
                    pieces[k] = q
                    break
    return chosen
