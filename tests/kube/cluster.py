"""What a test holds to reach "the cluster": object methods over HTTP, used as a person would use kubectl,
against either the emulator (default) or a real test cluster (`HETPLACE_TEST_KUBECONFIG`).

Both kinds write or read a kubeconfig and build a fresh `kubernetes` ApiClient from it for each
handle (the global client configuration is never touched). Controls that only the emulator has
(faults, watch drops, deployment holds, the request log) raise `EmulatorOnly` on a real cluster,
which pytest reports as a skip.
"""

from __future__ import annotations

import json
import os
import re
import time
import uuid
from pathlib import Path
from typing import Any, Callable, Iterable, TypeVar

import kopf
import kubernetes
import pytest
import yaml

from .emulator import ApiCall, DeploymentHold, Fault, KubeEmulator
from .server import EmulatorThread

T = TypeVar("T")

EMULATOR_CONTEXT = "hetplace-emulator"
EMULATOR_TOKEN = "hetplace-emulator-token"
TEST_CONTEXT_MARKERS = ("test", "kind", "minikube", "k3d")
PATCH_TYPES = {
    "merge": "application/merge-patch+json",
    "json": "application/json-patch+json",
    "strategic": "application/strategic-merge-patch+json",
    "apply": "application/apply-patch+yaml",
}


class ApiError(Exception):
    """A non-2xx answer of the API server (status 0: no answer), with its Status body."""

    def __init__(self, method: str, path: str, status: int, body: Any) -> None:
        self.status = status
        self.body = body
        self.reason = body.get("reason") if isinstance(body, dict) else None
        message = body.get("message") if isinstance(body, dict) else body
        super().__init__(f"{method} {path}: {status} {self.reason or ''}: {message}")


class EmulatorOnly(pytest.skip.Exception):
    """A test used a control that only the emulator has; pytest reports it as skipped."""

    def __init__(self, what: str) -> None:
        super().__init__(f"needs the emulator: {what} is not available on a real cluster")


class WaitTimeout(AssertionError):
    pass


def wait_for(predicate: Callable[[], T], timeout_s: float = 10.0, interval_s: float = 0.05, message: str = "") -> T:
    """Poll `predicate` until it returns something truthy or stops raising AssertionError; fail at the deadline."""
    deadline = time.monotonic() + timeout_s
    while True:
        failure: AssertionError | None = None
        try:
            value = predicate()
        except AssertionError as not_yet:
            value, failure = None, not_yet  # type: ignore[assignment]
        if value and failure is None:
            return value
        if time.monotonic() >= deadline:
            what = message or getattr(predicate, "__name__", "the condition")
            raise WaitTimeout(f"{what}: not reached within {timeout_s}s (last: {failure or value!r})") from failure
        time.sleep(interval_s)


def context_refusal(context: str | None, allowed: str | None = None) -> str | None:
    """Why a kubeconfig context must not be used by the tests, or None when it looks like a test cluster."""
    if not context:
        return "the kubeconfig has no current context"
    if allowed and context == allowed:
        return None
    if any(marker in context for marker in TEST_CONTEXT_MARKERS):
        return None
    return (f"refusing to run the integration tests against context {context!r}: its name contains none of "
            f"{', '.join(TEST_CONTEXT_MARKERS)}; name it so, or set HETPLACE_TEST_CONTEXT={context} "
            f"if it really is a disposable test cluster")


class Cluster:
    """The API as a user reaches it. Subclasses: `EmulatedCluster`, `RealCluster`."""

    kubeconfig_path: Path
    context: str
    url: str

    def __init__(self) -> None:
        self._client: kubernetes.client.ApiClient | None = None
        self._paths: dict[tuple[str, str], tuple[str, bool]] = {}

    # --- connection ---

    def api_client(self) -> kubernetes.client.ApiClient:
        """A new `kubernetes` client for this cluster (from the kubeconfig; no global configuration)."""
        configuration = kubernetes.client.Configuration()
        kubernetes.config.load_kube_config(config_file=str(self.kubeconfig_path), context=self.context,
                                           client_configuration=configuration, persist_config=False)
        return kubernetes.client.ApiClient(configuration)

    @property
    def client(self) -> kubernetes.client.ApiClient:
        if self._client is None:
            self._client = self.api_client()
        return self._client

    def connection_info(self) -> kopf.ConnectionInfo:
        """What kopf's login handler returns for this cluster (see `operators.register_login`)."""
        configuration = self.client.configuration
        credential = configuration.api_key.get("BearerToken") or configuration.api_key.get("authorization") or ""
        scheme, _, token = credential.partition(" ")
        return kopf.ConnectionInfo(
            server=configuration.host, scheme=scheme or None, token=token or None,
            ca_path=configuration.ssl_ca_cert, insecure=not configuration.verify_ssl,
            certificate_path=configuration.cert_file, private_key_path=configuration.key_file,
            default_namespace="default")

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    # --- raw calls ---

    def request(self, method: str, path: str, *, query: Iterable[tuple[str, str]] = (), body: Any = None,
                content_type: str = "application/json") -> Any:
        """One API call; the decoded answer, or ApiError."""
        headers = {"Accept": "application/json", "Content-Type": content_type}
        try:
            _, url, headers, payload, _ = self.client.param_serialize(
                method=method, resource_path=path, query_params=list(query), header_params=headers, body=body,
                auth_settings=["BearerToken"])
            response = self.client.call_api(method, url, header_params=headers, body=payload, _request_timeout=30)
            status, raw = response.status, response.read()
        except kubernetes.client.ApiException as failed:
            status, raw = failed.status or 0, failed.body or b""
        try:
            answer = json.loads(raw) if raw else {}
        except ValueError:
            answer = raw.decode(errors="replace") if isinstance(raw, bytes) else raw
        if not 200 <= status < 300:
            raise ApiError(method, path, status, answer)
        return answer

    def path(self, api_version: str, kind: str, namespace: str | None = None, name: str | None = None,
             subresource: str | None = None) -> str:
        """The URL path of a kind (found through discovery, as kubectl does), or of one object."""
        if (api_version, kind) not in self._paths:
            root = "/api/v1" if api_version == "v1" else f"/apis/{api_version}"
            for resource in self.request("GET", root).get("resources", []):
                if "/" not in resource["name"]:
                    self._paths[(api_version, resource["kind"])] = (resource["name"], resource["namespaced"])
        if (api_version, kind) not in self._paths:
            raise LookupError(f"the cluster serves no {kind} in {api_version}")
        plural, namespaced = self._paths[(api_version, kind)]
        root = "/api/v1" if api_version == "v1" else f"/apis/{api_version}"
        parts = [root, *(["namespaces", namespace] if namespaced and namespace else []), plural,
                 *([name] if name else []), *([subresource] if subresource else [])]
        return "/".join(parts)

    # --- objects ---

    def create(self, obj: dict[str, Any]) -> dict[str, Any]:
        meta = obj.get("metadata", {})
        created = self.request("POST", self.path(obj["apiVersion"], obj["kind"], meta.get("namespace")), body=obj)
        self._created(created)
        return created

    def get(self, api_version: str, kind: str, name: str, namespace: str | None = None) -> dict[str, Any] | None:
        try:
            return self.request("GET", self.path(api_version, kind, namespace, name))
        except ApiError as failed:
            if failed.status == 404:
                return None
            raise

    def list(self, api_version: str, kind: str, namespace: str | None = None, *, label_selector: str | None = None,
             field_selector: str | None = None) -> list[dict[str, Any]]:
        query = [(key, value) for key, value in (("labelSelector", label_selector),
                                                 ("fieldSelector", field_selector)) if value]
        return self.request("GET", self.path(api_version, kind, namespace), query=query).get("items", [])

    def replace(self, obj: dict[str, Any], *, subresource: str | None = None) -> dict[str, Any]:
        meta = obj["metadata"]
        return self.request("PUT", self.path(obj["apiVersion"], obj["kind"], meta.get("namespace"), meta["name"],
                                             subresource), body=obj)

    def patch(self, api_version: str, kind: str, name: str, patch: Any, namespace: str | None = None, *,
              patch_type: str = "merge", subresource: str | None = None, field_manager: str | None = None) -> dict[str, Any]:
        query = [("fieldManager", field_manager)] if field_manager else []
        return self.request("PATCH", self.path(api_version, kind, namespace, name, subresource), query=query,
                            body=patch, content_type=PATCH_TYPES[patch_type])

    def apply(self, obj: dict[str, Any], *, field_manager: str = "kubectl", force: bool = True,
              subresource: str | None = None) -> dict[str, Any]:
        """Server-side apply (`kubectl apply --server-side`), sent as YAML."""
        meta = obj["metadata"]
        query = [("fieldManager", field_manager), *([("force", "true")] if force else [])]
        applied = self.request("PATCH", self.path(obj["apiVersion"], obj["kind"], meta.get("namespace"), meta["name"],
                                                  subresource), query=query, body=yaml.safe_dump(obj),
                               content_type=PATCH_TYPES["apply"])
        self._created(applied)
        return applied

    def delete(self, api_version: str, kind: str, name: str, namespace: str | None = None, *,
               propagation: str | None = None, missing_ok: bool = True) -> dict[str, Any] | None:
        body = {"apiVersion": "v1", "kind": "DeleteOptions", **({"propagationPolicy": propagation} if propagation else {})}
        try:
            return self.request("DELETE", self.path(api_version, kind, namespace, name), body=body)
        except ApiError as failed:
            if failed.status == 404 and missing_ok:
                return None
            raise

    def create_namespace(self, name: str | None = None) -> str:
        """A namespace for one test (a unique name unless given)."""
        name = name or f"t-{uuid.uuid4().hex[:10]}"
        self.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
        return name

    def wait_for(self, predicate: Callable[[], T], timeout_s: float = 10.0, interval_s: float = 0.05,
                 message: str = "") -> T:
        return wait_for(predicate, timeout_s, interval_s, message)

    def _created(self, obj: dict[str, Any]) -> None:
        """Hook for cleaning up what a test created (the real cluster needs it; the emulator is discarded)."""

    # --- emulator-only controls ---

    def fail(self, method: str, path_regex: str, status: int = 500, times: int | None = 1, **narrowing: Any) -> Fault:
        raise EmulatorOnly("fault injection")

    def clear_faults(self) -> None:
        raise EmulatorOnly("fault injection")

    def drop_watches(self) -> int:
        raise EmulatorOnly("dropping watch streams")

    def hold_deployments(self, match: str | Callable[[dict[str, Any]], bool]) -> DeploymentHold:
        raise EmulatorOnly("holding Deployments unavailable")

    def release_deployments(self) -> None:
        raise EmulatorOnly("holding Deployments unavailable")

    def requests(self, method: str | None = None, path_regex: str | None = None) -> list[ApiCall]:
        raise EmulatorOnly("the request log")


class EmulatedCluster(Cluster):
    """The emulator on 127.0.0.1, with a kubeconfig (context `hetplace-emulator`, any bearer token)."""

    def __init__(self, directory: Path, crds: Iterable[dict[str, Any]] = ()) -> None:
        super().__init__()
        self.server = EmulatorThread(crds).start()
        self.url = self.server.url
        self.context = EMULATOR_CONTEXT
        self.kubeconfig_path = directory / "kubeconfig.yaml"
        self.kubeconfig_path.write_text(yaml.safe_dump({
            "apiVersion": "v1", "kind": "Config", "current-context": EMULATOR_CONTEXT,
            "clusters": [{"name": EMULATOR_CONTEXT, "cluster": {"server": self.url}}],
            "users": [{"name": EMULATOR_CONTEXT, "user": {"token": EMULATOR_TOKEN}}],
            "contexts": [{"name": EMULATOR_CONTEXT, "context": {"cluster": EMULATOR_CONTEXT, "user": EMULATOR_CONTEXT,
                                                               "namespace": "default"}}],
        }))

    @property
    def emulator(self) -> KubeEmulator:
        assert self.server.emulator is not None
        return self.server.emulator

    def call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run `fn` on the emulator's event loop, where its state may be read and changed safely."""
        return self.server.call(fn, *args, **kwargs)

    def close(self) -> None:
        super().close()
        self.server.stop()
        if self.emulator.internal_errors:
            raise AssertionError(f"the Kubernetes emulator failed internally: {self.emulator.internal_errors!r}")

    def fail(self, method: str, path_regex: str, status: int = 500, times: int | None = 1, **narrowing: Any) -> Fault:
        """Answer the next `times` matching requests with `status` (see `KubeEmulator.fail`)."""
        return self.emulator.fail(method, path_regex, status, times, **narrowing)

    def clear_faults(self) -> None:
        self.emulator.clear_faults()

    def drop_watches(self) -> int:
        """End every open watch stream now; returns how many were open."""
        return self.call(self.emulator.drop_watches)

    def hold_deployments(self, match: str | Callable[[dict[str, Any]], bool]) -> DeploymentHold:
        """Keep Deployments whose name fully matches `match` (or for which it returns True) unavailable."""
        return self.emulator.hold_deployments(match)

    def release_deployments(self) -> None:
        self.emulator.release_deployments()

    def requests(self, method: str | None = None, path_regex: str | None = None) -> list[ApiCall]:
        """The requests served so far (oldest first), optionally narrowed by method and path (re.search)."""
        pattern = re.compile(path_regex) if path_regex else None
        return [call for call in list(self.emulator.api_log)
                if (method is None or call.method == method.upper()) and (pattern is None or pattern.search(call.path))]


class RealCluster(Cluster):
    """A real test cluster from a kubeconfig; what a test creates is deleted at close."""

    def __init__(self, kubeconfig_path: Path, allowed_context: str | None = None) -> None:
        super().__init__()
        self.kubeconfig_path = Path(kubeconfig_path)
        _, active = kubernetes.config.list_kube_config_contexts(config_file=str(self.kubeconfig_path))
        self.context = (active or {}).get("name")
        refusal = context_refusal(self.context, allowed_context)
        if refusal:
            raise PermissionError(refusal)
        self.url = self.client.configuration.host
        self._cleanup: list[tuple[str, str, str | None, str]] = []
        self._namespaces: set[str] = set()

    def install_crds(self, crds: Iterable[dict[str, Any]], timeout_s: float = 30) -> None:
        """Apply the CRDs and wait until the API serves them (they are left installed afterwards)."""
        names = []
        for crd in crds:
            self.request("PATCH", self.path(crd["apiVersion"], crd["kind"], None, crd["metadata"]["name"]),
                         query=[("fieldManager", "hetplace-tests"), ("force", "true")], body=crd,
                         content_type=PATCH_TYPES["apply"])
            names.append(crd["metadata"]["name"])
        for name in names:
            wait_for(lambda name=name: any(
                c["type"] == "Established" and c["status"] == "True"
                for c in (self.get("apiextensions.k8s.io/v1", "CustomResourceDefinition", name) or {})
                .get("status", {}).get("conditions", [])), timeout_s, message=f"CRD {name} established")
        self._paths.clear()

    def create_namespace(self, name: str | None = None) -> str:
        created = super().create_namespace(name)
        self._namespaces.add(created)
        return created

    def _created(self, obj: dict[str, Any]) -> None:
        meta = obj.get("metadata", {})
        entry = (obj["apiVersion"], obj["kind"], meta.get("namespace"), meta["name"])
        if entry not in self._cleanup:
            self._cleanup.append(entry)

    def close(self) -> None:
        try:
            for api_version, kind, namespace, name in reversed(self._cleanup):
                if namespace not in self._namespaces or kind == "Namespace":
                    self.delete(api_version, kind, name, namespace, propagation="Background")
        finally:
            super().close()


def make_cluster(directory: Path, crds: Iterable[dict[str, Any]]) -> Cluster:
    """The real cluster named by HETPLACE_TEST_KUBECONFIG (after the context guard), else a new emulator."""
    kubeconfig = os.environ.get("HETPLACE_TEST_KUBECONFIG")
    if not kubeconfig:
        return EmulatedCluster(directory, crds)
    try:
        cluster = RealCluster(Path(kubeconfig), os.environ.get("HETPLACE_TEST_CONTEXT"))
    except PermissionError as refused:
        pytest.fail(str(refused), pytrace=False)
    cluster.install_crds(crds)
    return cluster
