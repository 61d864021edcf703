"""pytest fixtures for tests that need a Kubernetes API: import them into the test module
(`from kube.fixtures import kube, run_operator  # noqa: F401`) or a conftest.

`kube` is function-scoped: a fresh emulator per test (it starts in milliseconds), with the project's
CRDs and kopf's peering CRDs installed; or, with HETPLACE_TEST_KUBECONFIG set, the real test cluster
behind the context guard. `run_operator` starts kopf operators that log in to it and stops them first.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Iterator

import kopf
import pytest

from .catalogue import all_test_crds
from .cluster import Cluster, make_cluster
from .operators import OperatorThread, register_login


@pytest.fixture
def kube(tmp_path: Path) -> Iterator[Cluster]:
    cluster = make_cluster(tmp_path, all_test_crds())
    try:
        yield cluster
    finally:
        cluster.close()


@pytest.fixture
def run_operator(kube: Cluster) -> Iterator[Callable[..., OperatorThread]]:
    """`run_operator(registry, **OperatorThread options)`: log the registry in to `kube` and start it."""
    started: list[OperatorThread] = []

    def start(registry: kopf.OperatorRegistry, **options: Any) -> OperatorThread:
        register_login(registry, kube.connection_info())
        operator = OperatorThread(registry, **options)
        started.append(operator)
        return operator.start()

    try:
        yield start
    finally:
        for operator in reversed(started):
            operator.stop()
