"""Benchmarks of the fleet: the global optimiser's optimality and speed, and the incremental path.

fleet-optimality: generated fleets (bench/fleet.py `fleet`) of N workloads x P pools sized to a
  load; the MILP's cost against its LP relaxation and against the bound HiGHS proved, the share
  of workloads placed, the solve time; the in-order greedy (each workload's own optimum on what
  the ones before it left) beside it in the same run, up to 1k workloads.
incremental-latency: one changed workload decided against 10k placed workloads x 50 pools
  (`place_one` on a ledger of the rest), p50/p99 over many changes.
"""

from __future__ import annotations

import random
import statistics
import time

import fleet

from hetplace.engine.fleet import place_fleet, place_in_order, place_one
from hetplace.engine.usage import Ledger

GREEDY_BASELINE_UP_TO = 1000


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]


def fleet_optimality(sizes: list[int], pool_counts: list[int], loads: list[float], time_limit_s: float) -> dict:
    rows = []
    for n in sizes:
        for pools in pool_counts:
            for load in loads:
                workloads, snap = fleet.fleet(7, n, pools, load)
                start = time.perf_counter()
                plan = place_fleet(workloads, snap, time_limit_s=time_limit_s, clock=time.perf_counter)
                seconds = time.perf_counter() - start
                row = {
                    "workloads": n, "pools": pools, "load": load, "method": plan.method,
                    "placed": plan.placed, "placed_share": round(plan.placed / n, 4),
                    "cost_per_hour": round(plan.cost_per_hour, 4),
                    "lp_bound_per_hour": round(plan.lower_bound_per_hour, 4),
                    "proven_bound_per_hour": round(plan.proven_bound_per_hour, 4),
                    "above_lp_bound_pct": round(plan.gap * 100, 3),
                    "above_proven_bound_pct": round(plan.proven_gap * 100, 3),
                    "seconds": round(seconds, 2),
                }
                if n <= GREEDY_BASELINE_UP_TO:
                    start = time.perf_counter()
                    greedy = place_in_order(workloads, snap)
                    row["greedy_seconds"] = round(time.perf_counter() - start, 2)
                    row["greedy_placed"] = sum(d.feasible for _, d in greedy)
                    row["greedy_cost_per_hour"] = round(sum(d.cost_per_hour for _, d in greedy if d.feasible), 4)
                rows.append(row)
                print(row, flush=True)
    return {"name": "fleet-optimality", "goal": "<= 1% above the LP bound, every placeable workload placed, "
                                                 "10k x 50 in < 5 s", "rows": rows}


def incremental_latency(n_workloads: int, n_pools: int, changes: int) -> dict:
    workloads, snap = fleet.fleet(11, n_workloads, n_pools, 0.7)
    placed = place_in_order(workloads, snap)      # the fleet as deployed (the greedy is enough here)
    ledger = Ledger(snap.pools, placed)
    rnd = random.Random(5)
    site_names = fleet.sites(max(fleet.FLEET_SITES, n_workloads // fleet.WORKLOADS_PER_SITE))
    times, feasible = [], 0
    for i in range(changes + 1):
        w, current = placed[rnd.randrange(len(placed))]
        changed = fleet.fleet_workload(rnd, site_names, w.name)
        start = time.perf_counter()
        decision = place_one(changed, snap, ledger, current if current.feasible else None)
        elapsed = (time.perf_counter() - start) * 1000
        if i:     # the first decision warms the process (imports, caches), as in a running operator
            times.append(elapsed)
            feasible += decision.feasible
    return {"name": "incremental-latency", "goal": "p99 < 50 ms against 10k placed x 50 pools", "rows": [{
        "placed_workloads": n_workloads, "pools": n_pools, "changes": changes, "feasible": feasible,
        "p50_ms": round(percentile(times, 50), 2), "p99_ms": round(percentile(times, 99), 2),
        "max_ms": round(max(times), 2), "mean_ms": round(statistics.fmean(times), 2)}]}


# --- policies over time --------------------------------------------------------------------------

POLICIES = ("hetplace", "static", "gpu-only", "edge-only", "oracle")
DAY_S = 86_400


def _policy_rows(trace_name: str, sim) -> list[dict]:
    oracle = sim.runs.get("oracle")
    rows = []
    for name, run in sim.runs.items():
        row = {"trace": trace_name, "policy": name, "slo_attainment_pct": round(run.slo_attainment * 100, 3),
               "mean_cost_per_hour": round(run.mean_cost_per_hour, 4), "migrations": run.migrations,
               "resizes": run.resizes}
        if oracle is not None and oracle.mean_cost_per_hour > 0:
            row["cost_vs_oracle"] = round(run.mean_cost_per_hour / oracle.mean_cost_per_hour, 4)
        rows.append(row)
    return rows


def diurnal_trace(n_workloads: int, n_pools: int, hours: float, step_s: float, seed: int = 3):
    """A day of traffic that swings from 40% to 130% of what each workload declares, each site on its
    own phase, on a fleet sized for 70% load; the busiest pool fails for four hours at midday."""
    import math

    from hetplace.engine.fleet import place_fleet
    from hetplace.engine.observed import TrafficObservation
    from hetplace.sim.trace import Trace, TraceEvent
    workloads, snap = fleet.fleet(seed, n_workloads, n_pools, 0.7)
    rnd = random.Random(seed)
    phase = {t.site: rnd.uniform(0, 2 * math.pi) for w in workloads for t in w.traffic}
    events = []
    duration = hours * 3600
    steps = int(duration // step_s)
    for k in range(steps):
        t = k * step_s
        swing = {site: 0.85 + 0.45 * math.sin(2 * math.pi * t / DAY_S + p) for site, p in phase.items()}
        events.append(TraceEvent(t, traffic=tuple(
            TrafficObservation(w.key, tr.site, round(tr.requests_per_second * swing[tr.site], 2))
            for w in workloads for tr in w.traffic)))
    busiest = max(snap.pools, key=lambda p: sum(g.pool == p.name for _, d in place_fleet(workloads, snap).decisions
                                                for g in d.groups))
    start = min(duration, 10 * 3600)
    events += [TraceEvent(start, pool_down=busiest.name), TraceEvent(min(duration, start + 4 * 3600), pool_up=busiest.name)]
    events.sort(key=lambda e: e.at_s)
    return Trace(f"diurnal-{n_workloads}x{n_pools}", duration, step_s, snap.pools, workloads, tuple(events))


def noisy_trace(n_workloads: int, n_pools: int, hours: float, step_s: float, noise: float = 0.2, seed: int = 4):
    """Nothing really changes, but every step's telemetry (each link's bandwidth, each site's
    traffic) reads up to ±noise off what was declared."""
    from hetplace.engine.observed import LinkObservation, TrafficObservation
    from hetplace.sim.trace import Trace, TraceEvent
    workloads, snap = fleet.fleet(seed, n_workloads, n_pools, 0.7)
    rnd = random.Random(seed)
    jitter = lambda: rnd.uniform(1 - noise, 1 + noise)   # noqa: E731
    events = []
    duration = hours * 3600
    for k in range(int(duration // step_s)):
        events.append(TraceEvent(
            k * step_s,
            links=tuple(LinkObservation(site, p.name, round(link.bandwidth_kbps * jitter(), 1), link.rtt_ms)
                        for p in snap.pools for site, link in p.links.items()),
            traffic=tuple(TrafficObservation(w.key, t.site, round(t.requests_per_second * jitter(), 2))
                          for w in workloads for t in w.traffic)))
    return Trace(f"noise-{int(noise * 100)}pct-{n_workloads}x{n_pools}", duration, step_s, snap.pools, workloads,
                 tuple(events))


def policy_quality(diurnal: tuple[int, int, float, float], time_limit_s: float = 10.0) -> dict:
    from pathlib import Path

    from hetplace.api.load import load_manifests
    from hetplace.sim.runner import simulate
    from hetplace.sim.trace import trace_from_manifests
    scenario = Path(__file__).resolve().parents[1] / "manifests" / "examples" / "factory-bandwidth-drop.yaml"
    rows = _policy_rows("factory-bandwidth-drop",
                        simulate(trace_from_manifests(load_manifests([scenario]), str(scenario)), POLICIES,
                                 time_limit_s=time_limit_s))
    trace = diurnal_trace(*diurnal)
    rows += _policy_rows(trace.name, simulate(trace, POLICIES, time_limit_s=time_limit_s))
    return {"name": "policy-quality", "goal": "hetplace >= 99% SLO attainment and within 5% of oracle's cost",
            "rows": rows}


def stability(size: tuple[int, int, float, float], time_limit_s: float = 10.0) -> dict:
    from hetplace.sim.runner import simulate
    trace = noisy_trace(*size)
    sim = simulate(trace, ("hetplace", "oracle"), time_limit_s=time_limit_s)
    hours = trace.duration_s / 3600
    rows = []
    for name, run in sim.runs.items():
        rows.append({"trace": trace.name, "policy": name, "workloads": len(trace.workloads), "hours": hours,
                     "migrations": run.migrations, "resizes": run.resizes,
                     "moves_per_workload_hour": round(run.migrations / len(trace.workloads) / hours, 4),
                     "resizes_per_workload_hour": round(run.resizes / len(trace.workloads) / hours, 4),
                     "slo_attainment_pct": round(run.slo_attainment * 100, 3)})
    return {"name": "stability", "goal": "<= 1 move per workload per hour under ±20% telemetry noise", "rows": rows}
