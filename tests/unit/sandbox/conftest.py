"""Fixtures for the sandbox Teleport server tests (helpers: teleport_server_support.py).

Names start with ``tp_`` so that they never shadow fixtures of the other
sandbox tests in this directory.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from teleport_server_support import Client, Cluster, make_cluster

from teleport_sandbox.teleport import faults, server


@pytest.fixture(scope="module")
def tp_cluster(tmp_path_factory: pytest.TempPathFactory) -> Cluster:
    """One cluster per test module; tests must not change its corpus."""
    return make_cluster(tmp_path_factory.mktemp("cluster"))


@pytest.fixture(scope="module")
def tp_server(tp_cluster: Cluster) -> Iterator[server.RunningServer]:
    """A bulk-mode server on that cluster, in this process, on an ephemeral port."""
    running = server.start_server(tp_cluster.data_dir, mode="bulk")
    yield running
    running.stop(grace=None)


@pytest.fixture
def tp_reader(tp_cluster: Cluster, tp_server: server.RunningServer) -> Iterator[Client]:
    """A client with the auditor role; faults are cleared before and after."""
    faults.clear_faults(tp_cluster.data_dir)
    client = Client(tp_server.port, tp_cluster.identities["reader"])
    yield client
    client.close()
    faults.clear_faults(tp_cluster.data_dir)
