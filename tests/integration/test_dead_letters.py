"""Events Fluentd refused are kept, and ``dead-letter replay`` sends them again.

The sandbox Fluentd refuses a fraction of requests with 400 on cue (a real one
cannot be made to); the replay then runs against it once it accepts again,
and every event of Teleport's arrives exactly once.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

from teleport_sandbox.stack import Stack

RUN_TIMEOUT = 300


def _dead_letter_file(stack: Stack) -> Path:
    (directory,) = [d for d in Path(stack.storage).iterdir() if d.is_dir()]
    return directory / "dead-letter.jsonl"


def test_replay_sends_the_refused_events_and_removes_what_fluentd_accepts(
    small_template: str, tmp_path: Path
) -> None:
    stack = Stack.copy_of(small_template, str(tmp_path / "stack"), fluentd="sandbox")
    # The receiver refuses every failed login (a filter that rejects them).
    refused = '"event":"user.login"'
    stack.fluentd_args = [f"--fault=reject_containing={refused}"]
    try:
        stack.start_teleport()
        stack.start_fluentd()
        toml = stack.handler_toml(start_time=stack.corpus_start())
        proc = stack.start_handler(toml, "--exit-on-last-event")
        assert proc.wait(RUN_TIMEOUT) == 0
        dead = _dead_letter_file(stack)
        kept = [line for line in dead.read_bytes().splitlines() if line.strip()]
        assert kept, "no event was refused: the fault did not bite"
        expected = stack.teleport_uids()
        before = stack.received_by_uid()
        audit_kept = [line for line in kept if json.loads(line)["url"].endswith("/test.log")]
        assert len(expected - set(before)) == len(audit_kept)

        # Still refusing: the replay keeps what is refused again (exit 3).
        stack.fluentd_faults(reject_containing=refused)
        command = ["teleport-event-handler", "dead-letter", "replay", "--config", toml]
        again = subprocess.run(command, capture_output=True, text=True, timeout=120)
        assert again.returncode == 3, again.stderr
        assert f"0 events sent again and removed; {len(kept)} kept" in again.stdout
        assert len(dead.read_bytes().splitlines()) == len(kept)

        # Fixed: everything goes, the file empties, every event is at Fluentd once.
        stack.fluentd_faults()
        done = subprocess.run(command, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        assert f"{len(kept)} events sent again and removed; 0 kept" in done.stdout
        assert dead.read_bytes() == b""
        assert oct(os.stat(dead).st_mode & 0o777) == "0o600"
        arrived = stack.received_by_uid()
    finally:
        stack.stop()
    assert set(arrived) == expected
    assert max(arrived.values()) == 1


def test_fluentd_refusing_everything_for_a_while_is_a_receiver_fault_not_bad_events(
    small_template: str, tmp_path: Path
) -> None:
    """400 to every request for 5 s: nothing is dead-lettered, everything arrives after."""
    stack = Stack.copy_of(small_template, str(tmp_path / "stack"), fluentd="sandbox")
    try:
        stack.start_teleport(extra=["--fault=latency_ms=20"])
        stack.start_fluentd()
        toml = stack.handler_toml(start_time=stack.corpus_start(), batch=50)
        proc = stack.start_handler(toml, "--exit-on-last-event", "--fluentd-batch-size=20")
        stack.wait_until(proc, lambda: stack.output_bytes() > 0, "output at Fluentd", 60)
        stack.fluentd_faults(status=400, status_rate=1.0)
        time.sleep(5)
        assert proc.poll() is None
        stack.fluentd_faults()
        assert proc.wait(RUN_TIMEOUT) == 0
        arrived = stack.received_by_uid()
    finally:
        stack.stop()
    assert not _dead_letter_file(stack).exists()
    assert set(arrived) == stack.teleport_uids()
    assert max(arrived.values()) == 1
    assert "a receiver fault, not bad events" in stack.handler_log()
