"""Drift of the objects hetplace owns: which changes to them were not hetplace's own, and which of
the fields hetplace applies a live object no longer has as applied (what controller-runtime's
`Owns()` gives a Go operator: a changed child brings its owner's reconcile back).

hetplace's fields are exactly those it applies with server-side apply (field manager `hetplace`):
each is compared with the live object, and anything else there — a label or annotation someone
added, a sidecar container, defaults the API server filled in — is left alone. The index keeps a
digest of each owned object's content (`content_digest`); a change that no write of hetplace's
explains makes the object a suspect, and its workload's next reconcile reads it and compares.
"""

from __future__ import annotations

import hashlib
import json
import threading
from dataclasses import dataclass
from typing import Any, Iterable, Mapping

from hetplace.api.quantity import parse_cpu, parse_memory
from hetplace.site.routes import VOLATILE_ROUTE_FIELD

GONE = -1                       # the content expected of an object hetplace deletes
ObjectId = tuple[str, str, str]  # (kind, namespace, name)


def content_digest(body: Mapping[str, Any]) -> int:
    """A digest of what hetplace may have applied to an object: its spec (or data), labels, owners and
    hetplace's annotations — not its status, version or the annotations controllers add."""
    meta = body.get("metadata") or {}
    annotations = {k: v for k, v in (meta.get("annotations") or {}).items() if k.startswith("hetplace.io/")}
    content = [body.get("spec"), body.get("data"), meta.get("labels"), annotations, meta.get("ownerReferences")]
    digest = hashlib.blake2b(json.dumps(content, sort_keys=True, default=str).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") >> 1     # positive, never GONE


@dataclass(frozen=True)
class Difference:
    """One applied field the live object does not have as applied."""

    path: str
    applied: Any
    live: Any

    def __str__(self) -> str:
        return f"{self.path} was {_short(self.live)} (hetplace applies {_short(self.applied)})"


def differences(applied: Mapping[str, Any], live: Mapping[str, Any]) -> list[Difference]:
    """The fields of `applied` (an object as hetplace renders it) that `live` does not hold: missing
    or with another value. Fields only `live` has are not differences (another manager's, or the
    API server's defaults). Lists of objects with a `name` (containers, ports) are matched by name;
    other lists are compared whole, as server-side apply treats an atomic list."""
    found: list[Difference] = []
    for key in ("metadata", "spec", "data"):
        if key in applied:
            want = applied[key]
            if key == "metadata":
                want = {k: v for k, v in want.items() if k in ("labels", "annotations", "ownerReferences")}
            _compare(key, want, live.get(key), found)
    return found


def _compare(path: str, want: Any, have: Any, found: list[Difference]) -> None:
    if have is None and isinstance(want, (Mapping, list)) and not want:
        return      # the API server leaves an empty map or list out of what it returns
    if isinstance(want, Mapping):
        if not isinstance(have, Mapping):
            found.append(Difference(path, want, have))
            return
        for key, value in want.items():
            if key == VOLATILE_ROUTE_FIELD and ":" in path:
                continue    # a prediction inside the routes document: not worth a write alone (inventory)
            _compare(f"{path}{'' if path.endswith(':') else '.'}{key}", value, have.get(key), found)
        return
    if isinstance(want, list) and want and all(isinstance(v, Mapping) and "name" in v for v in want):
        by_name = {v.get("name"): v for v in have if isinstance(v, Mapping)} if isinstance(have, list) else {}
        for item in want:
            _compare(f"{path}[{item['name']}]", item, by_name.get(item["name"]), found)
        return
    if isinstance(want, list):
        if not isinstance(have, list) or len(want) != len(have):
            found.append(Difference(path, want, have))
            return
        for index, (w, h) in enumerate(zip(want, have)):
            _compare(f"{path}[{index}]", w, h, found)
        return
    if isinstance(want, str) and isinstance(have, str) and path.startswith("data.") and want != have:
        document = _json_document(want), _json_document(have)
        if None not in document and document[0] != document[1]:
            # a JSON document (the routes): say which of its fields changed. Unlike an object's fields,
            # its readers refuse fields hetplace does not write, so one only the live copy has is drift too
            before = len(found)
            _compare(path + ":", *document, found)
            if len(found) == before and (extra := _extra(document[0], document[1])):
                found.append(Difference(path + ": (fields hetplace does not write)", None, extra))
            return
        if None not in document:      # the same document written another way
            return
    if want != have and not _same_quantity(path, want, have):
        found.append(Difference(path, want, have))


def _extra(want: Any, have: Any, path: str = "") -> list[str]:
    """The paths only `have` holds."""
    if isinstance(want, Mapping) and isinstance(have, Mapping):
        return [p for key, value in have.items() if key != VOLATILE_ROUTE_FIELD
                for p in ([f"{path}.{key}" if path else key] if key not in want
                          else _extra(want[key], value, f"{path}.{key}" if path else key))]
    if isinstance(want, list) and isinstance(have, list):
        return [p for i, (w, h) in enumerate(zip(want, have)) for p in _extra(w, h, f"{path}[{i}]")]
    return []


def _json_document(text: str) -> Mapping[str, Any] | None:
    if not text.startswith("{"):
        return None
    try:
        value = json.loads(text)
    except ValueError:
        return None
    return value if isinstance(value, Mapping) else None


def _same_quantity(path: str, want: Any, have: Any) -> bool:
    """The API server stores a quantity in its canonical form ("1000m" reads back as "1")."""
    if ".resources." not in path or not isinstance(want, (str, int)) or not isinstance(have, (str, int)):
        return False
    parse = parse_memory if path.endswith(".memory") else parse_cpu
    try:
        return parse(want) == parse(have)
    except (ValueError, TypeError):
        return False


def _short(value: Any) -> str:
    text = "absent" if value is None else json.dumps(value, sort_keys=True, default=str)
    return text if len(text) <= 80 else text[:77] + "..."


def describe(kind: str, name: str, found: Iterable[Difference], limit: int = 3) -> str:
    """One line for an Event: the object and the first few fields that drifted."""
    found = list(found)
    shown = "; ".join(str(d) for d in found[:limit])
    more = f"; and {len(found) - limit} more" if len(found) > limit else ""
    return f"{kind} {name}: {shown}{more}: re-applied"


class DriftWatch:
    """What the index saw change on owned objects that hetplace did not write: per workload, the
    objects to read and compare at its next reconcile. Kept small: an expected content lives from
    hetplace's write until the watch delivers it, a suspect until its workload is reconciled."""

    def __init__(self) -> None:
        self._lock = threading.Lock()       # the event loop and the reconciles' threads share it
        self._expected: dict[ObjectId, int] = {}
        self._suspects: dict[str, set[tuple[str, str]]] = {}
        self._everything: set[str] = set()

    def wrote(self, kind: str, namespace: str, name: str, content: int, workload: str = "",
              seen_already: bool = False) -> None:
        """hetplace applied (or, with GONE, deleted) the object: its next event is hetplace's own.
        `seen_already`: the watch delivered it before the write's answer came back (the index holds
        this content): nothing to expect, and no suspicion that event raised stands."""
        with self._lock:
            if not seen_already:
                self._expected[(kind, namespace, name)] = content
                return
            self._expected.pop((kind, namespace, name), None)
            suspects = self._suspects.get(workload)
            if suspects is not None:
                suspects.discard((kind, name))
                if not suspects:
                    del self._suspects[workload]

    def seen(self, workload: str, kind: str, namespace: str, name: str, content: int, before: int | None) -> bool:
        """The index saw the object with `content` (GONE: deleted), having held `before` (None: not
        held). True when nothing hetplace wrote explains the change: the workload should look."""
        with self._lock:
            if before is not None and content == before:
                return False        # nothing hetplace applies changed (a status update, a relist)
            expected = self._expected.pop((kind, namespace, name), None)
            if content == expected:
                return False
            if before is None and content != GONE and expected is None:
                return False        # first seen (listed at start, or created by an earlier process)
            self._suspects.setdefault(workload, set()).add((kind, name))
            return True

    def check_everything(self, workload: str) -> None:
        """Compare all the workload's objects at its next reconcile (what changed while no operator
        watched is known to nobody)."""
        with self._lock:
            self._everything.add(workload)

    def take(self, workload: str, owned: Iterable[tuple[str, str]]) -> tuple[set[tuple[str, str]], bool]:
        """The objects of `workload` to read and compare now (`owned`: what the index holds of it),
        and whether this is its first look (an object of what serves that is missing was deleted)."""
        with self._lock:
            found = self._suspects.pop(workload, set())
            everything = workload in self._everything
            if everything:
                self._everything.discard(workload)
                found |= set(owned)
            return found, everything

    def put_back(self, workload: str, objects: Iterable[tuple[str, str]], everything: bool = False) -> None:
        """A reconcile that could not finish leaves its suspects (and its first look) for the next one."""
        objects = set(objects)
        with self._lock:
            if objects:
                self._suspects.setdefault(workload, set()).update(objects)
            if everything:
                self._everything.add(workload)

    def forget(self, workload: str) -> None:
        with self._lock:
            self._suspects.pop(workload, None)
            self._everything.discard(workload)
