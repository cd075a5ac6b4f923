"""Durable export state: one SQLite database in WAL mode per cluster address.

Layout follows the Go plugin: ``<storage>/<host>_<port>/``, so pointing the
forwarder at another Auth address starts a fresh export, and dry runs get a
separate directory of their own. Inside it, ``state.sqlite3`` holds:

* ``kv``: the start time and the legacy engine's (window, cursor, last id),
  and where the Go plugin's state was taken over from (``gostate.py``);
* ``dates``: the days the bulk engine has reached;
* ``chunks``: per (day, chunk) the cursor after the last acknowledged event,
  and whether the chunk is complete;
* ``sessions``: per session recording to export (scheduled by its
  ``session.upload`` audit event, in the same transaction as that event's
  cursor) the index of the next recording event to send, its status
  (``pending``, ``missing`` with the attempts made and when to try again,
  ``done`` or ``failed``) and the upload time. Exported sessions are kept
  so that a ``session.upload`` read again never exports its session twice,
  and dropped once the engine no longer reads where that event lies (the
  ``sessions.horizon`` in ``kv``), so the table does not grow for ever.

Writers never hold a transaction open across network calls: the pipeline
hands over a batch of updates once the sink acknowledged every earlier
event, and ``apply`` writes them in one transaction.
"""

from __future__ import annotations

import datetime
import logging
import os
import secrets
import sqlite3
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass

log = logging.getLogger(__name__)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS kv (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS dates (date TEXT PRIMARY KEY);
CREATE TABLE IF NOT EXISTS chunks (
    date TEXT NOT NULL,
    chunk TEXT NOT NULL,
    cursor TEXT NOT NULL DEFAULT '',
    done INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (date, chunk)
);
CREATE TABLE IF NOT EXISTS sessions (
    sid TEXT PRIMARY KEY,
    next_index INTEGER NOT NULL DEFAULT 0,
    status TEXT NOT NULL DEFAULT 'pending',
    attempts INTEGER NOT NULL DEFAULT 0,
    retry_at REAL NOT NULL DEFAULT 0,
    upload_time TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS sessions_status ON sessions (status, retry_at);
"""

START_TIME = "start_time"
LEGACY_WINDOW = "legacy.window_time"
LEGACY_CURSOR = "legacy.cursor"
LEGACY_ID = "legacy.id"
# Events before this moment are not read again (State.move_session_horizon).
SESSION_HORIZON = "sessions.horizon"
# Where the Go plugin's state was imported from (written with the import, see gostate.py).
TAKEN_OVER_FROM = "taken_over_from"


class StateError(Exception):
    """The state directory cannot be used; the message says how to fix it."""


class StateFull(StateError):
    """A write failed because the state's disk is full; retrying once there is space works."""


# SQLite's result codes for a full disk (SQLITE_FULL) and a failed write (SQLITE_IOERR,
# which is what ENOSPC while appending to the WAL can surface as).
_SQLITE_FULL = 13
_SQLITE_IOERR = 10


# Free space the state needs to take writes: SQLite's write-ahead log grows to
# about 4 MiB (1,000 pages of 4 KiB) before it is checkpointed.
WAL_FREE_BYTES = 4 * 2**20


def _is_full(exc: sqlite3.Error) -> bool:
    code = getattr(exc, "sqlite_errorcode", None)
    if code is None:
        return "disk is full" in str(exc)
    return code & 0xFF in (_SQLITE_FULL, _SQLITE_IOERR)


@dataclass(frozen=True, slots=True)
class ChunkCursor:
    """Progress inside one bulk-export chunk; ``done`` once it was fully sent."""

    date: str
    chunk: str
    cursor: str
    done: bool = False


@dataclass(frozen=True, slots=True)
class LegacyCursor:
    """Where the legacy engine resumes: window start, page key, last sent id."""

    window_start: datetime.datetime
    cursor: str
    last_id: str


@dataclass(frozen=True, slots=True)
class SessionScheduled:
    """A ``session.upload`` was read: its recording is to be exported (once)."""

    sid: str
    upload_time: str = ""


@dataclass(frozen=True, slots=True)
class SessionCursor:
    """Recording events of ``sid`` below ``next_index`` were acknowledged."""

    sid: str
    next_index: int
    done: bool = False


Update = ChunkCursor | LegacyCursor | SessionScheduled | SessionCursor

SESSION_PENDING = "pending"
SESSION_MISSING = "missing"
SESSION_DONE = "done"
SESSION_FAILED = "failed"


@dataclass(frozen=True, slots=True)
class SessionRow:
    """One session of the ``sessions`` table."""

    sid: str
    next_index: int
    status: str
    attempts: int
    retry_at: float
    upload_time: str


def state_dir(storage: str, teleport_addr: str, dry_run: bool = False) -> str:
    """``<storage>/<host>_<port>`` like the Go plugin (a dry run gets its own)."""
    host, _, port = teleport_addr.rpartition(":")
    if not host:
        host, port = teleport_addr, "3025"
    name = f"{host.strip('[]')}_{port}".replace("/", "_")
    path = os.path.join(storage, name)
    if dry_run:
        path = os.path.join(path, "dry_run", secrets.token_hex(16))
    return path


def _iso(value: datetime.datetime) -> str:
    return value.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_iso(value: str) -> datetime.datetime:
    return datetime.datetime.strptime(value, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=datetime.UTC)


class State:
    """The state database. Safe to share between threads."""

    def __init__(self, directory: str) -> None:
        self.directory = directory
        try:
            os.makedirs(directory, mode=0o700, exist_ok=True)
        except OSError as exc:
            raise StateError(
                f"storage {directory}: {exc.strerror}; point --storage at a writable directory"
            ) from exc
        self.path = os.path.join(directory, "state.sqlite3")
        try:
            self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            # NORMAL in WAL mode survives a killed process; after a power loss the
            # last commits may roll back, which only re-sends (never skips) events.
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.executescript(_SCHEMA)
        except sqlite3.Error as exc:
            raise StateError(
                f"state database {self.path}: {exc}; check the disk and permissions, "
                "or move the file away to start the export again"
            ) from exc
        self._lock = threading.Lock()
        # Set by the app (Shutdown.wait): writes other than commits wait for space
        # while the disk is full, until it returns True (shutting down).
        self.pause: Callable[[float], bool] | None = None

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # -- key/value ------------------------------------------------------------

    def get(self, key: str) -> str | None:
        with self._lock:
            row = self._db.execute("SELECT value FROM kv WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def put(self, key: str, value: str, *, wait: bool = True) -> None:
        """Store one key; with ``wait``, a full disk pauses the caller until there is space."""

        def write() -> None:
            self._db.execute("INSERT OR REPLACE INTO kv (key, value) VALUES (?, ?)", (key, value))

        self._write(write, wait=wait)

    def full_error(self, exc: sqlite3.Error) -> StateFull:
        return StateFull(
            f"cannot write the export state in {self.directory}: the disk is full ({exc}); "
            "the export is paused until space is freed there (the state needs about "
            f"{WAL_FREE_BYTES // 2**20} MiB free for its write-ahead log); nothing is lost"
        )

    def _write(self, write: Callable[[], object], *, wait: bool = True) -> None:
        """Run ``write`` under the lock; while the disk is full, wait for space and retry."""
        delay, logged = 0.5, False
        while True:
            with self._lock:
                try:
                    write()
                    if logged:
                        log.warning("the state in %s is writable again", self.directory)
                    return
                except sqlite3.OperationalError as exc:
                    if not _is_full(exc):
                        raise
                    if self._db.in_transaction:
                        self._db.execute("ROLLBACK")
                    error = self.full_error(exc)
            if not wait or self.pause is None:
                raise error
            if not logged:
                log.error("%s", error)
                logged = True
            if self.pause(delay):
                raise error  # shutting down
            delay = min(delay * 2, 5.0)

    # -- start time -----------------------------------------------------------

    def settle_start_time(
        self, wanted: datetime.datetime | None, now: datetime.datetime
    ) -> datetime.datetime:
        """Store the start time on the first run; refuse a different one later."""
        stored = self.get(START_TIME)
        if stored is None:
            chosen = (wanted or now).replace(microsecond=0)
            self.put(START_TIME, _iso(chosen))
            return chosen
        current = parse_iso(stored)
        if wanted is not None and wanted.replace(microsecond=0) != current:
            raise StateError(
                f"start-time {_iso(wanted)} differs from {_iso(current)}, where the export in "
                f"{self.directory} started: you can not change start time in the middle of "
                f"ingestion; remove the start-time setting, or remove {self.directory} to "
                "export again from the new start time"
            )
        return current

    # -- legacy engine ----------------------------------------------------------

    def legacy_cursor(self) -> LegacyCursor | None:
        window = self.get(LEGACY_WINDOW)
        if window is None:
            return None
        return LegacyCursor(
            window_start=datetime.datetime.fromisoformat(window),
            cursor=self.get(LEGACY_CURSOR) or "",
            last_id=self.get(LEGACY_ID) or "",
        )

    # -- bulk engine -------------------------------------------------------------

    def has_bulk_state(self) -> bool:
        with self._lock:
            return self._db.execute("SELECT 1 FROM dates LIMIT 1").fetchone() is not None

    def dates(self) -> list[str]:
        with self._lock:
            return [row[0] for row in self._db.execute("SELECT date FROM dates ORDER BY date")]

    def add_date(self, date: str) -> None:
        self._write(
            lambda: self._db.execute("INSERT OR IGNORE INTO dates (date) VALUES (?)", (date,))
        )

    def chunks(self, date: str) -> dict[str, ChunkCursor]:
        with self._lock:
            rows = self._db.execute(
                "SELECT chunk, cursor, done FROM chunks WHERE date = ?", (date,)
            ).fetchall()
        return {row[0]: ChunkCursor(date, row[0], row[1], bool(row[2])) for row in rows}

    def forget_dates_before(self, date: str) -> None:
        """Drop per-chunk rows of days the exporter no longer polls."""
        self._write(lambda: self._db.execute("DELETE FROM chunks WHERE date < ?", (date,)))

    # -- session recordings ----------------------------------------------------------

    def move_session_horizon(self, moment: datetime.datetime) -> None:
        """The engine no longer reads events before ``moment``.

        A ``session.upload`` from before it cannot be read again, so an
        exported session uploaded before it needs no row to keep it from being
        exported twice: such rows are dropped now, and later as their sessions
        finish (``_forget_if_behind``). Failed sessions stay, as a record.
        """

        # As sessions.scheduled_by writes upload times, so that they compare as text.
        horizon = _iso(moment)

        def write() -> None:
            self._db.execute(
                "INSERT OR REPLACE INTO kv (key, value) VALUES (?, ?)", (SESSION_HORIZON, horizon)
            )
            self._db.execute(
                "DELETE FROM sessions WHERE status = 'done' AND upload_time != '' "
                "AND upload_time < ?",
                (horizon,),
            )

        self._write(write)

    def _forget_if_behind(self, sid: str) -> None:
        self._db.execute(
            "DELETE FROM sessions WHERE sid = ? AND status = 'done' AND upload_time != '' "
            "AND upload_time < (SELECT value FROM kv WHERE key = ?)",
            (sid, SESSION_HORIZON),
        )

    def sessions_to_export(self, now: float, limit: int) -> list[SessionRow]:
        """Pending sessions, then missing ones whose retry time has come."""
        with self._lock:
            rows = self._db.execute(
                "SELECT sid, next_index, status, attempts, retry_at, upload_time FROM sessions "
                "WHERE status IN (?, ?) AND retry_at <= ? ORDER BY status DESC, rowid LIMIT ?",
                (SESSION_PENDING, SESSION_MISSING, now, limit),
            ).fetchall()
        return [SessionRow(*row) for row in rows]

    def session(self, sid: str) -> SessionRow | None:
        with self._lock:
            row = self._db.execute(
                "SELECT sid, next_index, status, attempts, retry_at, upload_time FROM sessions "
                "WHERE sid = ?",
                (sid,),
            ).fetchone()
        return None if row is None else SessionRow(*row)

    def count_sessions(self, status: str) -> int:
        with self._lock:
            row = self._db.execute(
                "SELECT count(*) FROM sessions WHERE status = ?", (status,)
            ).fetchone()
        return int(row[0])

    def set_session_status(
        self, sid: str, status: str, attempts: int | None = None, retry_at: float = 0.0
    ) -> None:
        """Mark a session missing (to retry at ``retry_at``), failed, or pending again."""

        def write() -> None:
            if attempts is None:
                self._db.execute(
                    "UPDATE sessions SET status = ?, retry_at = ? WHERE sid = ?",
                    (status, retry_at, sid),
                )
            else:
                self._db.execute(
                    "UPDATE sessions SET status = ?, attempts = ?, retry_at = ? WHERE sid = ?",
                    (status, attempts, retry_at, sid),
                )

        self._write(write)

    # -- taking over another exporter's state ------------------------------------------

    def is_new(self) -> bool:
        """No export ran on this database yet: no start time, nothing taken over."""
        return self.get(START_TIME) is None and self.get(TAKEN_OVER_FROM) is None

    def take_over(
        self,
        source: str,
        start_time: datetime.datetime | None,
        legacy: LegacyCursor | None,
        dates: Iterable[str],
        chunks: Iterable[ChunkCursor],
        sessions: Iterable[SessionRow],
    ) -> None:
        """Write another exporter's progress into a new database, in one transaction.

        ``source`` is recorded with it, so a crash before the commit leaves the
        database new (the import runs again) and after it never imports twice.
        """
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                kv = [(TAKEN_OVER_FROM, source)]
                if start_time is not None:
                    kv.append((START_TIME, _iso(start_time)))
                if legacy is not None:
                    kv += [
                        (LEGACY_WINDOW, legacy.window_start.isoformat()),
                        (LEGACY_CURSOR, legacy.cursor),
                        (LEGACY_ID, legacy.last_id),
                    ]
                self._db.executemany("INSERT OR REPLACE INTO kv (key, value) VALUES (?, ?)", kv)
                self._db.executemany(
                    "INSERT OR IGNORE INTO dates (date) VALUES (?)", ((d,) for d in dates)
                )
                self._db.executemany(
                    "INSERT OR REPLACE INTO chunks (date, chunk, cursor, done) VALUES (?, ?, ?, ?)",
                    ((c.date, c.chunk, c.cursor, int(c.done)) for c in chunks),
                )
                self._db.executemany(
                    "INSERT OR REPLACE INTO sessions "
                    "(sid, next_index, status, attempts, retry_at, upload_time) "
                    "VALUES (?, ?, ?, ?, ?, ?)",
                    (
                        (s.sid, s.next_index, s.status, s.attempts, s.retry_at, s.upload_time)
                        for s in sessions
                    ),
                )
                self._db.execute("COMMIT")
            except BaseException:
                # SQLite may have rolled back already (a full disk does): then there is
                # nothing to roll back, and trying would hide the real error.
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                raise

    # -- commits -------------------------------------------------------------------

    def apply(self, updates: Iterable[Update]) -> None:
        """Write acknowledged progress, all of it or none of it.

        Raises StateFull when the disk is full (nothing written); the pipeline
        waits for space and applies the same updates again.
        """
        try:
            self._apply(updates)
        except sqlite3.OperationalError as exc:
            if not _is_full(exc):
                raise
            raise self.full_error(exc) from None

    def _apply(self, updates: Iterable[Update]) -> None:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                for update in updates:
                    if isinstance(update, ChunkCursor):
                        self._db.execute(
                            "INSERT OR REPLACE INTO chunks (date, chunk, cursor, done) "
                            "VALUES (?, ?, ?, ?)",
                            (update.date, update.chunk, update.cursor, int(update.done)),
                        )
                    elif isinstance(update, SessionScheduled):
                        # Read again (a re-sent page or chunk): the session keeps its progress.
                        self._db.execute(
                            "INSERT OR IGNORE INTO sessions (sid, upload_time) VALUES (?, ?)",
                            (update.sid, update.upload_time),
                        )
                    elif isinstance(update, SessionCursor):
                        self._db.execute(
                            "UPDATE sessions SET next_index = ?, status = CASE WHEN ? "
                            "THEN 'done' ELSE status END WHERE sid = ?",
                            (update.next_index, int(update.done), update.sid),
                        )
                        if update.done:
                            self._forget_if_behind(update.sid)
                    else:
                        self._db.executemany(
                            "INSERT OR REPLACE INTO kv (key, value) VALUES (?, ?)",
                            (
                                (LEGACY_WINDOW, update.window_start.isoformat()),
                                (LEGACY_CURSOR, update.cursor),
                                (LEGACY_ID, update.last_id),
                            ),
                        )
                self._db.execute("COMMIT")
            except BaseException:
                # SQLite may have rolled back already (a full disk does): then there is
                # nothing to roll back, and trying would hide the real error.
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                raise
