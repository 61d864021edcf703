"""The network lab (docs/design.md §8): sites and pools as Linux network namespaces joined by
`tc tbf`-shaped veth links, with real servers started inside them, all removed when the lab ends.

    with Lab(tmp_path) as lab:
        lab.add_site("factory")
        lab.add_pool("cloud")
        lab.add_link("factory", "cloud", up_kbps=250, down_kbps=1000)   # KB/s, 1 KB = 1000 bytes
        pool = lab.start_mlserver("cloud")                              # listens on lab.address("cloud")
        lab.set_rate("factory", "cloud", up_kbps=100)                   # while it runs

Each node (site or pool) is a namespace `hpl-<lab id>-<name>` with loopback up, its own address (a /32
on its loopback) and no default route. Each (site, pool) link is its own veth pair, numbered with a /31,
plus one host route each way to the other end's address: a pool linked to several sites keeps one
address (what a routes document names), and each site reaches it over its own link. Addresses come from
198.18.0.0/15 only, a /23 slice per lab claimed through a lock file, so concurrent labs (pytest-xdist
workers, a benchmark beside the tests) never overlap. Nothing is routed out of the lab: the host and
the lab cannot reach each other, which is why `Lab.call` runs a function in a thread that has entered a
node's namespace. The site-to-pool direction is shaped on the site's end of the veth, the other on the
pool's end. There is no `netem` in this kernel, so the lab adds no round-trip time: a server that wants
more RTT than the veth's (tens of microseconds) adds it itself.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import ipaddress
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

LAB_RANGE = ipaddress.IPv4Network("198.18.0.0/15")      # RFC 2544: set aside for network benchmarks
SLICE_PREFIX = 23       # 256 slices of 512 addresses: node addresses in the first half, link /31s in the second
PREFIX = "hpl-"
LOCKS = Path("/run/hetplace-netlab")     # tmpfs, like /run/netns: a reboot clears both together
MAX_FRAME_BYTES = 1514                   # what tbf counts per full packet: 1500 of MTU + the Ethernet header
STOP_TIMEOUT_S = 10.0
_CLONE_NEWNET = 0x40000000
_NODE_NAME = re.compile(r"^[a-z0-9]([a-z0-9-]{0,38}[a-z0-9])?$")


# --- pure parts: addresses and shaping ---------------------------------------------------------------

def lab_slice(lab_id: str) -> ipaddress.IPv4Network:
    """The /23 of 198.18.0.0/15 that lab `lab_id` (hex) numbers its nodes and links from."""
    index = int(lab_id, 16) % 2 ** (SLICE_PREFIX - LAB_RANGE.prefixlen)
    return ipaddress.IPv4Network((int(LAB_RANGE.network_address) + index * 2 ** (32 - SLICE_PREFIX), SLICE_PREFIX))


def node_address(lab_slice_: ipaddress.IPv4Network, index: int) -> ipaddress.IPv4Address:
    """The address of the `index`-th node (0-based): .1 to .254 of the slice's first half."""
    if not 0 <= index < 254:
        raise ValueError(f"a lab holds at most 254 nodes; node index {index} is out of range")
    return lab_slice_[1 + index]


def link_addresses(lab_slice_: ipaddress.IPv4Network, index: int) -> tuple[ipaddress.IPv4Address, ipaddress.IPv4Address]:
    """The /31 of the `index`-th link (0-based) in the slice's second half: (site end, pool end)."""
    if not 0 <= index < 128:
        raise ValueError(f"a lab holds at most 128 links; link index {index} is out of range")
    first = lab_slice_[256 + 2 * index]
    return first, first + 1


@dataclass(frozen=True)
class Tbf:
    """`tc ... tbf rate R burst B latency L` for one direction of a link shaped to `rate_kbps` KB/s.

    burst: the bucket, what may leave back to back at line speed. The kernel releases packets with
    high-resolution timers, so it need not cover a timer tick; it must hold one full frame (a larger
    packet is dropped) and is kept small, 10 ms of the rate but at least two frames, so a short
    transfer (a gateway's probe, the start of a download) sees the shaped rate and not the veth's:
    3,028 B at 100 KB/s, 10 KB at 1000 KB/s, 50 KB at 5000 KB/s.
    latency: the longest a packet may queue (tbf turns it into the queue's byte limit). 50 ms, as a
    modest access link buffers, but at least eight full frames' time, so at low rates TCP still has a
    few packets queued and keeps the link busy instead of losing throughput to drops: 122 ms at
    100 KB/s, 50 ms from 250 KB/s up.
    """

    rate_kbps: float

    def __post_init__(self) -> None:
        if not 1 <= self.rate_kbps <= 1_000_000:
            raise ValueError(f"a link's rate must be 1 to 1,000,000 KB/s, not {self.rate_kbps:g}")

    @property
    def rate_bytes_per_s(self) -> int:
        return round(self.rate_kbps * 1000)

    @property
    def burst_bytes(self) -> int:
        return max(2 * MAX_FRAME_BYTES, round(self.rate_bytes_per_s * 0.010))

    @property
    def latency_ms(self) -> int:
        return max(50, -(-8 * MAX_FRAME_BYTES * 1000 // self.rate_bytes_per_s))

    def tc_args(self) -> list[str]:
        # bits per second spelled out: tc's `kbps` means kilobytes, `kbit` kilobits, an easy slip
        return ["tbf", "rate", f"{self.rate_bytes_per_s * 8}bit", "burst", str(self.burst_bytes),
                "latency", f"{self.latency_ms}ms"]


# --- the machine: prerequisites, commands, namespaces -----------------------------------------------

def _sh(*argv: str, check: bool = True) -> subprocess.CompletedProcess:
    done = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    if check and done.returncode != 0:
        raise RuntimeError(f"`{' '.join(argv)}` failed ({done.returncode}): {done.stderr.strip() or done.stdout.strip()}")
    return done


_checked = False


def check_prerequisites() -> None:
    """Raise, naming what is missing, unless this process can build a lab: root, `ip`, `tc`, and a tbf
    qdisc that a kernel accepts (tried on a veth pair in a scratch namespace)."""
    global _checked
    if _checked:
        return
    if os.geteuid() != 0:
        raise PermissionError("the network lab (docs/design.md §8) needs root: it creates network namespaces, "
                              "veth pairs and tc qdiscs (CAP_SYS_ADMIN and CAP_NET_ADMIN); run the tests as root")
    for tool, package in (("ip", "iproute2"), ("tc", "iproute2")):
        if shutil.which(tool) is None:
            raise FileNotFoundError(f"the network lab needs `{tool}` on PATH (Debian package {package})")
    scratch = f"{PREFIX}check-{os.getpid()}-{secrets.token_hex(2)}"
    try:
        _sh("ip", "netns", "add", scratch)
        _sh("ip", "-n", scratch, "link", "add", "c0", "type", "veth", "peer", "name", "c1")
        done = _sh("tc", "-n", scratch, "qdisc", "add", "dev", "c0", "root", *Tbf(250).tc_args(), check=False)
        if done.returncode != 0:
            raise RuntimeError(f"the network lab needs the tbf qdisc (kernel module sch_tbf), and tc refused it: "
                               f"{done.stderr.strip()}")
    finally:
        _sh("ip", "netns", "del", scratch, check=False)
    _checked = True


def namespaces() -> list[str]:
    """Every named network namespace on the machine."""
    return [line.split()[0] for line in _sh("ip", "netns", "list").stdout.splitlines() if line.strip()]


def namespace_pids(namespace: str) -> list[int]:
    done = _sh("ip", "netns", "pids", namespace, check=False)
    return [int(pid) for pid in done.stdout.split()] if done.returncode == 0 else []


def _remove_namespace(namespace: str) -> None:
    """Kill whatever still runs in it (a deleted namespace lives on while a process holds it), then delete it."""
    for pid in namespace_pids(namespace):
        if pid != os.getpid():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    _sh("ip", "netns", "del", namespace, check=False)


def _process_start(pid: int) -> str | None:
    """The start time of `pid` in clock ticks (field 22 of /proc/PID/stat): a pid plus this names one process."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def _owner_alive(lock: Path) -> bool:
    try:
        owner = json.loads(lock.read_text())
    except (OSError, ValueError):
        return False
    return _process_start(owner["pid"]) == owner["start"]


def cleanup_stale() -> list[str]:
    """Remove what dead labs left (their process was SIGKILLed, the machine lost power): every `hpl-`
    namespace, and what runs in it, whose lab's owning process is gone. Live labs of other processes
    (pytest-xdist workers, a benchmark) are left alone. Returns the namespaces removed."""
    found = [name for name in namespaces() if name.startswith(PREFIX)]
    # locks are read after listing: a lab claims its lock before making namespaces and drops it after
    # deleting them, so a namespace listed above whose lab is live has its lock now
    LOCKS.mkdir(parents=True, exist_ok=True)
    live: set[str] = set()
    for lock in LOCKS.glob("slice-*"):
        if _owner_alive(lock):
            with contextlib.suppress(OSError, ValueError):
                live.add(json.loads(lock.read_text())["id"])
        else:
            lock.unlink(missing_ok=True)
    removed = []
    for name in found:
        if name.split("-")[1] in live:
            continue
        if name.startswith(f"{PREFIX}check-") and _process_start(int(name.split("-")[2])) is not None:
            continue                # a live process checking the prerequisites right now
        _remove_namespace(name)
        removed.append(name)
    return removed


_libc = ctypes.CDLL(None, use_errno=True)


def _enter(namespace: str) -> None:
    """Move the calling thread (only it) into `namespace`."""
    fd = os.open(f"/run/netns/{namespace}", os.O_RDONLY)
    try:
        if _libc.setns(fd, _CLONE_NEWNET) != 0:
            errno = ctypes.get_errno()
            raise OSError(errno, f"setns into {namespace}: {os.strerror(errno)}")
    finally:
        os.close(fd)


def _lab_env(env: Mapping[str, str] | None) -> dict[str, str]:
    # a proxy is outside the lab, hence unreachable from it: requests go straight to lab addresses
    return {k: v for k, v in (os.environ if env is None else env).items() if not k.lower().endswith("_proxy")}


# --- the lab ------------------------------------------------------------------------------------------

@dataclass
class Node:
    name: str
    kind: str                       # "site" or "pool"
    namespace: str
    address: str
    processes: list[subprocess.Popen] = field(default_factory=list, repr=False)


@dataclass(frozen=True)
class Link:
    site: str
    pool: str
    site_device: str                # in the site's namespace; its egress is the uplink (site -> pool)
    pool_device: str                # in the pool's namespace; its egress is the downlink (pool -> site)


_open_labs: list[Lab] = []
_previous_sigterm: Any = None


def _sigterm_to_interrupt(signum, frame):
    # SIGTERM would end the process without unwinding; as KeyboardInterrupt, `finally` and `__exit__`
    # run and pytest stops the session (a SystemExit would be reported as one failed test and go on)
    raise KeyboardInterrupt(f"signal {signum}")


def _close_open_labs() -> None:
    for lab in list(_open_labs):
        lab.close()


atexit.register(_close_open_labs)


class Lab:
    """Sites, pools and shaped links as namespaces; `with Lab(home) as lab:` builds nothing until asked
    and removes everything on the way out, also after an exception, KeyboardInterrupt or SIGTERM."""

    def __init__(self, home: Path, *, congestion_control: str = "reno"):
        self.home = Path(home)
        # pinned, so a result does not depend on the host's default. Reno, since a host allows only what
        # its tcp_allowed_congestion_control lists (here reno and bbr, not cubic) and at the lab's tiny
        # round trips CUBIC behaves as Reno does; BBR (this host's default) keeps pacing at its old
        # estimate for about 1.5 s after a link speeds up, and retransmits a third of a transfer's start
        # into tbf's short queue, so it suits a study of BBR, not of the links
        self.congestion_control = congestion_control
        self.id = ""
        self.nodes: dict[str, Node] = {}
        self.links: dict[tuple[str, str], Link] = {}
        self._lock: Path | None = None
        self._slice: ipaddress.IPv4Network | None = None

    # lifecycle
    def __enter__(self) -> Lab:
        global _previous_sigterm
        check_prerequisites()
        allowed = Path("/proc/sys/net/ipv4/tcp_allowed_congestion_control").read_text().split()
        if self.congestion_control not in allowed:
            raise ValueError(f"congestion_control={self.congestion_control!r}: this host allows only "
                             f"{', '.join(allowed)} (net.ipv4.tcp_allowed_congestion_control)")
        cleanup_stale()
        self._claim_slice()
        _open_labs.append(self)
        if threading.current_thread() is threading.main_thread() and signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
            _previous_sigterm = signal.signal(signal.SIGTERM, _sigterm_to_interrupt)
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _claim_slice(self) -> None:
        LOCKS.mkdir(parents=True, exist_ok=True)
        for _ in range(64):
            lab_id = secrets.token_hex(2)
            lock = LOCKS / f"slice-{lab_slice(lab_id).network_address}"
            # written whole, then linked into place: link() fails if the lock exists, and no reader
            # ever sees a lock without its owner (cleanup_stale would take it for a dead one)
            draft = LOCKS / f".draft-{os.getpid()}-{lab_id}"
            draft.write_text(json.dumps({"id": lab_id, "pid": os.getpid(), "start": _process_start(os.getpid())}))
            try:
                os.link(draft, lock)
            except FileExistsError:
                continue            # a live lab holds it (cleanup_stale freed the dead ones)
            finally:
                draft.unlink()
            self.id, self._lock, self._slice = lab_id, lock, lab_slice(lab_id)
            return
        raise RuntimeError(f"no free slice of {LAB_RANGE} for a new lab: 64 tries hit live labs (see {LOCKS})")

    def close(self) -> None:
        """Stop every process (SIGTERM, then SIGKILL), delete every namespace (their veths go with them)
        and give the address slice back. Safe to call twice."""
        global _previous_sigterm
        for node in self.nodes.values():
            self._stop_all(node.processes)
        for node in self.nodes.values():
            _remove_namespace(node.namespace)
        self.nodes.clear()
        self.links.clear()
        if self._lock is not None:
            self._lock.unlink(missing_ok=True)
            self._lock = None
        if self in _open_labs:
            _open_labs.remove(self)
        if not _open_labs and _previous_sigterm is not None and threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, _previous_sigterm)
            _previous_sigterm = None

    # declaring the network
    def add_site(self, name: str) -> str:
        """A site's namespace; returns its address."""
        return self._add_node(name, "site")

    def add_pool(self, name: str) -> str:
        """A pool's namespace; returns its address (where its servers listen)."""
        return self._add_node(name, "pool")

    def _add_node(self, name: str, kind: str) -> str:
        if self._slice is None:
            raise RuntimeError("use the lab inside `with Lab(home) as lab:`, which claims its addresses")
        if not _NODE_NAME.match(name):
            raise ValueError(f"node name {name!r}: lower-case letters, digits and inner '-', at most 40 characters")
        if name in self.nodes:
            raise ValueError(f"the lab already has a node named {name!r}")
        namespace = f"{PREFIX}{self.id}-{name}"
        address = str(node_address(self._slice, len(self.nodes)))
        self.nodes[name] = Node(name, kind, namespace, address)      # before creating it: close() removes it
        _sh("ip", "netns", "add", namespace)
        # IPv6 off: no link-local fe80:: addresses either, only the lab's 198.18.0.0/15; and no forwarding,
        # whatever the host's setting (new namespaces inherit IPv4's), so a pool never joins two sites
        for setting in ("net.ipv6.conf.all.disable_ipv6=1", "net.ipv6.conf.default.disable_ipv6=1",
                        "net.ipv4.ip_forward=0", f"net.ipv4.tcp_congestion_control={self.congestion_control}"):
            _sh("ip", "netns", "exec", namespace, "sysctl", "-qw", setting)
        _sh("ip", "-n", namespace, "link", "set", "lo", "up")
        _sh("ip", "-n", namespace, "addr", "add", f"{address}/32", "dev", "lo")
        return address

    def add_link(self, site: str, pool: str, *, up_kbps: float, down_kbps: float | None = None) -> Link:
        """A veth pair between `site` and `pool`, shaped to `up_kbps` KB/s site -> pool and `down_kbps`
        (default: the same) pool -> site."""
        s, p = self._node(site, "site"), self._node(pool, "pool")
        if (site, pool) in self.links:
            raise ValueError(f"the lab already links {site} and {pool}")
        index = len(self.links)
        site_end, pool_end = link_addresses(self._slice, index)
        # created straight into the namespaces, so the names only need to be unique there (15 characters max)
        link = Link(site, pool, f"v{index}-{pool}"[:15], f"v{index}-{site}"[:15])
        _sh("ip", "link", "add", link.site_device, "netns", s.namespace, "type", "veth",
            "peer", "name", link.pool_device, "netns", p.namespace)
        self.links[(site, pool)] = link
        for node, device, mine, theirs, peer in ((s, link.site_device, site_end, pool_end, p),
                                                 (p, link.pool_device, pool_end, site_end, s)):
            _sh("ip", "-n", node.namespace, "addr", "add", f"{mine}/31", "dev", device)
            _sh("ip", "-n", node.namespace, "link", "set", device, "up")
            _sh("ip", "-n", node.namespace, "route", "add", f"{peer.address}/32", "via", str(theirs),
                "dev", device, "src", node.address)
        self._shape("add", link, up_kbps, down_kbps if down_kbps is not None else up_kbps)
        return link

    def set_rate(self, site: str, pool: str, *, up_kbps: float | None = None, down_kbps: float | None = None) -> None:
        """Change a running link's rate, one direction or both (`tc qdisc change`: open connections stay)."""
        self._shape("change", self._link(site, pool), up_kbps, down_kbps)

    def rates_kbps(self, site: str, pool: str) -> tuple[float, float]:
        """(up, down) as the kernel has them."""
        link = self._link(site, pool)
        return (self._qdisc_rate(self.nodes[site].namespace, link.site_device),
                self._qdisc_rate(self.nodes[pool].namespace, link.pool_device))

    def _shape(self, verb: str, link: Link, up_kbps: float | None, down_kbps: float | None) -> None:
        for namespace, device, rate in ((self.nodes[link.site].namespace, link.site_device, up_kbps),
                                        (self.nodes[link.pool].namespace, link.pool_device, down_kbps)):
            if rate is not None:
                _sh("tc", "-n", namespace, "qdisc", verb, "dev", device, "root", *Tbf(rate).tc_args())

    @staticmethod
    def _qdisc_rate(namespace: str, device: str) -> float:
        (qdisc,) = json.loads(_sh("tc", "-n", namespace, "-j", "qdisc", "show", "dev", device, "root").stdout)
        return qdisc["options"]["rate"] / 1000

    def _node(self, name: str, kind: str | None = None) -> Node:
        node = self.nodes.get(name)
        if node is None or (kind and node.kind != kind):
            raise KeyError(f"the lab has no {kind or 'node'} named {name!r} (it has {', '.join(self.nodes) or 'none'})")
        return node

    def _link(self, site: str, pool: str) -> Link:
        try:
            return self.links[(site, pool)]
        except KeyError:
            raise KeyError(f"the lab has no link between {site} and {pool}") from None

    def namespace(self, name: str) -> str:
        return self._node(name).namespace

    def address(self, name: str) -> str:
        return self._node(name).address

    # processes and calls inside nodes
    def prefix(self, name: str) -> list[str]:
        """The command prefix that runs a program inside node `name`."""
        return ["ip", "netns", "exec", self._node(name).namespace]

    def run(self, name: str, argv: Sequence[str], *, log: Path, env: Mapping[str, str] | None = None,
            cwd: Path | None = None) -> subprocess.Popen:
        """Start `argv` inside node `name`, output to `log`; the lab stops it when it ends."""
        log.parent.mkdir(parents=True, exist_ok=True)
        with log.open("w") as out:
            process = subprocess.Popen([*self.prefix(name), *argv], cwd=cwd, env=_lab_env(env),
                                       stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT)
        return self.track(name, process)

    def track(self, name: str, process: subprocess.Popen) -> subprocess.Popen:
        """Have the lab stop `process` (started in node `name` by other means) with the node."""
        self._node(name).processes.append(process)
        return process

    def stop_servers(self, name: str) -> None:
        """Stop everything running in node `name` (SIGTERM, then SIGKILL), as a pool going down."""
        node = self._node(name)
        self._stop_all(node.processes)
        node.processes.clear()
        for pid in namespace_pids(node.namespace):      # what was started there by other means
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

    @staticmethod
    def _stop_all(processes: list[subprocess.Popen]) -> None:
        running = [p for p in processes if p.poll() is None]
        for process in running:
            process.terminate()
        deadline = time.monotonic() + STOP_TIMEOUT_S
        for process in running:
            try:
                process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=5)

    def call(self, name: str, function: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """`function(*args, **kwargs)` in a thread that entered node `name`'s namespace: its sockets
        (urllib, tritonclient, a socket returned) belong to that node, wherever they are used after."""
        namespace = self._node(name).namespace
        outcome: dict[str, Any] = {}

        def inside() -> None:
            try:
                _enter(namespace)
                outcome["value"] = function(*args, **kwargs)
            except BaseException as error:      # noqa: BLE001 - handed back to the caller's thread
                outcome["error"] = error

        thread = threading.Thread(target=inside, name=f"netlab-{name}", daemon=True)
        thread.start()
        thread.join()
        if "error" in outcome:
            raise outcome["error"]
        return outcome.get("value")

    def wait_for(self, name: str, condition: Callable[[], Any], timeout_s: float = 30.0, what: str = "condition") -> Any:
        """Poll `condition` inside node `name` until it is true."""
        from servers import wait_for

        return wait_for(lambda: self.call(name, condition), timeout_s, f"{what} in {name}")

    # the project's servers
    def start_mlserver(self, pool: str, *, http_port: int = 8000, grpc_port: int = 8001, home: Path | None = None,
                       repository: Path | None = None):
        """MLServer serving tests/mlserver/models/ (or `repository`) in pool `pool`'s namespace on its address,
        as the pool's Triton; returns once its models are ready (a mlserver_pools.Pool whose http/grpc are
        lab addresses)."""
        from mlserver_fixture import START_TIMEOUT_S
        from mlserver_pools import launch_pool

        node = self._node(pool, "pool")
        home = home or self.home / pool / f"mlserver-{http_port}"
        started = launch_pool(pool, home, host=node.address, http_port=http_port, grpc_port=grpc_port,
                              prefix=self.prefix(pool), **({"repository": repository} if repository else {}))
        self.track(pool, started.process)
        self.wait_for(pool, started.ready, START_TIMEOUT_S, f"mlserver to serve at {started.http} (log: {started.log})")
        return started

    def start_gateway(self, site: str, *args: str, home: Path | None = None, env: Mapping[str, str] | None = None):
        """`hetplace gateway --site SITE *args` in site `site`'s namespace, listening on its address
        (ports 8000, 8001, 9090 there); returns once it is ready (a servers.GatewayProcess; call its
        methods through `lab.call(site, ...)`)."""
        from servers import start_gateway

        node = self._node(site, "site")
        home = home or self.home / site
        home.mkdir(parents=True, exist_ok=True)
        gateway = start_gateway(site, home, *args, env=_lab_env(env), listen=node.address, ports=(8000, 8001, 9090),
                                prefix=self.prefix(site), within=lambda check: self.call(site, check))
        self.track(site, gateway.process)
        return gateway


if __name__ == "__main__":          # `python tests/netlab.py cleanup`: remove what dead labs left
    if sys.argv[1:] == ["cleanup"]:
        check_prerequisites()
        print("\n".join(cleanup_stale()) or "nothing stale")
