"""The sandbox Auth Service: Teleport's audit-log gRPC API over mutual TLS.

Serves ``teleport.auditlog.v1.AuditLogService`` (both export engines) and the
two ``proto.AuthService`` methods the event handler uses (``Ping``,
``UpsertLock``), with Teleport's RBAC and lock checks on every call and
injectable faults.

Why handlers return bytes: the benchmark measures the forwarder, so this peer
must never be the bottleneck. Events are stored pre-serialised (see
``corpus``), and the handlers are registered through
``grpc.method_handlers_generic_handler`` with an identity response serializer,
so an ``EventsUnstructured`` page is the concatenation of stored
``items`` entries plus the ``last_key`` field, and an
``ExportEventUnstructured`` is a stored entry (its ``event`` is field 1 as
well) plus the ``cursor`` field: tag byte, length varint, bytes. No protobuf
message is built per event on the serving path.

Backends (``mode``):

``bulk``    Athena-like: ``GetEventExportChunks``/``ExportUnstructuredEvents``
            work, as does ``GetUnstructuredEvents``.
``legacy``  DynamoDB/Postgres/file-like: the two bulk calls answer
            UNIMPLEMENTED, like those Teleport backends.

What the server does as Teleport's does (each handler names its source):
``order`` 0 pages oldest first and 1 newest first; a window is selected
inclusive at both ends (``whole_seconds`` fault: in Unix seconds, as DynamoDB);
``limit`` 0 means 500 and above 10000 is INVALID_ARGUMENT; a page stops short
of 1 MiB of event JSON; a chunk cursor at or past the end is an empty stream;
the ``version`` metadata can be refused below ``oldest_client_version``.
"""

from __future__ import annotations

import datetime
import logging
import re
import threading
import time
from collections.abc import Callable, Iterator
from concurrent import futures
from dataclasses import dataclass
from typing import Any, NoReturn

import grpc

from teleport_event_handler.protos.teleport.auditlog.v1 import auditlog_pb2
from teleport_event_handler.protos.teleport.legacy.client.proto import authservice_pb2
from teleport_event_handler.protos.teleport.legacy.types import types_pb2
from teleport_sandbox.teleport import TELEPORT_VERSION, authority, resources
from teleport_sandbox.teleport.corpus import (
    MAX_EVENT_BYTES_IN_RESPONSE,
    Corpus,
    append_events,
    decode_chunk_cursor,
    encode_chunk_cursor,
    varint,
)
from teleport_sandbox.teleport.faults import CallFaults, FaultInjector

__all__ = [
    "AUDIT_SERVICE",
    "AUTH_SERVICE",
    "EVENT_ORDER_ASCENDING",
    "EVENT_ORDER_DESCENDING",
    "MODES",
    "SERVER_VERSION",
    "LiveWriter",
    "RunningServer",
    "SandboxAuthService",
    "start_server",
    "version_key",
]

log = logging.getLogger("sandbox.teleport")

AUDIT_SERVICE = "teleport.auditlog.v1.AuditLogService"
AUTH_SERVICE = "proto.AuthService"
SERVER_VERSION = f"{TELEPORT_VERSION}-sandbox"
MODES = ("bulk", "legacy")
_NS = 1_000_000_000
_MAX_MESSAGE = 64 * 1024 * 1024
# GetUnstructuredEventsRequest.order as Teleport's Auth Service reads it: the
# number is cast straight to types.EventOrder (lib/auth/grpcserver.go, the
# GRPCServer audit handlers), where 0 is ascending and 1 descending, whatever
# the proto's names (0 is ORDER_DESCENDING_UNSPECIFIED there). Backends refuse
# any other value (lib/events/dynamoevents, Log.searchEventsRaw: "invalid event
# order").
EVENT_ORDER_ASCENDING = 0
EVENT_ORDER_DESCENDING = 1
_SEMVER = re.compile(r"(\d+)\.(\d+)\.(\d+)(?:-([0-9A-Za-z.-]+))?(?:\+[0-9A-Za-z.-]+)?")


def _identity(data: bytes) -> bytes:
    return data


def _abort(context: grpc.ServicerContext, code: grpc.StatusCode, message: str) -> NoReturn:
    context.abort(code, message)
    raise AssertionError("unreachable: abort raises")  # pragma: no cover


def _ts_ns(ts: Any) -> int:
    return int(ts.seconds) * _NS + int(ts.nanos)


def _utc_day(ts: Any) -> str:
    return datetime.datetime.fromtimestamp(int(ts.seconds), datetime.UTC).strftime("%Y-%m-%d")


def _rfc3339(ts: Any) -> str:
    when = datetime.datetime.fromtimestamp(int(ts.seconds), datetime.UTC)
    return when.strftime("%Y-%m-%dT%H:%M:%S") + (f".{ts.nanos:09d}" if ts.nanos else "") + "Z"


def version_key(text: str) -> tuple[int, int, int, int, str] | None:
    """A semantic version as a sortable key (a pre-release sorts first), or None."""
    match = _SEMVER.fullmatch(text.strip())
    if match is None:
        return None
    major, minor, patch, pre = match.groups()
    return (int(major), int(minor), int(patch), 0 if pre else 1, pre or "")


def _client_version(context: grpc.ServicerContext) -> str | None:
    for key, value in context.invocation_metadata() or ():
        if key == "version":
            return value if isinstance(value, str) else value.decode()
    return None


class SandboxAuthService:
    """Handlers of the sandbox Auth Service; one instance per server."""

    def __init__(
        self,
        data_dir: str,
        *,
        mode: str = "bulk",
        max_page_bytes: int = MAX_EVENT_BYTES_IN_RESPONSE,
    ) -> None:
        if mode not in MODES:
            raise ValueError(f"mode {mode!r}: choose bulk or legacy")
        self.data_dir = data_dir
        self.mode = mode
        self.max_page_bytes = max_page_bytes
        self.corpus = Corpus(data_dir)
        self.cluster_name = authority.cluster_name(data_dir)
        self.store = resources.ResourceStore(data_dir)
        self.faults = FaultInjector(data_dir)
        self._identities: dict[bytes, Any] = {}
        self._identities_lock = threading.Lock()

    # ---- common per-call steps -----------------------------------------

    def _peer(self, context: grpc.ServicerContext) -> Any:
        auth = context.auth_context()
        certs = list(auth.get("x509_pem_cert") or ())
        if not certs:
            _abort(context, grpc.StatusCode.UNAUTHENTICATED, "client certificate required")
        pem = bytes(certs[0])
        cached = self._identities.get(pem)
        if cached is not None and cached.not_after > datetime.datetime.now(datetime.UTC):
            return cached
        # Expiry is checked again per call: a connection may outlive its certificate.
        try:
            ident = authority.peer_identity(self.data_dir, pem)
        except Exception as exc:  # any refusal of the certificate is an auth failure
            _abort(context, grpc.StatusCode.UNAUTHENTICATED, f"bad client certificate: {exc}")
        with self._identities_lock:
            if len(self._identities) > 1024:
                self._identities.clear()
            self._identities[pem] = ident
        return ident

    def _begin(
        self,
        method: str,
        context: grpc.ServicerContext,
        checks: tuple[tuple[str, str], ...],
    ) -> tuple[CallFaults, Any]:
        """Faults, caller identity, lock and RBAC checks; aborts the call on refusal."""
        call = self.faults.for_call(method)
        if call.latency_s:
            time.sleep(call.latency_s)
        if call.fail == "unavailable":
            _abort(context, grpc.StatusCode.UNAVAILABLE, "sandbox fault: auth server unavailable")
        if call.fail == "deadline":
            _abort(context, grpc.StatusCode.DEADLINE_EXCEEDED, "sandbox fault: deadline exceeded")
        if call.fail == "not_found" and method != "ExportUnstructuredEvents":
            _abort(context, grpc.StatusCode.NOT_FOUND, f"sandbox fault: {method}: not found")
        ident = self._peer(context)
        if call.oldest_client_version:
            self._check_client_version(context, call.oldest_client_version)
        if checks:
            lock = resources.active_lock(self.store, ident.user)
            if lock is not None:
                message = (lock.get("spec") or {}).get("message") or "user is locked"
                _abort(
                    context,
                    grpc.StatusCode.PERMISSION_DENIED,
                    f'lock targeting User:"{ident.user}" is in force: {message}',
                )
            for resource, verb in checks:
                try:
                    resources.check_access(self.store, ident.roles, resource, verb)
                except resources.AccessDenied as exc:
                    _abort(context, grpc.StatusCode.PERMISSION_DENIED, str(exc))
        self.corpus.refresh()
        return call, ident

    def _check_client_version(self, context: grpc.ServicerContext, oldest: str) -> None:
        """Refuse clients older than ``oldest``, as a cluster that rejects old clients does.

        Teleport reads the ``version`` metadata as the client's Teleport API
        version (lib/auth/middleware.go, Middleware.ValidateClientVersion): no
        value passes; a value that is not a semantic version, or one older than
        the oldest supported version, is refused with AccessDenied (gRPC
        PERMISSION_DENIED) "client version is unsupported".
        """
        sent = _client_version(context)
        if sent is None:
            return
        key, floor = version_key(sent), version_key(oldest)
        if key is None or (floor is not None and key < floor):
            log.info("refused a client of version %r (oldest supported: %s)", sent, oldest)
            _abort(context, grpc.StatusCode.PERMISSION_DENIED, "client version is unsupported")

    def _bulk_only(self, context: grpc.ServicerContext) -> None:
        if self.mode != "bulk":
            _abort(
                context,
                grpc.StatusCode.UNIMPLEMENTED,
                "the legacy events backend (dynamoevents) does not support streaming export",
            )

    def _streamed(
        self, context: grpc.ServicerContext, call: CallFaults, messages: Iterator[bytes]
    ) -> Iterator[bytes]:
        """Yield ``messages``, dropping the stream after N when that fault is set."""
        limit = call.drop_stream_after
        for sent, message in enumerate(messages):
            if limit and sent >= limit:
                _abort(
                    context,
                    grpc.StatusCode.UNAVAILABLE,
                    f"sandbox fault: stream dropped after {limit} messages",
                )
            yield message

    # ---- teleport.auditlog.v1.AuditLogService ---------------------------

    def get_unstructured_events(
        self, request: auditlog_pb2.GetUnstructuredEventsRequest, context: grpc.ServicerContext
    ) -> bytes:
        call, _ = self._begin(
            "GetUnstructuredEvents", context, (("event", "list"), ("event", "read"))
        )
        order = int(request.order)
        if order not in (EVENT_ORDER_ASCENDING, EVENT_ORDER_DESCENDING):
            _abort(context, grpc.StatusCode.INVALID_ARGUMENT, f"invalid event order: {order}")
        start_ns, end_ns = _ts_ns(request.start_date), _ts_ns(request.end_date)
        if call.whole_seconds:
            # DynamoDB stores CreatedAt in whole seconds and compares it with the
            # window's Unix seconds: every event of both boundary seconds matches.
            start_ns, end_ns = start_ns // _NS * _NS, end_ns // _NS * _NS + _NS - 1
        try:
            page = self.corpus.search(
                start_ns,
                end_ns,
                types=list(request.event_types),
                limit=request.limit,
                start_key=request.start_key,
                descending=order == EVENT_ORDER_DESCENDING,
                hidden=call.hidden_flags,
                max_bytes=self.max_page_bytes,
            )
        except ValueError as exc:
            _abort(context, grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        if not page.last_key:
            return page.payload
        key = page.last_key.encode()
        return page.payload + b"\x12" + varint(len(key)) + key

    def get_event_export_chunks(
        self, request: auditlog_pb2.GetEventExportChunksRequest, context: grpc.ServicerContext
    ) -> Iterator[bytes]:
        call, _ = self._begin(
            "GetEventExportChunks", context, (("event", "list"), ("event", "read"))
        )
        self._bulk_only(context)
        day = _utc_day(request.date)

        def messages() -> Iterator[bytes]:
            for chunk_id in self.corpus.chunk_ids(day):
                raw = chunk_id.encode()
                yield b"\x0a" + varint(len(raw)) + raw

        return self._streamed(context, call, messages())

    def export_unstructured_events(
        self, request: auditlog_pb2.ExportUnstructuredEventsRequest, context: grpc.ServicerContext
    ) -> Iterator[bytes]:
        call, _ = self._begin(
            "ExportUnstructuredEvents", context, (("event", "list"), ("event", "read"))
        )
        self._bulk_only(context)
        day = _utc_day(request.date)
        # The not_found fault makes a listed chunk vanish, as an object deleted
        # from the bucket between the listing and the export does.
        chunk = None if call.fail == "not_found" else self.corpus.chunk(day, request.chunk)
        if chunk is None:
            _abort(
                context,
                grpc.StatusCode.NOT_FOUND,
                f'export chunk "{request.chunk}" not found for date {day}',
            )
        try:
            start = decode_chunk_cursor(chunk.id, request.cursor)
        except ValueError as exc:
            _abort(context, grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        # A cursor at or past the end of the chunk yields an empty stream:
        # Teleport skips the chunk's events up to the cursor's position and
        # finds nothing more (lib/events/athena/querier.go,
        # querier.ExportUnstructuredEvents).
        positions = chunk.positions
        hidden = call.hidden_flags
        corpus = self.corpus

        def messages() -> Iterator[bytes]:
            for i in range(start, len(positions)):
                p = positions[i]
                if hidden and corpus.flags[p] & hidden:
                    continue
                cursor = encode_chunk_cursor(chunk.id, i + 1).encode()
                yield corpus.record(p) + b"\x12" + varint(len(cursor)) + cursor

        return self._streamed(context, call, messages())

    def stream_unstructured_session_events(
        self,
        request: auditlog_pb2.StreamUnstructuredSessionEventsRequest,
        context: grpc.ServicerContext,
    ) -> Iterator[bytes]:
        call, _ = self._begin(
            "StreamUnstructuredSessionEvents", context, (("session", "list"), ("session", "read"))
        )
        if request.start_index < 0:
            _abort(context, grpc.StatusCode.INVALID_ARGUMENT, "start_index must be >= 0")
        faults = self.faults.current()
        recording = self.corpus.recording(request.session_id)
        if recording is None or request.session_id in faults.missing_recordings:
            _abort(
                context,
                grpc.StatusCode.NOT_FOUND,
                f'session recording "{request.session_id}" not found',
            )
        # Teleport sends the recorded events whose index is at least start_index
        # (lib/events/auditlog.go, AuditLog.StreamSessionEvents: GetIndex() >=
        # startIndex); the recording's indexes are 0..n-1, so that is a slice.
        events = iter(recording[request.start_index :])
        if request.session_id in faults.malformed_recordings:
            # A recording part that cannot be decoded: AuditLog.StreamSessionEvents
            # sends what it read before, then the reader's error on the error
            # channel, which reaches the client as an unknown error.
            events = self._malformed(context, recording, request.start_index)
        return self._streamed(context, call, events)

    @staticmethod
    def _malformed(
        context: grpc.ServicerContext, recording: list[bytes], start: int
    ) -> Iterator[bytes]:
        yield from recording[start:1]
        _abort(
            context,
            grpc.StatusCode.UNKNOWN,
            "sandbox fault: malformed event at index 1 of the session recording",
        )

    # ---- proto.AuthService ----------------------------------------------

    def ping(self, request: authservice_pb2.PingRequest, context: grpc.ServicerContext) -> bytes:
        self._begin("Ping", context, ())
        return bytes(
            authservice_pb2.PingResponse(
                ClusterName=self.cluster_name, ServerVersion=SERVER_VERSION
            ).SerializeToString()
        )

    def upsert_lock(self, request: types_pb2.LockV2, context: grpc.ServicerContext) -> bytes:
        _, ident = self._begin("UpsertLock", context, (("lock", "create"), ("lock", "update")))
        name = request.Metadata.Name
        if not name:
            _abort(context, grpc.StatusCode.INVALID_ARGUMENT, "missing lock name (metadata.name)")
        target = {
            key: value
            for key, value in (
                ("user", request.Spec.Target.User),
                ("role", request.Spec.Target.Role),
                ("login", request.Spec.Target.Login),
                ("node", request.Spec.Target.Node),
                ("mfa_device", request.Spec.Target.MFADevice),
                ("server_id", request.Spec.Target.ServerID),
            )
            if value
        }
        if not target:
            _abort(
                context, grpc.StatusCode.INVALID_ARGUMENT, "at least one target field must be set"
            )
        now = datetime.datetime.now(datetime.UTC)
        spec: dict[str, Any] = {
            "target": target,
            "created_at": now.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
            "created_by": ident.user,
        }
        if request.Spec.Message:
            spec["message"] = request.Spec.Message
        if request.Spec.HasField("Expires"):
            spec["expires"] = _rfc3339(request.Spec.Expires)
        metadata: dict[str, Any] = {"name": name}
        if request.Metadata.HasField("Expires"):
            metadata["expires"] = _rfc3339(request.Metadata.Expires)
        doc = {
            "kind": "lock",
            "version": request.Version or "v2",
            "metadata": metadata,
            "spec": spec,
        }
        try:
            self.store.upsert_lock(doc, actor=ident.user)
        except resources.SandboxError as exc:
            _abort(context, grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        log.info("lock %s upserted by %s: %s", name, ident.user, target)
        return b""  # google.protobuf.Empty

    # ---- registration ---------------------------------------------------

    def generic_handlers(self) -> list[grpc.GenericRpcHandler[Any, Any]]:
        unary: Callable[..., grpc.RpcMethodHandler[Any, Any]] = grpc.unary_unary_rpc_method_handler
        stream: Callable[..., grpc.RpcMethodHandler[Any, Any]] = (
            grpc.unary_stream_rpc_method_handler
        )
        audit = {
            "GetUnstructuredEvents": unary(
                self.get_unstructured_events,
                request_deserializer=auditlog_pb2.GetUnstructuredEventsRequest.FromString,
                response_serializer=_identity,
            ),
            "GetEventExportChunks": stream(
                self.get_event_export_chunks,
                request_deserializer=auditlog_pb2.GetEventExportChunksRequest.FromString,
                response_serializer=_identity,
            ),
            "ExportUnstructuredEvents": stream(
                self.export_unstructured_events,
                request_deserializer=auditlog_pb2.ExportUnstructuredEventsRequest.FromString,
                response_serializer=_identity,
            ),
            "StreamUnstructuredSessionEvents": stream(
                self.stream_unstructured_session_events,
                request_deserializer=auditlog_pb2.StreamUnstructuredSessionEventsRequest.FromString,
                response_serializer=_identity,
            ),
        }
        auth = {
            "Ping": unary(
                self.ping,
                request_deserializer=authservice_pb2.PingRequest.FromString,
                response_serializer=_identity,
            ),
            "UpsertLock": unary(
                self.upsert_lock,
                request_deserializer=types_pb2.LockV2.FromString,
                response_serializer=_identity,
            ),
        }
        return [
            grpc.method_handlers_generic_handler(AUDIT_SERVICE, audit),
            grpc.method_handlers_generic_handler(AUTH_SERVICE, auth),
        ]


class LiveWriter(threading.Thread):
    """Appends ``rate`` events per second to the corpus (``serve --live-rate``).

    Each one-second tick is written as one or more sealed chunks (at most
    500 events each), so bulk pollers see new chunks appear.
    """

    def __init__(self, data_dir: str, rate: float, on_append: Callable[[], object]) -> None:
        super().__init__(name="sandbox-live-writer", daemon=True)
        self.data_dir = data_dir
        self.rate = rate
        self.on_append = on_append
        self.stop_event = threading.Event()
        self.appended = 0

    def run(self) -> None:
        due = 0.0
        next_tick = time.monotonic() + 1.0
        while not self.stop_event.wait(max(0.0, next_tick - time.monotonic())):
            next_tick += 1.0
            due += self.rate
            count = int(due)
            if count <= 0:
                continue
            due -= count
            try:
                append_events(self.data_dir, count)
                self.appended += count
                self.on_append()
            except Exception:  # keep serving; the log says why appends stopped
                log.exception("live append of %d events failed", count)

    def stop(self) -> None:
        self.stop_event.set()


@dataclass
class RunningServer:
    """A started sandbox server (``start_server``)."""

    server: grpc.Server
    port: int
    service: SandboxAuthService
    live: LiveWriter | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def stop(self, grace: float | None = 1.0) -> None:
        if self.live is not None:
            self.live.stop()
        self.server.stop(grace).wait()


def start_server(
    data_dir: str,
    *,
    listen: str = "127.0.0.1:0",
    mode: str = "bulk",
    live_rate: float = 0.0,
    max_page_bytes: int = MAX_EVENT_BYTES_IN_RESPONSE,
    max_workers: int = 64,
) -> RunningServer:
    """Start serving ``data_dir`` on ``listen`` (port 0 picks a free port)."""
    service = SandboxAuthService(data_dir, mode=mode, max_page_bytes=max_page_bytes)
    key_pem, cert_pem, client_ca_pem = authority.server_credentials(data_dir)
    credentials = grpc.ssl_server_credentials(
        [(key_pem, cert_pem)], root_certificates=client_ca_pem, require_client_auth=True
    )
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="sandbox-rpc"),
        handlers=service.generic_handlers(),
        options=[
            ("grpc.so_reuseport", 0),  # a taken port must fail, not be shared
            ("grpc.max_send_message_length", _MAX_MESSAGE),
            ("grpc.max_receive_message_length", _MAX_MESSAGE),
        ],
    )
    try:
        port = server.add_secure_port(listen, credentials)
    except RuntimeError as exc:
        raise OSError(f"cannot listen on {listen}: {exc}; is the port taken?") from None
    if port == 0:
        raise OSError(f"cannot listen on {listen}; is the port taken?")
    server.start()
    live = None
    if live_rate > 0:
        live = LiveWriter(data_dir, live_rate, service.corpus.refresh)
        live.start()
    return RunningServer(server=server, port=port, service=service, live=live)
