"""End to end: the forwarder takes over a Go plugin's state directory (issue #9).

Each test writes the state the Go plugin would have left after exporting part
of the sandbox's corpus, in its exact layout and encodings (the helpers of
``tests/unit/test_gostate.py``, which cite ``integrations/event-handler/state.go``
and ``lib/events/export/cursor.go``), with the cursors the sandbox Teleport
issues. Then the real forwarder runs against the sandbox and the real Fluentd:
only the events after the Go cursors arrive, each once; the Go plugin's
session indexes and missing recordings are resumed; its files are left
byte for byte; and the export then goes on normally with new events.
"""

from __future__ import annotations

import bisect
import collections
import datetime
import json
import os
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from teleport_event_handler.events import struct_to_dict
from teleport_event_handler.protos.teleport.auditlog.v1 import auditlog_pb2
from teleport_event_handler.state import state_dir
from teleport_sandbox.stack import Stack
from teleport_sandbox.teleport.corpus import (
    Corpus,
    all_events,
    decode_key,
    encode_chunk_cursor,
)

# The Go plugin's layout and encodings, as in tests/unit/test_gostate.py:
# integrations/event-handler/state.go (diskv, one flat file per key: setTimeKey,
# SetSessionIndex, SetMissingRecording) and lib/events/export/cursor.go
# (Cursor.syncDate: cursor_v2/<date>/completed-chunks and <chunk>.chunk).


def go_write(directory: Path, key: str, value: bytes) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / key).write_bytes(value)


def go_time(t: datetime.datetime) -> bytes:
    return t.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ").encode()


def go_session_index(index: int) -> bytes:
    return struct.pack(">Q", index)


def go_missing(index: int, attempt: int, timestamp: str) -> bytes:
    return json.dumps({"Index": index, "Attempt": attempt, "Timestamp": timestamp}).encode()


def go_cursor_v2(directory: Path, date: str, completed: list[str], cursors: dict[str, str]) -> None:
    day = directory / "cursor_v2" / date
    day.mkdir(parents=True, exist_ok=True)
    (day / "completed-chunks").write_text("".join(f"{chunk}\n" for chunk in completed))
    for chunk, cursor in cursors.items():
        (day / f"{chunk}.chunk").write_text(cursor)


RUN_TIMEOUT = 180
SKIP_SESSION_TYPES = ["desktop.recording"]
NS = 1_000_000_000
# The Go plugin's default batch (integrations/event-handler/cli.go): its page size.
GO_BATCH = 20
# The session whose recording Go had sent up to this index, and the one it had not found.
SENT_UP_TO = 3


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> str:
    root = str(tmp_path_factory.mktemp("takeover") / "stack")
    Stack(root=root, days=3, events_per_day=300).init()
    return root


def _stack(template: str, tmp_path: Path, mode: str) -> Iterator[Stack]:
    stack = Stack.copy_of(template, str(tmp_path / "stack"), mode=mode)
    stack.start_teleport()
    stack.start_fluentd()
    try:
        yield stack
    finally:
        stack.stop()
        log = Path(stack.root) / "handler.log"
        if log.exists():
            print(f"--- {log} (tail)\n{log.read_text(errors='replace')[-4000:]}")


@pytest.fixture(params=["bulk", "legacy"])
def stack(request: pytest.FixtureRequest, template: str, tmp_path: Path) -> Iterator[Stack]:
    yield from _stack(template, tmp_path, request.param)


def _snapshot(paths: list[Path]) -> dict[str, tuple[bytes, int]]:
    return {str(p): (p.read_bytes(), p.stat().st_mtime_ns) for p in paths}


def _go_files(directory: Path) -> list[Path]:
    ours = ("state.sqlite3", "dead-letter.jsonl")
    return [p for p in sorted(directory.rglob("*")) if p.is_file() and not p.name.startswith(ours)]


class Corpus3:
    """The sandbox's events by position (time order), with what Go had sent."""

    def __init__(self, stack: Stack) -> None:
        self.corpus = Corpus(stack.teleport_dir)
        self.events = list(all_events(stack.teleport_dir))
        self.uids = [str(e["uid"]) for e in self.events]
        self.start = stack.corpus_start()
        self.days = [(self.start + datetime.timedelta(days=n)).date().isoformat() for n in range(3)]

    def bulk_state(self, directory: Path) -> set[int]:
        """Day 0 done, day 1 half done with a chunk in progress; the positions sent."""
        sent: set[int] = set()
        for chunk_id in self.corpus.chunk_ids(self.days[0]):
            sent |= set(self.corpus.chunks[chunk_id].positions)
        go_cursor_v2(directory, self.days[0], self.corpus.chunk_ids(self.days[0]), {})
        chunk_ids = self.corpus.chunk_ids(self.days[1])
        assert len(chunk_ids) >= 3, chunk_ids
        # The largest chunk is the one in progress (chunk sizes depend on the
        # corpus's start time, so a fixed index may hold a single event).
        running = max(chunk_ids, key=lambda c: len(self.corpus.chunks[c].positions))
        others = [c for c in chunk_ids if c != running]
        done = others[: len(others) // 2]
        for chunk_id in done:
            sent |= set(self.corpus.chunks[chunk_id].positions)
        members = self.corpus.chunks[running].positions
        assert len(members) > 4
        # ExportEventUnstructured's cursor after the 4th event: resume at member 4.
        sent |= set(members[:4])
        go_cursor_v2(directory, self.days[1], done, {running: encode_chunk_cursor(running, 4)})
        return sent

    def legacy_state(self, directory: Path) -> set[int]:
        """Window 1 done, window 2 read to the 5th event of its second page."""
        window = self.start + datetime.timedelta(days=1)
        lo_ns = int(window.timestamp()) * NS
        first = self.corpus.search(lo_ns, lo_ns + 86400 * NS, limit=GO_BATCH)
        assert first.last_key, "window 2 must hold more than one page"
        second = bisect.bisect_right(self.corpus.times, decode_key(first.last_key))
        last = second + 4
        # LegacyEventsWatcher: the page's cursor, the last exported id, the window start.
        go_write(directory, "window_time", go_time(window))
        go_write(directory, "cursor", first.last_key.encode())
        go_write(directory, "id", self.uids[last].encode())
        return set(range(last + 1))

    def uploads(self, positions: set[int]) -> list[str]:
        """Sessions whose ``session.upload`` is among ``positions``."""
        return [
            str(self.events[p]["sid"])
            for p in sorted(positions)
            if self.events[p].get("event") == "session.upload"
        ]


def _key(record: dict[str, Any]) -> bytes:
    return orjson.dumps(record, option=orjson.OPT_SORT_KEYS)


def _recording(corpus: Corpus, sid: str, from_index: int = 0) -> collections.Counter[bytes]:
    want: collections.Counter[bytes] = collections.Counter()
    for raw in corpus.recording(sid) or []:
        event = auditlog_pb2.EventUnstructured.FromString(raw)
        if event.type not in SKIP_SESSION_TYPES and event.index >= from_index:
            want[_key(struct_to_dict(event.unstructured))] += 1
    return want


def _run_to_end(stack: Stack, toml: str) -> None:
    proc = stack.start_handler(toml, "--exit-on-last-event")
    assert proc.wait(RUN_TIMEOUT) == 0, f"handler failed, see {stack.root}/handler.log"


def test_a_go_state_directory_is_taken_over_without_resending(stack: Stack) -> None:
    data = Corpus3(stack)
    directory = Path(state_dir(stack.storage, stack.teleport_addr))
    go_write(directory, "start_time", go_time(data.start))
    sent = data.bulk_state(directory) if stack.mode == "bulk" else data.legacy_state(directory)
    # Go had scheduled two sessions read before its cursor: one half sent, one not found.
    resumed, missing = data.uploads(sent)[:2]
    go_write(directory, f"session{resumed}", go_session_index(SENT_UP_TO))
    go_write(directory, f"missing_recording{missing}", go_missing(0, 1, "0001-01-01T00:00:00Z"))
    go_files = _go_files(directory)
    before = _snapshot(go_files)

    toml = stack.handler_toml(start_time=data.start, skip_session_types=SKIP_SESSION_TYPES)
    _run_to_end(stack, toml)

    assert f"took over the Go plugin's state in {directory}" in stack.handler_log()
    counts = stack.received_by_uid("audit")
    expected = {uid for p, uid in enumerate(data.uids) if p not in sent}
    assert not {data.uids[p] for p in sent} & set(counts), "events the Go plugin sent came again"
    assert set(counts) == expected
    assert all(n == 1 for n in counts.values()), "an event arrived twice"
    # Sessions: those scheduled by the events read now, in full; Go's two resumed.
    want = collections.Counter[bytes]()
    for sid in data.uploads(set(range(len(data.uids))) - sent):
        want += _recording(data.corpus, sid)
    want += _recording(data.corpus, resumed, SENT_UP_TO + 1)
    want += _recording(data.corpus, missing)
    got = collections.Counter(_key(r) for r in stack.received("session"))
    assert got == want
    assert _snapshot(go_files) == before, "the Go plugin's files changed"

    # From now on the export is ours and goes on: new events arrive, once.
    out = json.loads(stack.run_teleport_cli("append", "--count", "25"))
    appended = {str(uid) for uid in out["uids"]}
    _run_to_end(stack, toml)
    counts = stack.received_by_uid("audit")
    assert set(counts) == expected | appended
    assert all(n == 1 for n in counts.values()), "an event arrived twice"
    assert stack.handler_log().count("took over the Go plugin's state") == 1
    assert _snapshot(go_files) == before


def test_a_bad_go_state_file_stops_the_start_and_names_it(stack: Stack) -> None:
    directory = Path(state_dir(stack.storage, stack.teleport_addr))
    go_write(directory, "start_time", go_time(stack.corpus_start()))
    go_write(directory, "sessionabc", b"\x00\x01")  # not 8 bytes
    toml = stack.handler_toml(start_time=stack.corpus_start())
    proc = stack.start_handler(toml, "--exit-on-last-event")
    assert proc.wait(RUN_TIMEOUT) == 1
    log = stack.handler_log()
    assert f"the Go plugin's state file {directory / 'sessionabc'}" in log
    assert "fix or remove that file" in log
    assert not stack.received("audit")
    # Nothing was imported: once the file is fixed, the take-over happens.
    os.unlink(directory / "sessionabc")
    _run_to_end(stack, toml)
    assert f"took over the Go plugin's state in {directory}" in stack.handler_log()
    assert set(stack.received_by_uid("audit")) == stack.teleport_uids()
