"""The generated stubs are current, and the wire contract matches Teleport's."""

from __future__ import annotations

import filecmp
import os
import subprocess
import sys
from pathlib import Path

from google.protobuf import descriptor_pb2

from teleport_event_handler.protos.teleport.auditlog.v1 import auditlog_pb2
from teleport_event_handler.protos.teleport.legacy.client.proto import authservice_pb2
from teleport_event_handler.protos.teleport.legacy.types import types_pb2

ROOT = Path(__file__).resolve().parents[2]
PROTOS = ROOT / "src" / "teleport_event_handler" / "protos"


def test_generated_stubs_are_current(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHON": sys.executable}
    subprocess.run(
        ["bash", str(ROOT / "scripts" / "gen-protos"), str(tmp_path)], check=True, env=env
    )
    generated = sorted(tmp_path.rglob("*_pb2*.py*"))
    assert generated, "gen-protos wrote nothing"
    stale = []
    for fresh in generated:
        committed = ROOT / "src" / fresh.relative_to(tmp_path)
        if not committed.exists() or not filecmp.cmp(fresh, committed, shallow=False):
            stale.append(str(committed.relative_to(ROOT)))
    committed_all = {str(p.relative_to(ROOT / "src")) for p in PROTOS.rglob("*_pb2*.py*")}
    fresh_all = {str(p.relative_to(tmp_path)) for p in generated}
    stale += sorted(committed_all - fresh_all)
    assert not stale, f"stale generated code, run scripts/gen-protos: {stale}"


def _fields(message: type) -> dict[str, int]:
    return {f.name: f.number for f in message.DESCRIPTOR.fields}  # type: ignore[attr-defined]


def test_auditlog_service_matches_teleport() -> None:
    service = auditlog_pb2.DESCRIPTOR.services_by_name["AuditLogService"]
    assert service.full_name == "teleport.auditlog.v1.AuditLogService"
    streaming = {m.name: (m.client_streaming, m.server_streaming) for m in service.methods}
    assert streaming == {
        "StreamUnstructuredSessionEvents": (False, True),
        "GetUnstructuredEvents": (False, False),
        "ExportUnstructuredEvents": (False, True),
        "GetEventExportChunks": (False, True),
    }
    assert _fields(auditlog_pb2.GetUnstructuredEventsRequest) == {
        "namespace": 1,
        "start_date": 2,
        "end_date": 3,
        "event_types": 4,
        "limit": 5,
        "start_key": 6,
        "order": 7,
    }
    assert _fields(auditlog_pb2.EventUnstructured) == {
        "type": 1,
        "id": 2,
        "time": 3,
        "index": 4,
        "unstructured": 5,
    }
    assert _fields(auditlog_pb2.EventsUnstructured) == {"items": 1, "last_key": 2}
    assert _fields(auditlog_pb2.ExportUnstructuredEventsRequest) == {
        "date": 1,
        "chunk": 2,
        "cursor": 3,
    }
    assert _fields(auditlog_pb2.ExportEventUnstructured) == {"event": 1, "cursor": 2}
    assert _fields(auditlog_pb2.GetEventExportChunksRequest) == {"date": 1}
    assert _fields(auditlog_pb2.EventExportChunk) == {"chunk": 1}
    assert _fields(auditlog_pb2.StreamUnstructuredSessionEventsRequest) == {
        "session_id": 1,
        "start_index": 2,
        "format": 4,
    }
    assert auditlog_pb2.ORDER_DESCENDING_UNSPECIFIED == 0
    assert auditlog_pb2.ORDER_ASCENDING == 1


def test_auth_service_and_lock_match_teleport() -> None:
    service = authservice_pb2.DESCRIPTOR.services_by_name["AuthService"]
    assert service.full_name == "proto.AuthService"
    methods = {m.name: (m.input_type.full_name, m.output_type.full_name) for m in service.methods}
    assert methods["UpsertLock"] == ("types.LockV2", "google.protobuf.Empty")
    assert methods["Ping"] == ("proto.PingRequest", "proto.PingResponse")
    assert _fields(types_pb2.LockV2) == {
        "Kind": 1,
        "SubKind": 2,
        "Version": 3,
        "Metadata": 4,
        "Spec": 5,
    }
    assert _fields(types_pb2.LockSpecV2) == {
        "Target": 1,
        "Message": 2,
        "Expires": 3,
        "CreatedAt": 4,
        "CreatedBy": 5,
    }
    assert _fields(types_pb2.LockTarget)["User"] == 1
    assert _fields(types_pb2.LockTarget)["Login"] == 3
    assert _fields(types_pb2.Metadata)["Name"] == 1
    assert _fields(types_pb2.Metadata)["Expires"] == 6


def test_metadata_field_7_is_reserved_as_in_teleport() -> None:
    """Teleport's api/proto/teleport/legacy/types/types.proto (message Metadata)
    reserves field 7, the old ``ID``: we neither define nor send it."""
    assert 7 not in _fields(types_pb2.Metadata).values()
    assert "ID" not in _fields(types_pb2.Metadata)
    message = descriptor_pb2.DescriptorProto()
    types_pb2.Metadata.DESCRIPTOR.CopyToProto(message)
    assert any(r.start <= 7 < r.end for r in message.reserved_range)
    assert _fields(types_pb2.Metadata)["Revision"] == 8


def test_generated_code_is_not_hand_edited() -> None:
    for path in PROTOS.rglob("*_pb2.py"):
        assert "DO NOT EDIT" in path.read_text(), path
    assert os.access(ROOT / "scripts" / "gen-protos", os.X_OK)
