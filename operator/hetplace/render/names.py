"""Names and label values of the objects hetplace owns: valid, stable and at most 63 characters for any input.

A name that is already a valid DNS label is used as it is; anything else (too long, other
characters, a leading digit where a Service needs a letter) is cleaned, cut, and given a short
hash of the original, so two different inputs never collide and the same input always gives
the same name.
"""

from __future__ import annotations

import hashlib
import re

MAX_LABEL = 63
_HASH_CHARS = 8
_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
_DNS_1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:_HASH_CHARS]


def dns_label(*parts: str) -> str:
    """An RFC 1035 label (a Service name): lowercase letters, digits and '-', a letter first, <= 63."""
    raw = "-".join(parts)
    if len(raw) <= MAX_LABEL and _DNS_1035.match(raw):
        return raw
    cleaned = re.sub(r"-{2,}", "-", re.sub(r"[^a-z0-9-]+", "-", raw.lower())).strip("-")
    if not cleaned or not cleaned[0].isalpha():
        cleaned = "h-" + cleaned
    head = cleaned[: MAX_LABEL - _HASH_CHARS - 1].rstrip("-")
    return f"{head}-{_digest(raw)}"


def label_value(value: str) -> str:
    """A Kubernetes label value (<= 63, alphanumerics and '-_.' inside)."""
    if len(value) <= MAX_LABEL and _LABEL_VALUE.match(value):
        return value
    cleaned = re.sub(r"[^A-Za-z0-9_.-]+", "-", value).strip("-_.")
    head = cleaned[: MAX_LABEL - _HASH_CHARS - 1].rstrip("-_.")
    return f"{head}-{_digest(value)}" if head else _digest(value)


def group_name(workload: str, pool: str, variant: str) -> str:
    """The Deployment and Service of one group: <workload>-<pool>-<variant>."""
    return dns_label(workload, pool, variant)


def routes_name(workload: str) -> str:
    """The ConfigMap mapping each site to its endpoint: <workload>-routes."""
    return dns_label(workload, "routes")
