"""Where a site's routes come from: a file of routes ConfigMaps polled for changes, or the
Kubernetes API watched read-only (docs/routes.md). Both keep, per ConfigMap, the last document
that could be used: one that turns malformed or partial keeps its predecessor, and says why (a
log line and hetplace_gateway_routes_reload_errors_total).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Mapping

from hetplace.site.routes import DATA_KEY, RoutesDocument, RoutesError, configmaps_in, from_configmap
from hetplace.site.telemetry import SiteMetrics

log = logging.getLogger(__name__)

MANAGED_BY = "app.kubernetes.io/managed-by=hetplace"
ROUTES_SUFFIX = "-routes"
ConfigMapKey = tuple[str, str]      # (namespace, name)
OnChange = Callable[[list[RoutesDocument]], None]


class LastGoodRoutes:
    """The routes documents by ConfigMap, each the last one that could be used."""

    def __init__(self, metrics: SiteMetrics | None = None, wall: Callable[[], float] = time.time) -> None:
        self.metrics = metrics
        self.wall = wall
        self._documents: dict[ConfigMapKey, RoutesDocument] = {}
        self._said: dict[ConfigMapKey, str] = {}    # the last complaint per ConfigMap, to say each once

    def put(self, key: ConfigMapKey, configmap: Mapping[str, Any], where: str = "") -> str | None:
        """Take a ConfigMap's document; on a problem keep the last good one and return why."""
        try:
            document = from_configmap(configmap, where=where)
        except RoutesError as problem:
            return self.refuse(key, str(problem))
        self._documents[key] = document
        self._said.pop(key, None)
        return None

    def refuse(self, key: ConfigMapKey | None, why: str) -> str:
        kept = " (keeping the last good routes)" if key is None or key in self._documents else " (no routes yet)"
        if key is None or self._said.get(key) != why:
            log.warning("routes not reloaded: %s%s", why, kept)
            if key is not None:
                self._said[key] = why
        if self.metrics is not None:
            self.metrics.routes_reload_error()
        return why

    def remove(self, key: ConfigMapKey) -> None:
        self._documents.pop(key, None)
        self._said.pop(key, None)

    def keys(self) -> set[ConfigMapKey]:
        return set(self._documents)

    def loaded(self) -> None:
        """A load without error: the time is published."""
        if self.metrics is not None:
            self.metrics.routes_loaded(self.wall())

    def documents(self) -> list[RoutesDocument]:
        return [self._documents[k] for k in sorted(self._documents)]


def key_of(configmap: Mapping[str, Any], fallback: str) -> ConfigMapKey:
    meta = configmap.get("metadata") or {}
    return (str(meta.get("namespace") or "default"), str(meta.get("name") or fallback))


class FileRoutes:
    """`--routes FILE`: the routes ConfigMaps as `kubectl get -o yaml` prints them (one, a List, or
    multi-document), read again when the file changes (polled: its size, mtime and content hash).

    An unreadable file keeps every last good document; in a readable one, each ConfigMap that cannot
    be used keeps its own last good document, and a ConfigMap no longer in the file is dropped."""

    def __init__(self, path: str, on_change: OnChange, metrics: SiteMetrics | None = None,
                 poll_s: float = 1.0) -> None:
        self.path = path
        self.on_change = on_change
        self.poll_s = poll_s
        self.routes = LastGoodRoutes(metrics)
        self._seen: tuple[int, int] | None = None
        self._digest: bytes | None = None

    def poll(self) -> bool:
        """Read the file if it changed; True when it was read (whatever it held)."""
        try:
            stat = os.stat(self.path)
            signature = (stat.st_mtime_ns, stat.st_size)
            if signature == self._seen:
                return False
            with open(self.path, "rb") as f:
                raw = f.read()
        except OSError as e:
            if self._seen != (-1, -1):
                self.routes.refuse(None, f"{self.path}: cannot read: {e.strerror or e}")
                self._seen = (-1, -1)
            return False
        self._seen = signature
        digest = hashlib.sha256(raw).digest()
        if digest == self._digest:
            return False
        self._digest = digest
        self.load(raw.decode("utf-8", errors="replace"))
        return True

    def load(self, text: str) -> None:
        try:
            items = configmaps_in(text, self.path)
        except RoutesError as problem:
            self.routes.refuse(None, str(problem))
            return
        present: set[ConfigMapKey] = set()
        problems = 0
        for i, item in enumerate(items):
            key = key_of(item, fallback=f"item-{i}")
            present.add(key)
            if self.routes.put(key, item, where=f"{self.path}: ConfigMap {key[0]}/{key[1]}") is not None:
                problems += 1
        for gone in self.routes.keys() - present:
            self.routes.remove(gone)
        if not problems:
            self.routes.loaded()
        self.on_change(self.routes.documents())

    async def run(self) -> None:
        """Poll until cancelled (the file is read once at once, then every `poll_s`)."""
        while True:
            self.poll()
            await asyncio.sleep(self.poll_s)


@dataclass(frozen=True)
class Workload:
    namespace: str
    name: str

    @classmethod
    def parse(cls, text: str) -> "Workload":
        namespace, sep, name = text.partition("/")
        if not sep or not namespace or not name or "/" in name:
            raise ValueError(f"{text!r} is not NAMESPACE/NAME")
        return cls(namespace, name)

    @property
    def configmap(self) -> str:
        return f"{self.name}{ROUTES_SUFFIX}"


class KubeRoutes:
    """Routes ConfigMaps from the API, read-only (list and watch ConfigMaps): those of the given
    workloads, or every `*-routes` ConfigMap labelled managed-by hetplace in the given namespaces
    (none given: all namespaces). The watch runs in a thread; each change hands the whole set of
    documents to `on_change`, from that thread (`deliver_to_loop` wraps a callback for asyncio).

    `core_v1` is a kubernetes.client.CoreV1Api (in-cluster config or a kubeconfig, see `connect`)."""

    def __init__(self, core_v1: Any, on_change: OnChange, *, namespaces: Iterable[str] = (),
                 workloads: Iterable[Workload] = (), metrics: SiteMetrics | None = None,
                 watch_timeout_s: int = 300, retry_s: float = 2.0) -> None:
        self.api = core_v1
        self.on_change = on_change
        self.workloads = tuple(workloads)
        self.namespaces = tuple(namespaces) or ((None,) if not self.workloads else ())
        self.watch_timeout_s = watch_timeout_s
        self.retry_s = retry_s
        self.routes = LastGoodRoutes(metrics)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._watches: dict[tuple[str | None, str], Any] = {}     # per scope, its current watch

    # -- what is watched ------------------------------------------------------------------------
    def scopes(self) -> list[tuple[str | None, dict[str, str]]]:
        """(namespace or None for all, list arguments) of each watch this source keeps."""
        scopes: list[tuple[str | None, dict[str, str]]] = [
            (w.namespace, {"field_selector": f"metadata.name={w.configmap}"}) for w in self.workloads]
        scopes += [(ns, {"label_selector": MANAGED_BY}) for ns in self.namespaces]
        return scopes

    def wanted(self, configmap: Mapping[str, Any]) -> bool:
        meta = configmap.get("metadata") or {}
        name = str(meta.get("name") or "")
        if self.workloads and any(meta.get("namespace") == w.namespace and name == w.configmap for w in self.workloads):
            return True
        in_scope = None in self.namespaces or meta.get("namespace") in self.namespaces
        return in_scope and name.endswith(ROUTES_SUFFIX) and DATA_KEY in (configmap.get("data") or {})

    # -- events -----------------------------------------------------------------------------------
    def apply(self, event_type: str, configmap: Mapping[str, Any]) -> None:
        """One watch event (ADDED, MODIFIED, DELETED) of a ConfigMap as a dict; hands on the new set."""
        if not self.wanted(configmap):
            return
        key = key_of(configmap, fallback="?")
        with self._lock:
            if event_type == "DELETED":
                self.routes.remove(key)
            elif self.routes.put(key, configmap) is None:
                self.routes.loaded()
            # handed on under the lock: two watch threads must not deliver their sets out of order
            self.on_change(self.routes.documents())

    def relist(self, namespace: str | None, arguments: Mapping[str, str]) -> str:
        """List one scope and replace what it held; returns the list's resourceVersion to watch from."""
        if namespace is None:
            listed = self.api.list_config_map_for_all_namespaces(**arguments)
        else:
            listed = self.api.list_namespaced_config_map(namespace, **arguments)
        items = [self.api.api_client.sanitize_for_serialization(item) for item in listed.items]
        with self._lock:
            present = set()
            problems = 0
            for cm in items:
                if self.wanted(cm):
                    key = key_of(cm, fallback="?")
                    present.add(key)
                    problems += self.routes.put(key, cm) is not None
            for key in self.routes.keys():
                if key not in present and self._in_scope(key, namespace, arguments):
                    self.routes.remove(key)
            if not problems:
                self.routes.loaded()
            self.on_change(self.routes.documents())
        return listed.metadata.resource_version

    def _in_scope(self, key: ConfigMapKey, namespace: str | None, arguments: Mapping[str, str]) -> bool:
        if namespace is not None and key[0] != namespace:
            return False
        selector = arguments.get("field_selector", "")
        return not selector or selector == f"metadata.name={key[1]}"

    # -- the loop -----------------------------------------------------------------------------------
    def watch_scope(self, namespace: str | None, arguments: Mapping[str, str]) -> None:
        """List, then watch from there until stopped; on an expired watch or an error, list again."""
        from kubernetes import watch
        from kubernetes.client.exceptions import ApiException

        while not self._stop.is_set():
            try:
                version = self.relist(namespace, arguments)
                w = watch.Watch()
                self._watches[(namespace, repr(sorted(arguments.items())))] = w     # one per scope, not one per list
                function = (self.api.list_config_map_for_all_namespaces if namespace is None
                            else self.api.list_namespaced_config_map)
                args = () if namespace is None else (namespace,)
                while not self._stop.is_set():
                    for event in w.stream(function, *args, resource_version=version,
                                          timeout_seconds=self.watch_timeout_s, **arguments):
                        kind = event["type"]
                        if kind == "ERROR":
                            raise ApiException(status=(event.get("raw_object") or {}).get("code", 500))
                        obj = self.api.api_client.sanitize_for_serialization(event["object"])
                        version = (obj.get("metadata") or {}).get("resourceVersion", version)
                        self.apply(kind, obj)
                        if self._stop.is_set():
                            break
            except ApiException as e:
                if self._stop.is_set():
                    return
                if e.status != 410:         # 410 Gone: the version expired, list again at once
                    log.warning("watching routes ConfigMaps in %s: %s %s", namespace or "all namespaces",
                                e.status, e.reason)
                    self._stop.wait(self.retry_s)
            except Exception as e:  # the API unreachable, a broken stream: try again, never die
                if self._stop.is_set():     # stop() shuts the stream under a blocked read: not a failure
                    return
                log.warning("watching routes ConfigMaps in %s: %s", namespace or "all namespaces", e)
                self._stop.wait(self.retry_s)

    def start(self) -> list[threading.Thread]:
        threads = [threading.Thread(target=self.watch_scope, args=scope, daemon=True,
                                    name=f"routes-watch-{scope[0] or 'all'}") for scope in self.scopes()]
        for t in threads:
            t.start()
        return threads

    def stop(self) -> None:
        self._stop.set()
        for w in list(self._watches.values()):
            w.stop()


def connect_core_v1() -> Any:
    """A CoreV1Api from the pod's service account, else the kubeconfig (KUBECONFIG or ~/.kube/config)."""
    from kubernetes import client, config

    try:
        config.load_incluster_config()
    except config.ConfigException:
        config.load_kube_config()
    return client.CoreV1Api()


def deliver_to_loop(loop: asyncio.AbstractEventLoop, on_change: OnChange) -> OnChange:
    """A callback that runs `on_change` on the event loop, whichever thread calls it."""
    return lambda documents: loop.call_soon_threadsafe(on_change, documents)
