"""Transfer time of one request over a site-to-pool link, slowed by the link's utilisation."""

from __future__ import annotations

import math
from dataclasses import dataclass

from hetplace.engine.snapshot import LinkState


@dataclass(frozen=True)
class Transfer:
    """A route's network leg: its utilisation of the link and its time, inf when it does not fit."""

    link_utilization: float
    seconds: float

    @property
    def fits(self) -> bool:
        return math.isfinite(self.seconds)


def transfer(
    link: LinkState,
    request_bytes: int,
    response_bytes: int,
    requests_per_second: float,
    background_bytes_per_s: float,
    max_link_utilization: float,
) -> Transfer:
    """u = (traffic already on the link + this route) / BW; t = RTT + b / (BW·(1−u))."""
    bytes_per_request = request_bytes + response_bytes
    bandwidth = link.bandwidth_bytes_per_s
    utilization = (background_bytes_per_s + requests_per_second * bytes_per_request) / bandwidth
    if utilization > max_link_utilization + 1e-12 or utilization >= 1.0:
        return Transfer(utilization, math.inf)
    seconds = link.rtt_ms / 1000.0 + bytes_per_request / (bandwidth * (1.0 - utilization))
    return Transfer(utilization, seconds)
