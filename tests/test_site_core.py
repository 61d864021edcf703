"""The site's routing core, link estimators and routes sources, without a network: the order routes
are tried in, how a failed route is skipped and brought back, the encoding a request states, the
deadline, a model two workloads claim, the link estimators and the probe budget, and a routes file
read again as it changes (docs/routes.md, docs/telemetry.md)."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import time

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from hetplace.site.core import (Backoff, NoRouteServed, Router, UnknownModel, UpstreamFailure)
from hetplace.site.routes import RoutesDocument
from hetplace.site.sources import FileRoutes, KubeRoutes, Workload
from hetplace.site.telemetry import (PROBE_SHARE, FailureReason, LinkTelemetry, ProbeBudget, SiteMetrics,
                                     TransferFit)

pytestmark = pytest.mark.unit

SITE = "factory-eu-1"


def route(pool: str, variant: str = "v", encoding: str = "raw", decided: bool = False, model: str = "detector") -> dict:
    return {"pool": pool, "variant": variant, "encoding": encoding, "model": model,
            "http": f"http://{pool}.svc:8000", "grpc": f"grpc://{pool}.svc:8001", "withinSlo": True,
            "decided": decided}


def document(workload: str = "factory/detector", model: str = "detector", routes: list[dict] | None = None,
             site: str = SITE) -> RoutesDocument:
    routes = routes if routes is not None else [route("arm", decided=True), route("cpu"), route("gpu", encoding="jpeg")]
    return RoutesDocument.model_validate({
        "version": 2, "workload": workload, "generation": 1, "decidedAt": "2026-01-01T00:00:00Z",
        "model": model, "sloLatencyMs": 100, "sites": {site: routes}})


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def router(*documents: RoutesDocument, clock: Clock | None = None, metrics: SiteMetrics | None = None,
           **kwargs) -> Router:
    r = Router(SITE, metrics, monotonic=clock or Clock(), **kwargs)
    r.replace(documents or [document()])
    return r


def pools(routes) -> list[str]:
    return [r.pool for r in routes]


def fail(r: Router, pool: str, workload: str = "factory/detector") -> None:
    r.health.failed((workload, pool, "v"))


# -- the order ----------------------------------------------------------------------------------------

def test_routes_are_tried_in_document_order() -> None:
    assert pools(router().plan("detector")) == ["arm", "cpu", "gpu"]


def test_a_failed_route_is_skipped_then_tried_last_rather_than_never() -> None:
    r = router()
    fail(r, "arm")
    assert pools(r.plan("detector")) == ["cpu", "gpu", "arm"]


def test_when_every_route_is_down_they_are_still_all_tried_in_order() -> None:
    r = router()
    for pool in ("arm", "cpu", "gpu"):
        fail(r, pool)
    assert pools(r.plan("detector")) == ["arm", "cpu", "gpu"]


@pytest.mark.parametrize("failures, interval_s", [(1, 1), (2, 2), (3, 4), (5, 16), (6, 30), (20, 30)],
                         ids=lambda v: str(v))
def test_a_route_stays_down_for_an_interval_doubling_from_one_second_to_thirty(failures: int, interval_s: float) -> None:
    assert Backoff().interval_s(failures) == interval_s


def test_after_its_interval_one_request_at_a_time_tries_a_failed_route_again() -> None:
    clock = Clock()
    r = router(clock=clock)
    fail(r, "arm")
    clock.now += 0.99
    assert pools(r.plan("detector"))[0] == "cpu"
    clock.now += 0.02
    assert pools(r.plan("detector"))[0] == "arm", "the interval is over: the route is tried first again"
    assert r.health.claim(("factory/detector", "arm", "v"))         # a request tries it...
    assert pools(r.plan("detector"))[0] == "cpu", "...and meanwhile the others do not"


def test_a_route_that_fails_its_trial_waits_twice_as_long_and_one_that_serves_is_live() -> None:
    clock = Clock()
    r = router(clock=clock)
    arm = ("factory/detector", "arm", "v")
    fail(r, "arm")
    clock.now += 1.0
    assert r.health.claim(arm)
    assert r.health.failed(arm) == 2.0
    clock.now += 1.5
    assert r.health.is_down(arm)
    clock.now += 0.5
    assert r.health.claim(arm)
    r.health.succeeded(arm)
    assert not r.health.is_down(arm) and r.down_routes() == []


def test_a_health_probe_brings_a_route_back_before_its_interval_is_over() -> None:
    r = router()
    fail(r, "arm")
    (workload, down), = r.down_routes()
    r.recovered(workload, down)
    assert pools(r.plan("detector")) == ["arm", "cpu", "gpu"]


@pytest.mark.parametrize("encoding, down, expected", [
    ("jpeg", (), ["gpu", "arm", "cpu"]),
    ("raw", (), ["arm", "cpu", "gpu"]),
    ("raw", ("arm",), ["cpu", "gpu", "arm"]),
    ("jpeg", ("gpu",), ["arm", "cpu", "gpu"]),
    ("unheard-of", (), ["arm", "cpu", "gpu"]),
    (None, (), ["arm", "cpu", "gpu"]),
], ids=["a request in the draining group's encoding goes there first",
        "a request in the decided encoding keeps the decided order",
        "the first live route in the encoding goes first, not a down one",
        "a down route in the stated encoding is not preferred",
        "an encoding no route sends changes nothing",
        "no stated encoding changes nothing"])
def test_the_encoding_a_request_states_picks_the_first_live_route_in_it(encoding, down, expected) -> None:
    r = router()
    for pool in down:
        fail(r, pool)
    assert pools(r.plan("detector", encoding)) == expected


def test_an_unknown_model_is_refused_by_name() -> None:
    with pytest.raises(UnknownModel, match="'resnet'"):
        router().plan("resnet")


def test_a_workload_without_routes_for_this_site_is_known_and_has_nothing_to_try() -> None:
    r = router(document(site="elsewhere"))
    assert not r.ready
    assert r.plan("detector") == []


def test_a_model_two_workloads_serve_goes_to_the_first_by_namespace_and_name_counted_once() -> None:
    metrics = SiteMetrics(SITE)
    a = document("zeta/detector", routes=[route("zeta-pool", decided=True)])
    b = document("alpha/detector", routes=[route("alpha-pool", decided=True)])
    r = router(a, b, metrics=metrics)
    assert pools(r.plan("detector")) == ["alpha-pool"]
    r.replace([b, a])
    assert pools(r.plan("detector")) == ["alpha-pool"], "the winner does not depend on the order documents arrive in"
    assert metrics.registry.get_sample_value("hetplace_gateway_model_conflicts_total", {"model": "detector"}) == 1


def test_a_workload_with_routes_here_beats_one_that_has_none_for_this_site() -> None:
    here = document("zeta/detector", routes=[route("zeta-pool", decided=True)])
    r = router(document("alpha/detector", site="elsewhere"), here)
    assert pools(r.plan("detector")) == ["zeta-pool"]


# -- the failover loop ------------------------------------------------------------------------------

def sender(answers: dict[str, object], calls: list[str]):
    """A transport that answers per pool: a value is the response, an exception is raised."""

    async def send(r, timeout_s):
        calls.append(r.pool)
        answer = answers[r.pool]
        if isinstance(answer, BaseException):
            raise answer
        if answer == "hang":
            await asyncio.sleep(3600)
        return answer

    return send


def sample(metrics: SiteMetrics, name: str, **labels) -> float:
    return metrics.registry.get_sample_value(name, labels) or 0.0


def test_a_failed_route_fails_over_to_the_next_and_the_answer_names_what_was_tried() -> None:
    metrics = SiteMetrics(SITE)
    r = router(metrics=metrics)
    calls: list[str] = []
    served = asyncio.run(r.call("detector", None, sender(
        {"arm": UpstreamFailure(FailureReason.CONNECT, "refused"), "cpu": "ok-from-cpu", "gpu": "never"}, calls)))
    assert (served.response, served.route.pool, calls) == ("ok-from-cpu", "cpu", ["arm", "cpu"])
    assert [(t.route.pool, t.reason) for t in served.tried] == [("arm", FailureReason.CONNECT)]
    site = {"namespace": "factory", "workload": "detector", "site": SITE}
    assert sample(metrics, "hetplace_gateway_failovers_total", **site) == 1
    assert sample(metrics, "hetplace_gateway_upstream_errors_total", pool="arm", reason="connect") == 1
    assert sample(metrics, "hetplace_site_requests_total", **site) == 1
    assert sample(metrics, "hetplace_request_duration_seconds_count", **site) == 1
    assert sample(metrics, "hetplace_gateway_route_in_use", **site, pool="cpu", variant="v") == 1
    assert pools(r.plan("detector")) == ["cpu", "gpu", "arm"], "the failed route is down for the next request"


def test_an_answer_the_transport_returns_is_passed_through_without_failover() -> None:
    calls: list[str] = []
    served = asyncio.run(router().call("detector", None, sender({"arm": (400, "bad input"), "cpu": "x", "gpu": "x"},
                                                                calls)))
    assert (served.response, calls, served.tried) == ((400, "bad input"), ["arm"], ())


def test_every_route_failing_raises_naming_each_route_and_why() -> None:
    calls: list[str] = []
    failures = {p: UpstreamFailure(FailureReason.SERVER_ERROR, "HTTP 503") for p in ("arm", "cpu", "gpu")}
    with pytest.raises(NoRouteServed) as refused:
        asyncio.run(router().call("detector", None, sender(failures, calls)))
    assert calls == ["arm", "cpu", "gpu"], "each route is tried once"
    assert "arm/v (HTTP 503); cpu/v (HTTP 503); gpu/v (HTTP 503)" in str(refused.value)


def test_a_route_that_hangs_gives_way_to_the_next_well_before_the_deadline() -> None:
    calls: list[str] = []
    r = Router(SITE, deadline_s=30)          # the SLO is 100 ms: an attempt may take 1 s (the floor)
    r.replace([document()])
    began = time.monotonic()
    served = asyncio.run(r.call("detector", None, sender({"arm": "hang", "cpu": "ok", "gpu": "ok"}, calls)))
    assert calls == ["arm", "cpu"] and served.route.pool == "cpu"
    assert served.tried[0].reason is FailureReason.TIMEOUT
    assert 0.9 < time.monotonic() - began < 10, "abandoned at the per-attempt cap, not the 30 s deadline"


def test_a_route_that_hangs_is_abandoned_at_the_deadline_and_named() -> None:
    calls: list[str] = []
    r = Router(SITE, deadline_s=0.3)
    r.replace([document()])
    began = time.monotonic()
    with pytest.raises(NoRouteServed) as refused:
        asyncio.run(r.call("detector", None, sender({"arm": "hang", "cpu": "ok", "gpu": "ok"}, calls)))
    assert time.monotonic() - began < 5
    assert calls == ["arm"] and refused.value.tried[0].reason is FailureReason.TIMEOUT
    assert "deadline" in str(refused.value)


def test_a_timeout_before_the_deadline_moves_on_to_the_next_route() -> None:
    calls: list[str] = []
    served = asyncio.run(router().call("detector", None, sender(
        {"arm": UpstreamFailure(FailureReason.TIMEOUT, "no answer"), "cpu": "ok", "gpu": "x"}, calls)))
    assert served.route.pool == "cpu"


def test_a_cancelled_request_releases_its_trial_of_a_route() -> None:
    clock = Clock()
    r = router(clock=clock)
    fail(r, "arm")
    clock.now += 1.0

    async def cancelled():
        task = asyncio.create_task(r.call("detector", None, sender({"arm": "hang", "cpu": "x", "gpu": "x"}, [])))
        await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(cancelled())
    assert r.health.claim(("factory/detector", "arm", "v")), "another request may try the route again"


def test_the_read_only_routes_document_lists_this_sites_routes_with_their_state() -> None:
    r = router(document(), document("other/thing", model="thing", site="elsewhere"))
    fail(r, "cpu")
    listed = json.loads(json.dumps(r.site_routes()))
    (workload,) = listed["workloads"]
    assert (workload["workload"], workload["encoding"]) == ("factory/detector", "raw")
    assert [(x["pool"], x["down"]) for x in workload["routes"]] == [("arm", False), ("cpu", True), ("gpu", False)]


# -- link figures -----------------------------------------------------------------------------------

def test_bandwidth_is_the_slope_of_transfer_time_on_bytes_whatever_the_compute_time() -> None:
    fit = TransferFit()
    bandwidth = 250_000.0
    for i in range(40):
        size = 10_000 + 5_000 * (i % 8)
        compute = 0.030 + 0.002 * ((i * 7) % 5)        # compute time varies, independent of size
        fit.add(float(i), size, 0.025 + compute + size / bandwidth)
    assert fit.bandwidth_bytes(40.0) == pytest.approx(bandwidth, rel=0.1)


@pytest.mark.parametrize("sizes, seconds, why", [
    ([50_000] * 20, [0.1 + 0.001 * (i % 3) for i in range(20)], "requests all of one size cannot separate link from compute"),
    ([10_000 * (1 + i % 4) for i in range(20)], [0.1 - 0.001 * (i % 4) for i in range(20)], "a slope below zero is noise"),
    ([10_000, 40_000] * 3, [0.05, 0.2] * 3, "too few samples"),
], ids=lambda v: v if isinstance(v, str) else "")
def test_no_bandwidth_figure_rather_than_a_guess(sizes, seconds, why) -> None:
    fit = TransferFit()
    for i, (size, s) in enumerate(zip(sizes, seconds)):
        fit.add(float(i), size, s)
    assert fit.bandwidth_bytes(float(len(sizes))) is None, why


def test_samples_older_than_the_window_no_longer_count() -> None:
    fit = TransferFit(window_s=60)
    for i in range(20):
        fit.add(float(i), 10_000 * (1 + i % 4), 0.01 + 10_000 * (1 + i % 4) / 1e6)
    assert fit.bandwidth_bytes(30.0) == pytest.approx(1e6)
    assert fit.bandwidth_bytes(100.0) is None


def test_rtt_is_the_least_recent_sample_and_a_stale_figure_is_withdrawn() -> None:
    metrics = SiteMetrics(SITE)
    links = LinkTelemetry(metrics, stale_s=300)
    for at, seconds in ((0, 0.030), (1, 0.025), (2, 0.041)):
        links.observe_rtt("cpu", at, seconds)
    links.publish(10.0)
    assert sample(metrics, "hetplace_link_rtt_seconds", site=SITE, pool="cpu") == 0.025
    links.publish(400.0)
    assert metrics.registry.get_sample_value("hetplace_link_rtt_seconds", {"site": SITE, "pool": "cpu"}) is None


def test_a_link_whose_requests_give_no_figure_is_probed_for_bandwidth_and_one_whose_do_is_not() -> None:
    links = LinkTelemetry(idle_s=30)
    first = links.plan_probes("cpu", 100.0)        # nothing accrued yet at the start
    assert first.rtt is False and first.bandwidth_sizes is None
    plan = links.plan_probes("cpu", 130.0)
    assert plan.rtt and plan.bandwidth_sizes is not None, "idle: probed"
    small, large = plan.bandwidth_sizes
    assert small < large <= links.max_probe_bytes
    seen = LinkTelemetry(idle_s=30)
    seen.plan_probes("cpu", 100.0)
    for i in range(16):     # sizes apart on a 125 KB/s link: the fit sees it
        size = 10_000 * (1 + i % 4)
        seen.observe_transfer("cpu", 110.0 + i, size, 0.02 + size / 125_000)
    assert seen.bandwidth_bytes("cpu", 127.0) == pytest.approx(125_000, rel=0.01)
    assert seen.plan_probes("cpu", 130.0).bandwidth_sizes is None, "busy and seen: not probed"
    steady = LinkTelemetry(idle_s=30)
    steady.plan_probes("cpu", 100.0)
    for i in range(16):     # a camera's images, all one size: the fit cannot separate rate from RTT
        steady.observe_transfer("cpu", 110.0 + i, 33_000, 0.02 + 33_000 / 125_000)
    assert steady.bandwidth_bytes("cpu", 127.0) is None
    assert steady.plan_probes("cpu", 130.0).bandwidth_sizes is not None, "busy but unseen: probed"


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.floats(0.0, 30.0), st.floats(1.0, 200_000.0), st.floats(1e3, 1e8)), max_size=60))
def test_probe_bytes_never_exceed_five_percent_of_the_links_bandwidth_meanwhile(steps) -> None:
    budget = ProbeBudget()
    now, allowed = 0.0, 0.0
    budget.accrue(now, 1e6)
    bandwidth = 1e6
    for dt, size, new_bandwidth in steps:
        allowed += PROBE_SHARE * bandwidth * dt       # what the link carried at the rate in force meanwhile
        now += dt
        bandwidth = new_bandwidth
        budget.spend(now, bandwidth, size)
        assert budget.spent_bytes <= allowed + 1e-6


def test_probes_of_an_idle_link_stay_within_five_percent_over_an_hour() -> None:
    links = LinkTelemetry(idle_s=30, stale_s=1e9)
    bandwidth = 200_000.0
    for size in (1_000, 10_000, 20_000, 40_000, 60_000):    # probes measured it: the budget pays at 5% of that
        links.observe_probe("cpu", 0.0, size, 0.01 + size / bandwidth)
    assert links.bandwidth_bytes("cpu", 0.0) == pytest.approx(bandwidth)
    moved = 0.0
    for tick in range(0, 3600, 10):
        plan = links.plan_probes("cpu", float(tick))
        # a refusal may quote the probe's body back: what moves is up to twice the bodies, plus headers
        moved += (400 if plan.rtt else 0) + (2 * sum(plan.bandwidth_sizes) + 1200 if plan.bandwidth_sizes else 0)
    assert 0 < moved <= PROBE_SHARE * bandwidth * 3600
    assert links.probe_spent_bytes("cpu") == moved


def test_the_site_metrics_pass_promtool() -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.fail("promtool is missing: `make test` installs Debian's prometheus")
    metrics = SiteMetrics(SITE)
    r = router(metrics=metrics)
    asyncio.run(r.call("detector", None, sender({"arm": UpstreamFailure(FailureReason.CONNECT), "cpu": "ok",
                                                 "gpu": "x"}, [])))
    metrics.link("cpu", 250_000, 0.025)
    metrics.routes_reload_error()
    metrics.routes_loaded(time.time())
    result = subprocess.run([promtool, "check", "metrics"], input=metrics.exposition(), capture_output=True)
    assert result.returncode == 0, result.stdout.decode() + result.stderr.decode()
    text = metrics.exposition().decode()
    for name in ("hetplace_site_requests_total", "hetplace_request_duration_seconds_bucket",
                 "hetplace_link_bandwidth_bytes", "hetplace_link_rtt_seconds", "hetplace_gateway_failovers_total",
                 "hetplace_gateway_upstream_errors_total", "hetplace_gateway_route_in_use",
                 "hetplace_gateway_routes_reload_errors_total", "hetplace_gateway_routes_last_load_timestamp_seconds"):
        assert f"\n{name}" in text, name


# -- routes from a file and from the API -------------------------------------------------------------

def configmap(doc: RoutesDocument | str, name: str = "detector-routes", namespace: str = "factory") -> dict:
    data = doc if isinstance(doc, str) else json.dumps(doc.wire())
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "namespace": namespace},
            "data": {"routes.json": data}}


def test_a_routes_file_is_read_again_when_it_changes_and_a_bad_document_keeps_the_last_good(tmp_path) -> None:
    metrics = SiteMetrics(SITE)
    seen: list[list[RoutesDocument]] = []
    path = tmp_path / "routes.yaml"
    first = document()
    other = document("factory/other", model="other", routes=[route("gpu", decided=True, model="other")])
    path.write_text(yaml.safe_dump({"kind": "List", "apiVersion": "v1",
                                    "items": [configmap(first), configmap(other, "other-routes")]}))
    source = FileRoutes(str(path), seen.append, metrics)
    assert source.poll() and [d.workload for d in seen[-1]] == ["factory/detector", "factory/other"]
    assert not source.poll(), "an unchanged file is not read again"

    # one ConfigMap truncated mid-write, the other edited: the edit is taken, the broken one keeps its last good
    edited = document("factory/other", model="other", routes=[route("cpu", decided=True, model="other")])
    path.write_text(yaml.safe_dump_all([configmap('{"version": 2, "workl'), configmap(edited, "other-routes")]))
    assert source.poll()
    assert {d.workload: d.sites[SITE][0].pool for d in seen[-1]} == {"factory/detector": "arm", "factory/other": "cpu"}
    assert metrics.registry.get_sample_value("hetplace_gateway_routes_reload_errors_total") == 1

    path.write_text("items: [unclosed")
    assert source.poll() and len(seen) == 2, "an unreadable file changes nothing"
    assert metrics.registry.get_sample_value("hetplace_gateway_routes_reload_errors_total") == 2

    path.write_text(yaml.safe_dump(configmap(first)))
    assert source.poll() and [d.workload for d in seen[-1]] == ["factory/detector"], "a ConfigMap gone is dropped"


@pytest.mark.parametrize("text, ok", [("factory/detector", True), ("factory", False), ("/x", False),
                                      ("a/b/c", False), ("a/", False)])
def test_a_workload_flag_is_namespace_slash_name(text: str, ok: bool) -> None:
    if ok:
        assert Workload.parse(text).configmap == "detector-routes"
    else:
        with pytest.raises(ValueError, match="NAMESPACE/NAME"):
            Workload.parse(text)


def test_api_events_keep_the_last_good_document_and_deleted_configmaps_go() -> None:
    seen: list[list[RoutesDocument]] = []
    source = KubeRoutes(core_v1=None, on_change=seen.append, namespaces=["factory"])
    source.apply("ADDED", {**configmap(document()), "metadata": {"name": "detector-routes", "namespace": "factory",
                                                                 "labels": {"app.kubernetes.io/managed-by": "hetplace"}}})
    source.apply("MODIFIED", configmap("{broken"))
    assert [d.workload for d in seen[-1]] == ["factory/detector"]
    source.apply("ADDED", configmap(document(), name="unrelated"))          # not a routes ConfigMap
    source.apply("ADDED", configmap(document(), namespace="elsewhere"))     # not a watched namespace
    assert len(seen) == 2
    source.apply("DELETED", configmap(document()))
    assert seen[-1] == []
    assert source.scopes() == [("factory", {"label_selector": "app.kubernetes.io/managed-by=hetplace"})]
    assert KubeRoutes(None, seen.append, workloads=[Workload("a", "b")]).scopes() == [
        ("a", {"field_selector": "metadata.name=b-routes"})]
    assert KubeRoutes(None, seen.append).scopes() == [(None, {"label_selector": "app.kubernetes.io/managed-by=hetplace"})]


def test_what_probes_may_take_from_a_link_is_counted_for_its_operators() -> None:
    metrics = SiteMetrics(SITE)
    links = LinkTelemetry(metrics, idle_s=30)
    links.plan_probes("cpu", 100.0)
    plan = links.plan_probes("cpu", 130.0)
    assert plan.rtt and plan.bandwidth_sizes
    counted = metrics.registry.get_sample_value("hetplace_gateway_probe_bytes_total", {"pool": "cpu"})
    assert counted == links.probe_spent_bytes("cpu") > 0
