"""The Teleport client against a real sandbox Auth Service process."""

from __future__ import annotations

import datetime
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from teleport_event_handler.teleport import (
    TeleportClient,
    check_not_expired,
    is_transient,
    load_identity_file,
)
from teleport_sandbox.stack import Stack


@pytest.fixture(scope="module")
def stalled_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """Chunk export streams that take 5 s to answer; everything else is prompt."""
    stack = Stack(root=str(tmp_path_factory.mktemp("stalled") / "stack"), days=1, events_per_day=50)
    stack.init()
    stack.start_teleport(
        extra=["--fault=methods=ExportUnstructuredEvents", "--fault=latency_ms=5000"]
    )
    yield stack
    stack.stop()


def test_a_stalled_export_stream_ends_for_a_resume(stalled_stack: Stack) -> None:
    creds = load_identity_file(stalled_stack.identity)
    check_not_expired(creds)
    client = TeleportClient(stalled_stack.teleport_addr, creds, stream_timeout=1.0)
    try:
        assert client.ping().ClusterName
        day = datetime.datetime.now(datetime.UTC).date()
        chunks = client.export_chunks(day)
        assert chunks
        started = time.monotonic()
        with pytest.raises(grpc.RpcError) as caught:
            list(client.export_events(day, chunks[0], ""))
        assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        assert is_transient(caught.value)  # the engine resumes the chunk from its cursor
        assert time.monotonic() - started < 4
    finally:
        client.close()


def test_identity_file_is_read_like_teleport_does(stalled_stack: Stack, tmp_path: Path) -> None:
    creds = load_identity_file(stalled_stack.identity)
    assert creds.user == "teleport-event-handler"
    assert creds.not_after > datetime.datetime.now(datetime.UTC)
    assert b"BEGIN CERTIFICATE" in creds.ca_pems and b"PRIVATE KEY" in creds.private_key_pem
