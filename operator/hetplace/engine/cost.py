"""What a node and a replica cost per hour, and how many replicas a pool still fits."""

from __future__ import annotations

import functools
import math

from hetplace.api.pool import tco_cost_per_hour  # noqa: F401 - the formula belongs to the spec
from hetplace.engine.snapshot import Pool, Resources

_FIT_EPSILON = 1e-9


def dominant_share(request: Resources, node: Resources) -> float:
    """The largest fraction of one node that a replica takes (DRF-style), inf if it cannot fit."""
    shares = []
    for asked, offered in (
        (request.cpu_cores, node.cpu_cores),
        (request.memory_bytes, node.memory_bytes),
        (request.accelerators, node.accelerators),
    ):
        if asked <= 0:
            continue
        if offered <= 0:
            return math.inf
        shares.append(asked / offered)
    return max(shares, default=0.0)


def replica_cost_per_hour(pool: Pool, request: Resources) -> float:
    """A replica pays for its dominant share of a node."""
    return pool.node_cost_per_hour * dominant_share(request, pool.node)


def replicas_per_node(request: Resources, node: Resources) -> int:
    """How many replicas of `request` one empty node holds."""
    fits = []
    for asked, offered in (
        (request.cpu_cores, node.cpu_cores),
        (request.memory_bytes, node.memory_bytes),
        (request.accelerators, node.accelerators),
    ):
        if asked > 0:
            fits.append(math.floor(offered / asked + _FIT_EPSILON))
    return min(fits) if fits else 1_000_000


def replicas_that_fit(pool: Pool, request: Resources, used: Resources) -> int:
    """Replicas the pool can still take: bounded by whole nodes and by what others already use."""
    return _replicas_that_fit(pool.node, pool.node_count, request, used)


@functools.lru_cache(maxsize=4096)
def _replicas_that_fit(node: Resources, node_count: int, request: Resources, used: Resources) -> int:
    by_nodes = node_count * replicas_per_node(request, node)
    if not any(v > 0 for v in (request.cpu_cores, request.memory_bytes, request.accelerators)):
        return by_nodes
    free = Resources(
        node.cpu_cores * node_count - used.cpu_cores,
        node.memory_bytes * node_count - used.memory_bytes,
        node.accelerators * node_count - used.accelerators,
    )
    return max(0, min(by_nodes, replicas_per_node(request, free)))
