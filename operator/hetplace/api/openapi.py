"""Turn a pydantic JSON Schema into a structural OpenAPI v3 schema that a CRD accepts."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

# Keywords a CRD schema may carry; anything else pydantic emits (title, $defs, const …) is dropped
# or rewritten below, so the result is structural.
_KEPT = {
    "type", "format", "description", "enum", "default", "pattern",
    "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum",
    "minLength", "maxLength", "minItems", "maxItems",
    "properties", "required", "items", "additionalProperties", "anyOf",
}


def structural_schema(model: type[BaseModel]) -> dict[str, Any]:
    """The openAPIV3Schema of `model` as it appears on the wire (camelCase, inline, no nulls)."""
    schema = model.model_json_schema(by_alias=True, mode="validation")
    definitions = schema.pop("$defs", {})
    return _convert(schema, definitions)


def _convert(node: dict[str, Any], definitions: dict[str, Any]) -> dict[str, Any]:
    node = _resolve(node, definitions)
    result: dict[str, Any] = {}
    for key, value in node.items():
        if key.startswith("x-kubernetes-"):
            result[key] = value
        elif key == "properties":
            result[key] = {name: _convert(child, definitions) for name, child in value.items()}
        elif key in ("items", "additionalProperties") and isinstance(value, dict):
            result[key] = _convert(value, definitions)
        elif key == "additionalProperties":
            continue  # `false` from extra="forbid": the API server prunes unknown fields instead
        elif key in ("exclusiveMinimum", "exclusiveMaximum"):
            # JSON Schema 2020-12 gives the bound; OpenAPI v3.0 wants the bound plus a flag.
            bound = "minimum" if key == "exclusiveMinimum" else "maximum"
            result[bound] = value
            result[key] = True
        elif key == "const":
            result["enum"] = [value]
        elif key == "default":
            if isinstance(value, (bool, int, float, str)):
                result[key] = value  # scalars only: object defaults would fill in whole sections
        elif key in _KEPT:
            result[key] = value
    if "enum" in result and "type" not in result:
        result["type"] = _json_type(result["enum"][0])
    return result


def _resolve(node: dict[str, Any], definitions: dict[str, Any]) -> dict[str, Any]:
    """Inline $ref and drop the null branch of Optional fields; the field's own keys win."""
    node = dict(node)
    while "$ref" in node:
        target = definitions[node.pop("$ref").rsplit("/", 1)[-1]]
        node = {**target, **node}
    branches = node.get("anyOf")
    if branches and not node.get("x-kubernetes-int-or-string"):
        kept = [branch for branch in branches if branch.get("type") != "null"]
        if len(kept) != 1:
            raise ValueError(f"cannot express anyOf {branches} in a structural schema")
        del node["anyOf"]
        node.pop("default", None) if node.get("default") is None else None
        node = {**_resolve(kept[0], definitions), **node}
    return node


def _json_type(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    return "string"
