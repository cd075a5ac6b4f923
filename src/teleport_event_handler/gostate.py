"""Taking over from the Go plugin: import its state on the first start.

The Go plugin keeps its state in the same directory as ours,
``<storage>/<host>_<port>/`` (``integrations/event-handler/state.go``,
``createStorageDir``), one flat file per key written by diskv with an empty
path transform (``NewState``), plus the bulk exporter's cursor directory:

* ``start_time``, ``window_time``: RFC 3339 text truncated to the second
  (``setTimeKey``); an empty file means unset (``getTimeKey``);
* ``cursor`` and ``id``: the legacy engine's page key and last exported
  event id, raw text (``setStringValue``), with ``window_time`` the
  ``LegacyCursorValues`` triple (``SetLegacyCursorValues``);
* ``session<sid>``: 8 bytes, a big-endian uint64, the index of the last
  recording event sent (``SetSessionIndex``, written by ``consumeSession``
  after the send, and 0 by ``RegisterSession`` before anything is sent);
  an empty file reads as 0 (``GetSessions``);
* ``missing_recording<sid>``: JSON ``{"Index", "Attempt", "Timestamp"}``
  with Go's field names (``SetMissingRecording``, the ``missingRecording``
  struct);
* ``cursor_v2/<YYYY-MM-DD>/``: one directory per day the bulk exporter
  reached, meaningful even when empty; in it ``completed-chunks`` lists the
  finished chunks separated by whitespace (appended and fsynced), and
  ``<chunk>.chunk`` holds the cursor of a chunk in progress, surrounding
  whitespace ignored, deleted once the chunk completes
  (``lib/events/export/cursor.go``: ``Cursor.syncDate``,
  ``loadInitialState``). Other entries are ignored, as Go ignores them.

``take_over`` runs when the state database is new. It reads every Go file
first (read only: the Go plugin can be started again on the same directory)
and writes the result in one transaction (``State.take_over``), so an
unreadable or malformed file stops the start with its path and the fix, and
nothing is imported in part. Mapping:

* the start time is stored as ours, so a different configured start time is
  refused as for any running export;
* the legacy triple becomes our ``LegacyCursor``: the same window, the same
  page key, the same last id (our engine re-reads that page and skips
  through the id, as Go's ``fetch`` does);
* each day directory becomes a reached day, each completed chunk a done
  chunk, each chunk cursor a chunk in progress (a chunk both completed and
  with a cursor file, a crash between the fsync and the removal, is done);
* a ``session<sid>`` index ``n`` becomes a pending session resuming at
  ``n + 1``: event ``n`` was acknowledged before Go wrote it. ``0`` also
  means "registered, nothing sent", so it resumes at 0;
* a missing-recording marker becomes a ``missing`` session with Go's
  attempts and upload time, tried again at once and then by our rules
  (``sessions.py``), which are Go's.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import logging
import os
import re

from teleport_event_handler.state import (
    SESSION_MISSING,
    SESSION_PENDING,
    ChunkCursor,
    LegacyCursor,
    SessionRow,
    State,
    StateError,
)

log = logging.getLogger(__name__)

START_TIME = "start_time"
WINDOW_TIME = "window_time"
CURSOR = "cursor"
ID = "id"
SESSION_PREFIX = "session"
MISSING_PREFIX = "missing_recording"
CURSOR_V2 = "cursor_v2"
COMPLETED = "completed-chunks"
CHUNK_SUFFIX = ".chunk"

_RFC3339 = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})[Tt](\d{2}):(\d{2}):(\d{2})(?:\.\d+)?([Zz]|[+-]\d{2}:\d{2})"
)
_DATE_ONLY = re.compile(r"\d{4}-\d{2}-\d{2}")
_MAX_INT64 = 2**63 - 1


@dataclasses.dataclass(frozen=True, slots=True)
class GoState:
    """What the Go plugin's files in ``directory`` say, in our terms."""

    directory: str
    start_time: datetime.datetime | None
    legacy: LegacyCursor | None
    dates: tuple[str, ...]
    chunks: tuple[ChunkCursor, ...]
    sessions: tuple[SessionRow, ...]

    def summary(self) -> str:
        parts = []
        if self.start_time is not None:
            parts.append(f"start time {self.start_time.isoformat()}")
        if self.legacy is not None:
            parts.append(
                f"legacy cursor (window {self.legacy.window_start.isoformat()}, "
                f"last id {self.legacy.last_id or 'none'})"
            )
        if self.dates:
            done = sum(1 for c in self.chunks if c.done)
            parts.append(
                f"bulk cursors of {len(self.dates)} days {self.dates[0]}..{self.dates[-1]} "
                f"({done} chunks done, {len(self.chunks) - done} in progress)"
            )
        pending = sum(1 for s in self.sessions if s.status == SESSION_PENDING)
        parts.append(f"{pending} session recordings to resume")
        parts.append(f"{len(self.sessions) - pending} missing recordings to retry")
        return ", ".join(parts)


def _home(path: str) -> str:
    """The state directory a Go file or directory belongs to."""
    parent = os.path.dirname(path)
    for up in (path, parent, os.path.dirname(parent)):
        if os.path.basename(up) == CURSOR_V2:
            return os.path.dirname(up)
    return parent


def _bad(path: str, problem: str) -> StateError:
    directory = _home(path)
    return StateError(
        f"the Go plugin's state file {path} {problem}; fix or remove that file, or move the "
        f"Go plugin's files out of {directory} to start a new export there (nothing was "
        "imported)"
    )


def _read(path: str) -> bytes:
    try:
        with open(path, "rb") as handle:
            return handle.read()
    except OSError as exc:
        raise _bad(path, f"cannot be read ({exc.strerror})") from exc


def _text(path: str) -> str:
    try:
        return _read(path).decode().strip()
    except UnicodeDecodeError as exc:
        raise _bad(path, "is not UTF-8 text") from exc


def parse_rfc3339(value: str) -> datetime.datetime:
    """Go's ``time.Parse(time.RFC3339, ...)`` then ``Truncate(time.Second)``, in UTC."""
    match = _RFC3339.fullmatch(value)
    if match is None:
        raise ValueError(f"{value!r} is not an RFC 3339 time")
    year, month, day, hour, minute, second = (int(g) for g in match.groups()[:6])
    zone = match.group(7)
    if zone in ("Z", "z"):
        offset = datetime.timedelta(0)
    else:
        sign = -1 if zone[0] == "-" else 1
        offset = sign * datetime.timedelta(hours=int(zone[1:3]), minutes=int(zone[4:6]))
    try:
        local = datetime.datetime(year, month, day, hour, minute, second)
        return (local - offset).replace(tzinfo=datetime.UTC)
    except (ValueError, OverflowError) as exc:
        raise ValueError(f"{value!r} is not a valid time ({exc})") from None


def _time_key(path: str) -> datetime.datetime | None:
    if not os.path.exists(path):
        return None
    text = _text(path)
    if not text:
        return None  # Go writes "" for an unset time
    try:
        return parse_rfc3339(text)
    except ValueError as exc:
        raise _bad(path, f"does not hold an RFC 3339 time: {exc}") from None


def _session_index(path: str) -> int:
    raw = _read(path)
    if not raw:
        return 0
    if len(raw) != 8:
        raise _bad(path, f"holds {len(raw)} bytes, not an 8-byte big-endian session index")
    value = int.from_bytes(raw, "big")
    if value > _MAX_INT64:
        raise _bad(path, f"holds the session index {value}, beyond an int64")
    return value


def _json_int(path: str, record: dict[str, object], name: str) -> int:
    value = record.get(name, 0)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= _MAX_INT64:
        raise _bad(path, f"has {name} {value!r}, not a non-negative integer")
    return value


def _missing(path: str, sid: str) -> SessionRow:
    try:
        record = json.loads(_read(path))
    except (ValueError, UnicodeDecodeError) as exc:
        raise _bad(path, f"is not JSON ({exc})") from None
    if not isinstance(record, dict):
        raise _bad(path, "is not a JSON object with Index, Attempt and Timestamp")
    index = _json_int(path, record, "Index")
    attempts = _json_int(path, record, "Attempt")
    stamp = record.get("Timestamp", "")
    if not isinstance(stamp, str):
        raise _bad(path, f"has Timestamp {stamp!r}, not an RFC 3339 string")
    upload_time = ""
    if stamp:
        try:
            when = parse_rfc3339(stamp)
        except ValueError as exc:
            raise _bad(path, f"has a bad Timestamp: {exc}") from None
        if when.year > 1:  # Go's zero time: the upload time is unknown
            upload_time = when.strftime("%Y-%m-%dT%H:%M:%SZ")
    return SessionRow(sid, index, SESSION_MISSING, attempts, 0.0, upload_time)


def _cursor_v2(directory: str) -> tuple[list[str], list[ChunkCursor]]:
    root = os.path.join(directory, CURSOR_V2)
    if not os.path.isdir(root):
        return [], []
    dates: list[str] = []
    chunks: list[ChunkCursor] = []
    try:
        names = sorted(os.listdir(root))
    except OSError as exc:
        raise _bad(root, f"cannot be listed ({exc.strerror})") from exc
    for name in names:
        day_dir = os.path.join(root, name)
        if not os.path.isdir(day_dir) or not _DATE_ONLY.fullmatch(name):
            continue
        try:
            datetime.date.fromisoformat(name)
            entries = sorted(os.listdir(day_dir))
        except ValueError:
            continue  # not a date: Go ignores it too
        except OSError as exc:
            raise _bad(day_dir, f"cannot be listed ({exc.strerror})") from exc
        dates.append(name)
        done: set[str] = set()
        if COMPLETED in entries and not os.path.isdir(os.path.join(day_dir, COMPLETED)):
            done = set(_text(os.path.join(day_dir, COMPLETED)).split())
        chunks += [ChunkCursor(name, chunk, "", True) for chunk in sorted(done)]
        for entry in entries:
            path = os.path.join(day_dir, entry)
            if not entry.endswith(CHUNK_SUFFIX) or os.path.isdir(path):
                continue
            chunk = entry[: -len(CHUNK_SUFFIX)]
            cursor = _text(path)
            if chunk in done or not cursor:
                continue  # finished, or no progress saved: Go starts it again too
            chunks.append(ChunkCursor(name, chunk, cursor))
    return dates, chunks


def _has_go_files(directory: str, names: list[str]) -> bool:
    for name in names:
        if name in (START_TIME, WINDOW_TIME, CURSOR, ID):
            return True
        if name.startswith((SESSION_PREFIX, MISSING_PREFIX)) and name != SESSION_PREFIX:
            return True
    return os.path.isdir(os.path.join(directory, CURSOR_V2))


def read_go_state(directory: str) -> GoState | None:
    """The Go plugin's state in ``directory``, or None if it holds none of its files."""
    try:
        names = sorted(
            n for n in os.listdir(directory) if not os.path.isdir(os.path.join(directory, n))
        )
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise StateError(
            f"state directory {directory}: {exc.strerror}; check its permissions"
        ) from exc
    if not _has_go_files(directory, names):
        return None

    def path(name: str) -> str:
        return os.path.join(directory, name)

    start_time = _time_key(path(START_TIME))
    window = _time_key(path(WINDOW_TIME))
    cursor = _text(path(CURSOR)) if CURSOR in names else ""
    last_id = _text(path(ID)) if ID in names else ""
    legacy = None
    if cursor or last_id or window is not None:
        if window is None:
            # Go plugins before windowed search kept only cursor and id, read from the start.
            if start_time is None:
                raise _bad(path(CURSOR), "is a legacy cursor without window_time or start_time")
            window = start_time
        legacy = LegacyCursor(window, cursor, last_id)

    sessions: dict[str, SessionRow] = {}
    for name in names:
        if name.startswith(MISSING_PREFIX) and len(name) > len(MISSING_PREFIX):
            sid = name[len(MISSING_PREFIX) :]
            sessions[sid] = _missing(path(name), sid)
    for name in names:
        if name.startswith(SESSION_PREFIX) and name != SESSION_PREFIX:
            sid = name[len(SESSION_PREFIX) :]
            index = _session_index(path(name))
            marker = sessions.get(sid)
            # A session file next to a marker (Go stopped between writing the marker
            # and removing the file): resume it now, keeping the marker's attempts.
            sessions[sid] = SessionRow(
                sid,
                index + 1 if index > 0 else 0,
                SESSION_PENDING,
                marker.attempts if marker else 0,
                0.0,
                marker.upload_time if marker else "",
            )
    dates, chunks = _cursor_v2(directory)
    return GoState(
        directory=directory,
        start_time=start_time,
        legacy=legacy,
        dates=tuple(dates),
        chunks=tuple(chunks),
        sessions=tuple(sessions[sid] for sid in sorted(sessions)),
    )


def take_over(state: State) -> GoState | None:
    """On the first start, import the Go plugin's state found in the state directory."""
    if not state.is_new():
        return None
    found = read_go_state(state.directory)
    if found is None:
        return None
    state.take_over(
        source=found.directory,
        start_time=found.start_time,
        legacy=found.legacy,
        dates=found.dates,
        chunks=found.chunks,
        sessions=found.sessions,
    )
    log.info(
        "took over the Go plugin's state in %s: %s (its files are left as they were)",
        found.directory,
        found.summary(),
    )
    return found
