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
    ledger = Ledger(placed)
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
