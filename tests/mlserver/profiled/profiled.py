"""A stand-in for a Triton model whose service time follows a variant's profile, served by MLServer in the tests.

Each request waits its turn for one of `concurrency` slots (FIFO: asyncio.Semaphore wakes its waiters
in order), then holds the slot for a service time drawn from service_time.ServiceTime — mean
`latencyMs`, `tailLatencyMs` at `percentile` — so one server behaves as the engine's replica of
`concurrency` servers with a queue in front. It waits with asyncio.sleep, never burning CPU, so many
of these share a small machine without stealing each other's cores. A sleep ends late by the event
loop's timer granularity (about 1 ms under uvloop, 5% of a 20 ms profile), so the model keeps a running
mean of that lateness and sleeps that much less: the time a request holds its slot is what it drew.

Parameters come from model-settings.json `parameters.extra` (`latencyMs`, `tailLatencyMs`,
`percentile`, `concurrency`, optional `responseBytes` (default 1000) and `seed`), or, for a key that
is not there, from the environment as HETPLACE_PROFILE_LATENCY_MS, _TAIL_LATENCY_MS, _PERCENTILE,
_CONCURRENCY, _RESPONSE_BYTES, _SEED. Any inputs are accepted and left unread (FP32 `scores`, BYTES, of
any size). The answer is one FP32 tensor `result` of responseBytes/4 zeros, and response parameters
`queue_us` and `service_us`: the time this request waited for a slot and the time it then held it.
"""

from __future__ import annotations

import asyncio
import os
import random
import time

from mlserver import MLModel
from mlserver.types import InferenceRequest, InferenceResponse, Parameters, ResponseOutput
from service_time import ServiceTime

ENV_PREFIX = "HETPLACE_PROFILE_"
ENV_NAMES = {"latencyMs": "LATENCY_MS", "tailLatencyMs": "TAIL_LATENCY_MS", "percentile": "PERCENTILE",
             "concurrency": "CONCURRENCY", "responseBytes": "RESPONSE_BYTES", "seed": "SEED"}
DEFAULT_RESPONSE_BYTES = 1000
LATENESS_WEIGHT = 0.1        # of the newest sleep in the running mean of lateness
MAX_LATENESS_S = 0.005       # one stall of the loop (a large request decoded) counts for no more


class ProfiledModel(MLModel):
    """Holds each request for a service time drawn from the profile, at most `concurrency` at once."""

    async def load(self) -> bool:
        extra = dict(self.settings.parameters.extra or {}) if self.settings.parameters else {}

        def setting(key: str, default=None):
            if key in extra and extra[key] is not None:
                return extra[key]
            value = os.environ.get(ENV_PREFIX + ENV_NAMES[key])
            if value is not None:
                return value
            if default is None and key in ("latencyMs", "concurrency"):
                raise ValueError(f"model {self.name}: parameters.extra.{key} (or ${ENV_PREFIX}{ENV_NAMES[key]}) is required")
            return default

        latency_ms = float(setting("latencyMs"))
        tail_latency_ms = float(setting("tailLatencyMs", latency_ms))
        percentile = float(setting("percentile", 99))
        concurrency = int(setting("concurrency"))
        if concurrency < 1:
            raise ValueError(f"model {self.name}: concurrency {concurrency} must be >= 1")
        self._service_time = ServiceTime.from_profile(latency_ms, tail_latency_ms, percentile)
        seed = setting("seed", "")
        self._rng = random.Random(int(seed)) if seed != "" else random.Random()
        self._slots = asyncio.Semaphore(concurrency)
        self._lateness_s = 0.0
        self._result = [0.0] * max(1, int(setting("responseBytes", DEFAULT_RESPONSE_BYTES)) // 4)
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        arrived = time.monotonic()
        async with self._slots:
            started = time.monotonic()
            drawn_s = self._service_time.draw_ms(self._rng) / 1000.0
            if drawn_s > 0:
                asked_s = max(0.0, drawn_s - self._lateness_s)
                await asyncio.sleep(asked_s)
                late_s = min(time.monotonic() - started - asked_s, MAX_LATENESS_S)
                self._lateness_s += LATENESS_WEIGHT * (late_s - self._lateness_s)
            service_s = time.monotonic() - started
        return InferenceResponse(
            model_name=self.name, model_version=self.version,
            parameters=Parameters(queue_us=round((started - arrived) * 1e6), service_us=round(service_s * 1e6)),
            outputs=[ResponseOutput(name="result", datatype="FP32", shape=[len(self._result)], data=self._result)])
