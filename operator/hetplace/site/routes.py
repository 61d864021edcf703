"""The routes document (version 2): per site, the ordered routes a site's requests follow.

The operator writes one per workload, as the key `routes.json` of the ConfigMap
`<workload>-routes` (docs/routes.md); `hetplace gateway` and `hetplace.client` read it, from the
API or from a file holding the ConfigMap as `kubectl get -o yaml` prints it. This module is the
contract between the two sides: the pydantic models here validate what the operator renders
(tests) and what a site reads (at run time), and `routes.schema.json` is generated from them.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Annotated, Any, Mapping

import yaml
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError, field_validator
from pydantic.alias_generators import to_camel

VERSION = 2
DATA_KEY = "routes.json"
ENCODING_HEADER = "hetplace-encoding"   # request: the encoding sent; response: the one to send now
ROUTE_HEADER = "hetplace-route"         # response: pool/variant that answered
# refreshed only with another change to the document: alone it is not worth a write (docs/routes.md)
VOLATILE_ROUTE_FIELD = "predictedLatencyMs"

HttpEndpoint = Annotated[str, StringConstraints(pattern=r"^https?://[^\s/]+(/[^\s]*)?$", max_length=512)]
GrpcEndpoint = Annotated[str, StringConstraints(pattern=r"^grpcs?://[^\s/]+$", max_length=512)]
Name = Annotated[str, StringConstraints(min_length=1, max_length=253)]


class _Model(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True,
                              use_attribute_docstrings=True)

    def wire(self) -> dict[str, Any]:
        return self.model_dump(by_alias=True, mode="json", exclude_none=True)


class Route(_Model):
    """One way a site's requests can be served: a group of the workload, the encoding to send it
    and the endpoints that reach it."""

    pool: Name
    variant: Name
    encoding: Name
    """The encoding this site sends on this route."""
    model: Name
    """The model name to call upstream (the workload's spec.model.name)."""
    http: HttpEndpoint
    """KServe-V2 HTTP base URL: http://host:port or https://host:port (TLS)."""
    grpc: GrpcEndpoint
    """KServe-V2 gRPC endpoint: grpc://host:port or grpcs://host:port (TLS)."""
    predicted_latency_ms: float | None = Field(default=None, ge=0)
    """Latency at the SLO percentile the model predicts for this site on this route (the site's
    traffic added, for a fallback); absent when the route would be overloaded or its link saturated."""
    within_slo: bool
    decided: bool = False
    """The decision's route for this site (only the first route may be)."""
    draining: bool = False
    """A group being removed after a move: it still serves requests in its encoding until it goes."""

    @property
    def key(self) -> str:
        return f"{self.pool}/{self.variant}"


class RoutesDocument(_Model):
    """Everything a site needs to route one workload's requests."""

    version: int = Field(ge=VERSION, le=VERSION)
    workload: Annotated[str, StringConstraints(pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?/[^/\s]+$")]
    """namespace/name of the InferenceWorkload."""
    generation: int | None = Field(default=None, ge=0)
    """metadata.generation of the workload the decision was made for (absent from `hetplace render`)."""
    decided_at: datetime | None = None
    """When the decision these routes follow was made (absent from `hetplace render`)."""
    model: Name
    slo_latency_ms: float = Field(gt=0)
    sites: dict[Name, Annotated[list[Route], Field(min_length=1)]]
    """site -> routes in the order to try them: the decided route first, then fallbacks by predicted latency."""

    @field_validator("sites")
    @classmethod
    def _decided_first(cls, sites: dict[str, list[Route]]) -> dict[str, list[Route]]:
        for site, routes in sites.items():
            if any(r.decided for r in routes[1:]):
                raise ValueError(f"site {site}: only the first route may be the decided one")
            keys = [(r.pool, r.variant) for r in routes]
            if len(set(keys)) != len(keys):
                raise ValueError(f"site {site}: a group appears twice")
        return sites

    @property
    def namespace(self) -> str:
        return self.workload.split("/", 1)[0]

    @property
    def name(self) -> str:
        return self.workload.split("/", 1)[1]

    def for_site(self, site: str) -> list[Route]:
        return list(self.sites.get(site, ()))

    def encoding_for(self, site: str) -> str | None:
        """The encoding the site should send now: its first route's."""
        routes = self.sites.get(site)
        return routes[0].encoding if routes else None


class RoutesError(ValueError):
    """A routes document that cannot be used, with where and why."""


def from_configmap(configmap: Mapping[str, Any], where: str = "") -> RoutesDocument:
    """The document of a routes ConfigMap (a dict as the API returns it or `kubectl get -o yaml` prints it)."""
    meta = configmap.get("metadata") or {}
    where = where or f"ConfigMap {meta.get('namespace', '?')}/{meta.get('name', '?')}"
    data = configmap.get("data") or {}
    if DATA_KEY not in data:
        raise RoutesError(f"{where}: data.{DATA_KEY} is missing (written by hetplace 0.2 and later)")
    try:
        raw = json.loads(data[DATA_KEY])
    except (TypeError, json.JSONDecodeError) as e:
        raise RoutesError(f"{where}: data.{DATA_KEY} is not JSON: {e}") from None
    try:
        return RoutesDocument.model_validate(raw)
    except ValidationError as e:
        first = e.errors()[0]
        field = ".".join(str(p) for p in first["loc"]) or "(document)"
        raise RoutesError(f"{where}: data.{DATA_KEY}: {field}: {first['msg']} "
                          f"(value {first.get('input')!r:.80}); {e.error_count()} problem(s)") from None


def read_file(path: str) -> list[RoutesDocument]:
    """Every routes document in a YAML file: one ConfigMap, several (multi-document), or a `kind: List`."""
    with open(path, encoding="utf-8") as f:
        text = f.read()
    return [from_configmap(item, where=f"{path}: ConfigMap {(item.get('metadata') or {}).get('name', '?')}")
            for item in configmaps_in(text, path)]


def configmaps_in(text: str, path: str) -> list[Mapping[str, Any]]:
    """The ConfigMaps of a YAML text: one, several (multi-document) or a `kind: List`."""
    try:
        docs = [d for d in yaml.safe_load_all(text) if d is not None]
    except yaml.YAMLError as e:
        raise RoutesError(f"{path}: not YAML: {e}") from None
    items: list[Mapping[str, Any]] = []
    for d in docs:
        if not isinstance(d, Mapping):
            raise RoutesError(f"{path}: a document is not a mapping")
        listed = (d.get("items") or []) if d.get("kind") == "List" else [d]
        if not all(isinstance(item, Mapping) for item in listed):
            raise RoutesError(f"{path}: an item of the List is not a mapping")
        items.extend(listed)
    if not items:
        raise RoutesError(f"{path}: no routes ConfigMap in the file")
    return items


def json_schema() -> dict[str, Any]:
    return RoutesDocument.model_json_schema(by_alias=True)
