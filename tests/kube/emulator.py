"""An in-memory Kubernetes API server for the operator's integration tests, built on kmock 0.8.

What comes from kmock: API discovery and error rendering (`kmock.KubernetesScaffold` over
`kmock.ResourceInfo` records, with two fixes to its discovery answers), the object store with every
object's version history (`kmock.ObjectsArray`), and the request records (`kmock.Request`, kept in
the handler's request list); aiohttp listens (see `server` for why not `kmock.Server`).

What is written here, because kmock's `KubernetesEmulator` cannot be bent to it:
- request parsing: kmock 0.8's path parser raises on `/api/v1/namespaces` and reads
  `/api/v1/namespaces/{name}` as a namespace with no resource, so `__call__` parses paths itself;
- the write semantics (kmock merges every write as a dict patch, has no PUT, no resourceVersion,
  no generation and no status subresource, and applies writes even when a test's reaction answers
  them with an error): a global monotonically increasing resourceVersion, uid/creationTimestamp/
  generation, 409 AlreadyExists and 409 Conflict on a stale resourceVersion, the four patch content
  types (see `patches`), no-op writes that keep the version, status-subresource isolation,
  finalizers and deletionTimestamp, ownerReference garbage collection, namespace termination, CRDs
  that start or stop serving their kinds;
- watches: kmock's watch streams a snapshot and then subscribes to its `Bus`, which loses the changes
  made in between (and `Bus.mark`/`Bus.put` are coroutines, so the two steps cannot be made atomic).
  Here subscription and snapshot happen in one synchronous step, events carry resourceVersions and a
  bounded event log replays `?resourceVersion=N` (410 Expired when N fell out of the log);
- fault injection (checked before anything is served, so a failed write changes nothing), dropping
  watch streams, a request log with statuses, and a stand-in for kube-controller-manager's deployment
  controller.

Everything runs on one event loop (see `server.EmulatorThread`); every mutation is synchronous code,
so mutations, event publication and watch subscription never interleave. Methods meant for the test
thread say so; the rest must run on the emulator's loop.

Approximations, beside those in `patches` and `selectors`: no schema validation or defaulting of
custom resources (only a Deployment's replicas are defaulted); no admission and no RBAC: any bearer
token, or none (kubectl sends none to an http:// server), is accepted; list `limit`/`continue` are
ignored (one page); dryRun is refused; Foreground deletion deletes the dependents first instead of
waiting on a finalizer; an object whose owners never existed is not collected; deleting a CRD removes
its objects at once; `metadata.generation` is kept for every kind.
"""

from __future__ import annotations

import asyncio
import collections
import copy
import datetime
import json
import logging
import random
import re
import string
import threading
import uuid
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

import aiohttp.web
import kmock
from kmock._internal import parsing

from . import patches, selectors
from .catalogue import BUILTIN_KINDS, VERBS, ResourceKind, kinds_of_crd

log = logging.getLogger(__name__)

EVENT_LOG_SIZE = 20_000
BUILTIN_NAMESPACES = ("default", "kube-system", "kube-public", "kube-node-lease")
SYSTEM_METADATA = ("uid", "resourceVersion", "creationTimestamp", "generation", "deletionTimestamp",
                   "deletionGracePeriodSeconds", "managedFields", "selfLink")
NAMESPACE_SUBRESOURCES = ("status", "finalize")
DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
DEPLOYMENTS = ("apps", "v1", "deployments")
CRDS = ("apiextensions.k8s.io", "v1", "customresourcedefinitions")
NAMESPACES = ("", "v1", "namespaces")
CONTROLLER_MANAGER = "kube-controller-manager"
REASONS = {400: "BadRequest", 401: "Unauthorized", 403: "Forbidden", 404: "NotFound", 405: "MethodNotAllowed",
           409: "Conflict", 410: "Expired", 415: "UnsupportedMediaType", 422: "Invalid", 429: "TooManyRequests",
           500: "InternalError", 503: "ServiceUnavailable", 504: "Timeout"}

Key = tuple[kmock.resource, str | None, str]


def now_iso() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def api_error(status: int, message: str, reason: str | None = None, **details: Any) -> kmock.KubernetesError:
    """An error the client receives as a `Status` object; `details` become Status.details."""
    return kmock.KubernetesError(status=status, reason=reason or REASONS.get(status, "Unknown"), message=message,
                                 details=details or {"causes": []})


# --- requests ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Route:
    """An API path taken apart. `group is None`: not an API path; `plural is None`: discovery."""

    group: str | None
    version: str | None = None
    plural: str | None = None
    namespace: str | None = None
    name: str | None = None
    subresource: str | None = None


def parse_route(path: str) -> Route:
    parts = [part for part in path.split("/") if part]
    if parts[:1] == ["api"]:
        group, rest = "", parts[1:]
    elif parts[:1] == ["apis"] and len(parts) >= 2:
        group, rest = parts[1], parts[2:]
    else:
        return Route(None)
    version, rest = (rest[0], rest[1:]) if rest else (None, [])
    namespace = None
    is_namespace_subresource = len(rest) == 3 and rest[2] in NAMESPACE_SUBRESOURCES
    if len(rest) >= 3 and rest[0] == "namespaces" and not is_namespace_subresource:
        namespace, rest = rest[1], rest[2:]
    return Route(group, version, rest[0] if rest else None, namespace, rest[1] if len(rest) > 1 else None,
                 "/".join(rest[2:]) or None)


@dataclass
class ApiCall:
    """One request as the test sees it in the request log."""

    method: str
    path: str
    query: dict[str, str]
    content_type: str | None
    status: int | None = None

    @property
    def is_write(self) -> bool:
        return self.method in ("POST", "PUT", "PATCH", "DELETE")

    @property
    def is_watch(self) -> bool:
        return self.method == "GET" and self.query.get("watch") in ("true", "1")


# --- fault injection -----------------------------------------------------------------------------

@dataclass
class Fault:
    """Answer matching requests with an error instead of serving them, `times` times (None: until cleared)."""

    method: str
    path: re.Pattern[str]
    status: int
    times: int | None
    message: str
    content_type: str | None = None
    watch: bool | None = None
    hits: int = 0

    def matches(self, call: ApiCall) -> bool:
        return ((self.method == "*" or self.method == call.method)
                and bool(self.path.search(call.path))
                and (self.content_type is None or self.content_type in (call.content_type or ""))
                and (self.watch is None or self.watch == call.is_watch)
                and (self.times is None or self.hits < self.times))

    @property
    def exhausted(self) -> bool:
        return self.times is not None and self.hits >= self.times


@dataclass
class DeploymentHold:
    """Deployments matching `matches` stay unavailable until `release()`."""

    matches: Callable[[dict[str, Any]], bool]
    emulator: KubeEmulator

    def release(self) -> None:
        self.emulator.release_deployments(self)

    def __enter__(self) -> DeploymentHold:
        return self

    def __exit__(self, *_: object) -> None:
        self.release()


# --- watches -------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Change:
    """A stored change as watchers see it: the object after the change and before it."""

    rv: int
    kind: tuple[str, str, str]
    type: str
    obj: dict[str, Any]
    old: dict[str, Any] | None


DROP = object()


@dataclass(eq=False)
class Watcher:
    kind: ResourceKind
    namespace: str | None
    label_match: selectors.Matcher
    field_match: selectors.Matcher
    queue: asyncio.Queue = field(default_factory=asyncio.Queue)

    def _sees(self, obj: dict[str, Any] | None) -> bool:
        if obj is None:
            return False
        if self.namespace is not None and obj["metadata"].get("namespace") != self.namespace:
            return False
        return self.label_match(obj) and self.field_match(obj)

    def translate(self, change: Change) -> dict[str, Any] | None:
        """The event this watcher gets: a change entering its selection is ADDED, leaving it DELETED."""
        if change.kind != self.kind.key:
            return None
        now, before = self._sees(change.obj), self._sees(change.old)
        if change.type == "DELETED":
            kind = "DELETED" if before or now else None
        elif now and before:
            kind = "MODIFIED"
        elif now:
            kind = "ADDED"
        elif before:
            kind = "DELETED"
        else:
            kind = None
        return {"type": kind, "object": change.obj} if kind else None

    def offer(self, change: Change) -> None:
        if (event := self.translate(change)) is not None:
            self.queue.put_nowait(event)


# --- the server ----------------------------------------------------------------------------------

class KubeEmulator(kmock.KubernetesScaffold):
    """The Kubernetes API in memory; kmock serves discovery, this class serves the resources."""

    def __attrs_post_init__(self) -> None:
        super().__attrs_post_init__()
        self.objects = kmock.ObjectsArray()
        self.kinds: dict[tuple[str, str, str], ResourceKind] = {}
        self.resource_version = 0
        self.api_log: list[ApiCall] = []
        self.internal_errors: list[BaseException] = []
        self.loop: asyncio.AbstractEventLoop | None = None
        self._owners: dict[Key, dict[str, dict[str, dict[str, Any]]]] = {}  # key -> part -> manager -> fields
        self._log: collections.deque[Change] = collections.deque(maxlen=EVENT_LOG_SIZE)
        self._log_floor = 0
        self._watchers: set[Watcher] = set()
        self._faults: list[Fault] = []
        self._holds: list[DeploymentHold] = []
        self._lock = threading.Lock()  # guards what the test thread touches: faults and holds
        self._crd_kinds: dict[str, list[ResourceKind]] = {}
        for kind in BUILTIN_KINDS:
            self._serve_kind(kind)
        for name in BUILTIN_NAMESPACES:
            self.create(self.kinds[NAMESPACES], None, {"metadata": {"name": name}}, manager=CONTROLLER_MANAGER)

    async def __aenter__(self) -> KubeEmulator:
        self.loop = asyncio.get_running_loop()
        return await super().__aenter__()

    # --- HTTP entry point ---

    async def __call__(self, raw: aiohttp.web.BaseRequest) -> aiohttp.web.StreamResponse:
        body = await raw.read()
        route = parse_route(raw.path)
        request = self._parse_request(raw, body, route)
        self._requests.append(request)
        call = ApiCall(raw.method.upper(), raw.path, dict(raw.query),
                       raw.headers.get("Content-Type", "").split(";")[0].strip() or None)
        self.api_log.append(call)
        try:
            self._authenticate(raw)
            self._inject_fault(call)
            if route.group is not None and route.version is not None and route.plural is not None:
                response = await self._serve_resource(request, route, call)
            else:
                response = await super()._handle(request)
        except kmock.KubernetesError as failed:
            response = await self._render_error(failed)
        except Exception as failed:  # an emulator bug: answer 500 and let the test's teardown report it
            log.exception("emulator failed on %s %s", raw.method, raw.path)
            self.internal_errors.append(failed)
            response = await self._render_error(failed)
        call.status = response.status
        return response

    async def _serve_version(self, request: kmock.Request) -> dict[str, Any]:
        served = await super()._serve_version(request)
        served["groupVersion"] = served["groupVersion"].lstrip("/")  # kmock 0.8 says "/v1" for the core group
        for resource in served["resources"]:  # kmock 0.8 copies names and verbs onto subresources
            if "/" in resource["name"]:
                resource.update(singularName="", shortNames=[], categories=[], verbs=["get", "patch", "update"])
            else:
                resource["verbs"] = sorted(resource["verbs"])
        return served

    def _parse_request(self, raw: aiohttp.web.BaseRequest, body: bytes, route: Route) -> kmock.Request:
        try:
            data = json.loads(body) if body else None
        except ValueError:
            data = None
        parsed = parsing.ParsedPath(route.group, route.version, route.plural, route.namespace, route.name,
                                    route.subresource)
        has_resource = route.group is not None and (route.group != "" or route.version is not None)
        return kmock.Request(
            id=len(self._requests), raw_request=raw, url=raw.url, method=raw.method, params=dict(raw.query),
            headers=dict(raw.headers), cookies=dict(raw.cookies), body=body,
            text=body.decode("utf-8", errors="replace"), data=data,
            action=parsing.guess_k8s(parsed, kmock.method(raw.method), dict(raw.query)),
            resource=kmock.resource(group=route.group, version=route.version, plural=route.plural)
            if has_resource else None,
            namespace=route.namespace, name=route.name, subresource=route.subresource,
        )

    @staticmethod
    def _authenticate(raw: aiohttp.web.BaseRequest) -> None:
        """Any bearer token will do; no header is an anonymous request, served as the old insecure port did
        (kubectl and client-go never send credentials to an http:// server)."""
        header = raw.headers.get("Authorization")
        scheme, _, token = (header or "").partition(" ")
        if header is not None and (scheme.lower() != "bearer" or not token.strip()):
            raise api_error(401, "Unauthorized: the emulator accepts a bearer token (any) or no credentials")

    # --- faults, watches, holds: the test thread's controls ---

    def fail(self, method: str, path_regex: str, status: int = 500, times: int | None = 1, *,
             message: str | None = None, content_type: str | None = None, watch: bool | None = None) -> Fault:
        """Answer the next `times` requests matching method (or "*") and path (re.search) with `status`.

        Safe from any thread. `content_type` narrows by substring (e.g. "apply-patch"); `watch` to
        watch or non-watch GETs.
        """
        fault = Fault(method.upper(), re.compile(path_regex), status, times,
                      message or f"injected by the test: {status} for {method.upper()} {path_regex}",
                      content_type, watch)
        with self._lock:
            self._faults.append(fault)
        return fault

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()

    def _inject_fault(self, call: ApiCall) -> None:
        with self._lock:
            fault = next((fault for fault in self._faults if fault.matches(call)), None)
            if fault is None:
                return
            fault.hits += 1
            if fault.exhausted:
                self._faults.remove(fault)
        raise api_error(fault.status, fault.message)

    def drop_watches(self) -> int:
        """End every open watch stream now (as a server restart or a load balancer would). Loop only."""
        watchers = list(self._watchers)
        for watcher in watchers:
            watcher.queue.put_nowait(DROP)
        self._watchers.clear()
        return len(watchers)

    def compact(self) -> None:
        """Forget the change history, as etcd compaction does: watches from older versions get 410. Loop only."""
        self._log_floor = self.resource_version
        self._log.clear()

    def hold_deployments(self, match: str | Callable[[dict[str, Any]], bool]) -> DeploymentHold:
        """Keep matching Deployments unavailable until released: a name regex (full match) or a predicate."""
        predicate = match if callable(match) else (
            lambda obj, pattern=re.compile(match): bool(pattern.fullmatch(obj["metadata"]["name"])))
        hold = DeploymentHold(predicate, self)
        with self._lock:
            self._holds.append(hold)
        self._reconcile_all_deployments_soon()
        return hold

    def release_deployments(self, hold: DeploymentHold | None = None) -> None:
        """Release one hold, or all of them."""
        with self._lock:
            self._holds[:] = [] if hold is None else [h for h in self._holds if h is not hold]
        self._reconcile_all_deployments_soon()

    def _reconcile_all_deployments_soon(self) -> None:
        if self.loop is not None:
            self.loop.call_soon_threadsafe(self._reconcile_all_deployments)

    # --- resources ---

    def _serve_kind(self, kind: ResourceKind) -> None:
        self.kinds[kind.key] = kind
        self.resources[kmock.resource(*kind.key)] = kmock.ResourceInfo(
            namespaced=kind.namespaced, kind=kind.kind, singular=kind.singular, verbs=VERBS,
            shortnames=kind.short_names, categories=kind.categories,
            subresources={"status"} if kind.status_subresource else set())

    def _unserve_kind(self, kind: ResourceKind) -> None:
        self.kinds.pop(kind.key, None)
        del self.resources[kmock.resource(*kind.key)]
        for key in [key for key in self.objects.keys() if (key[0].group, key[0].version, key[0].plural) == kind.key]:
            if (obj := self._alive(key)) is not None:
                self._remove(kind, key, obj)

    def kind_of(self, api_version: str, kind_name: str) -> ResourceKind:
        for kind in self.kinds.values():
            if kind.api_version == api_version and kind.kind == kind_name:
                return kind
        raise LookupError(f"the emulator serves no {kind_name} in {api_version}")

    def _alive(self, key: Key) -> dict[str, Any] | None:
        if key not in self.objects:
            return None
        stored = self.objects[key]
        return None if stored.deleted else stored.last.raw

    def get(self, kind: ResourceKind, namespace: str | None, name: str) -> dict[str, Any] | None:
        obj = self._alive((kmock.resource(*kind.key), namespace if kind.namespaced else None, name))
        return copy.deepcopy(obj) if obj is not None else None

    def alive_objects(self, kind: ResourceKind, namespace: str | None = None) -> list[dict[str, Any]]:
        found = []
        for key, stored in self.objects.items():
            if (key[0].group, key[0].version, key[0].plural) == kind.key and not stored.deleted:
                if namespace is None or key[1] == namespace:
                    found.append(stored.last.raw)
        return sorted(found, key=lambda obj: (obj["metadata"].get("namespace") or "", obj["metadata"]["name"]))

    def _store(self, key: Key, obj: dict[str, Any]) -> None:
        if key in self.objects:
            self.objects[key].create(copy.deepcopy(obj))
        else:
            self.objects[key] = copy.deepcopy(obj)

    def _next_version(self) -> str:
        self.resource_version += 1
        return str(self.resource_version)

    def _publish(self, kind: ResourceKind, event_type: str, obj: dict[str, Any], old: dict[str, Any] | None) -> None:
        change = Change(int(obj["metadata"]["resourceVersion"]), kind.key, event_type, copy.deepcopy(obj),
                        copy.deepcopy(old))
        if len(self._log) == self._log.maxlen:
            self._log_floor = self._log[0].rv
        self._log.append(change)
        for watcher in list(self._watchers):
            watcher.offer(change)
        if kind.key == DEPLOYMENTS and event_type != "DELETED" and self.loop is not None:
            self.loop.call_soon(self._reconcile_deployment, (kmock.resource(*kind.key),
                                                             obj["metadata"].get("namespace"),
                                                             obj["metadata"]["name"]))
        if kind.key == CRDS:
            self._crd_changed(obj, deleted=event_type == "DELETED")

    # --- HTTP dispatch ---

    async def _serve_resource(self, request: kmock.Request, route: Route, call: ApiCall) -> aiohttp.web.StreamResponse:
        kind = self.kinds.get((route.group, route.version, route.plural))
        if kind is None or (route.namespace is not None and not kind.namespaced):
            raise api_error(404, "the server could not find the requested resource")
        if route.subresource not in (None, "status") or (route.subresource and not kind.status_subresource):
            raise api_error(404, "the server could not find the requested resource")
        if kind.namespaced and route.name is not None and route.namespace is None:
            raise api_error(404, "the server could not find the requested resource")
        if request.params.get("dryRun"):
            raise api_error(400, "dryRun is not supported by the test emulator")
        method, name, namespace = call.method, route.name, route.namespace
        manager = request.params.get("fieldManager") or request.headers.get("User-Agent", "unknown").split("/")[0]

        if method == "GET" and call.is_watch:
            return await self._watch(request, kind, namespace, name, call)
        if method == "GET" and name is None:
            return aiohttp.web.json_response(self.list(kind, namespace, request.params))
        if method == "GET":
            if (obj := self.get(kind, namespace, name)) is None:
                raise self._not_found(kind, name)
            return aiohttp.web.json_response(obj)
        if method == "POST" and name is None and route.subresource is None:
            if kind.namespaced and namespace is None:
                raise api_error(404, "the server could not find the requested resource")
            return aiohttp.web.json_response(self.create(kind, namespace, self._json_body(request), manager=manager),
                                             status=201)
        if method == "PUT" and name is not None:
            return aiohttp.web.json_response(self.replace(kind, namespace, name, self._json_body(request),
                                                          subresource=route.subresource, manager=manager))
        if method == "PATCH" and name is not None:
            status, obj = self.patch(kind, namespace, name, call.content_type, request.body, request.params,
                                     subresource=route.subresource, manager=manager)
            return aiohttp.web.json_response(obj, status=status)
        if method == "DELETE" and route.subresource is None:
            options = {**(request.data if isinstance(request.data, dict) else {}), **request.params}
            if name is None:
                return aiohttp.web.json_response(self.delete_collection(kind, namespace, request.params, options))
            return aiohttp.web.json_response(self.delete(kind, namespace, name, options))
        raise api_error(405, f"the server does not allow this method on the requested resource: {method}")

    @staticmethod
    def _json_body(request: kmock.Request) -> dict[str, Any]:
        if not isinstance(request.data, dict):
            raise api_error(400, "the request body must be a JSON object")
        return request.data

    @staticmethod
    def _not_found(kind: ResourceKind, name: str) -> kmock.KubernetesError:
        return api_error(404, f"{kind.describe(name)} not found", name=name, group=kind.group, kind=kind.plural)

    # --- reads ---

    def list(self, kind: ResourceKind, namespace: str | None, params: dict[str, str]) -> dict[str, Any]:
        label_match, field_match = self._matchers(params)
        items = [copy.deepcopy(obj) for obj in self.alive_objects(kind, namespace)
                 if label_match(obj) and field_match(obj)]
        return {"apiVersion": kind.api_version, "kind": f"{kind.kind}List",
                "metadata": {"resourceVersion": str(self.resource_version)}, "items": items}

    @staticmethod
    def _matchers(params: dict[str, str]) -> tuple[selectors.Matcher, selectors.Matcher]:
        try:
            return selectors.label_matcher(params.get("labelSelector")), selectors.field_matcher(params.get("fieldSelector"))
        except selectors.SelectorError as bad:
            raise api_error(400, str(bad)) from None

    async def _watch(self, request: kmock.Request, kind: ResourceKind, namespace: str | None, name: str | None,
                     call: ApiCall) -> aiohttp.web.StreamResponse:
        params = dict(request.params)
        if name is not None:  # a watch on one object is a watch on a field selector
            params["fieldSelector"] = ",".join(filter(None, [params.get("fieldSelector"), f"metadata.name={name}"]))
        label_match, field_match = self._matchers(params)
        try:
            timeout = float(params["timeoutSeconds"]) if params.get("timeoutSeconds") else None
            since = params.get("resourceVersion") or None
            since_rv = int(since) if since not in (None, "0") else None
        except ValueError:
            raise api_error(400, f"invalid resourceVersion or timeoutSeconds: {dict(params)}") from None
        watcher = Watcher(kind, namespace, label_match, field_match)

        # One synchronous step: subscribe, then take the snapshot or the replay; no change can slip between.
        backlog: list[dict[str, Any]] = []
        if since_rv is not None and params.get("sendInitialEvents") != "true":
            if since_rv < self._log_floor:
                backlog.append({"type": "ERROR", "object": {
                    "apiVersion": "v1", "kind": "Status", "metadata": {}, "status": "Failure", "code": 410,
                    "reason": "Expired", "message": f"too old resource version: {since_rv} ({self._log_floor})"}})
            else:
                backlog += [event for change in self._log if change.rv > since_rv
                            if (event := watcher.translate(change)) is not None]
        else:
            backlog += [{"type": "ADDED", "object": copy.deepcopy(obj)} for obj in self.alive_objects(kind, namespace)
                        if watcher._sees(obj)]
            if params.get("sendInitialEvents") == "true":
                backlog.append({"type": "BOOKMARK", "object": {
                    "apiVersion": kind.api_version, "kind": kind.kind,
                    "metadata": {"resourceVersion": str(self.resource_version),
                                 "annotations": {"k8s.io/initial-events-end": "true"}}}})
        gone = bool(backlog) and backlog[0]["type"] == "ERROR"
        if not gone:
            self._watchers.add(watcher)

        response = aiohttp.web.StreamResponse(status=200, headers={"Content-Type": "application/json"})
        await response.prepare(request._raw_request)
        call.status = response.status
        try:
            async with asyncio.timeout(timeout):
                for event in backlog:
                    await response.write(json.dumps(event).encode() + b"\n")
                while not gone:
                    event = await watcher.queue.get()
                    if event is DROP:
                        break
                    await response.write(json.dumps(event).encode() + b"\n")
        except (TimeoutError, ConnectionError):
            pass
        finally:
            self._watchers.discard(watcher)
        try:
            await response.write_eof()
        except ConnectionError:
            pass
        return response

    # --- writes ---

    def _check_namespace_open(self, namespace: str) -> None:
        ns = self._alive((kmock.resource(*NAMESPACES), None, namespace))
        if ns is None:
            raise api_error(404, f'namespaces "{namespace}" not found', name=namespace, kind="namespaces")
        if ns["metadata"].get("deletionTimestamp"):
            raise api_error(403, f"unable to create new content in namespace {namespace} because it is being terminated")

    @staticmethod
    def _check_type(kind: ResourceKind, body: dict[str, Any]) -> None:
        if body.get("apiVersion") not in (None, kind.api_version):
            raise api_error(400, f"the API version in the data ({body['apiVersion']}) does not match the expected "
                                 f"API version ({kind.api_version})")
        if body.get("kind") not in (None, kind.kind):
            raise api_error(400, f"the kind in the data ({body['kind']}) does not match the expected kind ({kind.kind})")

    def create(self, kind: ResourceKind, namespace: str | None, body: dict[str, Any], *, manager: str,
               applied: dict[str, Any] | None = None) -> dict[str, Any]:
        """Create an object; `applied` is the apply configuration when server-side apply creates it."""
        self._check_type(kind, body)
        meta = dict(body.get("metadata") or {})
        name = meta.get("name")
        if not name and meta.get("generateName"):
            name = meta["generateName"] + "".join(random.choices(string.ascii_lowercase + string.digits, k=5))
        if not name:
            raise api_error(422, "metadata.name: Required value: name or generateName is required")
        if len(name) > 253 or not DNS_SUBDOMAIN.match(name):
            raise api_error(422, f'{kind.describe(name)} is invalid: metadata.name: Invalid value: "{name}": a '
                                 "lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, "
                                 "'-' or '.'")
        if kind.namespaced:
            if meta.get("namespace") not in (None, "", namespace):
                raise api_error(400, "the namespace of the provided object does not match the namespace sent on "
                                     "the request")
            self._check_namespace_open(namespace)
        key = (kmock.resource(*kind.key), namespace if kind.namespaced else None, name)
        if self._alive(key) is not None:
            raise api_error(409, f"{kind.describe(name)} already exists", reason="AlreadyExists",
                            name=name, group=kind.group, kind=kind.plural)

        obj = copy.deepcopy(body)
        obj["apiVersion"], obj["kind"] = kind.api_version, kind.kind
        meta = {k: v for k, v in meta.items() if k not in SYSTEM_METADATA}
        meta.update(name=name, uid=str(uuid.uuid4()), creationTimestamp=now_iso(), generation=1)
        if kind.namespaced:
            meta["namespace"] = namespace
        else:
            meta.pop("namespace", None)
        obj["metadata"] = meta
        if kind.status_subresource:
            obj.pop("status", None)
        if kind.key == NAMESPACES:
            obj["status"] = {"phase": "Active"}
        self._default(kind, obj)
        self._owners.pop(key, None)
        if applied is not None:
            self._owners[key] = {"main": {manager: copy.deepcopy(applied)}}
        meta["managedFields"] = [self._managed_entry(kind, manager, "Update" if applied is None else "Apply", None,
                                                     applied or {})]
        meta["resourceVersion"] = self._next_version()
        self._store(key, obj)
        self._publish(kind, "ADDED", obj, None)
        return copy.deepcopy(obj)

    def replace(self, kind: ResourceKind, namespace: str | None, name: str, body: dict[str, Any], *,
                subresource: str | None, manager: str) -> dict[str, Any]:
        key, old = self._existing(kind, namespace, name)
        self._check_type(kind, body)
        meta = body.get("metadata") or {}
        if meta.get("name") not in (None, name):
            raise api_error(400, f"the name of the object ({meta['name']}) does not match the name on the URL ({name})")
        sent_rv = meta.get("resourceVersion")
        if not sent_rv and kind.custom:
            raise api_error(422, f"{kind.describe(name)} is invalid: metadata.resourceVersion: Invalid value: 0x0: "
                                 "must be specified for an update")
        if sent_rv and sent_rv != old["metadata"]["resourceVersion"]:
            raise self._conflict(kind, name)
        if subresource == "status":
            candidate = self._with_status(old, body)
        else:
            candidate = copy.deepcopy(body)
            if kind.status_subresource:
                candidate = self._with_status(candidate, old)
        return self._update(kind, key, old, candidate, manager=manager, operation="Update", subresource=subresource)

    def patch(self, kind: ResourceKind, namespace: str | None, name: str, content_type: str | None, body: bytes,
              params: dict[str, str], *, subresource: str | None, manager: str) -> tuple[int, dict[str, Any]]:
        if content_type == "application/apply-patch+yaml":
            return self.apply(kind, namespace, name, body, params, subresource=subresource)
        key, old = self._existing(kind, namespace, name)
        try:
            patch = json.loads(body)
        except ValueError:
            raise api_error(400, "the patch is not valid JSON") from None
        try:
            if content_type == "application/merge-patch+json":
                patched = patches.merge_patch(old, patch)
            elif content_type == "application/strategic-merge-patch+json":
                patched = patches.strategic_merge_patch(old, patch)
            elif content_type == "application/json-patch+json":
                patched = patches.json_patch(old, patch)
            else:
                raise api_error(415, f"the body of the request was in an unknown format - accepted media types "
                                     f"include: application/json-patch+json, application/merge-patch+json, "
                                     f"application/apply-patch+yaml, application/strategic-merge-patch+json "
                                     f"(got {content_type})")
        except patches.PatchError as bad:
            raise api_error(bad.status, str(bad)) from None
        if not isinstance(patched, dict):
            raise api_error(422, "the patched object is not a JSON object")
        patched_rv = (patched.get("metadata") or {}).get("resourceVersion")
        if patched_rv and patched_rv != old["metadata"]["resourceVersion"]:
            raise self._conflict(kind, name)
        if subresource == "status":
            candidate = self._with_status(old, patched)
        else:
            candidate = self._with_status(patched, old) if kind.status_subresource else patched
        return 200, self._update(kind, key, old, candidate, manager=manager, operation="Update", subresource=subresource)

    def apply(self, kind: ResourceKind, namespace: str | None, name: str, body: bytes, params: dict[str, str], *,
              subresource: str | None) -> tuple[int, dict[str, Any]]:
        manager = params.get("fieldManager")
        if not manager:
            raise api_error(422, 'PatchOptions.meta.k8s.io "" is invalid: fieldManager: Required value: is required '
                                 'for apply patch')
        force = params.get("force") in ("true", "1")
        try:
            applied = patches.parse_apply_body(body)
        except patches.PatchError as bad:
            raise api_error(bad.status, str(bad)) from None
        if not applied.get("apiVersion") or not applied.get("kind"):
            raise api_error(400, "apiVersion and kind must be set in an apply patch")
        self._check_type(kind, applied)
        meta = applied.get("metadata") or {}
        if meta.get("name") not in (None, name):
            raise api_error(400, f"the name of the object ({meta['name']}) does not match the name on the URL ({name})")
        if kind.namespaced and meta.get("namespace") not in (None, "", namespace):
            raise api_error(400, "the namespace of the provided object does not match the namespace sent on the "
                                 "request")

        part = "status" if subresource == "status" else "main"
        fields = self._applied_fields(kind, applied, part)
        key = (kmock.resource(*kind.key), namespace if kind.namespaced else None, name)
        old = self._alive(key)
        if old is None:
            if subresource == "status":
                raise self._not_found(kind, name)
            return 201, self.create(kind, namespace, {**fields, "apiVersion": kind.api_version, "kind": kind.kind,
                                                      "metadata": {**fields.get("metadata", {}), "name": name}},
                                    manager=manager, applied=fields)

        if meta.get("resourceVersion") and meta["resourceVersion"] != old["metadata"]["resourceVersion"]:
            raise self._conflict(kind, name)
        owners = self._owners.get(key, {}).get(part, {})
        live = self._writable_part(kind, old, part)
        try:
            merged, new_owners = patches.server_side_apply(live, fields, manager, owners, force)
        except patches.ApplyConflict as conflict:
            raise api_error(409, str(conflict)) from None
        if part == "status":
            candidate = self._with_status(old, merged)
        else:
            candidate = self._with_status(merged, old) if kind.status_subresource else merged
        return 200, self._update(kind, key, old, candidate, manager=manager, operation="Apply",
                                 subresource=subresource, owners=new_owners)

    @staticmethod
    def _applied_fields(kind: ResourceKind, applied: dict[str, Any], part: str) -> dict[str, Any]:
        """What an apply patch sets in one part (main or status), without the identity and system fields."""
        if part == "status":
            return {"status": copy.deepcopy(applied.get("status") or {})}
        fields = {k: copy.deepcopy(v) for k, v in applied.items() if k not in ("apiVersion", "kind")}
        if kind.status_subresource:
            fields.pop("status", None)
        meta = {k: v for k, v in (fields.pop("metadata", None) or {}).items()
                if k not in SYSTEM_METADATA and k not in ("name", "namespace")}
        if meta:
            fields["metadata"] = meta
        return fields

    @staticmethod
    def _writable_part(kind: ResourceKind, obj: dict[str, Any], part: str) -> dict[str, Any]:
        if part == "status":
            return {"status": copy.deepcopy(obj.get("status") or {})}
        live = {k: copy.deepcopy(v) for k, v in obj.items()
                if k not in ("apiVersion", "kind") and not (k == "status" and kind.status_subresource)}
        live["metadata"] = {k: v for k, v in live["metadata"].items() if k not in SYSTEM_METADATA}
        return live

    @staticmethod
    def _with_status(obj: dict[str, Any], status_from: dict[str, Any]) -> dict[str, Any]:
        result = copy.deepcopy(obj)
        if status_from.get("status") is not None:
            result["status"] = copy.deepcopy(status_from["status"])
        else:
            result.pop("status", None)
        return result

    def _existing(self, kind: ResourceKind, namespace: str | None, name: str) -> tuple[Key, dict[str, Any]]:
        key = (kmock.resource(*kind.key), namespace if kind.namespaced else None, name)
        if (old := self._alive(key)) is None:
            raise self._not_found(kind, name)
        return key, old

    @staticmethod
    def _conflict(kind: ResourceKind, name: str) -> kmock.KubernetesError:
        return api_error(409, f"Operation cannot be fulfilled on {kind.describe(name)}: the object has been "
                              "modified; please apply your changes to the latest version and try again",
                         name=name, group=kind.group, kind=kind.plural)

    @staticmethod
    def _managed_entry(kind: ResourceKind, manager: str, operation: str, subresource: str | None,
                       fields: dict[str, Any]) -> dict[str, Any]:
        entry = {"manager": manager, "operation": operation, "apiVersion": kind.api_version, "time": now_iso(),
                 "fieldsType": "FieldsV1", "fieldsV1": patches.fields_v1(fields)}
        if subresource:
            entry["subresource"] = subresource
        return entry

    def _managed_fields(self, kind: ResourceKind, key: Key, old: dict[str, Any], manager: str, operation: str,
                        subresource: str | None) -> list[dict[str, Any]]:
        """managedFields after a write: Apply entries mirror the owners table; the writer's entry is refreshed
        in place (so that a repeated identical write stays a no-op)."""
        owners = self._owners.get(key, {})
        part = "status" if subresource == "status" else "main"
        fields = owners.get(part, {}).get(manager, {}) if operation == "Apply" else {}
        mine = self._managed_entry(kind, manager, operation, subresource, fields)
        entries, found = [], False
        for entry in old["metadata"].get("managedFields") or []:
            if (entry["manager"], entry["operation"], entry.get("subresource")) == (manager, operation, subresource):
                entries.append(mine)
                found = True
            elif entry["operation"] == "Apply":
                kept = owners.get("status" if entry.get("subresource") else "main", {}).get(entry["manager"])
                if kept:
                    entries.append({**entry, "fieldsV1": patches.fields_v1(kept)})
            else:
                entries.append(entry)
        return entries if found else [*entries, mine]

    def _update(self, kind: ResourceKind, key: Key, old: dict[str, Any], candidate: dict[str, Any], *, manager: str,
                operation: str, subresource: str | None, owners: dict[str, dict[str, Any]] | None = None) -> dict[str, Any]:
        """Store `candidate` as the next version of `old`: system fields kept, generation and rv bumped when due."""
        candidate = copy.deepcopy(candidate)
        candidate["apiVersion"], candidate["kind"] = kind.api_version, kind.kind
        meta = candidate.setdefault("metadata", {})
        old_meta = old["metadata"]
        for name in ("name", "namespace", "uid", "creationTimestamp", "deletionTimestamp",
                     "deletionGracePeriodSeconds", "generation", "generateName"):
            if name in old_meta:
                meta[name] = old_meta[name]
            else:
                meta.pop(name, None)
        if old_meta.get("deletionTimestamp") and set(meta.get("finalizers") or []) - set(old_meta.get("finalizers") or []):
            raise api_error(422, f"{kind.describe(key[2])} is invalid: metadata.finalizers: Forbidden: no new "
                                 "finalizers can be added if the object is being deleted")
        if not meta.get("finalizers"):
            meta.pop("finalizers", None)
        self._default(kind, candidate)
        if self._spec_part(kind, candidate) != self._spec_part(kind, old):
            meta["generation"] = old_meta.get("generation", 0) + 1

        part = "status" if subresource == "status" else "main"
        previous_owners = copy.deepcopy(self._owners.get(key, {}))
        table = self._owners.setdefault(key, {})
        if owners is not None:
            table[part] = owners
        for other_part, part_owners in list(table.items()):
            if owners is None or other_part != part:
                table[other_part] = patches.release_changed(part_owners, candidate)
        meta["managedFields"] = self._managed_fields(kind, key, old, manager, operation, subresource)
        meta["resourceVersion"] = old_meta["resourceVersion"]
        with_managers = operation == "Apply"  # an Update that changes nothing leaves managedFields alone too
        if self._comparable(candidate, with_managers) == self._comparable(old, with_managers):
            self._owners[key] = previous_owners
            return copy.deepcopy(old)

        if meta.get("deletionTimestamp") and not meta.get("finalizers"):
            return self._remove(kind, key, candidate)
        meta["resourceVersion"] = self._next_version()
        self._store(key, candidate)
        self._publish(kind, "MODIFIED", candidate, old)
        return copy.deepcopy(candidate)

    @staticmethod
    def _default(kind: ResourceKind, obj: dict[str, Any]) -> None:
        """The defaulting this emulator does: a Deployment's replicas (1), as the API server stores it."""
        if kind.key == DEPLOYMENTS and isinstance(obj.get("spec"), dict):
            obj["spec"].setdefault("replicas", 1)

    @staticmethod
    def _spec_part(kind: ResourceKind, obj: dict[str, Any]) -> dict[str, Any]:
        """What `metadata.generation` counts: all but metadata, and but status when it is a subresource."""
        excluded = {"apiVersion", "kind", "metadata"} | ({"status"} if kind.status_subresource else set())
        return {k: v for k, v in obj.items() if k not in excluded}

    @staticmethod
    def _comparable(obj: dict[str, Any], with_managers: bool) -> dict[str, Any]:
        """An object without what changes on every write (the version, the managers' timestamps)."""
        result = copy.deepcopy(obj)
        result["metadata"].pop("resourceVersion", None)
        if not with_managers:
            result["metadata"].pop("managedFields", None)
        for entry in result["metadata"].get("managedFields") or []:
            entry.pop("time", None)
        return result

    # --- deletion ---

    def delete(self, kind: ResourceKind, namespace: str | None, name: str, options: dict[str, Any]) -> dict[str, Any]:
        key, old = self._existing(kind, namespace, name)
        preconditions = options.get("preconditions") or {}
        if preconditions.get("uid") not in (None, old["metadata"]["uid"]) or \
                preconditions.get("resourceVersion") not in (None, old["metadata"]["resourceVersion"]):
            raise self._conflict(kind, name)
        policy = options.get("propagationPolicy") or (
            "Orphan" if str(options.get("orphanDependents")).lower() == "true" else "Background")
        if old["metadata"].get("deletionTimestamp"):
            return copy.deepcopy(old)
        if kind.key == NAMESPACES and name in ("default", "kube-system", "kube-public"):
            raise api_error(403, f'namespaces "{name}" is forbidden: this namespace may not be deleted')
        if policy == "Orphan":
            self._orphan_dependents(old["metadata"]["uid"])
        elif policy == "Foreground":
            self._collect_dependents(old["metadata"]["uid"], exclude=old["metadata"]["uid"])

        if old["metadata"].get("finalizers") or kind.key == NAMESPACES:
            marked = copy.deepcopy(old)
            marked["metadata"].update(deletionTimestamp=now_iso(), deletionGracePeriodSeconds=0,
                                      generation=old["metadata"].get("generation", 0) + 1,
                                      resourceVersion=self._next_version())
            if kind.key == NAMESPACES:
                marked["status"] = {"phase": "Terminating"}
            self._store(key, marked)
            self._publish(kind, "MODIFIED", marked, old)
            if kind.key == NAMESPACES:
                self._empty_namespace(name)
            return copy.deepcopy(self._alive(key) or marked)

        removed = self._remove(kind, key, old)
        if kind.custom:
            return removed
        return {"apiVersion": "v1", "kind": "Status", "metadata": {}, "status": "Success",
                "details": {"name": name, "group": kind.group, "kind": kind.plural, "uid": old["metadata"]["uid"]}}

    def delete_collection(self, kind: ResourceKind, namespace: str | None, params: dict[str, str],
                          options: dict[str, Any]) -> dict[str, Any]:
        label_match, field_match = self._matchers(params)
        doomed = [obj for obj in self.alive_objects(kind, namespace) if label_match(obj) and field_match(obj)]
        for obj in doomed:
            if self._alive(self._key_of(kind, obj)) is not None:
                self.delete(kind, obj["metadata"].get("namespace"), obj["metadata"]["name"], options)
        return {"apiVersion": "v1", "kind": "Status", "metadata": {}, "status": "Success"}

    @staticmethod
    def _key_of(kind: ResourceKind, obj: dict[str, Any]) -> Key:
        return (kmock.resource(*kind.key), obj["metadata"].get("namespace") if kind.namespaced else None,
                obj["metadata"]["name"])

    def _remove(self, kind: ResourceKind, key: Key, last: dict[str, Any]) -> dict[str, Any]:
        """The object leaves the store; its dependents are collected and its namespace may finish."""
        removed = copy.deepcopy(last)
        old = self._alive(key)
        removed["metadata"]["resourceVersion"] = self._next_version()
        self.objects[key].delete()
        self._owners.pop(key, None)
        self._publish(kind, "DELETED", removed, old)
        self._collect_dependents(removed["metadata"]["uid"])
        if kind.namespaced and key[1] is not None:
            self._finish_namespace_if_empty(key[1])
        if kind.key == NAMESPACES:
            self._empty_namespace(key[2])
        return removed

    def _every_alive(self) -> Iterable[tuple[ResourceKind, dict[str, Any]]]:
        for key, stored in list(self.objects.items()):
            kind = self.kinds.get((key[0].group, key[0].version, key[0].plural))
            if kind is not None and not stored.deleted:
                yield kind, stored.last.raw

    def _collect_dependents(self, owner_uid: str, exclude: str | None = None) -> None:
        """The garbage collector: delete objects none of whose owners exist any more."""
        alive_uids = {obj["metadata"]["uid"] for _, obj in self._every_alive()} - {exclude}
        for kind, obj in list(self._every_alive()):
            refs = obj["metadata"].get("ownerReferences") or []
            if any(ref.get("uid") == owner_uid for ref in refs) and not any(ref.get("uid") in alive_uids for ref in refs):
                if self._alive(self._key_of(kind, obj)) is not None:
                    self.delete(kind, obj["metadata"].get("namespace"), obj["metadata"]["name"], {})

    def _orphan_dependents(self, owner_uid: str) -> None:
        for kind, obj in list(self._every_alive()):
            refs = obj["metadata"].get("ownerReferences") or []
            if any(ref.get("uid") == owner_uid for ref in refs):
                orphan = copy.deepcopy(obj)
                orphan["metadata"]["ownerReferences"] = [ref for ref in refs if ref.get("uid") != owner_uid] or None
                if orphan["metadata"]["ownerReferences"] is None:
                    del orphan["metadata"]["ownerReferences"]
                self._update(kind, self._key_of(kind, obj), obj, orphan, manager=CONTROLLER_MANAGER,
                             operation="Update", subresource=None)

    def _empty_namespace(self, namespace: str) -> None:
        """The namespace controller: delete everything in a terminating namespace, then the namespace."""
        for kind, obj in list(self._every_alive()):
            if kind.namespaced and obj["metadata"].get("namespace") == namespace:
                if self._alive(self._key_of(kind, obj)) is not None:
                    self.delete(kind, namespace, obj["metadata"]["name"], {})
        self._finish_namespace_if_empty(namespace)

    def _finish_namespace_if_empty(self, namespace: str) -> None:
        key = (kmock.resource(*NAMESPACES), None, namespace)
        ns = self._alive(key)
        if ns is None or not ns["metadata"].get("deletionTimestamp"):
            return
        if any(kind.namespaced and obj["metadata"].get("namespace") == namespace for kind, obj in self._every_alive()):
            return
        self._remove(self.kinds[NAMESPACES], key, ns)

    # --- CRDs: what a real API server serves follows the CRD objects ---

    def register_crd(self, crd: dict[str, Any]) -> None:
        """Install a CRD (a dict as in `crds/*.yaml`) as `kubectl apply` would; its kinds are served at once."""
        kind = self.kinds[CRDS]
        if self.get(kind, None, crd["metadata"]["name"]) is None:
            self.create(kind, None, crd, manager="kubectl")

    def _crd_changed(self, crd: dict[str, Any], deleted: bool) -> None:
        name = crd["metadata"]["name"]
        previous = self._crd_kinds.pop(name, [])
        current = [] if deleted else kinds_of_crd(crd)
        for kind in previous:
            if kind.key not in {k.key for k in current}:
                self._unserve_kind(kind)
        for kind in current:
            self._serve_kind(kind)
        if current:
            self._crd_kinds[name] = current
        if not deleted and not crd.get("status", {}).get("conditions") and self.loop is not None:
            self.loop.call_soon(self._establish_crd, name)
        elif not deleted and not crd.get("status", {}).get("conditions"):
            self._establish_crd(name)

    def _establish_crd(self, name: str) -> None:
        kind = self.kinds[CRDS]
        key = (kmock.resource(*CRDS), None, name)
        if (crd := self._alive(key)) is None:
            return
        established = self._with_status(crd, {"status": {
            "conditions": [{"type": "NamesAccepted", "status": "True", "reason": "NoConflicts",
                            "lastTransitionTime": now_iso()},
                           {"type": "Established", "status": "True", "reason": "InitialNamesAccepted",
                            "lastTransitionTime": now_iso()}],
            "acceptedNames": crd["spec"]["names"],
            "storedVersions": [v["name"] for v in crd["spec"]["versions"] if v.get("storage")]}})
        self._update(kind, key, crd, established, manager="kube-apiserver", operation="Update", subresource="status")

    # --- the deployment controller (stands in for kube-controller-manager) ---

    def _held(self, deployment: dict[str, Any]) -> bool:
        with self._lock:
            holds = list(self._holds)
        return any(hold.matches(deployment) for hold in holds)

    def _reconcile_all_deployments(self) -> None:
        kind = self.kinds[DEPLOYMENTS]
        for obj in self.alive_objects(kind):
            self._reconcile_deployment(self._key_of(kind, obj))

    def _reconcile_deployment(self, key: Key) -> None:
        """Report a Deployment's rollout as done at once (Available), unless a test holds it."""
        obj = self._alive(key)
        if obj is None or obj["metadata"].get("deletionTimestamp"):
            return
        replicas = (obj.get("spec") or {}).get("replicas", 1)
        held = self._held(obj)
        counts = {"replicas": replicas, "updatedReplicas": replicas}
        counts.update({"unavailableReplicas": replicas} if held else {"readyReplicas": replicas,
                                                                       "availableReplicas": replicas})
        conditions = [
            ("Available", "False", "MinimumReplicasUnavailable", "Deployment does not have minimum availability.")
            if held and replicas else
            ("Available", "True", "MinimumReplicasAvailable", "Deployment has minimum availability."),
            ("Progressing", "True", "ReplicaSetUpdated" if held else "NewReplicaSetAvailable",
             f'ReplicaSet "{key[2]}" is progressing.' if held else f'ReplicaSet "{key[2]}" has successfully progressed.'),
        ]
        current = obj.get("status") or {}
        known = {c["type"]: c for c in current.get("conditions") or []}
        status = {"observedGeneration": obj["metadata"].get("generation", 1),
                  **{name: count for name, count in counts.items() if count}, "conditions": []}
        for kind_, state, reason, message in conditions:
            previous = known.get(kind_, {})
            same = previous.get("status") == state and previous.get("reason") == reason
            status["conditions"].append({
                "type": kind_, "status": state, "reason": reason, "message": message,
                "lastUpdateTime": previous["lastUpdateTime"] if same else now_iso(),
                "lastTransitionTime": previous["lastTransitionTime"] if previous.get("status") == state else now_iso()})
        if status != current:
            self._update(self.kinds[DEPLOYMENTS], key, obj, self._with_status(obj, {"status": status}),
                         manager=CONTROLLER_MANAGER, operation="Update", subresource="status")
