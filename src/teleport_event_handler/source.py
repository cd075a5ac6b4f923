"""The two export engines, behind one ``run()``.

* ``BulkEngine``: Teleport's bulk export (``GetEventExportChunks`` +
  ``ExportUnstructuredEvents``), per UTC day and per chunk with an opaque
  cursor per chunk; served by Athena-backed clusters and Teleport Cloud.
* ``LegacyEngine``: ``GetUnstructuredEvents`` paging through time windows with
  ``start_key``, for backends that answer the bulk calls with UNIMPLEMENTED
  (DynamoDB, Postgres, Firestore, file).

``probe_bulk`` applies the Go plugin's rule for choosing between them.
Both engines hand every event to the ``Pipeline`` together with the state
update that marks it sent; they never write state themselves.
"""

from __future__ import annotations

import concurrent.futures
import datetime
import functools
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import ClassVar, TypeVar

import grpc

from teleport_event_handler.backoff import Backoff, Shutdown
from teleport_event_handler.events import TypeFilter, event_type_of, struct_to_json
from teleport_event_handler.pipeline import Pipeline
from teleport_event_handler.protos.teleport.auditlog.v1 import auditlog_pb2
from teleport_event_handler.sessions import scheduled_by
from teleport_event_handler.state import ChunkCursor, LegacyCursor, State, Update
from teleport_event_handler.teleport import (
    TeleportClient,
    TeleportError,
    check_not_expired,
    explain,
    is_transient,
    is_unimplemented,
    needs_a_person,
    other_cluster_problem,
)
from teleport_event_handler.workers import ExportWorkers, Record

log = logging.getLogger(__name__)
T = TypeVar("T")

UTC = datetime.UTC


def utcnow() -> datetime.datetime:
    return datetime.datetime.now(UTC)


class Stopped(Exception):
    """Shutdown was requested while an engine waited."""


def call_with_retry(
    what: str,
    call: Callable[[], T],
    client: TeleportClient,
    shutdown: Shutdown,
    progress: Callable[[], object] | None = None,
    *,
    persistent: bool = False,
) -> T:
    """Run one Teleport call, retrying failures until it works.

    Transient failures (the server is down, slow, or dropped the stream) are
    logged and retried with the shared backoff, so an Auth outage pauses the
    export instead of ending it. Other failures raise TeleportError with the
    fix, unless ``persistent``: then everything is retried except what a person
    must fix (permission denied, an identity Teleport refuses), as Teleport's
    own exporter retries a chunk and a day's listing for ever
    (lib/events/export/date_exporter.go, DateExporter.processChunk and
    DateExporter.run). An expired identity always stops with the renewal fix.
    ``progress`` tells a stream that moved on before failing, which starts the
    backoff again from its base.
    """
    backoff = Backoff(base=0.5, cap=30.0)
    mark = progress() if progress else None
    checked_cluster = False
    while True:
        if shutdown.requested:
            raise Stopped
        try:
            return call()
        except grpc.RpcError as exc:
            if shutdown.requested:
                raise Stopped from exc  # the shutdown cancelled the call
            if client.creds.expired():
                try:
                    check_not_expired(client.creds)
                except TeleportError as expired:
                    raise expired from exc
            retry = is_transient(exc) or (persistent and not needs_a_person(exc))
            if not retry:
                raise explain(exc, client.addr, client.creds) from exc
            if not client.via_proxy and not checked_cluster:
                checked_cluster = True  # one TLS probe per call, not per retry
                problem = other_cluster_problem(exc, client.addr, client.creds)
                if problem:
                    raise TeleportError(problem) from exc
            if progress is not None and progress() != mark:
                mark = progress()
                backoff.reset()
            delay = backoff.next_delay()
            log.warning(
                "%s failed (%s); retrying in %.1fs",
                what,
                explain(exc, client.addr, client.creds),
                delay,
            )
            if shutdown.wait(delay):
                raise Stopped from exc
        except ValueError as exc:
            if shutdown.requested:
                raise Stopped from exc  # the shutdown closed the channel before the call
            raise


def probe_bulk(client: TeleportClient, shutdown: Shutdown) -> bool:
    """True when the cluster serves bulk export (the Go plugin probes now+2 days)."""
    day = (utcnow() + datetime.timedelta(days=2)).date()
    try:
        call_with_retry("probing bulk export", lambda: client.export_chunks(day), client, shutdown)
    except TeleportError as exc:
        cause = exc.__cause__
        if isinstance(cause, grpc.RpcError) and is_unimplemented(cause):
            return False
        raise
    return True


def _day(value: datetime.date) -> str:
    return value.isoformat()


# Exported sessions are forgotten this long after the engine left the place
# where their session.upload events lie (State.move_session_horizon).
SESSION_MARGIN = datetime.timedelta(days=1)
_EPOCH = datetime.datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = datetime.timedelta(microseconds=1)


def _ns(value: datetime.datetime) -> int:
    """Nanoseconds since the epoch, exactly (datetimes hold whole microseconds)."""
    return (value - _EPOCH) // _MICROSECOND * 1000


def _event_ns(event: auditlog_pb2.EventUnstructured) -> int | None:
    """The event's time in nanoseconds, or None when Teleport sent none."""
    if not event.HasField("time"):
        return None
    return int(event.time.seconds) * 1_000_000_000 + int(event.time.nanos)


@dataclass
class Engine:
    """What both engines share: where events come from and where they go."""

    client: TeleportClient
    state: State
    pipeline: Pipeline
    shutdown: Shutdown
    start_time: datetime.datetime
    type_filter: TypeFilter
    poll_interval: float
    exit_on_last_event: bool
    # Exported events are also shown to these (auto-lock watches failed logins).
    observers: Sequence[Callable[[auditlog_pb2.EventUnstructured, str], None]] = ()
    # Whether a session.upload schedules its recording (sessions.SessionExporter).
    schedule_sessions: bool = False

    def run(self) -> None:
        """Export until caught up (with exit_on_last_event) or shut down."""
        raise NotImplementedError

    def retrying(
        self,
        what: str,
        call: Callable[[], T],
        progress: Callable[[], object] | None = None,
        *,
        persistent: bool = False,
    ) -> T:
        return call_with_retry(
            what, call, self.client, self.shutdown, progress, persistent=persistent
        )

    def submit(self, event: auditlog_pb2.EventUnstructured, update: Update) -> None:
        """Hand one event to the pipeline, with the session it schedules, if any.

        As in the Go plugin, only exported events (those the type filters
        keep) schedule sessions and count as failed logins.
        """
        event_type = event_type_of(event)
        if not self.type_filter.wants(event_type):
            self.pipeline.submit(None, update)
            return
        self._hand_over(event, event_type, struct_to_json(event.unstructured), update)

    def submit_converted(self, record: Record, update: Update) -> None:
        """Hand over one event a worker process filtered and converted."""
        _, head, body = record
        if body is None:
            self.pipeline.submit(None, update)
            return
        event = auditlog_pb2.EventUnstructured.FromString(head)
        self._hand_over(event, event.type, body, update)

    def _hand_over(
        self, event: auditlog_pb2.EventUnstructured, event_type: str, body: bytes, update: Update
    ) -> None:
        for observe in self.observers:
            observe(event, event_type)
        scheduled = scheduled_by(event, event_type) if self.schedule_sessions else None
        self.pipeline.submit(body, update, (scheduled,) if scheduled else ())


@dataclass
class LegacyEngine(Engine):
    """Windows of ``window_size`` from the start time to now, paged by ``start_key``.

    The stored cursor is (window start, key of the page being read, id of the
    last event sent from it); a restart re-reads that one page and skips
    through the id. A window is left only when its end lies ``settle`` in the
    past and its last page is read, so events that reach the backend late are
    not skipped (Teleport issue #58365).

    Teleport's backends select ``start <= time <= end`` (DynamoDB's
    ``CreatedAt BETWEEN :start AND :end`` on whole seconds, lib/events/dynamoevents
    Log.searchEventsRaw; Postgres, Firestore and the file log likewise), so an
    event on a boundary, or anywhere in the boundary second on DynamoDB, is
    served by both windows. Each window therefore forwards only events whose
    time lies in ``[window start, window end)`` and passes over the rest (their
    cursor still moves), since the neighbouring window forwards them. An event
    without a time is always forwarded.
    """

    window_size: float = 86400.0
    page_size: int = 20

    @property
    def settle(self) -> datetime.timedelta:
        return datetime.timedelta(seconds=max(2 * self.poll_interval, 1.0))

    def run(self) -> None:
        stored = self.state.legacy_cursor()
        cursor = stored or LegacyCursor(self.start_time, "", "")
        window_start, key, last_id = cursor.window_start, cursor.cursor, cursor.last_id
        server_types = tuple(sorted(self.type_filter.types))
        window = datetime.timedelta(seconds=self.window_size)
        while not self.shutdown.requested:
            now = utcnow()
            window_end = window_start + window
            query_end = min(window_end, now)
            page = self.retrying(
                "GetUnstructuredEvents",
                functools.partial(
                    self.client.get_events,
                    window_start,
                    query_end,
                    server_types,
                    self.page_size,
                    key,
                ),
            )
            items = list(page.items)
            if last_id:
                for position, item in enumerate(items):
                    if item.id == last_id:
                        items = items[position + 1 :]
                        break
            lowest, beyond = _ns(window_start), _ns(window_end)
            for item in items:
                last_id = item.id
                update = LegacyCursor(window_start, key, last_id)
                when = _event_ns(item)
                if when is not None and not lowest <= when < beyond:
                    self.pipeline.submit(None, update)  # the neighbouring window's event
                    continue
                self.submit(item, update)
            if page.last_key:
                key, last_id = page.last_key, ""
                continue
            if window_end <= now - self.settle:
                window_start, key, last_id = window_end, "", ""
                self.pipeline.submit(None, LegacyCursor(window_start, key, last_id))
                # A restart reads again from the window just left at the earliest.
                self.state.move_session_horizon(window_start - window - SESSION_MARGIN)
                continue
            # Caught up with the present: wait for new events.
            if self.exit_on_last_event:
                return
            self.pipeline.flush()
            self.shutdown.wait(self.poll_interval)


@dataclass
class BulkEngine(Engine):
    """Per-day chunk export with per-chunk cursors and a backlog of past days.

    Chunks of a day are exported ``chunk_concurrency`` at a time. The current
    day moves on once it is in the past and a poll finds nothing new; the two
    days before it stay polled for stragglers, as Teleport's exporter does.

    Caught up, the engine polls every ``min_poll_interval`` for ``BRISK``
    seconds after a poll last found new chunks, then doubles the wait up to
    ``poll_interval`` (Teleport's exporter's 16 s): a busy cluster's events
    follow within about a second, an idle one is asked every 16 s.
    """

    BACKLOG_DAYS: ClassVar[int] = 2
    BRISK: ClassVar[float] = 5.0

    chunk_concurrency: int = 3
    min_poll_interval: float = 0.5
    # Worker processes that stream and convert chunks (export-workers); None: threads.
    workers: ExportWorkers | None = None
    # Chunks read to their end by this process (their commit may be pending).
    _finished: dict[str, set[str]] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def start_date(self) -> datetime.date:
        return self.start_time.astimezone(UTC).date()

    def seed_from_legacy(self) -> None:
        """Continue a legacy export: resume bulk export at the legacy window's day."""
        legacy = self.state.legacy_cursor()
        if legacy is not None and not self.state.has_bulk_state():
            day = max(legacy.window_start.astimezone(UTC).date(), self.start_date)
            log.info("continuing the legacy export with bulk export from %s", day)
            self.state.add_date(_day(day))

    def run(self) -> None:
        self.seed_from_legacy()
        dates = self.state.dates()
        current = datetime.date.fromisoformat(dates[-1]) if dates else self.start_date
        self.state.add_date(_day(current))
        shortest = min(self.min_poll_interval, self.poll_interval)
        idle_wait, found_at = shortest, time.monotonic()
        with concurrent.futures.ThreadPoolExecutor(
            max(1, self.chunk_concurrency), thread_name_prefix="chunk"
        ) as pool:
            while not self.shutdown.requested:
                today = utcnow().date()
                backlog = [
                    current - datetime.timedelta(days=n)
                    for n in range(self.BACKLOG_DAYS, 0, -1)
                    if current - datetime.timedelta(days=n) >= self.start_date
                ]
                # Every day's chunks run side by side, so a chunk that keeps failing
                # holds one worker, not the other chunks or days.
                started = [f for day in [*backlog, current] for f in self._start_day(day, pool)]
                self._wait_for(started)
                if started:
                    idle_wait, found_at = shortest, time.monotonic()
                    continue  # poll again at once: more may have been sealed meanwhile
                if current < today:
                    # Once the next day is stored, a restart no longer polls the
                    # oldest backlog day: everything read so far must be
                    # acknowledged and committed before it is left behind.
                    if not self.pipeline.wait_idle():
                        continue  # shutting down
                    current += datetime.timedelta(days=1)
                    self.state.add_date(_day(current))
                    oldest_day = current - datetime.timedelta(days=self.BACKLOG_DAYS)
                    oldest = _day(oldest_day)
                    self.state.forget_dates_before(oldest)
                    self.state.move_session_horizon(
                        datetime.datetime.combine(oldest_day, datetime.time(), UTC) - SESSION_MARGIN
                    )
                    with self._lock:
                        for name in [d for d in self._finished if d < oldest]:
                            del self._finished[name]
                    continue
                if self.exit_on_last_event:
                    return
                self.pipeline.flush()
                self.shutdown.wait(idle_wait)
                if time.monotonic() - found_at > self.BRISK:
                    idle_wait = min(idle_wait * 2, self.poll_interval)

    def _start_day(
        self, day: datetime.date, pool: concurrent.futures.Executor
    ) -> list[concurrent.futures.Future[None]]:
        """Start every chunk of ``day`` not yet sent; their futures."""
        name = _day(day)
        chunks = self.retrying(
            f"listing the export chunks of {name}",
            functools.partial(self.client.export_chunks, day),
            persistent=True,
        )
        stored = self.state.chunks(name)
        with self._lock:
            finished = self._finished.setdefault(name, set())
            todo = [
                chunk
                for chunk in chunks
                if chunk not in finished and not (chunk in stored and stored[chunk].done)
            ]
        return [
            pool.submit(
                self._export_chunk, day, chunk, stored[chunk].cursor if chunk in stored else ""
            )
            for chunk in todo
        ]

    def _wait_for(self, futures: list[concurrent.futures.Future[None]]) -> None:
        try:
            for future in concurrent.futures.as_completed(futures):
                future.result()
        except BaseException:
            # Only what a person must fix (or a shutdown) ends a chunk: stop the
            # others now (they may be waiting on an unreachable Fluentd) so that
            # the error is reported at once.
            self.shutdown.request()
            for future in futures:
                future.cancel()
            raise

    def _export_chunk(self, day: datetime.date, chunk: str, cursor: str) -> None:
        """Send one chunk from ``cursor``; a dropped stream resumes after the last event read."""
        name = _day(day)
        position = cursor

        def stream() -> None:
            nonlocal position
            try:
                if self.workers is not None:
                    for batch in self.workers.export(day, chunk, position):
                        for record in batch:
                            position = record[0]
                            self.submit_converted(record, ChunkCursor(name, chunk, position))
                        if self.shutdown.requested:
                            raise Stopped
                    return
                for item in self.client.export_events(day, chunk, position):
                    position = item.cursor
                    self.submit(item.event, ChunkCursor(name, chunk, position))
                    if self.shutdown.requested:
                        raise Stopped
            except grpc.RpcError as exc:
                if position and exc.code() == grpc.StatusCode.INVALID_ARGUMENT:
                    # No retry makes Teleport accept a cursor it refuses: start the
                    # chunk again, so nothing is lost (what was sent is sent again).
                    log.warning(
                        "Teleport refused the cursor of chunk %s of %s (%s); exporting the "
                        "chunk again from its start, so its events already sent are sent again",
                        chunk,
                        name,
                        exc.details(),
                    )
                    position = ""
                raise

        # A chunk can fail in any way (a dropped stream, a chunk that vanished
        # after it was listed, NOT_FOUND): it is retried from its cursor with
        # backoff while the other chunks go on, as Teleport's exporter does.
        self.retrying(
            f"exporting chunk {chunk} of {name}", stream, lambda: position, persistent=True
        )
        self.pipeline.submit(None, ChunkCursor(name, chunk, position, done=True))
        with self._lock:
            self._finished.setdefault(name, set()).add(chunk)
