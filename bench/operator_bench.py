"""Benchmarks of the running operator: `python -m hetplace run` (a subprocess, started by the
integration tests' `OperatorProcess`) against the Kubernetes API emulator of tests/kube/, which
serves from a thread of this process and logs every request.

operator-throughput: N variations of the factory workload created back to back onto pools that hold
  them all; seconds from the first create to every workload Placed with Ready=True for its
  generation, and the API writes per workload by kind (from the emulator's request log); then a
  quiet window of a few rebalance cycles, where nothing should be written. The emulator's create
  rate with no operator running is measured first, from the same client: the ceiling.
operator-rss: the operator's resident memory (VmRSS, VmHWM from /proc) idle and with N placed.
operator-restart: N placed, SIGTERM, a new process: seconds from its start to its first decision
  and to every workload resumed (`hetplace_decision_duration_seconds_count`, one per reconcile that
  reached a verdict), and the writes the restart caused.
operator-drift: N placed, then owned objects changed one at a time as someone would (routes ConfigMap
  deleted, Deployment deleted, scaled to 0, image set): seconds until each is as hetplace applied it
  again; a small fleet in the same run is the baseline.

Beside every figure: CPU seconds of the operator process and of the emulator's thread over the same
wall time (a share near 1.0 is one core busy: that side is the bottleneck; the machine has few cores).
"""

from __future__ import annotations

import copy
import os
import signal
import subprocess
import tempfile
import threading
import time
import urllib.request
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import yaml
from kube.catalogue import all_test_crds
from kube.cluster import EmulatedCluster
from operator_process import OperatorProcess

ROOT = Path(__file__).resolve().parents[1]
FACTORY = ROOT / "manifests" / "examples" / "factory"
IW = ("hetplace.io/v1alpha1", "InferenceWorkload")
NODE_SCALE = 4               # a bench node is four factory nodes: 4x cpu, memory, accelerators and price
NODES_PER_POOL = 10_000      # the most a ComputePool may declare
LINK_SCALE = 10_000          # links between sites 10,000x as wide
MAX_LINK_KBPS = 1e9          # the widest link a ComputePool may declare
CLK_TCK = os.sysconf("SC_CLK_TCK")
PERCENTILES = (50, 99)


def operator_settings(rebalance_interval_s: float, move_poll_s: float = 5) -> dict[str, str]:
    """The operator's production defaults (config.py), except a short rebalance interval so a quiet
    window of a few cycles fits in a benchmark, and no model probe (no Triton here)."""
    return {"rebalance_interval_seconds": str(rebalance_interval_s), "move_poll_seconds": str(move_poll_s),
            "peering_lifetime_seconds": "60", "watch_timeout_seconds": "300", "solver_time_limit_seconds": "10",
            "probe_models": "false"}


# --- what is applied -----------------------------------------------------------------------------

def bench_pools() -> list[dict]:
    """The factory's four pools with 10,000 nodes each, every node four factory nodes (a replica costs
    what it costs in the factory example), links 10,000x as wide and a 1 TB/s link from the pool's
    own site: room for the 10k fleet."""
    pools = []
    for path in sorted((FACTORY / "pools").glob("*.yaml")):
        pool = yaml.safe_load(path.read_text())
        spec = pool["spec"]
        nodes = spec["nodes"]
        nodes["count"] = NODES_PER_POOL
        nodes["cpu"] = str(int(nodes["cpu"]) * NODE_SCALE)
        nodes["memory"] = f"{int(nodes['memory'].removesuffix('Gi')) * NODE_SCALE}Gi"
        if "accelerators" in nodes:
            nodes["accelerators"] *= NODE_SCALE
        cost = spec["cost"]
        if "hourly" in cost:
            cost["hourly"] *= NODE_SCALE
        else:
            for field in ("capex", "powerWatts", "opexPerHour"):
                cost["tco"][field] *= NODE_SCALE
        for link in spec.get("links", []):
            link["bandwidthKBps"] = min(MAX_LINK_KBPS, link["bandwidthKBps"] * LINK_SCALE)
        # the pool's own site over a declared link as wide as the API allows: the default local link
        # (10 Gbit/s) carries the raw inputs of only about a thousand of these workloads
        spec["links"] = [*spec.get("links", []), {"site": spec["site"], "bandwidthKBps": MAX_LINK_KBPS, "rttMs": 0.5}]
        pools.append(pool)
    return pools


def bench_workloads(n: int, namespaces: int) -> list[dict]:
    """The factory workload n times, each with its own name, in one of a few namespaces, with its traffic
    varied (factory 10-30 req/s, cloud 50-149 req/s) so that replica counts and encodings differ."""
    factory = yaml.safe_load((FACTORY / "workload.yaml").read_text())
    workloads = []
    for i in range(n):
        workload = copy.deepcopy(factory)
        workload["metadata"] = {"name": f"w{i:05d}", "namespace": f"bench-{i % namespaces}"}
        workload["spec"]["traffic"] = [{"site": "factory-eu-1", "requestsPerSecond": 10 + (i * 7) % 21},
                                       {"site": "cloud-eu", "requestsPerSecond": 50 + (i * 13) % 100}]
        workloads.append(workload)
    return workloads


# --- measuring -----------------------------------------------------------------------------------

def _ticks(stat_path: str) -> float:
    """utime + stime of a process or thread, in seconds (fields 14 and 15 of /proc/.../stat)."""
    with open(stat_path) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def memory_kb(pid: int) -> dict[str, int]:
    """VmRSS (resident now) and VmHWM (peak resident) of a process, in kB."""
    found = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                found[key] = int(value.split()[0])
    return found


class ChildPeak:
    """The largest resident set any child of the operator (the rebalance's planning process) reached,
    sampled every half second while the context is open (its own VmHWM goes with it when it exits)."""

    def __init__(self, pid: int) -> None:
        self.pid, self.peak_kb, self.seen = pid, 0, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        pids: set[int] = set()
        while not self._stop.wait(0.5):
            children = []
            try:        # a child hangs under the thread that started it: look under every thread
                for task in os.listdir(f"/proc/{self.pid}/task"):
                    with open(f"/proc/{self.pid}/task/{task}/children") as f:
                        children += [int(c) for c in f.read().split()]
            except OSError:
                continue
            pids.update(children)
            self.seen = len(pids)
            for child in children:
                try:
                    self.peak_kb = max(self.peak_kb, memory_kb(child).get("VmHWM", 0))
                except OSError:
                    pass

    def __enter__(self) -> ChildPeak:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


def _machine_busy() -> float:
    """CPU seconds every core of the machine spent busy (not idle, not waiting on I/O), from /proc/stat."""
    with open("/proc/stat") as f:
        ticks = [int(x) for x in f.readline().split()[1:]]
    return (sum(ticks[:8]) - ticks[3] - ticks[4]) / CLK_TCK


class Cpu:
    """CPU seconds of the operator process, the emulator's thread, this whole process (the emulator, the
    creating client and the polling) and the whole machine since `start`; shares are of one core
    (`others` is what the rest of this shared machine used meanwhile, of its cores)."""

    def __init__(self, operator: OperatorProcess | None) -> None:
        self.operator = operator
        emulator = next(t for t in threading.enumerate() if t.name == "kube-emulator")
        self.paths = {"emulator": f"/proc/self/task/{emulator.native_id}/stat", "bench_process": "/proc/self/stat"}
        if operator is not None:
            self.paths["operator"] = f"/proc/{operator.process.pid}/stat"
        self.wall0 = time.perf_counter()
        self.base = {name: _ticks(path) for name, path in self.paths.items()}
        self.machine0 = _machine_busy()

    def read(self) -> dict[str, float]:
        wall = time.perf_counter() - self.wall0
        used = {name: _ticks(path) - self.base[name] for name, path in self.paths.items()}
        used["others"] = max(0.0, _machine_busy() - self.machine0 - used["bench_process"] - used.get("operator", 0))
        out = {f"{name}_cpu_s": round(s, 2) for name, s in used.items()}
        out.update({f"{name}_cpu_share": round(s / wall, 2) for name, s in used.items() if wall > 0})
        return out


SCRAPED = ("hetplace_decisions_total", "hetplace_rebalance_cycles_total", "hetplace_decision_duration_seconds_sum",
           "hetplace_decision_duration_seconds_count", "hetplace_moves_total")


def metric_lines(operator: OperatorProcess) -> list[tuple[str, str, float]] | None:
    """(name, labels, value) of the samples in SCRAPED from the operator's /metrics (None while it does
    not answer). Read line by line: a full parse of 10k workloads' series would load this process,
    whose thread serves the API."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{operator.metrics_port}/metrics", timeout=10) as response:
            text = response.read().decode()
    except OSError:
        return None
    samples = []
    for line in text.splitlines():
        if line.startswith(SCRAPED):
            series, _, value = line.rpartition(" ")
            name, _, labels = series.partition("{")
            if name in SCRAPED:
                samples.append((name, labels.rstrip("}"), float(value)))
    return samples


def scrape(operator: OperatorProcess) -> dict[str, float] | None:
    """SCRAPED, each summed over its labels."""
    start = time.perf_counter()
    samples = metric_lines(operator)
    operator.scrape_s = time.perf_counter() - start
    if samples is None:
        return None
    totals: dict[str, float] = {}
    for name, _, value in samples:
        totals[name] = totals.get(name, 0.0) + value
    return totals


def labelled(operator: OperatorProcess, name: str) -> dict[str, float]:
    """One metric of SCRAPED by its label values (`reason=repair,kind=migration`)."""
    return {",".join(part.replace('"', "") for part in labels.split(",")): value
            for sample, labels, value in metric_lines(operator) or () if sample == name}


def pause(operator: OperatorProcess, at_least_s: float) -> None:
    """Sleep between scrapes: at least ten times as long as the last scrape took, so that rendering
    /metrics (large with 10k workloads) takes the operator at most a tenth of its time."""
    time.sleep(max(at_least_s, 10 * getattr(operator, "scrape_s", 0.0)))


def _ready(obj: dict) -> bool:
    status = obj.get("status") or {}
    return (status.get("phase") == "Placed" and status.get("observedGeneration") == obj["metadata"].get("generation")
            and any(c.get("type") == "Ready" and c.get("status") == "True" for c in status.get("conditions") or ()))


def ready_names(cluster: EmulatedCluster) -> tuple[set[str], float]:
    """Workloads Placed and Ready for their generation, read on the emulator's loop (no HTTP, no copy),
    and the seconds that took the loop."""
    emulator = cluster.emulator
    kind = emulator.kind_of(*IW)

    def read() -> tuple[set[str], float]:
        start = time.perf_counter()
        ready = {f"{o['metadata']['namespace']}/{o['metadata']['name']}" for o in emulator.alive_objects(kind)
                 if _ready(o)}
        return ready, time.perf_counter() - start
    return cluster.call(read, timeout_s=60)


def write_kind(method: str, path: str, content_type: str | None) -> str:
    """Which kind of write a request is, by what it writes."""
    if "kopfpeerings" in path:
        return "kopf peering keep-alive"
    if path.endswith("/events"):
        return "Event"
    if "/inferenceworkloads" in path:
        if method == "POST":
            return "create InferenceWorkload (the bench)"
        return "workload status" if path.endswith("/status") else "workload metadata (kopf annotations)"
    if "/computepools" in path:
        return "pool status" if path.endswith("/status") else f"{method} ComputePool"
    for plural, kind in (("deployments", "Deployment"), ("services", "Service"), ("configmaps", "ConfigMap")):
        if f"/{plural}" in path:
            verb = "apply" if content_type == "application/apply-patch+yaml" else method.lower()
            return f"{verb} {kind}"
    return f"{method} {path}"


def writes(cluster: EmulatedCluster, since: int, until: int | None = None) -> Counter:
    log = cluster.emulator.api_log[since:until]
    return Counter(write_kind(c.method, c.path, c.content_type) for c in log if c.is_write)


def owned_objects(cluster: EmulatedCluster, namespaces: int) -> int:
    return sum(len(cluster.list(api, kind, f"bench-{n}", label_selector="app.kubernetes.io/managed-by=hetplace"))
               for n in range(namespaces) for api, kind in (("apps/v1", "Deployment"), ("v1", "Service"),
                                                            ("v1", "ConfigMap")))


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]


# --- set-up --------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Setup:
    """How a benchmark runs: namespaces the workloads spread over, the operator's settings, the limits."""

    namespaces: int = 4
    rebalance_interval_s: float = 10
    move_poll_s: float = 5
    quiet_cycles: int = 3
    max_quiet_s: float = 600     # a quiet window ends after this even if the cycles have not
    timeout_s: float = 1800      # for all to be Ready, or resumed

    def settings(self) -> dict[str, str]:
        return operator_settings(self.rebalance_interval_s, self.move_poll_s)


SMOKE = Setup(namespaces=2, rebalance_interval_s=1, move_poll_s=0.3, quiet_cycles=1, max_quiet_s=20, timeout_s=60)
FULL = Setup(max_quiet_s=300, timeout_s=1500)


class Bench:
    """A fresh emulator with the bench pools and namespaces; operators started on demand; all stopped at exit."""

    def __init__(self, setup: Setup) -> None:
        self.setup = setup
        self.directory = tempfile.TemporaryDirectory(prefix="hetplace-operator-bench-")
        self.home = Path(self.directory.name)
        self.cluster = EmulatedCluster(self.home, all_test_crds())
        self.operators: list[OperatorProcess] = []
        for n in range(setup.namespaces):
            self.cluster.create_namespace(f"bench-{n}")
        for pool in bench_pools():
            self.cluster.create(pool)

    def start_operator(self, wait_idle: bool = True) -> OperatorProcess:
        """Start an operator; with `wait_idle`, wait until it leads and has ended one rebalance cycle."""
        operator = OperatorProcess(self.cluster, self.home, 10, **self.setup.settings())
        self.operators.append(operator)
        if wait_idle:
            self.wait(lambda: (scrape(operator) or {}).get("hetplace_rebalance_cycles_total", 0) >= 1, 120,
                      "the operator to lead and end a rebalance cycle", operator)
        return operator

    def placed(self, n: int) -> OperatorProcess:
        """An operator with n workloads created and all of them Ready."""
        operator = self.start_operator()
        self.create(n)
        self.wait_all_ready(n, operator)
        return operator

    def create(self, n: int) -> tuple[float, dict[str, float]]:
        """Create n workloads back to back (built beforehand); the seconds it took and when each create
        was answered."""
        answered: dict[str, float] = {}
        workloads = bench_workloads(n, self.setup.namespaces)
        start = time.perf_counter()
        for workload in workloads:
            self.cluster.create(workload)
            answered[f"{workload['metadata']['namespace']}/{workload['metadata']['name']}"] = time.perf_counter()
        return time.perf_counter() - start, answered

    def wait(self, predicate, timeout_s: float, what: str, operator: OperatorProcess | None = None,
             interval_s: float = 0.1):
        """Poll `predicate` (pausing as `pause` says when it scrapes the operator) until it is true."""
        deadline = time.monotonic() + timeout_s
        while True:
            value = predicate()
            if value:
                return value
            if operator is not None and operator.process.poll() is not None:
                raise RuntimeError(f"{what}: the operator exited ({operator.process.returncode})\n{operator.log()}")
            if time.monotonic() > deadline:
                log = f"\noperator log:\n{operator.log()}" if operator is not None else ""
                raise TimeoutError(f"{what}: not within {timeout_s:g} s{log}")
            if operator is not None:
                pause(operator, interval_s)
            else:
                time.sleep(interval_s)

    def cycles_after(self, operator: OperatorProcess, more: int) -> None:
        """Wait until `more` rebalance cycles have ended from now."""
        now = scrape(operator)["hetplace_rebalance_cycles_total"]
        self.wait(lambda: (scrape(operator) or {}).get("hetplace_rebalance_cycles_total", 0) >= now + more,
                  self.setup.timeout_s, f"{more} rebalance cycle(s)", operator, 0.25)

    def wait_all_ready(self, n: int, operator: OperatorProcess, answered: dict[str, float] | None = None,
                       partial_ok: bool = False) -> dict:
        """Poll until all n are Ready; when the last was first seen Ready, the create-to-Ready latencies,
        the time the polling took on the emulator's loop, and (seconds, Ready, operator RSS MB) about
        every 10 s. With `partial_ok`, the timeout ends the wait with `complete` False instead of failing."""
        seen: dict[str, float] = {}
        polls, poll_s = 0, 0.0
        interval = max(0.2, n / 5_000)
        start = time.perf_counter()
        timeline: list[tuple[float, int, float]] = []
        deadline = time.monotonic() + self.setup.timeout_s
        while len(seen) < n:
            if time.monotonic() > deadline:
                if partial_ok:
                    break
                raise TimeoutError(f"{len(seen)}/{n} workloads Ready after {self.setup.timeout_s:g} s\n{operator.log()}")
            if operator.process.poll() is not None:
                raise RuntimeError(f"the operator exited ({operator.process.returncode})\n{operator.log()}")
            ready, on_loop_s = ready_names(self.cluster)
            now = time.perf_counter()
            polls, poll_s = polls + 1, poll_s + on_loop_s
            for key in ready:
                seen.setdefault(key, now)
            if not timeline or now - start - timeline[-1][0] >= 10:
                timeline.append((round(now - start, 1), len(seen), rounded_mb(memory_kb(operator.process.pid)["VmRSS"])))
            if len(seen) < n:
                time.sleep(interval)
        out = {"complete": len(seen) == n, "ready": len(seen),
               "last_ready_at": max(seen.values()) if len(seen) == n else time.perf_counter(),
               "ready_polls": polls, "ready_poll_loop_s": round(poll_s, 2), "ready_timeline": timeline}
        if answered:
            latencies = [seen[k] - answered[k] for k in answered]
            out.update({f"create_to_ready_p{q}_s": round(percentile(latencies, q), 2) for q in PERCENTILES})
        return out

    def quiet_window(self, operator: OperatorProcess, cycles: int) -> dict:
        """Writes while `cycles` more rebalance cycles end with nothing changing (peering apart), or for
        `max_quiet_s` when the cycles are slower than that; how long a cycle took; the moves the
        rebalance started meanwhile, by reason and kind."""
        moves_before = labelled(operator, "hetplace_moves_total")
        mark = len(self.cluster.emulator.api_log)
        start = time.perf_counter()
        seen = scrape(operator)["hetplace_rebalance_cycles_total"]
        ended: list[float] = []
        while len(ended) < cycles and time.perf_counter() - start < self.setup.max_quiet_s:
            pause(operator, 0.25)
            now = (scrape(operator) or {}).get("hetplace_rebalance_cycles_total", seen)
            ended += [time.perf_counter()] * int(now - seen)
            seen = now
        counted = writes(self.cluster, mark)
        peering = counted.pop("kopf peering keep-alive", 0)
        laps = [b - a for a, b in zip(ended, ended[1:])]      # the first cycle began before the window
        moves = {labels: value - moves_before.get(labels, 0)
                 for labels, value in labelled(operator, "hetplace_moves_total").items()}
        return {"quiet_s": round(time.perf_counter() - start, 1), "quiet_cycles": len(ended),
                "quiet_moves": {labels: int(v) for labels, v in moves.items() if v},
                "rebalance_cycle_s": round(sum(laps) / len(laps), 1) if laps else None,
                "quiet_writes": sum(counted.values()), "quiet_writes_by_kind": dict(counted),
                "quiet_peering_writes": peering}

    def close(self) -> None:
        """Stop what was started: SIGTERM, and SIGKILL after two seconds (a graceful stop is measured
        only where it matters, in operator-restart)."""
        try:
            for operator in self.operators:
                if operator.process.poll() is None:
                    operator.process.send_signal(signal.SIGTERM)
            for operator in self.operators:
                try:
                    operator.process.wait(timeout=2)
                except subprocess.TimeoutExpired:
                    operator.process.kill()
                    operator.process.wait(timeout=10)
        finally:
            try:
                self.cluster.close()
            finally:
                self.directory.cleanup()

    def __enter__(self) -> Bench:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


def rounded_mb(kb: int) -> float:
    return round(kb / 1024, 1)


# --- the benchmarks ------------------------------------------------------------------------------

def create_ceiling(n: int, setup: Setup) -> dict:
    """The emulator's create rate from this client with no operator running: the ceiling."""
    with Bench(setup) as bench:
        cpu = Cpu(None)
        seconds, _ = bench.create(n)
        return {"run": "emulator alone (ceiling)", "workloads": n, "create_s": round(seconds, 2),
                "creates_per_s": round(n / seconds, 1), **cpu.read()}


def operator_throughput(n: int, setup: Setup) -> dict:
    ceiling = create_ceiling(n, setup)
    with Bench(setup) as bench:
        operator = bench.start_operator()
        before = scrape(operator)
        mark = len(bench.cluster.emulator.api_log)
        cpu = Cpu(operator)
        start = time.perf_counter()
        create_s, answered = bench.create(n)
        ready = bench.wait_all_ready(n, operator, answered)
        seconds = ready.pop("last_ready_at") - start
        timeline = ready.pop("ready_timeline")
        del ready["complete"], ready["ready"]
        used = cpu.read()
        requests = len(bench.cluster.emulator.api_log) - mark
        after = scrape(operator)
        by_kind = writes(bench.cluster, mark)
        by_kind.pop("create InferenceWorkload (the bench)", None)
        peering = by_kind.pop("kopf peering keep-alive", 0)
        owned = owned_objects(bench.cluster, setup.namespaces)
        operator_writes = sum(by_kind.values())
        budget = owned + n          # one write per owned object, one status patch per decision
        decided = {k.rsplit("_", 1)[1]: after[k] - before[k] for k in
                   ("hetplace_decision_duration_seconds_sum", "hetplace_decision_duration_seconds_count")}
        quiet = bench.quiet_window(operator, setup.quiet_cycles)
        row = {"run": "operator", "workloads": n, "namespaces": setup.namespaces, "create_s": round(create_s, 2),
               "creates_per_s": round(n / create_s, 1), "all_ready_s": round(seconds, 2),
               "workloads_per_s": round(n / seconds, 1), **ready,
               "mean_decision_ms": round(1000 * decided["sum"] / max(1, decided["count"]), 2),
               "requests": requests, "requests_per_s": round(requests / seconds, 1), **used,
               "owned_objects": owned, "operator_writes": operator_writes,
               "writes_per_workload": round(operator_writes / n, 2),
               "write_budget": budget, "within_write_budget": operator_writes <= budget,
               "writes_per_workload_by_kind": {k: round(v / n, 3) for k, v in sorted(by_kind.items(),
                                                                                       key=lambda kv: -kv[1])},
               "peering_writes": peering, "reconcile_retries": retries(operator), **quiet,
               "rss_mb": rounded_mb(memory_kb(operator.process.pid)["VmRSS"]),
               "ready_timeline": timeline}
    return {"name": "operator-throughput",
            "goal": ">= 100 workloads/s; <= 1 write per owned object + 1 status patch per decision; "
                    "no write when nothing changes",
            "settings": setup.settings(), "rows": [ceiling, row]}


def operator_rss(sizes: list[int], setup: Setup) -> dict:
    """With the 10k fleet the wait may end at `timeout_s` before all are Ready: the row says how many were."""
    rows = []
    for n in sizes:
        with Bench(setup) as bench:
            operator = bench.start_operator()
            idle = memory_kb(operator.process.pid)
            cpu = Cpu(operator)
            start = time.perf_counter()
            with ChildPeak(operator.process.pid) as planner:
                create_s, _ = bench.create(n)
                ready = bench.wait_all_ready(n, operator, partial_ok=True)
                placed_s = ready["last_ready_at"] - start
                used = cpu.read()
                at_ready = memory_kb(operator.process.pid)
                settle = bench.quiet_window(operator, 1) if ready["complete"] else None  # a whole cycle, if it ends
                memory = memory_kb(operator.process.pid)
            rows.append({"workloads": n, "ready": ready["ready"], "complete": ready["complete"],
                         "idle_rss_mb": rounded_mb(idle["VmRSS"]), "rss_at_ready_mb": rounded_mb(at_ready["VmRSS"]),
                         "rss_mb": rounded_mb(memory["VmRSS"]), "peak_rss_mb": rounded_mb(memory["VmHWM"]),
                         "planner_processes": planner.seen, "planner_peak_rss_mb": rounded_mb(planner.peak_kb),
                         "create_s": round(create_s, 1), "all_ready_s": round(placed_s, 1),
                         "workloads_per_s": round(ready["ready"] / placed_s, 1),
                         "settle_s": settle and settle["quiet_s"], "settle_cycles": settle and settle["quiet_cycles"],
                         "settle_writes": settle and settle["quiet_writes"],
                         "measured_after_s": round(time.perf_counter() - start, 1),
                         "reconcile_retries": retries(operator),
                         "bench_process_rss_mb": rounded_mb(memory_kb(os.getpid())["VmRSS"]),
                         "ready_timeline": ready["ready_timeline"], **used})
            print({k: v for k, v in rows[-1].items() if k != "ready_timeline"}, flush=True)
    return {"name": "operator-rss", "goal": "RSS < 300 MB with 10k workloads placed", "settings": setup.settings(),
            "rows": rows}


def operator_restart(sizes: list[int], setup: Setup) -> dict:
    rows = []
    for n in sizes:
        with Bench(setup) as bench:
            first = bench.placed(n)
            # two: the cycle under way when the last turned Ready may have read the pools before it;
            # the next one, begun after, publishes what the pools hold before the stop
            bench.cycles_after(first, 2)
            mark = len(bench.cluster.emulator.api_log)
            stopping = time.perf_counter()
            first.stop()
            stop_s = time.perf_counter() - stopping
            started = time.perf_counter()
            second = bench.start_operator(wait_idle=False)
            cpu = Cpu(second)
            first_decision = metrics_up = all_resumed = None
            while all_resumed is None:
                if time.perf_counter() - started > setup.timeout_s:
                    raise TimeoutError(f"restart: not every workload resumed in {setup.timeout_s:g} s\n{second.log()}")
                if second.process.poll() is not None:
                    raise RuntimeError(f"the operator exited ({second.process.returncode})\n{second.log()}")
                metrics = scrape(second)
                now = time.perf_counter() - started
                if metrics is not None and metrics_up is None:
                    metrics_up = now
                # every reconcile that reaches a verdict (keep or move) times its decision; a resumed
                # workload whose placement holds is one (hetplace_decisions_total counts only those that
                # wrote something)
                decided = (metrics or {}).get("hetplace_decision_duration_seconds_count", 0)
                if decided >= 1 and first_decision is None:
                    first_decision = now
                if decided >= n:
                    all_resumed = now
                pause(second, 0.05)
            used = cpu.read()
            outcomes = decisions_by_outcome(second)
            resumed_mark = len(bench.cluster.emulator.api_log)
            quiet = bench.quiet_window(second, 2)
            caused = writes(bench.cluster, mark, resumed_mark)
            peering = caused.pop("kopf peering keep-alive", 0)
            rows.append({"workloads": n, "stop_s": round(stop_s, 2), "metrics_up_s": round(metrics_up, 2),
                         "first_decision_s": round(first_decision, 2), "all_resumed_s": round(all_resumed, 2),
                         "decisions_timed": int(scrape(second)["hetplace_decision_duration_seconds_count"]),
                         "decisions_by_outcome": outcomes, "reconcile_retries": retries(second),
                         "restart_writes": sum(caused.values()),
                         "restart_writes_by_kind": dict(caused), "restart_peering_writes": peering,
                         "rss_mb": rounded_mb(memory_kb(second.process.pid)["VmRSS"]), **used,
                         **{k: v for k, v in quiet.items() if k != "rebalance_cycle_s"}})
            print(rows[-1], flush=True)
    return {"name": "operator-restart", "goal": "first decision < 30 s after start; no write when nothing changed",
            "settings": setup.settings(), "rows": rows}


def retries(operator: OperatorProcess) -> int:
    """How many reconciles failed and were tried again (their warnings in the operator's log)."""
    with operator.log_path.open() as log:
        return sum("(trying again)" in line for line in log)


def decisions_by_outcome(operator: OperatorProcess) -> dict[str, int]:
    return {labels.removeprefix("outcome="): int(value)
            for labels, value in labelled(operator, "hetplace_decisions_total").items() if value}


# drift: what someone does to an object hetplace owns, and how to see it is as hetplace applied it again
DRIFTS = ("delete routes ConfigMap", "delete Deployment", "scale Deployment to 0", "set Deployment image")


def _drift(cluster: EmulatedCluster, what: str, namespace: str, name: str, deployment: str) -> None:
    if what == "delete routes ConfigMap":
        cluster.delete("v1", "ConfigMap", f"{name}-routes", namespace)
    elif what == "delete Deployment":
        cluster.delete("apps/v1", "Deployment", deployment, namespace)
    elif what == "scale Deployment to 0":
        cluster.patch("apps/v1", "Deployment", deployment, {"spec": {"replicas": 0}}, namespace,
                      field_manager="kubectl-scale")
    else:
        cluster.patch("apps/v1", "Deployment", deployment, {"spec": {"template": {"spec": {"containers": [
            {"name": "triton", "image": "registry.example/other:1"}]}}}}, namespace, patch_type="strategic",
            field_manager="kubectl-set")


def _as_applied(cluster: EmulatedCluster, what: str, namespace: str, name: str, deployment: str,
                applied: dict) -> bool:
    if what == "delete routes ConfigMap":
        routes = cluster.get("v1", "ConfigMap", f"{name}-routes", namespace)
        return routes is not None and routes.get("data") == applied["routes"]
    live = cluster.get("apps/v1", "Deployment", deployment, namespace)
    return live is not None and live["spec"]["replicas"] == applied["replicas"] and \
        live["spec"]["template"]["spec"]["containers"][0]["image"] == applied["image"]


def drift_latencies(bench: Bench, n: int, samples: int) -> tuple[list[float], dict[str, list[float]], int]:
    """`samples` drifts, one at a time, each on another placed workload, cycling through DRIFTS:
    seconds from the change to the object as hetplace applied it again (polled every 20 ms)."""
    by_kind: dict[str, list[float]] = {what: [] for what in DRIFTS}
    mark = len(bench.cluster.emulator.api_log)
    workloads = bench_workloads(n, bench.setup.namespaces)
    for i in range(samples):
        what = DRIFTS[i % len(DRIFTS)]
        meta = workloads[(i * 7919) % n]["metadata"]       # spread over the fleet
        namespace, name = meta["namespace"], meta["name"]
        deployment = next(d for d in bench.cluster.list("apps/v1", "Deployment", namespace,
                                                        label_selector=f"hetplace.io/workload={name}"))
        routes = bench.cluster.get("v1", "ConfigMap", f"{name}-routes", namespace)
        applied = {"routes": routes["data"], "replicas": deployment["spec"]["replicas"],
                   "image": deployment["spec"]["template"]["spec"]["containers"][0]["image"]}
        changed = time.perf_counter()
        _drift(bench.cluster, what, namespace, name, deployment["metadata"]["name"])
        bench.wait(lambda: _as_applied(bench.cluster, what, namespace, name, deployment["metadata"]["name"], applied),
                   60, f"{what} of {namespace}/{name} corrected", interval_s=0.02)
        by_kind[what].append(time.perf_counter() - changed)
        # the next drift once this workload is Ready again (a Deployment re-created or scaled back is not at once)
        bench.wait(lambda: _ready(bench.cluster.get(*IW, name, namespace)), 60, f"{namespace}/{name} Ready again",
                   interval_s=0.05)
    events = sum(1 for c in bench.cluster.emulator.api_log[mark:] if c.is_write and c.path.endswith("/events"))
    return [s for v in by_kind.values() for s in v], by_kind, events


def operator_drift(sizes: list[int], samples: int, setup: Setup) -> dict:
    """Drift correction latency with n workloads placed: the first size is the baseline of the same run."""
    rows = []
    for n in sizes:
        with Bench(setup) as bench:
            operator = bench.placed(n)
            cpu = Cpu(operator)
            latencies, by_kind, events = drift_latencies(bench, n, samples)
            rows.append({"workloads": n, "samples": len(latencies),
                         **{f"restore_p{q}_s": round(percentile(latencies, q), 3) for q in PERCENTILES},
                         "restore_max_s": round(max(latencies), 3),
                         "restore_p99_s_by_drift": {k: round(percentile(v, 99), 3) for k, v in by_kind.items() if v},
                         "events_written": events, **cpu.read(),
                         "rss_mb": rounded_mb(memory_kb(operator.process.pid)["VmRSS"])})
            print(rows[-1], flush=True)
    baseline = rows[0]
    for row in rows[1:]:
        row["p99_vs_baseline"] = round(row["restore_p99_s"] / baseline["restore_p99_s"], 2)
    return {"name": "operator-drift", "goal": "p99 delete -> restored <= 5 s with 1,000 workloads placed",
            "settings": setup.settings(), "rows": rows}
