"""Resource amounts (cpu, memory, accelerators) kept as written and exposed parsed."""

from __future__ import annotations

from pydantic import Field

from hetplace.api.quantity import parse_cpu, parse_memory
from hetplace.api.wire import Quantity, SpecModel

MAX_ACCELERATORS = 64


class Resources(SpecModel):
    """CPU, memory and accelerators, requested per replica or counted per node or pool."""

    cpu: Quantity
    """CPU, e.g. "2" or "500m"."""
    memory: Quantity
    """Memory, e.g. "4Gi"."""
    accelerators: int = Field(default=0, ge=0, le=MAX_ACCELERATORS)
    """Accelerators, requested through the pool's accelerator resource name."""

    @property
    def cpu_cores(self) -> float:
        """CPU in cores."""
        return parse_cpu(self.cpu)

    @property
    def memory_bytes(self) -> int:
        """Memory in bytes."""
        return parse_memory(self.memory)
