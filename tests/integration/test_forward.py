"""The Forward protocol against the REAL Fluentd 1.16 (in_forward, TLS, acks).

The project's template renders ``<source> @type forward`` when ``forward_port``
is set; Fluentd's own ``--dry-run`` accepts it, and the forwarder delivers
every event exactly once through it (and, after kill -9, loses nothing).
"""

from __future__ import annotations

import collections
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from teleport_event_handler.backoff import Shutdown
from teleport_event_handler.fluentconf import render_fluent_conf
from teleport_event_handler.forward import ForwardClient
from teleport_event_handler.sink import SinkError
from teleport_sandbox.fluentd.conf import build_config
from teleport_sandbox.stack import Stack, find_fluentd, fluent_conf_values, make_fluentd_material

RUN_TIMEOUT = 600
# Small batches and few connections keep the window of re-sendable events small.
BATCH = 100
CONNECTIONS = 4
# What one kill may re-send: batches in flight, queued and acked but not yet
# committed behind an older one (Pipeline: workers + 2 x workers queue), and the
# batch being built.
WINDOW = (3 * CONNECTIONS + 1) * BATCH


def test_the_forward_template_passes_fluentd_dry_run(tmp_path: Path) -> None:
    material = make_fluentd_material(str(tmp_path / "certs"))
    values = fluent_conf_values(24880, material, str(tmp_path / "out"), forward_port=24881)
    text = render_fluent_conf(values)
    conf = tmp_path / "fluent.conf"
    conf.write_text(text)
    result = subprocess.run(
        [*find_fluentd(), "--dry-run", "-c", str(conf)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "[warn]" not in output and "[error]" not in output, output
    assert "finished dry run mode" in output
    config = build_config(text, str(conf))
    assert config.forward is not None and config.forward.port == 24881


@pytest.fixture
def receiver(tmp_path: Path) -> Iterator[Stack]:
    """A real Fluentd with in_http and in_forward, no Teleport."""
    stack = Stack(root=str(tmp_path / "stack"), fluentd="real", forward=True)
    stack.material = make_fluentd_material(os.path.join(stack.fluentd_dir, "certs"))
    stack.start_fluentd()
    try:
        yield stack
    finally:
        stack.stop()


def _client(stack: Stack, **kwargs: object) -> ForwardClient:
    assert stack.material is not None
    options: dict[str, object] = {
        "ca": stack.material.ca,
        "cert": stack.material.client_cert,
        "key": stack.material.client_key,
        "max_connections": CONNECTIONS,
        "shutdown": Shutdown(),
    }
    options.update(kwargs)
    return ForwardClient(**options)  # type: ignore[arg-type]


def test_the_client_delivers_n_events_exactly_with_acks(receiver: Stack) -> None:
    url = f"tls://localhost:{receiver.forward_port}/test.log"
    events = [
        orjson.dumps({"uid": f"u{n}", "event": "user.login", "time": "2026-12-01T10:00:00.5Z"})
        for n in range(5000)
    ]
    with _client(receiver) as client:
        assert client.check(url) is None
        for start in range(0, len(events), 500):
            client.deliver(url, events[start : start + 500], as_array=True)
        session = f"tls://localhost:{receiver.forward_port}/session.s1.log"
        client.deliver(session, [orjson.dumps({"uid": "s", "ei": 0})], as_array=True)
        assert client.requests == 11 and client.retries == 0
    counts = receiver.received_by_uid("audit")
    assert len(counts) == 5000 and set(counts.values()) == {1}
    assert receiver.received_by_uid("session") == collections.Counter({"s": 1})
    # The record is the event as sent, time key included.
    sample = receiver.received("audit")[0]
    assert sample["time"] == "2026-12-01T10:00:00.5Z"


def test_a_client_without_certificate_is_refused_with_the_fix(receiver: Stack) -> None:
    url = f"tls://localhost:{receiver.forward_port}/test.log"
    client = _client(receiver, cert=None, key=None)
    with pytest.raises(SinkError, match="requires a client certificate"):
        client.check(url)


@pytest.fixture(scope="module")
def forward_template(tmp_path_factory: pytest.TempPathFactory) -> str:
    root = str(tmp_path_factory.mktemp("template-forward") / "stack")
    stack = Stack(root=root, days=2, events_per_day=6000)
    stack.init()
    return root


@pytest.fixture
def forward_stack(forward_template: str, tmp_path: Path) -> Iterator[Stack]:
    stack = Stack.copy_of(forward_template, str(tmp_path / "stack"), forward=True)
    stack.start_teleport()
    stack.start_fluentd()
    try:
        yield stack
    finally:
        stack.stop()
        for name in ("handler.log", "fluentd.log"):
            path = os.path.join(stack.root, name)
            if os.path.exists(path):
                with open(path, errors="replace") as handle:
                    print(f"--- {path} (tail)\n{handle.read()[-3000:]}")


def _toml(stack: Stack) -> str:
    return stack.handler_toml(
        start_time=stack.corpus_start(),
        fluentd__batch_size=BATCH,
        fluentd__max_connections=CONNECTIONS,
    )


def _run_to_end(stack: Stack, toml: str) -> None:
    proc = stack.start_handler(toml, "--exit-on-last-event")
    assert proc.wait(RUN_TIMEOUT) == 0, f"handler failed, see {stack.root}/handler.log"


def test_the_forwarder_delivers_every_event_exactly_once(forward_stack: Stack) -> None:
    toml = _toml(forward_stack)
    assert "tls://localhost:" in Path(toml).read_text()
    _run_to_end(forward_stack, toml)
    counts = forward_stack.received_by_uid("audit")
    expected = forward_stack.teleport_uids()
    assert set(counts) == expected
    twice = [uid for uid, n in counts.items() if n != 1]
    assert not twice, f"{len(twice)} events arrived more than once"
    assert "in_forward at tls://localhost" in forward_stack.handler_log()
    assert forward_stack.received_by_uid("session"), "no session recording arrived"
    # Connections end with TLS close_notify: Fluentd logs no "unexpected eof".
    assert "unexpected eof" not in forward_stack.fluentd_log()


def test_kill_9_loses_nothing_and_resends_at_most_a_window(forward_stack: Stack) -> None:
    toml = _toml(forward_stack)
    total = len(forward_stack.teleport_uids())
    kills = 0
    for fraction in (0.2, 0.5):
        proc = forward_stack.start_handler(toml)
        deadline = time.monotonic() + 120
        # Count what Fluentd has taken (buffer files included) by bytes in its output dir.
        while proc.poll() is None:
            assert time.monotonic() < deadline, "no progress before the kill"
            arrived = forward_stack.output_bytes() + _buffered_bytes(forward_stack)
            if arrived > fraction * total * 500:
                break
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
        kills += 1
    _run_to_end(forward_stack, toml)
    counts = forward_stack.received_by_uid("audit")
    expected = forward_stack.teleport_uids()
    missing = expected - set(counts)
    assert not missing, f"{len(missing)} of {len(expected)} events lost"
    duplicates = sum(counts.values()) - len(counts)
    print(f"{duplicates} events re-sent after {kills} kills (window {WINDOW} each)")
    assert duplicates <= kills * WINDOW


def _buffered_bytes(stack: Stack) -> int:
    return sum(os.path.getsize(p) for p in stack.buffered_chunks() if os.path.exists(p))


@pytest.fixture
def faulty_forward_stack(forward_template: str, tmp_path: Path) -> Iterator[Stack]:
    stack = Stack.copy_of(
        forward_template, str(tmp_path / "stack"), forward=True, fluentd="sandbox"
    )
    stack.start_teleport()
    stack.start_fluentd()
    try:
        yield stack
    finally:
        stack.stop()


def test_dropped_and_unacked_chunks_are_resent_until_acked(faulty_forward_stack: Stack) -> None:
    """Against the sandbox's in_forward faults: lost chunks and lost acks lose nothing."""
    stack = faulty_forward_stack
    stack.fluentd_faults(forward_drop_rate=0.3)
    toml = stack.handler_toml(
        start_time=stack.corpus_start(),
        fluentd__batch_size=BATCH,
        fluentd__max_connections=CONNECTIONS,
        fluentd__timeout="1s",
    )
    proc = stack.start_handler(toml, "--exit-on-last-event")
    stack.wait_until(proc, lambda: "retry" in stack.handler_log(), "a retry", timeout=120)
    stack.fluentd_faults(forward_no_ack=True)
    time.sleep(2)
    stack.fluentd_faults()
    assert proc.wait(RUN_TIMEOUT) == 0, f"handler failed, see {stack.root}/handler.log"
    counts = stack.received_by_uid("audit")
    assert set(counts) == stack.teleport_uids()
    assert "no ack within 1s" in stack.handler_log()


def test_kill_9_of_fluentd_mid_export_loses_nothing(forward_stack: Stack) -> None:
    """What in_forward acked sits in its file buffer, which a restarted Fluentd resumes;
    what it did not ack the forwarder sends again on a new connection."""
    stack = forward_stack
    proc = stack.start_handler(_toml(stack), "--exit-on-last-event")
    total = len(stack.teleport_uids())
    stack.wait_until(
        proc,
        lambda: stack.output_bytes() + _buffered_bytes(stack) > 0.3 * total * 500,
        "a third of the events at Fluentd",
    )
    assert stack._fluentd is not None
    stack._fluentd.kill()
    stack._fluentd.wait(30)
    time.sleep(1.0)
    stack.start_fluentd()
    assert proc.wait(RUN_TIMEOUT) == 0, f"handler failed, see {stack.root}/handler.log"
    counts = stack.received_by_uid("audit")
    missing = stack.teleport_uids() - set(counts)
    assert not missing, f"{len(missing)} events lost"
    assert "Failed to send" in stack.handler_log(), "the kill came after the export"
