"""Hard constraints, one per filter: each returns None to pass or a Verdict naming itself and why."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from hetplace.engine.cost import replicas_per_node, replicas_that_fit
from hetplace.engine.snapshot import Encoding, Pool, Resources, Snapshot, Variant, Workload


@dataclass(frozen=True)
class Verdict:
    """Why a filter rejected an option."""

    filter: str
    reason: str


def _fmt_list(items: tuple[str, ...]) -> str:
    return "[" + ", ".join(items) + "]"


def _fmt_resources(r: Resources) -> str:
    gib = r.memory_bytes / 2**30
    return f"{r.cpu_cores:g} cpu, {gib:g}Gi memory, {r.accelerators} accelerators"


# --- filters on a (pool, variant) group -------------------------------------------------------

def hardware_matches(w: Workload, pool: Pool, v: Variant, snap: Snapshot) -> Verdict | None:
    if v.hardware != pool.hardware:
        return Verdict("HardwareMatch", f"variant {v.name} runs on {v.hardware}, pool {pool.name} is {pool.hardware}")
    return None


def pool_is_up(w: Workload, pool: Pool, v: Variant, snap: Snapshot) -> Verdict | None:
    if pool.down:
        return Verdict("PoolUp", f"pool {pool.name} is down")
    return None


def region_allowed(w: Workload, pool: Pool, v: Variant, snap: Snapshot) -> Verdict | None:
    if w.regions and pool.region not in w.regions:
        return Verdict(
            "Region",
            f"region {pool.region} is not in spec.constraints.regions {_fmt_list(w.regions)}",
        )
    return None


def pool_allowed(w: Workload, pool: Pool, v: Variant, snap: Snapshot) -> Verdict | None:
    if w.pools and pool.name not in w.pools:
        return Verdict("PoolList", f"pool {pool.name} is not in spec.constraints.pools {_fmt_list(w.pools)}")
    return None


def namespace_allowed(w: Workload, pool: Pool, v: Variant, snap: Snapshot) -> Verdict | None:
    if pool.allowed_namespaces and w.namespace not in pool.allowed_namespaces:
        return Verdict(
            "Tenancy",
            f"namespace {w.namespace} is not in the pool's spec.allowedNamespaces "
            f"{_fmt_list(pool.allowed_namespaces)}",
        )
    return None


def fits_a_node(w: Workload, pool: Pool, v: Variant, snap: Snapshot) -> Verdict | None:
    if replicas_per_node(v.resources, pool.node) < 1:
        return Verdict(
            "NodeFit",
            f"a replica of {v.name} ({_fmt_resources(v.resources)}) does not fit a node of "
            f"{pool.name} ({_fmt_resources(pool.node)})",
        )
    return None


def has_capacity(w: Workload, pool: Pool, v: Variant, snap: Snapshot) -> Verdict | None:
    free = replicas_that_fit(pool, v.resources, snap.pool_used.get(pool.name, Resources()))
    least = max(w.replicas_min, 1)
    if free < least:
        return Verdict(
            "Capacity",
            f"pool {pool.name} has room for {free} replicas of {v.name}, and at least {least} "
            f"(spec.replicas.min, and never fewer than 1) must fit",
        )
    return None


GroupFilter = Callable[[Workload, Pool, Variant, Snapshot], "Verdict | None"]

GROUP_FILTERS: tuple[GroupFilter, ...] = (
    hardware_matches,
    pool_is_up,
    region_allowed,
    pool_allowed,
    namespace_allowed,
    fits_a_node,
    has_capacity,
)


def first_group_rejection(w: Workload, pool: Pool, v: Variant, snap: Snapshot) -> Verdict | None:
    for check in GROUP_FILTERS:
        verdict = check(w, pool, v, snap)
        if verdict is not None:
            return verdict
    return None


# --- filters on a route (site -> pool, variant, encoding) -------------------------------------

def link_exists(site: str, pool: Pool) -> Verdict | None:
    if pool.link_from(site) is None:
        return Verdict("LinkExists", f"no link from site {site} to pool {pool.name}")
    return None


def accuracy_met(w: Workload, v: Variant, e: Encoding) -> Verdict | None:
    achieved = v.accuracy + e.accuracy_delta
    if achieved < w.min_accuracy - 1e-12:
        return Verdict(
            "Accuracy",
            f"{v.name} with {e.name} reaches accuracy {achieved:.4f}, "
            f"below spec.slo.minAccuracy {w.min_accuracy:g}",
        )
    return None


def link_utilization_verdict(site: str, pool: Pool, e: Encoding, utilization: float, limit: float,
                             cap: float | None = None) -> Verdict:
    if cap is not None and cap < limit - 1e-12:
        return Verdict(
            "LinkShared",
            f"{e.name} from {site} would load the link to {pool.name} to {utilization:.0%}; the routes already "
            f"on it meet their SLO only up to {max(cap, 0):.0%}",
        )
    return Verdict(
        "LinkUtilization",
        f"{e.name} from {site} would load the link to {pool.name} to {utilization:.0%} "
        f"(spec.policy.maxLinkUtilization {limit:.0%})",
    )
