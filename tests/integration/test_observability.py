"""What operators watch, against the sandbox Teleport and the real Fluentd.

Metrics are scraped over HTTP while events flow, ``status`` is run as its own
process while the handler runs, systemd's notify socket is a real datagram
socket, and the stalls are real: Fluentd stopped, or Teleport's export
streams held by the sandbox's latency fault while the search API answers.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from teleport_sandbox.stack import Stack

PREFIX = "teleport_event_handler_"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _scrape(port: int) -> dict[str, float]:
    """Every sample of /metrics, keyed by its name and labels as written."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    samples: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            key, _, value = line.rpartition(" ")
            samples[key] = float(value)
    return samples


def _sum(samples: dict[str, float], name: str, **labels: str) -> float:
    total = 0.0
    for key, value in samples.items():
        if not (key == name or key.startswith(name + "{")):
            continue
        if all(f'{label}="{want}"' in key for label, want in labels.items()):
            total += value
    return total


def _status(stack: Stack, toml: str, *, started: bool = True) -> dict[str, Any]:
    """``status --json`` as its own process; before the first start, {} (and exit 1)."""
    result = subprocess.run(
        ["teleport-event-handler", "status", "--config", toml, "--json"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    if not started and result.returncode == 1 and "no export state" in result.stderr:
        return {}
    assert result.returncode == 0, result.stderr
    report: dict[str, Any] = json.loads(result.stdout)
    return report


def _wait(
    proc: subprocess.Popen[bytes], ready: Callable[[], bool], what: str, timeout: float
) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        assert proc.poll() is None, f"the handler exited {proc.returncode} before {what}"
        assert time.monotonic() < deadline, f"no {what} within {timeout}s"
        time.sleep(0.3)


@pytest.fixture
def stack(small_template: str, tmp_path: Path) -> Iterator[Stack]:
    stack = Stack.copy_of(small_template, str(tmp_path / "stack"), mode="bulk")
    try:
        yield stack
    finally:
        stack.stop()
        print(stack.handler_log()[-4000:])


def test_metrics_json_logs_and_systemd_notify_follow_the_export(
    stack: Stack, tmp_path: Path
) -> None:
    stack.start_teleport()
    stack.start_fluentd()
    port = _free_port()
    notify_path = str(tmp_path / "notify.sock")
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(notify_path)
    notify.settimeout(0.2)
    toml = stack.handler_toml(
        start_time=stack.corpus_start(), metrics_addr=f"127.0.0.1:{port}", log_format="json"
    )
    proc = stack.start_handler(toml, env={"NOTIFY_SOCKET": notify_path, "WATCHDOG_USEC": "2000000"})
    expected = len(stack.teleport_uids())
    messages: list[str] = []

    def forwarded() -> float:
        with_samples = _scrape(port) if _listening(port) else {}
        return _sum(with_samples, PREFIX + "events_total", outcome="forwarded")

    try:
        _wait(proc, lambda: forwarded() >= expected, f"{expected} forwarded events", 120)
        first = _scrape(port)
        stack.run_teleport_cli("append", "--count", "25", "--type", "user.login")
        _wait(proc, lambda: forwarded() >= expected + 25, "the 25 new events counted", 60)
        later = _scrape(port)
        while True:  # what systemd heard so far
            try:
                messages.append(notify.recv(4096).decode())
            except TimeoutError:
                break
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
    notify.settimeout(2)
    messages.append(notify.recv(4096).decode())
    notify.close()

    assert _sum(first, PREFIX + "events_total", outcome="forwarded") == expected
    assert _sum(
        later, PREFIX + "events_total", outcome="forwarded", type="user.login"
    ) >= 25 + _sum(first, PREFIX + "events_total", outcome="forwarded", type="user.login")
    assert _sum(later, PREFIX + "send_duration_seconds_count") > _sum(
        first, PREFIX + "send_duration_seconds_count"
    )
    assert later[PREFIX + "identity_expiry_timestamp_seconds"] > time.time()
    assert later[PREFIX + "dead_letters_total"] == 0
    assert later[PREFIX + "stuck"] == 0
    assert PREFIX + 'sessions{status="done"}' in later
    assert (
        later[PREFIX + "last_exported_event_timestamp_seconds"]
        > first[PREFIX + "last_exported_event_timestamp_seconds"]
    )
    assert re.search(r'teleport_event_handler_info\{engine="bulk"', "\n".join(later))

    # systemd heard READY=1 first, then progress and watchdog pings, and STOPPING=1 last.
    assert "READY=1" in messages[0].splitlines()
    assert any("WATCHDOG=1" in m.splitlines() for m in messages)
    assert any(
        line.startswith("STATUS=") and "events exported" in line
        for m in messages
        for line in m.splitlines()
    )
    assert "STOPPING=1" in messages[-1].splitlines()

    # Every log line is one JSON object with the fields log shippers expect.
    lines = [line for line in stack.handler_log().splitlines() if line.strip()]
    assert lines
    for line in lines:
        record = json.loads(line)
        assert {"time", "level", "logger", "message"} <= set(record)
    assert any("serving Prometheus metrics" in json.loads(line)["message"] for line in lines)


def _listening(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def test_status_reports_a_lag_that_grows_while_fluentd_is_down(stack: Stack) -> None:
    # The legacy engine polls every second (timeout), so the stall shows in seconds.
    stack.start_teleport(mode="legacy", extra=["--live-rate", "20"])
    stack.start_fluentd()
    toml = stack.handler_toml(stuck_after="2s")
    proc = stack.start_handler(toml)
    try:
        _wait(
            proc,
            lambda: (
                (r := _status(stack, toml, started=False)).get("running", False)
                and r["lag_seconds"] is not None
                and r["events_exported"] > 0
            ),
            "a running status with a lag",
            60,
        )
        healthy = _status(stack, toml)
        assert healthy["lag_seconds"] < 30
        assert not healthy["stuck"]
        stack.stop_fluentd()
        time.sleep(5)
        first = _status(stack, toml)
        time.sleep(4)
        second = _status(stack, toml)
        _wait(proc, lambda: _status(stack, toml)["stuck"], "a stall while Fluentd is down", 30)
        stuck = _status(stack, toml)
        # Fluentd back: the stall ends and the lag shrinks again.
        stack.start_fluentd()
        _wait(proc, lambda: not _status(stack, toml)["stuck"], "the stall to end", 60)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
    assert second["lag_seconds"] >= first["lag_seconds"] + 3, (first, second)
    assert stuck["events_pending"] > 0
    assert stuck["stuck_since"]
    assert "waiting for Fluentd" in stack.handler_log()
    stopped = _status(stack, toml)
    assert not stopped["running"]
    assert stopped["engine"] == "legacy"
    assert stopped["cursors"]["window_start"]


def test_a_reader_that_stops_exporting_is_detected_as_stuck(stack: Stack) -> None:
    stack.start_teleport()
    stack.start_fluentd()
    toml = stack.handler_toml(start_time=stack.corpus_start(), stuck_after="2s")
    expected = len(stack.teleport_uids())
    proc = stack.start_handler(toml)
    try:
        _wait(proc, lambda: len(stack.received_by_uid()) >= expected, "the corpus at Fluentd", 120)
        # Teleport's export streams now hang for 40 s each while its search API answers.
        stack.run_teleport_cli(
            "faults", "set", "latency_ms=40000", "methods=ExportUnstructuredEvents"
        )
        stack.run_teleport_cli("append", "--count", "10", "--type", "user.login")
        _wait(proc, lambda: _status(stack, toml)["stuck"], "the stall detected", 90)
        stuck = _status(stack, toml)
        stack.run_teleport_cli("faults", "clear")
        _wait(
            proc,
            lambda: len(stack.received_by_uid()) >= expected + 10,
            "the events after the stall",
            120,
        )
        _wait(proc, lambda: not _status(stack, toml)["stuck"], "the stall to end", 30)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
    assert stuck["events_pending"] == 0
    log = stack.handler_log()
    assert "stuck: nothing exported" in log
    assert "the reader exported nothing" in log
    assert "no longer stuck" in log
    assert os.path.exists(stuck["state"])
