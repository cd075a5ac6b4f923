"""Talking to Teleport's Auth Service: credentials, the gRPC channel, the calls.

Credentials come from an identity file (``tctl auth sign --format=file`` or
tbot) or from a certificate, key and CA. The channel dials the Auth Service
directly with mutual TLS and the server name ``teleport.cluster.local``, as
Teleport's own API client does, and verification is always on.
"""

from __future__ import annotations

import datetime
import logging
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf import timestamp_pb2

from teleport_event_handler import __version__, pki
from teleport_event_handler.protos import TELEPORT_API_VERSION
from teleport_event_handler.protos.teleport.auditlog.v1 import auditlog_pb2, auditlog_pb2_grpc
from teleport_event_handler.protos.teleport.legacy.client.proto import (
    authservice_pb2,
    authservice_pb2_grpc,
)
from teleport_event_handler.protos.teleport.legacy.types import types_pb2

log = logging.getLogger(__name__)

API_SERVER_NAME = "teleport.cluster.local"
# Teleport caps one event and one page at 1 MiB, but older servers and other
# backends have sent more; a generous limit keeps one big event from wedging us.
MAX_MESSAGE_BYTES = 64 * 1024 * 1024
# A chunk's export stream is given this long, then resumed from its cursor: a
# server that keeps the connection alive but stops sending cannot stall a
# chunk for good (keepalive only catches dead connections).
STREAM_TIMEOUT = 300.0
# Oldest events first. Teleport's Auth Service casts the request's ``order``
# number straight to its own ``types.EventOrder`` (lib/auth/grpcserver.go,
# GRPCServer.GetEvents/GetUnstructuredEvents), where 0 is ascending and 1 is
# descending; its Go client (api/client/client.go,
# Client.SearchUnstructuredEvents) and the Go event handler
# (legacy_events_watcher.go, getEventsInWindow) therefore send 0 for
# ascending. The proto calls 0 ORDER_DESCENDING_UNSPECIFIED, which is
# misleading: sending ORDER_ASCENDING (1) makes every backend page newest-first.
ORDER_OLDEST_FIRST = auditlog_pb2.ORDER_DESCENDING_UNSPECIFIED
RENEW_HINT = (
    "renew it with 'tctl auth sign --user=<user> --format=file --out=<path> --ttl=<ttl>' "
    "or let tbot keep it current"
)
ROLE_HINT = (
    "give the user a role that allows resources ['event', 'session'] with verbs "
    "['list', 'read'] (see the teleport-event-handler role in docs/), then sign a new identity"
)


class TeleportError(Exception):
    """A problem talking to Teleport, worded with what to do about it."""


@dataclass(frozen=True)
class Credentials:
    private_key_pem: bytes
    cert_pem: bytes
    ca_pems: bytes
    source: str
    user: str
    not_after: datetime.datetime

    def expired(self, now: datetime.datetime | None = None) -> bool:
        return (now or pki.utcnow()) >= self.not_after


def _read(path: str, what: str) -> bytes:
    try:
        with open(path, "rb") as handle:
            return handle.read()
    except OSError as exc:
        raise TeleportError(
            f"{what} {path}: {exc.strerror}; check the path and permissions"
        ) from exc


def _describe(cert_pem: bytes, source: str) -> tuple[str, datetime.datetime]:
    try:
        info = pki.cert_info(pki.load_certificate(cert_pem, source))
    except pki.PkiError as exc:
        raise TeleportError(str(exc)) from exc
    user = info.subject.split("CN=", 1)[1].split(",", 1)[0] if "CN=" in info.subject else ""
    return user, info.not_after


def load_identity_file(path: str) -> Credentials:
    try:
        parts = pki.parse_identity_file(_read(path, "identity file"), path)
    except pki.PkiError as exc:
        raise TeleportError(str(exc)) from exc
    if not parts.tls_ca_pems:
        raise TeleportError(
            f"identity file {path}: it holds no TLS CA certificate to verify Teleport with; "
            "write it again with 'tctl auth sign --format=file' or tbot's identity output"
        )
    user, not_after = _describe(parts.tls_cert_pem, path)
    return Credentials(
        private_key_pem=parts.private_key_pem,
        cert_pem=parts.tls_cert_pem,
        ca_pems=b"".join(parts.tls_ca_pems),
        source=f"identity file {path}",
        user=user,
        not_after=not_after,
    )


def load_key_pair(cert: str, key: str, ca: str) -> Credentials:
    cert_pem = _read(cert, "teleport certificate")
    user, not_after = _describe(cert_pem, cert)
    return Credentials(
        private_key_pem=_read(key, "teleport key"),
        cert_pem=cert_pem,
        ca_pems=_read(ca, "teleport CA"),
        source=f"certificate {cert}",
        user=user,
        not_after=not_after,
    )


def check_not_expired(creds: Credentials) -> None:
    if creds.expired():
        raise TeleportError(
            f"{creds.source} expired at {creds.not_after:%Y-%m-%dT%H:%M:%SZ} "
            f"(user {creds.user!r}); {RENEW_HINT}"
        )


def timestamp(value: datetime.datetime) -> timestamp_pb2.Timestamp:
    stamp = timestamp_pb2.Timestamp()
    stamp.FromDatetime(value.astimezone(datetime.UTC))
    return stamp


def explain(exc: grpc.RpcError, addr: str, creds: Credentials) -> TeleportError:
    """Turn a gRPC failure into a message that names the fix."""
    code = exc.code() if hasattr(exc, "code") else None
    details = (exc.details() if hasattr(exc, "details") else "") or str(exc)
    if code == grpc.StatusCode.PERMISSION_DENIED:
        return TeleportError(f"Teleport denied user {creds.user!r}: {details}; {ROLE_HINT}")
    if code == grpc.StatusCode.UNAUTHENTICATED:
        return TeleportError(f"Teleport did not accept {creds.source}: {details}; {RENEW_HINT}")
    lowered = details.lower()
    if "certificate" in lowered or "handshake" in lowered or "ssl" in lowered:
        return TeleportError(
            f"TLS handshake with Teleport at {addr} failed ({details}); check that {creds.source} "
            f"was issued by this cluster and has not expired ({RENEW_HINT}), and that "
            "--teleport-addr points at the Auth Service"
        )
    return TeleportError(f"Teleport at {addr}: {code.name if code else 'error'}: {details}")


def is_transient(exc: grpc.RpcError) -> bool:
    """Errors worth retrying: the server is down, slow, or dropped the stream."""
    code = exc.code() if hasattr(exc, "code") else None
    return code in (
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.ABORTED,
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.UNKNOWN,
        grpc.StatusCode.CANCELLED,
    )


def needs_a_person(exc: grpc.RpcError) -> bool:
    """Errors that no retry can fix: Teleport refuses this identity or its permissions."""
    code = exc.code() if hasattr(exc, "code") else None
    return code in (grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.UNAUTHENTICATED)


def is_unimplemented(exc: grpc.RpcError) -> bool:
    return hasattr(exc, "code") and exc.code() == grpc.StatusCode.UNIMPLEMENTED


class TeleportClient:
    """The Auth Service calls the forwarder makes, over one channel."""

    def __init__(
        self,
        addr: str,
        creds: Credentials,
        call_timeout: float = 60.0,
        stream_timeout: float = STREAM_TIMEOUT,
        api_version: str = TELEPORT_API_VERSION,
    ) -> None:
        self.addr = addr
        self.creds = creds
        self.call_timeout = call_timeout
        self.stream_timeout = stream_timeout
        channel_creds = grpc.ssl_channel_credentials(
            root_certificates=creds.ca_pems,
            private_key=creds.private_key_pem,
            certificate_chain=creds.cert_pem,
        )
        self._channel = grpc.secure_channel(
            addr,
            channel_creds,
            options=[
                ("grpc.ssl_target_name_override", API_SERVER_NAME),
                ("grpc.default_authority", API_SERVER_NAME),
                ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
                ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
                ("grpc.keepalive_time_ms", 30_000),
                ("grpc.keepalive_timeout_ms", 10_000),
                ("grpc.keepalive_permit_without_calls", 1),
                ("grpc.primary_user_agent", f"teleport-event-handler-python/{__version__}"),
            ],
        )
        self._audit = auditlog_pb2_grpc.AuditLogServiceStub(self._channel)
        self._auth = authservice_pb2_grpc.AuthServiceStub(self._channel)
        # Teleport's clients send their Teleport API version on every call; the
        # Auth Service may refuse clients older than it supports (see protos/__init__).
        self.api_version = api_version
        self._metadata = (("version", api_version),)
        self._close_lock = threading.Lock()
        self._closed = False

    def close(self) -> None:
        """Close the channel: calls and streams in progress end at once (CANCELLED)."""
        with self._close_lock:
            if self._closed:
                return
            self._closed = True
        self._channel.close()

    def ping(self) -> authservice_pb2.PingResponse:
        response: authservice_pb2.PingResponse = self._auth.Ping(
            authservice_pb2.PingRequest(), timeout=self.call_timeout, metadata=self._metadata
        )
        return response

    def get_events(
        self,
        start: datetime.datetime,
        end: datetime.datetime,
        event_types: tuple[str, ...],
        limit: int,
        start_key: str,
    ) -> auditlog_pb2.EventsUnstructured:
        request = auditlog_pb2.GetUnstructuredEventsRequest(
            namespace="default",
            start_date=timestamp(start),
            end_date=timestamp(end),
            event_types=list(event_types),
            limit=limit,
            start_key=start_key,
            order=ORDER_OLDEST_FIRST,
        )
        response: auditlog_pb2.EventsUnstructured = self._audit.GetUnstructuredEvents(
            request, timeout=self.call_timeout, metadata=self._metadata
        )
        return response

    def export_chunks(self, date: datetime.date) -> list[str]:
        """Every chunk of one UTC day (the whole stream is read each time)."""
        request = auditlog_pb2.GetEventExportChunksRequest(date=timestamp(_midnight(date)))
        stream: Any = self._audit.GetEventExportChunks(
            request, timeout=self.call_timeout, metadata=self._metadata
        )
        try:
            return [item.chunk for item in stream]
        finally:
            stream.cancel()

    def export_events(
        self, date: datetime.date, chunk: str, cursor: str
    ) -> Iterator[auditlog_pb2.ExportEventUnstructured]:
        """Events of one chunk after ``cursor``; the stream is cancelled on every exit path."""
        request = auditlog_pb2.ExportUnstructuredEventsRequest(
            date=timestamp(_midnight(date)), chunk=chunk, cursor=cursor
        )
        stream: Any = self._audit.ExportUnstructuredEvents(
            request, timeout=self.stream_timeout, metadata=self._metadata
        )
        try:
            yield from stream
        finally:
            stream.cancel()

    def upsert_lock(self, lock: types_pb2.LockV2) -> None:
        self._auth.UpsertLock(lock, timeout=self.call_timeout, metadata=self._metadata)


def _midnight(date: datetime.date) -> datetime.datetime:
    return datetime.datetime(date.year, date.month, date.day, tzinfo=datetime.UTC)
