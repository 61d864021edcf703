"""The operator's own Kubernetes API calls (kopf does the watching): server-side apply with field
manager `hetplace`, delete, list, status merge-patches and Events, with bounded retries.

Synchronous on purpose (the `kubernetes` client is); the controller calls it from a worker thread.
"""

from __future__ import annotations

import json
import logging
import time
import urllib.parse
from dataclasses import dataclass
from typing import Any, Callable, Iterable

import kubernetes

FIELD_MANAGER = "hetplace"
# not 409: server-side apply and resourceVersion-less merge patches do not conflict, and a conflict
# on anything else means what was read is stale — the caller decides again rather than resend it
RETRIED_STATUSES = {0, 429, 500, 502, 503, 504}
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Kind:
    """Where a kind lives in the API."""

    api_version: str
    plural: str
    namespaced: bool

    def path(self, namespace: str | None, name: str | None = None, subresource: str | None = None) -> str:
        root = "/api/v1" if self.api_version == "v1" else f"/apis/{self.api_version}"
        parts = [root]
        if self.namespaced:
            if not namespace:
                raise ValueError(f"{self.plural} are namespaced: a namespace is needed")
            parts += ["namespaces", namespace]
        parts.append(self.plural)
        if name:
            parts.append(name)
        if subresource:
            parts.append(subresource)
        return "/".join(parts)


KINDS = {
    ("apps/v1", "Deployment"): Kind("apps/v1", "deployments", True),
    ("v1", "Service"): Kind("v1", "services", True),
    ("v1", "ConfigMap"): Kind("v1", "configmaps", True),
    ("v1", "Event"): Kind("v1", "events", True),
    ("v1", "Node"): Kind("v1", "nodes", False),
    ("hetplace.io/v1alpha1", "InferenceWorkload"): Kind("hetplace.io/v1alpha1", "inferenceworkloads", True),
    ("hetplace.io/v1alpha1", "ComputePool"): Kind("hetplace.io/v1alpha1", "computepools", False),
    ("kopf.dev/v1", "ClusterKopfPeering"): Kind("kopf.dev/v1", "clusterkopfpeerings", False),
    ("kopf.dev/v1", "KopfPeering"): Kind("kopf.dev/v1", "kopfpeerings", True),
}


class KubeError(Exception):
    """An API call that failed after its retries, with the HTTP status (0: no answer)."""

    def __init__(self, method: str, path: str, status: int, message: str) -> None:
        super().__init__(f"{method} {path}: {status or 'no answer'}: {message}")
        self.status = status

    @property
    def refused(self) -> bool:
        """The API refused the request itself (4xx but a conflict or throttling): resending will not help."""
        return 400 <= self.status < 500 and self.status not in (409, 429)


def kind_of(obj_or_api_version: dict | str, kind: str | None = None) -> Kind:
    api_version, kind = ((obj_or_api_version["apiVersion"], obj_or_api_version["kind"])
                         if isinstance(obj_or_api_version, dict) else (obj_or_api_version, kind))
    try:
        return KINDS[(api_version, kind)]
    except KeyError:
        raise ValueError(f"hetplace does not manage {api_version} {kind}") from None


class Kube:
    """A thin client over one `kubernetes.client.ApiClient`; every call counts in `writes`."""

    def __init__(self, api_client: kubernetes.client.ApiClient, attempts: int = 5, backoff_s: float = 0.2,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.api = api_client
        self.attempts = attempts
        self.backoff_s = backoff_s
        self.sleep = sleep
        self.writes = 0

    @classmethod
    def from_environment(cls, kubeconfig: str | None = None, context: str | None = None) -> Kube:
        """In-cluster credentials when running in a pod, else the kubeconfig (KUBECONFIG or ~/.kube/config)."""
        configuration = kubernetes.client.Configuration()
        if kubeconfig is None and context is None:
            try:
                kubernetes.config.load_incluster_config(client_configuration=configuration)
                return cls(kubernetes.client.ApiClient(configuration))
            except kubernetes.config.ConfigException:
                pass
        kubernetes.config.load_kube_config(config_file=kubeconfig, context=context,
                                           client_configuration=configuration)
        return cls(kubernetes.client.ApiClient(configuration))

    def request(self, method: str, path: str, query: Iterable[tuple[str, str]] = (), body: Any = None,
                content_type: str = "application/json", missing_ok: bool = False,
                exists_ok: bool = False) -> dict | None:
        """One call, retried on conflicts, throttling, server errors and lost connections."""
        if method != "GET":
            self.writes += 1
        query = list(query)
        for attempt in range(1, self.attempts + 1):
            status, answer = self._once(method, path, query, body, content_type)
            if 200 <= status < 300:
                return answer
            if (status == 404 and missing_ok) or (status == 409 and exists_ok and attempt > 1):
                return None     # (a create retried after a lost answer finds what it created)
            message = answer.get("message", "") if isinstance(answer, dict) else str(answer)
            if status not in RETRIED_STATUSES or attempt == self.attempts:
                raise KubeError(method, path, status, message)
            log.info("retrying %s %s after %s (%s), attempt %d", method, path, status or "no answer", message, attempt)
            self.sleep(self.backoff_s * 2 ** (attempt - 1))
        raise AssertionError("unreachable")

    def _once(self, method: str, path: str, query: list, body: Any, content_type: str) -> tuple[int, Any]:
        headers = {"Accept": "application/json", "Content-Type": content_type}
        try:
            _, url, headers, payload, _ = self.api.param_serialize(
                method=method, resource_path=path, query_params=query, header_params=headers,
                body=body, auth_settings=["BearerToken"])
            response = self.api.call_api(method, url, header_params=headers, body=payload, _request_timeout=30)
            raw = response.read()
            status = response.status
        except kubernetes.client.ApiException as failed:
            status, raw = failed.status or 0, failed.body or failed.reason or ""
        except Exception as unreachable:  # connection refused, reset, timeout: the API server is not answering
            return 0, str(unreachable)
        try:
            return status, json.loads(raw) if raw else {}
        except (TypeError, ValueError):
            return status, raw.decode(errors="replace") if isinstance(raw, bytes) else str(raw)

    def apply(self, obj: dict) -> dict:
        """Server-side apply: create or update the fields hetplace owns, taking them over if needed."""
        meta = obj["metadata"]
        path = kind_of(obj).path(meta.get("namespace"), meta["name"])
        return self.request("PATCH", path, [("fieldManager", FIELD_MANAGER), ("force", "true")], obj,
                            "application/apply-patch+yaml")

    def delete(self, api_version: str, kind: str, namespace: str | None, name: str) -> None:
        """Delete an object; one already gone is fine. Its pods go with it (background deletion)."""
        self.request("DELETE", kind_of(api_version, kind).path(namespace, name), body={"propagationPolicy": "Background"},
                     missing_ok=True)

    def get(self, api_version: str, kind: str, namespace: str | None, name: str) -> dict | None:
        return self.request("GET", kind_of(api_version, kind).path(namespace, name), missing_ok=True)

    def list(self, api_version: str, kind: str, namespace: str | None = None,
             labels: dict[str, str] | None = None) -> list[dict]:
        k = kind_of(api_version, kind)
        path = k.path(namespace) if namespace or not k.namespaced else (
            "/api/v1/" + k.plural if api_version == "v1" else f"/apis/{api_version}/{k.plural}")
        query = [("labelSelector", ",".join(f"{key}={value}" for key, value in sorted(labels.items())))] if labels else []
        return (self.request("GET", path, query) or {}).get("items", [])

    def patch_status(self, api_version: str, kind: str, namespace: str | None, name: str, status: dict,
                     resource_version: str | None = None) -> dict | None:
        """Merge-patch `status` through the status subresource (spec is never written); with
        `resource_version`, only if the object is still at that version (else 409)."""
        body: dict[str, Any] = {"status": status}
        if resource_version:
            body["metadata"] = {"resourceVersion": resource_version}
        return self.request("PATCH", kind_of(api_version, kind).path(namespace, name, "status"), body=body,
                            content_type="application/merge-patch+json", missing_ok=True)

    def event(self, involved: dict, type_: str, reason: str, message: str, now_iso: str) -> None:
        """Record a core/v1 Event on `involved` (an object's apiVersion, kind and metadata)."""
        meta = involved["metadata"]
        namespace = meta.get("namespace") or "default"
        name = f"{meta['name']}.{urllib.parse.quote(reason.lower())}.{int(time.time() * 1e6):x}"[:253]
        self.request("POST", KINDS[("v1", "Event")].path(namespace), body={
            "apiVersion": "v1", "kind": "Event",
            "metadata": {"name": name, "namespace": namespace},
            "involvedObject": {"apiVersion": involved["apiVersion"], "kind": involved["kind"], "name": meta["name"],
                               "namespace": meta.get("namespace"), "uid": meta.get("uid")},
            "type": type_, "reason": reason, "message": message[:1024],
            "firstTimestamp": now_iso, "lastTimestamp": now_iso, "count": 1,
            "source": {"component": "hetplace"}, "reportingComponent": "hetplace",
        }, exists_ok=True)
