"""The sandbox Fluentd: in_http over HTTPS with mutual TLS, routing to outputs.

One thread accepts; each connection gets a thread that does the TLS
handshake and then serves HTTP/1.1 keep-alive requests with a small,
allocation-light parser (http.server's header parsing costs more than the
JSON). Outputs buffer in memory and a ticker thread flushes them, re-reads
the fault control file and writes the stats file.
"""

from __future__ import annotations

import contextlib
import errno
import gzip
import logging
import os
import random
import socket
import ssl
import struct
import threading
import time
import urllib.parse
import zlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, fields, replace
from typing import IO, Any, cast

import orjson

from teleport_event_handler import pki

from .conf import ConfigError, FluentConfig, TagRouter, TlsConfig
from .forward import ForwardListener
from .records import BadRequest, EmitError, Event, Output, RecordParser, make_output

__all__ = ["Faults", "FluentdServer", "Stats", "build_server_context"]

log = logging.getLogger("fluentd")

DEFAULT_FLUSH_INTERVAL = 0.2
_TICK = 0.05
_STATS_EVERY = 1.0
_MAX_LINE = 65536
_MAX_HEADERS = 100
_REASONS = {
    200: "OK",
    201: "Created",
    202: "Accepted",
    204: "No Content",
    400: "Bad Request",
    403: "Forbidden",
    404: "Not Found",
    408: "Request Timeout",
    411: "Length Required",
    413: "Request Entity Too Large",
    414: "URI Too Long",
    429: "Too Many Requests",
    431: "Request Header Fields Too Large",
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Gateway Timeout",
}


@dataclass(frozen=True)
class Faults:
    """Misbehaviour on demand; set at start and changed while running.

    ``refuse``: close every connection at once (new ones and keep-alive ones).
    ``status``: answer this status (e.g. 503) to a ``status_rate`` fraction of
    requests without storing them. ``latency_ms``: wait before answering.
    ``reply_status``: answer success with this 2xx instead of 200.
    ``reject_array``: answer 400 to JSON array bodies.
    ``reject_containing``: answer 400 to bodies that contain this text, as a
    receiver that refuses some events (a parser or filter that rejects them).
    ``forward_no_ack``: in_forward stores messages but never acks them.
    ``forward_drop_rate``: in_forward drops this fraction of messages, unstored
    and unacked. (``refuse`` and ``latency_ms`` apply to in_forward too.)
    """

    refuse: bool = False
    status: int | None = None
    status_rate: float = 1.0
    latency_ms: float = 0.0
    reply_status: int | None = None
    reject_array: bool = False
    reject_containing: str = ""
    forward_no_ack: bool = False
    forward_drop_rate: float = 0.0

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], source: str) -> Faults:
        known = {f.name for f in fields(cls)}
        values: dict[str, Any] = {}
        for key, raw in data.items():
            if key not in known:
                raise ValueError(f"{source}: unknown fault {key!r}: use one of {sorted(known)}")
            values[key] = _fault_value(key, raw, source)
        faults = cls(**values)
        if faults.reply_status is not None and not 200 <= faults.reply_status <= 299:
            raise ValueError(f"{source}: reply_status {faults.reply_status}: give a 2xx status")
        if faults.status is not None and not 100 <= faults.status <= 599:
            raise ValueError(f"{source}: status {faults.status}: give an HTTP status 100-599")
        if not 0.0 <= faults.status_rate <= 1.0:
            raise ValueError(f"{source}: status_rate {faults.status_rate}: give 0.0 to 1.0")
        if not 0.0 <= faults.forward_drop_rate <= 1.0:
            raise ValueError(
                f"{source}: forward_drop_rate {faults.forward_drop_rate}: give 0.0 to 1.0"
            )
        return faults

    @classmethod
    def from_pairs(cls, pairs: Iterable[str], source: str = "--fault") -> Faults:
        """``["status=503", "status_rate=0.5", "refuse"]``; a bare name means true."""
        data: dict[str, Any] = {}
        for pair in pairs:
            key, sep, value = pair.partition("=")
            data[key.strip()] = value.strip() if sep else True
        return cls.from_mapping(data, source)

    def as_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


def _fault_value(key: str, raw: Any, source: str) -> Any:
    try:
        if key in ("refuse", "reject_array", "forward_no_ack"):
            if isinstance(raw, bool):
                return raw
            text = str(raw).strip().lower()
            if text in ("1", "true", "yes", "on"):
                return True
            if text in ("0", "false", "no", "off", ""):
                return False
            raise ValueError(f"{raw!r} is not true/false")
        if key in ("status", "reply_status"):
            return None if raw is None or raw == "" else int(raw)
        if key == "reject_containing":
            return "" if raw is None or raw is True else str(raw)
        return float(raw)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{source}: fault {key}={raw!r}: {exc}") from None


class Stats:
    """Counters of what the server saw; ``snapshot()`` is the stats file's content."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.requests = 0
        self.records = 0
        self.bytes = 0
        self.statuses: dict[int, int] = {}
        self.tags: dict[str, list[int]] = {}
        self.unmatched_records = 0
        self.connections_accepted = 0
        self.connections_refused = 0
        self.handshake_failures = 0
        self.open_connections = 0
        self.max_open_connections = 0
        self.in_flight = 0
        self.max_in_flight = 0
        self.version = 0

    def connection(self, delta: int) -> None:
        with self._lock:
            self.open_connections += delta
            if delta > 0:
                self.connections_accepted += 1
                self.max_open_connections = max(self.max_open_connections, self.open_connections)
            self.version += 1

    def count(self, name: str) -> None:
        with self._lock:
            setattr(self, name, getattr(self, name) + 1)
            self.version += 1

    def begin(self) -> None:
        with self._lock:
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)

    def end(self, tag: str | None, status: int, records: int, size: int, matched: bool) -> None:
        with self._lock:
            self.in_flight -= 1
            if not status:  # never answered
                return
            self.requests += 1
            self.bytes += size
            self.statuses[status] = self.statuses.get(status, 0) + 1
            if tag is not None:
                per_tag = self.tags.setdefault(tag, [0, 0])
                per_tag[0] += 1
                per_tag[1] += records
                if matched:
                    self.records += records
                else:
                    self.unmatched_records += records
            self.version += 1

    def records_for(self, tag: str) -> int:
        with self._lock:
            return self.tags.get(tag, [0, 0])[1]

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return {
                "requests": self.requests,
                "records": self.records,
                "unmatched_records": self.unmatched_records,
                "bytes": self.bytes,
                "statuses": {str(k): v for k, v in sorted(self.statuses.items())},
                "tags": {t: {"requests": c[0], "records": c[1]} for t, c in self.tags.items()},
                "connections": {
                    "accepted": self.connections_accepted,
                    "refused": self.connections_refused,
                    "handshake_failures": self.handshake_failures,
                    "open": self.open_connections,
                    "max_open": self.max_open_connections,
                },
                "in_flight": self.in_flight,
                "max_in_flight": self.max_in_flight,
            }


_TLS_VERSIONS = {
    "TLSv1_1": ssl.TLSVersion.TLSv1_1,
    "TLS1_1": ssl.TLSVersion.TLSv1_1,
    "TLSv1_2": ssl.TLSVersion.TLSv1_2,
    "TLS1_2": ssl.TLSVersion.TLSv1_2,
    "TLSv1_3": ssl.TLSVersion.TLSv1_3,
    "TLS1_3": ssl.TLSVersion.TLSv1_3,
}
# Fluentd's cipher list (lib/fluent/tls.rb CIPHERS_DEFAULT).
_CIPHERS_DEFAULT = "ALL:!aNULL:!eNULL:!SSLv2"


def build_server_context(tls: TlsConfig, where: str) -> ssl.SSLContext:
    """The server's TLS context; key/cert/CA problems become a ConfigError naming the file."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    # As Fluentd (lib/fluent/tls.rb #set_version_to_context): min_version and
    # max_version together, else exactly ``version``, TLS 1.2 by default. With
    # TLS 1.2, OpenSSL refuses a client without a certificate with a
    # handshake_failure alert (TLS 1.3 would say certificate_required).
    if tls.min_version and tls.max_version:
        context.minimum_version = _TLS_VERSIONS[tls.min_version]
        context.maximum_version = _TLS_VERSIONS[tls.max_version]
    else:
        context.minimum_version = _TLS_VERSIONS[tls.version]
        context.maximum_version = _TLS_VERSIONS[tls.version]
    ciphers = tls.ciphers or _CIPHERS_DEFAULT
    try:
        context.set_ciphers(ciphers)
    except ssl.SSLError as exc:
        raise ConfigError(f"{where}: ciphers {ciphers!r} selects nothing ({exc})") from exc
    for key, file in (
        ("cert_path", tls.cert_path),
        ("private_key_path", tls.private_key_path),
        ("ca_path", tls.ca_path),
    ):
        if file and not os.path.isfile(file):
            raise ConfigError(f"{where}: {key} {file}: no such file: fix the path")
    passphrase = (tls.private_key_passphrase or "").encode()
    # OpenSSL through ssl only says "PEM lib"; read the key with pki first
    # to say what is wrong (as Fluentd: "Could not parse PKey: bad decrypt").
    try:
        with open(tls.private_key_path, "rb") as handle:
            data = handle.read()
        # OpenSSL ignores a passphrase for an unencrypted key; so does Fluentd.
        key = pki.load_private_key(
            data,
            passphrase if b"ENCRYPTED" in data else None,
            source=f"private_key_path {tls.private_key_path}",
        )
    except (OSError, pki.PkiError) as exc:
        fix = " (private_key_passphrase in <transport tls>)" if passphrase else ""
        raise ConfigError(f"{where}: Could not parse PKey: {exc}{fix}") from exc
    try:
        with open(tls.cert_path, "rb") as handle:
            cert = pki.load_certificate(handle.read(), source=f"cert_path {tls.cert_path}")
    except (OSError, pki.PkiError) as exc:
        raise ConfigError(f"{where}: {exc}: give the server's PEM certificate") from exc
    if not pki.key_matches_cert(key, cert):
        raise ConfigError(
            f"{where}: private_key_path {tls.private_key_path} is not the key of cert_path "
            f"{tls.cert_path}: give the matching pair"
        )
    try:
        # A callable, so that OpenSSL never prompts on the terminal.
        context.load_cert_chain(tls.cert_path, tls.private_key_path, password=lambda: passphrase)
    except ssl.SSLError as exc:
        raise ConfigError(
            f"{where}: cannot load cert_path/private_key_path ({exc.reason or exc}): "
            "give a PEM certificate and its key"
        ) from exc
    if tls.client_cert_auth:
        context.verify_mode = ssl.CERT_REQUIRED
        try:
            if tls.ca_path:
                context.load_verify_locations(cafile=tls.ca_path)
            else:
                context.load_default_certs(ssl.Purpose.CLIENT_AUTH)
        except ssl.SSLError as exc:
            raise ConfigError(
                f"{where}: ca_path {tls.ca_path}: not a PEM CA certificate ({exc.reason}): "
                "give the CA that signed the clients' certificates"
            ) from exc
    return context


class _Request:
    __slots__ = ("bare", "body", "close", "content_type", "headers", "method", "target")

    def __init__(self) -> None:
        # bare: answer without a Connection header, then close (in_http.rb
        # Handler#send_response_and_close with an empty header).
        self.bare = False
        self.method = ""
        self.target = ""
        self.headers: dict[str, str] = {}
        self.content_type: str | None = None
        self.body = b""
        self.close = False


class _Abort(Exception):
    """Answer ``status`` (if any) and close the connection."""

    def __init__(self, status: int | None, message: str = "") -> None:
        super().__init__(message)
        self.status = status


class FluentdServer:
    """A running in_http source with its outputs.

    ``FluentdServer(config).start()`` binds at once (``port`` overrides the
    config; 0 picks a free port, see ``.port``) and serves on background
    threads; ``stop()`` (or leaving the ``with`` block) stops accepting,
    closes connections, flushes outputs and writes the stats file.
    """

    def __init__(
        self,
        config: FluentConfig,
        *,
        port: int | None = None,
        bind: str | None = None,
        faults: Faults | None = None,
        control_file: str | None = None,
        stats_file: str | None = None,
        flush_interval: float = DEFAULT_FLUSH_INTERVAL,
        stdout: IO[bytes] | None = None,
        forward_port: int | None = None,
        arrival_log: str | None = None,
    ) -> None:
        self.config = config
        # Benchmarks: one "<uid> <arrival unix ns> <event time>" line per stored event.
        self._arrivals: IO[bytes] | None = open(arrival_log, "ab") if arrival_log else None  # noqa: SIM115
        self._arrivals_lock = threading.Lock()
        source = config.source
        self._where = f"{config.path}:{source.line}"
        self._context = (
            build_server_context(source.tls, f"{config.path}:{source.tls.line}")
            if source.tls
            else None
        )
        self._parser = RecordParser(source, self._where)
        self._router = TagRouter(config.matches)
        self._outputs: list[Output] = [make_output(m, stdout) for m in config.matches]
        self._flush_interval = flush_interval
        self._start_faults = faults or Faults()
        self._faults = self._start_faults
        self._control_file = control_file
        self._control_seen: tuple[int, int, int] | None = None
        self._stats_file = stats_file
        self.stats = Stats()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        self._connection_threads: set[threading.Thread] = set()
        self._unmatched_logged: set[str] = set()
        self._rng = random.Random()
        self._stopped = False
        self._stop_lock = threading.Lock()
        self.body_size_limit = source.body_size_limit
        self.keepalive_timeout = source.keepalive_timeout
        self._success = 204 if source.use_204_response else 200
        host = bind or source.bind
        chosen = source.port if port is None else port
        try:
            infos = socket.getaddrinfo(host, chosen, type=socket.SOCK_STREAM)
            family, _, _, _, address = infos[0]
            self._listener = socket.socket(family, socket.SOCK_STREAM)
            self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            self._listener.bind(address)
            self._listener.listen(128)
        except OSError as exc:
            raise ConfigError(
                f"{self._where}: cannot listen on {host}:{chosen} ({exc.strerror or exc}): "
                "free the port or choose another with 'port' or --port"
            ) from exc
        self._listener.settimeout(_TICK * 4)
        self.host = host
        self.port: int = self._listener.getsockname()[1]
        self.forward: ForwardListener | None = None
        if config.forward is not None:
            forward_tls = config.forward.tls
            where = f"{config.path}:{config.forward.line}"
            self.forward = ForwardListener(
                self,
                config.forward,
                build_server_context(forward_tls, where) if forward_tls else None,
                port=forward_port,
                bind=bind,
                where=where,
            )
        if control_file:
            self._read_control_file()

    # --- public API -------------------------------------------------------------

    @property
    def scheme(self) -> str:
        return "https" if self._context else "http"

    def url(self, tag: str = "", host: str | None = None) -> str:
        """``https://<host>:<port>/<tag>``; the host defaults to the bound address."""
        name = host or self.host
        if ":" in name:
            name = f"[{name}]"
        return f"{self.scheme}://{name}:{self.port}/{tag}"

    @property
    def faults(self) -> Faults:
        return self._faults

    def set_faults(self, faults: Faults | None = None, **changes: Any) -> Faults:
        """Replace the faults (``set_faults(Faults(...))``) or change some (``refuse=True``)."""
        updated = replace(faults or self._faults, **changes)
        Faults.from_mapping(updated.as_dict(), "set_faults")  # validate
        self._faults = updated
        log.info("faults now %s", _describe(updated))
        if updated.refuse:
            self._drop_connections()
        return updated

    def start(self) -> FluentdServer:
        for target, name in ((self._accept_loop, "accept"), (self._tick_loop, "ticker")):
            thread = threading.Thread(target=target, name=f"fluentd-{name}", daemon=True)
            thread.start()
            self._threads.append(thread)
        log.info("listening on %s (%s)", self.url(), "TLS" if self._context else "plain HTTP")
        if self.forward is not None:
            self.forward.start()
        return self

    def wait(self, timeout: float | None = None) -> bool:
        """Block until ``stop()``; True when stopped."""
        return self._stop.wait(timeout)

    def flush(self) -> None:
        for output in self._outputs:
            output.flush()

    def stop(self) -> None:
        with self._stop_lock:
            if self._stopped:
                return
            self._stopped = True
        self._stop.set()
        with contextlib.suppress(OSError):
            self._listener.close()
        for thread in self._threads:
            if thread is not threading.current_thread():
                thread.join(timeout=5)
        self._drop_connections()
        if self.forward is not None:
            self.forward.stop()
        with self._connections_lock:
            connection_threads = list(self._connection_threads)
        for thread in connection_threads:
            thread.join(timeout=2)
        for output in self._outputs:
            output.close()
        if self._arrivals is not None:
            with self._arrivals_lock:
                self._arrivals.close()
        self._write_stats()
        log.info("stats %s", orjson.dumps(self.stats.snapshot()).decode())

    def __enter__(self) -> FluentdServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- background threads -----------------------------------------------------

    def _accept_loop(self) -> None:
        while not self._stop.is_set():
            try:
                conn, address = self._listener.accept()
            except TimeoutError:
                continue
            except OSError as exc:
                if self._stop.is_set():
                    return
                if exc.errno in (errno.EMFILE, errno.ENFILE):
                    time.sleep(0.05)
                continue
            if self._faults.refuse:
                self.stats.count("connections_refused")
                _reset(conn)
                continue
            thread = threading.Thread(
                target=self._serve_connection,
                args=(conn, address),
                name="fluentd-conn",
                daemon=True,
            )
            with self._connections_lock:
                self._connection_threads.add(thread)
            thread.start()

    def _tick_loop(self) -> None:
        next_flush = time.monotonic() + self._flush_interval
        next_stats = time.monotonic() + _STATS_EVERY
        seen_version = -1
        while not self._stop.wait(_TICK):
            now = time.monotonic()
            if self._control_file:
                self._read_control_file()
            if now >= next_flush:
                try:
                    self.flush()
                except OSError as exc:
                    log.error("cannot write output: %s", exc)
                next_flush = now + self._flush_interval
            if self._stats_file and now >= next_stats and self.stats.version != seen_version:
                seen_version = self.stats.version
                self._write_stats()
                next_stats = now + _STATS_EVERY

    def _read_control_file(self) -> None:
        assert self._control_file is not None
        try:
            info = os.stat(self._control_file)
        except FileNotFoundError:
            if self._control_seen is not None:
                self._control_seen = None
                self.set_faults(self._start_faults)
            return
        seen = (info.st_mtime_ns, info.st_size, info.st_ino)
        if seen == self._control_seen:
            return
        self._control_seen = seen
        try:
            with open(self._control_file, "rb") as handle:
                data = orjson.loads(handle.read() or b"{}")
            if not isinstance(data, dict):
                raise ValueError(f"{self._control_file}: give a JSON object of faults")
            faults = Faults.from_mapping(data, self._control_file)
        except (OSError, ValueError) as exc:  # orjson.JSONDecodeError is a ValueError
            log.warning("control file ignored: %s", exc)
            return
        self.set_faults(faults)

    def _write_stats(self) -> None:
        if not self._stats_file:
            return
        data = orjson.dumps(self.stats.snapshot(), option=orjson.OPT_INDENT_2)
        try:
            pki.write_file_atomic(self._stats_file, data + b"\n", mode=0o644)
        except OSError as exc:
            log.error("cannot write stats file %s: %s", self._stats_file, exc)

    def _drop_connections(self) -> None:
        with self._connections_lock:
            connections = list(self._connections)
        for conn in connections:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        if self.forward is not None:
            self.forward.drop_connections()

    @property
    def rng(self) -> random.Random:
        return self._rng

    def emit(self, tag: str, events: list[Event]) -> bool:
        """Route ``events`` to the output matching ``tag`` (in_forward's path); True if matched.

        An output that cannot store them raises EmitError.
        """
        index = self._router.route(tag)
        if index is None:
            if events and tag not in self._unmatched_logged:
                self._unmatched_logged.add(tag)
                log.warning('no patterns matched tag="%s"', tag)
            return False
        if events:
            self._outputs[index].emit(tag, events)
            self._note_arrivals(events)
        return True

    def _note_arrivals(self, events: list[Event]) -> None:
        if self._arrivals is None:
            return
        now = time.time_ns()
        lines = b"".join(
            f"{record.get('uid')} {now} {record.get('time')}\n".encode() for _, record in events
        )
        with self._arrivals_lock:
            self._arrivals.write(lines)
            self._arrivals.flush()

    # --- one connection -----------------------------------------------------------

    def _serve_connection(self, raw: socket.socket, address: Any) -> None:
        peer = f"{address[0]}:{address[1]}"
        raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        raw.settimeout(self.keepalive_timeout)
        with self._connections_lock:
            self._connections.add(raw)
        self.stats.connection(+1)
        conn: socket.socket = raw
        try:
            if self._context is not None:
                # Ragged EOFs raise, so a close without close_notify is seen.
                conn = self._context.wrap_socket(
                    raw,
                    server_side=True,
                    do_handshake_on_connect=False,
                    suppress_ragged_eofs=False,
                )
                with self._connections_lock:  # wrapping detached raw's descriptor
                    self._connections.discard(raw)
                    self._connections.add(conn)
                try:
                    conn.do_handshake()
                except (ssl.SSLError, OSError) as exc:
                    self.stats.count("handshake_failures")
                    log.warning("TLS handshake with %s failed: %s", peer, _ssl_reason(exc))
                    _close_after_alert(conn)
                    return
            self._serve_requests(conn, address[0])
        finally:
            with self._connections_lock:
                self._connections.discard(conn)
                self._connection_threads.discard(threading.current_thread())
            with contextlib.suppress(OSError):
                conn.close()
            self.stats.connection(-1)

    def _serve_requests(self, conn: socket.socket, remote: str) -> None:
        reader = cast(IO[bytes], conn.makefile("rb", buffering=65536))
        try:
            while not self._stop.is_set():
                try:
                    request = self._read_head(reader)
                except ssl.SSLEOFError:
                    # The client closed without close_notify: Fluentd's words
                    # (lib/fluent/plugin_helper/server.rb TLSCallbackSocket#on_readable).
                    log.warning(
                        "close socket due to unexpected ssl error: "
                        "SSL_read: unexpected eof while reading"
                    )
                    return
                except (OSError, ValueError):
                    return
                if request is None:
                    if isinstance(conn, ssl.SSLSocket):
                        # The client's close_notify came: answer with ours.
                        with contextlib.suppress(OSError, ValueError):
                            conn.settimeout(0.5)
                            conn.unwrap()
                    return
                if self._faults.refuse:
                    _reset(conn)
                    return
                self.stats.begin()
                status, tag, records, matched, message = 0, None, 0, False, ""
                try:
                    self._read_body(reader, conn, request)
                    status, tag, records, matched, message = self._handle(request, remote)
                except _Abort as abort:
                    status, message, request.close = abort.status or 0, str(abort), True
                except OSError:
                    request.close = True  # status 0: the connection broke mid-request
                except Exception as exc:  # a sandbox bug must not hang the client
                    log.exception("internal error")
                    status, message, request.close = 500, str(exc), True
                # Counted before answering: a client holding its answer sees it counted.
                self.stats.end(tag, status, records, len(request.body), matched)
                if not status:
                    return
                try:
                    if request.bare:
                        self._respond_bare(conn, status)
                        return
                    self._respond(conn, status, message, request.close)
                except OSError:
                    return
                if request.close:
                    return
        finally:
            with contextlib.suppress(OSError):
                reader.close()

    def _read_head(self, reader: IO[bytes]) -> _Request | None:
        line = reader.readline(_MAX_LINE + 1)
        while line in (b"\r\n", b"\n"):  # tolerated between requests
            line = reader.readline(_MAX_LINE + 1)
        if not line:
            return None
        request = _Request()
        parts = line.split()
        if len(parts) != 3 or not parts[2].startswith(b"HTTP/"):
            raise ValueError("malformed request line")
        request.method = parts[0].decode("latin-1")
        request.target = parts[1].decode("latin-1")
        http10 = parts[2] == b"HTTP/1.0"
        headers = request.headers
        for _ in range(_MAX_HEADERS):
            header = reader.readline(_MAX_LINE + 1)
            if header in (b"\r\n", b"\n", b""):
                break
            name, sep, value = header.partition(b":")
            if not sep:
                raise ValueError("malformed header")
            headers[name.strip().lower().decode("latin-1")] = value.strip().decode("latin-1")
        else:
            raise ValueError("too many headers")
        connection = headers.get("connection", "").lower()
        request.close = connection == "close" or (http10 and connection != "keep-alive")
        request.content_type = headers.get("content-type")
        return request

    def _read_body(self, reader: IO[bytes], conn: socket.socket, request: _Request) -> None:
        headers = request.headers
        if headers.get("expect", "").lower() == "100-continue":
            conn.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")
        if "chunked" in headers.get("transfer-encoding", "").lower():
            chunks: list[bytes] = []
            size = 0
            while True:
                try:
                    length = int(reader.readline(_MAX_LINE).split(b";")[0].strip() or b"0", 16)
                except ValueError:
                    raise _Abort(400, "bad chunk size") from None
                if length == 0:
                    while reader.readline(_MAX_LINE) not in (b"\r\n", b"\n", b""):
                        pass
                    break
                size += length
                if size > self.body_size_limit:
                    raise _Abort(413, "body size limit exceeded")
                chunks.append(_read_exact(reader, length))
                reader.readline(_MAX_LINE)
            request.body = b"".join(chunks)
            return
        raw_length = headers.get("content-length")
        if raw_length is None:
            return
        try:
            length = int(raw_length)
        except ValueError:
            raise _Abort(400, f"bad Content-Length {raw_length!r}") from None
        if length > self.body_size_limit:
            # Read the body before answering: closing with unread data sends a
            # TCP RST, and the client would see a reset instead of the 413.
            _discard(reader, length)
            raise _Abort(413, "body size limit exceeded")
        request.body = _read_exact(reader, length)

    def _handle(self, request: _Request, remote: str) -> tuple[int, str | None, int, bool, str]:
        """(status, tag, records, matched, message) for one request."""
        faults = self._faults
        path, _, query = request.target.partition("?")
        tag = ".".join(urllib.parse.unquote(path).strip("/").split("/"))
        if faults.latency_ms > 0 and self._stop.wait(faults.latency_ms / 1000.0):
            raise _Abort(None)
        if faults.status is not None and (
            faults.status_rate >= 1.0 or self._rng.random() < faults.status_rate
        ):
            return faults.status, tag, 0, False, "fault injected"
        # Fluentd 1.16 lib/fluent/plugin/in_http.rb Handler#on_message_complete:
        # GET is a health check (#handle_get_request: 200, empty, then close);
        # OPTIONS is 403 unless CORS is configured (#handle_options_request);
        # every other method is read as a POST.
        if request.method in ("GET", "OPTIONS"):
            request.bare = True
            return (200 if request.method == "GET" else 403), None, 0, False, ""
        body = request.body
        encoding = request.headers.get("content-encoding", "")
        if encoding in ("gzip", "deflate"):
            try:
                body = gzip.decompress(body) if encoding == "gzip" else zlib.decompress(body)
            except (OSError, EOFError, zlib.error) as exc:
                log.warning("fails to decode payload error=%r", str(exc))
                request.bare = True
                return 400, None, 0, False, ""
        if faults.reject_array and body.lstrip()[:1] == b"[":
            return 400, tag, 0, False, "this receiver does not take JSON arrays"
        if faults.reject_containing and faults.reject_containing.encode() in body:
            return 400, tag, 0, False, "this receiver refuses these events"
        try:
            events = self._parser.parse(body, request.content_type, query, request.headers, remote)
        except BadRequest as exc:
            log.debug("400 for tag %s: %s", tag, exc)
            return 400, tag, 0, False, str(exc)
        index = self._router.route(tag)
        if index is None:
            if events and tag not in self._unmatched_logged:
                self._unmatched_logged.add(tag)
                log.warning('no patterns matched tag="%s"', tag)
        elif events:
            try:
                self._outputs[index].emit(tag, events)
                self._note_arrivals(events)
            except EmitError as exc:
                # in_http.rb #on_request: "failed to emit data", 500.
                log.error("failed to emit data error=%r", str(exc))
                return 500, tag, 0, True, str(exc)
        status = faults.reply_status or self._success
        return status, tag, len(events), index is not None, ""

    def _respond_bare(self, conn: socket.socket, status: int) -> None:
        reason = _REASONS.get(status, "Status")
        conn.sendall(
            f"HTTP/1.1 {status} {reason}\r\nContent-Length: 0\r\n"
            "Content-Type: text/plain\r\n\r\n".encode()
        )

    def _respond(self, conn: socket.socket, status: int, message: str, close: bool) -> None:
        reason = _REASONS.get(status, "Status")
        body = (
            b""
            if status == 204 or 200 <= status < 300
            else (f"{status} {reason}\n{message}\n".encode())
        )
        head = (
            f"HTTP/1.1 {status} {reason}\r\nContent-Type: text/plain\r\n"
            f"Connection: {'close' if close else 'Keep-Alive'}\r\n"
        )
        if status != 204:
            head += f"Content-Length: {len(body)}\r\n"
        conn.sendall(head.encode() + b"\r\n" + body)


def _read_exact(reader: IO[bytes], length: int) -> bytes:
    data = reader.read(length)
    if len(data) != length:
        raise OSError("connection closed inside the request body")
    return data


def _discard(reader: IO[bytes], length: int) -> None:
    while length > 0:
        data = reader.read(min(length, 1 << 20))
        if not data:
            return
        length -= len(data)


def _close_after_alert(conn: socket.socket) -> None:
    """Let the client read our TLS alert before the connection goes.

    With TLS 1.3 the client sends its request right after its certificate;
    closing with that request unread would send a TCP RST, and the client
    would see "connection reset" instead of "certificate required".
    """
    try:
        plain = socket.socket(fileno=conn.detach())
    except OSError:
        return
    with plain, contextlib.suppress(OSError):
        plain.shutdown(socket.SHUT_WR)
        plain.settimeout(0.5)
        deadline = time.monotonic() + 1.0
        while time.monotonic() < deadline and plain.recv(65536):
            pass


def _reset(conn: socket.socket) -> None:
    """Close with a TCP RST, so the client sees a refused/reset connection at once."""
    with contextlib.suppress(OSError):
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    with contextlib.suppress(OSError):
        conn.close()


def _ssl_reason(exc: BaseException) -> str:
    if isinstance(exc, ssl.SSLError) and exc.reason:
        return str(exc.reason)
    return str(exc) or type(exc).__name__


def _describe(faults: Faults) -> str:
    changed = {k: v for k, v in faults.as_dict().items() if v != getattr(Faults(), k)}
    return ", ".join(f"{k}={v}" for k, v in changed.items()) or "none"
