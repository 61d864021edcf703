"""Label and field selectors as the API server reads them from `?labelSelector=` and `?fieldSelector=`.

Label selectors: `k=v`, `k==v`, `k!=v`, `k in (a,b)`, `k notin (a,b)`, `k`, `!k`, comma-joined.
Field selectors: `path=v`, `path==v`, `path!=v`, comma-joined. The real server accepts only a few
paths per resource (always `metadata.name` and `metadata.namespace`); here any dotted path of the
object is accepted, an approximation that errs on the permissive side.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Callable

Matcher = Callable[[dict[str, Any]], bool]

_SET_REQUIREMENT = re.compile(r"^\s*(?P<key>[^\s!=(),]+)\s+(?P<op>in|notin)\s+\((?P<values>[^()]*)\)\s*$")
_EQUALITY = re.compile(r"^\s*(?P<key>[^\s!=(),]+)\s*(?P<op>==|=|!=)\s*(?P<value>[^\s!=(),]*)\s*$")
_EXISTS = re.compile(r"^\s*(?P<neg>!?)\s*(?P<key>[^\s!=(),]+)\s*$")


class SelectorError(ValueError):
    """A selector the API server would reject with 400 BadRequest."""


@dataclass(frozen=True)
class Requirement:
    key: str
    op: str  # "=", "!=", "in", "notin", "exists", "!exists"
    values: frozenset[str] = frozenset()

    def matches(self, labels: dict[str, str]) -> bool:
        present = self.key in labels
        value = labels.get(self.key)
        if self.op == "=":
            return present and value in self.values
        if self.op == "!=":
            return not present or value not in self.values
        if self.op == "in":
            return present and value in self.values
        if self.op == "notin":
            return not present or value not in self.values
        if self.op == "exists":
            return present
        return not present


def _split_top_level(selector: str) -> list[str]:
    """Split on commas that are not inside `( )`."""
    parts, depth, current = [], 0, []
    for char in selector:
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
            if depth < 0:
                raise SelectorError(f"unbalanced ')' in selector {selector!r}")
        if char == "," and depth == 0:
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
    if depth:
        raise SelectorError(f"unbalanced '(' in selector {selector!r}")
    parts.append("".join(current))
    return [part for part in parts if part.strip()]


def parse_label_selector(selector: str | None) -> list[Requirement]:
    requirements = []
    for part in _split_top_level(selector or ""):
        if found := _SET_REQUIREMENT.match(part):
            values = frozenset(v.strip() for v in found["values"].split(",") if v.strip())
            requirements.append(Requirement(found["key"], found["op"], values))
        elif found := _EQUALITY.match(part):
            op = "!=" if found["op"] == "!=" else "="
            requirements.append(Requirement(found["key"], op, frozenset([found["value"]])))
        elif found := _EXISTS.match(part):
            requirements.append(Requirement(found["key"], "!exists" if found["neg"] else "exists"))
        else:
            raise SelectorError(f"unable to parse requirement {part.strip()!r} in label selector {selector!r}")
    return requirements


def label_matcher(selector: str | None) -> Matcher:
    requirements = parse_label_selector(selector)

    def matches(obj: dict[str, Any]) -> bool:
        labels = (obj.get("metadata") or {}).get("labels") or {}
        return all(requirement.matches(labels) for requirement in requirements)

    return matches


def _field_value(obj: dict[str, Any], path: str) -> str:
    value: Any = obj
    for part in path.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def field_matcher(selector: str | None) -> Matcher:
    requirements = []
    for part in _split_top_level(selector or ""):
        found = _EQUALITY.match(part)
        if not found:
            raise SelectorError(f"invalid field selector {part.strip()!r}: expected path=value or path!=value")
        requirements.append((found["key"], found["op"] != "!=", found["value"]))

    def matches(obj: dict[str, Any]) -> bool:
        return all((_field_value(obj, path) == value) == equal for path, equal, value in requirements)

    return matches
