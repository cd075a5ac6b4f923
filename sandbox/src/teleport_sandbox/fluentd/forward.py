"""The sandbox's in_forward: Fluentd's Forward protocol over TLS, with acks and faults.

Modelled on Fluentd v1.16 lib/fluent/plugin/in_forward.rb:

* ``#read_messages``: the stream is msgpack (a first byte ``{`` or ``[``
  would mean JSON, which the sandbox does not take: it closes the connection).
* ``#on_message``: ``[tag, time, record(, option)]`` is Message mode,
  ``[tag, [[time, record], ...](, option)]`` Forward mode and ``[tag,
  <str/bin entries>(, option)]`` PackedForward (``option["compressed"] ==
  "gzip"``: CompressedPackedForward). A message larger than
  ``chunk_size_limit`` is dropped without an ack. ``skip_invalid_event``
  drops entries whose time is not an integer or EventTime or whose record is
  not a map (``#invalid_event?``); without it they are emitted as they are.
* ``#response``: an ``option`` with ``chunk`` is answered ``{"ack": chunk}``
  after the events were emitted.
* ``<security>`` (the HELO/PING/PONG shared-key handshake) is refused by the
  config reader: the sandbox authenticates with TLS client certificates only.

Faults (``Faults``): ``refuse`` resets connections, ``latency_ms`` delays each
ack, ``forward_no_ack`` stores events but never acks (the client's ack
timeout), ``forward_drop_rate`` drops that fraction of messages unstored and
unacked.
"""

from __future__ import annotations

import contextlib
import gzip
import logging
import socket
import ssl
import struct
import threading
from typing import TYPE_CHECKING, Any

import msgpack  # type: ignore[import-untyped]  # no stubs or py.typed

from .conf import ConfigError, ForwardSourceConfig
from .records import EmitError, Event

if TYPE_CHECKING:
    from .server import FluentdServer

__all__ = ["ForwardListener"]

log = logging.getLogger("fluentd")

_TICK = 0.2


class _EventTime:
    """msgpack ext type 0: seconds and nanoseconds, two big-endian uint32."""

    __slots__ = ("ns",)

    def __init__(self, ns: int) -> None:
        self.ns = ns


def _ext_hook(code: int, data: bytes) -> Any:
    if code == 0 and len(data) == 8:
        seconds, nanos = struct.unpack(">II", data)
        return _EventTime(seconds * 1_000_000_000 + nanos)
    return msgpack.ExtType(code, data)


def _time_ns(value: Any) -> int | None:
    if isinstance(value, _EventTime):
        return value.ns
    if isinstance(value, int) and not isinstance(value, bool):
        return value * 1_000_000_000
    return None


def _unpacker() -> Any:
    return msgpack.Unpacker(
        raw=False, ext_hook=_ext_hook, unicode_errors="surrogateescape", strict_map_key=False
    )


class ForwardListener:
    """One ``<source> @type forward`` of a ``FluentdServer``; shares its outputs and stats."""

    def __init__(
        self,
        server: FluentdServer,
        config: ForwardSourceConfig,
        context: ssl.SSLContext | None,
        *,
        port: int | None = None,
        bind: str | None = None,
        where: str = "fluent.conf",
    ) -> None:
        self._server = server
        self.config = config
        self._context = context
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._connections: set[socket.socket] = set()
        self._lock = threading.Lock()
        host = bind or config.bind
        chosen = config.port if port is None else port
        try:
            family, _, _, _, address = socket.getaddrinfo(host, chosen, type=socket.SOCK_STREAM)[0]
            self._listener = socket.socket(family, socket.SOCK_STREAM)
            self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            self._listener.bind(address)
            self._listener.listen(128)
        except OSError as exc:
            raise ConfigError(
                f"{where}: in_forward cannot listen on {host}:{chosen} "
                f"({exc.strerror or exc}): free the port or choose another with 'port'"
            ) from exc
        self._listener.settimeout(_TICK)
        self.host = host
        self.port: int = self._listener.getsockname()[1]
        self.acks = 0
        self.dropped = 0

    def url(self, tag: str = "", host: str | None = None) -> str:
        """``tls://<host>:<port>/<tag>`` (``tcp://`` without ``<transport tls>``)."""
        name = host or self.host
        if ":" in name:
            name = f"[{name}]"
        return f"{'tls' if self._context else 'tcp'}://{name}:{self.port}/{tag}"

    def start(self) -> None:
        thread = threading.Thread(target=self._accept_loop, name="forward-accept", daemon=True)
        thread.start()
        self._threads.append(thread)
        log.info("in_forward listening on %s", self.url())

    def stop(self) -> None:
        self._stop.set()
        with contextlib.suppress(OSError):
            self._listener.close()
        self.drop_connections()
        for thread in list(self._threads):
            thread.join(timeout=2)

    def drop_connections(self) -> None:
        with self._lock:
            connections = list(self._connections)
        for conn in connections:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)

    # --- connections ----------------------------------------------------------------

    def _accept_loop(self) -> None:
        stats = self._server.stats
        while not self._stop.is_set():
            try:
                conn, address = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                if self._stop.is_set():
                    return
                continue
            if self._server.faults.refuse:
                stats.count("connections_refused")
                with contextlib.suppress(OSError):
                    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                conn.close()
                continue
            thread = threading.Thread(
                target=self._serve, args=(conn, address), name="forward-conn", daemon=True
            )
            self._threads = [t for t in self._threads if t.is_alive()]
            self._threads.append(thread)
            thread.start()

    def _serve(self, raw: socket.socket, address: Any) -> None:
        stats = self._server.stats
        raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        raw.settimeout(_TICK)
        conn: socket.socket = raw
        with self._lock:
            self._connections.add(raw)
        stats.connection(+1)
        try:
            if self._context is not None:
                raw.settimeout(10.0)
                conn = self._context.wrap_socket(raw, server_side=True)
                with self._lock:
                    self._connections.discard(raw)
                    self._connections.add(conn)
                conn.settimeout(_TICK)
            self._read_messages(conn)
        except (ssl.SSLError, OSError) as exc:
            if isinstance(exc, ssl.SSLError) and conn is raw:
                stats.count("handshake_failures")
                log.warning(
                    "in_forward TLS handshake with %s:%s failed: %s",
                    address[0],
                    address[1],
                    exc.reason or exc,
                )
        finally:
            with self._lock:
                self._connections.discard(conn)
            with contextlib.suppress(OSError):
                conn.close()
            stats.connection(-1)

    def _read_messages(self, conn: socket.socket) -> None:
        unpacker = _unpacker()
        first = True
        while not self._stop.is_set():
            try:
                data = conn.recv(1 << 20)
            except TimeoutError:
                continue
            if not data:
                return
            if first and data[:1] in (b"{", b"["):
                log.warning("in_forward: JSON messages are not served by the sandbox: closing")
                return
            first = False
            size = len(data)
            unpacker.feed(data)
            for message in unpacker:
                answer = self._on_message(message, size)
                size = 0
                if answer is not None:
                    conn.sendall(msgpack.packb(answer, use_bin_type=True))
                    self.acks += 1

    # --- one message ----------------------------------------------------------------

    def _on_message(self, message: Any, size: int) -> dict[str, Any] | None:
        server = self._server
        faults = server.faults
        if not isinstance(message, list) or len(message) < 2 or not isinstance(message[0], str):
            log.warning("incoming chunk is broken: msg=%r", message)
            return None
        tag, entries = message[0], message[1]
        limit = self.config.chunk_size_limit
        if limit is not None and size > limit:
            log.warning(
                "Input chunk size is larger than 'chunk_size_limit', dropped: tag=%r size=%d",
                tag,
                size,
            )
            return None
        option: Any = None
        if isinstance(entries, (bytes, str)):
            option = message[2] if len(message) > 2 else None
            events = self._packed(entries, option)
        elif isinstance(entries, list):
            option = message[2] if len(message) > 2 else None
            events = self._entries(entries)
        else:
            option = message[3] if len(message) > 3 else None
            events = self._entries([[entries, message[2] if len(message) > 2 else None]])
        if faults.forward_drop_rate > 0 and server.rng.random() < faults.forward_drop_rate:
            self.dropped += 1
            log.info("fault: dropped a message of %d events for %s unacked", len(events), tag)
            return None
        stats = server.stats
        stats.begin()
        try:
            matched = server.emit(tag, events)
        except EmitError as exc:
            # No ack: the client sends the chunk again.
            stats.end(tag, 0, 0, size, False)
            log.error("failed to emit data error=%r", str(exc))
            return None
        stats.end(tag, 200, len(events), size, matched)
        if faults.latency_ms > 0 and self._stop.wait(faults.latency_ms / 1000.0):
            return None
        if faults.forward_no_ack:
            return None
        if isinstance(option, dict) and option.get("chunk"):
            return {"ack": option["chunk"]}
        return None

    def _packed(self, entries: bytes | str, option: Any) -> list[Event]:
        data = entries.encode("utf-8", "surrogateescape") if isinstance(entries, str) else entries
        if isinstance(option, dict) and option.get("compressed") == "gzip":
            data = gzip.decompress(data)
        unpacker = _unpacker()
        unpacker.feed(data)
        return self._entries(list(unpacker))

    def _entries(self, entries: list[Any]) -> list[Event]:
        events: list[Event] = []
        for entry in entries:
            if not isinstance(entry, list) or len(entry) != 2:
                log.warning("in_forward: skipped an entry that is not [time, record]")
                continue
            ns = _time_ns(entry[0])
            if self.config.skip_invalid_event and (ns is None or not isinstance(entry[1], dict)):
                log.warning("skip invalid event: time=%r", entry[0])
                continue
            events.append((ns if ns is not None else 0, entry[1]))
        return events
