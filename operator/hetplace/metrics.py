"""The operator's Prometheus metrics: what it decided, how long that took, what it predicts and
observes per route, what placements cost, what moved, how full the pools are, and how old the
telemetry is. One registry per operator (tests make their own); names follow Prometheus
conventions (base units, `_total` counters, `_seconds`, `_ratio`)."""

from __future__ import annotations

import threading
from typing import Iterator, Mapping

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric

from hetplace.engine.decision import Decision

DECISION_OUTCOMES = ("placed", "infeasible", "invalid", "unchanged")
MOVE_REASONS = ("place", "repair", "saving")


class ServingCollector:
    """What serves each workload — its cost and its routes' predicted latency — exposed when scraped
    (a custom collector): one small tuple per workload, where a gauge child per series would hold
    an object, a lock and a value each, thousands of times over."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        # (namespace, workload) -> ($/h, ((site, pool, variant, predicted seconds), ...))
        self._serving: dict[tuple[str, str], tuple[float, tuple[tuple[str, str, str, float], ...]]] = {}

    def publish(self, namespace: str, name: str, serving: Decision | None) -> None:
        """What serves `namespace/name` now (None, or infeasible: nothing; its series go)."""
        with self._lock:
            if serving is None or not serving.feasible:
                self._serving.pop((namespace, name), None)
                return
            self._serving[(namespace, name)] = (serving.cost_per_hour, tuple(
                (r.site, g.pool, g.variant, r.predicted_latency_ms / 1000.0) for g in serving.groups for r in g.routes))

    def describe(self) -> Iterator[Metric]:
        return self._families({})

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            serving = dict(self._serving)
        return self._families(serving)

    @staticmethod
    def _families(serving: Mapping[tuple[str, str], tuple[float, tuple]]) -> Iterator[Metric]:
        latency = GaugeMetricFamily("hetplace_route_predicted_latency_seconds",
                                    "Predicted latency at the SLO percentile of a route.",
                                    labels=["namespace", "workload", "site", "pool", "variant"])
        cost = GaugeMetricFamily("hetplace_workload_cost_dollars_per_hour", "What a workload's placement costs per hour.",
                                 labels=["namespace", "workload"])
        for (namespace, name), (dollars, routes) in sorted(serving.items()):
            cost.add_metric([namespace, name], dollars)
            for site, pool, variant, seconds in routes:
                latency.add_metric([namespace, name, site, pool, variant], seconds)
        return iter((latency, cost))


class OperatorMetrics:
    """The metric families, registered in their own registry."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.decisions = Counter("hetplace_decisions", "Placement decisions by outcome.", ["outcome"], registry=r)
        self.decision_duration = Histogram(
            "hetplace_decision_duration_seconds", "Time to decide one workload (validate, snapshot, engine).",
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10), registry=r)
        self.serving = ServingCollector()
        r.register(self.serving)
        self.observed_latency = Gauge(
            "hetplace_route_observed_latency_seconds",
            "Latency clients at a site observe at the workload's SLO percentile.",
            ["namespace", "workload", "site"], registry=r)
        self.moves = Counter("hetplace_moves", "Placements the rebalance started, by reason (place, repair, saving) and kind.",
                             ["reason", "kind"], registry=r)
        self.pool_utilization = Gauge("hetplace_pool_utilization_ratio",
                                      "Share of a pool's resource held by hetplace's replicas.",
                                      ["pool", "resource"], registry=r)
        self.telemetry_age = Gauge("hetplace_telemetry_age_seconds", "Seconds since telemetry was last read fresh (NaN before the first fresh read).",
                                   ["source"], registry=r)
        self.infeasible = Gauge("hetplace_infeasible_workloads", "Workloads with no placement that meets their spec.",
                                registry=r)
        self.rebalance_cycles = Counter("hetplace_rebalance_cycles", "Rebalance cycles this instance ran as leader.",
                                        registry=r)
        self.leader = Gauge("hetplace_leader", "1 while this instance runs the rebalance loop (kopf peering).",
                            registry=r)
        for outcome in DECISION_OUTCOMES:      # present from the start, at 0, so rates work at once
            self.decisions.labels(outcome)

    def record_outcome(self, namespace: str, name: str, outcome: str, serving: Decision | None) -> None:
        """Count a decision by outcome and publish what serves: its routes' predicted latency and its
        cost (the series of routes that no longer serve are removed)."""
        self.decisions.labels(outcome).inc()
        self.serving.publish(namespace, name, serving)

    def forget(self, namespace: str, name: str) -> None:
        """A deleted workload's series go with it."""
        self.serving.publish(namespace, name, None)

    def record_observed_latency(self, by_workload: Mapping[str, Mapping[str, float]]) -> None:
        """Latency clients observe per (workload, site), in seconds; sites no longer reported are dropped."""
        self.observed_latency.clear()
        for key, sites in by_workload.items():
            namespace, name = key.split("/", 1)
            for site, ms in sites.items():
                self.observed_latency.labels(namespace, name, site).set(ms / 1000.0)

    def exposition(self) -> bytes:
        """The text format Prometheus scrapes."""
        return generate_latest(self.registry)
