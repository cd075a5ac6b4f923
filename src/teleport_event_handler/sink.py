"""The Fluentd client: POST events to in_http over HTTPS with mutual TLS.

Wire form as Teleport's Go plugin: ``POST <url>``, ``Content-Type:
application/json``, one JSON object per request; or, where the receiver
takes them (Fluentd's in_http does), a JSON array of events per request,
which costs the receiver far less per event. TLS verification is always on:
the CA is ``--fluentd-ca`` or the system store and the URL's host must be in
the server certificate; there is deliberately no option to turn that off.

Delivery never skips an event: connection errors, timeouts, 5xx, 408 and 429
are retried with the shared jittered backoff until they succeed or shutdown
is requested. A definite rejection (another 4xx) of an array is split in
halves until the rejected events are alone; those go to ``on_rejected`` (the
app's dead-letter file) and the rest are delivered. TLS misconfiguration
that retrying cannot fix (an untrusted server certificate, a client
certificate the server refuses) raises ``SinkError`` at once.
"""

from __future__ import annotations

import contextlib
import http.client
import logging
import os
import socket
import ssl
import threading
import time
import urllib.parse
from collections.abc import Callable, Sequence
from typing import NamedTuple, Protocol

from . import __version__
from .backoff import Backoff, Shutdown

__all__ = [
    "FluentdClient",
    "RejectedHandler",
    "ShutdownRequested",
    "Sink",
    "SinkError",
    "build_client_context",
    "raise_if_fatal_tls",
]

log = logging.getLogger(__name__)

RejectedHandler = Callable[[str, bytes, int, bytes], None]

# Close pooled connections idle this long: below in_http's default
# keepalive_timeout (10 s), so we rarely reuse one the server just closed.
IDLE_TIMEOUT = 8.0
_USER_AGENT = f"teleport-event-handler/{__version__}"
# How long a clean close waits for the server's close_notify.
CLOSE_TIMEOUT = 1.0
# Alerts with which a server refuses our client certificate (TLS 1.2 and 1.3).
_CLIENT_CERT_REFUSED = {
    "TLSV13_ALERT_CERTIFICATE_REQUIRED",
    "SSLV3_ALERT_BAD_CERTIFICATE",
    "SSLV3_ALERT_CERTIFICATE_UNKNOWN",
    "SSLV3_ALERT_CERTIFICATE_EXPIRED",
    "SSLV3_ALERT_CERTIFICATE_REVOKED",
    "SSLV3_ALERT_UNSUPPORTED_CERTIFICATE",
    "TLSV1_ALERT_UNKNOWN_CA",
    "TLSV1_ALERT_ACCESS_DENIED",
}
# Fluentd 1.16 speaks TLS 1.2 only by default (lib/fluent/tls.rb DEFAULT_VERSION),
# and OpenSSL then refuses a client without a certificate with this alert
# (VERIFY_FAIL_IF_NO_PEER_CERT, lib/fluent/plugin_helper/cert_option.rb
# #cert_option_create_context), not TLS 1.3's certificate_required.
_HANDSHAKE_FAILURE = "SSLV3_ALERT_HANDSHAKE_FAILURE"
_NO_COMMON_VERSION = {"TLSV1_ALERT_PROTOCOL_VERSION", "UNSUPPORTED_PROTOCOL"}
# What a TLS server answers a hello without a client certificate: it does speak TLS.
_HANDSHAKE_FAILURE_REASONS = {
    _HANDSHAKE_FAILURE,
    "TLSV13_ALERT_CERTIFICATE_REQUIRED",
    *_NO_COMMON_VERSION,
}
_NOT_TLS = {
    "WRONG_VERSION_NUMBER",
    "HTTP_REQUEST",
    "PACKET_LENGTH_TOO_LONG",
    "RECORD_LAYER_FAILURE",
}


# The start-up check gives up after this long: a slow receiver only warns.
CHECK_TIMEOUT = 5.0


class Sink(Protocol):
    """What the pipeline and the session exporter need of a Fluentd client.

    ``FluentdClient`` (in_http) and ``forward.ForwardClient`` (in_forward) both
    offer it, with the same guarantees: ``deliver`` returns once every event
    was acknowledged or handed to the dead-letter handler.
    """

    def deliver(self, url: str, events: Sequence[bytes], *, as_array: bool) -> None: ...

    def check(self, url: str) -> str | None: ...

    def close(self) -> None: ...


class SinkError(Exception):
    """Fluentd client configuration or TLS trust that retrying cannot fix."""


class ShutdownRequested(Exception):
    """Shutdown was requested before the events were delivered; nothing was skipped."""


def _describe_file(flag: str, toml_key: str, path: str) -> str:
    return f"{flag} {path} ([forward.fluentd] {toml_key})"


def build_client_context(ca: str | None, cert: str | None, key: str | None) -> ssl.SSLContext:
    """The one TLS context of the client: verification on, optional client certificate."""
    if bool(cert) != bool(key):
        given, missing = (
            ("--fluentd-cert", "--fluentd-key") if cert else ("--fluentd-key", "--fluentd-cert")
        )
        raise SinkError(
            f"{given} is set but {missing} is not: give the client certificate and its key "
            "together, or neither"
        )
    for flag, toml_key, path in (
        ("--fluentd-ca", "ca", ca),
        ("--fluentd-cert", "cert", cert),
        ("--fluentd-key", "key", key),
    ):
        if path and not os.path.isfile(path):
            raise SinkError(f"{_describe_file(flag, toml_key, path)}: no such file: fix the path")
        if path and not os.access(path, os.R_OK):
            raise SinkError(
                f"{_describe_file(flag, toml_key, path)}: not readable by uid {os.getuid()}: "
                "grant read access to the user that runs the forwarder"
            )
    if ca:
        # Only this CA is trusted, as the Go plugin's RootCAs.
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        try:
            context.load_verify_locations(cafile=ca)
        except ssl.SSLError as exc:
            raise SinkError(
                f"{_describe_file('--fluentd-ca', 'ca', ca)}: not a PEM CA certificate "
                f"({exc.reason}): give the CA that signed Fluentd's server certificate"
            ) from exc
    else:
        context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.check_hostname = True
    context.verify_mode = ssl.CERT_REQUIRED
    if cert and key:
        where = f"{_describe_file('--fluentd-cert', 'cert', cert)} / --fluentd-key {key}"

        def refuse_encrypted() -> bytes:
            raise SinkError(
                f"--fluentd-key {key} ([forward.fluentd] key) is encrypted: client key "
                "encryption is not supported; write the key without a passphrase (mode 0600)"
            )

        try:
            context.load_cert_chain(cert, key, password=refuse_encrypted)
        except ssl.SSLError as exc:
            if "KEY_VALUES_MISMATCH" in str(exc):
                fix = "the key does not belong to the certificate: give the matching pair"
            else:
                fix = f"not a PEM certificate and private key ({exc.reason})"
            raise SinkError(f"{where}: {fix}") from exc
    return context


def raise_if_fatal_tls(
    exc: BaseException,
    *,
    url: str,
    host: str,
    ca: str | None,
    has_client_cert: bool,
    plain_url: str,
) -> None:
    """Raise SinkError for a TLS failure that retrying cannot fix; return otherwise.

    Shared by the HTTP and Forward clients: both build their context with
    ``build_client_context`` and meet the same handshake alerts.
    """
    if isinstance(exc, ssl.SSLCertVerificationError):
        trust = f"--fluentd-ca {ca}" if ca else "the system trust store"
        raise SinkError(
            f"Fluentd at {url} presented a certificate that does not verify "
            f"({exc.verify_message}): the certificate must be signed by the CA in {trust} "
            f"and name {host!r} in its subject alternative names; fix --fluentd-ca "
            "or the URL's host"
        ) from exc
    if isinstance(exc, ssl.SSLError):
        reason = exc.reason or ""
        if reason == _HANDSHAKE_FAILURE:
            if not has_client_cert:
                fix = (
                    "it requires a client certificate (Fluentd's <transport tls> "
                    "client_cert_auth): give --fluentd-cert and --fluentd-key "
                    "([forward.fluentd] cert, key) signed by the CA in its ca_path"
                )
            else:
                fix = (
                    "check that --fluentd-cert/--fluentd-key ([forward.fluentd] cert, key) "
                    "are signed by the CA in Fluentd's <transport tls> ca_path and that "
                    "its version/min_version/max_version allow TLS 1.2"
                )
            raise SinkError(
                f"Fluentd at {url} refused the TLS handshake ({reason}): {fix}"
            ) from exc
        if reason in _NO_COMMON_VERSION:
            raise SinkError(
                f"Fluentd at {url} speaks no TLS version this client does ({reason}): "
                "set Fluentd's <transport tls> version to TLSv1_2 (its default) or TLSv1_3"
            ) from exc
        if reason in _CLIENT_CERT_REFUSED:
            if not has_client_cert:
                fix = (
                    "it requires one: give --fluentd-cert and --fluentd-key "
                    "([forward.fluentd] cert, key) signed by the CA in its ca_path"
                )
            else:
                fix = (
                    "give --fluentd-cert/--fluentd-key signed by the CA in Fluentd's "
                    "<transport tls> ca_path"
                )
            raise SinkError(
                f"Fluentd at {url} refused the client certificate ({reason}): {fix}"
            ) from exc
        if reason in _NOT_TLS:
            raise SinkError(
                f"Fluentd at {url} does not speak TLS ({reason}): enable "
                f"<transport tls> in its <source> or use {plain_url}"
            ) from exc


class _Target(NamedTuple):
    url: str
    https: bool
    host: str
    port: int
    path: str

    @property
    def key(self) -> tuple[bool, str, int]:
        return (self.https, self.host, self.port)


class _HTTPSConnection(http.client.HTTPSConnection):
    def connect(self) -> None:
        super().connect()
        # http.client sends headers and a large body in two writes; without
        # NODELAY, Nagle plus delayed ACK can stall each request ~40 ms.
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


class _HTTPConnection(http.client.HTTPConnection):
    def connect(self) -> None:
        super().connect()
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


class _Retryable(Exception):
    """A failure worth retrying; the message says what happened (never the body)."""


class FluentdClient:
    """Delivers events to Fluentd; thread-safe, at most ``max_connections`` in flight.

    ``timeout`` bounds each connect, send and receive (the Go plugin's 30 s).
    Connections are kept alive and reused, at most ``max_connections`` open.
    After ``close()``, ``deliver`` raises ShutdownRequested.

    Counters (read them for logs and metrics): ``requests`` (HTTP requests
    answered), ``events`` (events acknowledged), ``retries`` (waits before a
    retry), ``rejected`` (events handed to ``on_rejected``), ``reconnects``
    (dropped keep-alive connections replaced), ``bytes_sent``.
    """

    def __init__(
        self,
        *,
        ca: str | None,
        cert: str | None,
        key: str | None,
        max_connections: int,
        timeout: float = 30.0,
        shutdown: Shutdown,
        backoff: Callable[[], Backoff] = Backoff,
        on_rejected: RejectedHandler | None = None,
        dry_run: bool = False,
        trust_refusals: bool = False,
    ) -> None:
        if max_connections < 1:
            raise SinkError(
                f"--fluentd-max-connections {max_connections}: give 1 or more "
                "(default: twice the concurrency)"
            )
        self.ca = ca
        self._context = build_client_context(ca, cert, key)
        self._has_client_cert = bool(cert)
        self.max_connections = max_connections
        self.timeout = timeout
        self._shutdown = shutdown
        self._backoff = backoff
        self._on_rejected = on_rejected
        self.dry_run = dry_run
        self._slots = threading.BoundedSemaphore(max_connections)
        self._lock = threading.Lock()
        self._idle: dict[tuple[bool, str, int], list[tuple[float, http.client.HTTPConnection]]] = {}
        self._busy: set[http.client.HTTPConnection] = set()
        self._open = 0
        self._targets: dict[str, _Target] = {}
        self._closed = False
        self._warned_plain: set[str] = set()
        self._plain_checked: set[tuple[bool, str, int]] = set()
        self.requests = 0
        self.events = 0
        self.retries = 0
        self.rejected = 0
        self._last_accept = 0.0  # time.monotonic() of the last 2xx
        # Every refusal is about the event (dead-letter replay: refused before).
        self._trust_refusals = trust_refusals
        self.reconnects = 0
        self.bytes_sent = 0

    # --- public -------------------------------------------------------------------

    def deliver(self, url: str, events: Sequence[bytes], *, as_array: bool) -> None:
        """Deliver every event (each one serialised JSON object) to ``url``.

        ``as_array``: one POST of ``[e1,e2,...]`` (a lone event goes bare);
        otherwise one POST per event, the Go plugin's wire form. Returns once
        every event was acknowledged (any 2xx) or handed to ``on_rejected``;
        raises ShutdownRequested when shutdown interrupts a retry, SinkError
        for TLS trust problems.
        """
        if not events:
            return
        target = self._target(url)
        if self.dry_run:
            with self._lock:
                self.requests += 1 if as_array else len(events)
                self.events += len(events)
            log.debug("dry run: %d events not sent to %s", len(events), url)
            return
        if as_array:
            self._deliver_isolating(target, list(events))
        else:
            for event in events:
                self._deliver_isolating(target, [event])

    def check(self, url: str) -> str | None:
        """Reach the receiver once, at start-up, so setup mistakes surface at once.

        Raises SinkError for what retries cannot fix (the server certificate
        does not verify, our certificate is refused, no TLS); returns a
        message for a receiver that is merely down, which delivery will retry.
        A GET is enough: any HTTP answer proves both TLS handshakes passed.
        """
        if self.dry_run:
            return None
        target = self._target(url)
        conn = self._new_connection(target)
        # Short, so a hung receiver delays start-up (and a SIGTERM) by seconds at most.
        conn.timeout = min(self.timeout, CHECK_TIMEOUT)
        try:
            conn.request("GET", target.path, headers={"Connection": "close"})
            conn.getresponse().read()
        except (OSError, http.client.HTTPException) as exc:
            conn.close()
            self._raise_if_fatal(target, exc)
            return f"Fluentd at {target.url} is not reachable yet ({_reason(exc)})"
        _close_gracefully(conn)
        return None

    def close(self) -> None:
        """Close pooled connections and abort requests in flight.

        Request shutdown first: an aborted request then ends its ``deliver``
        with ShutdownRequested instead of a retry.
        """
        with self._lock:
            self._closed = True
            idle = [conn for conns in self._idle.values() for _, conn in conns]
            self._idle.clear()
            self._open -= len(idle)
            busy = list(self._busy)
        for conn in idle:
            _close_gracefully(conn)
        for conn in busy:
            sock = conn.sock
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)

    def __enter__(self) -> FluentdClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- delivery -----------------------------------------------------------------

    def _deliver_isolating(self, target: _Target, events: list[bytes]) -> None:
        """Deliver ``events``, splitting refused batches to find the events Fluentd refuses.

        The events refused one by one are dead-lettered only when Fluentd
        accepted something (from this batch or any other request) after the
        batch was first refused. When it accepted nothing since, it refuses
        everything: a broken receiver, not bad events; they are sent again with
        backoff instead, and nothing healthy lands in the dead letters.
        """
        pending = [events]
        first_refusal: float | None = None
        backoff: Backoff | None = None
        while pending:
            refused: list[tuple[bytes, int, bytes]] = []
            while pending:
                batch = pending.pop()
                status, body = self._send(target, batch)
                if 200 <= status < 300:
                    continue
                if first_refusal is None:
                    first_refusal = time.monotonic()
                if len(batch) > 1:
                    middle = len(batch) // 2
                    log.warning(
                        "Fluentd %s rejected %d events (HTTP %d): splitting to find the bad ones",
                        target.url,
                        len(batch),
                        status,
                    )
                    pending.append(batch[middle:])
                    pending.append(batch[:middle])
                    continue
                refused.append((batch[0], status, body))
            if not refused:
                return
            assert first_refusal is not None
            with self._lock:
                accepted_since = self._last_accept > first_refusal
            if accepted_since or self._trust_refusals:
                for event, status, body in refused:
                    self._reject(target, event, status, body)
                return
            if backoff is None:
                backoff = self._backoff()
            delay = backoff.next_delay()
            with self._lock:
                self.retries += 1
            _event, status, body = refused[0]
            log.warning(
                "Fluentd %s refuses every request (HTTP %d: %s) and accepted none since %.0fs "
                "ago: a receiver fault, not bad events; retrying %d events in %.1fs "
                "(fix the receiver)",
                target.url,
                status,
                body[:200].decode("utf-8", "replace").strip(),
                time.monotonic() - first_refusal,
                len(refused),
                delay,
            )
            if self._shutdown.wait(delay):
                raise ShutdownRequested(
                    f"shutdown requested while retrying events for {target.url}"
                )
            pending = [[event for event, _status, _body in refused]]

    def _reject(self, target: _Target, event: bytes, status: int, body: bytes) -> None:
        with self._lock:
            self.rejected += 1
        log.error(
            "Fluentd %s rejected an event (HTTP %d: %s): handed to the dead-letter handler",
            target.url,
            status,
            body[:200].decode("utf-8", "replace").strip(),
        )
        assert self._on_rejected is not None
        self._on_rejected(target.url, event, status, body)

    def _send(self, target: _Target, batch: list[bytes]) -> tuple[int, bytes]:
        """POST until a 2xx or a definite rejection; returns (status, response body)."""
        body = batch[0] if len(batch) == 1 else b"[" + b",".join(batch) + b"]"
        backoff: Backoff | None = None
        while True:
            try:
                status, answer = self._post(target, body)
            except _Retryable as exc:
                reason = str(exc)
            else:
                if 200 <= status < 300:
                    with self._lock:
                        self.events += len(batch)
                        self._last_accept = time.monotonic()
                    if backoff is not None and backoff.attempts:
                        log.info("Fluentd %s accepts events again", target.url)
                    return status, answer
                permanent = 400 <= status < 500 and status not in (408, 429)
                if permanent and self._on_rejected is not None:
                    return status, answer
                reason = f"HTTP {status}"
                if permanent:
                    reason += " (no dead-letter handler, so retrying)"
            if backoff is None:
                backoff = self._backoff()
            delay = backoff.next_delay()
            with self._lock:
                self.retries += 1
            log.warning(
                "Failed to send %d events to fluentd %s (%s): retry %d in %.1fs",
                len(batch),
                target.url,
                reason,
                backoff.attempts,
                delay,
            )
            if self._shutdown.wait(delay):
                raise ShutdownRequested(
                    f"shutdown requested while retrying {len(batch)} events for {target.url}"
                )

    def _post(self, target: _Target, body: bytes) -> tuple[int, bytes]:
        headers = {"Content-Type": "application/json", "User-Agent": _USER_AGENT}
        self._acquire_slot()
        try:
            while True:
                conn, reused = self._checkout(target)
                try:
                    conn.request("POST", target.path, body, headers)
                    response = conn.getresponse()
                    answer = response.read()
                except (OSError, http.client.HTTPException) as exc:
                    self._checkin(target, conn, reusable=False, broken=True)
                    if self._shutdown.requested:
                        raise ShutdownRequested(
                            f"shutdown aborted a request to {target.url}"
                        ) from exc
                    if reused and not isinstance(exc, TimeoutError):
                        # The server closed an idle keep-alive connection:
                        # not a failure, just dial again.
                        with self._lock:
                            self.reconnects += 1
                        self._drop_idle(target)
                        continue
                    self._raise_if_fatal(target, exc)
                    raise _Retryable(_reason(exc)) from exc
                self._checkin(target, conn, reusable=not response.will_close)
                with self._lock:
                    self.requests += 1
                    self.bytes_sent += len(body)
                log.debug("POST %s: HTTP %d", target.url, response.status)
                return response.status, answer
        finally:
            self._slots.release()

    def _raise_if_fatal(self, target: _Target, exc: BaseException) -> None:
        raise_if_fatal_tls(
            exc,
            url=target.url,
            host=target.host,
            ca=self.ca,
            has_client_cert=self._has_client_cert,
            plain_url="an http:// URL",
        )
        if not target.https and isinstance(
            exc, http.client.RemoteDisconnected | ConnectionResetError | http.client.BadStatusLine
        ):
            self._raise_if_tls_port(target)

    def _raise_if_tls_port(self, target: _Target) -> None:
        """An http:// URL whose server hung up: stop with the fix if the server speaks TLS."""
        with self._lock:
            if target.key in self._plain_checked:
                return
            self._plain_checked.add(target.key)
        probe = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        probe.check_hostname = False
        probe.verify_mode = ssl.CERT_NONE
        try:
            with (
                socket.create_connection((target.host, target.port), timeout=CHECK_TIMEOUT) as raw,
                probe.wrap_socket(raw, server_hostname=target.host),
            ):
                pass
        except ssl.SSLError as exc:
            # A TLS server that wants a client certificate still answers the hello.
            if exc.reason not in _HANDSHAKE_FAILURE_REASONS:
                return
        except OSError:
            return
        https = urllib.parse.urlunsplit(("https", *urllib.parse.urlsplit(target.url)[1:]))
        raise SinkError(
            f"Fluentd at {target.url} speaks TLS (its <source> has <transport tls>) but the URL "
            f"is http://: use {https}, with [forward.fluentd] ca, cert and key"
        )

    # --- connections --------------------------------------------------------------

    def _acquire_slot(self) -> None:
        while not self._slots.acquire(timeout=0.2):
            if self._shutdown.requested:
                raise ShutdownRequested("shutdown requested while waiting for a Fluentd connection")

    def _checkout(self, target: _Target) -> tuple[http.client.HTTPConnection, bool]:
        """An idle pooled connection to the target, else a new one (never above the cap)."""
        stale: list[http.client.HTTPConnection] = []
        conn: http.client.HTTPConnection | None = None
        with self._lock:
            if self._closed:
                raise ShutdownRequested("the Fluentd client is closed")
            idle = self._idle.get(target.key, [])
            now = time.monotonic()
            while idle:
                last_used, candidate = idle.pop()
                if now - last_used < IDLE_TIMEOUT:
                    conn = candidate
                    break
                stale.append(candidate)
            self._open -= len(stale)
            if conn is None and self._open >= self.max_connections:
                # Our slot guarantees an idle connection elsewhere: close it.
                for conns in self._idle.values():
                    if conns:
                        stale.append(conns.pop(0)[1])
                        self._open -= 1
                        break
            if conn is None:
                self._open += 1
            reused = conn is not None
            if conn is None:
                conn = self._new_connection(target)
            self._busy.add(conn)
        for old in stale:
            _close_gracefully(old)
        return conn, reused

    def _new_connection(self, target: _Target) -> http.client.HTTPConnection:
        if target.https:
            return _HTTPSConnection(
                target.host, target.port, timeout=self.timeout, context=self._context
            )
        return _HTTPConnection(target.host, target.port, timeout=self.timeout)

    def _checkin(
        self,
        target: _Target,
        conn: http.client.HTTPConnection,
        *,
        reusable: bool,
        broken: bool = False,
    ) -> None:
        with self._lock:
            self._busy.discard(conn)
            if reusable and not self._closed:
                self._idle.setdefault(target.key, []).append((time.monotonic(), conn))
                return
            self._open -= 1
        if broken:
            conn.close()
        else:
            _close_gracefully(conn)

    def _drop_idle(self, target: _Target) -> None:
        """After one dropped keep-alive connection, the others to that server are suspect too."""
        with self._lock:
            idle = self._idle.pop(target.key, [])
            self._open -= len(idle)
        for _, conn in idle:
            conn.close()  # suspect: the server may be gone

    def _target(self, url: str) -> _Target:
        target = self._targets.get(url)
        if target is not None:
            return target
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("https", "http") or not parts.hostname:
            raise SinkError(
                f"Fluentd URL {url!r}: give an https:// URL such as "
                "https://fluentd.example.com:8888/test.log"
            )
        https = parts.scheme == "https"
        if not https and url not in self._warned_plain:
            self._warned_plain.add(url)
            log.warning("Fluentd URL %s is plain http: events travel unencrypted", url)
        path = parts.path or "/"
        if parts.query:
            path += "?" + parts.query
        try:
            port = parts.port or (443 if https else 80)
        except ValueError as exc:
            raise SinkError(f"Fluentd URL {url!r}: {exc}: fix the port") from exc
        target = _Target(url, https, parts.hostname, port, path)
        if len(self._targets) < 10_000:  # session URLs are per session: bound the cache
            self._targets[url] = target
        return target


def _close_gracefully(conn: http.client.HTTPConnection) -> None:
    """Close a connection, ending TLS with close_notify first.

    Without it Fluentd logs "close socket due to unexpected ssl error:
    SSL_read: unexpected eof" for every connection (its TLS reader,
    lib/fluent/plugin_helper/server.rb TLSCallbackSocket#on_readable).
    """
    sock = conn.sock
    if isinstance(sock, ssl.SSLSocket):
        with contextlib.suppress(OSError, ValueError):
            sock.settimeout(min(CLOSE_TIMEOUT, conn.timeout or CLOSE_TIMEOUT))
            sock.unwrap()
    conn.close()


def _reason(exc: BaseException) -> str:
    if isinstance(exc, ssl.SSLError) and exc.reason:
        return f"TLS {exc.reason}"
    if isinstance(exc, TimeoutError):
        return "timed out"
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
