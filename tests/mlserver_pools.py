"""Several MLServer processes as several pools: each a real KServe-V2 server on 127.0.0.1 serving the
models of tests/mlserver/models/, started together (so their start-up overlaps) and each stoppable
on its own — a test kills one to see what a site does when a pool goes away. Same set-up as the
`mlserver` fixture of mlserver_fixture.py, which stays as it is for its users. `models=` serves another
repository instead (e.g. one of tests/mlserver_profiles.py), the same for every pool or one per pool."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

import pytest
from mlserver_fixture import MLSERVER, MODEL, MODELS, START_TIMEOUT_S
from servers import free_ports


@dataclass
class Pool:
    """One MLServer standing in for one pool's Triton."""

    name: str
    http_port: int
    grpc_port: int
    home: Path
    process: subprocess.Popen = field(repr=False)
    models: tuple[str, ...] = (MODEL,)     # what it serves; ready when all of them are
    host: str = "127.0.0.1"                # where it listens (a pool's address in the network lab)

    @property
    def http(self) -> str:
        return f"http://{self.host}:{self.http_port}"

    @property
    def grpc(self) -> str:
        return f"grpc://{self.host}:{self.grpc_port}"

    @property
    def log(self) -> Path:
        return self.home / "mlserver.log"

    def ready(self) -> bool:
        if self.process.poll() is not None:
            pytest.fail(f"mlserver of {self.name} exited with {self.process.returncode}:\n{self.log.read_text()[-3000:]}")
        return all(self._model_ready(model) for model in self.models)

    def _model_ready(self, model: str) -> bool:
        try:
            with urllib.request.urlopen(f"{self.http}/v2/models/{model}/ready", timeout=1) as response:
                return response.status == 200
        except OSError:
            return False

    def kill(self) -> None:
        """Gone at once, as a pool whose node died: SIGKILL, no goodbye to open connections."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.kill()


def launch_pool(name: str, home: Path, *, host: str = "127.0.0.1", http_port: int, grpc_port: int,
                prefix: Sequence[str] = (), repository: Path = MODELS) -> Pool:
    """MLServer serving MODEL from a copy under `home` on `host`, started behind the command `prefix`
    (e.g. `ip netns exec NS`); returns at once, before it is ready. `repository`: another model
    repository to copy and serve instead; the pool is then ready when every model in it is."""
    if not MLSERVER.exists():
        pytest.fail(f"{MLSERVER} is missing: `make test` makes .venv-mlserver/ from tests/mlserver/requirements.txt")
    env = {key: value for key, value in os.environ.items() if not key.startswith("MLSERVER_")}
    home.mkdir(parents=True)
    shutil.copytree(repository, home / "models")
    (home / "settings.json").write_text(json.dumps({
        "host": host, "http_port": http_port, "grpc_port": grpc_port,
        "model_repository_root": str(home / "models"), "metrics_endpoint": None,
        "parallel_workers": 0, "debug": False}))
    with (home / "mlserver.log").open("w") as out:
        process = subprocess.Popen([*prefix, str(MLSERVER), "start", str(home)], cwd=home, env=env,
                                   stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT)
    served = (MODEL,) if repository == MODELS else tuple(sorted(
        path.parent.name for path in Path(repository).glob("*/model-settings.json")))
    return Pool(name, http_port, grpc_port, home, process, models=served, host=host)


def start_pools(names: list[str], root: Path, models: Path | Mapping[str, Path] | None = None) -> list[Pool]:
    """One MLServer per name under `root`, all serving MODEL; stops them all if one fails to start.

    `models`: a model repository (a folder of model folders) to serve instead of tests/mlserver/models,
    or one per pool name; each pool is ready when every model in its repository is."""
    if not MLSERVER.exists():
        pytest.fail(f"{MLSERVER} is missing: `make test` makes .venv-mlserver/ from tests/mlserver/requirements.txt")
    ports = free_ports(2 * len(names))
    pools: list[Pool] = []
    try:
        for i, name in enumerate(names):
            repository = MODELS if models is None else models[name] if isinstance(models, Mapping) else models
            pools.append(launch_pool(name, root / name, http_port=ports[2 * i], grpc_port=ports[2 * i + 1],
                                     repository=repository))
        deadline = time.monotonic() + START_TIMEOUT_S * max(1, len(names) // 2)
        waiting = list(pools)
        while waiting:
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for mlserver of {', '.join(p.name for p in waiting)} "
                                     f"(logs: {', '.join(str(p.log) for p in waiting)})")
            waiting = [p for p in waiting if not p.ready()]
            time.sleep(0.2)
        return pools
    except BaseException:
        for pool in pools:
            pool.stop()
        raise
