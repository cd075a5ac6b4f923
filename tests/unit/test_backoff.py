"""The shared retry policy: delays stay within bounds however long an outage lasts."""

from __future__ import annotations

import random

from teleport_event_handler.backoff import Backoff


def test_delays_grow_from_base_to_cap() -> None:
    backoff = Backoff(base=0.5, cap=30.0, rng=random.Random(1))
    delays = [backoff.next_delay() for _ in range(20)]
    assert all(0.5 <= d <= 30.0 for d in delays)
    assert delays[0] == 0.5
    backoff.reset()
    assert backoff.next_delay() == 0.5


def test_retrying_for_hours_keeps_capped_delays() -> None:
    # The sink's policy (0.25 s to 30 s) averages ~15 s a retry: 5,000 retries
    # are a day-long Fluentd or Auth outage, which must be retried, not crash.
    backoff = Backoff(base=0.25, cap=30.0, rng=random.Random(2))
    for _ in range(5_000):
        assert 0.25 <= backoff.next_delay() <= 30.0
    assert backoff.attempts == 5_000
