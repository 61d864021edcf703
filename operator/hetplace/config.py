"""The operator's settings, from HETPLACE_* environment variables (set by the Helm chart's values).

Every setting has a safe default; a bad value stops the operator at start with the variable, the
value and the rule, rather than running with a guess.
"""

from __future__ import annotations

import json
import re
from typing import Annotated

from pydantic import Field, HttpUrl, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from hetplace.telemetry.triton import DEFAULT_ENDPOINT_TEMPLATE, check_endpoint_template

# Triton's own metrics (docs/design.md §4); {namespace}, {workload}, {pool}, {variant}, {site} are filled in.
DEFAULT_QUERIES = {
    "request_duration_us": 'sum(rate(nv_inference_request_duration_us{{namespace="{namespace}",'
                           'hetplace_io_workload="{workload}",hetplace_io_pool="{pool}"}}[5m]))',
    "queue_duration_us": 'sum(rate(nv_inference_queue_duration_us{{namespace="{namespace}",'
                         'hetplace_io_workload="{workload}",hetplace_io_pool="{pool}"}}[5m]))',
    "request_success": 'sum(rate(nv_inference_request_success{{namespace="{namespace}",'
                       'hetplace_io_workload="{workload}",hetplace_io_pool="{pool}"}}[5m]))',
    "link_bandwidth_bytes": 'min_over_time(hetplace_link_bandwidth_bytes{{site="{site}",pool="{pool}"}}[5m])',
    "link_rtt_seconds": 'max_over_time(hetplace_link_rtt_seconds{{site="{site}",pool="{pool}"}}[5m])',
    # fleet-wide, read once per cycle: series labelled namespace, workload, site (and le)
    "site_requests": 'sum by (namespace, workload, site) (rate(hetplace_site_requests_total[5m]))',
    "route_latency_buckets": 'sum by (namespace, workload, site, le) '
                             '(rate(hetplace_request_duration_seconds_bucket[5m]))',
}
PLACEHOLDERS = {"namespace", "workload", "pool", "variant", "site"}


class Settings(BaseSettings):
    """HETPLACE_PROMETHEUS_URL, HETPLACE_REBALANCE_INTERVAL_SECONDS, … (one per field, upper case)."""

    model_config = SettingsConfigDict(env_prefix="HETPLACE_", extra="forbid", frozen=True)

    prometheus_url: HttpUrl | None = None
    """Prometheus HTTP API; none: decide on the declared links and traffic (TelemetryFresh=False says so)."""
    queries: dict[str, str] = Field(default_factory=lambda: dict(DEFAULT_QUERIES))
    """PromQL templates by name (JSON in HETPLACE_QUERIES); missing names keep their default."""
    telemetry_interval_seconds: float = Field(default=30, ge=1, le=3600)
    telemetry_stale_after_seconds: float = Field(default=300, ge=1, le=86400)
    rebalance_interval_seconds: float = Field(default=60, ge=1, le=86400)
    max_moves_per_cycle: int = Field(default=10, ge=0, le=1000)
    solver_time_limit_seconds: float = Field(default=10, gt=0, le=600)
    plan_deadline_seconds: float = Field(default=300, ge=10, le=3600)
    """A rebalance plan not made by then (the solver's limit bounds HiGHS, not the work around it
    for a large fleet) is abandoned and its process killed; the next cycle tries again."""
    move_timeout_seconds: float = Field(default=600, ge=10, le=86400)
    """A move whose new group is not ready by then goes back to the old placement."""
    drain_seconds: float = Field(default=60, ge=0, le=3600)
    """How long the groups a move leaves behind outlive the routes switch (clients that read the
    routes ConfigMap late — a mounted one updates within about a minute — still reach them)."""
    move_poll_seconds: float = Field(default=5, ge=0.05, le=600)
    """How often moves under way are checked for readiness (a Deployment change checks at once)."""
    triton_endpoint: str = Field(default=DEFAULT_ENDPOINT_TEMPLATE, min_length=1)
    """Where tritonclient reaches a group's Triton HTTP port; {service}, {namespace} and {port} are filled in."""
    probe_models: bool = True
    """Check through tritonclient that the model is ready before routes switch to a new group."""
    watch_namespaces: Annotated[list[str], NoDecode] = Field(default_factory=list)
    """Empty: every namespace (cluster-wide). In the environment a JSON list or comma-separated names."""
    peering_name: str = Field(default="hetplace", pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", max_length=63)
    peering_lifetime_seconds: int = Field(default=60, ge=1, le=3600)
    """How long a silent peer counts as alive: a killed leader is replaced after this."""
    watch_timeout_seconds: float = Field(default=300, ge=1, le=3600)
    """Watch requests end after this and are reopened (the API server's own limit may be lower)."""
    dry_run: bool = False
    """Decide and report in status and Events, but create, change and delete nothing."""
    metrics_port: int = Field(default=8080, ge=1, le=65535)
    metrics_address: str = Field(default="0.0.0.0", min_length=1)
    """Where /metrics listens (all interfaces in a pod; 127.0.0.1 in tests)."""
    triton_image: str = Field(default="nvcr.io/nvidia/tritonserver:24.12-py3", min_length=1)

    @field_validator("queries")
    @classmethod
    def _known_placeholders(cls, queries: dict[str, str]) -> dict[str, str]:
        merged = {**DEFAULT_QUERIES, **queries}
        for name, template in merged.items():
            try:
                template.format(**{key: "x" for key in PLACEHOLDERS})
            except (KeyError, IndexError, ValueError) as bad:
                raise ValueError(f"query {name!r}: {bad!r} is not one of the placeholders "
                                 f"{sorted(PLACEHOLDERS)} (write literal braces as {{{{ }}}})") from None
        return merged

    @field_validator("triton_endpoint")
    @classmethod
    def _endpoint_template(cls, template: str) -> str:
        return check_endpoint_template(template)

    @field_validator("watch_namespaces", mode="before")
    @classmethod
    def _names_from_environment(cls, value: object) -> object:
        if isinstance(value, str):
            text = value.strip()
            if text.startswith("["):
                try:
                    return json.loads(text)
                except json.JSONDecodeError as bad:
                    raise ValueError(f"not a JSON list of names: {bad}") from None
            return [name.strip() for name in text.split(",") if name.strip()]
        return value

    @field_validator("watch_namespaces")
    @classmethod
    def _dns_labels(cls, namespaces: list[str]) -> list[str]:
        for namespace in namespaces:
            if not re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", namespace) or len(namespace) > 63:
                raise ValueError(f"{namespace!r} is not a namespace name (a DNS label)")
        return namespaces
