"""Benchmarks of the single-workload engine; writes JSON under bench/results/ and prints a summary.

decision-latency: time of one `solve` at 50 pools x 8 variants x 4 encodings x 8 sites (the
  issue's target: p99 < 50 ms), both objectives, plus how it grows with the number of sites.
  One untimed decision first warms the process (imports, cached subset tables), as in a
  running operator.
exactness-vs-brute-force: on instances small enough to enumerate every assignment, the
  engine's feasibility, cost and worst latency against the exhaustive optimum of tests/reference_model.py, and the speed-up
  (the exhaustive search is the baseline, timed in the same run on the same instances).
gateway: what `hetplace gateway` adds to a request against tritonclient straight to MLServer, how it
  fails over when the primary dies, and its resident memory (bench/gateway_bench.py).
netlab-bandwidth: the gateway's link bandwidth and RTT figures against tc-shaped links of the network
  lab, with and without client traffic, and the share of the link its probes took (bench/netlab_bench.py;
  needs root).

This machine is shared and noisy: compare ratios within one run, not absolute times across runs.
"""

from __future__ import annotations

import argparse
import itertools
import json
import platform
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "bench"), str(ROOT / "tests")]

import fleet  # noqa: E402
import fleet_bench  # noqa: E402
import gateway_bench  # noqa: E402
import netlab_bench  # noqa: E402
import operator_bench  # noqa: E402
import reference_model  # noqa: E402

from hetplace.engine import solve  # noqa: E402


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]


def timed(fn, *args):
    start = time.perf_counter()
    out = fn(*args)
    return out, time.perf_counter() - start


def decision_latency(instances: int, site_counts: list[int]) -> dict:
    rows = []
    for objective in ("MinCost", "MinLatency"):
        for n_sites in site_counts:
            times, feasible = [], 0
            solve(*fleet.instance(10_000 + n_sites, n_sites=n_sites, objective=objective))  # warm caches, untimed
            for seed in range(instances):
                w, snap = fleet.instance(seed, n_sites=n_sites, objective=objective)
                decision, seconds = timed(solve, w, snap)
                times.append(seconds * 1000)
                feasible += decision.feasible
            rows.append({
                "objective": objective, "pools": 50, "variants": 8, "encodings": 4, "sites": n_sites,
                "instances": instances, "feasible": feasible,
                "p50_ms": round(percentile(times, 50), 2), "p99_ms": round(percentile(times, 99), 2),
                "max_ms": round(max(times), 2), "mean_ms": round(statistics.fmean(times), 2),
            })
    return {"name": "decision-latency", "goal": "p99 < 50 ms at 50x8x4x8", "rows": rows}


def exactness(instances: int, sizes: tuple[tuple[int, int, int, int], ...]) -> dict:
    rows = []
    for (n_pools, n_variants, n_encodings, n_sites), objective in itertools.product(sizes, ("MinCost", "MinLatency")):
        agree, engine_s, brute_s, feasible = 0, 0.0, 0.0, 0
        for seed in range(instances):
            w, snap = fleet.instance(1000 + seed, n_pools, n_variants, n_encodings, n_sites, objective)
            decision, t_engine = timed(solve, w, snap)
            reference, t_brute = timed(reference_model.optimum, w, snap)
            best = reference.best
            engine_s += t_engine
            brute_s += t_brute
            feasible += decision.feasible
            same_feasibility = decision.feasible == (best is not None)
            same_cost = not decision.feasible or abs(decision.cost_per_hour - best.cost_per_hour) <= \
                1e-6 * max(1.0, best.cost_per_hour)
            same_worst = not decision.feasible or abs(decision.worst_latency_ms - best.worst_s * 1000) <= 0.01
            agree += same_feasibility and same_cost and same_worst
        rows.append({
            "objective": objective, "pools": n_pools, "variants": n_variants, "encodings": n_encodings, "sites": n_sites,
            "instances": instances, "feasible": feasible, "agree_with_brute_force": agree,
            "engine_mean_ms": round(engine_s / instances * 1000, 3),
            "brute_force_mean_ms": round(brute_s / instances * 1000, 3),
            "speedup_vs_brute_force": round(brute_s / engine_s, 1),
        })
    return {"name": "exactness-vs-brute-force", "goal": "agree on every instance", "rows": rows}


# (pools, variants, encodings, sites) small enough for the exhaustive baseline
SMOKE_SIZES = ((4, 3, 2, 2), (5, 3, 2, 3))
FULL_SIZES = ((6, 3, 2, 4), (6, 3, 3, 4))


def machine() -> dict:
    import os
    return {"python": platform.python_version(), "machine": platform.machine(), "cpus": os.cpu_count(),
            "platform": platform.platform()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, for the test suite")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    parser.add_argument("--only", action="append", default=[], help="run only this benchmark (repeatable)")
    args = parser.parse_args()
    instances = 3 if args.smoke else 200
    sites = [8] if args.smoke else [2, 4, 6, 8, 10]
    args.out.mkdir(parents=True, exist_ok=True)
    command = "python bench/run.py" + (" --smoke" if args.smoke else "") + "".join(f" --only {o}" for o in args.only)
    operator_setup = operator_bench.SMOKE if args.smoke else operator_bench.FULL
    benchmarks = {
        "decision-latency": lambda: decision_latency(instances, sites),
        "exactness-vs-brute-force": lambda: exactness(2, SMOKE_SIZES) if args.smoke else
        exactness(30, SMOKE_SIZES + FULL_SIZES),
        "fleet-optimality": lambda: fleet_bench.fleet_optimality([30], [3, 10], [0.95], 20) if args.smoke else
        fleet_bench.fleet_optimality([100, 1000, 10000], [3, 10, 50], [0.7, 0.95], 60),
        "incremental-latency": lambda: fleet_bench.incremental_latency(200, 10, 20) if args.smoke else
        fleet_bench.incremental_latency(10_000, 50, 300),
        "policy-quality": lambda: fleet_bench.policy_quality((10, 6, 24, 3600) if args.smoke else (40, 10, 24, 600)),
        "stability": lambda: fleet_bench.stability((10, 6, 2, 600) if args.smoke else (40, 10, 6, 300)),
        # the operator process against the API emulator (bench/operator_bench.py)
        "operator-throughput": lambda: operator_bench.operator_throughput(20 if args.smoke else 1000, operator_setup),
        "operator-rss": lambda: operator_bench.operator_rss([20] if args.smoke else [1000, 10_000], operator_setup),
        "operator-restart": lambda: operator_bench.operator_restart([20] if args.smoke else [250, 500, 1000],
                                                                   operator_setup),
        "operator-drift": lambda: operator_bench.operator_drift([5, 20] if args.smoke else [20, 1000],
                                                               8 if args.smoke else 200, operator_setup),
        # the gateway process in front of two MLServer processes (bench/gateway_bench.py)
        "gateway": lambda: gateway_bench.gateway_bench(gateway_bench.SMOKE if args.smoke else gateway_bench.FULL),
        # the gateway's link figures against tc-shaped links on the network lab (bench/netlab_bench.py; root)
        "netlab-bandwidth": lambda: netlab_bench.netlab_bandwidth(netlab_bench.SMOKE if args.smoke
                                                                  else netlab_bench.FULL),
    }
    unknown = set(args.only) - set(benchmarks)
    if unknown:
        parser.error(f"unknown benchmark(s) {sorted(unknown)}; known: {sorted(benchmarks)}")
    for name, run in benchmarks.items():
        if args.only and name not in args.only:
            continue
        result = run()
        result.update(machine=machine(), command=command, when=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
        (args.out / f"{result['name']}.json").write_text(json.dumps(result, indent=2) + "\n")
        print(f"\n{result['name']} ({result['goal']})")
        for table in ("rows", "overhead"):     # the gateway's JSON names its table by what it holds
            rows = result.get(table, [])
            keys = list(dict.fromkeys(k for row in rows for k in row))
            if keys:
                print(" | ".join(keys))
            for row in rows:
                print(" | ".join(str(row.get(k, "")) for k in keys))
        for key in ("failover", "rssMb", "goalsMet"):
            if key in result:
                print(f"{key}: {result[key]}")


if __name__ == "__main__":
    main()
