"""A fix to kopf 1.45 that the operator needs at scale, applied at start (`apply`).

kopf holds every handler back until its indexes are full with a `ToggleSet`: one toggle per object
listed, dropped once that object is indexed, while each indexed object waits for the whole set.
kopf wakes every waiter on every toggle added or dropped, so filling the indexes costs the square of
the number of objects: about a minute for the 4,000 objects of 1,000 workloads and their children,
before the first decision after a restart. Waking the waiters only when the set turns on or off is
enough for them (they wait for the set's state) and makes it linear. The fix is limited to the
kopf version pinned in pyproject.toml: another version runs as it is, with a warning.
"""

from __future__ import annotations

import logging
from typing import Iterable

import kopf
from kopf._cogs.aiokits import aiotoggles

FIXED_VERSION = "1.45.2"
log = logging.getLogger("hetplace")


async def _make_toggle(self: aiotoggles.ToggleSet, __val: bool = False, *, name: str | None = None) -> aiotoggles.Toggle:
    toggle = aiotoggles.Toggle(__val, name=name, condition=self._condition)
    async with self._condition:
        before = self.is_on()
        self._toggles.add(toggle)
        if self.is_on() != before:
            self._condition.notify_all()
    return toggle


async def _drop_toggles(self: aiotoggles.ToggleSet, toggles: Iterable[aiotoggles.Toggle]) -> None:
    async with self._condition:
        before = self.is_on()
        self._toggles.difference_update(toggles)
        if self.is_on() != before:
            self._condition.notify_all()


async def _drop_toggle(self: aiotoggles.ToggleSet, toggle: aiotoggles.Toggle) -> None:
    await _drop_toggles(self, (toggle,))


def apply() -> bool:
    """Patch kopf's ToggleSet (only the pinned version); whether it was patched."""
    if kopf.__version__ != FIXED_VERSION:
        log.warning("kopf %s is not the version hetplace pins (%s): its index start-up is left as it is "
                    "(slow with thousands of objects)", kopf.__version__, FIXED_VERSION)
        return False
    aiotoggles.ToggleSet.make_toggle = _make_toggle
    aiotoggles.ToggleSet.drop_toggle = _drop_toggle
    aiotoggles.ToggleSet.drop_toggles = _drop_toggles
    return True
