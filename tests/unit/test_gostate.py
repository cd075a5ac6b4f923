"""Taking over the Go plugin's state: its exact layout, read only, all or nothing.

The files are written here as the Go plugin writes them (gravitational/teleport):
``integrations/event-handler/state.go`` (diskv, one file per key in the state
directory: ``setTimeKey``, ``setStringValue``, ``SetSessionIndex``,
``SetMissingRecording``) and ``lib/events/export/cursor.go``
(``Cursor.syncDate``: ``cursor_v2/<date>/completed-chunks`` and
``<chunk>.chunk``).
"""

from __future__ import annotations

import datetime
import json
import logging
import os
import struct
from pathlib import Path

import pytest

from teleport_event_handler.gostate import parse_rfc3339, read_go_state, take_over
from teleport_event_handler.state import (
    SESSION_MISSING,
    SESSION_PENDING,
    ChunkCursor,
    LegacyCursor,
    SessionRow,
    State,
    StateError,
)

UTC = datetime.UTC
START = datetime.datetime(2026, 11, 20, tzinfo=UTC)
SID_RUNNING = "0b6f7a1e-6a3c-4c47-9a3f-2f0e0f2f1a01"
SID_FRESH = "5c1d2e3f-0000-4c47-9a3f-2f0e0f2f1a02"
SID_MISSING = "9e8d7c6b-1111-4c47-9a3f-2f0e0f2f1a03"


def go_write(directory: Path, key: str, value: bytes) -> None:
    """diskv with the flat transform: the file ``<dir>/<key>`` holds the value's bytes."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / key).write_bytes(value)


def go_time(t: datetime.datetime) -> bytes:
    """``setTimeKey``: ``t.Truncate(time.Second).Format(time.RFC3339)``."""
    return t.replace(microsecond=0).strftime("%Y-%m-%dT%H:%M:%SZ").encode()


def go_session_index(index: int) -> bytes:
    """``SetSessionIndex``: ``binary.BigEndian.PutUint64`` into 8 bytes."""
    return struct.pack(">Q", index)


def go_missing(index: int, attempt: int, timestamp: str) -> bytes:
    """``SetMissingRecording``: ``json.Marshal(missingRecording{...})``, ``id`` omitted."""
    return json.dumps({"Index": index, "Attempt": attempt, "Timestamp": timestamp}).encode()


def go_cursor_v2(directory: Path, date: str, completed: list[str], cursors: dict[str, str]) -> None:
    """``Cursor.syncDate``: one line per completed chunk, one ``.chunk`` file per cursor."""
    day = directory / "cursor_v2" / date
    day.mkdir(parents=True, exist_ok=True)
    with open(day / "completed-chunks", "a") as handle:
        for chunk in completed:
            handle.write(chunk + "\n")
    for chunk, cursor in cursors.items():
        (day / f"{chunk}.chunk").write_bytes(cursor.encode())


def legacy_layout(directory: Path) -> None:
    go_write(directory, "start_time", go_time(START))
    go_write(directory, "window_time", go_time(START + datetime.timedelta(days=2)))
    go_write(directory, "cursor", b"page-key-17")
    go_write(directory, "id", b"evt-42")
    go_write(directory, f"session{SID_RUNNING}", go_session_index(12))
    go_write(directory, f"session{SID_FRESH}", go_session_index(0))
    go_write(
        directory,
        f"missing_recording{SID_MISSING}",
        go_missing(0, 2, "2026-11-22T10:11:12.123456789+01:00"),
    )


def bulk_layout(directory: Path) -> None:
    go_write(directory, "start_time", go_time(START))
    go_cursor_v2(directory, "2026-11-21", ["c1", "c2"], {})
    go_cursor_v2(directory, "2026-11-22", ["c3"], {"c4": "cur-4-9", "c5": "cur-5-1"})
    go_cursor_v2(directory, "2026-11-23", [], {})  # reached, nothing done yet


def snapshot(directory: Path) -> dict[str, tuple[bytes, int]]:
    return {
        str(p.relative_to(directory)): (p.read_bytes(), p.stat().st_mtime_ns)
        for p in sorted(directory.rglob("*"))
        if p.is_file() and not p.name.startswith("state.sqlite3")
    }


def test_legacy_state_is_taken_over(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    directory = tmp_path / "auth_3025"
    legacy_layout(directory)
    before = snapshot(directory)
    state = State(str(directory))
    with caplog.at_level(logging.INFO, logger="teleport_event_handler.gostate"):
        assert take_over(state) is not None
    assert state.settle_start_time(None, START + datetime.timedelta(days=9)) == START
    assert state.legacy_cursor() == LegacyCursor(
        START + datetime.timedelta(days=2), "page-key-17", "evt-42"
    )
    assert not state.has_bulk_state()
    # Event 12 was acknowledged before Go wrote 12; 0 may mean "nothing sent yet".
    assert state.session(SID_RUNNING) == SessionRow(SID_RUNNING, 13, SESSION_PENDING, 0, 0, "")
    assert state.session(SID_FRESH) == SessionRow(SID_FRESH, 0, SESSION_PENDING, 0, 0, "")
    assert state.session(SID_MISSING) == SessionRow(
        SID_MISSING, 0, SESSION_MISSING, 2, 0, "2026-11-22T09:11:12Z"
    )
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 1 and str(directory) in lines[0]
    assert "legacy cursor" in lines[0] and "2 session recordings to resume" in lines[0]
    assert snapshot(directory) == before  # the Go plugin can be started again
    # Taken over once: a restart uses our state, even if the Go files change.
    go_write(directory, "id", b"evt-99")
    state.close()
    again = State(str(directory))
    assert take_over(again) is None
    assert again.legacy_cursor() == LegacyCursor(
        START + datetime.timedelta(days=2), "page-key-17", "evt-42"
    )


def test_bulk_state_is_taken_over(tmp_path: Path) -> None:
    directory = tmp_path / "auth_3025"
    bulk_layout(directory)
    before = snapshot(directory)
    state = State(str(directory))
    found = take_over(state)
    assert found is not None and "3 days 2026-11-21..2026-11-23" in found.summary()
    assert state.dates() == ["2026-11-21", "2026-11-22", "2026-11-23"]
    assert state.chunks("2026-11-21") == {
        "c1": ChunkCursor("2026-11-21", "c1", "", True),
        "c2": ChunkCursor("2026-11-21", "c2", "", True),
    }
    assert state.chunks("2026-11-22") == {
        "c3": ChunkCursor("2026-11-22", "c3", "", True),
        "c4": ChunkCursor("2026-11-22", "c4", "cur-4-9"),
        "c5": ChunkCursor("2026-11-22", "c5", "cur-5-1"),
    }
    assert state.chunks("2026-11-23") == {}
    assert state.legacy_cursor() is None
    assert snapshot(directory) == before


def test_cursor_v2_edge_cases_read_as_go_reads_them(tmp_path: Path) -> None:
    directory = tmp_path / "auth_3025"
    go_write(directory, "start_time", go_time(START))
    # Completed and still a cursor file: Go stopped between the fsync and the removal.
    go_cursor_v2(directory, "2026-11-21", ["a", "b"], {"b": "stale", "e": "  \n", "f": "k\n"})
    (directory / "cursor_v2" / "not-a-date").mkdir()
    (directory / "cursor_v2" / "2026-13-40").mkdir()
    (directory / "cursor_v2" / "2026-11-21" / "notes.txt").write_text("ignored")
    (directory / "cursor_v2" / "stray-file").write_text("ignored")
    found = read_go_state(str(directory))
    assert found is not None
    assert found.dates == ("2026-11-21",)
    assert set(found.chunks) == {
        ChunkCursor("2026-11-21", "a", "", True),
        ChunkCursor("2026-11-21", "b", "", True),
        ChunkCursor("2026-11-21", "f", "k"),
    }


def test_go_session_files_in_every_form(tmp_path: Path) -> None:
    directory = tmp_path / "auth_3025"
    go_write(directory, "start_time", go_time(START))
    go_write(directory, "session", go_session_index(5))  # the bare prefix: Go skips it
    go_write(directory, "sessionempty", b"")  # empty reads as 0 in GetSessions
    go_write(directory, "sessionboth", go_session_index(7))
    go_write(directory, "missing_recordingboth", go_missing(3, 1, "2026-11-22T10:00:00Z"))
    go_write(directory, "missing_recordingzero", go_missing(0, 1, "0001-01-01T00:00:00Z"))
    found = read_go_state(str(directory))
    assert found is not None
    assert found.sessions == (
        # A marker next to its session file: resumed now, keeping the marker's attempts.
        SessionRow("both", 8, SESSION_PENDING, 1, 0, "2026-11-22T10:00:00Z"),
        SessionRow("empty", 0, SESSION_PENDING, 0, 0, ""),
        SessionRow("zero", 0, SESSION_MISSING, 1, 0, ""),  # Go's zero time: unknown
    )
    assert found.legacy is None and found.dates == ()


def test_a_legacy_cursor_without_window_starts_from_the_start_time(tmp_path: Path) -> None:
    directory = tmp_path / "auth_3025"
    go_write(directory, "start_time", go_time(START))
    go_write(directory, "window_time", b"")  # setTimeKey(nil) writes ""
    go_write(directory, "cursor", b"k1")
    go_write(directory, "id", b"i1\n")  # an id edited by hand (teleport #46352)
    found = read_go_state(str(directory))
    assert found is not None and found.legacy == LegacyCursor(START, "k1", "i1")


def test_a_directory_without_go_files_is_left_alone(tmp_path: Path) -> None:
    directory = tmp_path / "auth_3025"
    state = State(str(directory))
    (directory / "dead-letter.jsonl").write_text("")
    assert take_over(state) is None
    assert state.is_new()


def test_a_changed_start_time_is_refused_after_the_take_over(tmp_path: Path) -> None:
    directory = tmp_path / "auth_3025"
    bulk_layout(directory)
    state = State(str(directory))
    take_over(state)
    with pytest.raises(StateError, match="can not change start time"):
        state.settle_start_time(START + datetime.timedelta(days=1), START)


@pytest.mark.parametrize(
    ("name", "content", "problem"),
    [
        ("start_time", b"yesterday", "does not hold an RFC 3339 time"),
        ("window_time", b"2026-11-20 00:00:00", "does not hold an RFC 3339 time"),
        ("id", b"\xff\xfe", "is not UTF-8 text"),
        (f"session{SID_RUNNING}", b"\x00\x01\x02", "not an 8-byte big-endian session index"),
        (f"missing_recording{SID_MISSING}", b"{not json", "is not JSON"),
        (f"missing_recording{SID_MISSING}", b'{"Index": -1}', "not a non-negative integer"),
        (f"missing_recording{SID_MISSING}", b'{"Timestamp": "soon"}', "bad Timestamp"),
        ("cursor_v2/2026-11-22/c4.chunk", b"\xff", "is not UTF-8 text"),
    ],
)
def test_bad_go_state_names_the_file_and_imports_nothing(
    tmp_path: Path, name: str, content: bytes, problem: str
) -> None:
    directory = tmp_path / "auth_3025"
    legacy_layout(directory)
    bulk_layout(directory)
    (directory / name).write_bytes(content)
    before = snapshot(directory)
    state = State(str(directory))
    with pytest.raises(StateError) as err:
        take_over(state)
    message = str(err.value)
    assert str(directory / name) in message and problem in message
    assert f"move the Go plugin's files out of {directory}" in message
    assert state.is_new() and state.legacy_cursor() is None and state.dates() == []
    assert state.session(SID_RUNNING) is None
    assert snapshot(directory) == before


def test_an_unreadable_go_file_names_the_file(tmp_path: Path) -> None:
    directory = tmp_path / "auth_3025"
    bulk_layout(directory)
    completed = directory / "cursor_v2" / "2026-11-22" / "completed-chunks"
    completed.unlink()
    os.symlink(tmp_path / "gone", completed)  # a file that cannot be opened, even by root
    state = State(str(directory))
    with pytest.raises(StateError, match="cannot be read") as err:
        take_over(state)
    assert str(completed) in str(err.value)
    assert state.is_new()


def test_rfc3339_as_go_parses_it() -> None:
    assert parse_rfc3339("2026-11-20T00:00:00Z") == START
    assert parse_rfc3339("2026-11-20T01:30:00.999999999+01:30") == START
    assert parse_rfc3339("2026-11-19T19:00:00-05:00") == START
    for bad in ("2026-11-20", "2026-11-20T00:00:00", "2026-02-30T00:00:00Z"):
        with pytest.raises(ValueError):
            parse_rfc3339(bad)
