"""A full state disk pauses the export with one clear message and resumes: nothing is lost.

The state lives on a real, small tmpfs; the test fills it with a file while
events flow (Teleport appends 20 a second), then frees it. Against the real
Fluentd; every ``uid`` is compared with Teleport's.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from teleport_event_handler import status
from teleport_sandbox.stack import Stack


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    mount = tmp_path / "state-disk"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(mount)], check=True)
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def _fill(path: Path) -> None:
    """Write zeros until the filesystem is full (it may be full already)."""
    with contextlib.suppress(OSError), open(path, "wb") as handle:
        block = b"\0" * 65536
        while True:
            handle.write(block)
            handle.flush()


@pytest.mark.parametrize("mode", ["bulk", "legacy"])
def test_a_full_state_disk_pauses_and_resumes_losing_nothing(
    mode: str, small_template: str, tmp_path: Path, small_disk: Path
) -> None:
    stack = Stack.copy_of(small_template, str(tmp_path / "stack"), mode=mode)
    try:
        stack.start_teleport(extra=["--live-rate", "20"])
        stack.start_fluentd()
        toml = stack.handler_toml(start_time=stack.corpus_start(), storage=str(small_disk))
        proc = stack.start_handler(toml)
        stack.wait_until(proc, lambda: len(stack.received_by_uid()) > 0, "events at Fluentd", 60)
        state = str(small_disk / stack.teleport_addr.replace(":", "_"))
        # Its first status snapshot written (every 5 s) before the disk fills.
        stack.wait_until(proc, lambda: status.collect(state)["running"], "a status snapshot", 30)
        filler = small_disk / "filler"
        _fill(filler)
        stack.wait_until(
            proc, lambda: "the disk is full" in stack.handler_log(), "the disk-full message", 60
        )
        time.sleep(3)  # paused, alive, still full
        assert proc.poll() is None
        # The snapshot cannot be written either: once it is old, status says why.
        later = time.time() + status.STALE_AFTER + 5
        report = status.collect(state, later)
        assert report["paused_disk_full"] and not report["not_responding"], report
        assert "PAUSED: the state disk is full" in status.render(report)[0]
        if filler.exists():
            filler.unlink()
        stack.wait_until(
            proc, lambda: "writable again" in stack.handler_log(), "the export resumed", 60
        )
        # Everything Teleport holds (live events included) arrives.
        expected = stack.teleport_uids()
        stack.wait_until(
            proc,
            lambda: expected <= set(stack.received_by_uid()),
            "every event at Fluentd",
            120,
        )
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
    finally:
        stack.stop()
    log = stack.handler_log()
    print(log[-3000:])
    assert "Traceback" not in log
    assert "cannot rollback" not in log
    assert "needs about 4 MiB free" in log or "about 4 MiB" in log
    assert os.path.exists(small_disk / stack.teleport_addr.replace(":", "_"))
