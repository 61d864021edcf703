"""The network lab (tests/netlab.py, docs/design.md §8): its address plan and tbf parameters, then a real
lab — one site, one pool, a 250 KB/s link — carrying real bytes at the shaped rate, following a rate
change, reaching nothing outside itself, serving MLServer and the gateway, and leaving nothing behind."""

from __future__ import annotations

import http.client
import ipaddress
import json
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import yaml
from netlab import (LAB_RANGE, Lab, Tbf, check_prerequisites, lab_slice, link_addresses, namespace_pids,
                    namespaces, node_address)

KB = 1000
SITE, POOL = "factory", "cloud"
TRAFFIC_PORT = 9999
# A server of bytes: GET /bytes/N sends N bytes, POST reads the body and answers with its length.
TRAFFIC_SERVER = """
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

class Bytes(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_GET(self):
        size = int(self.path.rsplit("/", 1)[1])
        self.send_response(200); self.send_header("Content-Length", str(size)); self.end_headers()
        chunk = bytes(16384)
        while size > 0:
            self.wfile.write(chunk[:size]); size -= len(chunk)
    def do_POST(self):
        left, seen = int(self.headers["Content-Length"]), 0
        while left > 0:
            got = len(self.rfile.read(min(left, 65536))); left -= got; seen += got
        body = str(seen).encode()
        self.send_response(200); self.send_header("Content-Length", str(len(body))); self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass

ThreadingHTTPServer((sys.argv[1], int(sys.argv[2])), Bytes).serve_forever()
"""


# --- pure parts -------------------------------------------------------------------------------------

@pytest.mark.unit
@pytest.mark.parametrize("lab_id", ["0000", "00ff", "abcd", "ffff"])
def test_each_lab_numbers_its_nodes_and_links_inside_its_own_slice_of_198_18_0_0_15(lab_id) -> None:
    lab_net = lab_slice(lab_id)
    assert lab_net.prefixlen == 23 and lab_net.subnet_of(LAB_RANGE)
    nodes = [node_address(lab_net, i) for i in range(254)]
    links = [a for i in range(128) for a in link_addresses(lab_net, i)]
    assert len(set(nodes + links)) == 254 + 256 and all(a in lab_net for a in nodes + links)
    assert all(ipaddress.IPv4Network(f"{a}/31", strict=False).network_address == a for a in links[::2])


@pytest.mark.unit
def test_the_256_slices_tile_the_lab_range_without_overlap() -> None:
    slices = {lab_slice(f"{i:04x}") for i in range(256)}
    assert len(slices) == 256 and sum(s.num_addresses for s in slices) == LAB_RANGE.num_addresses


@pytest.mark.unit
@pytest.mark.parametrize("bad", [-1, 254])
def test_a_node_index_past_the_slice_is_refused(bad) -> None:
    with pytest.raises(ValueError, match="254 nodes"):
        node_address(lab_slice("0001"), bad)


@pytest.mark.unit
@pytest.mark.parametrize("rate_kbps, bits, burst, latency_ms", [
    (100, "800000bit", 3028, 122),        # two full frames; eight frames' time of queue
    (250, "2000000bit", 3028, 50),
    (1000, "8000000bit", 10000, 50),      # 10 ms of the rate
    (5000, "40000000bit", 50000, 50),
], ids=["100 KB/s keeps a two-frame bucket and a deeper queue", "250 KB/s", "1000 KB/s: ten ms of bucket",
        "5000 KB/s: fifty KB of bucket"])
def test_tbf_parameters_follow_the_rate(rate_kbps, bits, burst, latency_ms) -> None:
    assert Tbf(rate_kbps).tc_args() == ["tbf", "rate", bits, "burst", str(burst), "latency", f"{latency_ms}ms"]


@pytest.mark.unit
def test_a_rate_out_of_range_is_refused_with_the_limit() -> None:
    with pytest.raises(ValueError, match="1 to 1,000,000 KB/s, not 0"):
        Tbf(0)


# --- a real lab --------------------------------------------------------------------------------------

def download(address: str, size: int, progress: list[tuple[float, int]] | None = None) -> float:
    """GET `size` bytes; KB/s from the first byte to the last. `progress` collects (time, bytes so far)."""
    connection = http.client.HTTPConnection(address, TRAFFIC_PORT, timeout=30)
    try:
        connection.request("GET", f"/bytes/{size}")
        response = connection.getresponse()
        got, first = 0, None
        while chunk := response.read(8192):
            now = time.monotonic()
            first = first or now
            got += len(chunk)
            if progress is not None:
                progress.append((now, got))
        assert got == size
        return size / KB / (now - first)
    finally:
        connection.close()


def upload(address: str, size: int) -> float:
    """POST `size` bytes; KB/s from the request to the server's answer that it read them all."""
    connection = http.client.HTTPConnection(address, TRAFFIC_PORT, timeout=30)
    try:
        start = time.monotonic()
        connection.request("POST", "/", body=bytes(size), headers={"Content-Length": str(size)})
        assert int(connection.getresponse().read()) == size
        return size / KB / (time.monotonic() - start)
    finally:
        connection.close()


def answers(address: str, port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex((address, port)) == 0


def rate_between(progress: list[tuple[float, int]], start: float, end: float) -> float:
    inside = [(t, n) for t, n in progress if start <= t <= end]
    (t0, n0), (t1, n1) = inside[0], inside[-1]
    return (n1 - n0) / KB / (t1 - t0)


@pytest.mark.integration
def test_a_lab_carries_bytes_at_the_shaped_rate_follows_a_change_reaches_nothing_outside_and_cleans_up(tmp_path) -> None:
    host_listener = socket.create_server(("127.0.0.1", 0))      # a service of the host the lab must not reach
    host_port = host_listener.getsockname()[1]
    with Lab(tmp_path) as lab:
        lab.add_site(SITE)
        pool_address = lab.add_pool(POOL)
        lab.add_link(SITE, POOL, up_kbps=250, down_kbps=250)
        assert lab.rates_kbps(SITE, POOL) == (250, 250)
        server = lab.run(POOL, [sys.executable, "-c", TRAFFIC_SERVER, pool_address, str(TRAFFIC_PORT)],
                         log=tmp_path / "traffic.log")
        lab.wait_for(SITE, lambda: answers(pool_address, TRAFFIC_PORT), 10, "the byte server")

        down = lab.call(SITE, download, pool_address, 500 * KB)
        up = lab.call(SITE, upload, pool_address, 500 * KB)

        # the downlink goes to 1000 KB/s in the middle of a download; the uplink stays at 250
        progress: list[tuple[float, int]] = []
        with ThreadPoolExecutor(1) as pool:
            running = pool.submit(lab.call, SITE, download, pool_address, 2000 * KB, progress)
            deadline = time.monotonic() + 10
            while (progress[-1][1] if progress else 0) < 300 * KB and time.monotonic() < deadline:
                time.sleep(0.05)
            changed_at = time.monotonic()
            lab.set_rate(SITE, POOL, down_kbps=1000)
            running.result(timeout=30)
        before = rate_between(progress, progress[0][0], changed_at)
        after = rate_between(progress, changed_at + 0.3, progress[-1][0])
        assert lab.rates_kbps(SITE, POOL) == (250, 1000)
        up_after = lab.call(SITE, upload, pool_address, 500 * KB)
        print(f"measured KB/s: down {down:.0f}, up {up:.0f} at 250; before the change {before:.0f}, "
              f"after it {after:.0f}; up after {up_after:.0f}")
        for measured, shaped in ((down, 250), (up, 250), (before, 250), (after, 1000), (up_after, 250)):
            assert abs(measured - shaped) <= 0.15 * shaped, f"{measured:.0f} KB/s measured on a {shaped} KB/s link"

        # nothing outside: no route but the lab's, and the host's loopback service is out of reach
        routes = subprocess.run(["ip", "-n", lab.namespace(SITE), "-4", "-j", "route", "show"],
                                capture_output=True, text=True, check=True).stdout
        assert all(r["dst"] != "default" and ipaddress.IPv4Network(r["dst"]).subnet_of(LAB_RANGE)
                   for r in json.loads(routes))
        assert lab.call(SITE, answers, "127.0.0.1", host_port) is False     # the namespace's own loopback
        host_listener.setblocking(False)
        with pytest.raises(BlockingIOError):
            host_listener.accept()
        site_namespace, pool_namespace = lab.namespace(SITE), lab.namespace(POOL)
        lab_id = lab.id
    host_listener.close()

    assert server.poll() is not None
    assert not [n for n in namespaces() if n.startswith(f"hpl-{lab_id}-")]
    assert namespace_pids(site_namespace) == namespace_pids(pool_namespace) == []


@pytest.mark.integration
def test_a_lab_is_removed_when_the_test_fails_inside_it(tmp_path) -> None:
    with pytest.raises(RuntimeError, match="a failing test"):
        with Lab(tmp_path) as lab:
            lab.add_site(SITE)
            lab.add_pool(POOL)
            lab.add_link(SITE, POOL, up_kbps=100)
            sleeper = lab.run(POOL, ["sleep", "300"], log=tmp_path / "sleep.log")
            lab_id = lab.id
            raise RuntimeError("a failing test")
    assert sleeper.poll() is not None
    assert not [n for n in namespaces() if n.startswith(f"hpl-{lab_id}-")]


def lab_in_another_process(tmp_path: Path) -> subprocess.Popen:
    """A process holding a lab with a sleeper in its pool; it prints "LAB_ID SLEEPER_PID" once ready."""
    script = tmp_path / "held.py"
    script.write_text(
        f"import sys, time\nsys.path.insert(0, {str(Path(__file__).parent)!r})\nfrom netlab import Lab\n"
        f"with Lab({str(tmp_path)!r}) as lab:\n"
        f"    lab.add_site('s'); lab.add_pool('p'); lab.add_link('s', 'p', up_kbps=100)\n"
        f"    sleeper = lab.run('p', ['sleep', '300'], log=lab.home / 'sleep.log')\n"
        f"    print(lab.id, sleeper.pid, flush=True)\n"
        f"    time.sleep(300)\n")
    return subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.mark.integration
def test_a_process_killed_by_sigterm_leaves_no_lab_behind(tmp_path) -> None:
    """SIGTERM becomes KeyboardInterrupt inside the lab, so the context still unwinds."""
    held = lab_in_another_process(tmp_path)
    lab_id = (held.stdout.readline().split() or [""])[0]
    assert lab_id, held.stderr.read()
    assert [n for n in namespaces() if n.startswith(f"hpl-{lab_id}-")]
    held.terminate()
    held.wait(timeout=30)
    assert not [n for n in namespaces() if n.startswith(f"hpl-{lab_id}-")]


@pytest.mark.integration
def test_what_a_sigkilled_lab_left_is_removed_by_cleanup(tmp_path) -> None:
    killed = lab_in_another_process(tmp_path)
    lab_id, sleeper_pid = (killed.stdout.readline().split() or [None, None])
    assert lab_id, killed.stderr.read()
    killed.kill()
    killed.wait(timeout=10)
    left = sorted(n for n in namespaces() if n.startswith(f"hpl-{lab_id}-"))
    assert left == [f"hpl-{lab_id}-p", f"hpl-{lab_id}-s"]       # SIGKILL: nothing could clean up

    cleanup = subprocess.run([sys.executable, str(Path(__file__).parent / "netlab.py"), "cleanup"],
                             capture_output=True, text=True, timeout=60)
    assert cleanup.returncode == 0, cleanup.stderr
    assert set(left) <= set(cleanup.stdout.split())
    assert not [n for n in namespaces() if n.startswith(f"hpl-{lab_id}-")]
    assert not Path(f"/proc/{sleeper_pid}").exists() or "Z" in Path(f"/proc/{sleeper_pid}/stat").read_text().split()[2]


@pytest.mark.integration
def test_without_root_the_lab_says_what_it_needs(tmp_path) -> None:
    check_prerequisites()       # as root, here: nothing missing
    refused = subprocess.run(
        ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", sys.executable, "-c",
         f"import sys; sys.path.insert(0, {str(Path(__file__).parent)!r}); import netlab; netlab.check_prerequisites()"],
        capture_output=True, text=True, timeout=30)
    assert refused.returncode != 0
    assert "PermissionError: the network lab (docs/design.md §8) needs root" in refused.stderr


def routes_file(path: Path, site: str, pool) -> None:
    document = {"version": 2, "workload": "factory/defect-detector", "generation": 1,
                "decidedAt": "2026-12-07T22:00:00Z", "model": "defect-detector", "sloLatencyMs": 150,
                "sites": {site: [{"pool": pool.name, "variant": "onnx", "encoding": "raw", "model": "defect-detector",
                                  "http": pool.http, "grpc": pool.grpc, "predictedLatencyMs": 20.0,
                                  "withinSlo": True, "decided": True}]}}
    path.write_text(yaml.safe_dump({"apiVersion": "v1", "kind": "ConfigMap",
                                    "metadata": {"name": "defect-detector-routes", "namespace": "factory"},
                                    "data": {"routes.json": json.dumps(document)}}))


def infer(url_host: str, port: int, values: list[float]) -> tuple[int, dict]:
    body = json.dumps({"inputs": [{"name": "scores", "shape": [len(values)], "datatype": "FP32", "data": values}]})
    connection = http.client.HTTPConnection(url_host, port, timeout=10)
    try:
        connection.request("POST", "/v2/models/defect-detector/infer", body=body,
                           headers={"Content-Type": "application/json"})
        response = connection.getresponse()
        return response.status, json.loads(response.read())
    finally:
        connection.close()


def ready_status(address: str, port: int) -> int:
    connection = http.client.HTTPConnection(address, port, timeout=5)
    try:
        connection.request("GET", "/v2/health/ready")
        return connection.getresponse().status
    finally:
        connection.close()


@pytest.mark.integration
def test_mlserver_in_a_pool_and_the_gateway_at_the_site_serve_an_inference_over_the_shaped_link(tmp_path) -> None:
    with Lab(tmp_path) as lab:
        site_address = lab.add_site(SITE)
        pool_address = lab.add_pool(POOL)
        lab.add_link(SITE, POOL, up_kbps=250, down_kbps=250)
        pool = lab.start_mlserver(POOL)
        assert pool.http == f"http://{pool_address}:8000"
        assert lab.call(SITE, ready_status, pool_address, 8000) == 200

        routes = tmp_path / "routes.yaml"
        routes_file(routes, SITE, pool)
        gateway = lab.start_gateway(SITE, "--routes", str(routes))
        assert gateway.http == f"{site_address}:8000"
        status, answer = lab.call(SITE, infer, site_address, 8000, [1.0, 2.0, 3.5])
        assert status == 200, answer
        assert answer["outputs"][0]["data"] == [6.5]

        lab.stop_servers(POOL)
        assert pool.process.poll() is not None and namespace_pids(lab.namespace(POOL)) == []
        status, answer = lab.call(SITE, infer, site_address, 8000, [1.0])
        assert status in (502, 503), answer
