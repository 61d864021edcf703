"""MLServer serving a model at a variant's profile (tests/mlserver/profiled/): the mean and the tail of its
service time as a real tritonclient sees them, its `concurrency` slots, and the request sizes of the study."""

from __future__ import annotations

import asyncio
import math
import time

import numpy as np
import pytest
import tritonclient.grpc as triton_grpc
import tritonclient.http as triton_http
import tritonclient.http.aio as triton_http_aio
from mlserver_pools import Pool
from mlserver_profiles import ServedProfile, ServiceTime, profiled_repository, start_profiled_pool

from hetplace.api.workload import Profile

pytestmark = pytest.mark.integration

PROFILED = ("classifier", 20.0, 35.0, 99.0, 2)     # name, latencyMs, tailLatencyMs at p99, concurrency
LOOPBACK = ("loopback", 0.0, 0.0, 99.0, 64)          # no service time: what the server and client cost alone
NARROW = ("narrow", 100.0, 100.0, 99.0, 2)           # a constant 100 ms, two at once
WIDE = ("wide", 100.0, 100.0, 99.0, 6)               # the same, six at once: the control for NARROW
SEQUENTIAL_REQUESTS = 300
JSON = {"Content-Type": "application/json"}          # the aio client leaves it out, and MLServer then reads a string
RESULT_VALUES = 250                                  # responseBytes 1000 as FP32
STUDY_REQUEST_BYTES = {"classification raw": 224_000, "classification compressed": 32_830,
                       "vqa raw": 372_580, "vqa compressed": 20_390}


@pytest.fixture(scope="module")
def pool(tmp_path_factory) -> Pool:
    models = {name: ServedProfile(*numbers) for name, *numbers in (PROFILED, LOOPBACK, NARROW, WIDE)}
    started = start_profiled_pool(tmp_path_factory.mktemp("profiled"), "profiled", models, seed=16)
    try:
        yield started
    finally:
        started.stop()


def fp32_input(values: int) -> triton_http.InferInput:
    tensor = triton_http.InferInput("scores", [values], "FP32")
    tensor.set_data_from_numpy(np.ones(values, dtype=np.float32), binary_data=False)   # MLServer reads JSON tensors only
    return tensor


def timed_ms(client: triton_http.InferenceServerClient, model: str, inputs) -> tuple[float, float]:
    """The latency the client saw and the time the model held the request (ms)."""
    started = time.perf_counter()
    result = client.infer(model, inputs)
    return (time.perf_counter() - started) * 1000.0, result.get_response()["parameters"]["service_us"] / 1000.0


@pytest.mark.parametrize(("latency_ms", "tail_ms", "percentile", "shift_ms", "scale_ms"), [
    (20, 35, 99, 20 - 15 / (math.log(100) - 1), 15 / (math.log(100) - 1)),
    (30, 45, 99, 30 - 15 / (math.log(100) - 1), 15 / (math.log(100) - 1)),
    (12, 12, 50, 12, 0),
], ids=["a 20 ms mean with a 35 ms p99 is a 15.8 ms shift and a 4.2 ms exponential",
        "openvino-int8's 30/45 ms profile keeps the same exponential, shifted further",
        "a tail equal to the mean is a constant service time at any percentile"])
def test_service_time_has_the_profile_mean_and_tail(latency_ms, tail_ms, percentile, shift_ms, scale_ms):
    service = ServiceTime.from_profile(latency_ms, tail_ms, percentile)
    assert service.shift_ms == pytest.approx(shift_ms)
    assert service.scale_ms == pytest.approx(scale_ms, abs=1e-12)
    assert service.mean_ms == pytest.approx(latency_ms)
    assert service.quantile_ms(percentile) == pytest.approx(tail_ms)


@pytest.mark.parametrize(("latency_ms", "tail_ms", "percentile", "limit"), [
    (20, 100, 99, "must be <= 92.1034"),
    (20, 15, 99, "must be >= latencyMs 20"),
    (20, 35, 50, "needs a percentile above 63.2"),
], ids=["a tail beyond mean x ln(100) has no shifted exponential at p99",
        "a tail below the mean is refused",
        "a tail above the mean at the median is refused"])
def test_a_profile_no_shifted_exponential_serves_names_its_limit(tmp_path, latency_ms, tail_ms, percentile, limit):
    with pytest.raises(ValueError, match=limit):
        profiled_repository(tmp_path, "refused", latency_ms, tail_ms, percentile, 2)


@pytest.mark.parametrize(("percentile", "tail_ms"), [(99, 45), (90, 45), (75, 30)],
                         ids=["at p99 the model serves the tail profile", "at p90 too",
                              "below p90 the engine reads the mean, so the service time is the constant mean"])
def test_served_profile_reads_a_variant_as_the_engine_does(percentile, tail_ms):
    served = ServedProfile.of(Profile(latencyMs=30, tailLatencyMs=45, concurrency=2), percentile)
    assert (served.latency_ms, served.tail_latency_ms, served.concurrency) == (30, tail_ms, 2)
    assert served.service_time.quantile_ms(percentile) == pytest.approx(tail_ms)


def test_sequential_requests_see_the_profile_mean_and_tail(pool):
    """At low load nothing queues: client latency = loopback overhead + service time. Requests to the
    profiled and to the loopback model alternate, so the overhead subtracted is this run's own."""
    name, latency_ms, tail_ms, percentile, _ = PROFILED
    client = triton_http.InferenceServerClient(f"127.0.0.1:{pool.http_port}")
    inputs = [fp32_input(16)]
    for _ in range(20):                                     # connections, caches and the lateness estimate settle
        client.infer(name, inputs), client.infer(LOOPBACK[0], inputs)
    profiled, held, loopback = [], [], []
    for _ in range(SEQUENTIAL_REQUESTS):
        seen_ms, held_ms = timed_ms(client, name, inputs)
        profiled.append(seen_ms), held.append(held_ms)
        loopback.append(timed_ms(client, LOOPBACK[0], inputs)[0])
    overhead_ms = float(np.mean(loopback))
    mean_ms = float(np.mean(profiled)) - overhead_ms
    p99_ms = float(np.percentile(profiled, percentile)) - overhead_ms
    # 300 draws put their sample p99 anywhere in about 30-41 ms (1st-99th percentile over seeds); the
    # model's own figures say how much of a miss is the sample and how much the path to the client.
    print(f"loopback {overhead_ms:.2f} ms; service mean {mean_ms:.2f} ms (profile {latency_ms:g}, held "
          f"{np.mean(held):.2f}), p{percentile:g} {p99_ms:.2f} ms (profile {tail_ms:g}, held "
          f"{np.percentile(held, percentile):.2f})")
    assert mean_ms == pytest.approx(latency_ms, rel=0.15)
    assert p99_ms == pytest.approx(tail_ms, rel=0.25)


async def _at_once(pool: Pool, model: str, requests: int) -> tuple[float, list[float], list[float]]:
    """Send `requests` at once; the time until the last answer, each one's latency and its wait for a slot (ms)."""
    client = triton_http_aio.InferenceServerClient(f"127.0.0.1:{pool.http_port}", conn_limit=requests)
    try:
        inputs = [fp32_input(16)]
        await asyncio.gather(*(client.is_server_ready() for _ in range(requests)))   # connections open first

        async def one() -> tuple[float, float]:
            result = await client.infer(model, inputs, headers=JSON)
            return (time.perf_counter() - started) * 1000.0, result.get_response()["parameters"]["queue_us"] / 1000.0

        started = time.perf_counter()
        answers = await asyncio.gather(*(one() for _ in range(requests)))
        return (time.perf_counter() - started) * 1000.0, sorted(a for a, _ in answers), sorted(q for _, q in answers)
    finally:
        await client.close()


def test_requests_beyond_concurrency_queue_in_waves(pool):
    """Six requests of a constant 100 ms at once: with six slots one wave, with two three waves — two
    served at once, the rest waiting their turn (0, 100 and 200 ms), and the last done after ≈ 300 ms."""
    wide_ms, _, wide_queue_ms = asyncio.run(_at_once(pool, WIDE[0], 6))
    narrow_ms, narrow_latency_ms, narrow_queue_ms = asyncio.run(_at_once(pool, NARROW[0], 6))
    print(f"6 at once: wide {wide_ms:.1f} ms (queues {wide_queue_ms}), narrow {narrow_ms:.1f} ms "
          f"(latencies {[round(x, 1) for x in narrow_latency_ms]}, queues {[round(x, 1) for x in narrow_queue_ms]})")
    assert max(wide_queue_ms) < 20, "six slots: nobody waits"
    assert wide_ms < 180, "the six requests were sent at once: one wave of 100 ms"
    assert narrow_ms / wide_ms == pytest.approx(3, abs=0.5)
    for wave in range(3):
        assert narrow_queue_ms[2 * wave:2 * wave + 2] == pytest.approx([100.0 * wave] * 2, abs=30), f"wave {wave + 1}"
        assert narrow_latency_ms[2 * wave:2 * wave + 2] == pytest.approx([100.0 * (wave + 1)] * 2, abs=40)


@pytest.mark.parametrize("size", STUDY_REQUEST_BYTES.values(), ids=[f"{k} ({v / 1000:g} KB)" for k, v in STUDY_REQUEST_BYTES.items()])
@pytest.mark.parametrize("encoding", ["http fp32 json", "http bytes json", "grpc bytes raw", "grpc fp32 raw"])
def test_requests_of_the_study_sizes_are_served(pool, encoding, size):
    name = PROFILED[0]
    protocol, datatype, _ = encoding.split()
    values = math.ceil(size / 4)
    if protocol == "http":
        client = triton_http.InferenceServerClient(f"127.0.0.1:{pool.http_port}")
        tensor = triton_http.InferInput("scores" if datatype == "fp32" else "image", [values if datatype == "fp32" else 1],
                                        datatype.upper())
    else:
        client = triton_grpc.InferenceServerClient(f"127.0.0.1:{pool.grpc_port}")
        tensor = triton_grpc.InferInput("scores" if datatype == "fp32" else "image", [values if datatype == "fp32" else 1],
                                        datatype.upper())
    data = (np.ones(values, dtype=np.float32) if datatype == "fp32"
            else np.array([b"x" * size], dtype=np.object_))
    if protocol == "http":
        tensor.set_data_from_numpy(data, binary_data=False)
    else:
        tensor.set_data_from_numpy(data)
    result = client.infer(name, [tensor])
    assert result.as_numpy("result").shape == (RESULT_VALUES,)
    assert result.as_numpy("result").dtype == np.float32
