"""Engine vs the brute-force reference where replica counts run into the hundreds.

The main property tests keep instances small so exhaustive search stays cheap; these keep the
search trivial (one site, one or two pools) and let the queueing side grow instead: high request
rates, big pools, percentiles on both sides of p90.
"""

from __future__ import annotations

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

import reference_model
from hetplace.engine import Snapshot, solve
from hetplace.engine.snapshot import Encoding, Pool, Resources, Traffic, Variant, Workload

pytestmark = pytest.mark.unit
GiB = 2**30


@st.composite
def busy_instances(draw):
    latency_ms = draw(st.sampled_from((2, 8, 30, 45))) * draw(st.integers(90, 110)) / 100
    variant = Variant("onnx", "cpu", 0.9, latency_ms, latency_ms * draw(st.integers(10, 20)) / 10,
                      draw(st.integers(1, 4)), Resources(1, 1 * GiB, 0))
    pools = tuple(
        Pool(f"cpu-{i}", "cpu", "eu-west-1", "cloud-eu", Resources(4, 16 * GiB, 0), draw(st.sampled_from((20, 100, 400))),
             draw(st.integers(50, 400)) / 1000)
        for i in range(draw(st.integers(1, 2)))
    )
    rps = draw(st.sampled_from((50, 500, 2000, 8000, 15000))) * draw(st.integers(90, 110)) / 100
    slo_ms = latency_ms * draw(st.sampled_from((1.01, 1.02, 1.05, 1.2, 1.6, 3.0)))
    workload = Workload("ns", "busy", 500, (Encoding("tensor", 2000),), (variant,), slo_ms,
                        draw(st.sampled_from((50, 75, 89, 90, 95, 99))), 0.0, (Traffic("cloud-eu", rps),),
                        replicas_max=draw(st.sampled_from((50, 300, 1000))),
                        max_utilization=draw(st.sampled_from((0.6, 0.8, 0.95))),
                        objective=draw(st.sampled_from(("MinCost", "MinLatency"))))
    return workload, Snapshot(pools)


def reviewed_case():
    """Found in review: p89 with the SLO just above the mean service time needs 324 replicas."""
    variant = Variant("onnx", "cpu", 0.9, 30, 45, 1, Resources(1, 1 * GiB, 0))
    pool = Pool("cpu-0", "cpu", "eu-west-1", "cloud-eu", Resources(4, 16 * GiB, 0), 100, 0.2)
    w = Workload("ns", "busy", 500, (Encoding("tensor", 2000),), (variant,), 30.6, 89, 0.0,
                 (Traffic("cloud-eu", 10000),), replicas_max=1000, max_utilization=0.95)
    return w, Snapshot((pool,))


@settings(max_examples=150, deadline=None, derandomize=True)
@given(busy_instances())
@example(reviewed_case())
def test_high_load_agrees_with_brute_force(instance):
    w, snap = instance
    decision = solve(w, snap)
    best = reference_model.optimum(w, snap).best
    assert decision.feasible == (best is not None), decision.reason
    if best is not None:
        assert decision.cost_per_hour == pytest.approx(best.cost_per_hour, rel=1e-6)
        assert decision.worst_latency_ms == pytest.approx(best.worst_s * 1000, abs=0.01)
