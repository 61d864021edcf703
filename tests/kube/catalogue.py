"""Which resources the emulated API serves: the built-in kinds hetplace and kopf touch, and kinds read
from CustomResourceDefinitions (the project's `crds/*.yaml` and kopf's peering CRDs, defined here)."""

from __future__ import annotations

import copy
import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

import yaml

PROJECT_CRDS_DIR = Path(__file__).resolve().parents[2] / "crds"


def _peering_crd(kind: str, scope: str) -> dict[str, Any]:
    """One of kopf's peering CRDs as kopf's documentation publishes them (peering.yaml): no status
    subresource; kopf keeps each operator's keep-alive under `status.<identity>` and merge-patches it."""
    plural = f"{kind.lower()}s"
    return {
        "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{plural}.kopf.dev"},
        "spec": {"scope": scope, "group": "kopf.dev",
                 "names": {"kind": kind, "plural": plural, "singular": kind.lower()},
                 "versions": [{"name": "v1", "served": True, "storage": True, "schema": {"openAPIV3Schema": {
                     "type": "object",
                     "properties": {"status": {"type": "object", "x-kubernetes-preserve-unknown-fields": True}},
                 }}}]},
    }


VERBS = ("create", "delete", "deletecollection", "get", "list", "patch", "update", "watch")


@dataclass(frozen=True)
class ResourceKind:
    """One served resource: where it lives in the API and how its objects behave."""

    group: str
    version: str
    plural: str
    kind: str
    namespaced: bool
    status_subresource: bool = False
    singular: str = ""
    short_names: tuple[str, ...] = ()
    categories: tuple[str, ...] = ()
    custom: bool = False  # served from a CRD: DELETE answers with the object, not a Status

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.group, self.version, self.plural)

    def describe(self, name: str | None = None) -> str:
        """How the API server names the resource in messages: `configmaps "x"`, `computepools.hetplace.io "x"`."""
        resource = f"{self.plural}.{self.group}" if self.group else self.plural
        return f'{resource} "{name}"' if name is not None else resource


BUILTIN_KINDS: tuple[ResourceKind, ...] = (
    ResourceKind("", "v1", "namespaces", "Namespace", False, True, "namespace", ("ns",)),
    ResourceKind("", "v1", "nodes", "Node", False, True, "node", ("no",)),
    ResourceKind("", "v1", "events", "Event", True, False, "event", ("ev",)),
    ResourceKind("", "v1", "configmaps", "ConfigMap", True, False, "configmap", ("cm",)),
    ResourceKind("", "v1", "services", "Service", True, True, "service", ("svc",)),
    ResourceKind("apps", "v1", "deployments", "Deployment", True, True, "deployment", ("deploy",)),
    ResourceKind("apiextensions.k8s.io", "v1", "customresourcedefinitions", "CustomResourceDefinition", False, True,
                 "customresourcedefinition", ("crd", "crds")),
)


def kinds_of_crd(crd: dict[str, Any]) -> list[ResourceKind]:
    """The resources a CRD serves: one per served version."""
    spec = crd["spec"]
    names = spec["names"]
    return [
        ResourceKind(
            group=spec["group"], version=version["name"], plural=names["plural"], kind=names["kind"],
            namespaced=spec.get("scope", "Namespaced") == "Namespaced",
            status_subresource="status" in (version.get("subresources") or {}),
            singular=names.get("singular") or names["kind"].lower(),
            short_names=tuple(names.get("shortNames") or ()), categories=tuple(names.get("categories") or ()),
            custom=True,
        )
        for version in spec["versions"] if version.get("served", True)
    ]


def peering_crds() -> list[dict[str, Any]]:
    return [_peering_crd("ClusterKopfPeering", "Cluster"), _peering_crd("KopfPeering", "Namespaced")]


@functools.cache
def _read_crds(directory: Path) -> tuple[dict[str, Any], ...]:
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # the CRDs are large; every test installs them
    return tuple(doc for path in sorted(directory.glob("*.yaml")) for doc in yaml.load_all(path.read_text(), loader)
                 if doc)


def project_crds(directory: Path = PROJECT_CRDS_DIR) -> list[dict[str, Any]]:
    """The CRDs the project ships (ComputePool, InferenceWorkload), as the chart installs them."""
    return copy.deepcopy(list(_read_crds(directory)))


def all_test_crds() -> Iterable[dict[str, Any]]:
    """What a test cluster for hetplace has installed: the project's CRDs and kopf's peering CRDs."""
    return [*project_crds(), *peering_crds()]
