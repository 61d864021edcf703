"""How a simulation is shown: the JSON of docs/design.md §5 and the comparison printed in the terminal."""

from __future__ import annotations

import math
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from hetplace.sim.runner import PolicyRun, Simulation, StepOutcome

MAX_ROUTE_ROWS = 20
MAX_MOVE_LINES = 6


def simulation_json(sim: Simulation) -> dict[str, Any]:
    """`{scenario, steps, stepSeconds, gateway, policies: {name: {sloAttainment, meanCostPerHour, migrations,
    resizes, fallbackRouteSteps, savedRouteSteps, timeline}}}`. Beyond docs/design.md §5: `resizes` (replicas
    or encodings changed in place, not counted as migrations), and what the sites' gateways did —
    `gateway` (on or off), the route-steps served by a fallback and those it saved, and per route
    whether a fallback served it."""
    return {
        "scenario": sim.trace.name,
        "steps": len(sim.trace.step_times),
        "stepSeconds": _seconds(sim.trace.step_s),
        "gateway": sim.gateway,
        "policies": {
            name: {
                "sloAttainment": round(run.slo_attainment, 6),
                "meanCostPerHour": round(run.mean_cost_per_hour, 6),
                "migrations": run.migrations,
                "resizes": run.resizes,
                "fallbackRouteSteps": run.fallback_route_steps,
                "savedRouteSteps": run.saved_route_steps,
                "timeline": [_step_json(s) for s in run.steps],
            }
            for name, run in sim.runs.items()
        },
    }


def _step_json(step: StepOutcome) -> dict[str, Any]:
    return {
        "t": _seconds(step.t_s),
        "costPerHour": round(step.cost_per_hour, 6),
        "routes": [
            {
                "workload": r.workload,
                "site": r.site,
                "servedBy": r.served_by,
                "fallback": r.fallback,
                "requestsPerSecond": r.requests_per_second,
                "latencyMs": round(r.latency_ms, 3) if math.isfinite(r.latency_ms) else None,
                "withinSlo": r.within_slo,
                "whyMissed": r.why_missed,
            }
            for r in step.routes
        ],
        "moves": [
            {"workload": m.workload, "reason": m.reason, "kind": m.kind, "decidedAt": _seconds(m.decided_at_s),
             "from": m.before, "to": m.after, "why": m.why}
            for m in step.moves
        ],
        "unplaced": [{"workload": key, "why": why} for key, why in sorted(step.unplaced.items())],
    }


def _seconds(value: float) -> float | int:
    return int(value) if float(value).is_integer() else value


def print_simulation(console: Console, sim: Simulation) -> None:
    """The comparison per policy, attainment per route, what moved when, and what never ran."""
    console.print(summary_table(sim))
    console.print(route_table(sim))
    for run in sim.runs.values():
        for line in _notes(run):
            console.print(Text.assemble((f"{run.policy}: ", "bold"), line))


def summary_table(sim: Simulation) -> Table:
    trace = sim.trace
    table = Table(title=f"{trace.name}: {len(trace.step_times)} steps of {trace.step_s:g} s "
                        f"({trace.duration_s:g} s), {len(trace.workloads)} workload(s), {len(trace.pools)} pool(s)")
    for column in ("policy", "SLO attainment", "mean $/h", "migrations", "resizes", "worst route latency",
                   "route-steps missed", "saved by gateway"):
        table.add_column(column, justify="left" if column == "policy" else "right")
    for run in sim.runs.values():
        worst = run.worst_latency_ms
        table.add_row(
            Text(run.policy, style="bold" if run.policy == "hetplace" else ""),
            _attainment_cell(run.slo_attainment),
            f"{run.mean_cost_per_hour:.4f}",
            str(run.migrations),
            str(run.resizes),
            f"{worst:.1f} ms" if math.isfinite(worst) else Text("unserved", style="red"),
            str(run.missed_route_steps()),
            str(run.saved_route_steps) if sim.gateway else Text("off", style="dim"),
        )
    return table


def route_table(sim: Simulation) -> Table:
    """SLO attainment of each (workload, site) under each policy; the worst routes when there are many."""
    by_policy = {name: run.route_attainment() for name, run in sim.runs.items()}
    shown, total = sim.worst_routes(MAX_ROUTE_ROWS), len(sim.routes)
    title = "SLO attainment per route"
    if len(shown) < total:
        title += f" (the {len(shown)} worst of {total})"
    table = Table(title=title)
    table.add_column("workload")
    table.add_column("site")
    table.add_column("SLO", justify="right")
    for name in sim.runs:
        table.add_column(name, justify="right")
    slo = sim.slo_latency_ms
    for workload, site in shown:
        table.add_row(workload, site, f"{slo[workload]:g} ms",
                      *(_attainment_cell(by_policy[name].get((workload, site), 1.0)) for name in sim.runs))
    return table


def _attainment_cell(share: float) -> Text:
    style = "green" if share >= 0.99 else "yellow" if share >= 0.95 else "red"
    return Text(f"{share:.2%}", style=style)


def _notes(run: PolicyRun) -> list[str]:
    """What moved and when (migrations, not first placements), and workloads left without a placement."""
    lines = []
    moves = [(s.t_s, m) for s in run.steps for m in s.moves if m.reason != "place"]
    for t_s, m in moves[:MAX_MOVE_LINES]:
        lines.append(f"t={t_s:g} s {m.workload} {m.reason} (decided at t={m.decided_at_s:g} s): "
                     f"{m.before or 'nothing'} -> {m.after}; {m.why}")
    if len(moves) > MAX_MOVE_LINES:
        lines.append(f"... and {len(moves) - MAX_MOVE_LINES} more moves (-o json has them all)")
    served = [(s.t_s, r) for s in run.steps for r in s.routes if r.fallback]
    if served:
        first_t_s, first = served[0]
        lines.append(f"the gateway served {len(served)} route-step(s) from a fallback and saved "
                     f"{run.saved_route_steps} (within the SLO, missed without it); first at t={first_t_s:g} s: "
                     f"{first.workload} {first.site} -> {first.served_by}")
    unplaced: dict[str, tuple[int, str]] = {}
    for s in run.steps:
        for key, why in s.unplaced.items():
            count, first_why = unplaced.get(key, (0, why))
            unplaced[key] = (count + 1, first_why)
    for key, (count, why) in sorted(unplaced.items()):
        when = "never placed" if count == len(run.steps) else f"unplaced at {count} of {len(run.steps)} steps"
        lines.append(f"{key} {when}: {why}")
    return lines
