"""`make demo-gateway`: a site's gateway failing over, on real servers and real packets over loopback.

The factory example is decided as the operator decides it with the factory uplink at 250 KB/s
(`hetplace render --telemetry`): the factory's requests go to the Arm box on the factory floor,
with the CPU pool in the cloud as its fallback. Two MLServer processes (real KServe-V2 servers)
stand in for the two pools' Triton, each pool's `spec.clientEndpoints` pointing at its server, so
the routes document the operator would write names them. `hetplace gateway --site factory-eu-1
--routes FILE` runs in front; tritonclient sends 50 requests/s through it, and after two seconds
the Arm box is killed (SIGKILL, as a node that dies). The table shows, second by second, which
pool answered and how many requests the clients lost. Exit status 1 if more than one was lost.
"""

from __future__ import annotations

import copy
import http.client
import json
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import tritonclient.http as triton_http
import yaml
from rich.console import Console
from rich.table import Table

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from mlserver_pools import start_pools  # noqa: E402
from servers import free_ports, wait_for  # noqa: E402

FACTORY = REPO / "manifests" / "examples" / "factory"
SITE, MODEL = "factory-eu-1", "defect-detector"
PRIMARY, FALLBACK = "arm-factory-eu-1", "cpu-cloud-eu"
RATE, SECONDS, KILL_AT = 50, 8, 2.0
HEADER = "hetplace-route"


def routes_file(workdir: Path, endpoints: dict[str, tuple[str, str]]) -> Path:
    """The routes ConfigMap `hetplace render` writes for the factory at 250 KB/s, pools reached at `endpoints`."""
    pools = workdir / "pools"
    pools.mkdir()
    for source in sorted((FACTORY / "pools").glob("*.yaml")):
        pool = yaml.safe_load(source.read_text())
        if pool["metadata"]["name"] in endpoints:
            http, grpc = endpoints[pool["metadata"]["name"]]
            pool = copy.deepcopy(pool)
            pool["spec"]["clientEndpoints"] = {"http": http, "grpc": grpc}
        (pools / source.name).write_text(yaml.safe_dump(pool))
    telemetry = workdir / "uplink-250.yaml"
    telemetry.write_text(yaml.safe_dump({"links": [
        {"site": SITE, "pool": pool, "bandwidthKBps": 250, "rttMs": 25} for pool in ("gpu-cloud-eu", FALLBACK)]}))
    rendered = subprocess.run([str(Path(sys.executable).parent / "hetplace"), "render", "-f",
                               str(FACTORY / "workload.yaml"), "--pools", str(pools), "--telemetry", str(telemetry)],
                              check=True, capture_output=True, text=True).stdout
    configmap = next(o for o in yaml.safe_load_all(rendered) if o["kind"] == "ConfigMap")
    path = workdir / "routes.yaml"
    path.write_text(yaml.safe_dump(configmap))
    return path


def main() -> int:
    console = Console()
    with tempfile.TemporaryDirectory(prefix="hetplace-demo-") as tmp:
        workdir = Path(tmp)
        console.print("starting two MLServer processes as the pools' Triton ...")
        pools = start_pools([PRIMARY, FALLBACK], workdir / "servers")
        gateway = None
        try:
            by_name = {p.name: p for p in pools}
            routes = routes_file(workdir, {p.name: (p.http, p.grpc) for p in pools})
            document = json.loads(yaml.safe_load(routes.read_text())["data"]["routes.json"])
            console.print(f"routes for {SITE}: " + " -> ".join(
                f"{r['pool']} ({r['encoding']}, {'within' if r['withinSlo'] else 'over'} SLO)"
                for r in document["sites"][SITE]))
            http_port, metrics_port = free_ports(2)
            log = (workdir / "gateway.log").open("w")
            gateway = subprocess.Popen(
                [str(Path(sys.executable).parent / "hetplace"), "gateway", "--site", SITE, "--routes", str(routes),
                 "--listen", "127.0.0.1", "--http-port", str(http_port), "--grpc-port", "0",
                 "--metrics-port", str(metrics_port)], stdout=log, stderr=subprocess.STDOUT)
            wait_for(lambda: _ready(http_port), 30, "the gateway to be ready")
            seconds = run_load(http_port, by_name[PRIMARY])
            failovers = _metric(metrics_port, "hetplace_gateway_failovers_total")
        finally:
            if gateway is not None and gateway.poll() is None:
                gateway.send_signal(signal.SIGTERM)
                gateway.wait(timeout=20)
            for pool in pools:
                pool.stop()

    table = Table(title=f"{RATE} requests/s from {SITE} through hetplace gateway; {PRIMARY} killed at "
                        f"t={KILL_AT:g} s")
    for column in ("second", "requests", f"answered by {PRIMARY}", f"answered by {FALLBACK}", "lost"):
        table.add_column(column, justify="right")
    for second in sorted(seconds):
        c = seconds[second]
        table.add_row(f"{second}-{second + 1}", str(sum(c.values())), str(c[PRIMARY]), str(c[FALLBACK]), str(c["lost"]))
    console.print(table)
    sent = sum(sum(c.values()) for c in seconds.values())
    lost = sum(c["lost"] for c in seconds.values())
    console.print(f"{sent} requests, {lost} lost by the clients; the gateway failed over {failovers:g} time(s) "
                  f"(hetplace_gateway_failovers_total)")
    return 0 if lost <= 1 else 1


def run_load(http_port: int, primary) -> dict[int, Counter]:
    """RATE requests/s, each sent on its own schedule (open loop), for SECONDS; the primary killed at
    KILL_AT. The body is the one tritonclient builds; the answer's hetplace-route header names the pool."""
    tensor = triton_http.InferInput("scores", [256], "FP32")
    tensor.set_data_from_numpy(np.ones(256, dtype=np.float32), binary_data=False)   # MLServer reads JSON tensors
    body, _ = triton_http.InferenceServerClient.generate_request_body([tensor])
    local = threading.local()

    def send(_: int) -> str:
        if not hasattr(local, "connection"):
            local.connection = http.client.HTTPConnection("127.0.0.1", http_port, timeout=10)
        try:
            local.connection.request("POST", f"/v2/models/{MODEL}/infer", body=body,
                                     headers={"Content-Type": "application/json"})
            answer = local.connection.getresponse()
            answer.read()
            return answer.getheader(HEADER, "?").split("/")[0] if answer.status == 200 else "lost"
        except (OSError, http.client.HTTPException):
            local.connection.close()
            del local.connection
            return "lost"

    start = time.monotonic()
    killer = threading.Timer(KILL_AT, primary.kill)
    killer.start()
    with ThreadPoolExecutor(max_workers=16) as pool:
        pending = []
        for i in range(RATE * SECONDS):
            time.sleep(max(0.0, start + i / RATE - time.monotonic()))
            pending.append((i // RATE, pool.submit(send, i)))
        seconds: dict[int, Counter] = {}
        for second, future in pending:
            seconds.setdefault(second, Counter())[future.result()] += 1
    killer.cancel()
    return seconds


def _ready(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/health/ready", timeout=1) as r:
            return r.status == 200
    except OSError:
        return False


def _metric(port: int, name: str) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        return sum(float(line.rsplit(" ", 1)[1]) for line in r.read().decode().splitlines()
                   if line.startswith(name + "{") or line.startswith(name + " "))


if __name__ == "__main__":
    sys.exit(main())
