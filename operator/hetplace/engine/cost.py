"""What a node and a replica cost per hour, and how many replicas a pool still fits."""

from __future__ import annotations

import functools
import math

from hetplace.engine.snapshot import Pool, Resources

_FIT_EPSILON = 1e-9


def _asked(request: Resources, offered: Resources) -> list[tuple[float, float]]:
    """(requested, offered) for each resource the request actually asks for."""
    pairs = ((request.cpu_cores, offered.cpu_cores), (request.memory_bytes, offered.memory_bytes),
             (request.accelerators, offered.accelerators))
    return [(asked, given) for asked, given in pairs if asked > 0]


def dominant_share(request: Resources, node: Resources) -> float:
    """The largest fraction of one node that a replica takes (DRF-style), inf if it cannot fit."""
    return max((asked / given if given > 0 else math.inf for asked, given in _asked(request, node)), default=0.0)


def replica_cost_per_hour(pool: Pool, request: Resources) -> float:
    """A replica pays for its dominant share of a node."""
    return pool.node_cost_per_hour * dominant_share(request, pool.node)


def replicas_per_node(request: Resources, node: Resources) -> int:
    """How many replicas of `request` one empty node holds (a request for nothing fits without bound)."""
    return min((math.floor(given / asked + _FIT_EPSILON) for asked, given in _asked(request, node)),
               default=1_000_000)


def replicas_that_fit(pool: Pool, request: Resources, used: Resources) -> int:
    """Replicas the pool can still take: bounded by whole nodes and by what others already use."""
    return _replicas_that_fit(pool.node, pool.node_count, request, used)


@functools.lru_cache(maxsize=4096)
def _replicas_that_fit(node: Resources, node_count: int, request: Resources, used: Resources) -> int:
    by_nodes = node_count * replicas_per_node(request, node)
    if not _asked(request, node):
        return by_nodes
    free = Resources(
        node.cpu_cores * node_count - used.cpu_cores,
        node.memory_bytes * node_count - used.memory_bytes,
        node.accelerators * node_count - used.accelerators,
    )
    return max(0, min(by_nodes, replicas_per_node(request, free)))
