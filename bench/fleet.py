"""Generated pools and workloads for benchmarks, with profiles and prices like public figures.

Profiles follow MLPerf-style single-stream numbers for an image model: an L4 runs ResNet-50 in
about 0.36 ms, a Jetson Orin in about 0.63 ms, an x86 or Graviton CPU roughly ten times slower;
the variants here are heavier models (x5 to x40 of that). Prices follow on-demand list prices:
g6.xlarge (1x L4, 4 vCPU, 16 GiB) ~$0.81/h, c7i.xlarge (4 vCPU, 8 GiB) ~$0.178/h,
c7g.xlarge (Graviton, 4 vCPU, 8 GiB) ~$0.145/h; an owned Orin box is priced by TCO.
"""

from __future__ import annotations

import dataclasses
import math
import random

from hetplace.api.pool import tco_cost_per_hour
from hetplace.engine.snapshot import Encoding, LinkState, Pool, Resources, Snapshot, Traffic, Variant, Workload

GiB = 2**30
SINGLE_STREAM_MS = {"gpu": 0.36, "arm": 0.63, "cpu": 3.6}
NODE = {
    "gpu": (Resources(4, 16 * GiB, 1), 0.81),
    "cpu": (Resources(4, 8 * GiB, 0), 0.178),
    "arm": (Resources(8, 32 * GiB, 1), tco_cost_per_hour(1500, 3, 40, 1.1, 0.25, 0.03)),
}
HARDWARE = ("gpu", "cpu", "arm")


def sites(count: int) -> list[str]:
    return [f"site-{i:02d}" for i in range(count)]


def pools(rnd: random.Random, count: int, site_names: list[str]) -> tuple[Pool, ...]:
    """Cloud GPU/CPU pools linked to every site; Arm pools at a site, linked to a few others."""
    out = []
    for i in range(count):
        hardware = HARDWARE[i % 3]
        node, price = NODE[hardware]
        if hardware == "arm":
            home = rnd.choice(site_names)
            linked = rnd.sample(site_names, k=min(2, len(site_names)))
        else:
            home = f"cloud-{i % 4}"
            linked = site_names
        links = {s: LinkState(rnd.choice([250, 500, 1000, 2000, 5000, 20000, 100000]), rnd.uniform(5, 80))
                 for s in linked if s != home}
        out.append(Pool(f"{hardware}-pool-{i:03d}", hardware, rnd.choice(["eu-west-1", "eu-central-1"]),
                        home, node, rnd.randint(2, 16), price * rnd.uniform(0.9, 1.1), links))
    return tuple(out)


def workload(rnd: random.Random, site_names: list[str], variants: int = 8, encodings: int = 4,
             objective: str = "MinCost", name: str = "w") -> Workload:
    vs = []
    for j in range(variants):
        hardware = HARDWARE[j % 3]
        mean = SINGLE_STREAM_MS[hardware] * rnd.uniform(5, 40)
        request = Resources(2, 4 * GiB, 0 if hardware == "cpu" else 1)
        vs.append(Variant(f"{hardware}-v{j}", hardware, rnd.uniform(0.83, 0.86), mean, mean * 1.5,
                          rnd.choice([1, 2, 4]), request))
    encs = tuple(Encoding(f"enc-{k}", int(224_000 / 3**k), -0.002 * k) for k in range(encodings))
    traffic = tuple(Traffic(s, round(rnd.uniform(1, 50), 1)) for s in site_names)
    return Workload("bench", name, 1000, encs, tuple(vs), 150, 99, 0.82, traffic, objective=objective)


def instance(seed: int, n_pools: int = 50, n_variants: int = 8, n_encodings: int = 4, n_sites: int = 8,
             objective: str = "MinCost") -> tuple[Workload, Snapshot]:
    rnd = random.Random(seed)
    names = sites(n_sites)
    return workload(rnd, names, n_variants, n_encodings, objective), Snapshot(pools(rnd, n_pools, names))


# --- fleets: many workloads sharing the pools ----------------------------------------------------

FLEET_SITES = 8
WORKLOADS_PER_SITE = 10     # sites grow with the fleet, so links carry a plausible share of it


def fleet_workload(rnd: random.Random, site_names: list[str], name: str) -> Workload:
    """A model with a variant per hardware class, raw and compressed inputs, traffic from 1-2 sites."""
    vs = []
    for hardware in HARDWARE:
        mean = SINGLE_STREAM_MS[hardware] * rnd.uniform(5, 20)
        request = Resources(rnd.choice([1, 2]), rnd.choice([2, 4]) * GiB, 0 if hardware == "cpu" else 1)
        vs.append(Variant(f"{hardware}-v", hardware, rnd.uniform(0.83, 0.86), mean, mean * 1.5,
                          rnd.choice([1, 2, 4]), request))
    encs = (Encoding("raw", 150_000), Encoding("compressed", 30_000, -0.003))
    where = rnd.sample(site_names, k=1 if rnd.random() < 0.7 else 2)
    traffic = tuple(Traffic(s, round(rnd.uniform(2, 40), 1)) for s in where)
    return Workload("fleet", name, 1000, encs, tuple(vs), rnd.choice([100, 150, 250]), 99, 0.82, traffic)


def fleet(seed: int, n_workloads: int, n_pools: int, load: float) -> tuple[tuple[Workload, ...], Snapshot]:
    """Workloads and pools sized so that the workloads' own cheapest placements (each alone on
    roomy pools) ask for `load` (0.7, 0.95) of each hardware class's nodes (by dominant share) and
    of the usable bandwidth (maxLinkUtilization) of every link they use: the cheap pools and the
    fast links run out first, and the fleet has to spread."""
    from hetplace.engine import solve
    from hetplace.engine.cost import dominant_share
    from hetplace.engine.usage import taken_by
    rnd = random.Random(seed)
    names = sites(max(FLEET_SITES, n_workloads // WORKLOADS_PER_SITE))
    shaped = pools(rnd, n_pools, names)
    roomy = Snapshot(tuple(dataclasses.replace(p, node_count=100_000) for p in shaped))
    by_name = {p.name: p for p in shaped}
    nodes_wanted: dict[str, float] = {h: 0.0 for h in HARDWARE}
    link_wanted: dict[tuple[str, str], float] = {}
    workloads = []
    while len(workloads) < n_workloads:     # only workloads that can be placed on empty pools
        w = fleet_workload(rnd, names, f"w{len(workloads):05d}")
        d = solve(w, roomy)
        if not d.feasible:
            continue
        workloads.append(w)
        for g in d.groups:
            pool = by_name[g.pool]
            request = next(v.resources for v in w.variants if v.name == g.variant)
            nodes_wanted[pool.hardware] += dominant_share(request, pool.node) * g.replicas
        for link, rate in taken_by(w, d)[1].items():
            link_wanted[link] = link_wanted.get(link, 0.0) + rate
    out = []
    for p in shaped:
        of_class = sum(q.hardware == p.hardware for q in shaped)
        links = dict(p.links)
        for (site, pool), rate in link_wanted.items():
            if pool == p.name and site in links:
                needed_kbps = rate / 1000 / (0.8 * load)
                links[site] = LinkState(max(links[site].bandwidth_kbps, round(needed_kbps, 1)), links[site].rtt_ms)
        out.append(dataclasses.replace(p, node_count=max(1, math.ceil(nodes_wanted[p.hardware] / load / of_class)),
                                       links=links))
    return tuple(workloads), Snapshot(tuple(out))
