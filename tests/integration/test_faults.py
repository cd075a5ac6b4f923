"""The forwarder against misbehaving peers: nothing is lost, nothing hangs.

Teleport's faults run against the real Fluentd; the sandbox Fluentd serves
only the receiver faults a real one cannot produce on cue (refused
connections, 5xx, latency, refusing arrays): ``Stack(fluentd="sandbox")``.
"""

from __future__ import annotations

import contextlib
import datetime
import os
import signal
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from teleport_event_handler.state import ChunkCursor, State
from teleport_sandbox.stack import Stack
from teleport_sandbox.teleport.corpus import CODES, Corpus, all_events

KNOWN_TYPES = set(CODES)

RUN_TIMEOUT = 300


@pytest.fixture(scope="module")
def odd_template(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A cluster whose corpus holds events over 1 MiB and of unknown types."""
    root = str(tmp_path_factory.mktemp("template-odd") / "stack")
    Stack(root=root, days=3, events_per_day=2000).init(["--oversized", "3", "--unknown", "25"])
    return root


def _odd(template: str, tmp_path: Path, mode: str, fluentd: str) -> Iterator[Stack]:
    stack = Stack.copy_of(template, str(tmp_path / "stack"), mode=mode, fluentd=fluentd)
    yield stack
    stack.stop()
    print(stack.handler_log()[-3000:])
    print(stack.fluentd_log()[-2000:])


@pytest.fixture(params=["bulk", "legacy"])
def odd_stack(request: pytest.FixtureRequest, odd_template: str, tmp_path: Path) -> Iterator[Stack]:
    """The odd corpus, delivered to the real Fluentd."""
    yield from _odd(odd_template, tmp_path, request.param, "real")


@pytest.fixture(params=["bulk", "legacy"])
def faulty_fluentd_stack(
    request: pytest.FixtureRequest, odd_template: str, tmp_path: Path
) -> Iterator[Stack]:
    """The odd corpus, delivered to the sandbox Fluentd, whose faults are set on cue."""
    yield from _odd(odd_template, tmp_path, request.param, "sandbox")


def _complete(stack: Stack) -> None:
    got = {str(r["uid"]) for r in stack.received("audit")}
    expected = stack.teleport_uids()
    assert expected - got == set(), f"{len(expected - got)} events missing"


def test_flaky_slow_teleport_with_odd_events_loses_nothing(odd_stack: Stack) -> None:
    odd_stack.start_teleport(
        extra=[
            "--fault=unavailable=0.15",
            "--fault=deadline=0.05",
            "--fault=latency_ms=20",
            "--fault=drop_stream_after=700",
        ]
    )
    odd_stack.start_fluentd()
    toml = odd_stack.handler_toml(start_time=odd_stack.corpus_start())
    proc = odd_stack.start_handler(toml, "--exit-on-last-event")
    assert proc.wait(RUN_TIMEOUT) == 0
    _complete(odd_stack)
    records = odd_stack.received("audit")
    assert any(len(str(r)) > 1024 * 1024 for r in records), "no oversized event arrived"
    types_in_teleport = {str(e["event"]) for e in all_events(odd_stack.teleport_dir)}
    assert {str(r["event"]) for r in records} == types_in_teleport
    assert types_in_teleport - KNOWN_TYPES, "the corpus has no unknown event types"


def test_teleport_outage_pauses_the_export(odd_stack: Stack) -> None:
    # Slow calls make the export last long enough to cut Teleport off mid-way.
    addr = odd_stack.start_teleport(extra=["--fault=latency_ms=400"])
    port = int(addr.rsplit(":", 1)[1])
    odd_stack.start_fluentd()
    toml = odd_stack.handler_toml(start_time=odd_stack.corpus_start())
    proc = odd_stack.start_handler(toml, "--exit-on-last-event")
    odd_stack.wait_until(proc, lambda: odd_stack.output_bytes() > 0, "output at Fluentd", 60)
    odd_stack.stop_teleport()
    time.sleep(3.0)
    assert proc.poll() is None, "the handler gave up during the outage"
    assert len(odd_stack.received("audit")) < len(odd_stack.teleport_uids())
    odd_stack.start_teleport(port=port)
    assert proc.wait(RUN_TIMEOUT) == 0
    _complete(odd_stack)


def test_one_event_per_request_for_receivers_without_arrays(faulty_fluentd_stack: Stack) -> None:
    stack = faulty_fluentd_stack
    stack.fluentd_args = ["--fault=reject_array=true"]
    stack.start_teleport()
    stack.start_fluentd()
    toml = stack.handler_toml(start_time=stack.corpus_start(), fluentd__array=False)
    proc = stack.start_handler(toml, "--exit-on-last-event")
    assert proc.wait(RUN_TIMEOUT) == 0
    _complete(stack)


def test_sink_outage_then_recovery_loses_nothing(faulty_fluentd_stack: Stack) -> None:
    """Refused connections, then 503s, then a receiver that works again."""
    stack = faulty_fluentd_stack
    stack.start_teleport(extra=["--fault=latency_ms=20"])
    stack.start_fluentd()
    toml = stack.handler_toml(start_time=stack.corpus_start(), batch=100)
    proc = stack.start_handler(toml, "--exit-on-last-event", "--fluentd-batch-size=50")
    stack.wait_until(proc, lambda: stack.output_bytes() > 0, "output at Fluentd", 60)
    stack.fluentd_faults(refuse=True)
    time.sleep(2)
    stack.fluentd_faults(status=503, status_rate=1.0)
    time.sleep(2)
    assert proc.poll() is None, "the handler gave up during the outage"
    stack.fluentd_faults()
    assert proc.wait(RUN_TIMEOUT) == 0
    _complete(stack)


def test_dry_run_reads_everything_and_sends_nothing(odd_stack: Stack) -> None:
    odd_stack.start_teleport()
    odd_stack.start_fluentd()
    toml = odd_stack.handler_toml(start_time=odd_stack.corpus_start())
    result = subprocess.run(
        odd_stack.handler_command(toml, "--exit-on-last-event", "--dry-run"),
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT,
    )
    assert result.returncode == 0, result.stderr
    assert odd_stack.received("audit") == []
    assert f"{len(odd_stack.teleport_uids())} events" in result.stderr
    # A dry run keeps its state apart: a real run afterwards still sends everything.
    proc = odd_stack.start_handler(toml, "--exit-on-last-event")
    assert proc.wait(RUN_TIMEOUT) == 0
    _complete(odd_stack)


def test_sigterm_while_teleport_is_unreachable_exits_0(odd_template: str, tmp_path: Path) -> None:
    stack = Stack.copy_of(odd_template, str(tmp_path / "stack"))
    try:
        stack.start_teleport()
        stack.stop_teleport()  # the address is known, nobody answers: Ping is retried
        stack.start_fluentd()
        proc = stack.start_handler(stack.handler_toml(start_time=stack.corpus_start()))
        stack.wait_until(
            proc, lambda: "Ping failed" in stack.handler_log(), "Ping retry logged", 30
        )
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0
        assert "Traceback" not in stack.handler_log()
    finally:
        stack.stop()


def _state_db(stack: Stack) -> str:
    port = stack.teleport_addr.rsplit(":", 1)[1]
    return os.path.join(stack.storage, f"127.0.0.1_{port}", "state.sqlite3")


def _bulk_dates(stack: Stack) -> list[str]:
    path = _state_db(stack)
    if not os.path.exists(path):
        return []
    with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
        try:
            return [row[0] for row in db.execute("SELECT date FROM dates ORDER BY date")]
        except sqlite3.OperationalError:
            return []


@pytest.fixture(scope="module")
def old_day_template(tmp_path_factory: pytest.TempPathFactory) -> str:
    """One day of events a week ago, and nothing since."""
    root = str(tmp_path_factory.mktemp("template-old-day") / "stack")
    day = datetime.datetime.now(datetime.UTC).date() - datetime.timedelta(days=6)
    Stack(root=root, days=1, events_per_day=300).init(["--start-date", day.isoformat()])
    return root


def test_days_left_behind_during_a_sink_outage_lose_nothing(
    old_day_template: str, tmp_path: Path
) -> None:
    """Moving on past empty days must not drop a day whose events are unacknowledged."""
    stack = Stack.copy_of(old_day_template, str(tmp_path / "stack"), mode="bulk", fluentd="sandbox")
    try:
        stack.start_teleport()
        stack.start_fluentd()
        stack.fluentd_faults(refuse=True)
        toml = stack.handler_toml(start_time=stack.corpus_start())
        proc = stack.start_handler(toml)
        today = datetime.datetime.now(datetime.UTC).date().isoformat()
        deadline = time.monotonic() + 8
        while today not in _bulk_dates(stack) and time.monotonic() < deadline:
            assert proc.poll() is None
            time.sleep(0.1)
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
        assert stack.received("audit") == []
        stack.fluentd_faults()
        proc = stack.start_handler(toml, "--exit-on-last-event")
        assert proc.wait(RUN_TIMEOUT) == 0
        _complete(stack)
    finally:
        stack.stop()
        print(stack.handler_log()[-3000:])


@pytest.mark.parametrize("mode", ["bulk", "legacy"])
def test_sigterm_during_a_stalled_teleport_call_exits_promptly(
    odd_template: str, tmp_path: Path, mode: str
) -> None:
    """A reply that takes a minute must not hold up a SIGTERM: calls are cancelled."""
    stack = Stack.copy_of(odd_template, str(tmp_path / "stack"), mode=mode)
    proc = None
    try:
        stack.start_teleport(
            extra=[
                "--fault=methods=ExportUnstructuredEvents,GetUnstructuredEvents",
                "--fault=latency_ms=60000",
            ]
        )
        stack.start_fluentd()
        proc = stack.start_handler(stack.handler_toml(start_time=stack.corpus_start()))
        stack.wait_until(proc, lambda: ": using " in stack.handler_log(), "engine chosen", 30)
        time.sleep(1.0)  # the engine's first call is now waiting for its reply
        proc.send_signal(signal.SIGTERM)
        stopped = time.monotonic()
        assert proc.wait(30) == 0
        assert time.monotonic() - stopped < 5, "SIGTERM waited for Teleport's reply"
        assert "Traceback" not in stack.handler_log()
    finally:
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()
        if stack._teleport is not None:  # its handler threads sleep out the latency
            stack._teleport.kill()
        stack.stop()


def test_a_refused_chunk_cursor_during_a_sink_outage_restarts_the_chunk(
    odd_template: str, tmp_path: Path
) -> None:
    """A chunk error is said at once, even while the sink is down, and never
    stops the export (issue 6, fact 4): the chunk restarts, nothing is lost."""
    stack = Stack.copy_of(odd_template, str(tmp_path / "stack"), mode="bulk", fluentd="sandbox")
    try:
        stack.start_teleport()
        stack.start_fluentd()
        stack.fluentd_faults(refuse=True)
        start = stack.corpus_start()
        day = start.date().isoformat()
        chunks = Corpus(stack.teleport_dir).chunk_ids(day)
        assert len(chunks) >= 4, chunks
        # A stored cursor Teleport no longer accepts for the first chunk listed.
        state = State(os.path.dirname(_state_db(stack)))
        state.settle_start_time(start, start)
        state.add_date(day)
        state.apply([ChunkCursor(day, chunks[0], "not-a-cursor")])
        state.close()
        toml = stack.handler_toml(start_time=start)
        proc = stack.start_handler(
            toml, "--exit-on-last-event", "--fluentd-max-connections=1", "--fluentd-batch-size=50"
        )
        try:
            stack.wait_until(
                proc,
                lambda: "INVALID_ARGUMENT" in stack.handler_log(),
                "the refused cursor reported",
                30,
            )
            assert chunks[0] in stack.handler_log()
            stack.fluentd_faults()
            assert proc.wait(RUN_TIMEOUT) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        assert "Traceback" not in stack.handler_log()
        _complete(stack)
    finally:
        stack.stop()


def test_sigterm_with_a_hung_fluentd_exits_after_the_grace_period(
    faulty_fluentd_stack: Stack,
) -> None:
    """Requests stuck at a receiver get 5 s (as the Go plugin), then are aborted uncommitted."""
    odd_stack = faulty_fluentd_stack
    odd_stack.start_teleport()
    odd_stack.start_fluentd()
    toml = odd_stack.handler_toml(start_time=odd_stack.corpus_start())
    proc = odd_stack.start_handler(toml)
    odd_stack.wait_until(proc, lambda: ": using " in odd_stack.handler_log(), "engine chosen", 30)
    odd_stack.fluentd_faults(latency_ms=60_000)
    time.sleep(2.0)  # every sender is now inside a request that will not be answered
    proc.send_signal(signal.SIGTERM)
    stopped = time.monotonic()
    assert proc.wait(30) == 0
    assert time.monotonic() - stopped < 9, "SIGTERM waited for the hung receiver"
    odd_stack.fluentd_faults()
    odd_stack.stop_fluentd()  # its handler threads still sleep out the latency
    odd_stack.start_fluentd()
    toml = odd_stack.handler_toml(start_time=odd_stack.corpus_start())
    restarted = odd_stack.start_handler(toml, "--exit-on-last-event")
    assert restarted.wait(RUN_TIMEOUT) == 0
    _complete(odd_stack)
