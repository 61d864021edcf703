"""The Scenario document of `hetplace simulate`: a timed trace of links, traffic and pool outages."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from hetplace.api.meta import ObjectMeta
from hetplace.api.telemetry import LinkObservation, TrafficObservation
from hetplace.api.wire import API_VERSION, DnsLabel, SpecModel, fail_at, unique_by

MAX_DURATION_SECONDS = 30 * 24 * 3600
MAX_STEPS = 100_000
MAX_EVENTS = 10_000


class ScenarioEvent(SpecModel):
    """What changes at second `at`: observed links and traffic, and pools going down or up."""

    at: float = Field(ge=0)
    """Seconds from the start of the scenario."""
    links: list[LinkObservation] = Field(default_factory=list, max_length=4096)
    traffic: list[TrafficObservation] = Field(default_factory=list, max_length=4096)
    pool_down: DnsLabel | None = None
    """A pool that stops serving from this moment."""
    pool_up: DnsLabel | None = None
    """A pool that serves again from this moment."""

    @field_validator("links")
    @classmethod
    def _one_per_link(cls, links: list[LinkObservation]) -> list[LinkObservation]:
        return unique_by(links, "site", "pool")

    @model_validator(mode="after")
    def _changes_something(self) -> ScenarioEvent:
        if not (self.links or self.traffic or self.pool_down or self.pool_up):
            raise fail_at([], None, "an event must change links, traffic, poolDown or poolUp")
        return self


class Scenario(SpecModel):
    """A trace for `hetplace simulate`, given beside the ComputePool and InferenceWorkload manifests."""

    api_version: Literal["hetplace.io/v1alpha1"] = API_VERSION
    kind: Literal["Scenario"] = "Scenario"
    metadata: ObjectMeta
    duration_seconds: float = Field(gt=0, le=MAX_DURATION_SECONDS)
    step_seconds: float = Field(gt=0)
    events: list[ScenarioEvent] = Field(default_factory=list, max_length=MAX_EVENTS)

    @model_validator(mode="after")
    def _fits_in_time(self) -> Scenario:
        if self.step_seconds > self.duration_seconds:
            raise fail_at(["stepSeconds"], self.step_seconds,
                          f"must be <= durationSeconds ({self.duration_seconds:g})")
        if self.duration_seconds / self.step_seconds > MAX_STEPS:
            raise fail_at(["stepSeconds"], self.step_seconds,
                          f"gives more than {MAX_STEPS} steps over {self.duration_seconds:g} s")
        for i, event in enumerate(self.events):
            if event.at > self.duration_seconds:
                raise fail_at(["events", i, "at"], event.at,
                              f"must be <= durationSeconds ({self.duration_seconds:g})")
        return self

    @property
    def name(self) -> str:
        return self.metadata.name

    def timeline(self) -> list[ScenarioEvent]:
        """The events in time order (stable for events at the same second)."""
        return sorted(self.events, key=lambda e: e.at)
