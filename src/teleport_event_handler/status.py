"""``teleport-event-handler status``: where the export stands, read while it runs.

The state database is opened read-only (SQLite's ``mode=ro``): the command
never takes the write lock, so it cannot slow down or block the running
handler. It reads the cursors and session table directly, and the snapshot
the running handler writes every few seconds (monitor.py) for what only the
process knows: the newest event Teleport holds, the lag, a stall, the
identity's expiry and the dead letters.
"""

from __future__ import annotations

import argparse
import datetime
import os
import sqlite3
import sys
import urllib.parse
from collections.abc import Mapping
from typing import Any

import orjson

from teleport_event_handler import config
from teleport_event_handler.durations import format_duration
from teleport_event_handler.monitor import SNAPSHOT_INTERVAL, SNAPSHOT_KEY
from teleport_event_handler.state import (
    LEGACY_CURSOR,
    LEGACY_ID,
    LEGACY_WINDOW,
    START_TIME,
    TAKEN_OVER_FROM,
    WAL_FREE_BYTES,
    state_dir,
)

__all__ = ["add_status_arguments", "collect", "run_status"]

# A snapshot older than this, from a process said to be running, means it is not.
STALE_AFTER = 6 * SNAPSHOT_INTERVAL


class StatusError(Exception):
    """The state cannot be read; the message names the path and the fix."""


def add_status_arguments(parser: argparse.ArgumentParser) -> None:
    config.add_start_arguments(parser)
    parser.add_argument(
        "--json", action="store_true", dest="as_json", help="print one JSON object for scripts"
    )


def _epoch(text: object) -> float | None:
    if not isinstance(text, str):
        return None
    try:
        return datetime.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def _free_bytes(directory: str) -> int | None:
    try:
        fs = os.statvfs(directory)
    except OSError:
        return None
    return fs.f_bavail * fs.f_frsize


def _alive(pid: object) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process: it exists
    return True


def collect(directory: str, now: float | None = None) -> dict[str, Any]:
    """Everything ``status`` reports, from the state in ``directory``."""
    now = time_now() if now is None else now
    path = os.path.join(directory, "state.sqlite3")
    if not os.path.exists(path):
        raise StatusError(
            f"no export state at {path}: the handler has not run with this storage and "
            "Teleport address yet (check storage and teleport.addr in the config file)"
        )
    try:
        db = sqlite3.connect(f"file:{urllib.parse.quote(path)}?mode=ro", uri=True)
    except sqlite3.Error as exc:
        raise StatusError(f"cannot open {path} read-only: {exc}") from exc
    try:
        kv = dict(db.execute("SELECT key, value FROM kv").fetchall())
        dates = [row[0] for row in db.execute("SELECT date FROM dates ORDER BY date")]
        chunk_rows = db.execute(
            "SELECT date, count(*), sum(done) FROM chunks GROUP BY date ORDER BY date"
        ).fetchall()
        sessions = dict(db.execute("SELECT status, count(*) FROM sessions GROUP BY status"))
    except sqlite3.Error as exc:
        raise StatusError(
            f"cannot read {path}: {exc}; run status as a user that can read the state "
            "directory (e.g. with sudo -u <service user>)"
        ) from exc
    finally:
        db.close()
    try:
        snapshot = orjson.loads(kv.get(SNAPSHOT_KEY, "{}"))
    except orjson.JSONDecodeError:
        snapshot = {}
    if not isinstance(snapshot, dict):
        snapshot = {}
    updated = _epoch(snapshot.get("updated"))
    running = bool(snapshot.get("running")) and _alive(snapshot.get("pid"))
    stale = running and updated is not None and now - updated > STALE_AFTER
    # A handler whose state disk is full waits for space (state.State._write)
    # and cannot write its snapshot either: paused, not hung.
    free = _free_bytes(directory)
    disk_full = stale and free is not None and free < WAL_FREE_BYTES
    engine = snapshot.get("engine") or (
        "bulk" if dates else "legacy" if kv.get(LEGACY_WINDOW) else ""
    )
    cursors: dict[str, Any]
    if dates:
        cursors = {
            "days": dates,
            "chunks": {
                date: {"seen": total, "done": int(done or 0)} for date, total, done in chunk_rows
            },
        }
    else:
        cursors = {
            "window_start": kv.get(LEGACY_WINDOW),
            "page_key": kv.get(LEGACY_CURSOR) or "",
            "last_id": kv.get(LEGACY_ID) or "",
        }
    newest = _epoch(snapshot.get("newest_exported"))
    identity_expires = _epoch(snapshot.get("identity_expires"))
    dead_file = snapshot.get("dead_letter_file") or os.path.join(directory, "dead-letter.jsonl")
    return {
        "state": path,
        "running": running and not stale,
        "pid": snapshot.get("pid") if running else None,
        "not_responding": stale and not disk_full,
        "paused_disk_full": disk_full,
        "state_free_bytes": free,
        "snapshot_age_seconds": None if updated is None else max(0.0, now - updated),
        "engine": engine,
        "start_time": kv.get(START_TIME),
        "taken_over_from": kv.get(TAKEN_OVER_FROM),
        "cursors": cursors,
        "last_event_time": snapshot.get("newest_exported"),
        "cursor_age_seconds": None if newest is None else max(0.0, now - newest),
        "teleport_newest_event_time": snapshot.get("newest_in_teleport"),
        "lag_seconds": snapshot.get("lag_seconds"),
        "stuck": bool(snapshot.get("stuck")),
        "stuck_since": snapshot.get("stuck_since"),
        "events_exported": snapshot.get("events_exported", 0),
        "events_pending": snapshot.get("events_pending", 0),
        "fluentd_retries": snapshot.get("fluentd_retries", 0),
        "sessions": {
            status: int(sessions.get(status, 0))
            for status in ("pending", "missing", "failed", "done")
        },
        "identity_expires": snapshot.get("identity_expires"),
        "identity_expires_in_seconds": None if identity_expires is None else identity_expires - now,
        "dead_letters": _count_lines(dead_file),
        "dead_letter_file": dead_file,
    }


def time_now() -> float:
    return datetime.datetime.now(datetime.UTC).timestamp()


def _count_lines(path: str) -> int:
    try:
        with open(path, "rb") as handle:
            return sum(1 for line in handle if line.strip())
    except FileNotFoundError:
        return 0
    except OSError:
        return -1


def _seconds(value: object) -> str:
    if not isinstance(value, int | float):
        return "unknown"
    return format_duration(round(float(value)))


def render(report: Mapping[str, Any]) -> list[str]:
    """The human form of ``collect``'s report."""
    if report["running"]:
        process = (
            f"running (pid {report['pid']}, updated {_seconds(report['snapshot_age_seconds'])} ago)"
        )
    elif report["paused_disk_full"]:
        process = (
            f"PAUSED: the state disk is full ({report['state_free_bytes'] // 1024} KiB free in "
            f"{os.path.dirname(report['state'])}, about {WAL_FREE_BYTES // 2**20} MiB needed); "
            "the handler resumes on its own, losing nothing, once space is freed there"
        )
    elif report["not_responding"]:
        process = (
            f"NOT RESPONDING (no update for {_seconds(report['snapshot_age_seconds'])}; "
            "check the service)"
        )
    else:
        process = "not running"
    lines = [
        f"handler: {process}",
        f"state: {report['state']}",
        f"engine: {report['engine'] or 'not started'}",
    ]
    lines.append(f"start time: {report['start_time'] or 'not settled'}")
    if report["taken_over_from"]:
        lines.append(f"taken over from the Go plugin's state in {report['taken_over_from']}")
    cursors = report["cursors"]
    if "days" in cursors:
        chunks = cursors["chunks"]
        parts = []
        for day in cursors["days"]:
            counts = chunks.get(day, {})
            parts.append(f"{day} ({counts.get('done', 0)}/{counts.get('seen', 0)} chunks done)")
        days = ", ".join(parts)
        lines.append(f"cursors: days {days}")
    else:
        lines.append(
            f"cursor: window from {cursors['window_start'] or 'the start time'}"
            + (f", page {cursors['page_key']}" if cursors["page_key"] else "")
            + (f", after event {cursors['last_id']}" if cursors["last_id"] else "")
        )
    lines.append(
        f"last exported event: {report['last_event_time'] or 'none yet'}"
        + (
            f" ({_seconds(report['cursor_age_seconds'])} ago)"
            if report["cursor_age_seconds"] is not None
            else ""
        )
    )
    lines.append(
        f"Teleport's newest event: {report['teleport_newest_event_time'] or 'not asked yet'}"
    )
    lines.append(f"lag: {_seconds(report['lag_seconds'])}")
    lines.append("stuck: " + (f"YES since {report['stuck_since']}" if report["stuck"] else "no"))
    lines.append(
        f"events: {report['events_exported']} exported by this run, "
        f"{report['events_pending']} waiting for Fluentd, "
        f"{report['fluentd_retries']} retries"
    )
    sessions = report["sessions"]
    lines.append(
        "session recordings: "
        + ", ".join(f"{count} {status}" for status, count in sessions.items())
    )
    if report["identity_expires"]:
        left = report["identity_expires_in_seconds"]
        when = "EXPIRED" if isinstance(left, int | float) and left <= 0 else f"in {_seconds(left)}"
        lines.append(f"identity expires: {report['identity_expires']} ({when})")
    dead = report["dead_letters"]
    lines.append(
        f"dead letters: {dead if dead >= 0 else 'unreadable'} in {report['dead_letter_file']}"
        if dead
        else "dead letters: none"
    )
    return lines


def run_status(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    settings = config.config_from_args(vars(args), environ)
    directory = state_dir(settings.storage, settings.teleport_addr, settings.dry_run)
    try:
        report = collect(directory)
    except StatusError as exc:
        print(f"{config.PROG} status: {exc}", file=sys.stderr)
        return 1
    if args.as_json:
        sys.stdout.write(orjson.dumps(report, option=orjson.OPT_INDENT_2).decode() + "\n")
    else:
        for line in render(report):
            print(line)
    return 0
