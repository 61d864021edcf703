"""Parse Kubernetes resource quantities ("500m", "2", "4Gi", "1e3") into cores and bytes."""

from __future__ import annotations

import math
import re
from decimal import Decimal

# Non-negative quantities only: resource amounts are never negative. The same pattern goes
# into the CRD schema, so the API server and the offline loader agree on what parses.
QUANTITY_PATTERN = (
    r"^\+?([0-9]+(\.[0-9]*)?|\.[0-9]+)"
    r"(([KMGTPE]i)|[numkMGTPE]|([eE][+-]?[0-9]+))?$"
)
_QUANTITY = re.compile(QUANTITY_PATTERN)

_MULTIPLIERS = {
    "": Decimal(1),
    "n": Decimal("1e-9"),
    "u": Decimal("1e-6"),
    "m": Decimal("1e-3"),
    "k": Decimal(10) ** 3,
    "M": Decimal(10) ** 6,
    "G": Decimal(10) ** 9,
    "T": Decimal(10) ** 12,
    "P": Decimal(10) ** 15,
    "E": Decimal(10) ** 18,
    "Ki": Decimal(2) ** 10,
    "Mi": Decimal(2) ** 20,
    "Gi": Decimal(2) ** 30,
    "Ti": Decimal(2) ** 40,
    "Pi": Decimal(2) ** 50,
    "Ei": Decimal(2) ** 60,
}

QUANTITY_RULE = 'must be a non-negative Kubernetes quantity such as "500m", "2", "1.5" or "4Gi"'
# Kubernetes stores quantities in 63 bits; anything larger is a typo, not a machine.
_LARGEST = Decimal(2) ** 63


def parse_quantity(value: str | int | float) -> Decimal:
    """The exact value of a non-negative quantity; ValueError names the input when it is not one."""
    if isinstance(value, bool):
        raise ValueError(f"{value!r} {QUANTITY_RULE}")
    if isinstance(value, (int, float)):
        if not math.isfinite(value) or value < 0:
            raise ValueError(f"{value!r} {QUANTITY_RULE}")
        value = str(value)
    elif not isinstance(value, str):
        raise ValueError(f"{value!r} {QUANTITY_RULE}")
    match = _QUANTITY.match(value)
    if match is None:
        raise ValueError(f"{value!r} {QUANTITY_RULE}")
    number, suffix = match.group(1), match.group(3) or ""
    try:
        if suffix in _MULTIPLIERS:
            amount = Decimal(number) * _MULTIPLIERS[suffix]
        else:  # a decimal exponent: e3, E-2
            amount = Decimal(number).scaleb(int(suffix[1:]))
    except ArithmeticError as error:
        raise ValueError(f"{value!r} {QUANTITY_RULE}") from error
    if amount > _LARGEST:
        raise ValueError(f"{value!r} is larger than any Kubernetes quantity (2^63)")
    return amount


def parse_cpu(value: str | int | float) -> float:
    """CPU quantity in cores: "500m" -> 0.5, "2" -> 2.0."""
    return float(parse_quantity(value))


def parse_memory(value: str | int | float) -> int:
    """Memory quantity in bytes, rounded up as Kubernetes does: "4Gi" -> 4294967296."""
    return math.ceil(parse_quantity(value))
