"""Model repositories for MLServer whose model serves at a variant's profile: the runtime in
tests/mlserver/profiled/ (mean latencyMs, tailLatencyMs at the SLO percentile, `concurrency` at once),
named as the workload's model, for `start_pools(..., models=repository)` of tests/mlserver_pools.py."""

from __future__ import annotations

import importlib.util
import json
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

from hetplace.api.workload import Profile
from mlserver_pools import Pool, start_pools

PROFILED = Path(__file__).parent / "mlserver" / "profiled"
RUNTIME_FILES = ("profiled.py", "service_time.py")


def _load_service_time():
    spec = importlib.util.spec_from_file_location("hetplace_tests_service_time", PROFILED / "service_time.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module      # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


ServiceTime = _load_service_time().ServiceTime     # the runtime's own distribution, to check a profile here


@dataclass(frozen=True)
class ServedProfile:
    """The numbers a profiled model serves by: what the engine reads from a variant and its SLO."""

    latency_ms: float
    tail_latency_ms: float
    percentile: float
    concurrency: int

    @classmethod
    def of(cls, profile: Profile, percentile: float) -> ServedProfile:
        """As the engine reads `profile` for an SLO at `percentile` (queueing.service_quantile_s): the tail
        from p90 up; below p90 the engine's quantile is the mean, so the service time is the constant mean."""
        tail_ms = profile.tail_latency_ms if profile.tail_latency_ms is not None else profile.latency_ms
        return cls(profile.latency_ms, tail_ms if percentile >= 90 else profile.latency_ms, percentile,
                   profile.concurrency)

    @property
    def service_time(self):
        return ServiceTime.from_profile(self.latency_ms, self.tail_latency_ms, self.percentile)


def profiled_repository(root: Path, name: str, latency_ms: float, tail_ms: float, percentile: float,
                        concurrency: int, *, response_bytes: int = 1000, seed: int | None = None) -> Path:
    """Write model `name` serving at this profile into the repository `root` (made if missing) and return
    `root`; call again with the same root for more models in one server.

    Raises ValueError, naming the value and its limit, for a profile no shifted exponential can serve."""
    ServiceTime.from_profile(latency_ms, tail_ms, percentile)
    if concurrency < 1:
        raise ValueError(f"concurrency {concurrency} of model {name} must be >= 1")
    folder = Path(root) / name
    folder.mkdir(parents=True)
    for file in RUNTIME_FILES:
        shutil.copy2(PROFILED / file, folder / file)
    settings = json.loads((PROFILED / "model-settings.json").read_text())
    settings["name"] = name
    settings["versions"] = [f"{name}/1"]
    settings["parameters"]["extra"] = {
        "latencyMs": latency_ms, "tailLatencyMs": tail_ms, "percentile": percentile,
        "concurrency": concurrency, "responseBytes": response_bytes, "seed": seed}
    (folder / "model-settings.json").write_text(json.dumps(settings, indent=2))
    return Path(root)


def start_profiled_pool(root: Path, pool: str, models: dict[str, ServedProfile], *,
                        seed: int | None = None) -> Pool:
    """One MLServer named `pool` under `root` serving each model at its profile; stop it with `.stop()`."""
    repository = Path(root) / f"{pool}-repository"
    for name, served in models.items():
        profiled_repository(repository, name, served.latency_ms, served.tail_latency_ms, served.percentile,
                            served.concurrency, seed=seed)
    [started] = start_pools([pool], Path(root) / "servers", models=repository)
    return started
