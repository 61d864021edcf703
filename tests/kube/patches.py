"""The four PATCH flavours of the API server as pure functions on dicts: JSON merge patch (RFC 7386),
JSON patch (RFC 6902, through the `jsonpatch` library kmock depends on), strategic merge patch
(approximated as a merge patch: lists are replaced, not merged by key; `$`-directives are dropped),
and server-side apply.

Server-side apply is approximated with per-manager "applied configurations" instead of the real
structured-merge-diff field sets:
- each field manager's last applied fields are remembered (per object, per main/status part);
- a leaf (a scalar, a list, or an empty map) applied with a value that differs from the value another
  manager applied for the same leaf is a conflict (409) unless `force=true`, which moves the leaf
  to the applier;
- leaves the manager applied before but no longer applies are removed, unless another manager
  applied them too;
- the applied fields are then deep-merged into the live object (maps merged, lists replaced
  whole: no merge keys, so two managers owning different containers of one list conflict);
- a non-apply write that changes a leaf takes it away from the apply managers that owned it; writes
  by create/update/patch own nothing, so an apply never conflicts with them (a real server reports
  a conflict with such a manager unless the apply forces).
"""

from __future__ import annotations

import copy
import json
from typing import Any

import jsonpatch
import jsonpointer
import yaml

Path = tuple[str, ...]


class PatchError(ValueError):
    """A patch the API server refuses; `status` is 400 (malformed) or 422 (does not apply)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class ApplyConflict(Exception):
    """Fields another manager applied with other values (the API server's 409 on apply)."""

    def __init__(self, conflicts: list[tuple[str, Path]]) -> None:
        self.conflicts = conflicts
        fields = ", ".join(f'conflict with "{manager}": .{".".join(path)}' for manager, path in conflicts)
        super().__init__(f"Apply failed with {len(conflicts)} conflict(s): {fields}")


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386: maps merge recursively, `null` deletes, anything else replaces."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = copy.deepcopy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def _without_directives(patch: Any) -> Any:
    if isinstance(patch, dict):
        return {k: _without_directives(v) for k, v in patch.items() if not k.startswith("$")}
    if isinstance(patch, list):
        return [_without_directives(item) for item in patch]
    return patch


def strategic_merge_patch(target: dict[str, Any], patch: Any) -> dict[str, Any]:
    if not isinstance(patch, dict):
        raise PatchError(400, "a strategic merge patch must be a JSON object")
    return merge_patch(target, _without_directives(patch))


def json_patch(target: dict[str, Any], ops: Any) -> dict[str, Any]:
    if not isinstance(ops, list):
        raise PatchError(400, "a JSON patch must be a JSON array of operations")
    try:
        return jsonpatch.apply_patch(copy.deepcopy(target), ops, in_place=False)
    except jsonpatch.JsonPatchTestFailed as failed:
        raise PatchError(422, f"the server rejected our request due to an error in our request: {failed}") from None
    except (jsonpatch.JsonPatchException, jsonpointer.JsonPointerException) as failed:
        raise PatchError(422, f"the server rejected our request due to an error in our request: {failed}") from None


def parse_apply_body(body: bytes) -> dict[str, Any]:
    """An apply body is YAML or JSON (JSON first: it is what client libraries send)."""
    try:
        data = json.loads(body)
    except ValueError:
        try:
            data = yaml.safe_load(body)
        except yaml.YAMLError as failed:
            raise PatchError(400, f"error decoding YAML: {failed}") from None
    if not isinstance(data, dict):
        raise PatchError(400, "an apply patch must be a YAML or JSON object")
    return data


def leaves(tree: dict[str, Any], prefix: Path = ()) -> dict[Path, Any]:
    """Every leaf of a nested map by path; lists and empty maps are leaves."""
    found: dict[Path, Any] = {}
    for key, value in tree.items():
        path = (*prefix, key)
        if isinstance(value, dict) and value:
            found.update(leaves(value, path))
        else:
            found[path] = value
    return found


_MISSING = object()


def get_path(tree: Any, path: Path) -> Any:
    for key in path:
        if not isinstance(tree, dict) or key not in tree:
            return _MISSING
        tree = tree[key]
    return tree


def _remove_path(tree: dict[str, Any], path: Path, keep: set[Path]) -> None:
    """Remove a leaf, then the maps it leaves empty unless a path in `keep` still names them."""
    parents = [tree]
    for key in path[:-1]:
        child = parents[-1].get(key)
        if not isinstance(child, dict):
            return
        parents.append(child)
    parents[-1].pop(path[-1], None)
    for depth in range(len(path) - 1, 0, -1):
        if parents[depth] or path[:depth] in keep:
            break
        parents[depth - 1].pop(path[depth - 1], None)


def deep_merge(base: dict[str, Any], overlay: dict[str, Any]) -> dict[str, Any]:
    result = copy.deepcopy(base)
    for key, value in overlay.items():
        if isinstance(value, dict) and isinstance(result.get(key), dict) and value:
            result[key] = deep_merge(result[key], value)
        else:
            result[key] = copy.deepcopy(value)
    return result


def server_side_apply(live: dict[str, Any], applied: dict[str, Any], manager: str,
                      owners: dict[str, dict[str, Any]], force: bool) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """Apply `applied` for `manager` onto `live`; returns the new object and the new per-manager fields."""
    wanted = leaves(applied)
    others = {name: leaves(fields) for name, fields in owners.items() if name != manager}
    conflicts = [(name, path) for name, owned in others.items() for path, value in wanted.items()
                 if path in owned and owned[path] != value]
    if conflicts and not force:
        raise ApplyConflict(conflicts)

    new_owners = {name: copy.deepcopy(fields) for name, fields in owners.items() if name != manager}
    for name, path in conflicts:
        _remove_path(new_owners[name], path, set())
    still_owned = {path for name, fields in new_owners.items() for path in leaves(fields)}
    keep = {path[:depth] for path in (*wanted, *still_owned) for depth in range(1, len(path) + 1)}

    result = copy.deepcopy(live)
    for path in leaves(owners.get(manager, {})):
        if path not in wanted and path not in still_owned:
            _remove_path(result, path, keep)
    result = deep_merge(result, applied)
    new_owners[manager] = copy.deepcopy(applied)
    return result, {name: fields for name, fields in new_owners.items() if fields}


def release_changed(owners: dict[str, dict[str, Any]], obj: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """After a non-apply write: apply managers lose the leaves whose value is no longer theirs."""
    released = {}
    for name, fields in owners.items():
        kept = copy.deepcopy(fields)
        for path, value in leaves(fields).items():
            if get_path(obj, path) != value:
                _remove_path(kept, path, set())
        if kept:
            released[name] = kept
    return released


def fields_v1(fields: dict[str, Any]) -> dict[str, Any]:
    """The managedFields `fieldsV1` shape of an applied configuration: `{"f:spec": {"f:replicas": {}}}`."""
    return {f"f:{key}": fields_v1(value) if isinstance(value, dict) else {} for key, value in fields.items()}
