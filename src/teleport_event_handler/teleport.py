"""Talking to Teleport's Auth Service: credentials, the gRPC channel, the calls.

Credentials come from an identity file (``tctl auth sign --format=file`` or
tbot) or from a certificate, key and CA. The channel dials the Auth Service
directly with mutual TLS and the server name ``teleport.cluster.local``, as
Teleport's own API client does, or through the Proxy Service's TLS routing
(``dialer``); verification is always on.

Credentials renewed on disk (tbot) are picked up without a restart: a
monitor re-reads them every ``refresh-interval`` (and at once on
``reload()``, which SIGHUP calls); when the certificate changed, a new
channel is built for new calls while calls in progress finish on the old
one, which is closed once the longest call could have ended.
"""

from __future__ import annotations

import datetime
import logging
import shutil
import socket
import ssl
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import grpc
from cryptography import x509
from cryptography.x509.oid import NameOID, ObjectIdentifier
from google.protobuf import timestamp_pb2

from teleport_event_handler import __version__, dialer, pki
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
# Newest first is therefore 1, which the proto names ORDER_ASCENDING.
ORDER_NEWEST_FIRST = auditlog_pb2.ORDER_ASCENDING
RENEW_HINT = (
    "renew it with 'tctl auth sign --user=<user> --format=file --out=<path> --ttl=<ttl>' "
    "or let tbot keep it current"
)
ROLE_HINT = (
    "give the user a role that allows resources ['event', 'session'] with verbs "
    "['list', 'read'] (see the teleport-event-handler role in docs/), then sign a new identity"
)


# Teleport writes the name of the cluster that issued a certificate into its
# subject under this OID (lib/tlsca/ca.go, TeleportClusterASN1ExtensionOID).
TELEPORT_CLUSTER_OID = ObjectIdentifier("1.3.9999.1.7")
# The Auth Service's well-known port; anything else is asked which it is.
AUTH_PORT = 3025
# Warn once less than this share of a certificate's lifetime is left: 8 h
# from 'tctl auth sign --ttl=8h' warns 2 h 40 min ahead; tbot renews its 1 h
# certificates every 20 min, so a healthy tbot never triggers it.
EXPIRY_WARNING_SHARE = 1 / 3
# Dial problems seen by the Proxy relay, by address, for explain().
_dial_problems: dict[str, str] = {}


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
    not_before: datetime.datetime | None = None
    cluster_name: str = ""

    def expired(self, now: datetime.datetime | None = None) -> bool:
        return (now or pki.utcnow()) >= self.not_after

    def left(self, now: datetime.datetime | None = None) -> datetime.timedelta:
        return self.not_after - (now or pki.utcnow())

    def expires_soon(self, now: datetime.datetime | None = None) -> bool:
        """Less than EXPIRY_WARNING_SHARE of the certificate's lifetime is left."""
        if self.not_before is None:
            return self.left(now) < datetime.timedelta(hours=1)
        return self.left(now) < (self.not_after - self.not_before) * EXPIRY_WARNING_SHARE


def cluster_name_of(cert_pem: bytes) -> str:
    """The cluster that issued a Teleport certificate, from the certificate alone.

    Teleport names it in the subject (OID 1.3.9999.1.7, lib/tlsca/ca.go
    Identity.Subject); failing that, the issuing CA's organization is the
    cluster name (lib/tlsca/ca.go ClusterName, used by lib/auth/middleware.go
    on the issuer of client certificates).
    """
    try:
        cert = x509.load_pem_x509_certificate(cert_pem)
    except ValueError:
        return ""
    for oid, name in (
        (TELEPORT_CLUSTER_OID, cert.subject),
        (NameOID.ORGANIZATION_NAME, cert.issuer),
        (NameOID.COMMON_NAME, cert.issuer),
    ):
        values = name.get_attributes_for_oid(oid)
        if values:
            value = values[0].value
            return value.decode() if isinstance(value, bytes) else str(value)
    return ""


def _read(path: str, what: str) -> bytes:
    try:
        with open(path, "rb") as handle:
            return handle.read()
    except OSError as exc:
        raise TeleportError(
            f"{what} {path}: {exc.strerror}; check the path and permissions"
        ) from exc


def _describe(cert_pem: bytes, source: str) -> tuple[str, datetime.datetime, datetime.datetime]:
    try:
        cert = pki.load_certificate(cert_pem, source)
        info = pki.cert_info(cert)
    except pki.PkiError as exc:
        raise TeleportError(str(exc)) from exc
    user = info.subject.split("CN=", 1)[1].split(",", 1)[0] if "CN=" in info.subject else ""
    not_before: datetime.datetime = cert.not_valid_before_utc
    return user, info.not_after, not_before


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
    user, not_after, not_before = _describe(parts.tls_cert_pem, path)
    return Credentials(
        private_key_pem=parts.private_key_pem,
        cert_pem=parts.tls_cert_pem,
        ca_pems=b"".join(parts.tls_ca_pems),
        source=f"identity file {path}",
        user=user,
        not_after=not_after,
        not_before=not_before,
        cluster_name=cluster_name_of(parts.tls_cert_pem),
    )


def load_key_pair(cert: str, key: str, ca: str) -> Credentials:
    cert_pem = _read(cert, "teleport certificate")
    user, not_after, not_before = _describe(cert_pem, cert)
    return Credentials(
        private_key_pem=_read(key, "teleport key"),
        cert_pem=cert_pem,
        ca_pems=_read(ca, "teleport CA"),
        source=f"certificate {cert}",
        user=user,
        not_after=not_after,
        not_before=not_before,
        cluster_name=cluster_name_of(cert_pem),
    )


@dataclass(frozen=True)
class CredentialFiles:
    """Where the Teleport credentials are read: an identity file, or cert, key and CA.

    Paths only, so it pickles: export worker processes get it and read the files
    themselves.
    """

    identity: str | None = None
    cert: str | None = None
    key: str | None = None
    ca: str | None = None


def credential_loader(files: CredentialFiles) -> Callable[[], Credentials] | None:
    """What re-reads the configured credentials (an identity file, or cert, key and CA)."""
    identity, cert, key, ca = files.identity, files.cert, files.key, files.ca
    if identity:
        return lambda: load_identity_file(identity)
    if cert and key and ca:
        return lambda: load_key_pair(cert, key, ca)
    return None


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
            "--teleport-addr points at the Auth Service or a Proxy with TLS routing "
            "([teleport] dial)"
        )
    problem = _dial_problems.get(addr)
    if problem and code == grpc.StatusCode.UNAVAILABLE:
        return TeleportError(f"Teleport at {addr}: {problem}")
    return TeleportError(f"Teleport at {addr}: {code.name if code else 'error'}: {details}")


def server_cluster_name(addr: str, timeout: float = 5.0) -> str:
    """The cluster whose host CA signed the TLS certificate served at ``addr`` ("" if unknown).

    Read without verifying anything (it is only compared with the identity's
    cluster to name a mismatch); TLS 1.3, so the server's certificate arrives
    before the server judges ours.
    """
    host, port = split_addr(addr)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    context.set_alpn_protocols(["h2"])
    try:
        with (
            socket.create_connection((host, port), timeout=timeout) as raw,
            context.wrap_socket(raw, server_hostname=dialer.API_DOMAIN) as tls,
        ):
            der = tls.getpeercert(binary_form=True)
    except (OSError, ValueError):
        return ""
    if not der:
        return ""
    return cluster_name_of(ssl.DER_cert_to_PEM_cert(der).encode())


def other_cluster_problem(exc: grpc.RpcError, addr: str, creds: Credentials) -> str:
    """Why no retry helps when Auth at ``addr`` is another cluster's ("" when it is not that)."""
    details = (exc.details() if hasattr(exc, "details") else "") or str(exc)
    if "CERTIFICATE_VERIFY_FAILED" not in details.upper() or not creds.cluster_name:
        return ""
    served = server_cluster_name(addr)
    if not served or served == creds.cluster_name:
        return ""  # e.g. a host CA rotation that a renewed identity will follow
    return (
        f"the Auth Service at {addr} belongs to cluster {served!r}, but {creds.source} was "
        f"issued by cluster {creds.cluster_name!r}; sign an identity on {served!r} "
        f"('tctl auth sign --user=<user> --format=file --out=<path>' there, or tbot), or "
        f"point [teleport] addr at the Auth Service of {creds.cluster_name!r}"
    )


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


def _key_matches(creds: Credentials) -> bool:
    try:
        key = pki.load_private_key(creds.private_key_pem, source=creds.source)
        cert = pki.load_certificate(creds.cert_pem, creds.source)
    except pki.PkiError:
        return False
    return bool(pki.key_matches_cert(key, cert))


def split_addr(addr: str) -> tuple[str, int]:
    host, _, port = addr.rpartition(":")
    return host.strip("[]"), int(port)


def _routed_context(creds: Credentials, key_dir: str) -> ssl.SSLContext:
    if not creds.cluster_name:
        raise TeleportError(
            f"{creds.source}: its certificate names no Teleport cluster, which dialing through "
            f'the Proxy needs; {RENEW_HINT}, or set [teleport] dial = "auth"'
        )
    try:
        alpn = dialer.auth_alpn(creds.cluster_name)
    except dialer.DialError as exc:
        raise TeleportError(str(exc)) from exc
    return dialer.client_context(
        creds.cert_pem, creds.private_key_pem, creds.ca_pems, [alpn, "h2"], key_dir
    )


def choose_dial(addr: str, creds: Credentials, mode: str) -> tuple[bool, str]:
    """(through the Proxy?, why) for ``mode`` auto, auth or proxy.

    ``auto``: port 3025 is the Auth Service; otherwise one TLS hello offering
    only ``h2`` tells them apart: the Auth Service answers with a certificate
    from the cluster's host CA, a Proxy with its own web certificate.
    """
    if mode == "auth":
        return False, "[teleport] dial = auth"
    if mode == "proxy":
        return True, "[teleport] dial = proxy"
    host, port = split_addr(addr)
    if port == AUTH_PORT:
        return False, f"port {AUTH_PORT} is the Auth Service's"
    scratch = tempfile.mkdtemp(prefix="teleport-event-handler-")
    try:
        context = dialer.client_context(
            creds.cert_pem, creds.private_key_pem, creds.ca_pems, ["h2"], scratch
        )
        is_auth = dialer.probe_is_auth(host, port, context)
    except OSError as exc:
        return True, f"{addr} did not answer a TLS hello ({exc}); assuming a Proxy"
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    if is_auth:
        return False, f"{addr} presented the cluster's host certificate"
    return True, f"{addr} presented a certificate of its own, as a Proxy does"


@dataclass
class _Connection:
    """One channel (and, through the Proxy, its relay) built from one set of credentials."""

    creds: Credentials
    channel: grpc.Channel
    audit: auditlog_pb2_grpc.AuditLogServiceStub
    auth: authservice_pb2_grpc.AuthServiceStub
    relay: dialer.ProxyRelay | None = None
    retired_at: float = 0.0

    def close(self) -> None:
        self.channel.close()
        if self.relay is not None:
            self.relay.close()


_CHANNEL_OPTIONS: list[tuple[str, Any]] = [
    ("grpc.default_authority", API_SERVER_NAME),
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.keepalive_timeout_ms", 10_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.primary_user_agent", f"teleport-event-handler-python/{__version__}"),
]


class TeleportClient:
    """The Auth Service calls the forwarder makes, over one channel at a time.

    ``loader`` re-reads the credentials (``reload``); ``via_proxy`` carries
    the channel through the Proxy's TLS routing instead of dialing Auth.
    """

    def __init__(
        self,
        addr: str,
        creds: Credentials,
        call_timeout: float = 60.0,
        stream_timeout: float = STREAM_TIMEOUT,
        api_version: str = TELEPORT_API_VERSION,
        via_proxy: bool = False,
        loader: Callable[[], Credentials] | None = None,
    ) -> None:
        self.addr = addr
        self.call_timeout = call_timeout
        self.stream_timeout = stream_timeout
        self.via_proxy = via_proxy
        self._loader = loader
        # Teleport's clients send their Teleport API version on every call; the
        # Auth Service may refuse clients older than it supports (see protos/__init__).
        self.api_version = api_version
        self._metadata = (("version", api_version),)
        self._close_lock = threading.Lock()
        self._closed = False
        self._reload_lock = threading.Lock()
        self._reload_now = threading.Event()
        self._stop = threading.Event()
        self._retired: list[_Connection] = []
        self._warned: set[bytes] = set()
        self.reloads = 0
        self._last_refresh = time.monotonic()
        if via_proxy:
            self._preflight(creds)
        self._conn = self._connect(creds)

    # -- connections -------------------------------------------------------------

    @property
    def creds(self) -> Credentials:
        return self._conn.creds

    @property
    def _channel(self) -> grpc.Channel:
        return self._conn.channel

    @property
    def _audit(self) -> auditlog_pb2_grpc.AuditLogServiceStub:
        return self._conn.audit

    @property
    def _auth(self) -> authservice_pb2_grpc.AuthServiceStub:
        return self._conn.auth

    def _connect(self, creds: Credentials) -> _Connection:
        relay = None
        if self.via_proxy:
            host, port = split_addr(self.addr)
            relay = dialer.ProxyRelay(host, port, lambda: context)
            try:
                context = _routed_context(creds, relay.directory)
            except BaseException:
                relay.close()
                raise
            relay.on_failure = self._dial_failed
            relay.start()
            channel = grpc.insecure_channel(relay.target, options=_CHANNEL_OPTIONS)
        else:
            channel_creds = grpc.ssl_channel_credentials(
                root_certificates=creds.ca_pems,
                private_key=creds.private_key_pem,
                certificate_chain=creds.cert_pem,
            )
            channel = grpc.secure_channel(
                self.addr,
                channel_creds,
                options=[("grpc.ssl_target_name_override", API_SERVER_NAME), *_CHANNEL_OPTIONS],
            )
        return _Connection(
            creds=creds,
            channel=channel,
            audit=auditlog_pb2_grpc.AuditLogServiceStub(channel),
            auth=authservice_pb2_grpc.AuthServiceStub(channel),
            relay=relay,
        )

    def _dial_failed(self, problem: str | None) -> None:
        if problem:
            _dial_problems[self.addr] = problem
        else:
            _dial_problems.pop(self.addr, None)

    def _preflight(self, creds: Credentials) -> None:
        """One routed handshake at start: a Proxy that refuses the cluster is a setup error."""
        host, port = split_addr(self.addr)
        scratch = tempfile.mkdtemp(prefix="teleport-event-handler-")
        try:
            context = _routed_context(creds, scratch)
            with (
                socket.create_connection((host, port), timeout=dialer.CONNECT_TIMEOUT) as raw,
                context.wrap_socket(raw, server_hostname=API_SERVER_NAME),
            ):
                pass
        except (ssl.SSLError, EOFError, ConnectionResetError) as exc:
            raise TeleportError(
                dialer.describe_failure(exc, host, port, creds.cluster_name)
            ) from exc
        except OSError as exc:
            log.warning(
                "the Proxy at %s does not answer yet (%s); will keep trying", self.addr, exc
            )
        finally:
            shutil.rmtree(scratch, ignore_errors=True)

    # -- refresh --------------------------------------------------------------------

    def reload(self) -> bool:
        """Re-read the credentials; True when they changed and new calls use them."""
        if self._loader is None or self._closed:
            return False
        with self._reload_lock:
            try:
                creds = self._loader()
            except TeleportError as exc:
                log.warning(
                    "could not reload the Teleport identity (keeping the current one): %s", exc
                )
                return False
            current = self._conn.creds
            if (creds.cert_pem, creds.private_key_pem, creds.ca_pems) == (
                current.cert_pem,
                current.private_key_pem,
                current.ca_pems,
            ):
                return False
            if creds.expired():
                self.warn_expiry(creds)
                return False
            if not _key_matches(creds):
                # Caught mid-rewrite (key of one issue, certificate of another): next tick.
                log.warning(
                    "%s: the private key does not match the certificate (still being "
                    "written?); keeping the current identity",
                    creds.source,
                )
                return False
            try:
                new = self._connect(creds)
            except (TeleportError, ssl.SSLError) as exc:
                log.error("could not use the reloaded Teleport identity: %s", exc)
                return False
            old, self._conn = self._conn, new
            old.retired_at = time.monotonic()
            self._retired.append(old)
            self.reloads += 1
        log.info(
            "reloaded %s: user %r, valid until %s; new calls use it, calls in progress "
            "finish on the previous connection",
            creds.source,
            creds.user,
            f"{creds.not_after:%Y-%m-%dT%H:%M:%SZ}",
        )
        self.warn_expiry(creds)
        return True

    def request_reload(self) -> None:
        """Reload at once from the monitor thread (safe to call from a signal handler)."""
        self._reload_now.set()

    def warn_expiry(self, creds: Credentials | None = None) -> None:
        """Log once per certificate: a warning when it expires soon, an error once it has."""
        creds = creds or self.creds
        expired = creds.expired()
        key = creds.cert_pem + (b"!" if expired else b"")
        if key in self._warned:
            return
        if expired:
            self._warned.add(key)
            log.error(
                "%s expired at %s (user %r): Teleport refuses it; %s",
                creds.source,
                f"{creds.not_after:%Y-%m-%dT%H:%M:%SZ}",
                creds.user,
                RENEW_HINT,
            )
        elif creds.expires_soon():
            self._warned.add(key)
            log.warning(
                "%s expires in %s (at %s, less than a third of its lifetime left); %s",
                creds.source,
                str(creds.left()).split(".")[0],
                f"{creds.not_after:%Y-%m-%dT%H:%M:%SZ}",
                RENEW_HINT,
            )

    def monitor(self, interval: float, refresh: bool) -> None:
        """Until close(): reload every ``interval`` when ``refresh`` (and on request), warn
        about expiry, and close retired connections once their calls can have ended."""
        interval = max(interval, 1.0)
        self._last_refresh = time.monotonic()
        self.warn_expiry()
        while not self._stop.is_set():
            asked = self._reload_now.wait(min(interval, 5.0) if refresh else 5.0)
            if self._stop.is_set():
                break
            self._reload_now.clear()
            if asked:
                log.info("reloading the Teleport credentials now (SIGHUP)")
            if asked or (refresh and self._due(interval)):
                try:
                    self.reload()
                except Exception as exc:  # keep the current identity and the monitor
                    log.warning("could not reload the Teleport identity: %s", exc)
            try:
                self.warn_expiry()
                self._close_retired()
            except Exception as exc:  # the monitor must outlive any one bad tick
                log.warning("identity monitor: %s", exc)

    def _due(self, interval: float) -> bool:
        now = time.monotonic()
        if now - self._last_refresh >= interval:
            self._last_refresh = now
            return True
        return False

    def _close_retired(self, everything: bool = False) -> None:
        grace = max(self.stream_timeout, self.call_timeout) + 30.0
        keep = []
        for conn in self._retired:
            if everything or time.monotonic() - conn.retired_at > grace:
                conn.close()
            else:
                keep.append(conn)
        self._retired = keep

    def close(self) -> None:
        """Close the channels: calls and streams in progress end at once (CANCELLED)."""
        with self._close_lock:
            if self._closed:
                return
            self._closed = True
        self._stop.set()
        self._reload_now.set()
        with self._reload_lock:
            self._conn.close()
            self._close_retired(everything=True)

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

    def newest_events(
        self,
        start: datetime.datetime,
        end: datetime.datetime,
        event_types: tuple[str, ...],
        limit: int,
    ) -> auditlog_pb2.EventsUnstructured:
        """The first page of [start, end], newest first (the monitor's probe)."""
        return self._first_page(start, end, event_types, limit, ORDER_NEWEST_FIRST)

    def oldest_events(
        self,
        start: datetime.datetime,
        end: datetime.datetime,
        event_types: tuple[str, ...],
        limit: int,
    ) -> auditlog_pb2.EventsUnstructured:
        """The first page of [start, end], oldest first (the monitor's probe)."""
        return self._first_page(start, end, event_types, limit, ORDER_OLDEST_FIRST)

    def _first_page(
        self,
        start: datetime.datetime,
        end: datetime.datetime,
        event_types: tuple[str, ...],
        limit: int,
        order: auditlog_pb2.Order,
    ) -> auditlog_pb2.EventsUnstructured:
        request = auditlog_pb2.GetUnstructuredEventsRequest(
            namespace="default",
            start_date=timestamp(start),
            end_date=timestamp(end),
            event_types=list(event_types),
            limit=limit,
            order=order,
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

    def session_events(
        self, sid: str, start_index: int
    ) -> Iterator[auditlog_pb2.EventUnstructured]:
        """Recording events of ``sid`` from ``start_index`` on (inclusive, as Teleport's
        AuditLog.StreamSessionEvents keeps them); cancelled on every exit path."""
        request = auditlog_pb2.StreamUnstructuredSessionEventsRequest(
            session_id=sid, start_index=start_index
        )
        stream: Any = self._audit.StreamUnstructuredSessionEvents(
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
