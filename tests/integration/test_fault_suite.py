"""The bounded fault suite (``.ci/run``): crashes at random points lose nothing, and re-send
at most one in-flight window each.

Each test ends by comparing the set of ``uid`` values at the real Fluentd with
Teleport's and counting duplicates. The long form (more kills, more events)
is ``bench/faults.py``.
"""

from __future__ import annotations

import collections
import random
import signal
import time
from pathlib import Path

import pytest

from teleport_sandbox.stack import Stack

RUN_TIMEOUT = 600
MAX_CONNECTIONS = 4
BATCH_SIZE = 50
# One in-flight window: what a crash may re-send, whatever the mode.
WINDOW = MAX_CONNECTIONS * BATCH_SIZE


def _kill_at_random_points(stack: Stack, toml: str, kills: int, seed: int) -> None:
    """Start the handler, kill -9 it once it has sent something, ``kills`` times."""
    rng = random.Random(seed)
    for _ in range(kills):
        before = stack.output_bytes()
        proc = stack.start_handler(toml)
        stack.wait_until(
            proc,
            lambda before=before: stack.output_bytes() > before,
            "new output at Fluentd",
            120,
        )
        time.sleep(rng.uniform(0.0, 1.5))
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)


@pytest.mark.parametrize("array", [False, True], ids=["one-event-per-request", "arrays"])
def test_kill_9_at_random_points_loses_nothing_and_resends_one_window_at_most(
    array: bool, big_template: str, tmp_path: Path
) -> None:
    stack = Stack.copy_of(big_template, str(tmp_path / "stack"), mode="bulk")
    kills = 6
    try:
        stack.start_teleport()
        stack.start_fluentd()
        toml = stack.handler_toml(
            start_time=stack.corpus_start(),
            fluentd__array=array,
            fluentd__max_connections=MAX_CONNECTIONS,
            fluentd__batch_size=BATCH_SIZE,
        )
        _kill_at_random_points(stack, toml, kills, seed=7 if array else 11)
        proc = stack.start_handler(toml, "--exit-on-last-event")
        assert proc.wait(RUN_TIMEOUT) == 0
        arrived = stack.received_by_uid()
    finally:
        stack.stop()
    expected = stack.teleport_uids()
    assert expected - set(arrived) == set(), f"{len(expected - set(arrived))} events lost"
    duplicates = sum(count - 1 for count in arrived.values())
    per_kill = collections.Counter({"duplicates": duplicates, "bound": kills * WINDOW})
    print(f"{kills} kills: {duplicates} events re-sent (bound {kills * WINDOW})")
    assert duplicates <= kills * WINDOW, per_kill
