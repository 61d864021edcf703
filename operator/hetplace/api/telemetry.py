"""Observed links and traffic, as read from a telemetry file (`hetplace explain --telemetry`)."""

from __future__ import annotations

from pydantic import Field, field_validator

from hetplace.api.pool import Link
from hetplace.api.wire import WORKLOAD_REF_PATTERN, DnsLabel, SpecModel, Token, unique_by

MAX_OBSERVATIONS = 4096


class LinkObservation(Link):
    """Bandwidth and RTT measured from a client site to a pool; overrides the pool's declared link."""

    pool: DnsLabel
    """The ComputePool the link leads to."""


class TrafficObservation(SpecModel):
    """Request rate measured from a client site for a workload; overrides the workload's traffic."""

    workload: str = Field(max_length=127, pattern=WORKLOAD_REF_PATTERN)
    """NAMESPACE/NAME of the workload, or NAME when only one workload has that name."""
    site: Token
    requests_per_second: float = Field(ge=0, le=1_000_000)


class TelemetryFile(SpecModel):
    """Link and traffic observations that replace the declared values for one decision."""

    links: list[LinkObservation] = Field(default_factory=list, max_length=MAX_OBSERVATIONS)
    traffic: list[TrafficObservation] = Field(default_factory=list, max_length=MAX_OBSERVATIONS)

    @field_validator("links")
    @classmethod
    def _one_per_link(cls, links: list[LinkObservation]) -> list[LinkObservation]:
        return unique_by(links, "site", "pool")

    @field_validator("traffic")
    @classmethod
    def _one_per_site(cls, traffic: list[TrafficObservation]) -> list[TrafficObservation]:
        return unique_by(traffic, "workload", "site")
