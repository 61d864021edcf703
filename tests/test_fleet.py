"""The global optimiser against an independent exhaustive optimum, and its promises.

tests/reference_fleet.py enumerates every fleet assignment (written apart from the engine);
here the MILP must find its cost on every small fleet, and the reference must agree that what
the MILP returns is feasible and costs what the MILP says.
"""

from __future__ import annotations

import dataclasses
import math

import pytest
import scipy.optimize
import reference_fleet
from builders import a_pool, a_workload

from hetplace.engine import Snapshot, solve
from hetplace.engine.from_api import pool_from_spec, workload_from_spec
from hetplace.engine import fleet_milp
from hetplace.engine.fleet import place_fleet, place_in_order, place_one
from hetplace.engine.usage import Ledger

SEEDS = range(60)


def routes_of(plan) -> dict[str, dict[str, tuple[str, str, str]]]:
    return {w.key: {r.site: (g.pool, g.variant, r.encoding) for g in d.groups for r in g.routes}
            for w, d in plan.decisions if d.feasible}


@pytest.mark.parametrize("seed", SEEDS, ids=lambda s: f"small fleet {s}")
def test_the_milp_finds_the_exhaustive_optimum_of_a_small_fleet(seed):
    workloads, snap = reference_fleet.small_fleet(seed)
    plan = place_fleet(workloads, snap, mip_rel_gap=1e-9)
    best = reference_fleet.fleet_optimum(workloads, snap)
    if best is None:
        assert plan.placed < len(workloads)
        return
    assert plan.placed == len(workloads), [d.reason for _, d in plan.decisions if not d.feasible]
    assert plan.cost_per_hour == pytest.approx(best.cost_per_hour, rel=1e-6)
    # the reference agrees the MILP's placement is feasible and costs what the MILP says
    assert reference_fleet.fleet_cost_of(workloads, snap, routes_of(plan)) == pytest.approx(plan.cost_per_hour,
                                                                                          rel=1e-6)
    assert plan.lower_bound_per_hour <= plan.cost_per_hour + 1e-9


@pytest.mark.parametrize("seed", range(40), ids=lambda s: f"conflicting fleet {s}")
def test_when_the_workloads_own_optima_collide_the_milp_still_finds_the_optimum(seed):
    workloads, snap = reference_fleet.small_fleet(1000 + seed, require_conflict=True)
    plan = place_fleet(workloads, snap, mip_rel_gap=1e-9)
    best = reference_fleet.fleet_optimum(workloads, snap)
    if best is None:
        assert plan.placed < len(workloads)
        return
    assert plan.method.startswith("milp")
    assert plan.placed == len(workloads)
    assert plan.cost_per_hour == pytest.approx(best.cost_per_hour, rel=1e-6)
    assert reference_fleet.fleet_cost_of(workloads, snap, routes_of(plan)) == pytest.approx(plan.cost_per_hour,
                                                                                          rel=1e-6)


def engine_pool(builder):
    pool = builder.build()
    return pool_from_spec(pool.metadata.name, pool.spec)


def engine_workload(builder):
    w = builder.build()
    return workload_from_spec(w.metadata.namespace, w.metadata.name, w.spec)


def two_tenants_one_cheap_pool():
    cheap = a_pool("cpu-cheap").cpu().site("cloud-eu").nodes(count=1, cpu="4", memory="8Gi").hourly(0.1)
    dear = a_pool("cpu-dear").cpu().site("cloud-eu").nodes(count=4, cpu="4", memory="8Gi").hourly(0.3)
    tenants = [engine_workload(a_workload(name).encoding("raw", 10_000)
                               .variant("onnx", "cpu", latency_ms=10, tail_ms=15, concurrency=2, cpu="4", memory="4Gi")
                               .slo(200).traffic("cloud-eu", 20)) for name in ("a", "b")]
    return tenants, Snapshot((engine_pool(cheap), engine_pool(dear)))


def test_a_workload_alone_gets_exactly_what_the_single_workload_engine_gives():
    workloads, snap = two_tenants_one_cheap_pool()
    plan = place_fleet(workloads[:1], snap)
    assert plan.method == "solo-optimal" and plan.gap == 0
    assert plan.decisions[0][1].groups == solve(workloads[0], snap).groups


def test_two_tenants_that_want_the_same_cheap_node_share_it_out_and_the_gap_is_reported():
    workloads, snap = two_tenants_one_cheap_pool()
    plan = place_fleet(workloads, snap, mip_rel_gap=1e-9)
    pools = sorted(g.pool for _, d in plan.decisions for g in d.groups)
    assert pools == ["cpu-cheap", "cpu-dear"]
    assert plan.cost_per_hour == pytest.approx(0.4)
    assert plan.lower_bound_per_hour == pytest.approx(0.4)
    assert plan.placed == 2 and plan.method == "milp"


def test_a_fleet_too_big_for_the_pools_places_as_many_as_fit_and_says_why_the_rest_wait():
    workloads, snap = two_tenants_one_cheap_pool()
    small = Snapshot(tuple(dataclasses.replace(p, node_count=1) for p in snap.pools))
    three = workloads + [dataclasses.replace(workloads[0], name="c")]
    plan = place_fleet(three, small, mip_rel_gap=1e-9)
    assert plan.placed == 2
    waiting = [d for _, d in plan.decisions if not d.feasible]
    assert len(waiting) == 1 and "no room beside the rest of the fleet" in waiting[0].reason
    assert plan.lower_bound_per_hour <= plan.cost_per_hour + 1e-9


def test_the_greedy_in_file_order_is_never_better_than_the_milp():
    for seed in range(20):
        workloads, snap = reference_fleet.small_fleet(2000 + seed, require_conflict=True)
        plan = place_fleet(workloads, snap, mip_rel_gap=1e-9)
        greedy = place_in_order(workloads, snap)
        placed = sum(d.feasible for _, d in greedy)
        cost = sum(d.cost_per_hour for _, d in greedy if d.feasible)
        assert (plan.placed, -plan.cost_per_hour) >= (placed, -cost - 1e-9)


def test_the_incremental_path_decides_one_workload_on_what_the_others_leave():
    workloads, snap = two_tenants_one_cheap_pool()
    first = solve(workloads[0], snap)
    assert first.groups[0].pool == "cpu-cheap"
    ledger = Ledger(snap.pools, [(workloads[0], first)])
    second = place_one(workloads[1], snap, ledger)
    assert second.feasible and second.groups[0].pool == "cpu-dear"
    ledger.add(workloads[1], second)
    # the workload's own current placement does not count against it, and the ledger is left as it was
    before = (dict(ledger.pool_used), dict(ledger.link_load))
    again = place_one(workloads[0], snap, ledger, current=first)
    assert again.groups[0].pool == "cpu-cheap"
    assert (dict(ledger.pool_used), dict(ledger.link_load)) == before


def test_every_returned_route_is_predicted_within_its_slo_under_the_fleets_own_link_load():
    for seed in range(30):
        workloads, snap = reference_fleet.small_fleet(3000 + seed, require_conflict=True)
        plan = place_fleet(workloads, snap)
        for w, d in plan.decisions:
            for g in d.groups:
                for r in g.routes:
                    assert r.predicted_latency_ms <= w.slo_latency_ms + 1e-6
                    assert r.link_utilization <= w.max_link_utilization + 1e-9
                    assert math.isfinite(r.predicted_latency_ms)


def test_a_workload_decided_after_another_never_slows_the_others_routes_past_their_slo():
    # regression: the greedy in order charged earlier workloads' load to later ones, but a later
    # one could still load a shared link until an earlier route missed its SLO
    from hetplace.engine.measure import measure_fleet
    checked = 0
    for seed in range(60):
        workloads, snap = reference_fleet.small_fleet(3000 + seed, require_conflict=True)
        placed = place_in_order(workloads, snap)
        for m in measure_fleet(placed, snap.pools):
            if m.served_by:       # a workload that found no room is reported infeasible, not served
                checked += 1
                assert m.within_slo, (seed, m)
    assert checked > 100


def test_the_fleet_keeps_to_what_placements_outside_it_tolerate_on_a_link():
    # regression: place_fleet ignored the link limits of a ledger-charged snapshot
    from hetplace.engine.measure import measure_fleet
    tight = engine_workload(a_workload("tight").encoding("raw", 50_000)
                            .variant("onnx", "cpu", latency_ms=10, tail_ms=15, concurrency=2, cpu="1", memory="1Gi")
                            .slo(120, percentile=50).traffic("factory", 4))
    cloud = engine_pool(a_pool("cpu-cloud").cpu().site("cloud").link("factory", 1000, 10).hourly(0.2))
    gpu = engine_pool(a_pool("gpu-cloud").gpu().site("cloud").nodes(count=8, cpu="4", memory="16Gi", accelerators=1)
                      .link("factory", 100_000, 10).hourly(0.8))
    snap = Snapshot((cloud, gpu))
    placed = solve(tight, snap)
    newcomers = [engine_workload(a_workload(name).encoding("raw", 50_000)
                                 .variant("onnx", "cpu", latency_ms=10, tail_ms=15, concurrency=2, cpu="1",
                                          memory="1Gi")
                                 .variant("trt", "gpu", latency_ms=2, tail_ms=3, concurrency=4, cpu="2", memory="4Gi",
                                          accelerators=1)
                                 .slo(400, percentile=50).traffic("factory", 3)) for name in ("a", "b")]
    plan = place_fleet(newcomers, Ledger(snap.pools, [(tight, placed)]).charged(snap))
    assert plan.placed == 2
    for m in measure_fleet([(tight, placed)] + list(plan.decisions), snap.pools):
        assert m.within_slo, m


def test_a_min_latency_workload_keeps_its_latency_optimum_when_the_fleet_competes():
    fast = engine_workload(a_workload("fast").encoding("raw", 10_000)
                           .variant("onnx", "cpu", latency_ms=10, tail_ms=15, concurrency=2, cpu="4", memory="4Gi")
                           .variant("trt", "gpu", latency_ms=2, tail_ms=3, concurrency=4, cpu="2", memory="4Gi",
                                    accelerators=1)
                           .slo(200).traffic("cloud-eu", 20).policy(objective="MinLatency"))
    workloads, snap = two_tenants_one_cheap_pool()
    gpu = engine_pool(a_pool("gpu-cloud").gpu().site("cloud-eu").nodes(count=1, cpu="4", memory="16Gi",
                                                                       accelerators=1).hourly(0.8))
    snap = Snapshot(snap.pools + (gpu,))
    plan = place_fleet([fast] + workloads, snap, mip_rel_gap=1e-9)
    assert plan.by_key[fast.key].groups[0].pool == "gpu-cloud"
    assert plan.lower_bound_per_hour <= plan.cost_per_hour + 1e-9


def test_a_workload_with_more_sites_than_the_exact_search_takes_still_leaves_room_for_others():
    wide = a_workload("wide").encoding("raw", 1000).variant("onnx", "cpu", latency_ms=5, tail_ms=5, concurrency=4,
                                                              cpu="1", memory="1Gi").slo(200, percentile=50)
    for i in range(11):
        wide = wide.traffic(f"site-{i:02d}", 1)
    pinned = (a_workload("pinned").encoding("raw", 1000)
              .variant("onnx", "cpu", latency_ms=5, tail_ms=5, concurrency=4, cpu="1", memory="1Gi")
              .slo(200, percentile=50).traffic("site-00", 1).pools("cheap"))
    pools = []
    for name, price in (("cheap", 0.1), ("dear", 0.5)):
        builder = a_pool(name).cpu().site("cloud").nodes(count=1, cpu="1", memory="2Gi").hourly(price)
        for i in range(11):
            builder = builder.link(f"site-{i:02d}", 100_000, 5)
        pools.append(engine_pool(builder))
    plan = place_fleet([engine_workload(wide), engine_workload(pinned)], Snapshot(tuple(pools)))
    assert plan.placed == 2


class RecordedMilp:
    """scipy's milp as fleet_milp calls it, each call recorded (integral or not, its rows); `lp_status`
    stands in for the answer of the LP relaxation when set."""

    def __init__(self, lp_status: int | None = None) -> None:
        self.calls: list[tuple[bool, list]] = []
        self.lp_status = lp_status

    def __call__(self, c, integrality=None, bounds=None, constraints=None, options=None):
        integral = bool(integrality is not None and integrality.any())
        self.calls.append((integral, list(constraints)))
        if not integral and self.lp_status is not None:
            return scipy.optimize.OptimizeResult(status=self.lp_status, x=None, fun=None,
                                                 message="time limit (recorded)")
        return scipy.optimize.milp(c, integrality=integrality, bounds=bounds, constraints=constraints,
                                   options=options)


def conflicting_fleet():
    for seed in range(1000, 1040):
        workloads, snap = reference_fleet.small_fleet(seed, require_conflict=True)
        if reference_fleet.fleet_optimum(workloads, snap) is not None:
            return workloads, snap
    raise AssertionError("no conflicting fleet with a placement among the seeds")


def test_a_large_fleets_milp_gets_no_row_over_every_column(monkeypatch):
    """HiGHS's MIP presolve ignores the time limit on a cutoff row over all of a large model's
    columns (minutes on 370,000); a fleet above RELAX_AND_FIX_PIECES is solved without one."""
    workloads, snap = conflicting_fleet()
    recorded = RecordedMilp()
    monkeypatch.setattr(fleet_milp, "milp", recorded)
    monkeypatch.setattr(fleet_milp, "RELAX_AND_FIX_PIECES", 0)     # any fleet is large
    plan = place_fleet(workloads, snap, mip_rel_gap=1e-9)
    assert plan.placed == len(workloads)
    integral = [rows for is_integral, rows in recorded.calls if is_integral]
    assert len(integral) >= 2, "relax-and-fix and the whole MILP ran"
    model_rows = integral[0][0].A.shape[0]
    assert all(len(rows) == 1 and rows[0].A.shape[0] == model_rows for rows in integral)

    recorded.calls.clear()
    monkeypatch.setattr(fleet_milp, "RELAX_AND_FIX_PIECES", 10**9)  # small again: cut off at the best so far
    place_fleet(workloads, snap, mip_rel_gap=1e-9)
    assert any(len(rows) == 2 for is_integral, rows in recorded.calls if is_integral)


def test_a_large_fleet_whose_lp_runs_out_of_time_gets_no_whole_milp(monkeypatch):
    """The whole MILP's root is the LP that just ran out of time: the greedy (repaired) stands."""
    workloads, snap = conflicting_fleet()
    recorded = RecordedMilp(lp_status=1)
    monkeypatch.setattr(fleet_milp, "milp", recorded)
    monkeypatch.setattr(fleet_milp, "RELAX_AND_FIX_PIECES", 0)
    plan = place_fleet(workloads, snap, mip_rel_gap=1e-9)
    assert recorded.calls and not any(integral for integral, _ in recorded.calls)
    assert plan.method == "greedy" and plan.placed >= 1
