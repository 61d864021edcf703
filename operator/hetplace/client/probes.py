"""The background half of `hetplace.client`, one thread: brings failed routes back when their server is
ready again, and measures the links the application's requests cannot show — RTT always (tritonclient
does not expose connection set-up), bandwidth where a link is idle — within the same budget as the
gateway's probes (docs/telemetry.md), then publishes the link figures.
"""

from __future__ import annotations

import http.client
import logging
import ssl
import threading
import time
from typing import Callable
from urllib.parse import urlsplit

from hetplace.site.core import Router
from hetplace.site.gateway import probe_body
from hetplace.site.telemetry import LinkTelemetry

log = logging.getLogger(__name__)


class UpstreamConnections:
    """One kept-alive HTTP connection per endpoint, for probes only: its set-up is one round trip, and
    a GET on it afterwards one more. Used from the prober's thread alone."""

    def __init__(self, ca_file: str | None, timeout_s: float) -> None:
        self.tls = ssl.create_default_context(cafile=ca_file)
        self.timeout_s = timeout_s
        self._open: dict[str, http.client.HTTPConnection] = {}

    def request(self, endpoint: str, method: str, path: str, body: bytes = b"",
                on_connect: Callable[[float], None] | None = None) -> tuple[int, int, float]:
        """(status, body bytes moved both ways, seconds from first byte out to last in); raises OSError or
        http.client.HTTPException on failure (the connection is then dropped)."""
        url = urlsplit(endpoint)
        connection = self._open.get(endpoint)
        if connection is None:
            connection = (http.client.HTTPSConnection(url.hostname, url.port, timeout=self.timeout_s, context=self.tls)
                          if url.scheme == "https" else
                          http.client.HTTPConnection(url.hostname, url.port, timeout=self.timeout_s))
            began = time.monotonic()
            try:
                connection.connect()
            except OSError:
                connection.close()
                raise
            if on_connect is not None and url.scheme == "http":    # TLS would add its handshake
                on_connect(time.monotonic() - began)
            self._open[endpoint] = connection
        headers = {"Content-Type": "application/json"} if body else {}
        began = time.monotonic()
        try:
            connection.request(method, url.path.rstrip("/") + path, body=body or None, headers=headers)
            response = connection.getresponse()
            answer = response.read()
        except (OSError, http.client.HTTPException):
            self.drop(endpoint)
            raise
        return response.status, len(body) + len(answer), time.monotonic() - began

    def drop(self, endpoint: str) -> None:
        connection = self._open.pop(endpoint, None)
        if connection is not None:
            connection.close()

    def close(self) -> None:
        for endpoint in list(self._open):
            self.drop(endpoint)


class SiteProber:
    """Every `health_interval_s`, asks each down route's server whether it is ready (GET
    /v2/health/ready) and brings back those that are; every `probe_interval_s`, probes the links that
    `LinkTelemetry.plan_probes` says need it and publishes every link's figures."""

    def __init__(self, router: Router, links: LinkTelemetry, *, ca_file: str | None = None,
                 health_interval_s: float = 1.0, probe_interval_s: float = 10.0) -> None:
        self.router = router
        self.links = links
        self.health_interval_s = health_interval_s
        self.probe_interval_s = probe_interval_s
        self.connections = UpstreamConnections(ca_file, timeout_s=max(health_interval_s, 1.0))
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name=f"hetplace-probes-{router.site}")

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=10)
        self.connections.close()

    def _run(self) -> None:
        next_links = time.monotonic()
        while not self._stop.wait(self.health_interval_s):
            try:
                self.probe_health_once()
                if time.monotonic() >= next_links:
                    self.probe_links_once()
                    next_links = time.monotonic() + self.probe_interval_s
            except Exception:   # a probe must never stop the prober
                log.exception("site probe failed")

    def probe_health_once(self) -> None:
        for workload, route in self.router.down_routes():
            try:
                status, _, _ = self.connections.request(route.http, "GET", "/v2/health/ready")
            except (OSError, http.client.HTTPException):
                continue
            if status == 200:
                log.info("route %s of %s is ready again", route.key, workload)
                self.router.recovered(workload, route)

    def probe_links_once(self) -> None:
        pools = self.router.pool_routes()
        for pool, route in pools.items():
            plan = self.links.plan_probes(pool, time.monotonic())

            def connected(seconds: float, pool: str = pool) -> None:
                self.links.observe_rtt(pool, time.monotonic(), seconds)

            try:
                if plan.rtt:
                    status, _, seconds = self.connections.request(route.http, "GET", "/v2/health/live",
                                                                  on_connect=connected)
                    if status < 500:
                        connected(seconds)
                for size in plan.bandwidth_sizes or ():
                    status, moved, seconds = self.connections.request(
                        route.http, "POST", f"/v2/models/{route.model}/infer", probe_body(size), on_connect=connected)
                    if status < 500:
                        self.links.observe_probe(pool, time.monotonic(), moved, seconds)
            except (OSError, http.client.HTTPException):
                continue        # a failed probe measures nothing
        self.links.publish(time.monotonic())     # every link seen: one whose pool left the routes goes stale
