"""What the API server does to a custom resource before storing it, built from real parts.

No kube-apiserver runs here, so admission against a generated CRD is reproduced step by step:
nulls pruned and scalar defaults applied as the server does them, unknown fields refused as
`kubectl apply` (strict field validation) does, the OpenAPI schema checked by `jsonschema`
(Draft 4 semantics, as OpenAPI v3.0), list-map keys and sets kept unique, and every
`x-kubernetes-validations` rule evaluated by cel-python on values typed by the schema
(`type: number` is a CEL double even when written as 2, as in the server).
"""

from __future__ import annotations

import copy
from functools import cache
from typing import Any

import celpy
import celpy.celtypes as cel
from jsonschema import Draft4Validator


def crd_schema(crd: dict[str, Any]) -> dict[str, Any]:
    return crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]


def admit(crd: dict[str, Any], obj: dict[str, Any]) -> list[str]:
    """Reasons the server would refuse `obj`; empty when it would store it."""
    schema = crd_schema(crd)
    obj = copy.deepcopy(obj)
    problems = _prune_and_default(schema, obj, "")
    problems += [
        f"{_json_path(error.absolute_path)}: {error.message}"
        for error in Draft4Validator(schema).iter_errors(obj)
    ]
    problems += _list_key_problems(schema, obj, "")
    if not problems:  # the server skips CEL on values of the wrong type; so do we
        problems += cel_problems(schema, obj)
    return problems


def cel_problems(schema: dict[str, Any], value: Any, path: str = "") -> list[str]:
    """Messages of the x-kubernetes-validations rules that `value` breaks, anywhere below `schema`."""
    problems = []
    for rule in schema.get("x-kubernetes-validations", []):
        if not evaluate(rule["rule"], schema, value):
            problems.append(f"{path}{rule.get('fieldPath', '')}: {rule['message']}")
    for name, child in schema.get("properties", {}).items():
        if isinstance(value, dict) and name in value:
            problems += cel_problems(child, value[name], f"{path}.{name}")
    if "items" in schema and isinstance(value, list):
        for index, item in enumerate(value):
            problems += cel_problems(schema["items"], item, f"{path}[{index}]")
    return problems


def evaluate(rule: str, schema: dict[str, Any], value: Any) -> bool:
    """One CEL rule with `self` bound to `value` typed by `schema`; an evaluation error is a refusal."""
    try:
        result = _program(rule).evaluate({"self": to_cel(schema, value)})
    except celpy.CELEvalError:
        return False
    if isinstance(result, celpy.CELEvalError):
        return False
    return bool(result)


@cache
def _program(rule: str) -> celpy.Runner:
    environment = celpy.Environment()
    return environment.program(environment.compile(rule))


def to_cel(schema: dict[str, Any], value: Any) -> Any:
    """A JSON value as the server hands it to CEL, its types taken from the schema."""
    kind = schema.get("type")
    if schema.get("x-kubernetes-int-or-string"):
        return cel.IntType(value) if isinstance(value, int) else cel.StringType(value)
    if kind == "object":
        properties = schema.get("properties", {})
        extra = schema.get("additionalProperties", {})
        return cel.MapType({
            cel.StringType(key): to_cel(properties.get(key, extra if isinstance(extra, dict) else {}), item)
            for key, item in value.items()
        })
    if kind == "array":
        return cel.ListType([to_cel(schema.get("items", {}), item) for item in value])
    if kind == "number":
        return cel.DoubleType(value)
    if kind == "integer":
        return cel.IntType(value)
    if kind == "boolean":
        return cel.BoolType(value)
    if kind == "string":
        return cel.StringType(value)
    return celpy.json_to_cel(value)


def _prune_and_default(schema: dict[str, Any], value: Any, path: str) -> list[str]:
    problems: list[str] = []
    if isinstance(value, dict) and "properties" in schema:
        properties = schema["properties"]
        for key in list(value):
            if key not in properties:
                if path != ".metadata":  # metadata is checked by the server's own ObjectMeta rules
                    problems.append(f"{path}.{key}: unknown field")
                continue
            if value[key] is None and not properties[key].get("nullable"):
                del value[key]  # the server prunes nulls of non-nullable fields
        for key, child in properties.items():
            if key not in value and "default" in child:
                value[key] = copy.deepcopy(child["default"])
            if key in value:
                problems += _prune_and_default(child, value[key], f"{path}.{key}")
    elif isinstance(value, dict) and isinstance(schema.get("additionalProperties"), dict):
        for key, item in value.items():
            problems += _prune_and_default(schema["additionalProperties"], item, f"{path}.{key}")
    elif isinstance(value, list) and "items" in schema:
        for index, item in enumerate(value):
            problems += _prune_and_default(schema["items"], item, f"{path}[{index}]")
    return problems


def _list_key_problems(schema: dict[str, Any], value: Any, path: str) -> list[str]:
    problems: list[str] = []
    if isinstance(value, list):
        list_type = schema.get("x-kubernetes-list-type")
        keys = schema.get("x-kubernetes-list-map-keys", [])
        seen: set[Any] = set()
        for index, item in enumerate(value):
            identity = tuple(item.get(key) for key in keys) if list_type == "map" else item
            if list_type in ("map", "set"):
                if identity in seen:
                    problems.append(f"{path}[{index}]: Duplicate value: {identity!r}")
                seen.add(identity)
            problems += _list_key_problems(schema.get("items", {}), item, f"{path}[{index}]")
    elif isinstance(value, dict):
        for key, child in schema.get("properties", {}).items():
            if key in value:
                problems += _list_key_problems(child, value[key], f"{path}.{key}")
    return problems


def _json_path(parts: Any) -> str:
    return "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in parts)
