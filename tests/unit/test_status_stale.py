"""``status`` on a handler whose snapshot is old: hung, or paused by a full state disk."""

from __future__ import annotations

import datetime
import os
from pathlib import Path

import orjson

from teleport_event_handler import status
from teleport_event_handler.monitor import SNAPSHOT_KEY
from teleport_event_handler.state import State


def _state_with_snapshot(directory: Path) -> float:
    updated = datetime.datetime.now(datetime.UTC)
    snapshot = {"pid": os.getpid(), "running": True, "updated": updated.isoformat()}
    state = State(str(directory))
    try:
        state.put(SNAPSHOT_KEY, orjson.dumps(snapshot).decode())
    finally:
        state.close()
    return updated.timestamp()


def test_an_old_snapshot_with_room_on_the_disk_is_not_responding(tmp_path: Path) -> None:
    updated = _state_with_snapshot(tmp_path)
    fresh = status.collect(str(tmp_path), updated + 1)
    assert fresh["running"] and not fresh["not_responding"]
    report = status.collect(str(tmp_path), updated + status.STALE_AFTER + 1)
    assert report["not_responding"] and not report["paused_disk_full"] and not report["running"]
    assert status.render(report)[0].startswith("handler: NOT RESPONDING")
