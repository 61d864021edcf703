"""The picture of a simulation: each route's latency against its SLO over time under every policy,
with the disruptions shaded, and the fleet's cost over time.

matplotlib is imported here, inside the function, so that the CLI starts fast when no plot is asked for.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hetplace.sim.runner import RouteKey, Simulation

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

POLICY_STYLES: dict[str, dict[str, Any]] = {
    "hetplace": {"color": "#2ca02c", "linewidth": 2.6, "zorder": 5},
    "oracle": {"color": "#1f1f1f", "linewidth": 1.3, "linestyle": (0, (2, 2)), "zorder": 6},
    "static": {"color": "#8c8c8c", "linewidth": 1.8, "zorder": 3},
    "gpu-only": {"color": "#d62728", "linewidth": 1.8, "linestyle": (0, (6, 2)), "zorder": 4},
    "edge-only": {"color": "#ff7f0e", "linewidth": 1.8, "linestyle": (0, (4, 1, 1, 1)), "zorder": 4},
}
DISRUPTION_COLOURS = {"link": "#ffb74d", "pool": "#e57373"}
DISRUPTION_LABELS = {"link": "link slower than declared", "pool": "pool down"}
CAP_TIMES_SLO = 3.0          # latencies above this many SLOs, and unserved routes, are drawn at the top
MAX_ROUTE_PANELS = 12


def plot_simulation(sim: Simulation, path: Path | None = None) -> Figure:
    """One panel per route (the worst MAX_ROUTE_PANELS when there are more) and one of cost; written
    as PNG to `path` when given."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    routes = sim.worst_routes(MAX_ROUTE_PANELS)
    figure = Figure(figsize=(11, 2.5 * (len(routes) + 1) + 1.2), layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots(len(routes) + 1, 1, sharex=True, squeeze=False)[:, 0]
    scale, unit = (60.0, "min") if sim.trace.duration_s >= 600 else (1.0, "s")
    times = [t / scale for t in sim.trace.step_times] + [sim.trace.duration_s / scale]

    for ax, route in zip(axes, routes):
        _shade(ax, sim, scale)
        _latency_panel(ax, sim, route, times)
    cost_ax = axes[-1]
    _shade(cost_ax, sim, scale)
    for name, run in sim.runs.items():
        costs = [s.cost_per_hour for s in run.steps]
        cost_ax.step(times, costs + costs[-1:], where="post", label=name, **_style(name))
    cost_ax.set_ylabel("$/h")
    cost_ax.set_title("cost of the placements in effect (a placement on a pool that is down still costs)",
                      fontsize=9, loc="left")
    cost_ax.set_ylim(bottom=0)
    cost_ax.set_xlabel(f"time ({unit})")
    cost_ax.set_xlim(0, times[-1])

    handles, _ = cost_ax.get_legend_handles_labels()
    handles += _bar_keys() + _disruption_patches(sim)
    figure.legend(handles=handles, loc="outside lower center", ncols=3, fontsize=9)
    shown = "" if len(routes) == len(sim.routes) else f" ({len(routes)} worst of {len(sim.routes)} routes)"
    figure.suptitle(f"{sim.trace.name}: latency per route vs SLO, and cost, per policy{shown}")
    if path is not None:
        figure.savefig(path, dpi=110)
    return figure


def _latency_panel(ax: Axes, sim: Simulation, route: RouteKey, times: list[float]) -> None:
    workload, site = route
    slo = sim.slo_latency_ms[workload]
    cap = CAP_TIMES_SLO * slo
    percentile = next(w.percentile for w in sim.trace.workloads if w.key == workload)
    lanes = len(sim.runs)
    for i, (name, run) in enumerate(sim.runs.items()):
        latencies = [next((r.latency_ms for r in s.routes if (r.workload, r.site) == route), math.nan)
                     for s in run.steps]
        # an unserved step has no latency: the line breaks there and the lane bar says why
        clipped = [math.nan if math.isinf(value) else min(value, cap) for value in latencies]
        ax.step(times, clipped + clipped[-1:], where="post", label=name, **_style(name))
        # each policy has its own lane above the cap: a thick bar where the route went unserved,
        # a thin one where it was served but slower than the cap
        lane = cap * (1.06 + 0.07 * i)
        for start, end, unserved in _runs_over(latencies, cap):
            ax.hlines(lane, times[start], times[end], color=_style(name)["color"],
                      linewidth=5 if unserved else 1.5)
    ax.axhline(slo, color="#444444", linestyle="--", linewidth=1)
    ax.axhline(cap, color="#bbbbbb", linewidth=0.8)
    ax.text(0.002, slo, f" SLO p{percentile:g} {slo:g} ms", transform=ax.get_yaxis_transform(),
            va="bottom", fontsize=8, color="#444444")
    ax.set_ylim(0, cap * (1.06 + 0.07 * lanes))
    ax.set_ylabel("latency (ms)")
    ax.set_title(f"{workload} from {site}", fontsize=10, loc="left")


def _runs_over(latencies: list[float], cap: float) -> list[tuple[int, int, bool]]:
    """Contiguous steps [start, end) above the cap, split where unserved turns to slow or back."""
    runs: list[tuple[int, int, bool]] = []
    for i, value in enumerate(latencies):
        if not value > cap:
            continue
        unserved = math.isinf(value)
        if runs and runs[-1][1] == i and runs[-1][2] == unserved:
            runs[-1] = (runs[-1][0], i + 1, unserved)
        else:
            runs.append((i, i + 1, unserved))
    return runs


def _shade(ax: Axes, sim: Simulation, scale: float) -> None:
    for d in sim.disruptions:
        ax.axvspan(d.start_s / scale, d.end_s / scale, color=DISRUPTION_COLOURS[d.kind], alpha=0.18, linewidth=0)
    for event in sim.trace.events:
        if event.at_s < sim.trace.duration_s:
            ax.axvline(event.at_s / scale, color="#999999", linestyle=":", linewidth=0.8)


def _bar_keys() -> list:
    from matplotlib.lines import Line2D

    return [Line2D([], [], color="#777777", linewidth=5, label="bar above the grey line: unserved"),
            Line2D([], [], color="#777777", linewidth=1.5,
                   label=f"thin bar: served, over {CAP_TIMES_SLO:g}x SLO (one lane per policy)")]


def _disruption_patches(sim: Simulation) -> list:
    from matplotlib.patches import Patch

    patches = []
    for kind, colour in DISRUPTION_COLOURS.items():
        what = sorted({d.what for d in sim.disruptions if d.kind == kind})
        if what:
            names = ", ".join(what[:3]) + (f" +{len(what) - 3}" if len(what) > 3 else "")
            patches.append(Patch(color=colour, alpha=0.35, label=f"{DISRUPTION_LABELS[kind]}: {names}"))
    return patches


def _style(policy: str) -> dict[str, Any]:
    return POLICY_STYLES.get(policy, {"color": "#9467bd", "linewidth": 1.5})
