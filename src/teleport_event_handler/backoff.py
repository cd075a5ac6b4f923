"""The one retry policy: capped exponential backoff with full jitter.

Everything that retries (Fluentd posts, Teleport streams, reconnects) takes a
``Backoff`` and waits on the process-wide ``Shutdown`` so that a SIGTERM ends a
wait at once instead of after the longest sleep.
"""

from __future__ import annotations

import random
import threading


class Shutdown:
    """A stop flag that sleeping retry loops wait on."""

    def __init__(self) -> None:
        self._event = threading.Event()

    def request(self) -> None:
        self._event.set()

    @property
    def requested(self) -> bool:
        return self._event.is_set()

    def wait(self, seconds: float) -> bool:
        """Sleep up to ``seconds``; True when shutdown was requested meanwhile."""
        return self._event.wait(max(0.0, seconds))


class Backoff:
    """Delays of ``base * factor**n`` capped at ``cap``, drawn with full jitter.

    Full jitter (a uniform draw between ``base`` and the capped delay) spreads
    retries of many workers apart after a shared outage; ``reset`` after a
    success starts again from ``base``.
    """

    def __init__(
        self,
        base: float = 0.25,
        cap: float = 30.0,
        factor: float = 2.0,
        rng: random.Random | None = None,
    ) -> None:
        if base <= 0 or cap < base or factor < 1:
            raise ValueError("backoff needs 0 < base <= cap and factor >= 1")
        self.base = base
        self.cap = cap
        self.factor = factor
        self.attempts = 0
        self._rng = rng or random.Random()

    def next_delay(self) -> float:
        try:
            ceiling = min(self.cap, self.base * self.factor**self.attempts)
        except OverflowError:  # hours into an outage, factor**attempts leaves float range
            ceiling = self.cap
        self.attempts += 1
        return self._rng.uniform(self.base, ceiling)

    def reset(self) -> None:
        self.attempts = 0

    def sleep(self, shutdown: Shutdown) -> bool:
        """Wait the next delay; True when shutdown interrupted the wait."""
        return shutdown.wait(self.next_delay())
