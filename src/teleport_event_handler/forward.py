"""The Fluentd client over the Forward protocol: PackedForward with acks, mutual TLS.

Fluentd's ``in_forward`` (lib/fluent/plugin/in_forward.rb) reads a stream of
msgpack messages. We send PackedForward messages, ``[tag, entries, option]``
where ``entries`` is one msgpack ``bin`` holding ``[time, record]`` pairs back
to back (``on_message``: ``when String`` → ``MessagePackEventStream``), time
an ``EventTime`` (msgpack ext type 0: seconds and nanoseconds, two big-endian
uint32) and ``option`` ``{"chunk": <id>, "size": <n>}``. For a ``chunk``
option in_forward answers ``{"ack": <id>}`` (``response``) after the events
were emitted, as ``out_forward``'s ``require_ack_response`` expects.

The tag is the URL's path with the leading ``/`` dropped and ``/`` as ``.``
(in_http's rule), so ``tls://fluentd:24224/test.log`` tags ``test.log`` and the
session prefix ``tls://fluentd:24224/session`` tags ``session.<sid>.log``.

Guarantees are the HTTP client's: ``deliver`` returns only once every event
was acknowledged or handed to ``on_rejected``. A connection error, a refused
or broken connection, or no ack within ``timeout`` closes that connection and
retries the same chunk on a new one with the shared backoff (so Fluentd may
see it twice: at least once, never skipped). Forward has no per-record
refusal: the only events "refused" are those that cannot be sent as a
Forward record (not a JSON object, or a value msgpack cannot encode); they go
to ``on_rejected`` with status 0 before anything is sent.

Not supported, on purpose: in_forward's ``<security>`` shared-key handshake
(the server sends ``HELO`` first; we stop with a SinkError saying to rely on
``<transport tls>`` with ``client_cert_auth`` instead), and
CompressedPackedForward (gzip costs the receiver CPU that TLS on a LAN
rarely repays).
"""

from __future__ import annotations

import base64
import contextlib
import datetime
import logging
import os
import re
import socket
import ssl
import struct
import threading
import time
import urllib.parse
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import msgpack  # type: ignore[import-untyped]  # no stubs or py.typed
import orjson

from . import accelerator
from .backoff import Backoff, Shutdown
from .sink import (
    CHECK_TIMEOUT,
    CLOSE_TIMEOUT,
    RejectedHandler,
    ShutdownRequested,
    SinkError,
    build_client_context,
    raise_if_fatal_tls,
)

__all__ = ["ForwardClient", "encode_entry", "forward_tag", "is_forward_url"]

log = logging.getLogger(__name__)

FORWARD_SCHEMES = ("tls", "tcp")
DEFAULT_PORT = 24224
# Close pooled connections idle this long; in_forward keeps them open, but
# middleboxes may not, and a fresh handshake costs little at this rate.
IDLE_TIMEOUT = 60.0
_EVENT_TIME = struct.Struct(">II")
_forward_entry = accelerator.function("forward_entry")
_RFC3339 = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d{1,9})\d*)?(Z|z|[+-]\d\d:\d\d)$")


def is_forward_url(url: str) -> bool:
    return urllib.parse.urlsplit(url).scheme in FORWARD_SCHEMES


def forward_tag(path: str) -> str:
    """in_http's tag rule (``path_info[1..-1].split('/').join('.')``), for the same tags."""
    return ".".join(part for part in path.lstrip("/").split("/") if part)


def _event_time(record: dict[str, Any]) -> msgpack.ExtType:
    """The event's ``time`` as an EventTime (ext 0), else now: Fluentd keeps nanoseconds."""
    value = record.get("time")
    match = _RFC3339.match(value) if isinstance(value, str) else None
    if match:
        day, fraction, zone = match.groups()
        try:
            moment = datetime.datetime.fromisoformat(day + ("+00:00" if zone in "Zz" else zone))
        except ValueError:
            pass
        else:
            seconds = int(moment.timestamp())
            if 0 <= seconds < 2**32:
                nanos = int(fraction.ljust(9, "0")) if fraction else 0
                return msgpack.ExtType(0, _EVENT_TIME.pack(seconds, nanos))
    now = time.time_ns()
    return msgpack.ExtType(0, _EVENT_TIME.pack(now // 1_000_000_000, now % 1_000_000_000))


def encode_entry(event: bytes) -> bytes:
    """One ``[time, record]`` entry; ValueError says why an event cannot be one."""
    if _forward_entry is not None:
        packed = _forward_entry(event)
        if packed is not None:
            return packed
    return python_encode_entry(event)


def python_encode_entry(event: bytes) -> bytes:
    """``encode_entry`` without the accelerator."""
    try:
        record = orjson.loads(event)
    except orjson.JSONDecodeError as exc:
        raise ValueError(f"not JSON ({exc})") from exc
    if not isinstance(record, dict):
        raise ValueError(f"a JSON {type(record).__name__}, not an object")
    try:
        packed: bytes = msgpack.packb([_event_time(record), record], use_bin_type=True)
    except (OverflowError, TypeError, ValueError) as exc:
        raise ValueError(f"msgpack cannot encode it ({exc})") from exc
    return packed


class _Target(NamedTuple):
    url: str
    tls: bool
    host: str
    port: int
    tag: str

    @property
    def key(self) -> tuple[bool, str, int]:
        return (self.tls, self.host, self.port)


class _Retryable(Exception):
    """A failure worth retrying on a new connection."""


class _Connection:
    def __init__(self, sock: socket.socket, timeout: float) -> None:
        self.sock = sock
        self.unpacker = msgpack.Unpacker(raw=False)
        self.timeout = timeout
        self.last_used = time.monotonic()

    def exchange(self, frame: bytes, chunk: str, deadline: float) -> None:
        self.sock.sendall(frame)
        while True:
            for answer in self.unpacker:
                if isinstance(answer, list) and answer and answer[0] == "HELO":
                    raise SinkError(
                        "in_forward asked for a shared-key handshake (HELO): its <security> "
                        "section is set; this client authenticates with TLS client "
                        "certificates only: remove <security> and use <transport tls> with "
                        "client_cert_auth true"
                    )
                if isinstance(answer, dict) and answer.get("ack") == chunk:
                    return
                log.debug("in_forward sent an unexpected answer: %r", answer)
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError
            self.sock.settimeout(left)
            data = self.sock.recv(65536)
            if not data:
                raise ConnectionResetError("connection closed before the ack")
            self.unpacker.feed(data)

    def close(self, *, graceful: bool) -> None:
        if graceful and isinstance(self.sock, ssl.SSLSocket):
            # Without close_notify Fluentd logs "unexpected eof" per connection.
            with contextlib.suppress(OSError, ValueError):
                self.sock.settimeout(CLOSE_TIMEOUT)
                self.sock.unwrap()
        with contextlib.suppress(OSError):
            self.sock.close()


class ForwardClient:
    """Delivers events to Fluentd's in_forward; the interface of ``FluentdClient``.

    Thread-safe, at most ``max_connections`` connections, each carrying one
    chunk at a time (send, then wait for its ack). ``timeout`` bounds the
    connect and the wait for an ack. Counters as ``FluentdClient``:
    ``requests`` (chunks acknowledged), ``events``, ``retries``,
    ``rejected``, ``reconnects``, ``bytes_sent``.
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
        self._idle: dict[tuple[bool, str, int], list[_Connection]] = {}
        self._busy: set[_Connection] = set()
        self._closed = False
        self._targets: dict[str, _Target] = {}
        self._warned_plain: set[str] = set()
        self.requests = 0
        self.events = 0
        self.retries = 0
        self.rejected = 0
        self.reconnects = 0
        self.bytes_sent = 0

    # --- public -------------------------------------------------------------------

    def deliver(self, url: str, events: Sequence[bytes], *, as_array: bool) -> None:
        """Deliver every event as PackedForward; ``as_array`` false sends one per chunk."""
        if not events:
            return
        target = self._target(url)
        entries: list[bytes] = []
        for event in events:
            try:
                entries.append(encode_entry(event))
            except ValueError as exc:
                self._reject(target, event, str(exc))
        if self.dry_run:
            with self._lock:
                self.requests += 1 if as_array else len(entries)
                self.events += len(entries)
            return
        groups = [entries] if as_array else [[entry] for entry in entries]
        for group in groups:
            if group:
                self._send(target, group)

    def check(self, url: str) -> str | None:
        """Connect once at start-up: TLS mistakes raise SinkError, a down receiver returns why."""
        if self.dry_run:
            return None
        target = self._target(url)
        try:
            conn = self._connect(target, min(self.timeout, CHECK_TIMEOUT))
        except OSError as exc:
            self._raise_if_fatal(target, exc)
            return f"Fluentd in_forward at {target.url} is not reachable yet ({_reason(exc)})"
        conn.close(graceful=True)
        log.info(
            "sending to Fluentd's in_forward at %s (Forward protocol, %s)",
            target.url,
            "mutual TLS"
            if target.tls and self._has_client_cert
            else "TLS"
            if target.tls
            else "unencrypted",
        )
        return None

    def close(self) -> None:
        with self._lock:
            self._closed = True
            idle = [conn for conns in self._idle.values() for conn in conns]
            self._idle.clear()
            busy = list(self._busy)
        for conn in idle:
            conn.close(graceful=True)
        for conn in busy:
            with contextlib.suppress(OSError):
                conn.sock.shutdown(socket.SHUT_RDWR)

    def __enter__(self) -> ForwardClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- delivery -----------------------------------------------------------------

    def _reject(self, target: _Target, event: bytes, why: str) -> None:
        reason = f"cannot be sent over the Forward protocol: {why}"
        if self._on_rejected is None:
            raise SinkError(f"an event for {target.url} {reason}, and there is no dead-letter file")
        with self._lock:
            self.rejected += 1
        log.error("an event for %s %s: handed to the dead-letter handler", target.url, reason)
        self._on_rejected(target.url, event, 0, reason.encode())

    def _send(self, target: _Target, entries: list[bytes]) -> None:
        chunk = base64.b64encode(os.urandom(16)).decode()
        frame: bytes = msgpack.packb(
            [target.tag, b"".join(entries), {"chunk": chunk, "size": len(entries)}],
            use_bin_type=True,
        )
        backoff: Backoff | None = None
        while True:
            try:
                self._exchange(target, frame, chunk)
            except _Retryable as exc:
                reason = str(exc)
            else:
                with self._lock:
                    self.requests += 1
                    self.events += len(entries)
                    self.bytes_sent += len(frame)
                if backoff is not None and backoff.attempts:
                    log.info("Fluentd %s acknowledges events again", target.url)
                return
            if backoff is None:
                backoff = self._backoff()
            delay = backoff.next_delay()
            with self._lock:
                self.retries += 1
            log.warning(
                "Failed to send %d events to fluentd %s (%s): retry %d in %.1fs",
                len(entries),
                target.url,
                reason,
                backoff.attempts,
                delay,
            )
            if self._shutdown.wait(delay):
                raise ShutdownRequested(
                    f"shutdown requested while retrying {len(entries)} events for {target.url}"
                )

    def _exchange(self, target: _Target, frame: bytes, chunk: str) -> None:
        while not self._slots.acquire(timeout=0.2):
            if self._shutdown.requested:
                raise ShutdownRequested("shutdown requested while waiting for a Fluentd connection")
        try:
            while True:
                conn, reused = self._checkout(target)
                try:
                    conn.exchange(frame, chunk, time.monotonic() + self.timeout)
                except OSError as exc:
                    self._checkin(target, conn, reusable=False)
                    if self._shutdown.requested:
                        raise ShutdownRequested(
                            f"shutdown aborted a chunk for {target.url}"
                        ) from exc
                    if reused and not isinstance(exc, TimeoutError):
                        # An idle connection the server closed: dial again.
                        with self._lock:
                            self.reconnects += 1
                        continue
                    self._raise_if_fatal(target, exc)
                    if isinstance(exc, TimeoutError):
                        raise _Retryable(f"no ack within {self.timeout:g}s") from exc
                    raise _Retryable(_reason(exc)) from exc
                except SinkError:
                    self._checkin(target, conn, reusable=False)
                    raise
                self._checkin(target, conn, reusable=True)
                return
        finally:
            self._slots.release()

    def _raise_if_fatal(self, target: _Target, exc: BaseException) -> None:
        raise_if_fatal_tls(
            exc,
            url=target.url,
            host=target.host,
            ca=self.ca,
            has_client_cert=self._has_client_cert,
            plain_url="a tcp:// URL",
        )

    # --- connections --------------------------------------------------------------

    def _connect(self, target: _Target, timeout: float) -> _Connection:
        sock = socket.create_connection((target.host, target.port), timeout=timeout)
        try:
            # A request-ack loop without NODELAY stalls on Nagle plus delayed ACK.
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if target.tls:
                sock = self._context.wrap_socket(sock, server_hostname=target.host)
        except BaseException:
            sock.close()
            raise
        return _Connection(sock, timeout)

    def _checkout(self, target: _Target) -> tuple[_Connection, bool]:
        stale: list[_Connection] = []
        conn: _Connection | None = None
        with self._lock:
            if self._closed:
                raise ShutdownRequested("the Fluentd client is closed")
            idle = self._idle.get(target.key, [])
            now = time.monotonic()
            while idle:
                candidate = idle.pop()
                if now - candidate.last_used < IDLE_TIMEOUT:
                    conn = candidate
                    break
                stale.append(candidate)
            if conn is None:
                # Our slot bounds busy connections; keep idle ones under the cap too.
                total = len(self._busy) + sum(len(c) for c in self._idle.values())
                for conns in self._idle.values():
                    if total < self.max_connections:
                        break
                    while conns and total >= self.max_connections:
                        stale.append(conns.pop(0))
                        total -= 1
        for old in stale:
            old.close(graceful=True)
        reused = conn is not None
        if conn is None:
            try:
                conn = self._connect(target, self.timeout)
            except OSError as exc:
                if self._shutdown.requested:
                    raise ShutdownRequested(f"shutdown aborted a connect to {target.url}") from exc
                self._raise_if_fatal(target, exc)
                raise _Retryable(_reason(exc)) from exc
        with self._lock:
            self._busy.add(conn)
        return conn, reused

    def _checkin(self, target: _Target, conn: _Connection, *, reusable: bool) -> None:
        with self._lock:
            self._busy.discard(conn)
            if reusable and not self._closed:
                conn.last_used = time.monotonic()
                self._idle.setdefault(target.key, []).append(conn)
                return
        conn.close(graceful=reusable)

    def _target(self, url: str) -> _Target:
        target = self._targets.get(url)
        if target is not None:
            return target
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("tls", "tcp", "https") or not parts.hostname:
            raise SinkError(
                f"Fluentd Forward URL {url!r}: give a tls:// URL such as "
                "tls://fluentd.example.com:24224/test.log"
            )
        tls = parts.scheme != "tcp"
        if not tls and url not in self._warned_plain:
            self._warned_plain.add(url)
            log.warning("Fluentd URL %s is plain tcp: events travel unencrypted", url)
        try:
            port = parts.port or DEFAULT_PORT
        except ValueError as exc:
            raise SinkError(f"Fluentd URL {url!r}: {exc}: fix the port") from exc
        tag = forward_tag(parts.path)
        if not tag:
            raise SinkError(
                f"Fluentd Forward URL {url!r} has no tag: give it as the path, "
                "e.g. tls://fluentd.example.com:24224/test.log"
            )
        target = _Target(url, tls, parts.hostname, port, tag)
        if len(self._targets) < 10_000:  # session URLs are per session: bound the cache
            self._targets[url] = target
        return target


def _reason(exc: BaseException) -> str:
    if isinstance(exc, ssl.SSLError) and exc.reason:
        return f"TLS {exc.reason}"
    if isinstance(exc, TimeoutError):
        return "timed out"
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
