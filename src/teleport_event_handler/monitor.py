"""What the running export tells operators: metrics, the status snapshot, stalls.

``Monitor`` watches the export without slowing it down. The engine shows it
each exported event (an observer, as auto-lock is); a ticker thread matches
those against the pipeline's committed count, so an event counts as forwarded
only once Fluentd acknowledged it and its cursor was stored. A prober thread
asks Teleport for the newest wanted event every few seconds, which gives the
lag behind Teleport and the stall rule:

    stuck  =  nothing was committed for ``stuck-after``
              and Teleport holds a wanted event newer than the newest exported
              one, older than ``stuck-after`` plus the engine's poll interval.

Each tick the snapshot that ``teleport-event-handler status`` reads is written
to the state database (``kv`` key ``monitor.snapshot``), and systemd hears
``STATUS=`` and ``WATCHDOG=1`` (see notify.py). Metrics are served only when
``metrics-addr`` is set, from a registry of our own.
"""

from __future__ import annotations

import collections
import datetime
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import orjson
from prometheus_client import CollectorRegistry, Histogram, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from teleport_event_handler import __version__
from teleport_event_handler.backoff import Shutdown
from teleport_event_handler.events import TypeFilter, event_type_of
from teleport_event_handler.notify import Notifier
from teleport_event_handler.protos.teleport.auditlog.v1 import auditlog_pb2
from teleport_event_handler.state import (
    SESSION_DONE,
    SESSION_FAILED,
    SESSION_MISSING,
    SESSION_PENDING,
    State,
    StateError,
)

__all__ = ["SNAPSHOT_KEY", "Monitor", "MonitorError", "TimedSink", "parse_listen_addr"]

log = logging.getLogger("teleport_event_handler.monitor")

SNAPSHOT_KEY = "monitor.snapshot"
TICK = 1.0
SNAPSHOT_INTERVAL = 5.0
# How many of the newest events one probe reads to find a wanted one.
PROBE_LIMIT = 50
# A stall is logged again this often while it lasts.
STUCK_REPEAT = 600.0
SEND_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


class MonitorError(Exception):
    """The metrics endpoint cannot be served (the address is taken or invalid)."""


class _Committed(Protocol):
    events_committed: int


class _Sink(Protocol):
    def deliver(self, url: str, events: Sequence[bytes], *, as_array: bool) -> None: ...

    def check(self, url: str) -> str | None: ...

    def close(self) -> None: ...


class _Prober(Protocol):
    def newest_events(
        self,
        start: datetime.datetime,
        end: datetime.datetime,
        event_types: tuple[str, ...],
        limit: int,
    ) -> auditlog_pb2.EventsUnstructured: ...

    def oldest_events(
        self,
        start: datetime.datetime,
        end: datetime.datetime,
        event_types: tuple[str, ...],
        limit: int,
    ) -> auditlog_pb2.EventsUnstructured: ...


def parse_listen_addr(addr: str) -> tuple[str, int]:
    """``HOST:PORT`` (validated by config) as the pair an HTTP server binds."""
    host, _, port = addr.rpartition(":")
    return host.strip("[]"), int(port)


def _iso(epoch: float | None) -> str | None:
    if epoch is None:
        return None
    return datetime.datetime.fromtimestamp(epoch, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _epoch(text: object) -> float | None:
    if not isinstance(text, str):
        return None
    try:
        return datetime.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def _event_time(event: auditlog_pb2.EventUnstructured) -> float | None:
    if not event.HasField("time"):
        return None
    return int(event.time.seconds) + int(event.time.nanos) / 1e9


class TimedSink:
    """A sink that times every delivery (one batch, retries included)."""

    def __init__(self, sink: _Sink, histogram: Histogram) -> None:
        self._sink = sink
        self._histogram = histogram

    def deliver(self, url: str, events: Sequence[bytes], *, as_array: bool) -> None:
        started = time.monotonic()
        self._sink.deliver(url, events, as_array=as_array)
        self._histogram.observe(time.monotonic() - started)

    def check(self, url: str) -> str | None:
        return self._sink.check(url)

    def close(self) -> None:
        self._sink.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sink, name)


@dataclass
class _Wiring:
    """What the monitor reads; set once the export's parts exist."""

    pipeline: _Committed | None = None
    sink: object | None = None
    sessions: object | None = None
    prober: _Prober | None = None
    identity_expires: Callable[[], float | None] | None = None
    poll_interval: float = 0.0
    engine: str = ""


class Monitor:
    """Counts, lag, stall detection, the status snapshot and the metrics endpoint."""

    def __init__(
        self,
        *,
        state: State,
        type_filter: TypeFilter,
        stuck_after: float,
        dead_letter_path: str,
        notifier: Notifier | None = None,
    ) -> None:
        self._state = state
        self._filter = type_filter
        self._server_types = tuple(sorted(type_filter.types))
        self.stuck_after = stuck_after
        self._dead_letter_path = dead_letter_path
        self._notifier = notifier or Notifier({})
        self.wiring = _Wiring()
        self.registry = CollectorRegistry()
        self.send_seconds = Histogram(
            "teleport_event_handler_send_duration_seconds",
            "Time to deliver one batch to Fluentd, retries included",
            buckets=SEND_BUCKETS,
            registry=self.registry,
        )
        self.registry.register(_Collector(self))
        # Events shown by the engine, oldest first: (time, type), until committed.
        self._read: collections.deque[tuple[float | None, str]] = collections.deque()
        self._matched = 0  # events of _read matched against the committed count
        self._lock = threading.Lock()
        self.forwarded: collections.Counter[str] = collections.Counter()
        self.dead_lettered: collections.Counter[str] = collections.Counter()
        self._dead_debt: collections.Counter[str] = collections.Counter()
        self.dead_letters = 0
        previous = self._load_snapshot()
        self.newest_exported: float | None = _epoch(previous.get("newest_exported"))
        self.newest_in_teleport: float | None = None
        self.oldest_unexported: float | None = None
        self.last_probe: float | None = None
        self.started = time.time()
        self.last_progress = time.monotonic()
        self.stuck_since: float | None = None
        self._stuck_logged = 0.0
        self._committed_seen = 0
        self._server: Any = None

    # -- what the export reports --------------------------------------------------

    def observe(self, event: auditlog_pb2.EventUnstructured, event_type: str) -> None:
        """Engine observer: an exported event was handed to the pipeline."""
        self._read.append((_event_time(event), event_type))

    def on_dead_letter(self, event: bytes) -> None:
        """An event Fluentd refused was kept in the dead-letter file."""
        try:
            value = orjson.loads(event)
            event_type = str(value.get("event", "")) if isinstance(value, dict) else ""
        except orjson.JSONDecodeError:
            event_type = ""
        with self._lock:
            self.dead_letters += 1
            self.dead_lettered[event_type] += 1
            self._dead_debt[event_type] += 1

    # -- derived values -----------------------------------------------------------

    @property
    def events_committed(self) -> int:
        pipeline = self.wiring.pipeline
        return pipeline.events_committed if pipeline is not None else 0

    @property
    def pending(self) -> int:
        """Events read from Teleport and not yet acknowledged and stored."""
        return max(0, self._matched + len(self._read) - self.events_committed)

    def lag(self) -> float | None:
        """Seconds between Teleport's newest wanted event and the newest exported one."""
        newest = self.newest_in_teleport
        if newest is None:
            return None
        return max(0.0, newest - (self.newest_exported or self.started))

    def cursor_age(self) -> float | None:
        if self.newest_exported is None:
            return None
        return max(0.0, time.time() - self.newest_exported)

    @property
    def stuck(self) -> bool:
        return self.stuck_since is not None

    def sessions(self) -> dict[str, int]:
        counts = {
            status: self._state.count_sessions(status)
            for status in (SESSION_PENDING, SESSION_MISSING, SESSION_FAILED, SESSION_DONE)
        }
        exporter = self.wiring.sessions
        counts["in_progress"] = int(getattr(exporter, "in_progress", 0)) if exporter else 0
        return counts

    def identity_expires(self) -> float | None:
        getter = self.wiring.identity_expires
        return getter() if getter is not None else None

    # -- threads ------------------------------------------------------------------

    def serve(self, addr: str) -> None:
        """Serve /metrics at ``addr``; MonitorError when it cannot be bound."""
        host, port = parse_listen_addr(addr)
        try:
            self._server, _thread = start_http_server(port, host, registry=self.registry)
        except OSError as exc:
            raise MonitorError(
                f"cannot serve metrics at {addr}: {exc.strerror or exc}; choose a free "
                "address with metrics-addr (or leave it empty to turn metrics off)"
            ) from exc
        log.info("serving Prometheus metrics at http://%s/metrics", addr)

    def start(self, shutdown: Shutdown) -> None:
        threading.Thread(
            target=self._tick_loop, args=(shutdown,), name="monitor", daemon=True
        ).start()
        threading.Thread(
            target=self._probe_loop, args=(shutdown,), name="probe", daemon=True
        ).start()

    def close(self) -> None:
        self._drain()
        self.write_snapshot(running=False)
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    @property
    def probe_interval(self) -> float:
        return min(15.0, max(1.0, self.stuck_after / 4))

    def _tick_loop(self, shutdown: Shutdown) -> None:
        last_snapshot = 0.0
        tick = min(TICK, self._notifier.watchdog_interval or TICK)
        while not shutdown.wait(tick):
            try:
                self._drain()
                self._check_stuck()
                now = time.monotonic()
                if now - last_snapshot >= SNAPSHOT_INTERVAL or self.stuck_after < SNAPSHOT_INTERVAL:
                    self.write_snapshot(running=True)
                    last_snapshot = now
                self._notifier.status(self.status_line())
                self._notifier.watchdog()
            except Exception:  # a bug here must not stop the export
                log.exception("the monitor failed to update")

    def _probe_loop(self, shutdown: Shutdown) -> None:
        while not shutdown.wait(self.probe_interval):
            prober = self.wiring.prober
            if prober is None:
                continue
            try:
                self.probe(prober)
            except Exception as exc:  # Teleport down: the export says so itself
                log.debug("asking Teleport for its newest event failed: %s", exc)

    def probe(self, prober: _Prober) -> None:
        """Ask Teleport for its oldest and newest wanted events after the newest exported."""
        now = datetime.datetime.now(datetime.UTC)
        since = self.newest_exported or self.started
        start = datetime.datetime.fromtimestamp(since, datetime.UTC)
        newest = self._first_wanted(
            prober.newest_events(start, now, self._server_types, PROBE_LIMIT), since
        )
        oldest = self._first_wanted(
            prober.oldest_events(start, now, self._server_types, PROBE_LIMIT), since
        )
        with self._lock:
            self.newest_in_teleport = max(newest or since, self.newest_in_teleport or since)
            self.oldest_unexported = oldest
        self.last_probe = time.time()

    def _first_wanted(self, page: auditlog_pb2.EventsUnstructured, after: float) -> float | None:
        """The time of the page's first event that is wanted and newer than ``after``."""
        for item in page.items:
            when = _event_time(item)
            if when is not None and when > after and self._filter.wants(event_type_of(item)):
                return when
        return None

    def _drain(self) -> None:
        """Count the events committed since the last tick, by type."""
        committed = self.events_committed
        with self._lock:
            while self._matched < committed and self._read:
                when, event_type = self._read.popleft()
                self._matched += 1
                if self._dead_debt[event_type] > 0:
                    self._dead_debt[event_type] -= 1
                else:
                    self.forwarded[event_type] += 1
                if when is not None and (
                    self.newest_exported is None or when > self.newest_exported
                ):
                    self.newest_exported = when
            if committed != self._committed_seen:
                self._committed_seen = committed
                self.last_progress = time.monotonic()

    def _check_stuck(self) -> None:
        idle_for = time.monotonic() - self.last_progress
        newest = self.newest_in_teleport
        oldest = self.oldest_unexported
        # An event Teleport has held for longer than stuck-after plus one poll.
        threshold = time.time() - self.stuck_after - self.wiring.poll_interval
        waiting = (
            oldest is not None and oldest > (self.newest_exported or 0.0) and oldest <= threshold
        )
        if idle_for >= self.stuck_after and waiting:
            now = time.monotonic()
            if self.stuck_since is None:
                self.stuck_since = time.time()
            if now - self._stuck_logged >= STUCK_REPEAT or self._stuck_logged == 0.0:
                self._stuck_logged = now
                pending = self.pending
                cause = (
                    f"{pending} events read are waiting for Fluentd to acknowledge them"
                    if pending
                    else "the reader exported nothing; check the Teleport connection and "
                    "the handler's log, and restart it if this lasts"
                )
                log.warning(
                    "stuck: nothing exported for %.0fs while Teleport holds newer events "
                    "(its newest at %s, the newest exported at %s): %s",
                    idle_for,
                    _iso(newest),
                    _iso(self.newest_exported),
                    cause,
                )
        elif self.stuck_since is not None and (idle_for < self.stuck_after or not waiting):
            log.info("no longer stuck: events are exported again")
            self.stuck_since = None
            self._stuck_logged = 0.0

    # -- status ---------------------------------------------------------------------

    def status_line(self) -> str:
        lag = self.lag()
        parts = [f"{self.events_committed} events exported"]
        if lag is not None:
            parts.append(f"lag {lag:.0f}s")
        if self.pending:
            parts.append(f"{self.pending} waiting for Fluentd")
        if self.stuck:
            parts.append("STUCK")
        return ", ".join(parts)

    def snapshot(self, running: bool) -> dict[str, Any]:
        sink = self.wiring.sink
        return {
            "pid": os.getpid(),
            "running": running,
            "version": __version__,
            "updated": _iso(time.time()),
            "started": _iso(self.started),
            "engine": self.wiring.engine,
            "events_exported": self.events_committed,
            "events_pending": self.pending,
            "newest_exported": _iso(self.newest_exported),
            "newest_in_teleport": _iso(self.newest_in_teleport),
            "teleport_checked": _iso(self.last_probe),
            "lag_seconds": self.lag(),
            "stuck": self.stuck,
            "stuck_since": _iso(self.stuck_since),
            "identity_expires": _iso(self.identity_expires()),
            "dead_letters": self.dead_letters,
            "dead_letter_file": self._dead_letter_path,
            "fluentd_retries": int(getattr(sink, "retries", 0)) if sink is not None else 0,
        }

    def write_snapshot(self, running: bool) -> None:
        try:
            self._state.put(SNAPSHOT_KEY, orjson.dumps(self.snapshot(running)).decode(), wait=False)
        except (sqlite3.Error, OSError, StateError) as exc:
            log.debug("writing the status snapshot failed: %s", exc)

    def _load_snapshot(self) -> dict[str, Any]:
        try:
            text = self._state.get(SNAPSHOT_KEY)
            value = orjson.loads(text) if text else {}
        except (sqlite3.Error, orjson.JSONDecodeError):
            return {}
        return value if isinstance(value, dict) else {}


class _Collector(Collector):
    """Everything but the send histogram, computed at scrape time."""

    def __init__(self, monitor: Monitor) -> None:
        self._m = monitor

    def collect(self) -> Iterator[Metric]:
        m = self._m
        m._drain()
        prefix = "teleport_event_handler_"
        info = GaugeMetricFamily(
            prefix + "info", "The forwarder's version and engine", labels=["version", "engine"]
        )
        info.add_metric([__version__, m.wiring.engine or "starting"], 1.0)
        yield info
        events = CounterMetricFamily(
            prefix + "events",
            "Audit events exported, by type and outcome (forwarded: acknowledged by Fluentd "
            "and committed; dead_lettered: refused by Fluentd and kept in the dead-letter file)",
            labels=["type", "outcome"],
        )
        with m._lock:
            forwarded = dict(m.forwarded)
            dead = dict(m.dead_lettered)
        for event_type, count in sorted(forwarded.items()):
            events.add_metric([event_type, "forwarded"], count)
        for event_type, count in sorted(dead.items()):
            events.add_metric([event_type, "dead_lettered"], count)
        yield events
        yield CounterMetricFamily(
            prefix + "dead_letters", "Events kept in the dead-letter file", value=m.dead_letters
        )
        sink = m.wiring.sink
        yield CounterMetricFamily(
            prefix + "fluentd_retries",
            "Waits before retrying a delivery to Fluentd",
            value=int(getattr(sink, "retries", 0)) if sink is not None else 0,
        )
        yield GaugeMetricFamily(
            prefix + "events_pending",
            "Events read from Teleport, not yet acknowledged by Fluentd and committed",
            value=m.pending,
        )
        newest = m.newest_exported
        if newest is not None:
            yield GaugeMetricFamily(
                prefix + "last_exported_event_timestamp_seconds",
                "Time of the newest exported audit event",
                value=newest,
            )
        age = m.cursor_age()
        if age is not None:
            yield GaugeMetricFamily(
                prefix + "cursor_age_seconds",
                "Seconds since the time of the newest exported audit event",
                value=age,
            )
        lag = m.lag()
        if lag is not None:
            yield GaugeMetricFamily(
                prefix + "lag_seconds",
                "Seconds between Teleport's newest wanted event and the newest exported one",
                value=lag,
            )
        yield GaugeMetricFamily(
            prefix + "stuck",
            "1 while nothing is exported although Teleport holds newer events",
            value=1.0 if m.stuck else 0.0,
        )
        sessions = GaugeMetricFamily(
            prefix + "sessions", "Session recordings by export status", labels=["status"]
        )
        for status, count in m.sessions().items():
            sessions.add_metric([status], count)
        yield sessions
        expires = m.identity_expires()
        if expires is not None:
            yield GaugeMetricFamily(
                prefix + "identity_expiry_timestamp_seconds",
                "When the Teleport identity in use expires",
                value=expires,
            )
