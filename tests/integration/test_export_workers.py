"""Bulk export through worker processes (``export-workers``), end to end.

The worker processes stream and convert the chunks; the engine's process keeps
the order, the cursors, the pipeline and the observers. These tests run the
real handler against the sandbox Teleport (over its Proxy too) and the real
Fluentd, and check what the threads' path is checked for: every event and
recording once, Teleport's faults retried, failed logins locking the user, and
a kill -9 losing nothing and leaving no worker behind.
"""

from __future__ import annotations

import collections
import datetime
import json
import os
import random
import signal
import subprocess
import time
from collections.abc import Callable

import pytest

from teleport_event_handler.state import ChunkCursor, State, state_dir
from teleport_sandbox.stack import HANDLER_ROLE_YAML, Stack
from teleport_sandbox.teleport.corpus import Corpus, all_events

RUN_TIMEOUT = 300
WORKERS = 2


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> str:
    """Three days with sessions, events over 1 MiB and of unknown types."""
    root = str(tmp_path_factory.mktemp("template-workers") / "stack")
    Stack(root=root, days=3, events_per_day=2000).init(["--oversized", "2", "--unknown", "10"])
    return root


@pytest.fixture
def stack(template: str, make_stack: Callable[..., Stack]) -> Stack:
    return make_stack(template)


def _toml(stack: Stack, **extra: object) -> str:
    return stack.handler_toml(start_time=stack.corpus_start(), export_workers=WORKERS, **extra)


def _run_to_end(stack: Stack, toml: str) -> None:
    proc = stack.start_handler(toml, "--exit-on-last-event")
    assert proc.wait(RUN_TIMEOUT) == 0, f"handler failed, see {stack.root}/handler.log"


def _assert_exactly_once(stack: Stack) -> None:
    counts = stack.received_by_uid()
    expected = stack.teleport_uids()
    missing = expected - set(counts)
    assert not missing, f"{len(missing)} of {len(expected)} events never reached Fluentd"
    assert set(counts) <= expected
    twice = [uid for uid, n in counts.items() if n != 1]
    assert not twice, f"{len(twice)} events arrived more than once, e.g. {twice[:3]}"


def test_workers_deliver_every_event_and_recording_exactly_once(stack: Stack) -> None:
    _run_to_end(stack, _toml(stack))
    _assert_exactly_once(stack)
    log = stack.handler_log()
    assert f"bulk export: {WORKERS} worker processes stream the chunks" in log
    # Bodies are Teleport's JSON, converted in the workers: the oversized and
    # unknown-type events too.
    by_uid = {str(e["uid"]): e for e in all_events(stack.teleport_dir)}
    records = stack.received("audit")
    assert all(record == by_uid[str(record["uid"])] for record in records)
    assert any(len(str(r)) > 1024 * 1024 for r in records), "no oversized event arrived"
    # Recordings are scheduled by the session.upload events the workers pass on whole.
    sessions = Corpus(stack.teleport_dir).sessions
    assert sessions
    assert f"{len(sessions)} session recordings exported" in log
    assert {str(r["sid"]) for r in stack.received("session")} == set(sessions)


def test_workers_retry_teleport_faults_and_lose_nothing(
    template: str, make_stack: Callable[..., Stack]
) -> None:
    """UNAVAILABLE and DEADLINE_EXCEEDED answers and streams cut mid-chunk happen
    in the workers; the engine retries each chunk from the last cursor it got."""
    faults = ("--fault=unavailable=0.2", "--fault=deadline=0.05", "--fault=drop_stream_after=700")
    stack = make_stack(template, teleport_args=faults)
    _run_to_end(stack, _toml(stack))
    _assert_exactly_once(stack)
    log = stack.handler_log()
    assert "retrying in" in log and "UNAVAILABLE" in log


def test_a_refused_cursor_in_a_worker_restarts_the_chunk(stack: Stack) -> None:
    """INVALID_ARGUMENT for a stored cursor reaches the engine with its code, so
    the chunk is exported again from its start instead of the handler stopping."""
    start = stack.corpus_start()
    day = start.date().isoformat()
    chunk = Corpus(stack.teleport_dir).chunk_ids(day)[0]
    state = State(state_dir(stack.storage, stack.teleport_addr))
    state.settle_start_time(start, start)
    state.add_date(day)
    state.apply([ChunkCursor(day, chunk, "not-a-cursor")])
    state.close()
    _run_to_end(stack, _toml(stack))
    assert f"Teleport refused the cursor of chunk {chunk} of {day}" in stack.handler_log()
    _assert_exactly_once(stack)


def test_workers_dial_through_the_proxy(template: str, make_stack: Callable[..., Stack]) -> None:
    stack = make_stack(template, proxy=True)
    _run_to_end(stack, _toml(stack, teleport__addr=stack.proxy_addr))
    _assert_exactly_once(stack)
    assert "through the Proxy's TLS routing" in stack.handler_log()


def _children(pid: int) -> set[int]:
    found = set()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as handle:
                    fields = handle.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                found.add(int(entry))
    return found


def _cmdline(pid: int) -> bytes:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            return handle.read()
    except OSError:
        return b""


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_kill_9_with_workers_loses_nothing_and_leaves_no_worker(stack: Stack) -> None:
    max_connections, batch_size, kills = 4, 50, 3
    toml = _toml(stack, fluentd__max_connections=max_connections, fluentd__batch_size=batch_size)
    rng = random.Random(5)
    expected = stack.teleport_uids()
    for _ in range(kills):
        before = stack.output_bytes()
        proc = stack.start_handler(toml)
        try:
            # A run killed late may have exported everything: then nothing new comes.
            stack.wait_until(
                proc,
                lambda before=before: (
                    stack.output_bytes() > before or set(stack.received_by_uid()) >= expected
                ),
                "new output",
                120,
            )
            time.sleep(rng.uniform(0.0, 1.0))
            workers = _children(proc.pid)  # the workers, and multiprocessing's resource tracker
            spawned = [pid for pid in workers if b"spawn_main" in _cmdline(pid)]
            assert len(spawned) == WORKERS, f"expected {WORKERS} worker processes: {spawned}"
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait(30)
        deadline = time.monotonic() + 20
        while any(_alive(pid) for pid in workers) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not [pid for pid in workers if _alive(pid)], "a child outlived its handler"
    _run_to_end(stack, toml)
    counts = stack.received_by_uid()
    assert expected - set(counts) == set(), f"{len(expected - set(counts))} events lost"
    duplicates = sum(n - 1 for n in counts.values())
    assert duplicates <= kills * max_connections * batch_size, duplicates


# The handler's role plus what auto-lock needs.
LOCK_RULE = "      - resources: ['lock']\n        verbs: ['create', 'update']\n"


def test_failed_logins_read_by_workers_lock_the_user(stack: Stack) -> None:
    role = os.path.join(stack.root, "handler", "role-with-lock.yaml")
    with open(role, "w") as handle:
        handle.write(
            HANDLER_ROLE_YAML.replace(
                "        verbs: ['list', 'read']\n",
                "        verbs: ['list', 'read']\n" + LOCK_RULE,
                1,
            )
        )
    stack.tctl("create", "-f", role)
    start = datetime.datetime.now(datetime.UTC) - datetime.timedelta(seconds=5)
    toml = stack.handler_toml(
        start_time=start,
        export_workers=WORKERS,
        lock_enabled=True,
        lock_failed_attempts_count=3,
        lock_period="1m",
    )
    proc = stack.start_handler(toml)
    try:
        out = stack.run_teleport_cli("append", "--count", "4", "--failed-logins", "alice:root")
        uids = set(json.loads(out)["uids"])
        stack.wait_until(
            proc,
            lambda: uids <= set(stack.received_by_uid()) and _locked(stack),
            "the failed logins and the lock",
            60,
        )
        assert "User login is locked: user 'alice', login 'root'" in stack.handler_log()
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0


def _locked(stack: Stack) -> bool:
    try:
        text = stack.tctl("get", "locks", "--format", "json")
    except subprocess.CalledProcessError:
        return False
    return "event-handler-auto-lock-alice-root" in text


def test_workers_end_with_the_handler_on_sigterm(stack: Stack) -> None:
    proc = stack.start_handler(_toml(stack))
    stack.wait_until(proc, lambda: stack.output_bytes() > 0, "first output", 120)
    workers = _children(proc.pid)
    assert workers
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(30) == 0
    assert not [pid for pid in workers if _alive(pid)]
    counts = collections.Counter(stack.received_by_uid())
    assert all(n == 1 for n in counts.values())
