"""The Teleport client against a real sandbox Auth Service process."""

from __future__ import annotations

import datetime
import threading
import time
from collections.abc import Iterator
from concurrent import futures
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pytest

from teleport_event_handler import pki
from teleport_event_handler.protos import TELEPORT_API_VERSION
from teleport_event_handler.protos.teleport.auditlog.v1 import auditlog_pb2
from teleport_event_handler.protos.teleport.legacy.client.proto import authservice_pb2
from teleport_event_handler.teleport import (
    TeleportClient,
    check_not_expired,
    is_transient,
    load_identity_file,
)
from teleport_sandbox.stack import Stack
from teleport_sandbox.teleport import authority, resources


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


def test_a_stream_in_progress_finishes_across_a_reload(stalled_stack: Stack) -> None:
    """A renewed identity is used for new calls; the stream already open ends normally."""
    creds = load_identity_file(stalled_stack.identity)
    client = TeleportClient(
        stalled_stack.teleport_addr,
        creds,
        loader=lambda: load_identity_file(stalled_stack.identity),
    )
    results: list[Any] = []
    try:
        day = datetime.datetime.now(datetime.UTC).date()
        chunk = client.export_chunks(day)[0]
        assert client.reload() is False  # same file: nothing to do
        stream = threading.Thread(
            target=lambda: results.append(list(client.export_events(day, chunk, "")))
        )
        stream.start()
        time.sleep(1.0)  # the stream waits on the server's 5 s latency
        stalled_stack.sign_identity()
        assert client.reload() is True
        assert client.creds.cert_pem != creds.cert_pem
        assert client.ping().ClusterName  # a new call, over the new channel
        stream.join(20)
        assert results and results[0], "the stream on the old channel did not finish"
    finally:
        client.close()


def test_an_unreadable_renewal_keeps_the_current_identity(
    stalled_stack: Stack, tmp_path: Path
) -> None:
    path = tmp_path / "identity"
    path.write_bytes(Path(stalled_stack.identity).read_bytes())
    client = TeleportClient(
        stalled_stack.teleport_addr,
        load_identity_file(str(path)),
        loader=lambda: load_identity_file(str(path)),
    )
    try:
        path.write_bytes(b"half a file")
        assert client.reload() is False
        assert client.ping().ClusterName
        # Caught mid-rewrite: the new key with the old certificate.
        old = pki.parse_identity_file(Path(stalled_stack.identity).read_bytes())
        new = pki.parse_identity_file(
            Path(stalled_stack.sign_identity(out=str(tmp_path / "n"))).read_bytes()
        )
        path.write_bytes(pki.build_identity_file(old._replace(private_key_pem=new.private_key_pem)))
        assert client.reload() is False
        assert client.ping().ClusterName
    finally:
        client.close()


# --- what goes on the wire ---------------------------------------------------------


@dataclass
class Recorder:
    """A gRPC server with Teleport's TLS that keeps every request and its metadata."""

    port: int = 0
    identity: str = ""
    requests: list[tuple[str, Any, dict[str, str]]] = field(default_factory=list)


@pytest.fixture
def recorder(tmp_path: Path) -> Iterator[Recorder]:
    data_dir = str(tmp_path / "teleport")
    authority.init_authority(data_dir, "wire.test")
    resources.ResourceStore(data_dir).create(
        {"kind": "user", "version": "v2", "metadata": {"name": "h"}, "spec": {"roles": []}},
        overwrite=True,
    )
    rec = Recorder(identity=str(tmp_path / "identity"))
    authority.issue_identity(data_dir, "h", datetime.timedelta(hours=1), rec.identity)

    def handler(name: str, reply: bytes) -> Any:
        def handle(request: Any, context: grpc.ServicerContext) -> bytes:
            metadata = {k: str(v) for k, v in context.invocation_metadata()}
            rec.requests.append((name, request, metadata))
            return reply

        return handle

    audit = grpc.unary_unary_rpc_method_handler(
        handler("GetUnstructuredEvents", b""),
        request_deserializer=auditlog_pb2.GetUnstructuredEventsRequest.FromString,
        response_serializer=lambda data: data,
    )
    ping_reply = authservice_pb2.PingResponse(ClusterName="wire.test").SerializeToString()
    ping = grpc.unary_unary_rpc_method_handler(
        handler("Ping", ping_reply),
        request_deserializer=authservice_pb2.PingRequest.FromString,
        response_serializer=lambda data: data,
    )
    key, cert, client_ca = authority.server_credentials(data_dir)
    server = grpc.server(
        futures.ThreadPoolExecutor(2),
        handlers=[
            grpc.method_handlers_generic_handler(
                "teleport.auditlog.v1.AuditLogService", {"GetUnstructuredEvents": audit}
            ),
            grpc.method_handlers_generic_handler("proto.AuthService", {"Ping": ping}),
        ],
    )
    rec.port = server.add_secure_port(
        "127.0.0.1:0",
        grpc.ssl_server_credentials([(key, cert)], client_ca, require_client_auth=True),
    )
    server.start()
    yield rec
    server.stop(None)


def _client(rec: Recorder, **kwargs: Any) -> TeleportClient:
    return TeleportClient(f"127.0.0.1:{rec.port}", load_identity_file(rec.identity), **kwargs)


def test_events_are_asked_for_oldest_first_with_order_0(recorder: Recorder) -> None:
    """Teleport casts ``order`` to types.EventOrder, 0 = ascending (lib/auth/grpcserver.go,
    GRPCServer audit handlers; api/client/client.go Client.SearchUnstructuredEvents
    and the Go plugin's legacy_events_watcher.go getEventsInWindow send 0).
    Sending ORDER_ASCENDING (1) would page every backend newest first."""
    client = _client(recorder)
    try:
        start = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)
        client.get_events(start, start + datetime.timedelta(hours=1), (), 20, "")
    finally:
        client.close()
    [(name, request, _)] = recorder.requests
    assert name == "GetUnstructuredEvents"
    assert request.order == 0
    assert request.limit == 20 and request.namespace == "default"


def test_version_metadata_is_the_teleport_api_version(recorder: Recorder) -> None:
    """Teleport reads ``version`` as the client's Teleport API version and may refuse
    older or non-semver values (lib/auth/middleware.go, Middleware.ValidateClientVersion;
    api/metadata ClientVersionFromContext): it is the API version our protos follow,
    not this package's version, and it can be overridden."""
    client = _client(recorder)
    override = _client(recorder, api_version="18.1.0")
    try:
        client.ping()
        override.ping()
    finally:
        client.close()
        override.close()
    sent = [metadata.get("version") for _, _, metadata in recorder.requests]
    assert sent == [TELEPORT_API_VERSION, "18.1.0"]
    assert int(TELEPORT_API_VERSION.split(".")[0]) >= 17 and TELEPORT_API_VERSION.count(".") == 2
