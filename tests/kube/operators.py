"""Run kopf operators in tests: each in its own thread with its own event loop, logging in through a
login handler that returns the test cluster's `kopf.ConnectionInfo` (so nothing reads KUBECONFIG or
~/.kube, and no environment leaks between tests).

Usage, e.g. for the project's registry::

    registry = make_registry()
    register_login(registry, kube.connection_info())
    with OperatorThread(registry, settings=fast_settings(), peering_name="hetplace", priority=10):
        ...
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any, Collection

import kopf

LOGIN_HANDLER_ID = "hetplace-tests-login"


def register_login(registry: kopf.OperatorRegistry, connection: kopf.ConnectionInfo) -> None:
    """Make operators of `registry` log in to `connection` instead of kopf's kubeconfig/in-cluster logins.

    A registry built with `kopf.OperatorRegistry()` has no login handler of its own: this is the one.
    """

    @kopf.on.login(registry=registry, id=LOGIN_HANDLER_ID)
    def login_to_test_cluster(**_: Any) -> kopf.ConnectionInfo:
        return connection


def fast_settings() -> kopf.OperatorSettings:
    """kopf's settings with the waits shortened for tests: API retries and watch reconnects in tenths of a second."""
    settings = kopf.OperatorSettings()
    settings.networking.error_backoffs = [0.05, 0.1, 0.2, 0.4, 0.8]
    settings.watching.reconnect_backoff = 0.05
    settings.posting.default_backoffs = [0.05, 0.1, 0.2]
    settings.queueing.idle_timeout = 1.0
    settings.queueing.exit_timeout = 1.0
    return settings


class OperatorThread:
    """One kopf operator (`kopf.operator`) running in a thread of its own until `stop()`."""

    def __init__(self, registry: kopf.OperatorRegistry, *, settings: kopf.OperatorSettings | None = None,
                 clusterwide: bool = True, namespaces: Collection[str] = (), peering_name: str | None = None,
                 priority: int | None = None, identity: str | None = None, memo: object | None = None,
                 name: str | None = None) -> None:
        self.registry = registry
        self.settings = settings if settings is not None else fast_settings()
        self.identity = identity
        self._options: dict[str, Any] = dict(
            clusterwide=clusterwide and not namespaces, namespaces=list(namespaces),
            peering_name=peering_name, priority=priority, standalone=peering_name is None,
            identity=identity, memo=memo)
        self._ready = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name or f"kopf-{identity or 'operator'}", daemon=True)
        self.failure: BaseException | None = None

    def start(self, timeout_s: float = 15) -> OperatorThread:
        self._thread.start()
        for _ in range(int(timeout_s / 0.05)):
            if self._ready.wait(0.05) or not self._thread.is_alive():
                break
        if not self._ready.is_set():
            self.stop()
            raise RuntimeError(f"the kopf operator did not start within {timeout_s}s") from self.failure
        return self

    def stop(self, timeout_s: float = 15) -> None:
        self._stop.set()
        if self._thread.ident is not None:
            self._thread.join(timeout_s)
        if self._thread.is_alive():
            raise RuntimeError(f"the kopf operator did not stop within {timeout_s}s")

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def __enter__(self) -> OperatorThread:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()

    def _run(self) -> None:
        try:
            asyncio.run(kopf.operator(registry=self.registry, settings=self.settings, ready_flag=self._ready,
                                      stop_flag=self._stop, **self._options))
        except BaseException as failed:  # reported by start(), or visible as a dead thread
            self.failure = failed
