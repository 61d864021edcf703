"""MLServer, a real KServe-V2 server, started as a subprocess on 127.0.0.1 for tritonclient to talk to (docs/design.md §6).

It runs from `.venv-mlserver/` (made by `make test` from tests/mlserver/requirements.txt), never in the
test process: importing MLServer beside tritonclient.grpc clashes. It serves the models of
tests/mlserver/models/ through their custom runtimes, on free HTTP and gRPC ports and without its
metrics server, from a copy of that folder, so each pytest-xdist worker has a server of its own.
tests/mlserver/held-back/ holds models a test copies into `repository` and loads while the server runs.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest
from servers import free_ports, wait_for

HERE = Path(__file__).parent
MLSERVER = HERE.parent / ".venv-mlserver" / "bin" / "mlserver"
MODELS = HERE / "mlserver" / "models"
HELD_BACK = HERE / "mlserver" / "held-back"
MODEL = "defect-detector"
START_TIMEOUT_S = 60


@dataclass(frozen=True)
class MLServerEndpoints:
    http: str           # host:port, as tritonclient wants it
    grpc: str
    http_port: int
    grpc_port: int
    model: str          # the model every test can rely on being loaded at the start
    repository: Path    # the folder the server loads models from (a copy of tests/mlserver/models)
    log: Path


@pytest.fixture(scope="module")
def mlserver(tmp_path_factory):
    if not MLSERVER.exists():
        pytest.fail(f"{MLSERVER} is missing: `make test` makes .venv-mlserver/ from tests/mlserver/requirements.txt")
    home = tmp_path_factory.mktemp("mlserver")
    shutil.copytree(MODELS, home / "models")
    http_port, grpc_port = free_ports(2)
    (home / "settings.json").write_text(json.dumps({
        "host": "127.0.0.1", "http_port": http_port, "grpc_port": grpc_port,
        "model_repository_root": str(home / "models"),
        "metrics_endpoint": None,   # no metrics server, so no third port
        "parallel_workers": 0,      # models in the server's own process: a faster start, one process to stop
        "debug": False,
    }))
    log = home / "mlserver.log"
    env = {key: value for key, value in os.environ.items() if not key.startswith("MLSERVER_")}  # settings.json rules
    with log.open("w") as out:      # cwd is the copy: MLServer writes nothing into tests/
        process = subprocess.Popen([str(MLSERVER), "start", str(home)], cwd=home, env=env,
                                   stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{http_port}"

    def model_ready() -> bool:
        if process.poll() is not None:
            pytest.fail(f"mlserver exited with {process.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"{url}/v2/models/{MODEL}/ready", timeout=1) as response:
                return response.status == 200
        except OSError:
            return False

    try:
        wait_for(model_ready, START_TIMEOUT_S, f"mlserver to serve {MODEL} at {url} (log: {log})")
        yield MLServerEndpoints(f"127.0.0.1:{http_port}", f"127.0.0.1:{grpc_port}", http_port, grpc_port, MODEL,
                                home / "models", log)
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
