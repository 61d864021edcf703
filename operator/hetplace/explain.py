"""`hetplace explain`: a decision from manifest files, without a cluster, and its presentation."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console, Group
from rich.table import Table
from rich.text import Text

from hetplace.api.errors import InvalidObject, Problem
from hetplace.api.load import load_manifests, load_telemetry
from hetplace.api.models import ComputePool, InferenceWorkload
from hetplace.engine import Decision, Snapshot, assignment_of, describe_moves, evaluate
from hetplace.engine.evaluate import encodings_of, why_sites_cannot_stay
from hetplace.engine.from_api import observations_from, pool_from_spec, workload_from_spec
from hetplace.engine.observed import with_links, with_traffic
from hetplace.engine.snapshot import Pool, Workload
from hetplace.engine.fleet import place_in_order


@dataclass(frozen=True)
class Case:
    """One workload decided on one set of pools, with the SLO it was decided against."""

    workload: Workload
    decision: Decision


def read_inputs(workload_file: Path, pools_path: Path | None) -> tuple[list[InferenceWorkload], list[ComputePool]]:
    """Workloads from `workload_file`; pools from `pools_path` (or from the workload file)."""
    own = load_manifests([workload_file])
    if not own.workloads:
        raise InvalidObject([Problem(None, None, "holds no InferenceWorkload")], source=str(workload_file))
    pool_objects = load_manifests([pools_path]).pools if pools_path else own.pools
    if not pool_objects:
        where = str(pools_path or workload_file)
        raise InvalidObject([Problem(None, None, "holds no ComputePool (give pools with --pools FILE_OR_DIR)")],
                            source=where)
    return own.workloads, pool_objects


@dataclass(frozen=True)
class Inputs:
    """What the deciding commands read: the manifests, and the engine's view of them as observed."""

    workload_objects: list[InferenceWorkload]
    pool_objects: list[ComputePool]
    declared: list[Workload]
    pools: tuple[Pool, ...]          # observed: telemetry laid over the declared links
    workloads: list[Workload]        # observed traffic
    declared_pools: tuple[Pool, ...]


def inputs(workload_file: Path, pools_path: Path | None, telemetry_path: Path | None) -> Inputs:
    objects, pool_objects = read_inputs(workload_file, pools_path)
    declared = [workload_from_spec(o.metadata.namespace or "default", o.metadata.name, o.spec) for o in objects]
    declared_pools = tuple(pool_from_spec(p.metadata.name, p.spec) for p in pool_objects)
    pools, workloads = observe(declared_pools, declared, telemetry_path)
    return Inputs(objects, pool_objects, declared, pools, workloads, declared_pools)


def observe(pools: tuple[Pool, ...], workloads: list[Workload], telemetry_path: Path | None):
    """Lay a telemetry file over the declared pools and workloads."""
    if telemetry_path is None:
        return pools, workloads
    telemetry = load_telemetry(telemetry_path)
    links, traffic, problems = observations_from(telemetry.links, telemetry.traffic, pools, workloads)
    if problems:
        raise InvalidObject(problems, source=str(telemetry_path), kind="Telemetry")
    return with_links(pools, links), [with_traffic(w, traffic) for w in workloads]


def decide(workloads: list[Workload], pools: tuple[Pool, ...]) -> list[Case]:
    """Decide the workloads in file order; each one's placement takes capacity and link bandwidth
    from those after it, as in a cluster where they arrive one by one."""
    return [Case(w, d) for w, d in place_in_order(workloads, Snapshot(pools))]


def what_moved(before: Case, after: Case, pools_after: tuple[Pool, ...]) -> list[str]:
    """Sentences on what moved between the declared and the observed conditions, and why."""
    if not before.decision.feasible:
        return describe_moves(before.decision, after.decision)
    snapshot, assignment = Snapshot(pools_after), assignment_of(before.decision)
    return describe_moves(before.decision, after.decision, evaluate(after.workload, snapshot, assignment),
                          why_sites_cannot_stay(after.workload, snapshot, assignment, encodings_of(before.decision)))


# --- presentation -------------------------------------------------------------------------------

def decision_json(d: Decision) -> dict[str, Any]:
    """The JSON of docs/design.md §5: exactly these keys."""
    return {
        "workload": d.workload,
        "feasible": d.feasible,
        "costPerHour": round(d.cost_per_hour, 6),
        "placements": [
            {
                "pool": g.pool,
                "variant": g.variant,
                "replicas": g.replicas,
                "costPerHour": round(g.cost_per_hour, 6),
                "routes": [
                    {
                        "site": r.site,
                        "encoding": r.encoding,
                        "requestsPerSecond": r.requests_per_second,
                        "predictedLatencyMs": round(r.predicted_latency_ms, 3),
                    }
                    for r in g.routes
                ],
            }
            for g in d.groups
        ],
        "rejected": [{"pool": r.pool, "variant": r.variant, "reason": r.reason} for r in d.rejected],
    }


def decision_table(case: Case, title: str | None = None) -> Group:
    d, w = case.decision, case.workload
    if d.feasible:
        head = Text.assemble(
            (f"{d.workload}", "bold"), "  ",
            ("placed", "green"), f"  ${d.cost_per_hour:.4f}/h  ",
            f"worst p{w.percentile:g} {d.worst_latency_ms:.1f} ms (SLO {w.slo_latency_ms:g} ms)  {d.objective}",
            "" if d.method == "exact" else f"  ({d.method}: not proven optimal)",
        )
    else:
        head = Text.assemble((f"{d.workload}", "bold"), "  ", ("infeasible", "red"), "  ", d.reason)
    routes = Table(title=title, show_lines=False, expand=False)
    for column in ("pool", "variant", "replicas", "$/h", "site", "encoding", "req/s", "p-latency ms",
                   "network ms", "compute ms", "link use"):
        routes.add_column(column, justify="right" if column not in ("pool", "variant", "site", "encoding") else "left")
    for g in d.groups:
        for i, r in enumerate(g.routes):
            routes.add_row(
                g.pool if i == 0 else "", g.variant if i == 0 else "",
                str(g.replicas) if i == 0 else "", f"{g.cost_per_hour:.4f}" if i == 0 else "",
                r.site, r.encoding, f"{r.requests_per_second:g}", f"{r.predicted_latency_ms:.1f}",
                f"{r.network_ms:.1f}", f"{r.compute_ms:.1f}", f"{r.link_utilization:.0%}",
            )
    rejected = Table(title="not chosen", show_header=True, expand=False)
    for column in ("pool", "variant", "filter", "reason"):
        rejected.add_column(column, overflow="fold")
    for r in d.rejected:
        rejected.add_row(r.pool, r.variant or "-", r.filter, Text(r.reason))
    parts: list[Any] = [head]
    if d.groups:
        parts.append(routes)
    if d.rejected:
        parts.append(rejected)
    return Group(*parts)


def _route_cells(d: Decision) -> dict[str, str]:
    return {r.site: f"{g.pool}/{g.variant} x{g.replicas}, {r.encoding}, {r.predicted_latency_ms:.1f} ms"
            for g in d.groups for r in g.routes}


def comparison_table(before: Case, after: Case, before_title: str, after_title: str) -> Table:
    """Each site's route under two conditions, side by side, and the cost of each."""
    table = Table(title=f"{after.decision.workload}: where each site's requests go")
    table.add_column("site")
    table.add_column(before_title)
    table.add_column(after_title)
    old, new = _route_cells(before.decision), _route_cells(after.decision)
    for site in sorted(set(old) | set(new)):
        moved = old.get(site) is not None and new.get(site) is not None and \
            old[site].split(",")[:2] != new[site].split(",")[:2]
        table.add_row(site, old.get(site, "-"), Text(new.get(site, "-"), style="bold yellow" if moved else ""))
    table.add_row("$/h", _cost_cell(before.decision), _cost_cell(after.decision))
    return table


def _cost_cell(d: Decision) -> str:
    return f"${d.cost_per_hour:.4f}/h" if d.feasible else "infeasible"


def print_cases(console: Console, cases: list[Case], title: str | None = None) -> None:
    for case in cases:
        console.print(decision_table(case, title))
        console.print()
