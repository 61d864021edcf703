"""How well the gateway measures its link: `hetplace_link_bandwidth_bytes` and `hetplace_link_rtt_seconds`
against the rate `tc tbf` shapes the link to, and the share of the link its probes took, on the network
lab (tests/netlab.py).

One site and one pool joined by one link, shaped to the same rate both ways (the uplink carries a
request's body, the downlink its answer and a probe's echo: a probe pair measures the two in series, so
shaping both alike is what makes its figure the link's rate). MLServer in the pool serves a profiled
model (a constant 5 ms of service, a 1,000-byte answer, tests/mlserver/profiled/); the gateway runs in
the site's namespace with a routes file pointing at the pool's lab address, probing every second and
treating a link as idle after `--link-idle-seconds 2` (30 s by default; shortened so a run takes
seconds). Each run starts a fresh gateway, so no figure carries over from the run before.

* without traffic: nothing but the gateway's probes.
* with traffic, varied sizes: a client in the site's namespace sends, through the gateway, the bodies
  tritonclient builds for one BYTES tensor (an encoded image: base64 text, which MLServer parses at
  memory speed) of four sizes, each 25, 50, 75 or 100 ms of the link, paced at 30% of the link on
  average, over one kept-alive connection; the passive fit works from their spread.
* with traffic, one size (`requestSizes: fixed`): the same at one size (50 ms of the link): the fit
  cannot separate transfer time from the fixed part, so the figure comes from probes sent between
  the requests.

The measuring window runs from the gateway's start for `window_s`; the figure is read from the
gateway's /metrics (on the site's address, from inside its namespace) at the window's end, waiting at
most `grace_s` more for a first figure. measuredKBps: that figure / 1000 (KB = 1,000 bytes, as the
lab's rates); probeShare: the increase of `hetplace_gateway_probe_bytes_total{pool}` over the window /
(shaped bytes per second x the window's seconds).
"""

from __future__ import annotations

import base64
import http.client
import json
import os
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tritonclient.http as triton_http
from mlserver_profiles import profiled_repository
from netlab import Lab

SITE = "site"
POOL = "pool"
MODEL = "defect-detector"
SERVICE_MS = 5.0
RESPONSE_BYTES = 1000
LOAD_SHARE = 0.30                            # of the link, on average, the client's bodies take
VARIED_TRANSFER_S = (0.025, 0.050, 0.075, 0.100)   # a body's time on the link, one per size
FIXED_TRANSFER_S = (0.050,)
GOALS = {"withinRatio": 0.20, "probeShareMax": 0.05}


@dataclass(frozen=True)
class NetlabSetup:
    rates_kbps: tuple[float, ...]
    window_s: float          # gateway start to reading the figure
    grace_s: float           # at most this much longer for a first figure
    fixed_size: bool         # also the run with traffic of one size (the probe path under traffic)
    link_idle_s: float = 2.0


SMOKE = NetlabSetup(rates_kbps=(1000,), window_s=10.0, grace_s=10.0, fixed_size=False)
FULL = NetlabSetup(rates_kbps=(100, 250, 1000, 5000), window_s=30.0, grace_s=20.0, fixed_size=True)


def request_body(size_bytes: int) -> bytes:
    """The JSON body tritonclient builds for one BYTES tensor `image` of about `size_bytes` (base64 of
    random bytes, as an encoded image is sent in JSON)."""
    rng = np.random.default_rng(size_bytes)

    def body(raw_len: int) -> bytes:
        text = base64.b64encode(rng.bytes(raw_len))
        tensor = triton_http.InferInput("image", [1], "BYTES")
        tensor.set_data_from_numpy(np.array([text], dtype=object), binary_data=False)
        built, json_length = triton_http.InferenceServerClient.generate_request_body([tensor])
        assert json_length is None
        return built

    overhead = len(body(3))
    return body(max(3, (size_bytes - overhead) * 3 // 4))


def routes_file(path: Path, pool) -> None:
    document = {"version": 2, "workload": "bench/defect-detector", "generation": 1,
                "decidedAt": "2026-12-07T22:00:00Z", "model": MODEL, "sloLatencyMs": 1000,
                "sites": {SITE: [{"pool": pool.name, "variant": "onnx", "encoding": "raw", "model": MODEL,
                                  "http": pool.http, "grpc": pool.grpc, "predictedLatencyMs": 20.0,
                                  "withinSlo": True, "decided": True}]}}
    path.write_text(json.dumps({"apiVersion": "v1", "kind": "ConfigMap",
                                "metadata": {"name": "defect-detector-routes", "namespace": "bench"},
                                "data": {"routes.json": json.dumps(document)}}))


def scrape(host: str, port: int) -> dict[str, float]:
    """The gateway's link series for the pool: {bandwidth, rtt, probeBytes} (absent when not exported)."""
    connection = http.client.HTTPConnection(host, port, timeout=5)
    try:
        connection.request("GET", "/metrics")
        text = connection.getresponse().read().decode()
    finally:
        connection.close()
    found = {}
    for line in text.splitlines():
        if line.startswith("#") or f'pool="{POOL}"' not in line:
            continue
        name, value = line.split("{", 1)[0], float(line.rsplit(" ", 1)[1])
        key = {"hetplace_link_bandwidth_bytes": "bandwidth", "hetplace_link_rtt_seconds": "rtt",
               "hetplace_gateway_probe_bytes_total": "probeBytes"}.get(name)
        if key:
            found[key] = value
    return found


def client_loop(host: str, port: int, bodies: list[bytes], rate_per_s: float, stop: threading.Event,
                outcome: dict) -> None:
    """Paced inference requests through the gateway, sizes in turn, over one kept-alive connection.
    Paced open-loop by schedule; a late answer delays the next send (one connection) but is counted."""
    connection = http.client.HTTPConnection(host, port, timeout=10)
    start, i = time.monotonic(), 0
    while not stop.is_set():
        due = start + i / rate_per_s
        if (wait := due - time.monotonic()) > 0 and stop.wait(wait):
            break
        body = bodies[i % len(bodies)]
        i += 1
        try:
            connection.request("POST", f"/v2/models/{MODEL}/infer", body=body,
                               headers={"Content-Type": "application/json"})
            response = connection.getresponse()
            response.read()
            outcome["sent"] += 1
            outcome["errors"] += response.status != 200
            outcome["bytes"] += len(body)
        except (OSError, http.client.HTTPException):
            outcome["sent"] += 1
            outcome["errors"] += 1
            connection.close()
            connection = http.client.HTTPConnection(host, port, timeout=10)
    connection.close()


def one_run(lab: Lab, home: Path, routes: Path, site_address: str, rate_kbps: float, traffic: str | None,
            setup: NetlabSetup) -> dict:
    lab.set_rate(SITE, POOL, up_kbps=rate_kbps, down_kbps=rate_kbps)
    rate_bytes = rate_kbps * 1000
    gateway = lab.start_gateway(SITE, "--routes", str(routes), "--link-idle-seconds", str(setup.link_idle_s),
                                home=home / f"gw-{rate_kbps:g}-{traffic or 'idle'}")
    started = time.monotonic()
    before = lab.call(SITE, scrape, site_address, gateway.metrics_port).get("probeBytes", 0.0)
    stop, outcome, client = threading.Event(), {"sent": 0, "errors": 0, "bytes": 0}, None
    sizes = []
    if traffic:
        sizes = [round(rate_bytes * t) for t in (VARIED_TRANSFER_S if traffic == "varied" else FIXED_TRANSFER_S)]
        bodies = [request_body(size) for size in sizes]
        rate_per_s = LOAD_SHARE * rate_bytes / (sum(map(len, bodies)) / len(bodies))
        client = threading.Thread(target=lab.call, args=(SITE, client_loop, site_address, 8000, bodies, rate_per_s,
                                                         stop, outcome), daemon=True)
        client.start()
    try:
        first_at, seen = None, {}
        deadline = started + setup.window_s
        while True:
            time.sleep(1.0)
            seen = lab.call(SITE, scrape, site_address, gateway.metrics_port)
            now = time.monotonic()
            if "bandwidth" in seen and first_at is None:
                first_at = now - started
            if now >= deadline and ("bandwidth" in seen or now >= deadline + setup.grace_s):
                break
        window = time.monotonic() - started
    finally:
        stop.set()
        if client is not None:
            client.join(timeout=15)
        gateway.stop()
    probe_bytes = seen.get("probeBytes", 0.0) - before
    measured = seen.get("bandwidth")
    row = {"shapedKBps": rate_kbps,
           "measuredKBps": round(measured / 1000, 1) if measured is not None else None,
           "probeShare": round(probe_bytes / (rate_bytes * window), 4),
           "withTraffic": traffic is not None,
           "requestSizes": traffic or "none",
           "errorRatio": round(measured / rate_bytes - 1, 3) if measured is not None else None,
           "measuredRttMs": round(seen["rtt"] * 1000, 3) if "rtt" in seen else None,
           "firstFigureSeconds": round(first_at, 1) if first_at is not None else None,
           "seconds": round(window, 1), "probeBytes": round(probe_bytes)}
    if traffic:
        row.update(requests=outcome["sent"], requestErrors=outcome["errors"],
                   bodyBytes=sizes, clientShare=round(outcome["bytes"] / (rate_bytes * window), 3))
    if measured is None:
        row["notes"] = (f"no figure within {window:.0f} s: the gateway exported none (no passive fit and no "
                        "probe pair yet)")
    return row


def netlab_bandwidth(setup: NetlabSetup) -> dict:
    runs: list[str | None] = [None, "varied"] + (["fixed"] if setup.fixed_size else [])
    rows = []
    with tempfile.TemporaryDirectory(prefix="netlab-bench-") as tmp:
        home = Path(tmp)
        with Lab(home) as lab:
            site_address = lab.add_site(SITE)
            lab.add_pool(POOL)
            lab.add_link(SITE, POOL, up_kbps=setup.rates_kbps[0], down_kbps=setup.rates_kbps[0])
            repository = profiled_repository(home / "repository", MODEL, SERVICE_MS, SERVICE_MS, 50, 8,
                                             response_bytes=RESPONSE_BYTES)
            pool = lab.start_mlserver(POOL, repository=repository)
            routes = home / "routes.json"
            routes_file(routes, pool)
            for rate in setup.rates_kbps:
                for traffic in runs:
                    row = one_run(lab, home, routes, site_address, rate, traffic, setup)
                    if os.environ.get("NETLAB_BENCH_VERBOSE"):
                        print(json.dumps(row), flush=True)
                    rows.append(row)
    met = [r for r in rows if r["measuredKBps"] is not None and abs(r["errorRatio"]) <= GOALS["withinRatio"]
           and r["probeShare"] <= GOALS["probeShareMax"]]
    return {"name": "netlab-bandwidth", "goal": "measured within ±20% of the shaped rate, probes ≤ 5% of the link",
            "rows": rows, "goalsMet": f"{len(met)}/{len(rows)} rows",
            "setup": {"rates_kbps": list(setup.rates_kbps), "window_s": setup.window_s, "grace_s": setup.grace_s,
                      "link_idle_s": setup.link_idle_s, "probe_interval_s": 1.0, "service_ms": SERVICE_MS,
                      "response_bytes": RESPONSE_BYTES, "load_share": LOAD_SHARE, "both_directions_shaped": True}}
