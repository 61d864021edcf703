"""Generated pools and workloads for benchmarks, with profiles and prices like public figures.

Profiles follow MLPerf-style single-stream numbers for an image model: an L4 runs ResNet-50 in
about 0.36 ms, a Jetson Orin in about 0.63 ms, an x86 or Graviton CPU roughly ten times slower;
the variants here are heavier models (x5 to x40 of that). Prices follow on-demand list prices:
g6.xlarge (1x L4, 4 vCPU, 16 GiB) ~$0.81/h, c7i.xlarge (4 vCPU, 8 GiB) ~$0.178/h,
c7g.xlarge (Graviton, 4 vCPU, 8 GiB) ~$0.145/h; an owned Orin box is priced by TCO.
"""

from __future__ import annotations

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
