"""The routing core: which routes a request for a model tries and in what order, and the failover
loop that tries them (docs/routes.md). Shared by `hetplace gateway` and `hetplace.client`, so it
knows no transport: a transport hands `Router.call` a `send(route, timeout_s)` coroutine that
returns a response, or raises `UpstreamFailure` for what another route may serve instead (no
connection, a 5xx, a timeout). Anything else it returns — a 4xx included — is the answer.
`Router.call_blocking` is the same loop for a blocking `send` (tritonclient's sync clients),
called from any number of threads.

A route that failed is down for a short interval that doubles with each failure in a row (1 s up
to 30 s by default); when the interval is over, one request at a time may try it again, and a
health probe (`Router.recovered`) brings it back at once. Down routes are tried last rather than
never: a request is refused only after every route was tried.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Awaitable, Callable, Generic, Iterable, Iterator, TypeVar

from hetplace.site.routes import Route, RoutesDocument
from hetplace.site.telemetry import FailureReason, SiteMetrics

log = logging.getLogger(__name__)

Response = TypeVar("Response")
RouteId = tuple[str, str, str]     # (workload namespace/name, pool, variant): one group of one workload
DEFAULT_DEADLINE_S = 10.0


# The most one attempt may take while other routes are left to try: ATTEMPT_SLO_MULTIPLE x the SLO,
# at least ATTEMPT_FLOOR_S. An answer that late has missed the SLO anyway; the next route may not.
ATTEMPT_SLO_MULTIPLE = 10.0
ATTEMPT_FLOOR_S = 1.0

class _Attempt:
    __slots__ = ("response", "served")

    def __init__(self) -> None:
        self.response: Any = None
        self.served = False


class UpstreamFailure(Exception):
    """An attempt another route may serve instead; `reason` is what the metrics count, `detail` what the
    refusal names."""

    def __init__(self, reason: FailureReason, detail: str = "") -> None:
        super().__init__(detail or reason.value)
        self.reason = reason
        self.detail = detail or reason.value


@dataclass(frozen=True)
class Tried:
    """One attempt of a request that did not serve it."""

    route: Route
    reason: FailureReason
    detail: str

    def __str__(self) -> str:
        return f"{self.route.key} ({self.detail})"


@dataclass(frozen=True)
class Served(Generic[Response]):
    """A request's answer: the response, the workload and route that gave it, and what failed before."""

    response: Response
    document: RoutesDocument
    route: Route
    tried: tuple[Tried, ...] = ()


class NoRouteServed(Exception):
    """Every route was tried (or the deadline passed first); names them with what went wrong."""

    def __init__(self, model: str, site: str, tried: tuple[Tried, ...], why: str = "") -> None:
        self.model = model
        self.site = site
        self.tried = tried
        what = "; ".join(str(t) for t in tried) or "no route"
        super().__init__(f"model {model}: no route of site {site} served{(' ' + why) if why else ''}: tried {what}")


class UnknownModel(LookupError):
    def __init__(self, model: str, site: str) -> None:
        super().__init__(f"Request for unknown model: '{model}' has no routes at site {site}")
        self.model = model


@dataclass(frozen=True)
class Backoff:
    """How long a failed route stays down: `first_s`, doubling with each failure in a row, at most `max_s`."""

    first_s: float = 1.0
    max_s: float = 30.0

    def interval_s(self, failures: int) -> float:
        return min(self.first_s * 2 ** max(failures - 1, 0), self.max_s)


@dataclass
class _Health:
    failures: int = 0
    retry_at: float = 0.0
    trial: bool = False       # one request is trying it again after its interval


class RouteHealth:
    """Which routes are down and when they may be tried again. Thread-safe (a lock held for a dict
    update, never across an await), so blocking callers in many threads and a prober can share one."""

    def __init__(self, backoff: Backoff = Backoff(), monotonic: Callable[[], float] = time.monotonic) -> None:
        self.backoff = backoff
        self.monotonic = monotonic
        self._failed: dict[RouteId, _Health] = {}
        self._lock = threading.Lock()

    def is_down(self, route: RouteId, now: float | None = None) -> bool:
        with self._lock:
            health = self._failed.get(route)
            if health is None:
                return False
            now = self.monotonic() if now is None else now
            return now < health.retry_at or health.trial

    def claim(self, route: RouteId, now: float | None = None) -> bool:
        """Before an attempt: False when the route is down and another request already tries it again
        (the caller may still try it, as a last resort); a route whose interval is over is claimed."""
        with self._lock:
            health = self._failed.get(route)
            if health is None:
                return True
            now = self.monotonic() if now is None else now
            if now >= health.retry_at and not health.trial:
                health.trial = True
                return True
            return False

    def failed(self, route: RouteId, now: float | None = None) -> float:
        """An attempt failed: down for the next interval, which is returned."""
        with self._lock:
            now = self.monotonic() if now is None else now
            health = self._failed.setdefault(route, _Health())
            health.failures += 1
            health.trial = False
            interval = self.backoff.interval_s(health.failures)
            health.retry_at = now + interval
            return interval

    def succeeded(self, route: RouteId) -> None:
        with self._lock:
            self._failed.pop(route, None)

    def released(self, route: RouteId) -> None:
        """An attempt ended neither way (cancelled): another request may try the route again."""
        with self._lock:
            health = self._failed.get(route)
            if health is not None:
                health.trial = False

    def down(self) -> list[RouteId]:
        with self._lock:
            return list(self._failed)

    def forget(self, keep: set[RouteId]) -> None:
        with self._lock:
            for route in [r for r in self._failed if r not in keep]:
                del self._failed[route]


class Router:
    """The routes of one site: the current documents indexed by model name, the health of each route,
    and the failover loop. Documents arrive whole from a source (`replace`)."""

    def __init__(self, site: str, metrics: SiteMetrics | None = None, *, backoff: Backoff = Backoff(),
                 deadline_s: float = DEFAULT_DEADLINE_S, monotonic: Callable[[], float] = time.monotonic) -> None:
        self.site = site
        self.metrics = metrics
        self.deadline_s = deadline_s
        self.monotonic = monotonic
        self.health = RouteHealth(backoff, monotonic)
        self._documents: list[RoutesDocument] = []
        self._by_model: dict[str, RoutesDocument] = {}
        self._conflicts: dict[str, tuple[str, ...]] = {}

    # -- the documents --------------------------------------------------------------------------
    def replace(self, documents: Iterable[RoutesDocument]) -> None:
        """Route by these documents from now on. A model two workloads serve goes to the first by
        namespace/name that has routes for this site (logged and counted once per new conflict)."""
        documents = sorted(documents, key=lambda d: (not d.for_site(self.site), d.workload))
        by_model: dict[str, RoutesDocument] = {}
        claimants: dict[str, list[str]] = {}
        for doc in documents:
            by_model.setdefault(doc.model, doc)
            claimants.setdefault(doc.model, []).append(doc.workload)
        conflicts = {model: tuple(names) for model, names in claimants.items() if len(names) > 1}
        for model, names in conflicts.items():
            if self._conflicts.get(model) != names:
                log.warning("model %s is served by workloads %s: routing to %s", model, ", ".join(names), names[0])
                if self.metrics is not None:
                    self.metrics.model_conflict(model)
        self._documents, self._by_model, self._conflicts = documents, by_model, conflicts
        self.health.forget({(d.workload, r.pool, r.variant) for d in documents for r in d.for_site(self.site)})

    def documents(self) -> list[RoutesDocument]:
        return list(self._documents)

    def resolve(self, model: str) -> RoutesDocument:
        doc = self._by_model.get(model)
        if doc is None:
            raise UnknownModel(model, self.site)
        return doc

    @property
    def ready(self) -> bool:
        """True when some workload has a route for this site."""
        return any(d.for_site(self.site) for d in self._documents)

    def site_routes(self) -> dict[str, object]:
        """This site's routes of every workload, as the read-only routes document serves them."""
        return {"site": self.site, "workloads": [
            {"workload": d.workload, "model": d.model, "generation": d.generation,
             "decidedAt": d.decided_at.isoformat(), "encoding": d.encoding_for(self.site),
             "routes": [{**r.wire(), "down": self.health.is_down((d.workload, r.pool, r.variant))}
                        for r in d.for_site(self.site)]}
            for d in self._documents if d.for_site(self.site)]}

    # -- the order ------------------------------------------------------------------------------
    def plan(self, model: str, encoding: str | None = None) -> list[Route]:
        """The routes a request for `model` tries, in order: live routes in document order — the first
        live one in the request's `encoding` moved to the front — then the down ones."""
        return self._plan(self.resolve(model), encoding)

    def plan_of(self, doc: RoutesDocument, encoding: str | None = None) -> list[Route]:
        """`plan` for one workload's document (a workload named rather than its model)."""
        return self._plan(doc, encoding)

    def _plan(self, doc: RoutesDocument, encoding: str | None) -> list[Route]:
        now = self.monotonic()
        live: list[Route] = []
        down: list[Route] = []
        for route in doc.sites.get(self.site, ()):
            (down if self.health.is_down((doc.workload, route.pool, route.variant), now) else live).append(route)
        if encoding is not None:
            for i, route in enumerate(live):
                if route.encoding == encoding:
                    if i:
                        live.insert(0, live.pop(i))
                    break
        return live + down

    # -- health from outside the request path -----------------------------------------------------

    def pool_routes(self) -> dict[str, Route]:
        """One route per pool this site reaches (the link is the pool's, whichever workload uses it)."""
        pools: dict[str, Route] = {}
        for doc in self._documents:
            for route in doc.for_site(self.site):
                pools.setdefault(route.pool, route)
        return pools

    def down_routes(self) -> list[tuple[str, Route]]:
        """(workload, route) of every route currently marked failed, for a health probe."""
        marked = set(self.health.down())
        return [(d.workload, r) for d in self._documents for r in d.for_site(self.site)
                if (d.workload, r.pool, r.variant) in marked]

    def recovered(self, workload: str, route: Route) -> None:
        """A health probe found the route ready: it is live again."""
        self.health.succeeded((workload, route.pool, route.variant))

    # -- the failover loop ----------------------------------------------------------------------
    async def call(self, model: str, encoding: str | None,
                   send: Callable[[Route, float], Awaitable[Response]], *,
                   started: float | None = None, deadline_s: float | None = None) -> Served[Response]:
        """Send a request for `model` along its plan: each route at most once, on to the next after an
        `UpstreamFailure` or a timeout, all within the deadline. Raises `UnknownModel`, or
        `NoRouteServed` naming every attempt; records the site's request and latency either way."""
        started = self.monotonic() if started is None else started
        doc = self.resolve(model)
        tried: list[Tried] = []
        try:
            for route, route_id, remaining in self._attempts(doc, model, encoding, started, deadline_s, tried):
                with self._attempt(route, route_id, remaining, tried) as attempt:
                    async with asyncio.timeout(remaining):
                        attempt.response = await send(route, remaining)
                if attempt.served:
                    return self._served(doc, route, route_id, attempt.response, tried)
            raise AssertionError("unreachable: the attempts end by raising NoRouteServed")
        finally:
            self._record(doc, started)

    def call_blocking(self, model: str, encoding: str | None, send: Callable[[Route, float], Response], *,
                      started: float | None = None, deadline_s: float | None = None) -> Served[Response]:
        """`call` for a blocking `send`, from any thread. `send` must give up within the `timeout_s` it
        is handed (a blocking call cannot be abandoned from outside); a `TimeoutError` it raises counts
        as a timeout, an `UpstreamFailure` as that failure, anything else is raised as it is."""
        started = self.monotonic() if started is None else started
        doc = self.resolve(model)
        tried: list[Tried] = []
        try:
            for route, route_id, remaining in self._attempts(doc, model, encoding, started, deadline_s, tried):
                with self._attempt(route, route_id, remaining, tried) as attempt:
                    attempt.response = send(route, remaining)
                if attempt.served:
                    return self._served(doc, route, route_id, attempt.response, tried)
            raise AssertionError("unreachable: the attempts end by raising NoRouteServed")
        finally:
            self._record(doc, started)

    @contextmanager
    def _attempt(self, route: Route, route_id: RouteId, remaining: float, tried: list[Tried]) -> Iterator[_Attempt]:
        """One try of one route: served if the block ends, failed over on an UpstreamFailure or a
        timeout (recorded), and anything else (a cancelled request) lets go of the route's claim."""
        attempt = _Attempt()
        try:
            yield attempt
            attempt.served = True
        except UpstreamFailure as failure:
            self._failed(route_id, route, failure.reason, failure.detail, tried)
        except TimeoutError:
            self._failed(route_id, route, FailureReason.TIMEOUT, f"no answer in {remaining:.3g} s", tried)
        except BaseException:
            self.health.released(route_id)
            raise

    def _attempts(self, doc: RoutesDocument, model: str, encoding: str | None, started: float,
                  deadline_s: float | None, tried: list[Tried]) -> Iterator[tuple[Route, RouteId, float]]:
        """The routes one request tries, each claimed as it is handed out with the time left for it;
        ends by raising `NoRouteServed` when every route failed or the deadline passed first."""
        deadline = started + (self.deadline_s if deadline_s is None else deadline_s)
        plan = self._plan(doc, encoding)
        # a route that accepts the request but never answers must not take the whole deadline: each
        # attempt but the last may take ATTEMPT_SLO_MULTIPLE times the SLO (at least ATTEMPT_FLOOR_S)
        cap = max(ATTEMPT_FLOOR_S, ATTEMPT_SLO_MULTIPLE * doc.slo_latency_ms / 1000.0)
        for index, route in enumerate(plan):
            remaining = deadline - self.monotonic()
            if remaining <= 0:
                raise NoRouteServed(model, self.site, tuple(tried), f"within the {deadline - started:g} s deadline")
            if tried and self.metrics is not None:
                self.metrics.failover(doc.namespace, doc.name)
            route_id = (doc.workload, route.pool, route.variant)
            self.health.claim(route_id)
            yield route, route_id, remaining if index == len(plan) - 1 else min(remaining, cap)
        raise NoRouteServed(model, self.site, tuple(tried))

    def _served(self, doc: RoutesDocument, route: Route, route_id: RouteId, response: Response,
                tried: list[Tried]) -> Served[Response]:
        self.health.succeeded(route_id)
        if self.metrics is not None:
            self.metrics.served_by(doc.namespace, doc.name, route.pool, route.variant)
        return Served(response, doc, route, tuple(tried))

    def _record(self, doc: RoutesDocument, started: float) -> None:
        if self.metrics is not None:
            self.metrics.request(doc.namespace, doc.name, self.monotonic() - started)

    def _failed(self, route_id: RouteId, route: Route, reason: FailureReason, detail: str, tried: list[Tried]) -> None:
        interval = self.health.failed(route_id)
        tried.append(Tried(route, reason, detail))
        if self.metrics is not None:
            self.metrics.upstream_error(route.pool, reason)
        log.info("route %s of %s failed (%s): down for %g s", route.key, route_id[0], detail, interval)
