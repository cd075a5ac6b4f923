"""End to end against a sandbox that answers as Teleport's server does (issue #6).

Each test names the Teleport source whose behaviour it depends on. The sandbox
models the server (``teleport_sandbox.teleport.server``), and these tests check
that the forwarder, run as a real process, delivers every event exactly once
where a real cluster would otherwise make it lose or repeat some.
"""

from __future__ import annotations

import collections
import datetime
import json
import math
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from teleport_event_handler.state import ChunkCursor, State, state_dir
from teleport_sandbox.stack import Stack
from teleport_sandbox.teleport.corpus import Corpus, format_time

RUN_TIMEOUT = 180


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> str:
    root = str(tmp_path_factory.mktemp("semantics") / "stack")
    Stack(root=root, days=1, events_per_day=300).init()
    return root


def _stack(template: str, tmp_path: Path, mode: str, *teleport_args: str) -> Iterator[Stack]:
    stack = Stack.copy_of(template, str(tmp_path / "stack"), mode=mode)
    stack.start_teleport(extra=list(teleport_args))
    stack.start_fluentd()
    try:
        yield stack
    finally:
        stack.stop()
        for name in ("handler.log", "teleport.log"):
            path = Path(stack.root) / name
            if path.exists():
                print(f"--- {path} (tail)\n{path.read_text(errors='replace')[-3000:]}")


@pytest.fixture
def legacy(template: str, tmp_path: Path) -> Iterator[Stack]:
    yield from _stack(template, tmp_path, "legacy")


@pytest.fixture
def bulk(template: str, tmp_path: Path) -> Iterator[Stack]:
    yield from _stack(template, tmp_path, "bulk")


def _counts(stack: Stack) -> collections.Counter[str]:
    return collections.Counter(str(r["uid"]) for r in stack.received("audit"))


def _append(stack: Stack, count: int, at: int | None = None) -> list[str]:
    args = ["--count", str(count)]
    if at is not None:
        args += ["--at", format_time(at)]
    out: dict[str, Any] = json.loads(stack.run_teleport_cli("append", *args))
    return [str(uid) for uid in out["uids"]]


def _assert_exactly_once(stack: Stack, expected: set[str]) -> None:
    counts = _counts(stack)
    missing = expected - set(counts)
    repeated = {uid: n for uid, n in counts.items() if n > 1}
    assert not missing, f"{len(missing)} of {len(expected)} events never arrived"
    assert not repeated, f"{len(repeated)} events arrived more than once"
    assert set(counts) == expected


@pytest.mark.parametrize("batch", [50, 500])
def test_live_events_in_the_current_window_arrive_exactly_once(legacy: Stack, batch: int) -> None:
    """Teleport pages oldest first only for order 0 (lib/auth/grpcserver.go casts the
    request's order to types.EventOrder; api/client/client.go
    Client.SearchUnstructuredEvents). Asked newest first, a caught-up forwarder
    resumes from a key that only reaches older events (small pages) or skips
    the new ones through the last id (large pages): nothing appended later
    would ever be exported."""
    toml = legacy.handler_toml(start_time=legacy.corpus_start(), batch=batch)
    proc = legacy.start_handler(toml)
    try:
        corpus = legacy.teleport_uids()
        legacy.wait_until(proc, lambda: set(_counts(legacy)) >= corpus, "the corpus", 60)
        appended: set[str] = set()
        for _ in range(3):
            appended |= set(_append(legacy, 40))
            time.sleep(1.0)
        expected = corpus | appended
        legacy.wait_until(proc, lambda: set(_counts(legacy)) >= expected, "the live events", 60)
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
    _assert_exactly_once(legacy, legacy.teleport_uids())


def test_a_caught_up_bulk_export_picks_up_new_chunks_within_seconds(bulk: Stack) -> None:
    """Teleport's exporter waits 16 s between polls once caught up; the bulk engine
    polls every 0.5 s for a while after new chunks, so live events follow within
    about a second (the live-tail p99 target is 2 s), and backs off to 16 s when idle."""
    toml = bulk.handler_toml(start_time=bulk.corpus_start())
    proc = bulk.start_handler(toml)
    try:
        corpus = bulk.teleport_uids()
        bulk.wait_until(proc, lambda: set(_counts(bulk)) >= corpus, "the corpus", 60)
        time.sleep(2.0)  # caught up: the engine polls and finds nothing new
        delays = []
        for _ in range(3):
            appended = set(_append(bulk, 20))
            asked = time.monotonic()
            bulk.wait_until(proc, lambda a=appended: set(_counts(bulk)) >= a, "the new events", 30)
            delays.append(time.monotonic() - asked)
        # Arrival includes the sandbox Fluentd's flush (0.2 s) and reading its files.
        assert max(delays) < 3.0, delays
        _assert_exactly_once(bulk, corpus | set(_counts(bulk)))
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0


@pytest.mark.parametrize("whole_seconds", [False, True], ids=["exact", "dynamodb-seconds"])
def test_events_on_window_boundaries_arrive_exactly_once(
    template: str, tmp_path: Path, whole_seconds: bool
) -> None:
    """Teleport's backends select BETWEEN start AND end, inclusive at both ends
    (lib/events/dynamoevents Log.searchEventsRaw "CreatedAt BETWEEN :start and
    :end" on Unix seconds; lib/events/filelog, pgevents, firestoreevents), so an
    event on a boundary, and on DynamoDB every event of the boundary second, is
    served by two windows."""
    faults = ["--fault=whole_seconds=true"] if whole_seconds else []
    stacks = _stack(template, tmp_path, "legacy", *faults)
    stack = next(stacks)
    try:
        second = 1_000_000_000
        t0 = (math.ceil(time.time()) + 3) * second  # a window boundary, in whole seconds
        offsets = [-second, -1, 0, 1, second // 2, 2 * second - 1, 2 * second, 5 * second // 2]
        expected = {uid for offset in offsets for uid in _append(stack, 1, at=t0 + offset)}
        assert len(expected) == len(offsets)
        # Past the last event and the settle time (2 x timeout) of the window
        # before it, so that one run reads every window up to the present.
        while time.time_ns() < t0 + 4 * second + second // 4:
            time.sleep(0.1)
        start = datetime.datetime.fromtimestamp(t0 // second - 4, datetime.UTC)
        toml = stack.handler_toml(start_time=start, window_size="2s", batch=3)
        proc = stack.start_handler(toml, "--exit-on-last-event")
        assert proc.wait(RUN_TIMEOUT) == 0, f"handler failed, see {stack.root}/handler.log"
        _assert_exactly_once(stack, expected)
    finally:
        next(stacks, None)


def test_a_vanished_chunk_is_retried_and_the_export_goes_on(bulk: Stack) -> None:
    """A listed chunk can be gone when it is exported (NOT_FOUND). Teleport's own
    exporter retries every chunk failure for ever, with backoff
    (lib/events/export/date_exporter.go, DateExporter.processChunk): the
    forwarder must neither stop nor lose the chunk."""
    bulk.run_teleport_cli("faults", "set", "not_found=1", "methods=ExportUnstructuredEvents")
    toml = bulk.handler_toml(start_time=bulk.corpus_start())
    proc = bulk.start_handler(toml, "--exit-on-last-event")
    try:
        bulk.wait_until(proc, lambda: "NOT_FOUND" in bulk.handler_log(), "a retried chunk", 60)
        time.sleep(3)
        assert proc.poll() is None, "the handler stopped on a vanished chunk"
        assert "retrying in" in bulk.handler_log()
    finally:
        bulk.run_teleport_cli("faults", "clear")
    assert proc.wait(RUN_TIMEOUT) == 0, f"handler failed, see {bulk.root}/handler.log"
    _assert_exactly_once(bulk, bulk.teleport_uids())


def test_a_refused_chunk_cursor_restarts_the_chunk_instead_of_stopping(bulk: Stack) -> None:
    """A stored cursor Teleport no longer accepts (INVALID_ARGUMENT from
    lib/events/athena/querier.go querier.ExportUnstructuredEvents, which decodes
    it) cannot be fixed by retrying it: the chunk is exported again from its
    start, so nothing is lost and the export goes on."""
    start = bulk.corpus_start()
    day = start.date().isoformat()
    chunk = Corpus(bulk.teleport_dir).chunk_ids(day)[0]
    state = State(state_dir(bulk.storage, bulk.teleport_addr))
    state.settle_start_time(start, start)
    state.add_date(day)
    state.apply([ChunkCursor(day, chunk, "not-a-cursor")])
    state.close()
    proc = bulk.start_handler(bulk.handler_toml(start_time=start), "--exit-on-last-event")
    assert proc.wait(RUN_TIMEOUT) == 0, f"handler failed, see {bulk.root}/handler.log"
    assert f"Teleport refused the cursor of chunk {chunk} of {day}" in bulk.handler_log()
    _assert_exactly_once(bulk, bulk.teleport_uids())


def test_the_api_version_sent_is_the_one_configured(legacy: Stack) -> None:
    """Teleport reads the ``version`` metadata as the client's Teleport API
    version and can refuse old clients (lib/auth/middleware.go,
    Middleware.ValidateClientVersion). The default is the version our protos
    follow; ``api.version`` / ``--teleport-api-version`` overrides it, for the
    start-up check and the export alike."""
    legacy.run_teleport_cli("faults", "set", "oldest_client_version=99.0.0")
    toml = legacy.handler_toml(start_time=legacy.corpus_start())
    refused = legacy.start_handler(toml, "--exit-on-last-event")
    assert refused.wait(RUN_TIMEOUT) != 0
    assert "client version is unsupported" in legacy.handler_log()
    assert not legacy.received("audit")

    accepted = legacy.start_handler(toml, "--exit-on-last-event", "--teleport-api-version=99.1.0")
    assert accepted.wait(RUN_TIMEOUT) == 0, f"handler failed, see {legacy.root}/handler.log"
    _assert_exactly_once(legacy, legacy.teleport_uids())
