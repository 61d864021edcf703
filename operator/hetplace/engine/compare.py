"""Say in words what changed between two decisions for the same workload, and why."""

from __future__ import annotations

from typing import Mapping

from hetplace.engine.decision import Decision, RoutePlan


def _routes(d: Decision) -> dict[str, tuple[str, str, RoutePlan]]:
    return {r.site: (g.pool, g.variant, r) for g in d.groups for r in g.routes}


def _where(pool: str, variant: str, r: RoutePlan) -> str:
    return f"{pool}/{variant} ({r.encoding}, {r.predicted_latency_ms:.1f} ms)"


def describe_moves(before: Decision, after: Decision, before_now: Decision | None = None,
                   why_not_stay: Mapping[str, str] | None = None) -> list[str]:
    """One sentence per site whose route changed. `before_now` is the old placement judged on the new
    conditions; `why_not_stay` says, per site, why its old group could not stay."""
    if not after.feasible:
        return [f"no placement meets the spec any more: {after.reason}"]
    if not before.feasible:
        return [f"a placement exists again at ${after.cost_per_hour:.4f}/h"]
    old, new = _routes(before), _routes(after)
    why_not_stay = why_not_stay or {}
    if before_now is None:
        overall = ""
    elif not before_now.feasible:
        overall = f" because the old placement {before_now.reason}"
    else:
        saving = before_now.cost_per_hour - after.cost_per_hour
        overall = f" because it saves ${saving:.4f}/h" if saving > 1e-9 else ""
    lines = []
    for site in sorted(new):
        pool, variant, route = new[site]
        if site not in old:
            lines.append(f"{site} is new: {_where(pool, variant, route)}")
            continue
        was_pool, was_variant, was = old[site]
        why = f" because {why_not_stay[site]}" if site in why_not_stay else overall
        if (was_pool, was_variant) != (pool, variant):
            lines.append(f"{site} moves from {_where(was_pool, was_variant, was)} to {_where(pool, variant, route)}{why}")
        elif was.encoding != route.encoding:
            lines.append(f"{site} stays on {pool}/{variant} but switches from {was.encoding} to {route.encoding}{why}")
    if not lines:
        lines.append("nothing moves")
    lines.append(f"cost ${before.cost_per_hour:.4f}/h -> ${after.cost_per_hour:.4f}/h")
    return lines
