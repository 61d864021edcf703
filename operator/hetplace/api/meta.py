"""Object metadata as hetplace reads it: the fields it uses, the rest of metav1.ObjectMeta ignored."""

from __future__ import annotations

from datetime import datetime

from pydantic import ConfigDict, Field

from hetplace.api.wire import WireModel


class ObjectMeta(WireModel):
    """Name, namespace, labels and the bookkeeping fields the API server sets."""

    model_config = ConfigDict(extra="ignore")

    name: str = Field(min_length=1, max_length=253)
    namespace: str | None = Field(default=None, max_length=63, pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)
    generation: int | None = None
    uid: str | None = None
    resource_version: str | None = None
    creation_timestamp: datetime | None = None
    deletion_timestamp: datetime | None = None
