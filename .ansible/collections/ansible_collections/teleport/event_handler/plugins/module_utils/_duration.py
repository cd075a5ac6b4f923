# Copyright: the teleport-event-handler authors
# Apache License 2.0 (see LICENSE)
"""Go durations ("8760h", "1h30m", "500ms"): the project's one parser.

Teleport, tctl and the Go event handler spell every TTL, timeout and window
this way, so the forwarder's configuration, the sandbox's tctl and the
collection's modules all read them here. The forwarder imports this file
through the symlink ``src/teleport_event_handler/durations.py``, so it
imports nothing from Ansible or the rest of the package.

``go_seconds`` is strict, as Go's ``time.ParseDuration`` (the forwarder's
TOML must mean what it meant to the Go plugin). ``parse_duration`` is the
modules' friendlier reading: a bare number is seconds and ``d`` means days.
"""

from __future__ import annotations

import datetime
import re

__all__ = ["DurationError", "format_duration", "go_seconds", "is_duration", "parse_duration"]

# Seconds per unit. Go accepts both micro signs (U+00B5 and U+03BC) for "us".
_UNITS = {
    "ns": 1e-9,
    "us": 1e-6,
    "\u00b5s": 1e-6,
    "\u03bcs": 1e-6,
    "ms": 1e-3,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
}
_DAY = {"d": 86400.0}

# One "<number><unit>" element; the unit is whatever letters follow, checked
# against the table afterwards so that a typo gets its own message.
_ELEMENT = re.compile(r"(\d+\.?\d*|\.\d+)([^\d.]*)")
_BARE_NUMBER = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)")


class DurationError(ValueError):
    """A value that is not a duration; ``problem`` and ``fix`` are kept apart."""

    def __init__(self, problem: str, fix: str = "") -> None:
        super().__init__(f"{problem}: {fix}" if fix else problem)
        self.problem = problem
        self.fix = fix


def go_seconds(text: str, allow_days: bool = False) -> float:
    """Seconds in ``text``, read exactly as Go's ``time.ParseDuration`` does.

    Like Go, ``"0"`` is the one number allowed without a unit; any other bare
    number is refused because it is ambiguous.
    """
    units = dict(_UNITS, **_DAY) if allow_days else _UNITS
    raw = text.strip()
    body = raw
    sign = 1.0
    if body[:1] in ("+", "-"):
        sign = -1.0 if body[0] == "-" else 1.0
        body = body[1:]
    if body == "0":
        return 0.0
    if not body:
        raise DurationError(f"{text!r} is empty", "write a duration such as 10s, 1m or 1h30m")
    if _BARE_NUMBER.fullmatch(raw):
        raise DurationError(f"{text!r} has no unit", f"add a unit, e.g. {body}s or {body}m")
    total = 0.0
    pos = 0
    while pos < len(body):
        match = _ELEMENT.match(body, pos)
        if match is None:
            raise DurationError(
                f"{text!r} is not a Go duration", "write numbers with units, e.g. 10s, 1m or 1h30m"
            )
        number, unit = match.group(1), match.group(2)
        if not unit:
            raise DurationError(f"{text!r}: {number} has no unit", f"add one, e.g. {number}s")
        if unit not in units:
            raise DurationError(
                f"{text!r}: unknown unit {unit!r}", "use one of ns, us, ms, s, m or h"
            )
        total += float(number) * units[unit]
        pos = match.end()
    return sign * total


def parse_duration(value: object, option: str = "duration") -> datetime.timedelta:
    """A module option's duration: ``87600h``, ``1h30m``, ``30d``; a bare number is seconds."""
    if isinstance(value, bool):
        raise DurationError(f"{option}: {value!r} is not a duration", "write it like 12h or 8760h")
    if isinstance(value, (int, float)):
        return datetime.timedelta(seconds=float(value))
    text = str(value).strip()
    if re.fullmatch(r"\d+", text):
        return datetime.timedelta(seconds=int(text))
    try:
        seconds = go_seconds(text, allow_days=True)
    except DurationError as exc:
        raise DurationError(
            f"{option}: {value!r} is not a duration", "write it like 12h, 30m, 1h30m or 8760h"
        ) from exc
    if seconds < 0:
        raise DurationError(f"{option}: {value!r} is not a duration", "give a positive one")
    return datetime.timedelta(seconds=seconds)


def is_duration(value: object) -> bool:
    """True for strings that read as a Go duration with a unit ("10h", "10h0m0s")."""
    if not isinstance(value, str) or _BARE_NUMBER.fullmatch(value.strip()):
        return False
    try:
        go_seconds(value)
    except DurationError:
        return False
    return True


def format_duration(value: float | datetime.timedelta) -> str:
    """A compact Go spelling that Go and tctl parse back: ``24h``, ``1h30m``, ``500ms``.

    Go's own ``String()`` writes ``24h0m0s``; dropping the zero parts reads
    better and means the same.
    """
    seconds = value.total_seconds() if isinstance(value, datetime.timedelta) else value
    if seconds == 0:
        return "0s"
    sign = "-" if seconds < 0 else ""
    nanos = round(abs(seconds) * 1e9)
    if nanos < 1_000_000_000:
        for unit, size in (("ms", 1_000_000), ("us", 1_000)):
            if nanos % size == 0:
                return f"{sign}{nanos // size}{unit}"
        return f"{sign}{nanos}ns"
    hours, rest = divmod(nanos, 3600 * 1_000_000_000)
    minutes, rest = divmod(rest, 60 * 1_000_000_000)
    parts = []
    if hours:
        parts.append(f"{hours}h")
    if minutes:
        parts.append(f"{minutes}m")
    if rest:
        whole, frac = divmod(rest, 1_000_000_000)
        parts.append(f"{whole}.{frac:09d}".rstrip("0") + "s" if frac else f"{whole}s")
    return sign + "".join(parts)
