# Copyright: the teleport-event-handler authors
# Apache License 2.0 (see LICENSE)
"""Go-style durations ("8760h", "1h30m", "90s"), as tctl and Teleport write them.

The modules take TTLs in the same spelling as ``tctl --ttl`` so that a value
can be copied from Teleport's docs; Teleport itself answers with normalised
forms ("10h" comes back as "10h0m0s"), so comparisons go through seconds.
"""

from __future__ import annotations

import datetime
import re

__all__ = ["DurationError", "format_duration", "is_duration", "parse_duration"]

# A "d" unit is accepted for convenience (Go has none); it is converted to
# hours before anything reaches tctl.
_UNITS = {
    "ns": 1e-9,
    "us": 1e-6,
    "\u00b5s": 1e-6,
    "ms": 1e-3,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
    "d": 86400.0,
}
_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|\u00b5s|ms|s|m|h|d)")


class DurationError(ValueError):
    """A value that is not a Go duration."""


def parse_duration(value: object, option: str = "duration") -> datetime.timedelta:
    """Parse a Go duration such as ``87600h`` or ``1h30m``; a bare number is seconds."""
    if isinstance(value, bool):
        raise DurationError(
            f"{option}: {value!r} is not a duration; write it like 12h, 30m or 8760h"
        )
    if isinstance(value, (int, float)):
        return datetime.timedelta(seconds=float(value))
    text = str(value).strip()
    if re.fullmatch(r"\d+", text):
        return datetime.timedelta(seconds=int(text))
    position = 0
    seconds = 0.0
    for match in _PART.finditer(text):
        if match.start() != position:
            break
        seconds += float(match.group(1)) * _UNITS[match.group(2)]
        position = match.end()
    if not text or position != len(text):
        raise DurationError(
            f"{option}: {value!r} is not a duration; write it like 12h, 30m, 1h30m or 8760h"
        )
    return datetime.timedelta(seconds=seconds)


def is_duration(value: object) -> bool:
    """True for strings that read as a Go duration with a unit ("10h", "10h0m0s")."""
    if not isinstance(value, str) or not _PART.search(value):
        return False
    try:
        parse_duration(value)
    except DurationError:
        return False
    return True


def format_duration(value: datetime.timedelta) -> str:
    """The shortest whole-second Go spelling that tctl accepts, e.g. ``8760h`` or ``1h30m``."""
    total = int(value.total_seconds())
    if total <= 0:
        return "0s"
    hours, rest = divmod(total, 3600)
    minutes, seconds = divmod(rest, 60)
    out = ""
    if hours:
        out += f"{hours}h"
    if minutes:
        out += f"{minutes}m"
    if seconds:
        out += f"{seconds}s"
    return out
