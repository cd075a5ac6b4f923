"""End to end: session recordings from the sandbox Teleport to the real Fluentd.

Each ``session.upload`` schedules its session; every recording event not in
``skip-session-types`` must reach Fluentd once, also across a kill -9 in the
middle of sessions; a recording not uploaded yet is retried and exported
later; a malformed one is skipped with a log line while the others finish.
"""

from __future__ import annotations

import collections
import datetime
import os
import signal
import sqlite3
import time
from collections.abc import Callable
from typing import Any

import orjson
import pytest

from teleport_event_handler.events import struct_to_dict
from teleport_event_handler.protos.teleport.auditlog.v1 import auditlog_pb2
from teleport_event_handler.sessions import STREAM_ATTEMPTS
from teleport_sandbox.stack import HANDLER_ROLE_YAML, Stack
from teleport_sandbox.teleport.corpus import Corpus

RUN_TIMEOUT = 180
# 20 sessions of 8 to 43 recorded events each (sandbox corpus: 6 to 40 prints).
EVENTS_PER_DAY = 60
ALL_BUT_DESKTOP = "desktop.recording"
# Scales the session retry delays (1 min -> 0.6 s, 3 s backoff -> 0.03 s).
FAST_RETRIES = {"TELEPORT_EVENT_HANDLER_SESSION_TIME_SCALE": "0.01"}


@pytest.fixture(scope="module")
def sessions_template(tmp_path_factory: pytest.TempPathFactory) -> str:
    root = str(tmp_path_factory.mktemp("template-sessions") / "stack")
    Stack(root=root, days=1, events_per_day=EVENTS_PER_DAY).init()
    return root


@pytest.fixture(params=["bulk", "legacy"])
def stack(
    request: pytest.FixtureRequest, sessions_template: str, make_stack: Callable[..., Stack]
) -> Stack:
    return make_stack(sessions_template, request.param)


@pytest.fixture
def bulk_stack(sessions_template: str, make_stack: Callable[..., Stack]) -> Stack:
    return make_stack(sessions_template, "bulk")


def _key(record: dict[str, Any]) -> bytes:
    return orjson.dumps(record, option=orjson.OPT_SORT_KEYS)


def _expected(stack: Stack, skip: tuple[str, ...], sids: set[str] | None = None) -> Counter:
    corpus = Corpus(stack.teleport_dir)
    want: Counter = collections.Counter()
    for sid in corpus.sessions:
        if sids is not None and sid not in sids:
            continue
        for raw in corpus.recording(sid) or []:
            event = auditlog_pb2.EventUnstructured.FromString(raw)
            if event.type not in skip:
                want[_key(struct_to_dict(event.unstructured))] += 1
    return want


Counter = collections.Counter[bytes]


def _received(stack: Stack) -> Counter:
    return collections.Counter(_key(r) for r in stack.received("session"))


def _sessions_table(stack: Stack) -> list[tuple[str, int, str]]:
    paths = [
        os.path.join(d, "state.sqlite3")
        for d in (os.path.join(stack.storage, n) for n in os.listdir(stack.storage))
    ]
    db = sqlite3.connect(f"file:{paths[0]}?mode=ro", uri=True, timeout=5)
    try:
        return db.execute("SELECT sid, next_index, status FROM sessions").fetchall()
    except sqlite3.OperationalError:
        return []  # not created yet
    finally:
        db.close()


def _run_to_end(stack: Stack, toml: str, env: dict[str, str] | None = None) -> None:
    proc = stack.start_handler(toml, "--exit-on-last-event", env=env)
    assert proc.wait(RUN_TIMEOUT) == 0, f"handler failed, see {stack.root}/handler.log"


def test_every_session_arrives_exactly_once(stack: Stack) -> None:
    toml = stack.handler_toml(
        start_time=stack.corpus_start(), skip_session_types=[ALL_BUT_DESKTOP], concurrency=3
    )
    _run_to_end(stack, toml)
    want, got = _expected(stack, (ALL_BUT_DESKTOP,)), _received(stack)
    assert len(Corpus(stack.teleport_dir).sessions) == 20
    assert sum(want.values()) > 150
    assert got == want
    # Each session's events went to <session-url>.<sid>.log: the real Fluentd
    # matched them by the tag session.*.log; the audit output has none of them.
    assert not any(r.get("event") == "print" for r in stack.received("audit"))


def test_default_skip_types_drop_print_events(bulk_stack: Stack) -> None:
    _run_to_end(bulk_stack, bulk_stack.handler_toml(start_time=bulk_stack.corpus_start()))
    got = _received(bulk_stack)
    assert got == _expected(bulk_stack, ("print", "desktop.recording"))
    assert {orjson.loads(k)["event"] for k in got} == {"session.start", "resize", "session.end"}


def test_kill_9_mid_session_resumes_each_session_where_it_stopped(bulk_stack: Stack) -> None:
    toml = bulk_stack.handler_toml(
        start_time=bulk_stack.corpus_start(),
        skip_session_types=[ALL_BUT_DESKTOP],
        concurrency=2,
        fluentd__batch_size=1,
    )
    kills = 0
    for _ in range(3):
        proc = bulk_stack.start_handler(toml)
        deadline = time.monotonic() + 60
        # Kill once some session is part-way: progress stored, not finished.
        while proc.poll() is None and time.monotonic() < deadline:
            rows = _sessions_table(bulk_stack) if os.path.isdir(bulk_stack.storage) else []
            if any(status != "done" and index > 0 for _, index, status in rows):
                break
            time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
        kills += 1
    _run_to_end(bulk_stack, toml)
    want, got = _expected(bulk_stack, (ALL_BUT_DESKTOP,)), _received(bulk_stack)
    assert set(got) == set(want), "a recording event was lost or invented"
    resent = sum(got.values()) - sum(want.values())
    # At most the batch each session had in flight (batch size 1, 2 sessions) per kill.
    assert resent <= 2 * kills, f"{resent} events re-sent after {kills} kills"
    print(f"{resent} recording events re-sent after {kills} kills")
    assert all(status == "done" for _, _, status in _sessions_table(bulk_stack))


def test_a_missing_recording_is_retried_and_exported_later(bulk_stack: Stack) -> None:
    sids = sorted(Corpus(bulk_stack.teleport_dir).sessions)
    late = sids[0]
    bulk_stack.run_teleport_cli("faults", "set", f"missing_recordings={late}")
    toml = bulk_stack.handler_toml(start_time=bulk_stack.corpus_start())
    proc = bulk_stack.start_handler(toml, env=FAST_RETRIES)
    try:
        want_others = _expected(bulk_stack, ("print", "desktop.recording"), set(sids[1:]))
        bulk_stack.wait_until(
            proc,
            lambda: f"session recording {late} not found yet" in bulk_stack.handler_log(),
            "the missing recording's first attempt",
        )
        bulk_stack.wait_until(
            proc, lambda: _received(bulk_stack) == want_others, "the other sessions", 90
        )
        bulk_stack.run_teleport_cli("faults", "clear")  # the recording is uploaded now
        want = _expected(bulk_stack, ("print", "desktop.recording"))
        bulk_stack.wait_until(proc, lambda: _received(bulk_stack) == want, "the late recording", 90)
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0


def test_a_malformed_session_is_skipped_while_the_others_finish(bulk_stack: Stack) -> None:
    sids = sorted(Corpus(bulk_stack.teleport_dir).sessions)
    bad = sids[3]
    bulk_stack.run_teleport_cli("faults", "set", f"malformed_recordings={bad}")
    toml = bulk_stack.handler_toml(start_time=bulk_stack.corpus_start())
    _run_to_end(bulk_stack, toml, env=FAST_RETRIES)
    skip = ("print", "desktop.recording")
    got = _received(bulk_stack)
    # The others complete; of the bad one only what came before the bad event.
    others = _expected(bulk_stack, skip, set(sids) - {bad})
    assert +(got - _expected(bulk_stack, skip, {bad})) == others
    bad_events = [orjson.loads(k) for k in got if orjson.loads(k).get("sid") == bad]
    assert [e["event"] for e in bad_events] == ["session.start"]
    log = bulk_stack.handler_log()
    assert log.count(f"session recording {bad} skipped after 3 failed attempts") == 1
    assert "Traceback" not in log


def test_sigterm_mid_session_commits_what_was_sent_and_resumes_exactly_once(
    bulk_stack: Stack,
) -> None:
    toml = bulk_stack.handler_toml(
        start_time=bulk_stack.corpus_start(),
        skip_session_types=[ALL_BUT_DESKTOP],
        concurrency=2,
        fluentd__batch_size=1,
    )
    proc = bulk_stack.start_handler(toml)
    deadline = time.monotonic() + 60
    while proc.poll() is None and time.monotonic() < deadline:
        rows = _sessions_table(bulk_stack) if os.path.isdir(bulk_stack.storage) else []
        if any(status != "done" and index > 0 for _, index, status in rows):
            break
        time.sleep(0.01)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(30) == 0
    assert any(status != "done" for _, _, status in _sessions_table(bulk_stack))
    _run_to_end(bulk_stack, toml)
    assert _received(bulk_stack) == _expected(bulk_stack, (ALL_BUT_DESKTOP,))
    assert "Traceback" not in bulk_stack.handler_log()


def test_a_recording_that_never_appears_is_given_up_as_the_go_plugin_does(
    bulk_stack: Stack,
) -> None:
    sids = sorted(Corpus(bulk_stack.teleport_dir).sessions)
    lost = sids[5]
    bulk_stack.run_teleport_cli("faults", "set", f"missing_recordings={lost}")
    proc = bulk_stack.start_handler(
        bulk_stack.handler_toml(start_time=bulk_stack.corpus_start()), env=FAST_RETRIES
    )
    try:
        bulk_stack.wait_until(
            proc, lambda: "giving it up" in bulk_stack.handler_log(), "the give-up", 60
        )
        log = bulk_stack.handler_log()
        # The first try and three retries in the background (processSession:
        # attempts 0..2 are kept, the one after them gives up).
        assert log.count(f"session recording {lost} not found yet") == 3
        assert f"session recording {lost} is still not found after 4 attempts" in log
        want = _expected(bulk_stack, ("print", "desktop.recording"), set(sids) - {lost})
        bulk_stack.wait_until(proc, lambda: _received(bulk_stack) == want, "the others", 60)
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0


def test_without_session_permission_one_error_names_the_fix_and_audit_goes_on(
    bulk_stack: Stack,
) -> None:
    role = os.path.join(bulk_stack.root, "handler", "role-events-only.yaml")
    with open(role, "w") as handle:
        handle.write(
            HANDLER_ROLE_YAML.replace("resources: ['event', 'session']", "resources: ['event']")
        )
    bulk_stack.tctl("create", "-f", role)
    _run_to_end(bulk_stack, bulk_stack.handler_toml(start_time=bulk_stack.corpus_start()))
    assert {str(r["uid"]) for r in bulk_stack.received("audit")} == bulk_stack.teleport_uids()
    assert not _received(bulk_stack)
    log = bulk_stack.handler_log()
    denied = [line for line in log.splitlines() if 'on "session"' in line]
    assert len(denied) == 1, denied
    assert "the audit export goes on" in denied[0]
    # The sessions wait in the state for a run with the permission.
    assert {status for _, _, status in _sessions_table(bulk_stack)} == {"pending"}


def test_an_outage_of_teleport_never_skips_a_recording(bulk_stack: Stack) -> None:
    """UNAVAILABLE does not count toward the attempts after which a session is skipped
    (the Go plugin's rule, which lost a recording's events in bench/faults.py)."""
    bulk_stack.run_teleport_cli(
        "faults", "set", "unavailable=1.0", "methods=StreamUnstructuredSessionEvents"
    )
    toml = bulk_stack.handler_toml(start_time=bulk_stack.corpus_start())
    proc = bulk_stack.start_handler(toml, env=FAST_RETRIES)
    try:
        # Far more failures per session than the attempts a broken recording gets.
        bulk_stack.wait_until(
            proc,
            lambda: (
                bulk_stack.handler_log().count("stream failed at index 0") >= 6 * STREAM_ATTEMPTS
            ),
            "sessions failing for a while",
        )
        bulk_stack.run_teleport_cli("faults", "clear")
        want = _expected(bulk_stack, ("print", "desktop.recording"))
        bulk_stack.wait_until(proc, lambda: _received(bulk_stack) == want, "every recording", 90)
        assert "skipped after" not in bulk_stack.handler_log()
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0


@pytest.mark.parametrize("mode", ["bulk", "legacy"])
def test_exported_sessions_are_forgotten_once_the_export_has_left_their_days(
    mode: str, tmp_path_factory: pytest.TempPathFactory, make_stack: Callable[..., Stack]
) -> None:
    template = str(tmp_path_factory.mktemp("template-five-days") / "stack")
    Stack(root=template, days=5, events_per_day=EVENTS_PER_DAY).init(["--sessions-per-day", "4"])
    stack = make_stack(template, mode)
    toml = stack.handler_toml(start_time=stack.corpus_start(), skip_session_types=[ALL_BUT_DESKTOP])
    _run_to_end(stack, toml)
    assert _received(stack) == _expected(stack, (ALL_BUT_DESKTOP,))
    uploads = {
        r["sid"]: r["time"] for r in stack.received("audit") if r.get("event") == "session.upload"
    }
    kept = {sid for sid, _, _ in _sessions_table(stack)}
    today = datetime.datetime.now(datetime.UTC).date()
    # The bulk engine polls today and the two days before, the legacy engine reads
    # from the start of today's window: a day later still, rows are dropped.
    gone = {sid for sid, t in uploads.items() if t < str(today - datetime.timedelta(days=3))}
    recent = {sid for sid, t in uploads.items() if t >= str(today - datetime.timedelta(days=1))}
    assert gone and recent and len(uploads) == 20
    assert not gone & kept
    assert recent <= kept
