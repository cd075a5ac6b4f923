"""Durable state: layout, start-time rule, atomic commits, reopen after a crash."""

from __future__ import annotations

import datetime
import multiprocessing
import os
from pathlib import Path

import pytest

from teleport_event_handler.state import (
    ChunkCursor,
    LegacyCursor,
    State,
    StateError,
    state_dir,
)

UTC = datetime.UTC


def test_state_dir_follows_the_go_layout(tmp_path: Path) -> None:
    assert state_dir("/s", "teleport.example.com:3025") == "/s/teleport.example.com_3025"
    assert state_dir("/s", "auth") == "/s/auth_3025"
    dry = state_dir("/s", "a:1", dry_run=True)
    assert dry.startswith("/s/a_1/dry_run/") and len(os.path.basename(dry)) == 32


def test_start_time_is_stored_once_and_cannot_change(tmp_path: Path) -> None:
    state = State(str(tmp_path / "st"))
    now = datetime.datetime(2026, 11, 27, 10, 0, 0, 123456, tzinfo=UTC)
    first = state.settle_start_time(None, now)
    assert first == now.replace(microsecond=0)
    assert state.settle_start_time(None, now + datetime.timedelta(days=1)) == first
    assert state.settle_start_time(first, now) == first
    with pytest.raises(StateError, match="can not change start time") as err:
        state.settle_start_time(first + datetime.timedelta(hours=1), now)
    assert str(tmp_path / "st") in str(err.value)


def test_commits_are_all_or_nothing_and_survive_reopen(tmp_path: Path) -> None:
    state = State(str(tmp_path / "st"))
    window = datetime.datetime(2026, 11, 25, tzinfo=UTC)
    state.add_date("2026-11-25")
    state.apply([ChunkCursor("2026-11-25", "c1", "k5"), LegacyCursor(window, "key", "id9")])

    class Boom(Exception):
        pass

    def failing():  # type: ignore[no-untyped-def]
        yield ChunkCursor("2026-11-25", "c1", "k9")
        raise Boom

    with pytest.raises(Boom):
        state.apply(failing())
    state.close()
    reopened = State(str(tmp_path / "st"))
    assert reopened.chunks("2026-11-25") == {"c1": ChunkCursor("2026-11-25", "c1", "k5")}
    assert reopened.legacy_cursor() == LegacyCursor(window, "key", "id9")
    assert reopened.dates() == ["2026-11-25"] and reopened.has_bulk_state()


def _commit_then_die(path: str) -> None:
    state = State(path)
    state.apply([ChunkCursor("2026-11-26", "c", "after-ack", done=True)])
    os._exit(0)  # no close, like kill -9 right after the commit


def test_committed_progress_survives_an_abrupt_exit(tmp_path: Path) -> None:
    path = str(tmp_path / "st")
    proc = multiprocessing.get_context("fork").Process(target=_commit_then_die, args=(path,))
    proc.start()
    proc.join(30)
    assert State(path).chunks("2026-11-26")["c"].done


def test_unwritable_storage_names_the_fix(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(StateError, match="--storage"):
        State(str(blocker / "sub"))


def test_sessions_are_scheduled_once_and_resume_at_their_committed_index(tmp_path: Path) -> None:
    from teleport_event_handler.state import SessionCursor, SessionScheduled

    state = State(str(tmp_path))
    state.apply([SessionScheduled("s1", "2026-01-02T03:04:05Z"), SessionScheduled("s2")])
    state.apply([SessionCursor("s1", 7)])
    # A session.upload read again (a re-sent page) keeps the session's progress.
    state.apply([SessionScheduled("s1", "2026-01-02T03:04:05Z")])
    rows = {row.sid: row for row in state.sessions_to_export(now=0.0, limit=10)}
    assert rows["s1"].next_index == 7 and rows["s1"].status == "pending"
    assert rows["s2"].next_index == 0
    state.apply([SessionCursor("s1", 9, done=True)])
    state.apply([SessionScheduled("s1")])
    assert [row.sid for row in state.sessions_to_export(now=0.0, limit=10)] == ["s2"]
    # A missing recording waits for its retry time.
    state.set_session_status("s2", "missing", attempts=1, retry_at=100.0)
    assert state.sessions_to_export(now=99.0, limit=10) == []
    assert [row.attempts for row in state.sessions_to_export(now=100.0, limit=10)] == [1]
    state.close()
    reopened = State(str(tmp_path))
    assert reopened.session("s1") is not None and reopened.session("s1").status == "done"  # type: ignore[union-attr]
    reopened.close()


def test_exported_sessions_are_forgotten_once_their_uploads_lie_behind(tmp_path: Path) -> None:
    from teleport_event_handler.state import SessionCursor, SessionScheduled

    state = State(str(tmp_path))
    sids = ("old-done", "old-failed", "old-pending", "old-missing", "no-time", "new-done", "late")
    state.apply(
        [
            SessionScheduled("old-done", "2026-01-01T23:59:59Z"),
            SessionScheduled("old-failed", "2026-01-01T10:00:00Z"),
            SessionScheduled("old-pending", "2026-01-01T10:00:00Z"),
            SessionScheduled("old-missing", "2026-01-01T10:00:00Z"),
            SessionScheduled("no-time"),
            SessionScheduled("new-done", "2026-01-02T00:00:00Z"),
            SessionScheduled("late", "2026-01-01T10:00:00Z"),
        ]
    )
    state.apply([SessionCursor(sid, 3, done=True) for sid in ("old-done", "new-done", "no-time")])
    state.set_session_status("old-failed", "failed", attempts=3, retry_at=0.0)
    state.set_session_status("old-missing", "missing", attempts=1, retry_at=0.0)
    state.move_session_horizon(datetime.datetime(2026, 1, 2, tzinfo=UTC))
    # Work still to do is never dropped, nor a failure (a record of a loss), nor a
    # session whose upload time is unknown.
    kept = {sid for sid in sids if state.session(sid)}
    assert kept == {"old-failed", "old-pending", "old-missing", "no-time", "new-done", "late"}
    # A session behind the horizon that finishes later goes as it finishes.
    state.apply([SessionCursor("late", 5, done=True), SessionCursor("new-done", 4, done=True)])
    assert state.session("late") is None and state.session("new-done") is not None
    state.close()
