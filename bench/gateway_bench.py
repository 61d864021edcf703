"""What `hetplace gateway` adds to a request, how it fails over, and what it holds in memory: the
gateway (a subprocess, as a site runs it) in front of two MLServer processes standing in for two
pools' Triton (tests/mlserver_pools.py), on loopback.

overhead: the same client sends the same tritonclient request bodies (1 KB, 33 KB, 224 KB of JSON
  FP32 `scores`) straight to the primary MLServer ("direct") and through the gateway, whose decided
  route is that MLServer. Open loop: request i of a block leaves at start + i / rate whether or not
  the ones before it were answered (a slow answer does not hold the next request back), and its
  latency runs from that scheduled moment to the last byte of the answer, so a stall of the client
  or the server counts in full rather than thinning the samples (no coordinated omission). Blocks of
  `block_s` alternate direct and gateway in ABBA order, round after round, so the machine's noise
  falls on both alike; between blocks the requests in flight are awaited. Beside the latencies, the
  CPU seconds the gateway and the MLServer spent per request in their blocks (from /proc), which a
  noisy neighbour barely moves.
failover: the same client at `failover_rate` through the gateway (1 KB bodies); the primary MLServer
  is SIGKILLed mid-run; every request sent and every error the client saw are counted.
  failoverSeconds: from the kill to the receipt of the first answer the fallback served (its
  `hetplace-route` header) after which no request failed — how long the site was not served.
rssMb: the gateway's VmRSS (/proc/<pid>/status) after both, before it is stopped.
"""

from __future__ import annotations

import asyncio
import gc
import json
import os
import signal
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import aiohttp
import numpy as np
import tritonclient.http as triton_http
from mlserver_pools import Pool, start_pools
from servers import GatewayProcess, start_gateway

SITE = "bench-site"
MODEL = "defect-detector"
ROUTE_HEADER = "hetplace-route"
HEADERS = {"Content-Type": "application/json"}     # as tritonclient.http sends a JSON body
CLK_TCK = os.sysconf("SC_CLK_TCK")
SIZES_BYTES = (1024, 33 * 1024, 224 * 1024)
GOALS = {"gatewayP99AddedMs": 2.0, "gatewayP50AddedMs": 0.5, "failoverClientErrors": 1, "rssMb": 80}


@dataclass(frozen=True)
class GatewaySetup:
    rate_per_s: int          # paced requests per second in an overhead block
    block_s: float           # one block: one path, one size
    rounds: int              # ABBA rounds of (direct, gateway) per size
    failover_rate_per_s: int
    before_kill_s: float
    after_kill_s: float


SMOKE = GatewaySetup(rate_per_s=50, block_s=0.4, rounds=1, failover_rate_per_s=50, before_kill_s=1.0, after_kill_s=2.0)
FULL = GatewaySetup(rate_per_s=200, block_s=0.5, rounds=24, failover_rate_per_s=100, before_kill_s=5.0,
                    after_kill_s=10.0)


# --- what is sent ----------------------------------------------------------------------------------

def request_body(size_bytes: int) -> bytes:
    """A tritonclient JSON inference body (FP32 `scores`, random values in [0, 1)) of about `size_bytes`
    (MLServer reads JSON tensors only)."""
    rng = np.random.default_rng(size_bytes)

    def body(n: int) -> bytes:
        tensor = triton_http.InferInput("scores", [n], "FP32")
        tensor.set_data_from_numpy(rng.random(n, dtype=np.float32), binary_data=False)
        built, json_length = triton_http.InferenceServerClient.generate_request_body([tensor])
        assert json_length is None
        return built

    n = max(1, size_bytes // 20)
    for _ in range(4):      # the length of a value's text varies a little: converge on the size
        n = max(1, round(n * size_bytes / len(body(n))))
    return body(n)


def routes_file(path: Path, primary: Pool, fallback: Pool) -> None:
    """The routes ConfigMap the operator would write: decided on the primary, the fallback next."""
    def route(pool: Pool, decided: bool) -> dict:
        return {"pool": pool.name, "variant": "onnx", "encoding": "raw", "model": MODEL, "http": pool.http,
                "grpc": pool.grpc, "predictedLatencyMs": 20.0, "withinSlo": True, "decided": decided}

    document = {"version": 2, "workload": "bench/defect-detector", "generation": 1, "decidedAt": "2026-12-07T22:00:00Z",
                "model": MODEL, "sloLatencyMs": 150, "sites": {SITE: [route(primary, True), route(fallback, False)]}}
    path.write_text(json.dumps({"apiVersion": "v1", "kind": "ConfigMap",
                                "metadata": {"name": "defect-detector-routes", "namespace": "bench",
                                             "labels": {"app.kubernetes.io/managed-by": "hetplace"}},
                                "data": {"routes.json": json.dumps(document)}}))


def cpu_s(pid: int) -> float:
    """utime + stime of a process, in seconds (fields 14 and 15 of /proc/<pid>/stat)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def cpu_pressure_s() -> float | None:
    """Seconds some runnable task of this machine waited for a CPU (/proc/pressure/cpu, "some" total), or
    None where the kernel does not say."""
    try:
        with open("/proc/pressure/cpu") as f:
            return int(f.readline().rsplit("total=", 1)[1]) / 1e6
    except (OSError, IndexError, ValueError):
        return None


def memory_mb(pid: int) -> dict[str, float]:
    found = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                found[key] = int(value.split()[0]) / 1024
    return found


# --- the client ----------------------------------------------------------------------------------

@dataclass
class Outcome:
    scheduled: float          # monotonic seconds the request was due to leave
    sent: float               # when the client got to it
    done: float = 0.0         # when its answer was read in full (or it failed)
    route: str | None = None  # the gateway's hetplace-route header
    error: str | None = None


@dataclass
class Client:
    """One aiohttp session posting tritonclient bodies as tritonclient.http.aio does (auto_decompress off,
    pooled keep-alive connections) and reading answers with tritonclient's InferResult."""

    session: aiohttp.ClientSession
    expected: dict[bytes, float] = field(default_factory=dict)   # body -> the model's answer (the sum)

    async def infer(self, base_url: str, body: bytes, outcome: Outcome) -> None:
        try:
            async with self.session.post(f"{base_url}/v2/models/{MODEL}/infer", data=body, headers=HEADERS) as response:
                payload = await response.read()
                outcome.route = response.headers.get(ROUTE_HEADER)
                if response.status != 200:
                    outcome.error = f"HTTP {response.status}: {payload[:200]!r}"
                else:
                    result = triton_http.InferResult.from_response_body(
                        payload, header_length=response.headers.get("Inference-Header-Content-Length"))
                    total = float(result.as_numpy("total")[0])
                    if abs(total - self.expected[body]) > 1e-3 * max(1.0, abs(self.expected[body])):
                        outcome.error = f"wrong answer {total}"
        except (aiohttp.ClientError, OSError, asyncio.TimeoutError) as e:
            outcome.error = f"{type(e).__name__}: {e}"
        outcome.done = time.monotonic()


async def paced(client: Client, base_url: str, body: bytes, rate_per_s: float, seconds: float,
                at: dict[float, Callable[[], None]] | None = None) -> list[Outcome]:
    """Open loop: request i leaves at start + i / rate_per_s, however many are still in flight; `at`
    runs a callable at an offset (seconds) into the block. Returns when every request has ended."""
    loop = asyncio.get_running_loop()
    count = int(round(rate_per_s * seconds))
    start = time.monotonic() + 0.01
    pending = sorted((at or {}).items())
    outcomes: list[Outcome] = []
    tasks = []
    for i in range(count):
        due = start + i / rate_per_s
        while pending and pending[0][0] + start <= due:
            offset, action = pending.pop(0)
            delay = start + offset - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            action()
        delay = due - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        outcome = Outcome(scheduled=due, sent=time.monotonic())
        outcomes.append(outcome)
        tasks.append(loop.create_task(client.infer(base_url, body, outcome)))
    await asyncio.gather(*tasks)
    return outcomes


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]


# --- the measurements ------------------------------------------------------------------------------

async def overhead(client: Client, setup: GatewaySetup, direct: Pool, gateway: GatewayProcess) -> list[dict]:
    bodies = {size: request_body(size) for size in SIZES_BYTES}
    paths = {"direct": (direct.http, direct.process.pid), "gateway": (gateway.url, gateway.process.pid)}
    # warm both paths (connections, the gateway's pool, MLServer's first requests): not counted
    for body in bodies.values():
        for url, _ in paths.values():
            await paced(client, url, body, setup.rate_per_s, min(setup.block_s, 0.5))
    samples = {(size, path): [] for size in SIZES_BYTES for path in paths}
    lags = {key: [] for key in samples}
    errors = {key: 0 for key in samples}
    cpu = {(size, path, who): 0.0 for size in SIZES_BYTES for path in paths for who in ("gateway", "mlserver")}
    for r in range(setup.rounds):
        for s, size in enumerate(SIZES_BYTES):
            order = ("direct", "gateway") if (r + s) % 2 == 0 else ("gateway", "direct")
            for path in order:
                url, _ = paths[path]
                before = cpu_s(gateway.process.pid), cpu_s(direct.process.pid)
                outcomes = await paced(client, url, bodies[size], setup.rate_per_s, setup.block_s)
                after = cpu_s(gateway.process.pid), cpu_s(direct.process.pid)
                cpu[size, path, "gateway"] += after[0] - before[0]
                cpu[size, path, "mlserver"] += after[1] - before[1]
                for o in outcomes:
                    if o.error is None:
                        samples[size, path].append((o.done - o.scheduled) * 1000)
                    else:
                        errors[size, path] += 1
                    lags[size, path].append((o.sent - o.scheduled) * 1000)
    rows = []
    for size in SIZES_BYTES:
        row = {"requestBytes": len(bodies[size]), "rps": setup.rate_per_s}
        for path in paths:
            ms = samples[size, path]
            row[f"{path}P50Ms"] = round(percentile(ms, 50), 3)
            row[f"{path}P99Ms"] = round(percentile(ms, 99), 3)
        row["addedP50Ms"] = round(row["gatewayP50Ms"] - row["directP50Ms"], 3)
        row["addedP99Ms"] = round(row["gatewayP99Ms"] - row["directP99Ms"], 3)
        row["p50Ratio"] = round(row["gatewayP50Ms"] / row["directP50Ms"], 3)
        row["p99Ratio"] = round(row["gatewayP99Ms"] / row["directP99Ms"], 3)
        for path in paths:
            ms = samples[size, path]
            n = len(ms) + errors[size, path]
            row[f"{path}MaxMs"] = round(max(ms), 3)
            row[f"{path}Samples"] = len(ms)
            row[f"{path}Errors"] = errors[size, path]
            row[f"{path}SendLagP99Ms"] = round(percentile(lags[size, path], 99), 3)
            row[f"{path}MlserverCpuMsPerRequest"] = round(cpu[size, path, "mlserver"] / n * 1000, 3)
        row["gatewayCpuMsPerRequest"] = round(
            (cpu[size, "gateway", "gateway"] - cpu[size, "direct", "gateway"]) / (len(samples[size, "gateway"])
                                                                                 + errors[size, "gateway"]) * 1000, 3)
        rows.append(row)
    return rows


async def failover(client: Client, setup: GatewaySetup, primary: Pool, fallback: Pool,
                   gateway: GatewayProcess) -> dict:
    body = request_body(SIZES_BYTES[0])
    killed: list[float] = []

    def kill() -> None:
        killed.append(time.monotonic())
        primary.process.send_signal(signal.SIGKILL)

    outcomes = await paced(client, gateway.url, body, setup.failover_rate_per_s,
                           setup.before_kill_s + setup.after_kill_s, at={setup.before_kill_s: kill})
    primary.process.wait(timeout=10)
    fallback_route = f"{fallback.name}/onnx"
    kill_at = killed[0]
    last_error = max((o.done for o in outcomes if o.error is not None), default=kill_at)
    served_after = [o.done for o in outcomes if o.error is None and o.route == fallback_route and o.done >= last_error
                    and o.done >= kill_at]
    errors = [o.error for o in outcomes if o.error is not None]
    in_flight = sum(1 for o in outcomes if o.sent <= kill_at < o.done)
    after_kill = [(o.done - o.scheduled) * 1000 for o in outcomes if o.done >= kill_at and o.error is None]
    return {"requests": len(outcomes), "clientErrors": len(errors),
            "failoverSeconds": round(min(served_after) - kill_at, 4) if served_after else None,
            "rps": setup.failover_rate_per_s, "requestBytes": len(body), "inFlightAtKill": in_flight,
            "servedByPrimary": sum(1 for o in outcomes if o.route == f"{primary.name}/onnx" and o.error is None),
            "servedByFallback": sum(1 for o in outcomes if o.route == fallback_route and o.error is None),
            "maxLatencyAfterKillMs": round(max(after_kill), 3) if after_kill else None,
            "p50LatencyAfterKillMs": round(percentile(after_kill, 50), 3) if after_kill else None,
            "errors": errors[:5]}


async def measure(setup: GatewaySetup, primary: Pool, fallback: Pool, gateway: GatewayProcess) -> dict:
    gc.collect()
    gc.freeze()     # the client's own full collections would stall both paths' requests: noise, not signal
    # the client's own pool is unlimited: an open loop must never queue in the client
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0), auto_decompress=False,
                                     timeout=aiohttp.ClientTimeout(total=30)) as session:
        client = Client(session)
        for size in SIZES_BYTES:
            body = request_body(size)
            values = json.loads(body)["inputs"][0]["data"]
            client.expected[body] = float(np.asarray(values, dtype=np.float32).sum())
        rows = await overhead(client, setup, primary, gateway)
        return {"overhead": rows, "failover": await failover(client, setup, primary, fallback, gateway)}


def gateway_bench(setup: GatewaySetup) -> dict:
    load_before = os.getloadavg()
    pressure_before, wall_before = cpu_pressure_s(), time.monotonic()
    with tempfile.TemporaryDirectory(prefix="hetplace-gateway-bench-") as tmp:
        home = Path(tmp)
        primary, fallback = start_pools(["primary", "fallback"], home / "pools")
        gateway = None
        try:
            routes = home / "routes.json"
            routes_file(routes, primary, fallback)
            gateway = start_gateway(SITE, home, "--routes", str(routes), quick=False)
            result = asyncio.run(measure(setup, primary, fallback, gateway))
            memory = memory_mb(gateway.process.pid)
            result["rssMb"] = round(memory["VmRSS"], 1)
            result["peakRssMb"] = round(memory["VmHWM"], 1)
            result["gatewayCpuSeconds"] = round(cpu_s(gateway.process.pid), 2)
        finally:
            if gateway is not None:
                gateway.stop()
            primary.stop()
            fallback.stop()
    rows = result["overhead"]
    result.update(
        name="gateway",
        goal="gateway adds <= 2 ms at p99 (aim <= 0.5 ms at p50); failover at 100 req/s loses <= 1 request; RSS <= 80 MB",
        goalsMet={"addedP99": all(r["addedP99Ms"] <= GOALS["gatewayP99AddedMs"] for r in rows),
                  "addedP50": all(r["addedP50Ms"] <= GOALS["gatewayP50AddedMs"] for r in rows),
                  "failover": result["failover"]["clientErrors"] <= GOALS["failoverClientErrors"],
                  "rss": result["rssMb"] <= GOALS["rssMb"]},
        setup={"ratePerS": setup.rate_per_s, "blockS": setup.block_s, "rounds": setup.rounds,
               "failoverRatePerS": setup.failover_rate_per_s, "beforeKillS": setup.before_kill_s,
               "afterKillS": setup.after_kill_s},
        loadAverage={"before": [round(x, 2) for x in load_before], "after": [round(x, 2) for x in os.getloadavg()]})
    pressure_after = cpu_pressure_s()
    if pressure_before is not None and pressure_after is not None:   # 0.3: runnable tasks waited 30% of the time
        result["cpuPressureShare"] = round((pressure_after - pressure_before) / (time.monotonic() - wall_before), 3)
    return result
