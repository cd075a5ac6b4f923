"""Go duration strings (``time.ParseDuration``) to seconds and back.

The Go plugin's flags, TOML keys and environment variables take durations in
Go's syntax (``10s``, ``1h30m``, ``500ms``, ``87600h``), so an existing
configuration must keep parsing the same way here.
"""

from __future__ import annotations

import re

__all__ = ["DurationError", "format_duration", "parse_duration"]

# Seconds per unit. Go accepts both micro signs (U+00B5 and U+03BC) for "us".
_UNITS: dict[str, float] = {
    "ns": 1e-9,
    "us": 1e-6,
    "\u00b5s": 1e-6,
    "\u03bcs": 1e-6,
    "ms": 1e-3,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
}

# One "<number><unit>" element; the unit is whatever letters follow, checked
# against _UNITS afterwards so that a typo gets its own message.
_ELEMENT = re.compile(r"(\d+\.?\d*|\.\d+)([^\d.]*)")
_BARE_NUMBER = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)")


class DurationError(ValueError):
    """A string that Go's ``time.ParseDuration`` would also reject."""

    def __init__(self, problem: str, fix: str) -> None:
        super().__init__(f"{problem}: {fix}")
        self.problem = problem
        self.fix = fix


def parse_duration(text: str) -> float:
    """Seconds in ``text``, a Go duration such as ``1h30m`` or ``500ms``.

    Like Go, ``"0"`` is the one number allowed without a unit; any other bare
    number is refused because it is ambiguous (Go reads it as an error, a
    reader might guess seconds).
    """
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
        if unit not in _UNITS:
            raise DurationError(
                f"{text!r}: unknown unit {unit!r}", "use one of ns, us, ms, s, m or h"
            )
        total += float(number) * _UNITS[unit]
        pos = match.end()
    return sign * total


def format_duration(seconds: float) -> str:
    """A compact Go-style duration: ``24h``, ``1m30s``, ``500ms``, ``0s``.

    Go's own ``String()`` writes ``24h0m0s``; dropping the zero parts reads
    better in logs and still parses back with ``parse_duration``.
    """
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
