"""Base models and constrained field types for objects as they appear on the wire (camelCase YAML)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field, PlainValidator, StringConstraints, WithJsonSchema
from pydantic.alias_generators import to_camel
from pydantic_core import PydanticCustomError

from hetplace.api.quantity import QUANTITY_PATTERN, QUANTITY_RULE, parse_quantity

API_GROUP = "hetplace.io"
API_VERSION = "hetplace.io/v1alpha1"


class WireModel(BaseModel):
    """camelCase on the wire, snake_case in Python, immutable once validated."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        validate_by_name=True,
        validate_by_alias=True,
        serialize_by_alias=True,
        frozen=True,
        use_attribute_docstrings=True,
    )

    def wire(self) -> dict[str, Any]:
        """The object as it is written to YAML or the API: camelCase, unset optionals left out."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


class SpecModel(WireModel):
    """What users write: unknown fields are typos, and types are not coerced (as the API server)."""

    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)


class StatusModel(WireModel):
    """What the operator writes: tolerant of fields a newer or older operator left behind."""

    model_config = ConfigDict(extra="ignore")


# A human sentence for each pattern, so a mismatch reads as a rule and not as a regex.
DNS_LABEL_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
TOKEN_PATTERN = r"^[A-Za-z0-9]([-._A-Za-z0-9]*[A-Za-z0-9])?$"
WORKLOAD_REF_PATTERN = r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?/)?[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
# an endpoint template: {service} {namespace} {workload} {pool} {variant}, nothing else between braces
_PLACEHOLDERS = r"(\{(service|namespace|workload|pool|variant)\}|[^{}\s])"
CLIENT_HTTP_PATTERN = rf"^https?://{_PLACEHOLDERS}+$"
CLIENT_GRPC_PATTERN = rf"^grpcs?://{_PLACEHOLDERS}+$"
_TEMPLATE_RULE = ("with placeholders {service} {namespace} {workload} {pool} {variant} only, "
                  "and no spaces")
PATTERN_RULES = {
    DNS_LABEL_PATTERN: "must be a DNS-1123 label: lowercase letters, digits and '-', "
    "starting and ending with a letter or digit",
    TOKEN_PATTERN: "must be letters, digits, '-', '_' or '.', starting and ending with a letter or digit",
    WORKLOAD_REF_PATTERN: "must be NAMESPACE/NAME or NAME, each a DNS-1123 label",
    QUANTITY_PATTERN: QUANTITY_RULE,
    CLIENT_HTTP_PATTERN: "must be an http:// or https:// URL " + _TEMPLATE_RULE,
    CLIENT_GRPC_PATTERN: "must be grpc://HOST:PORT or grpcs://HOST:PORT " + _TEMPLATE_RULE,
}

DnsLabel = Annotated[str, StringConstraints(min_length=1, max_length=63, pattern=DNS_LABEL_PATTERN)]
"""A name that ends up in Kubernetes object names (pools, variants, workloads)."""

Token = Annotated[str, StringConstraints(min_length=1, max_length=63, pattern=TOKEN_PATTERN)]
"""A free-form identifier such as a site, a region or an encoding name."""


def _quantity(value: Any) -> int | str:
    # int-or-string, like Kubernetes: 1.5 as a bare number is refused by the API server too.
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise PydanticCustomError(
            "quantity_type", 'must be an integer or a quantity string such as "1.5" or "500m"'
        )
    try:
        parse_quantity(value)
    except ValueError:
        raise PydanticCustomError("quantity", QUANTITY_RULE) from None
    return value


Quantity = Annotated[
    int | str,
    PlainValidator(_quantity),
    WithJsonSchema(
        {
            "anyOf": [{"type": "integer"}, {"type": "string"}],
            "pattern": QUANTITY_PATTERN,
            "x-kubernetes-int-or-string": True,
        }
    ),
]
"""A Kubernetes quantity, kept as the user wrote it ("500m", "4Gi", 2)."""


def cel_rule(rule: str, message: str, field_path: str | None = None) -> ConfigDict:
    """A model_config that adds one x-kubernetes-validations rule to the model's CRD schema.

    The rule restates in CEL a cross-field check the model also makes, so the API server
    refuses what the operator would refuse.
    """
    validation = {"rule": rule, "message": message}
    if field_path:
        validation["fieldPath"] = field_path
    return ConfigDict(json_schema_extra={"x-kubernetes-validations": [validation]})


def list_map(key: str) -> dict[str, Any]:
    """CRD markers for a list whose items are identified by `key` (unique; merged per item by apply)."""
    return {"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": [key]}


LIST_SET: dict[str, Any] = {"x-kubernetes-list-type": "set"}


def names_list(max_items: int) -> Any:
    """A list of unique names, e.g. regions or namespaces."""
    return Field(default_factory=list, max_length=max_items, json_schema_extra=LIST_SET)


Item = TypeVar("Item")


def unique_by(items: Sequence[Item], *keys: str) -> Sequence[Item]:
    """Refuse the second item whose `keys` attributes (or the item itself) repeat an earlier one.

    Keys are one-word fields ("name", "site"), the same in Python and on the wire. The error
    carries the duplicate's position so the reported field path points at it (its last key).
    """
    first_seen: dict[Any, int] = {}
    for index, item in enumerate(items):
        identity = tuple(getattr(item, key) for key in keys) if keys else item
        if identity in first_seen:
            raise PydanticCustomError(
                "duplicate",
                "must be unique (item {first} has the same value)",
                {
                    "first": first_seen[identity],
                    "at": [index, keys[-1]] if keys else [index],
                    "value": getattr(item, keys[-1]) if keys else item,
                },
            )
        first_seen[identity] = index
    return items


def fail_at(at: Sequence[str | int], value: Any, rule: str) -> PydanticCustomError:
    """A cross-field rule broken at `at` (wire names below the model being validated)."""
    return PydanticCustomError("cross_field", rule, {"at": list(at), "value": value})
