"""Session recordings: each ``session.upload`` exports its recording to Fluentd.

The engines schedule a session in the state database, in the very
transaction that commits the ``session.upload`` event's cursor
(``SessionScheduled``). So a backlog of sessions is rows on disk, never a
full channel that stalls the audit export (the Go plugin's
``RegisterSession`` blocks its events job once ``16 x concurrency`` sessions
wait), and a session read twice is exported once.

``SessionExporter`` runs ``concurrency`` sessions at a time. Each streams
``StreamUnstructuredSessionEvents(sid, next_index)`` and sends every event
whose type is not in ``skip-session-types`` to ``<session-url>.<sid>.log``
(the Go plugin's URL, ``session_events_job.go`` ``consumeSession``) through a
``Pipeline`` of its own: the same batches, retries and dead letters as audit
events, and ``next_index`` moves only once Fluentd acknowledged every event
before it. Teleport streams the events whose index is at least the start
index (``lib/events/auditlog.go``, ``AuditLog.StreamSessionEvents``), so a
restart resumes a session exactly at its first unacknowledged event (the Go
plugin saves the index once a second and re-sends).

Give-up rules, those of the Go plugin (``processSession`` and
``processMissingRecordings``; it has no settings for them):

* a recording Teleport does not have (NOT_FOUND) is tried again in the
  background, first after ``MISSING_FIRST_DELAY`` then every
  ``MISSING_INTERVAL``; it is given up after ``MISSING_MAX_RETRIES`` retries,
  or at once when the upload is more than ``MISSING_CUTOFF`` old;
* a stream that fails otherwise is tried ``STREAM_ATTEMPTS`` times with a
  backoff from ``STREAM_BACKOFF_BASE`` to ``STREAM_BACKOFF_CAP`` (a stream
  that made progress before failing starts the count again), then the
  session is skipped with an error line: one bad session (a recording
  Teleport cannot read, UNKNOWN) never stops the process or the other
  sessions;
* unlike the Go plugin, failures that say Teleport is unavailable, overloaded
  or slow (``OUTAGE_CODES``) do not count: they are retried with the same
  backoff for as long as they last, so an outage never skips a recording
  (``bench/faults.py`` lost the events of one recording in 200,000 when
  40% of calls failed and they counted);
* permission denied names the fix and keeps the session, retried after
  ``DENIED_RETRY``.

``TELEPORT_EVENT_HANDLER_SESSION_TIME_SCALE`` (a factor, tests only) scales
these delays.
"""

from __future__ import annotations

import datetime
import logging
import os
import threading
import time

import grpc

from teleport_event_handler.backoff import Backoff, Shutdown
from teleport_event_handler.events import struct_to_json
from teleport_event_handler.pipeline import Pipeline, PipelineFailed
from teleport_event_handler.protos.teleport.auditlog.v1 import auditlog_pb2
from teleport_event_handler.sink import FluentdClient
from teleport_event_handler.state import (
    SESSION_DONE,
    SESSION_FAILED,
    SESSION_MISSING,
    SESSION_PENDING,
    SessionCursor,
    SessionRow,
    SessionScheduled,
    State,
)
from teleport_event_handler.teleport import TeleportClient, explain, needs_a_person

log = logging.getLogger(__name__)

SESSION_UPLOAD = "session.upload"
MISSING_FIRST_DELAY = 60.0
MISSING_INTERVAL = 180.0
MISSING_MAX_RETRIES = 3
MISSING_CUTOFF = datetime.timedelta(hours=48)
STREAM_ATTEMPTS = 3
# Teleport down, overloaded or slow: retried without limit, never a reason to skip.
OUTAGE_CODES = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
    }
)
STREAM_BACKOFF_BASE = 3.0
STREAM_BACKOFF_CAP = 60.0
DENIED_RETRY = 60.0
POLL_INTERVAL = 0.5
PROGRESS_INTERVAL = 60.0
TIME_SCALE_ENV = "TELEPORT_EVENT_HANDLER_SESSION_TIME_SCALE"


def time_scale() -> float:
    """The delay factor from the environment (tests), 1 otherwise."""
    try:
        value = float(os.environ.get(TIME_SCALE_ENV, "1"))
    except ValueError:
        return 1.0
    return value if value > 0 else 1.0


def scheduled_by(
    message: auditlog_pb2.EventUnstructured, event_type: str
) -> SessionScheduled | None:
    """The session a ``session.upload`` audit event schedules, if it names one."""
    if event_type != SESSION_UPLOAD:
        return None
    fields = message.unstructured.fields
    sid = fields["sid"].string_value if "sid" in fields else ""
    if not sid:
        log.warning("a session.upload event (id %s) names no session id (sid)", message.id)
        return None
    uploaded = ""
    if message.HasField("time"):
        uploaded = message.time.ToDatetime(tzinfo=datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    elif "time" in fields:
        uploaded = fields["time"].string_value
    return SessionScheduled(sid, uploaded)


def session_url(prefix: str, sid: str) -> str:
    """``<session-url>.<sid>.log``, as the Go plugin builds it."""
    return f"{prefix}.{sid}.log"


def _uploaded_long_ago(upload_time: str, now: datetime.datetime) -> bool:
    if not upload_time:
        return False
    try:
        when = datetime.datetime.fromisoformat(upload_time.replace("Z", "+00:00"))
    except ValueError:
        return False
    if when.tzinfo is None:
        when = when.replace(tzinfo=datetime.UTC)
    return now - when > MISSING_CUTOFF


class SessionExporter:
    """Exports scheduled session recordings, ``concurrency`` at a time."""

    def __init__(
        self,
        *,
        client: TeleportClient,
        state: State,
        sink: FluentdClient,
        shutdown: Shutdown,
        url_prefix: str,
        skip_types: tuple[str, ...],
        concurrency: int,
        batch_size: int,
        as_array: bool,
        scale: float | None = None,
    ) -> None:
        self._client = client
        self._state = state
        self._sink = sink
        self._shutdown = shutdown
        self._url_prefix = url_prefix
        self._skip = frozenset(skip_types)
        self._concurrency = max(1, concurrency)
        self._batch_size = batch_size
        self._as_array = as_array
        self._scale = time_scale() if scale is None else scale
        self._active: dict[str, threading.Thread] = {}
        self._lock = threading.Lock()
        self._denied_logged = False
        self._dispatcher = threading.Thread(target=self._dispatch, name="sessions", daemon=True)
        self.failure: BaseException | None = None
        self.sessions_done = 0
        self.events_sent = 0

    # -- lifecycle ---------------------------------------------------------------------

    def start(self) -> None:
        for status in (SESSION_PENDING, SESSION_MISSING):
            count = self._state.count_sessions(status)
            if count:
                log.info("%d %s session recordings from the last run to export", count, status)
        self._dispatcher.start()

    def join(self, timeout: float) -> None:
        """Wait up to ``timeout`` for the session threads (after shutdown was requested)."""
        deadline = time.monotonic() + timeout
        if self._dispatcher.is_alive():
            self._dispatcher.join(max(0.0, deadline - time.monotonic()))
        with self._lock:
            threads = list(self._active.values())
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))

    @property
    def in_progress(self) -> int:
        """Session recordings being streamed right now."""
        with self._lock:
            return len(self._active)

    def idle(self) -> bool:
        """Nothing running and nothing ready to run (missing recordings may wait)."""
        with self._lock:
            if self._active:
                return False
        return not self._state.sessions_to_export(time.time(), 1)

    # -- scheduling --------------------------------------------------------------------

    def _dispatch(self) -> None:
        last_log, done_at_log = time.monotonic(), 0
        while not self._shutdown.wait(POLL_INTERVAL):
            with self._lock:
                for sid in [s for s, t in self._active.items() if not t.is_alive()]:
                    del self._active[sid]
                free = self._concurrency - len(self._active)
                busy = set(self._active)
            if free > 0:
                rows = self._state.sessions_to_export(time.time(), free + len(busy))
                for row in [r for r in rows if r.sid not in busy][:free]:
                    thread = threading.Thread(
                        target=self._run_session,
                        args=(row,),
                        name=f"session-{row.sid[:8]}",
                        daemon=True,  # a stuck stream must never keep the process alive
                    )
                    with self._lock:
                        self._active[row.sid] = thread
                    thread.start()
            if time.monotonic() - last_log >= PROGRESS_INTERVAL:
                log.info(
                    "Session processing: %d sessions exported in the last %.0fs, %d waiting, "
                    "%d recordings not found yet",
                    self.sessions_done - done_at_log,
                    time.monotonic() - last_log,
                    self._state.count_sessions(SESSION_PENDING),
                    self._state.count_sessions(SESSION_MISSING),
                )
                last_log, done_at_log = time.monotonic(), self.sessions_done

    def _run_session(self, row: SessionRow) -> None:
        try:
            self._export(row)
        except PipelineFailed as exc:
            self.failure = exc  # the pipeline already requested shutdown
        except Exception:  # a bug must not take the other sessions down
            log.exception("exporting session recording %s failed; skipping it", row.sid)
            self._state.set_session_status(row.sid, SESSION_FAILED)

    # -- one session ---------------------------------------------------------------------

    def _export(self, row: SessionRow) -> None:
        sid = row.sid
        pipeline = Pipeline(
            sink=self._sink,
            url=session_url(self._url_prefix, sid),
            state=self._state,
            shutdown=self._shutdown,
            batch_size=self._batch_size,
            as_array=self._as_array,
            workers=1,
        )
        pipeline.start()
        try:
            finished = self._stream(row, pipeline)
            if finished and pipeline.wait_idle():
                self.sessions_done += 1
                log.debug("session recording %s exported", sid)
        finally:
            pipeline.close(5.0 if self._shutdown.requested else 30.0)

    def _stream(self, row: SessionRow, pipeline: Pipeline) -> bool:
        """Send the session from its stored index; True once it was read to its end."""
        sid, next_index = row.sid, row.next_index
        backoff = Backoff(
            base=STREAM_BACKOFF_BASE * self._scale, cap=STREAM_BACKOFF_CAP * self._scale
        )
        failures, mark = 0, next_index
        while not self._shutdown.requested:
            try:
                for item in self._client.session_events(sid, next_index):
                    next_index = max(next_index, int(item.index) + 1)
                    body = None
                    if item.type not in self._skip:
                        body = struct_to_json(item.unstructured)
                        self.events_sent += 1
                    pipeline.submit(body, SessionCursor(sid, next_index))
                    if self._shutdown.requested:
                        return False
                pipeline.submit(None, SessionCursor(sid, next_index, done=True))
                return True
            except grpc.RpcError as exc:
                if self._shutdown.requested:
                    return False  # the shutdown cancelled the stream
                code = exc.code() if hasattr(exc, "code") else None
                if code == grpc.StatusCode.NOT_FOUND and next_index == row.next_index:
                    self._not_found(row)
                    return False
                if needs_a_person(exc):
                    self._denied(row, exc)
                    return False
                if next_index != mark:
                    failures, mark = 0, next_index
                    backoff.reset()
                if code not in OUTAGE_CODES:
                    failures += 1
                if failures >= STREAM_ATTEMPTS:
                    log.error(
                        "session recording %s skipped after %d failed attempts at index %d "
                        "(%s); the other sessions go on",
                        sid,
                        failures,
                        next_index,
                        explain(exc, self._client.addr, self._client.creds),
                    )
                    pipeline.wait_idle(30.0)
                    self._state.set_session_status(sid, SESSION_FAILED)
                    return False
                delay = backoff.next_delay()
                log.warning(
                    "session recording %s: stream failed at index %d (%s); retrying in %.1fs",
                    sid,
                    next_index,
                    explain(exc, self._client.addr, self._client.creds),
                    delay,
                )
                if self._shutdown.wait(delay):
                    return False
            except ValueError:
                if self._shutdown.requested:
                    return False  # the channel was closed under the call
                raise
        return False

    def _not_found(self, row: SessionRow) -> None:
        now = datetime.datetime.now(datetime.UTC)
        if row.attempts >= MISSING_MAX_RETRIES or _uploaded_long_ago(row.upload_time, now):
            log.error(
                "session recording %s is still not found after %d attempts (uploaded %s); "
                "giving it up",
                row.sid,
                row.attempts + 1,
                row.upload_time or "at an unknown time",
            )
            self._state.set_session_status(row.sid, SESSION_FAILED)
            return
        delay = (MISSING_FIRST_DELAY if row.attempts == 0 else MISSING_INTERVAL) * self._scale
        log.info(
            "session recording %s not found yet; trying again in %.0fs (attempt %d of %d)",
            row.sid,
            delay,
            row.attempts + 2,
            MISSING_MAX_RETRIES + 1,
        )
        self._state.set_session_status(
            row.sid, SESSION_MISSING, attempts=row.attempts + 1, retry_at=time.time() + delay
        )

    def _denied(self, row: SessionRow, exc: grpc.RpcError) -> None:
        retry_at = time.time() + DENIED_RETRY * self._scale
        if not self._denied_logged:
            self._denied_logged = True
            log.error(
                "%s; session recordings wait until then (tried again every %.0fs), "
                "the audit export goes on",
                explain(exc, self._client.addr, self._client.creds),
                DENIED_RETRY * self._scale,
            )
        self._state.set_session_status(row.sid, row.status, retry_at=retry_at)


__all__ = [
    "SESSION_DONE",
    "SESSION_UPLOAD",
    "SessionExporter",
    "scheduled_by",
    "session_url",
]
