"""Read manifests and telemetry files from disk into validated models, or raise InvalidObject."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from hetplace.api.errors import MISSING, InvalidObject, Location, Problem, problems_from
from hetplace.api.models import API_VERSION, ComputePool, InferenceWorkload
from hetplace.api.scenario import Scenario
from hetplace.api.telemetry import TelemetryFile

MANIFEST_SUFFIXES = (".yaml", ".yml")
KINDS: dict[str, type[ComputePool] | type[InferenceWorkload] | type[Scenario]] = {
    "ComputePool": ComputePool,
    "InferenceWorkload": InferenceWorkload,
    "Scenario": Scenario,
}
DEFAULT_NAMESPACE = "default"

Model = TypeVar("Model", bound=BaseModel)


class ManifestLoader(yaml.SafeLoader):
    """YAML as Kubernetes reads it: numbers like 1e2 or 5E-3 are numbers (YAML 1.2), not strings."""


ManifestLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


@dataclass(frozen=True)
class Manifests:
    """Everything found in a set of files: our objects validated, any other kind left as read."""

    pools: list[ComputePool] = field(default_factory=list)
    workloads: list[InferenceWorkload] = field(default_factory=list)
    scenarios: list[Scenario] = field(default_factory=list)
    others: list[dict[str, Any]] = field(default_factory=list)


@dataclass(frozen=True)
class _Document:
    """One YAML document and the node tree it came from, to point at the line of a bad field."""

    data: Any
    node: yaml.Node
    source: str

    @property
    def line(self) -> int:
        return self.node.start_mark.line + 1

    def line_of(self, location: Location) -> int:
        """The line of the deepest node along `location` that exists in the document."""
        node = self.node
        for part in location:
            child = _child(node, part)
            if child is None:
                break
            node = child
        return node.start_mark.line + 1


def load_manifests(paths: list[Path]) -> Manifests:
    """Validate every ComputePool, InferenceWorkload and Scenario in the files and directories given.

    Directories are searched recursively for *.yaml and *.yml, in name order. Names must be
    unique: a pool by name, a workload by namespace/name (namespace defaults to "default").
    """
    manifests = Manifests()
    first_seen: dict[tuple[str, str], str] = {}
    for document in _documents(paths):
        kind = document.data.get("kind")
        model = KINDS.get(kind) if isinstance(kind, str) else None
        if model is None:
            manifests.others.append(document.data)
            continue
        obj = _validate_manifest(model, document)
        identity = obj.key if isinstance(obj, InferenceWorkload) else obj.name
        where = f"{document.source}:{document.line}"
        if (kind, identity) in first_seen:
            raise InvalidObject(
                [Problem("metadata.name", obj.metadata.name,
                         f"duplicate {kind} name; first defined in {first_seen[kind, identity]}")],
                source=document.source, line=document.line_of(("metadata", "name")),
                kind=kind, name=identity,
            )
        first_seen[kind, identity] = where
        if isinstance(obj, InferenceWorkload):
            manifests.workloads.append(obj)
        elif isinstance(obj, Scenario):
            manifests.scenarios.append(obj)
        else:
            manifests.pools.append(obj)
    return manifests


def load_telemetry(path: Path) -> TelemetryFile:
    """Read a telemetry file: `links: [{site, pool, bandwidthKBps, rttMs}]`, `traffic: [...]`."""
    documents = [document for document in _read(Path(path)) if document.data is not None]
    if len(documents) != 1 or not isinstance(documents[0].data, dict):
        raise InvalidObject(
            [Problem(None, None, "must be one YAML mapping with links and/or traffic")],
            source=str(path), kind="Telemetry",
        )
    return _validate(TelemetryFile, documents[0].data, kind="Telemetry", source=str(path), document=documents[0])


def validate_manifest(model: type[Model], data: Any, *, source: str | None = None) -> Model:
    """Validate one object (e.g. a body from the API server); InvalidObject lists what is wrong."""
    kind = data.get("kind") if isinstance(data, dict) else None
    return _validate(model, data, kind=kind if isinstance(kind, str) else None, source=source)


def _validate_manifest(model: type[Model], document: _Document) -> Model:
    data = document.data
    kind = data["kind"]
    if data.get("apiVersion") != API_VERSION:
        raise InvalidObject(
            [Problem("apiVersion", data.get("apiVersion"), f"must be {API_VERSION} for kind {kind}")],
            source=document.source, line=document.line_of(("apiVersion",)),
            kind=kind, name=_name_of(data),
        )
    metadata = data.get("metadata")
    if model is InferenceWorkload and isinstance(metadata, dict) and not metadata.get("namespace"):
        data = {**data, "metadata": {**metadata, "namespace": DEFAULT_NAMESPACE}}
    return _validate(model, data, kind=kind, source=document.source, document=document)


def _validate(
    model: type[Model], data: Any, *, kind: str | None, source: str | None, document: _Document | None = None
) -> Model:
    try:
        return model.model_validate(data)
    except ValidationError as error:
        problems = problems_from(error, model, document.line_of if document else None)
        raise InvalidObject(problems, source=source, kind=kind, name=_name_of(data)) from None


def _name_of(data: Any) -> str | None:
    metadata = data.get("metadata") if isinstance(data, dict) else None
    if not isinstance(metadata, dict) or not isinstance(metadata.get("name"), str):
        return None
    namespace = metadata.get("namespace")
    if data.get("kind") == "InferenceWorkload":
        return f"{namespace or DEFAULT_NAMESPACE}/{metadata['name']}"
    return metadata["name"]


def _documents(paths: list[Path]) -> Iterator[_Document]:
    for path in paths:
        for file in _manifest_files(Path(path)):
            for document in _read(file):
                yield from _objects(document)


def _objects(document: _Document) -> Iterator[_Document]:
    """The objects of one YAML document: itself, or the items of a `kind: List` (what
    `kubectl get -o yaml` prints for several objects), each with its own line."""
    if document.data is None:
        return  # an empty document, e.g. after a trailing `---`
    if not isinstance(document.data, dict):
        raise InvalidObject(
            [Problem(None, None, "each YAML document must be a mapping with apiVersion and kind")],
            source=document.source, line=document.line,
        )
    kind = document.data.get("kind", MISSING)
    if not isinstance(kind, str):
        rule = "is required" if kind is MISSING else "must be a string"
        raise InvalidObject([Problem("kind", kind, rule)], source=document.source, line=document.line)
    if kind == "List" and document.data.get("apiVersion") == "v1" and isinstance(document.data.get("items"), list):
        nodes = next((value.value for key, value in document.node.value if key.value == "items"), [])
        for item, node in zip(document.data["items"], nodes):
            yield from _objects(_Document(item, node, document.source))
        return
    yield document


def _manifest_files(path: Path) -> list[Path]:
    if path.is_dir():
        return sorted(p for p in path.rglob("*") if p.suffix in MANIFEST_SUFFIXES and p.is_file())
    if not path.exists():
        raise InvalidObject([Problem(None, None, "no such file or directory")], source=str(path))
    return [path]


def _read(path: Path) -> list[_Document]:
    source = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise InvalidObject([Problem(None, None, f"cannot read: {error}")], source=source) from None
    loader = ManifestLoader(text)
    documents = []
    try:
        while loader.check_node():
            node = loader.get_node()
            documents.append(_Document(loader.construct_document(node), node, source))
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark or error.context_mark
        problem = " ".join(part for part in (error.context, error.problem) if part)
        raise InvalidObject(
            [Problem(None, None, f"YAML syntax error: {problem}")],
            source=source, line=mark.line + 1 if mark else None,
        ) from None
    except yaml.YAMLError as error:
        raise InvalidObject([Problem(None, None, f"YAML error: {error}")], source=source) from None
    finally:
        loader.dispose()
    return documents


def _child(node: yaml.Node, part: str | int) -> yaml.Node | None:
    if isinstance(node, yaml.MappingNode) and isinstance(part, str):
        return next((value for key, value in node.value if getattr(key, "value", None) == part), None)
    if isinstance(node, yaml.SequenceNode) and isinstance(part, int) and 0 <= part < len(node.value):
        return node.value[part]
    return None
