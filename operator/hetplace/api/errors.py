"""InvalidObject: a rejected manifest that names its file, object, field path, value and rule."""

from __future__ import annotations

import dataclasses
import difflib
import json
import typing
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ValidationError

from hetplace.api.wire import PATTERN_RULES


class _Missing:
    def __repr__(self) -> str:
        return "MISSING"


Location = tuple[str | int, ...]

MISSING: Any = _Missing()
"""The value of a field that was not given at all."""


@dataclass(frozen=True)
class Problem:
    """One broken rule: `field` is a wire path such as spec.variants[1].profile.latencyMs."""

    field: str | None
    value: Any
    rule: str
    line: int | None = None
    """Line in the source file, when the problem was read from one."""

    def __str__(self) -> str:
        if self.field is None:
            return self.rule
        if self.value is MISSING:
            return f"{self.field}: {self.rule}"
        return f"{self.field} = {_show(self.value)}: {self.rule}"


class InvalidObject(Exception):
    """A manifest or file hetplace refuses, with every problem found in it.

    `field`, `value` and `rule` are those of the first problem; `problems` holds them all.
    """

    def __init__(
        self,
        problems: list[Problem],
        *,
        source: str | None = None,
        line: int | None = None,
        kind: str | None = None,
        name: str | None = None,
    ) -> None:
        if not problems:
            raise ValueError("InvalidObject needs at least one problem")
        self.problems = list(problems)
        self.source = source
        self.line = line if line is not None else self.problems[0].line
        self.kind = kind
        self.name = name
        super().__init__(str(self))

    @property
    def field(self) -> str | None:
        return self.problems[0].field

    @property
    def value(self) -> Any:
        return self.problems[0].value

    @property
    def rule(self) -> str:
        return self.problems[0].rule

    def __str__(self) -> str:
        subject = " ".join(part for part in (self.name, f"({self.kind})" if self.kind else None) if part)
        if self.source:
            # One line number only when it is the line of the one problem; a list gives each its own.
            single = self.line and len(self.problems) == 1
            where = f"{self.source}:{self.line}" if single else self.source
            subject = f"{subject} in {where}" if subject else where
        lead = f"{subject}: " if subject else ""
        if len(self.problems) == 1:
            return f"{lead}{self.problems[0]}"
        listed = "\n".join(
            f"  - {problem}" + (f" (line {problem.line})" if problem.line else "") for problem in self.problems
        )
        return f"{lead}{len(self.problems)} problems:\n{listed}"


def problems_from(
    error: ValidationError, model: type[BaseModel], line_of: Callable[[Location], int] | None = None
) -> list[Problem]:
    """Turn pydantic's errors into Problems with wire paths and rules a user can act on.

    `line_of` maps a location such as ('spec', 'slo', 'percentile') to its line in the file.
    """
    problems = []
    for detail in error.errors(include_url=False):
        problem = _problem(detail, model)
        if line_of is not None:
            location = tuple(detail["loc"]) + tuple((detail.get("ctx") or {}).get("at", ()))
            problem = dataclasses.replace(problem, line=line_of(location))
        problems.append(problem)
    return problems


def field_path(location: Location) -> str:
    """('spec', 'variants', 1, 'name') -> spec.variants[1].name"""
    path = ""
    for part in location:
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
    return path


def _problem(detail: dict[str, Any], model: type[BaseModel]) -> Problem:
    context = detail.get("ctx") or {}
    location = tuple(detail["loc"]) + tuple(context.get("at", ()))
    value = context["value"] if "value" in context else detail.get("input", MISSING)
    kind = detail["type"]
    if kind == "missing":
        value = MISSING
    if kind == "extra_forbidden":
        return Problem(field_path(location), value, _unknown_field_rule(model, location))
    return Problem(field_path(location) or None, value, _rule(kind, context, detail["msg"]))


_RULES = {
    "missing": "is required",
    "greater_than": "must be > {gt}",
    "greater_than_equal": "must be >= {ge}",
    "less_than": "must be < {lt}",
    "less_than_equal": "must be <= {le}",
    "too_short": "must have at least {min_length} item(s)",
    "too_long": "must have at most {max_length} items",
    "string_too_short": "must not be empty",
    "string_too_long": "must be at most {max_length} characters",
    "float_type": "must be a number",
    "float_parsing": "must be a number",
    "finite_number": "must be a finite number",
    "int_type": "must be an integer",
    "int_parsing": "must be an integer",
    "int_from_float": "must be an integer",
    "string_type": "must be a string",
    "bool_type": "must be true or false",
    "list_type": "must be a list",
    "dict_type": "must be a mapping",
    "model_type": "must be a mapping",
    "model_attributes_type": "must be a mapping",
    "datetime_type": "must be an RFC 3339 date-time",
    "datetime_parsing": "must be an RFC 3339 date-time",
    "datetime_from_date_parsing": "must be an RFC 3339 date-time",
}


def _rule(kind: str, context: dict[str, Any], message: str) -> str:
    if kind == "string_pattern_mismatch":
        return PATTERN_RULES.get(context["pattern"], f"must match {context['pattern']}")
    if kind in ("literal_error", "enum"):
        return f"must be one of {context['expected'].replace(' or ', ', ')}"
    if kind in _RULES:
        return _RULES[kind].format(**{key: _number(value) for key, value in context.items()})
    # Our own rules (PydanticCustomError) are already phrased as rules; pydantic's ValueErrors
    # carry a "Value error, " prefix that says nothing to the user.
    return message.removeprefix("Value error, ").removeprefix("Assertion failed, ")


def _number(value: Any) -> Any:
    return f"{value:g}" if isinstance(value, float) else value


def _unknown_field_rule(model: type[BaseModel], location: Location) -> str:
    known = _fields_at(model, location[:-1])
    close = difflib.get_close_matches(str(location[-1]), known, n=1, cutoff=0.6)
    hint = f"; did you mean {close[0]}?" if close else (f"; known fields: {', '.join(known)}" if known else "")
    return f"unknown field{hint}"


def _fields_at(model: type[BaseModel], location: Location) -> list[str]:
    """The wire names of the fields of the model found by walking `location` from `model`."""
    current: Any = model
    for part in location:
        current = _model_in(current)
        if current is None:
            return []
        if isinstance(part, int):
            continue  # the list itself was unwrapped by _model_in
        field = next(
            (info for name, info in current.model_fields.items() if part in (name, info.alias)), None
        )
        if field is None:
            return []
        current = field.annotation
    current = _model_in(current)
    if current is None:
        return []
    return [info.alias or name for name, info in current.model_fields.items()]


def _model_in(annotation: Any) -> type[BaseModel] | None:
    """The model class inside an annotation such as Model, Model | None or list[Model]."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for argument in typing.get_args(annotation):
        found = _model_in(argument)
        if found is not None:
            return found
    return None


def _show(value: Any) -> str:
    if isinstance(value, list) and len(value) > 3:
        return f"[{len(value)} items]"
    try:
        text = json.dumps(value, default=str, separators=(", ", ": "))
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."
