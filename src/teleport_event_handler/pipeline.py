"""From engine to sink: batches, parallel sends, and cursor commits in order.

Engines call ``submit`` with each wanted event's JSON and the state update
that marks it sent (filtered events carry an update and no JSON). Events are
cut into batches (``batch_size`` events or ``max_batch_bytes``, or whatever
is waiting after ``flush_interval``), a bounded queue hands batches to
``workers`` sender threads, and the committer writes a batch's updates only
once it and every batch before it were acknowledged by the sink. So sends run
in parallel while the stored cursor never passes an unacknowledged event: a
crash at any point re-sends at most the batches in flight, and loses nothing.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field

from teleport_event_handler.backoff import Shutdown
from teleport_event_handler.sink import FluentdClient, ShutdownRequested, SinkError
from teleport_event_handler.state import (
    ChunkCursor,
    SessionCursor,
    SessionScheduled,
    State,
    StateFull,
    Update,
)

log = logging.getLogger(__name__)


def _update_key(update: Update) -> Hashable:
    if isinstance(update, ChunkCursor):
        return ("chunk", update.date, update.chunk)
    if isinstance(update, SessionScheduled):
        return ("scheduled", update.sid)
    if isinstance(update, SessionCursor):
        return ("session", update.sid)
    return ("legacy",)


@dataclass
class _Batch:
    seq: int
    events: list[bytes] = field(default_factory=list)
    size: int = 0
    updates: dict[Hashable, Update] = field(default_factory=dict)
    opened: float = field(default_factory=time.monotonic)


class PipelineFailed(Exception):
    """A sender failed in a way retries cannot fix; the export must stop."""


class Pipeline:
    def __init__(
        self,
        *,
        sink: FluentdClient,
        url: str,
        state: State,
        shutdown: Shutdown,
        batch_size: int,
        as_array: bool,
        workers: int,
        flush_interval: float = 0.2,
        max_batch_bytes: int = 4 * 1024 * 1024,
    ) -> None:
        self._sink = sink
        self._url = url
        self._state = state
        self._shutdown = shutdown
        self._batch_size = max(1, batch_size)
        self._as_array = as_array
        self._flush_interval = flush_interval
        self._max_batch_bytes = max_batch_bytes
        self._queue: queue.Queue[_Batch] = queue.Queue(maxsize=max(2, workers * 2))
        self._build_lock = threading.Lock()
        self._current = _Batch(seq=0)
        self._next_seq = 1
        # Committer state, guarded by _commit_cond.
        self._commit_cond = threading.Condition()
        self._acked: dict[int, _Batch] = {}
        self._next_commit = 0
        self._committing = False
        # Batches sent but not committed stay within one window of the oldest
        # uncommitted one: a crash re-sends at most ``workers`` batches.
        self._window = max(1, workers)
        self._failure: BaseException | None = None
        self.paused_since: float | None = None
        self.events_sent = 0
        self.events_committed = 0
        self._workers = [
            threading.Thread(target=self._work, name=f"sender-{n}", daemon=True)
            for n in range(max(1, workers))
        ]
        self._flusher = threading.Thread(target=self._flush_loop, name="flusher", daemon=True)
        self._closed = False
        self._started = False

    # -- lifecycle --------------------------------------------------------------

    def start(self) -> None:
        self._started = True
        for worker in self._workers:
            worker.start()
        self._flusher.start()

    def close(self, timeout: float = 30.0) -> None:
        """Send what is queued (unless shutting down), then stop the senders.

        Waits at most ``timeout``; a sender still inside a request after that
        is ended by closing the sink, and ``join`` waits for it.
        """
        if not self._started:
            return
        self.flush()
        self._closed = True
        self.join(timeout)
        self._flusher.join(1.0)

    def join(self, timeout: float) -> None:
        """Wait up to ``timeout`` for the senders to finish."""
        if not self._started:
            return
        deadline = time.monotonic() + timeout
        for worker in self._workers:
            worker.join(max(0.0, deadline - time.monotonic()))

    # -- producer side ------------------------------------------------------------

    def submit(
        self, event: bytes | None, update: Update | None, extra: Sequence[Update] = ()
    ) -> None:
        """Queue one event (or just progress) for sending; blocks when senders lag.

        ``extra`` updates are committed with ``update`` (a ``session.upload``
        schedules its recording in the transaction that moves past it).
        """
        self._raise_failure()
        with self._build_lock:
            batch = self._current
            if event is not None:
                batch.events.append(event)
                batch.size += len(event) + 1
            for more in extra:
                batch.updates[_update_key(more)] = more
            if update is not None:
                batch.updates[_update_key(update)] = update
            if len(batch.events) >= self._batch_size or batch.size >= self._max_batch_bytes:
                self._cut_locked()

    def flush(self) -> None:
        with self._build_lock:
            self._cut_locked()

    def _cut_locked(self) -> None:
        batch = self._current
        if not batch.events and not batch.updates:
            return
        self._current = _Batch(seq=self._next_seq)
        self._next_seq += 1
        if not batch.events:
            self._acknowledge(batch)
            return
        while True:
            try:
                self._queue.put(batch, timeout=0.5)
                return
            except queue.Full:
                self._raise_failure()
                if self._shutdown.requested:
                    return

    def _flush_loop(self) -> None:
        while not self._shutdown.wait(self._flush_interval / 2) and not self._closed:
            with self._build_lock:
                waited = time.monotonic() - self._current.opened
                if waited >= self._flush_interval:
                    self._cut_locked()

    # -- senders and the committer ---------------------------------------------------

    def _work(self) -> None:
        while True:
            try:
                batch = self._queue.get(timeout=0.2)
            except queue.Empty:
                if self._closed:
                    return  # closed and drained
                continue
            if self._shutdown.requested and self._failure is None:
                continue  # leave it unsent and uncommitted: it is re-read next start
            if not self._wait_for_window(batch):
                continue  # shutting down: unsent, uncommitted, re-read next start
            try:
                self._sink.deliver(self._url, batch.events, as_array=self._as_array)
            except ShutdownRequested:
                continue
            except Exception as exc:  # a setup problem retries cannot fix, or a bug
                if not isinstance(exc, SinkError):
                    log.exception("sending a batch of %d events failed", len(batch.events))
                with self._commit_cond:
                    self._failure = exc
                    self._commit_cond.notify_all()
                self._shutdown.request()
                continue
            self._acknowledge(batch)

    def _wait_for_window(self, batch: _Batch) -> bool:
        """Hold ``batch`` until it is within one window of the oldest uncommitted batch.

        Batches leave the queue in order, so every earlier batch is being sent
        or already acknowledged: the oldest one is always inside the window,
        and a slow batch holds back at most ``workers`` acknowledged ones.
        """
        with self._commit_cond:
            while batch.seq >= self._next_commit + self._window:
                if self._shutdown.requested:
                    return False
                self._commit_cond.wait(0.5)
        return True

    def _acknowledge(self, batch: _Batch) -> None:
        with self._commit_cond:
            self._acked[batch.seq] = batch
            if self._committing:
                return  # the thread committing picks it up when it gets there
            self._committing = True
            try:
                self._commit_ready()
            finally:
                self._committing = False
                self._commit_cond.notify_all()

    def _commit_ready(self) -> None:
        """Commit every acknowledged batch that has no unacknowledged one before it.

        Called with _commit_cond held; it is released only while the state's
        disk is full, when this waits for space (nothing else commits meanwhile).
        """
        while True:
            ready: list[_Batch] = []
            seq = self._next_commit
            while seq in self._acked:
                ready.append(self._acked[seq])
                seq += 1
            if not ready:
                return
            merged: dict[Hashable, Update] = {}
            for done in ready:
                merged.update(done.updates)
            if not self._apply(list(merged.values())):
                return
            for done in ready:
                del self._acked[done.seq]
                self.events_sent += len(done.events)
            self._next_commit = seq
            self.events_committed = self.events_sent
            self._commit_cond.notify_all()

    def _apply(self, updates: list[Update]) -> bool:
        """Write the updates; wait while the disk is full; False when the export must stop."""
        delay = 0.5
        while True:
            try:
                self._state.apply(updates)
            except StateFull as exc:
                if self.paused_since is None:
                    self.paused_since = time.monotonic()
                    log.error("%s", exc)
                if self._shutdown.requested:
                    return False  # not committed: re-sent on the next start, never lost
                self._commit_cond.wait(delay)
                delay = min(delay * 2, 5.0)
                continue
            except Exception as exc:
                log.exception("writing progress to %s failed", self._state.path)
                self._failure = exc
                self._shutdown.request()
                return False
            if self.paused_since is not None:
                log.warning(
                    "the state in %s is writable again after %.0fs: the export goes on",
                    self._state.directory,
                    time.monotonic() - self.paused_since,
                )
                self.paused_since = None
            return True

    def _raise_failure(self) -> None:
        if self._failure is not None:
            raise PipelineFailed(str(self._failure)) from self._failure

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Flush and wait until everything submitted so far is committed."""
        self.flush()
        with self._build_lock:
            target = self._current.seq - 1  # the last batch cut so far
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._commit_cond:
            while self._next_commit <= target:
                self._raise_failure()
                if self._shutdown.requested:
                    return False
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return False
                self._commit_cond.wait(0.5 if remaining is None else min(0.5, remaining))
        return True
