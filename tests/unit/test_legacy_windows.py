"""LegacyEngine on window boundaries, against a stand-in with Teleport's inclusive bounds.

Teleport's backends select ``start <= time <= end`` (lib/events/dynamoevents
Log.searchEventsRaw, ``CreatedAt BETWEEN :start and :end``), so the engine must
forward each event from exactly one window: the one whose ``[start, end)``
holds its time. An event without a time must never be dropped.
"""

from __future__ import annotations

import datetime
import json
from dataclasses import dataclass, field
from typing import Any

import pytest
from google.protobuf import struct_pb2

from teleport_event_handler.backoff import Shutdown
from teleport_event_handler.events import TypeFilter
from teleport_event_handler.protos.teleport.auditlog.v1 import auditlog_pb2
from teleport_event_handler.source import LegacyEngine
from teleport_event_handler.state import LegacyCursor

UTC = datetime.UTC
HOUR = datetime.timedelta(hours=1)
START = datetime.datetime.now(UTC).replace(microsecond=0) - 3 * HOUR


def _event(uid: str, when: datetime.datetime | None) -> auditlog_pb2.EventUnstructured:
    payload = struct_pb2.Struct()
    payload.update({"uid": uid, "event": "user.login"})
    event = auditlog_pb2.EventUnstructured(type="user.login", id=uid, unstructured=payload)
    if when is not None:
        event.time.FromDatetime(when)
    return event


@dataclass
class InclusiveTeleport:
    """``GetUnstructuredEvents`` with both bounds inclusive, one page per window."""

    events: list[tuple[str, datetime.datetime | None]]
    whole_seconds: bool = False  # DynamoDB: CreatedAt and both bounds in Unix seconds
    windows: list[tuple[datetime.datetime, datetime.datetime]] = field(default_factory=list)

    def _matches(
        self, when: datetime.datetime, start: datetime.datetime, end: datetime.datetime
    ) -> bool:
        if self.whole_seconds:
            return int(start.timestamp()) <= int(when.timestamp()) <= int(end.timestamp())
        return start <= when <= end

    def get_events(
        self,
        start: datetime.datetime,
        end: datetime.datetime,
        event_types: tuple[str, ...],
        limit: int,
        start_key: str,
    ) -> auditlog_pb2.EventsUnstructured:
        self.windows.append((start, end))
        first = len(self.windows) == 1
        items = [
            _event(uid, when)
            for uid, when in self.events
            if (when is None and first) or (when is not None and self._matches(when, start, end))
        ]
        return auditlog_pb2.EventsUnstructured(items=items)


@dataclass
class Recorder:
    sent: list[str] = field(default_factory=list)
    updates: list[LegacyCursor] = field(default_factory=list)

    def submit(self, body: bytes | None, update: Any) -> None:
        if body is not None:
            self.sent.append(json.loads(body)["uid"])
        self.updates.append(update)

    def flush(self) -> None:
        pass


class NoState:
    def legacy_cursor(self) -> None:
        return None


def _run(teleport: InclusiveTeleport) -> Recorder:
    recorder = Recorder()
    engine = LegacyEngine(
        client=teleport,  # type: ignore[arg-type]
        state=NoState(),  # type: ignore[arg-type]
        pipeline=recorder,  # type: ignore[arg-type]
        shutdown=Shutdown(),
        start_time=START,
        type_filter=TypeFilter((), ()),
        poll_interval=1.0,
        exit_on_last_event=True,
        window_size=HOUR.total_seconds(),
    )
    engine.run()
    return recorder


@pytest.mark.parametrize("whole_seconds", [False, True], ids=["exact", "dynamodb-seconds"])
def test_each_event_is_forwarded_by_the_window_that_holds_its_time(whole_seconds: bool) -> None:
    tiny = datetime.timedelta(microseconds=1)
    teleport = InclusiveTeleport(
        [
            ("before-start", START - tiny),
            ("on-start", START),
            ("inside", START + HOUR / 2),
            ("just-before-boundary", START + HOUR - tiny),
            ("on-boundary", START + HOUR),
            ("just-after-boundary", START + HOUR + tiny),
            ("in-boundary-second", START + HOUR + datetime.timedelta(milliseconds=500)),
            ("on-second-boundary", START + 2 * HOUR),
        ],
        whole_seconds=whole_seconds,
    )
    recorder = _run(teleport)
    assert len(teleport.windows) >= 3  # the boundaries were crossed
    assert sorted(recorder.sent) == sorted(
        [
            "on-start",
            "inside",
            "just-before-boundary",
            "on-boundary",
            "just-after-boundary",
            "in-boundary-second",
            "on-second-boundary",
        ]
    )
    # The first window passed over the boundary event, but its cursor moved past it,
    # so a restart in that window does not read it again.
    assert LegacyCursor(START, "", "on-boundary") in recorder.updates


def test_an_event_without_a_time_is_never_dropped() -> None:
    teleport = InclusiveTeleport([("no-time", None), ("on-start", START)])
    assert sorted(_run(teleport).sent) == ["no-time", "on-start"]
