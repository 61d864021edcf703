"""Run a `KubeEmulator` on 127.0.0.1 and a free port, in its own thread and event loop, so that the test
thread (sync `kubernetes` client) and kopf's thread (its own loop) can both talk to it over HTTP.

kmock's `Server` is not used to listen: on entry it patches aiohttp's `TCPConnector._resolve_host`
process-wide (and insists on LIFO exits), which would reach into the aiohttp session of a kopf
operator running in another thread. aiohttp's own `RawTestServer`, which kmock's `Server` wraps,
listens here instead.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from typing import Any, Callable, Iterable, TypeVar

import aiohttp.test_utils

from .emulator import KubeEmulator

T = TypeVar("T")


class EmulatorThread:
    """Start, reach and stop one emulator; every call from the test thread is marshalled onto its loop."""

    def __init__(self, crds: Iterable[dict[str, Any]] = ()) -> None:
        self._crds = list(crds)
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name="kube-emulator", daemon=True)
        self._failure: BaseException | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None
        self.emulator: KubeEmulator | None = None
        self.port: int | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout_s: float = 10) -> EmulatorThread:
        self._thread.start()
        if not self._ready.wait(timeout_s) or self._failure is not None:
            raise RuntimeError(f"the Kubernetes emulator did not start within {timeout_s}s") from self._failure
        return self

    def stop(self, timeout_s: float = 10) -> None:
        if self._loop is not None and self._stopping is not None and self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._stopping.set)
        self._thread.join(timeout_s)
        if self._thread.is_alive():
            raise RuntimeError(f"the Kubernetes emulator did not stop within {timeout_s}s")

    def call(self, fn: Callable[..., T], *args: Any, timeout_s: float = 10, **kwargs: Any) -> T:
        """Run `fn(*args, **kwargs)` on the emulator's loop (where its state lives) and return the result."""
        if self._loop is None:
            raise RuntimeError("the Kubernetes emulator is not running")
        future: concurrent.futures.Future[T] = concurrent.futures.Future()

        def run() -> None:
            try:
                future.set_result(fn(*args, **kwargs))
            except BaseException as failed:  # handed over to the calling thread
                future.set_exception(failed)

        self._loop.call_soon_threadsafe(run)
        return future.result(timeout_s)

    def _run(self) -> None:
        try:
            asyncio.run(self._serve())
        except BaseException as failed:  # reported by start() or seen as a dead thread
            self._failure = failed
            self._ready.set()

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stopping = asyncio.Event()
        emulator = KubeEmulator()
        async with emulator:
            server = aiohttp.test_utils.RawTestServer(emulator, host="127.0.0.1", port=None)
            await server.start_server()
            try:
                for crd in self._crds:
                    emulator.register_crd(crd)
                self.emulator, self.port = emulator, server.port
                self._ready.set()
                await self._stopping.wait()
                emulator.drop_watches()
            finally:
                await server.close()
