"""Session scheduling: which audit events schedule which session, and the URL."""

from __future__ import annotations

import datetime

from google.protobuf import struct_pb2

from teleport_event_handler.protos.teleport.auditlog.v1 import auditlog_pb2
from teleport_event_handler.sessions import scheduled_by, session_url
from teleport_event_handler.state import SessionScheduled


def _event(event_type: str, fields: dict[str, object]) -> auditlog_pb2.EventUnstructured:
    payload = struct_pb2.Struct()
    payload.update(fields)
    message = auditlog_pb2.EventUnstructured(type=event_type, id="e1", unstructured=payload)
    message.time.FromDatetime(datetime.datetime(2026, 1, 2, 3, 4, 5, tzinfo=datetime.UTC))
    return message


def test_a_session_upload_schedules_its_session_with_the_upload_time() -> None:
    event = _event("session.upload", {"sid": "abc", "event": "session.upload"})
    assert scheduled_by(event, "session.upload") == SessionScheduled("abc", "2026-01-02T03:04:05Z")


def test_other_events_and_uploads_without_a_session_id_schedule_nothing() -> None:
    assert scheduled_by(_event("session.end", {"sid": "abc"}), "session.end") is None
    assert scheduled_by(_event("session.upload", {}), "session.upload") is None


def test_the_url_is_the_go_plugins() -> None:
    # session_events_job.go consumeSession: FluentdSessionURL + "." + s.ID + ".log"
    assert session_url("https://f:8888/session", "abc") == "https://f:8888/session.abc.log"


def test_a_missing_recording_uploaded_over_48_hours_ago_is_given_up_at_once() -> None:
    from teleport_event_handler.sessions import MISSING_CUTOFF, _uploaded_long_ago

    now = datetime.datetime(2026, 1, 3, tzinfo=datetime.UTC)
    assert datetime.timedelta(hours=48) == MISSING_CUTOFF  # processSession's eventTimeCutOff
    assert _uploaded_long_ago("2025-12-31T23:59:59Z", now)
    assert not _uploaded_long_ago("2026-01-01T00:00:01Z", now)
    assert not _uploaded_long_ago("", now)  # unknown: the attempts decide
