"""The JSON bodies match what Teleport's protojson produces for the payload."""

from __future__ import annotations

import json

import orjson
import pytest
from google.protobuf import json_format, struct_pb2

from teleport_event_handler.events import Event, TypeFilter, event_type_of, struct_to_json
from teleport_event_handler.protos.teleport.auditlog.v1 import auditlog_pb2

PAYLOADS = [
    {"event": "user.login", "code": "T1000W", "success": False, "ei": 0, "user": "bob"},
    {"event": "exec", "nested": {"a": [1, 2.5, "x", None, True, {"b": []}]}, "empty": {}},
    {"big": 2.0**60, "neg": -3, "frac": 0.1, "tiny": 1e-9, "unicode": "ü✓\u2028"},
]


@pytest.mark.parametrize("payload", PAYLOADS)
def test_struct_to_json_matches_protojson(payload: dict[str, object]) -> None:
    struct = struct_pb2.Struct()
    struct.update(payload)
    ours = orjson.loads(struct_to_json(struct))
    reference = json.loads(json_format.MessageToJson(struct))
    assert ours == reference
    # Integral doubles print without a fraction, as Go's protojson writes them.
    if "ei" in payload:
        assert b'"ei":0' in struct_to_json(struct)


def test_event_from_proto_and_type_fallback() -> None:
    struct = struct_pb2.Struct()
    struct.update({"event": "session.start", "uid": "u1"})
    message = auditlog_pb2.EventUnstructured(id="u1", unstructured=struct)
    assert event_type_of(message) == "session.start"
    message.type = "session.end"
    assert event_type_of(message) == "session.end"
    event = Event.from_proto(message)
    assert event.type == "session.end" and orjson.loads(event.body)["uid"] == "u1"


def test_type_filter() -> None:
    allow = TypeFilter(("a", "b"), ("b",))
    assert allow.wants("a") and not allow.wants("b") and not allow.wants("c")
    everything = TypeFilter((), ("print",))
    assert everything.wants("x") and not everything.wants("print")


def test_bodies_hold_no_more_memory_than_their_bytes() -> None:
    """Events wait in queues: each must cost about its size, not a serialiser's buffer."""
    import tracemalloc

    struct = struct_pb2.Struct()
    struct.update({"event": "exec", "command": "x" * 500})
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        bodies = [struct_to_json(struct) for _ in range(2000)]
        per_body = (tracemalloc.get_traced_memory()[0] - before) / len(bodies)
    finally:
        tracemalloc.stop()
    assert per_body < 2 * len(bodies[0]), per_body
