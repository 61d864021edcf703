"""Which operator instance runs the rebalance loop: the one kopf's peering leaves running.

kopf pauses an instance while another live peer has a higher priority, and pauses every instance
of a tie. The same rule, applied to the peering object's status (`{identity: {priority, lastseen,
lifetime}}`, as kopf writes it), tells an instance whether it is the one still running — so the
periodic rebalance runs exactly where the event handlers run. Pure: the time is passed in.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any, Mapping


def _alive(peer: Mapping[str, Any], now: datetime) -> bool:
    lastseen = peer.get("lastseen")
    if not lastseen:
        return True           # kopf counts a peer that never said when as seen now
    seen = datetime.fromisoformat(str(lastseen).replace("Z", "+00:00"))
    return seen + timedelta(seconds=int(peer.get("lifetime", 60))) > now


def is_leader(peers: Mapping[str, Mapping[str, Any]] | None, identity: str, priority: int, now: datetime) -> bool:
    """True when no other live peer has a priority at or above ours (kopf would pause us then)."""
    for other, peer in (peers or {}).items():
        if other != identity and _alive(peer, now) and int(peer.get("priority", 0)) >= priority:
            return False
    return True


def peering_objects(settings) -> list[tuple[str, str | None]]:
    """kopf's peering objects for these settings: one cluster-wide, or one per watched namespace."""
    if not settings.watch_namespaces:
        return [("ClusterKopfPeering", None)]
    return [("KopfPeering", namespace) for namespace in settings.watch_namespaces]
