"""A scenario as a sequence of true states: the declared pools and workloads with every event up to
each step laid over them."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Iterator

from hetplace.api.errors import InvalidObject, Problem
from hetplace.api.load import Manifests
from hetplace.engine.from_api import observations_from, pool_from_spec, workload_from_spec
from hetplace.engine.observed import LinkObservation, TrafficObservation, with_links, with_traffic
from hetplace.engine.snapshot import Pool, Workload


@dataclass(frozen=True)
class TraceEvent:
    """A scenario event with its references resolved (workloads as NAMESPACE/NAME)."""

    at_s: float
    links: tuple[LinkObservation, ...] = ()
    traffic: tuple[TrafficObservation, ...] = ()
    pool_down: str | None = None
    pool_up: str | None = None


@dataclass(frozen=True)
class Conditions:
    """The true state at one step: what the network, the traffic and the pools really are."""

    t_s: float
    pools: tuple[Pool, ...]
    workloads: tuple[Workload, ...]


@dataclass(frozen=True)
class Disruption:
    """An interval [start_s, end_s) in which a link is slower than declared or a pool is down."""

    kind: str           # "link" | "pool"
    what: str           # "factory-eu-1 -> cpu-cloud-eu" | "gpu-cloud-eu"
    start_s: float
    end_s: float


@dataclass(frozen=True)
class Trace:
    """Declared pools and workloads, and what happens to them over `duration_s`."""

    name: str
    duration_s: float
    step_s: float
    pools: tuple[Pool, ...]
    workloads: tuple[Workload, ...]
    events: tuple[TraceEvent, ...]      # in time order

    @property
    def step_times(self) -> tuple[float, ...]:
        """t = 0, step, 2·step, … < duration (multiplied, not summed, so no drift)."""
        count = math.ceil(self.duration_s / self.step_s - 1e-9)
        return tuple(k * self.step_s for k in range(count))

    def conditions(self) -> Iterator[Conditions]:
        """The true state of every step: the declared spec and every event with at <= t, cumulatively."""
        links: dict[tuple[str, str], LinkObservation] = {}
        traffic: dict[tuple[str, str], TrafficObservation] = {}
        down: set[str] = set()
        pending = list(self.events)
        state: Conditions | None = None
        for t in self.step_times:
            changed = state is None
            while pending and pending[0].at_s <= t:
                event = pending.pop(0)
                links.update({(o.site, o.pool): o for o in event.links})
                traffic.update({(o.workload, o.site): o for o in event.traffic})
                down.discard(event.pool_up)
                if event.pool_down:
                    down.add(event.pool_down)
                changed = True
            if changed:
                pools = tuple(dataclasses.replace(p, down=True) if p.name in down else p
                              for p in with_links(self.pools, links.values()))
                state = Conditions(t, pools, tuple(with_traffic(w, traffic.values()) for w in self.workloads))
            else:
                state = dataclasses.replace(state, t_s=t)
            yield state

    def disruptions(self) -> tuple[Disruption, ...]:
        """When each link is slower than declared and each pool is down, as step-aligned intervals."""
        declared = {(site, p.name): link.bandwidth_kbps for p in self.pools for site, link in p.links.items()}
        open_since: dict[tuple[str, str], float] = {}
        found: list[Disruption] = []

        def close(key: tuple[str, str], end_s: float) -> None:
            found.append(Disruption(key[0], key[1], open_since.pop(key), end_s))

        for now in self.conditions():
            active = {("pool", p.name) for p in now.pools if p.down}
            active |= {("link", f"{site} -> {p.name}") for p in now.pools for site, link in p.links.items()
                       if link.bandwidth_kbps < declared.get((site, p.name), math.inf)}
            for key in active - open_since.keys():
                open_since[key] = now.t_s
            for key in open_since.keys() - active:
                close(key, now.t_s)
        for key in list(open_since):
            close(key, self.duration_s)
        return tuple(sorted(found, key=lambda d: (d.start_s, d.kind, d.what)))


def trace_from_manifests(manifests: Manifests, source: str) -> Trace:
    """The one Scenario of `manifests` over its pools and workloads; InvalidObject names what is missing
    or what an event refers to that does not exist."""
    if len(manifests.scenarios) != 1:
        found = ", ".join(s.name for s in manifests.scenarios)
        rule = ("holds no Scenario document (kind: Scenario, with durationSeconds, stepSeconds and events)"
                if not manifests.scenarios else
                f"holds {len(manifests.scenarios)} Scenario documents ({found}); give exactly one")
        raise InvalidObject([Problem(None, None, rule)], source=source)
    (scenario,) = manifests.scenarios
    for kind, objects in (("ComputePool", manifests.pools), ("InferenceWorkload", manifests.workloads)):
        if not objects:
            raise InvalidObject([Problem(None, None, f"holds no {kind}; the scenario has nothing to run on")],
                                source=source, kind="Scenario", name=scenario.name)
    pools = tuple(pool_from_spec(p.metadata.name, p.spec) for p in manifests.pools)
    workloads = tuple(workload_from_spec(w.metadata.namespace, w.metadata.name, w.spec) for w in manifests.workloads)
    pool_names = {p.name for p in pools}
    problems: list[Problem] = []
    events: list[TraceEvent] = []
    for i, e in enumerate(scenario.events):
        links, traffic, found = observations_from(e.links, e.traffic, pools, workloads, field_prefix=f"events[{i}].")
        problems += found
        for field, pool in (("poolDown", e.pool_down), ("poolUp", e.pool_up)):
            if pool is not None and pool not in pool_names:
                problems.append(Problem(f"events[{i}].{field}", pool,
                                        f"no such ComputePool (known: {', '.join(sorted(pool_names))})"))
        events.append(TraceEvent(e.at, tuple(links), tuple(traffic), e.pool_down, e.pool_up))
    if problems:
        raise InvalidObject(problems, source=source, kind="Scenario", name=scenario.name)
    return Trace(scenario.name, scenario.duration_seconds, scenario.step_seconds, pools, workloads,
                 tuple(sorted(events, key=lambda e: e.at_s)))   # stable: same-second events keep file order
