"""Fault injection for the sandbox Teleport server.

Faults live in ``D/faults.json`` so that a test can change them while the
server runs (``sandbox-teleport faults --data-dir D set unavailable=0.5``);
the server re-reads the file whenever its mtime changes. ``serve --fault``
writes the file at startup, so every ``serve`` starts with exactly the faults
its command line names.

Keys (``KEY=VALUE``):

``unavailable``        fraction 0..1 of calls failing with UNAVAILABLE
``deadline``           fraction 0..1 of calls failing with DEADLINE_EXCEEDED
``not_found``          fraction 0..1 of calls failing with NOT_FOUND; for
                       ExportUnstructuredEvents the listed chunk has vanished
``whole_seconds``      compare GetUnstructuredEvents windows in whole seconds, as
                       DynamoDB does: every event of a boundary second matches
``latency_ms``         delay before every reply
``drop_stream_after``  abort server streams with UNAVAILABLE after N messages
``oversized_events``   serve the > 1 MiB events made by ``init --oversized`` (default true)
``unknown_types``      serve the unknown-type events made by ``init --unknown`` (default true)
``methods``            comma list of method names the call faults apply to (default: all)
``seed``               seed of the per-call draws, so a run is repeatable
``oldest_client_version``  refuse clients whose ``version`` metadata is older than
                       this (or not a semantic version) with PERMISSION_DENIED,
                       as a cluster that rejects old clients does
``missing_recordings`` comma list of session ids whose recording is not uploaded
                       yet: StreamUnstructuredSessionEvents answers NOT_FOUND
``malformed_recordings``  comma list of session ids whose recording holds an
                       event that cannot be decoded at index 1: the stream sends
                       index 0, then fails with UNKNOWN

Draws come from one seeded RNG per fault setting: the same sequence of calls
sees the same failures, which keeps tests deterministic enough.
"""

from __future__ import annotations

import json
import os
import random
import re
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from teleport_sandbox.teleport.corpus import FLAG_OVERSIZED, FLAG_UNKNOWN

__all__ = [
    "FAULTS_FILE",
    "METHODS",
    "CallFaults",
    "FaultError",
    "FaultInjector",
    "Faults",
    "clear_faults",
    "parse_assignments",
    "read_faults",
    "update_faults",
    "write_faults",
]

FAULTS_FILE = "faults.json"
METHODS = (
    "GetUnstructuredEvents",
    "GetEventExportChunks",
    "ExportUnstructuredEvents",
    "StreamUnstructuredSessionEvents",
    "Ping",
    "UpsertLock",
)
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


class FaultError(ValueError):
    """A bad fault setting; the message names the key and a valid example."""


@dataclass(frozen=True)
class Faults:
    unavailable: float = 0.0
    deadline: float = 0.0
    not_found: float = 0.0
    whole_seconds: bool = False
    latency_ms: float = 0.0
    drop_stream_after: int = 0
    oversized_events: bool = True
    unknown_types: bool = True
    methods: frozenset[str] = frozenset()
    seed: int = 0
    oldest_client_version: str = ""
    missing_recordings: frozenset[str] = frozenset()
    malformed_recordings: frozenset[str] = frozenset()

    @property
    def hidden_flags(self) -> int:
        """Corpus flags of the events the server must leave out."""
        return (0 if self.oversized_events else FLAG_OVERSIZED) | (
            0 if self.unknown_types else FLAG_UNKNOWN
        )


@dataclass(frozen=True)
class CallFaults:
    """What to do to one call."""

    fail: str | None  # "unavailable", "deadline" or "not_found"
    latency_s: float
    drop_stream_after: int
    hidden_flags: int
    oldest_client_version: str = ""
    whole_seconds: bool = False


def _fraction(key: str, value: Any) -> float:
    try:
        out = float(value)
    except (TypeError, ValueError):
        out = -1.0
    if not 0.0 <= out <= 1.0:
        raise FaultError(f"{key}={value!r}: must be a fraction from 0 to 1, e.g. {key}=0.25")
    return out


def _non_negative_int(key: str, value: Any) -> int:
    try:
        out = int(value)
    except (TypeError, ValueError):
        out = -1
    if out < 0 or (isinstance(value, float) and not value.is_integer()):
        raise FaultError(f"{key}={value!r}: must be a whole number >= 0, e.g. {key}=100")
    return out


def _non_negative(key: str, value: Any) -> float:
    try:
        out = float(value)
    except (TypeError, ValueError):
        out = -1.0
    if out < 0:
        raise FaultError(f"{key}={value!r}: must be a number >= 0, e.g. {key}=250")
    return out


def _boolean(key: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise FaultError(f"{key}={value!r}: must be true or false, e.g. {key}=false")


def _methods(key: str, value: Any) -> list[str]:
    items = value if isinstance(value, list) else str(value).split(",")
    names = [str(v).strip() for v in items if str(v).strip()]
    for name in names:
        if name not in METHODS:
            raise FaultError(
                f"{key}={value!r}: unknown method {name!r}; choose from {', '.join(METHODS)}"
            )
    return names


def _names(key: str, value: Any) -> list[str]:
    items = value if isinstance(value, list) else str(value).split(",")
    return [str(v).strip() for v in items if str(v).strip()]


def _semver(key: str, value: Any) -> str:
    text = str(value).strip()
    if not re.fullmatch(r"\d+\.\d+\.\d+(?:-[0-9A-Za-z.-]+)?", text):
        raise FaultError(f"{key}={value!r}: must be a version like 17.0.0, e.g. {key}=16.0.0")
    return text


_PARSERS: dict[str, Any] = {
    "unavailable": _fraction,
    "deadline": _fraction,
    "not_found": _fraction,
    "whole_seconds": _boolean,
    "latency_ms": _non_negative,
    "drop_stream_after": _non_negative_int,
    "oversized_events": _boolean,
    "unknown_types": _boolean,
    "methods": _methods,
    "seed": _non_negative_int,
    "oldest_client_version": _semver,
    "missing_recordings": _names,
    "malformed_recordings": _names,
}


def _validate(values: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in values.items():
        parser = _PARSERS.get(key)
        if parser is None:
            raise FaultError(f"unknown fault {key!r}; known: {', '.join(_PARSERS)}")
        out[key] = parser(key, value)
    if sum(out.get(k, 0.0) for k in ("unavailable", "deadline", "not_found")) > 1.0:
        raise FaultError(
            "unavailable + deadline + not_found must not exceed 1 (they share one draw per call)"
        )
    return out


def parse_assignments(items: Iterable[str]) -> dict[str, Any]:
    """``["unavailable=0.5", "latency_ms=20"]`` → validated, JSON-ready values."""
    raw: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise FaultError(f"fault {item!r} is not KEY=VALUE, e.g. unavailable=0.5")
        raw[key.strip()] = value.strip()
    return _validate(raw)


def _faults(values: Mapping[str, Any]) -> Faults:
    checked = _validate(values)
    return Faults(
        unavailable=checked.get("unavailable", 0.0),
        deadline=checked.get("deadline", 0.0),
        not_found=checked.get("not_found", 0.0),
        whole_seconds=checked.get("whole_seconds", False),
        latency_ms=checked.get("latency_ms", 0.0),
        drop_stream_after=checked.get("drop_stream_after", 0),
        oversized_events=checked.get("oversized_events", True),
        unknown_types=checked.get("unknown_types", True),
        methods=frozenset(checked.get("methods", ())),
        seed=checked.get("seed", 0),
        oldest_client_version=checked.get("oldest_client_version", ""),
        missing_recordings=frozenset(checked.get("missing_recordings", ())),
        malformed_recordings=frozenset(checked.get("malformed_recordings", ())),
    )


def _path(data_dir: str) -> str:
    return os.path.join(data_dir, FAULTS_FILE)


def read_faults(data_dir: str) -> dict[str, Any]:
    """The current settings in ``D/faults.json`` ({} when there is none)."""
    path = _path(data_dir)
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except FileNotFoundError:
        return {}
    except json.JSONDecodeError as exc:
        raise FaultError(
            f"{path}: not valid JSON ({exc}); fix it or run "
            f"`sandbox-teleport faults --data-dir {data_dir} clear`"
        ) from None
    if not isinstance(data, dict):
        raise FaultError(f"{path}: expected a JSON object of fault settings")
    try:
        return _validate(data)
    except FaultError as exc:
        raise FaultError(f"{path}: {exc}") from None


def write_faults(data_dir: str, values: Mapping[str, Any]) -> dict[str, Any]:
    """Replace ``D/faults.json`` atomically with validated ``values``."""
    checked = _validate(values)
    path = _path(data_dir)
    tmp = f"{path}.{os.getpid()}.{threading.get_ident()}.tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(checked, f, indent=2, sort_keys=True)
        f.write("\n")
    os.replace(tmp, path)
    return checked


def update_faults(data_dir: str, updates: Mapping[str, Any]) -> dict[str, Any]:
    """Merge ``updates`` into the current settings (``faults set``)."""
    merged = dict(read_faults(data_dir))
    merged.update(updates)
    return write_faults(data_dir, merged)


def clear_faults(data_dir: str) -> None:
    write_faults(data_dir, {})


class FaultInjector:
    """Per-call fault decisions, following ``D/faults.json`` as it changes."""

    def __init__(self, data_dir: str) -> None:
        self.data_dir = data_dir
        self._path = _path(data_dir)
        self._lock = threading.Lock()
        self._mtime: int | None = None
        self.faults = Faults()
        self._rng = random.Random(0)
        self.error: str | None = None  # last unreadable-file message, for the log
        self._reload()

    def _reload(self) -> None:
        try:
            mtime: int | None = os.stat(self._path).st_mtime_ns
        except FileNotFoundError:
            mtime = None
        if mtime == self._mtime:
            return
        with self._lock:
            if mtime == self._mtime:
                return
            self._mtime = mtime
            try:
                values = read_faults(self.data_dir)
            except FaultError as exc:
                # Keep the previous faults: a half-edited file must not flap the server.
                self.error = str(exc)
                return
            self.error = None
            self.faults = _faults(values)
            self._rng = random.Random(self.faults.seed)

    def current(self) -> Faults:
        self._reload()
        return self.faults

    def for_call(self, method: str) -> CallFaults:
        faults = self.current()
        applies = not faults.methods or method in faults.methods
        fail: str | None = None
        if applies and (faults.unavailable or faults.deadline or faults.not_found):
            with self._lock:
                draw = self._rng.random()
            if draw < faults.unavailable:
                fail = "unavailable"
            elif draw < faults.unavailable + faults.deadline:
                fail = "deadline"
            elif draw < faults.unavailable + faults.deadline + faults.not_found:
                fail = "not_found"
        return CallFaults(
            fail=fail,
            latency_s=faults.latency_ms / 1000.0 if applies else 0.0,
            drop_stream_after=faults.drop_stream_after if applies else 0,
            hidden_flags=faults.hidden_flags,
            oldest_client_version=faults.oldest_client_version,
            whole_seconds=faults.whole_seconds,
        )
