"""The exhaustive fleet reference checked on tiny fleets whose answers are worked out by hand."""

from __future__ import annotations

import dataclasses
import math

import pytest

import reference_fleet as fleet
from hetplace.engine.snapshot import Encoding, LinkState, Pool, Resources, Snapshot, Traffic, Variant, Workload

pytestmark = pytest.mark.unit

GiB = 2**30
NODE = Resources(4, 8 * GiB)
# four cores ask a whole 4-core node: one replica costs one node-hour
CPU_VARIANT = Variant("cpu", "cpu", 0.84, 10.0, 10.0, 4, Resources(4, 4 * GiB))


def workload(name: str, site: str = "cloud", rps: float = 10.0, encodings=(Encoding("raw", 40_000),),
             variants=(CPU_VARIANT,), **kw) -> Workload:
    defaults = dict(slo_latency_ms=250.0, percentile=50.0, min_accuracy=0.8)
    return Workload("team", name, 1000, tuple(encodings), tuple(variants),
                    traffic=(Traffic(site, rps),), **{**defaults, **kw})


def cpu_pool(name: str, site: str, count: int, price: float, links=None) -> Pool:
    return Pool(name, "cpu", "eu", site, NODE, count, price, links or {})


# --- queueing ---------------------------------------------------------------------------------

@pytest.mark.parametrize(("servers", "offered_load", "waiting"), [
    pytest.param(1, 0.5, 0.5, id="one server waits as often as it is busy"),
    pytest.param(2, 1.0, 1 / 3, id="two servers at half load make one in three wait"),
    pytest.param(2, 0.5, 0.1, id="two servers at a quarter load make one in ten wait"),
])
def test_erlang_c_matches_hand_values(servers: int, offered_load: float, waiting: float) -> None:
    assert fleet.erlang_c(servers, offered_load) == pytest.approx(waiting, rel=1e-12)


def test_single_server_wait_at_the_99th_percentile_is_the_mm1_closed_form() -> None:
    w = workload("a", percentile=99.0)
    one_server = dataclasses.replace(CPU_VARIANT, concurrency=1)
    # rho = 0.5, P_w = 0.5: wait = ln(0.5 / 0.01) / (1/S - lambda) = ln 50 / 50, plus the tail 10 ms
    assert fleet.compute_seconds(w, one_server, 50.0, 1) == pytest.approx(math.log(50) / 50 + 0.010, rel=1e-12)


# --- pools shared by the fleet ----------------------------------------------------------------

CHEAP_AND_DEAR = Snapshot((cpu_pool("cheap", "cloud", 1, 0.2), cpu_pool("dear", "cloud", 4, 0.5)))


def test_two_workloads_wanting_the_one_cheap_replica_slot_split_and_pay_for_the_dear_pool() -> None:
    a, b = workload("a"), workload("b")
    alone = [fleet.fleet_optimum((w,), CHEAP_AND_DEAR) for w in (a, b)]
    assert [x.cost_per_hour for x in alone] == pytest.approx([0.2, 0.2])
    assert all(x.routes[w.key]["cloud"][0] == "cheap" for x, w in zip(alone, (a, b)))

    best = fleet.fleet_optimum((a, b), CHEAP_AND_DEAR)
    assert best.cost_per_hour == pytest.approx(0.7)
    assert sorted(best.routes[w.key]["cloud"][0] for w in (a, b)) == ["cheap", "dear"]
    assert best.optimal_assignments == 2  # either workload may take the cheap slot
    both_cheap = {w.key: {"cloud": ("cheap", "cpu", "raw")} for w in (a, b)}
    assert fleet.fleet_cost_of((a, b), CHEAP_AND_DEAR, both_cheap) is None
    assert fleet.individual_optima_conflict((a, b), CHEAP_AND_DEAR)


def test_background_usage_fills_the_cheap_pool_for_everyone() -> None:
    a, b = workload("a"), workload("b")
    busy = Snapshot(CHEAP_AND_DEAR.pools, pool_used={"cheap": Resources(1, 1 * GiB)})
    best = fleet.fleet_optimum((a, b), busy)
    assert best.cost_per_hour == pytest.approx(1.0)
    assert {best.routes[w.key]["cloud"][0] for w in (a, b)} == {"dear"}


def test_one_workload_alone_is_placed_at_the_same_cost_as_the_single_workload_reference() -> None:
    import reference_model

    w = workload("a")
    assert fleet.fleet_optimum((w,), CHEAP_AND_DEAR).cost_per_hour == pytest.approx(
        reference_model.optimum(w, CHEAP_AND_DEAR).best.cost_per_hour)


# --- links shared by the fleet ----------------------------------------------------------------

def edge_fleet(background_bytes_per_s: float = 0.0) -> Snapshot:
    """A cheap cloud pool behind a 1000 KB/s, 10 ms link from the edge, and a dear box at the edge."""
    return Snapshot(
        (cpu_pool("cloud-cpu", "cloud", 2, 0.2, {"edge": LinkState(1000, 10)}), cpu_pool("edge-cpu", "edge", 2, 0.5)),
        link_load_bytes_per_s={("edge", "cloud-cpu"): background_bytes_per_s} if background_bytes_per_s else {},
    )


RAW_AND_COMPRESSED = (Encoding("raw", 40_000), Encoding("compressed", 19_000, accuracy_delta=-0.01))


def test_a_shared_link_over_its_cap_makes_the_workload_that_can_compress_compress() -> None:
    # a may not compress (0.84 - 0.01 < 0.835); raw 10 * 41 kB + raw 10 * 41 kB = 820 kB/s > 0.8 * 1000 kB/s
    a = workload("a", "edge", encodings=RAW_AND_COMPRESSED, min_accuracy=0.835)
    b = workload("b", "edge", encodings=RAW_AND_COMPRESSED)
    snap = edge_fleet()
    both_raw = {w.key: {"edge": ("cloud-cpu", "cpu", "raw")} for w in (a, b)}
    assert fleet.fleet_cost_of((a, b), snap, both_raw) is None

    best = fleet.fleet_optimum((a, b), snap)
    assert best.cost_per_hour == pytest.approx(0.4)
    assert best.routes == {a.key: {"edge": ("cloud-cpu", "cpu", "raw")},
                           b.key: {"edge": ("cloud-cpu", "cpu", "compressed")}}
    assert best.optimal_assignments == 1
    assert best.link_load[("edge", "cloud-cpu")] == pytest.approx(410_000 + 200_000)
    assert best.replicas == {a.key: {("cloud-cpu", "cpu"): 1}, b.key: {("cloud-cpu", "cpu"): 1}}


def test_when_neither_may_compress_one_workload_moves_to_the_local_pool() -> None:
    a = workload("a", "edge", encodings=RAW_AND_COMPRESSED, min_accuracy=0.835)
    b = workload("b", "edge", encodings=RAW_AND_COMPRESSED, min_accuracy=0.835)
    best = fleet.fleet_optimum((a, b), edge_fleet())
    assert best.cost_per_hour == pytest.approx(0.2 + 0.5)
    assert sorted(best.routes[w.key]["edge"][0] for w in (a, b)) == ["cloud-cpu", "edge-cpu"]


def test_background_traffic_on_the_link_counts_against_the_cap() -> None:
    # 410 kB/s raw + 200 kB/s compressed + 200 kB/s background = 810 kB/s > 800 kB/s: b leaves the link
    a = workload("a", "edge", encodings=RAW_AND_COMPRESSED, min_accuracy=0.835)
    b = workload("b", "edge", encodings=RAW_AND_COMPRESSED)
    best = fleet.fleet_optimum((a, b), edge_fleet(200_000))
    assert best.cost_per_hour == pytest.approx(0.7)
    assert best.routes[a.key]["edge"][0] == "cloud-cpu" and best.routes[b.key]["edge"][0] == "edge-cpu"
    assert best.link_load[("edge", "cloud-cpu")] == pytest.approx(200_000 + 410_000)


def test_link_load_under_the_cap_still_slows_the_other_workload_past_its_slo() -> None:
    # alone: 10 ms + 31 kB / (1000 kB/s * 0.69) + 10 ms = 64.9 ms <= 80 ms;
    # together u = 0.62: 10 ms + 31 kB / 380 kB/s + 10 ms = 101.6 ms > 80 ms
    a = workload("a", "edge", encodings=(Encoding("raw", 30_000),), slo_latency_ms=80.0)
    b = workload("b", "edge", encodings=(Encoding("raw", 30_000),), slo_latency_ms=80.0)
    snap = edge_fleet()
    both_cloud = {w.key: {"edge": ("cloud-cpu", "cpu", "raw")} for w in (a, b)}
    evaluation = fleet.evaluate_fleet((a, b), snap, both_cloud)
    assert not evaluation.feasible and "SLO" in evaluation.reason
    alone = fleet.evaluate_fleet((a,), snap, {a.key: both_cloud[a.key]})
    assert alone.latency_ms[a.key]["edge"] == pytest.approx(10 + 31_000 / 690_000 * 1000 + 10, rel=1e-9)
    assert fleet.fleet_optimum((a, b), snap).cost_per_hour == pytest.approx(0.7)


def test_another_workloads_traffic_on_the_link_costs_this_one_a_replica() -> None:
    # a: 50 rps of 2 kB on one server per replica, 99th percentile, SLO 102 ms.
    # alone (u = 0.1): 10 ms + 2 kB / 900 kB/s + ln(50)/50 + 10 ms = 100.46 ms -> 1 replica
    # with b's 500 kB/s (u = 0.6): 10 ms + 2 kB / 400 kB/s + ln(50)/50 + 10 ms = 103.24 ms -> 2 replicas
    one_server = dataclasses.replace(CPU_VARIANT, concurrency=1)
    a = workload("a", "edge", rps=50.0, encodings=(Encoding("small", 1000),), variants=(one_server,),
                 percentile=99.0, slo_latency_ms=102.0)
    b = workload("b", "edge", rps=10.0, encodings=(Encoding("raw", 49_000),))
    snap = Snapshot((cpu_pool("cloud-cpu", "cloud", 3, 0.2, {"edge": LinkState(1000, 10)}),))
    assert fleet.fleet_optimum((a,), snap).replicas == {a.key: {("cloud-cpu", "cpu"): 1}}
    best = fleet.fleet_optimum((a, b), snap)
    assert best.replicas == {a.key: {("cloud-cpu", "cpu"): 2}, b.key: {("cloud-cpu", "cpu"): 1}}
    assert best.cost_per_hour == pytest.approx(0.6)
    assert best.workload_cost == pytest.approx({a.key: 0.4, b.key: 0.2})


# --- the evaluator's contract -----------------------------------------------------------------

def test_an_unplaced_site_is_infeasible_and_an_unknown_pool_is_an_error() -> None:
    a = workload("a")
    assert fleet.fleet_cost_of((a,), CHEAP_AND_DEAR, {a.key: {}}) is None
    assert fleet.fleet_cost_of((a,), CHEAP_AND_DEAR, {}) is None
    with pytest.raises(ValueError, match="unknown"):
        fleet.fleet_cost_of((a,), CHEAP_AND_DEAR, {a.key: {"cloud": ("nowhere", "cpu", "raw")}})


def test_no_room_for_everyone_means_no_fleet_placement() -> None:
    only_cheap = Snapshot((cpu_pool("cheap", "cloud", 1, 0.2),))
    assert fleet.fleet_optimum((workload("a"),), only_cheap) is not None
    assert fleet.fleet_optimum((workload("a"), workload("b")), only_cheap) is None


# --- the generator and the pruned search ------------------------------------------------------

def test_small_fleets_are_reproducible_enumerable_and_each_workload_fits_alone() -> None:
    for seed in range(10):
        workloads, snap = fleet.small_fleet(seed)
        assert (workloads, snap) == fleet.small_fleet(seed)
        assert 2 <= len(workloads) <= 3 and 2 <= len(snap.pools) <= 4
        assert fleet.fleet_assignment_count(workloads, snap) <= 200_000
        assert all(fleet.fleet_optimum((w,), snap) is not None for w in workloads)


def test_pruned_search_agrees_with_the_plain_cartesian_product() -> None:
    checked = 0
    for seed in range(30):
        workloads, snap = fleet.small_fleet(seed)
        if fleet.fleet_assignment_count(workloads, snap) > 2_000:
            continue
        pruned = fleet.fleet_optimum(workloads, snap)
        plain = fleet.fleet_optimum(workloads, snap, prune=False)
        assert (pruned is None) == (plain is None), seed
        if pruned is not None:
            assert pruned.cost_per_hour == pytest.approx(plain.cost_per_hour, abs=1e-9), seed
            assert pruned.optimal_assignments == plain.optimal_assignments, seed
            assert fleet.fleet_cost_of(workloads, snap, pruned.routes) == pytest.approx(pruned.cost_per_hour)
        checked += 1
    assert checked >= 15
