"""The optional compiled accelerator: ``accel/``, distribution teleport-event-handler-accel.

Its module, ``teleport_event_handler_accel``, holds C versions of the two
per-event conversions: a payload's JSON (``struct_json``, used by
``events``) and an event's Forward-protocol entry (``forward_entry``, used by
``forward``). Each returns None for whatever it would not produce exactly as
the pure-Python code does, which then does the work. Without the module, or
with ``TELEPORT_EVENT_HANDLER_NO_ACCEL`` set, the forwarder is pure Python
and gives the same bytes.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable
from typing import cast

__all__ = ["CONVERSION", "NO_ACCEL_ENV", "function"]

# Set to any value, the accelerator is not used even when installed.
NO_ACCEL_ENV = "TELEPORT_EVENT_HANDLER_NO_ACCEL"


def _module() -> object | None:
    if os.environ.get(NO_ACCEL_ENV):
        return None
    try:
        return importlib.import_module("teleport_event_handler_accel")
    except ImportError:
        return None


_MODULE = _module()
# Which conversion this process uses, for the start-up log.
CONVERSION = "compiled accelerator" if _MODULE is not None else "pure Python"


def function(name: str) -> Callable[[bytes], bytes | None] | None:
    """The accelerator's ``name``, or None (not installed, turned off, or an
    older build without it)."""
    found = getattr(_MODULE, name, None) if _MODULE is not None else None
    return cast(Callable[[bytes], bytes | None], found) if callable(found) else None
