"""What in_http makes of a request body, and how out_file/out_stdout write records.

Event times are integer nanoseconds since the epoch, like Fluentd's EventTime.
"""

from __future__ import annotations

import datetime
import glob
import math
import os
import re
import sys
import threading
import time
import urllib.parse
import zoneinfo
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import IO, Any

import orjson

from .conf import ConfigError, FormatConfig, MatchConfig, ParseConfig, SourceConfig

__all__ = [
    "BadRequest",
    "EmitError",
    "FileOutput",
    "NullOutput",
    "Output",
    "RecordParser",
    "StdoutOutput",
    "TimeParser",
    "make_output",
    "read_events",
    "read_records",
]

# A record is normally a JSON object; in_http with <parse> also emits other values.
Event = tuple[int, Any]
_NS = 1_000_000_000


class BadRequest(Exception):
    """The body cannot become records; in_http answers 400 with this message."""


class EmitError(Exception):
    """An output refused the events; in_http answers 500 with this message."""


_RUBY_CLASSES = {bool: "TrueClass", int: "Integer", float: "Float", str: "String", list: "Array"}


def _require_hashes(events: list[Event]) -> None:
    """A buffered output takes only Hash (or nil) records, all or nothing
    (Fluentd 1.16 lib/fluent/plugin/output.rb #metadata, called for every
    record before any is written)."""
    for _, record in events:
        if record is not None and not isinstance(record, dict):
            name = _RUBY_CLASSES.get(type(record), type(record).__name__)
            if record is False:
                name = "FalseClass"
            raise EmitError(f"record must be a Hash: {name}")


# --- time --------------------------------------------------------------------

_MONTHS = ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"]
_DIRECTIVES: dict[str, str] = {
    "Y": r"(?P<Y>[+-]?\d{4})",
    "y": r"(?P<y>\d{2})",
    "m": r"(?P<m>\d{1,2})",
    "d": r"(?P<d>\d{1,2})",
    "e": r"\s?(?P<d>\d{1,2})",
    "j": r"(?P<j>\d{1,3})",
    "H": r"(?P<H>\d{1,2})",
    "k": r"\s?(?P<H>\d{1,2})",
    "I": r"(?P<I>\d{1,2})",
    "M": r"(?P<M>\d{1,2})",
    "S": r"(?P<S>\d{1,2})",
    "L": r"(?P<f>\d+)",
    "N": r"(?P<f>\d+)",
    "p": r"(?P<p>[AaPp][Mm])",
    "b": r"(?P<b>[A-Za-z]{3})",
    "h": r"(?P<b>[A-Za-z]{3})",
    "B": r"(?P<b>[A-Za-z]{3})[A-Za-z]*",
    "a": r"[A-Za-z]{3}",
    "A": r"[A-Za-z]+",
    "z": r"(?P<z>Z|[+-]\d{2}:?\d{2}|UTC|GMT)",
    "Z": r"(?P<z>Z|[+-]\d{2}:?\d{2}|[A-Za-z]+)",
    "s": r"(?P<s>-?\d+)",
    "%": "%",
}
_COMPOSITES = {"T": "%H:%M:%S", "F": "%Y-%m-%d", "D": "%m/%d/%y", "R": "%H:%M"}


def _strptime_regex(fmt: str) -> re.Pattern[str]:
    for short, expanded in _COMPOSITES.items():
        fmt = fmt.replace("%" + short, expanded)
    out: list[str] = []
    i = 0
    while i < len(fmt):
        char = fmt[i]
        if char == "%":
            spec = fmt[i + 1 : i + 2]
            if spec in ("3", "6", "9") and fmt[i + 2 : i + 3] == "N":
                spec, i = "N", i + 1
            if spec not in _DIRECTIVES:
                raise ValueError(f"%{spec} is not supported by the sandbox's time_format")
            out.append(_DIRECTIVES[spec])
            i += 2
        elif char.isspace():
            out.append(r"\s*")
            i += 1
        else:
            out.append(re.escape(char))
            i += 1
    try:
        # Anchored at the start only: like Ruby's strptime, Fluentd ignores what
        # follows the format (Teleport's ".919Z" after %S).
        return re.compile("".join(out))
    except re.error as exc:
        raise ValueError(f"a directive appears twice ({exc})") from exc


def _zone(name: str) -> datetime.tzinfo:
    offset = re.fullmatch(r"([+-])(\d{2}):?(\d{2})", name)
    if offset:
        sign = -1 if offset.group(1) == "-" else 1
        minutes = int(offset.group(2)) * 60 + int(offset.group(3))
        return datetime.timezone(sign * datetime.timedelta(minutes=minutes))
    if name.upper() in ("Z", "UTC", "GMT"):
        return datetime.UTC
    return zoneinfo.ZoneInfo(name)


class TimeParser:
    """The ``time`` value of a record → nanoseconds, as ``<parse>`` says.

    ``time_type string`` with ``time_format`` uses a strptime subset;
    without a format an ISO 8601 value is read. ``float``/``unixtime`` take
    numbers (or numeric strings); ``mixed`` takes either.
    """

    def __init__(self, parse: ParseConfig, where: str = "<parse>") -> None:
        self.time_type = parse.time_type
        self._regex: re.Pattern[str] | None = None
        if parse.time_format and parse.time_type in ("string", "mixed"):
            try:
                self._regex = _strptime_regex(parse.time_format)
            except ValueError as exc:
                raise ConfigError(f"{where}: time_format {parse.time_format!r}: {exc}") from exc
        self._zone: datetime.tzinfo | None = None
        if parse.utc:
            self._zone = datetime.UTC
        elif parse.timezone:
            try:
                self._zone = _zone(parse.timezone)
            except (zoneinfo.ZoneInfoNotFoundError, ValueError) as exc:
                raise ConfigError(
                    f"{where}: timezone {parse.timezone!r} is unknown: write e.g. +09:00 or "
                    "Asia/Tokyo"
                ) from exc

    def __call__(self, value: object) -> int:
        if isinstance(value, bool):
            raise ValueError(f"invalid time value {value!r}")
        if self.time_type in ("float", "unixtime", "mixed") and isinstance(value, int | float):
            return self._numeric(float(value))
        if not isinstance(value, str):
            raise ValueError(f"invalid time value {value!r}: expected a {self.time_type} time")
        if self.time_type in ("float", "unixtime"):
            try:
                return self._numeric(float(value))
            except ValueError:
                raise ValueError(f"invalid time value {value!r}: expected a number") from None
        return self._string(value)

    def _numeric(self, seconds: float) -> int:
        if self.time_type == "unixtime":
            return int(seconds) * _NS
        return _seconds_to_ns(seconds)

    def _string(self, value: str) -> int:
        if self._regex is None:
            try:
                parsed = datetime.datetime.fromisoformat(value)
            except ValueError:
                raise ValueError(f"invalid time format: value = {value}") from None
            return self._to_ns(parsed, 0)
        match = self._regex.match(value)
        if not match:
            raise ValueError(f"invalid time format: value = {value}")
        parts = match.groupdict()
        if parts.get("s") is not None:
            return int(parts["s"]) * _NS + _fraction(parts.get("f"))
        now = datetime.datetime.now()
        year = int(parts["Y"]) if parts.get("Y") else now.year
        if parts.get("y"):
            short = int(parts["y"])
            year = 2000 + short if short < 69 else 1900 + short
        month = int(parts["m"]) if parts.get("m") else now.month
        if parts.get("b"):
            try:
                month = _MONTHS.index(parts["b"].lower()) + 1
            except ValueError:
                raise ValueError(f"invalid time format: value = {value}") from None
        day = int(parts["d"]) if parts.get("d") else now.day
        hour = int(parts["H"]) if parts.get("H") else 0
        if parts.get("I"):
            hour = int(parts["I"]) % 12 + (12 if (parts.get("p") or "").lower() == "pm" else 0)
        try:
            parsed = datetime.datetime(
                year,
                month,
                day,
                hour,
                int(parts["M"]) if parts.get("M") else 0,
                int(parts["S"]) if parts.get("S") else 0,
            )
            if parts.get("j"):
                parsed = parsed.replace(month=1, day=1) + datetime.timedelta(
                    days=int(parts["j"]) - 1
                )
            if parts.get("z"):
                parsed = parsed.replace(tzinfo=_zone(parts["z"]))
        except (ValueError, zoneinfo.ZoneInfoNotFoundError):
            raise ValueError(f"invalid time format: value = {value}") from None
        return self._to_ns(parsed, _fraction(parts.get("f")))

    def _to_ns(self, parsed: datetime.datetime, fraction_ns: int) -> int:
        if parsed.tzinfo is None:
            # No zone in the value: utc/timezone from <parse>, else local time.
            parsed = parsed.replace(tzinfo=self._zone) if self._zone else parsed.astimezone()
        whole = int(parsed.replace(microsecond=0).timestamp())
        return whole * _NS + (fraction_ns or parsed.microsecond * 1000)


_RUBY_FLOAT = re.compile(r"\s*[+-]?(?:\d[\d_]*)?(?:\.\d+)?(?:[eE][+-]?\d+)?")


def _query_time(query: str, now: int) -> int | None:
    """``?time=``: Ruby's String#to_f of it; 0 (or no number) means now (in_http.rb #on_request)."""
    if not query:
        return None
    values = urllib.parse.parse_qs(query, keep_blank_values=True).get("time")
    if not values:
        return None
    match = _RUBY_FLOAT.match(values[0])
    text = match.group(0).replace("_", "").strip() if match else ""
    try:
        seconds = float(text) if text not in ("", "+", "-", ".") else 0.0
    except ValueError:
        seconds = 0.0
    return now if seconds == 0.0 else _seconds_to_ns(seconds)


def _seconds_to_ns(seconds: float) -> int:
    whole = math.floor(seconds)  # split first: a double cannot hold 19 digits
    return whole * _NS + round((seconds - whole) * _NS)


def _fraction(digits: str | None) -> int:
    return int(digits[:9].ljust(9, "0")) if digits else 0


# --- bodies --------------------------------------------------------------------


def _loads(data: bytes | str) -> Any:
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise BadRequest(f"failed to parse JSON body: {exc}") from None


class RecordParser:
    """in_http's body → events, for one ``<source>``."""

    def __init__(self, source: SourceConfig, where: str = "<source>") -> None:
        self.parse_config = source.parse
        self.custom = source.parse.type == "json"
        self.time_key = source.parse.time_key
        self.keep_time_key = source.parse.keep_time_key
        self.add_http_headers = source.add_http_headers
        self.add_remote_addr = source.add_remote_addr
        self._time = TimeParser(source.parse, where)

    def parse(
        self,
        body: bytes,
        content_type: str | None,
        query: str = "",
        headers: Mapping[str, str] | None = None,
        remote_addr: str | None = None,
    ) -> list[Event]:
        """Fluentd 1.16 lib/fluent/plugin/in_http.rb #on_request, for one body."""
        now = time.time_ns()
        query_time = _query_time(query, now)
        if self.custom:
            # #parse_params_with_parser: the parser reads the whole body and,
            # for an object, its time key (even when ?time= overrides it);
            # JSON null is "Received event is not json".
            value = _loads(body)
            if value is None:
                raise BadRequest(f"Received event is not json: {body[:200]!r}")
        else:
            value = self._default_body(body, (content_type or "").lower(), query)
        events: list[Event] = []
        if isinstance(value, list):
            # Batched: each element is emitted as it is; with <parse> even a
            # number or a string (parser.rb #parse_time passes non-Hashes by),
            # without it #convert_time_field fails on them (400).
            for item in value:
                if query_time is not None:
                    events.append((query_time, item))
                elif self.custom:
                    events.append(
                        (self._event_time(item, now) if isinstance(item, dict) else now, item)
                    )
                elif isinstance(item, dict):
                    events.append((self._event_time(item, now), item))
                else:
                    raise BadRequest(f"undefined method for {type(item).__name__} record")
        else:
            if isinstance(value, dict) and (self.custom or query_time is None):
                when = self._event_time(value, now)
            elif self.custom or query_time is not None:
                when = now
            else:
                raise BadRequest(f"undefined method for {type(value).__name__} record")
            events.append((when if query_time is None else query_time, value))
        if events and (self.add_http_headers or self.add_remote_addr):
            if not all(isinstance(record, dict) for _, record in events):
                raise BadRequest("cannot add HTTP headers to a record that is not an object")
            self._decorate(events, headers or {}, remote_addr)
        return events

    def _default_body(self, body: bytes, content_type: str, query: str) -> Any:
        """in_http without ``<parse>``: the Content-Type decides."""
        if content_type.startswith("application/json"):
            return _loads(body)
        if content_type.startswith("application/x-ndjson"):
            return [_loads(line) for line in body.splitlines() if line.strip()]
        params = urllib.parse.parse_qs(query)
        if content_type.startswith("application/x-www-form-urlencoded"):
            params.update(urllib.parse.parse_qs(body.decode("utf-8", "replace")))
        if "json" in params:
            return _loads(params["json"][-1])
        if "ndjson" in params:
            return [_loads(line) for line in params["ndjson"][-1].splitlines() if line.strip()]
        raise BadRequest("'json', 'ndjson' or 'msgpack' parameter is required")

    def _event_time(self, record: dict[str, Any], now: int) -> int:
        key = self.time_key
        if key not in record:
            return now
        value = record[key] if self.keep_time_key else record.pop(key)
        if not self.custom:
            # in_http's own reading: Time.at(number).
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise BadRequest(f"time must be a number, got {value!r}")
            return _seconds_to_ns(float(value))
        try:
            return self._time(value)
        except ValueError as exc:
            raise BadRequest(str(exc)) from None

    def _decorate(
        self, events: list[Event], headers: Mapping[str, str], remote_addr: str | None
    ) -> None:
        extra: dict[str, str] = {}
        if self.add_http_headers:
            for name, value in headers.items():
                extra["HTTP_" + name.upper().replace("-", "_")] = value
        if self.add_remote_addr and remote_addr is not None:
            forwarded = headers.get("x-forwarded-for")
            extra["REMOTE_ADDR"] = forwarded.split(",")[0].strip() if forwarded else remote_addr
        for _, record in events:
            record.update(extra)


# --- outputs -------------------------------------------------------------------


def _local_or_utc(event_ns: int, utc: bool) -> time.struct_time:
    seconds = event_ns // _NS
    return time.gmtime(seconds) if utc else time.localtime(seconds)


def _offset(moment: time.struct_time, colon: bool) -> str:
    offset = moment.tm_gmtoff or 0
    sign = "-" if offset < 0 else "+"
    hours, minutes = divmod(abs(offset) // 60, 60)
    return f"{sign}{hours:02d}{':' if colon else ''}{minutes:02d}"


def _format_line(fmt: FormatConfig, tag: str, event_ns: int, record: dict[str, Any]) -> bytes:
    body = orjson.dumps(record)
    if fmt.type == "json":
        return body + b"\n"
    moment = time.localtime(event_ns // _NS)
    if fmt.type == "stdout":
        stamp = time.strftime("%Y-%m-%d %H:%M:%S", moment)
        nanos = event_ns % _NS
        head = f"{stamp}.{nanos:09d} {_offset(moment, False)} {tag}: "
        return head.encode() + body + b"\n"
    parts: list[bytes] = []
    if fmt.output_time:
        parts.append((time.strftime("%Y-%m-%dT%H:%M:%S", moment) + _offset(moment, True)).encode())
    if fmt.output_tag:
        parts.append(tag.encode())
    parts.append(body)
    return fmt.delimiter.encode().join(parts) + b"\n"


class Output:
    """One ``<match>``'s plugin: ``emit`` buffers, ``flush`` writes."""

    def __init__(self, match: MatchConfig) -> None:
        self.match = match
        self.flush_interval = match.flush_interval

    def emit(self, tag: str, events: list[Event]) -> None:
        raise NotImplementedError

    def flush(self) -> None:
        return None

    def close(self) -> None:
        self.flush()


class NullOutput(Output):
    def emit(self, tag: str, events: list[Event]) -> None:
        return None


class StdoutOutput(Output):
    def __init__(self, match: MatchConfig, stream: IO[bytes] | None = None) -> None:
        super().__init__(match)
        self._stream = stream
        self._lock = threading.Lock()
        self._pending: list[bytes] = []

    def emit(self, tag: str, events: list[Event]) -> None:
        fmt = self.match.format
        lines = [_format_line(fmt, tag, when, record) for when, record in events]
        with self._lock:
            self._pending.extend(lines)

    def flush(self) -> None:
        with self._lock:
            pending, self._pending = self._pending, []
        if pending:
            stream = self._stream or sys.stdout.buffer
            stream.write(b"".join(pending))
            stream.flush()


def _slice_format(timekey: float) -> str:
    if timekey >= 86400:
        return "%Y%m%d"
    if timekey >= 3600:
        return "%Y%m%d%H"
    return "%Y%m%d%H%M"


class FileOutput(Output):
    """out_file: records go to time-sliced files, as Fluentd names them.

    For ``path /x/y`` (no placeholders) and the default buffer (timekey 1d),
    Fluentd writes ``/x/y.<YYYYMMDD>.log`` with ``append true`` and
    ``/x/y.<YYYYMMDD>_<n>.log`` (one new file per chunk, n = 0, 1, ...)
    without it; a smaller timekey gives ``%Y%m%d%H`` or ``%Y%m%d%H%M``; the date
    is the event time in local time unless ``timekey_use_utc``. A path with
    ``%`` placeholders is strftime'd instead of suffixed, and ``${tag}`` is the
    tag. Real Fluentd writes a day's chunk only after the day ends; the
    sandbox writes on every flush (``flush_interval``, default 0.2 s) so that
    tests can read what was accepted.
    """

    def __init__(self, match: MatchConfig) -> None:
        super().__init__(match)
        assert match.path is not None
        self._template = match.path
        self._has_time = "%" in match.path
        self._slice = _slice_format(match.timekey)
        self._lock = threading.Lock()
        self._write_lock = threading.Lock()
        self._pending: dict[tuple[str, str], list[bytes]] = {}

    def _key(self, tag: str, event_ns: int) -> tuple[str, str]:
        moment = _local_or_utc(event_ns, self.match.timekey_use_utc)
        if self._has_time:
            return (
                tag if "${tag}" in self._template else "",
                time.strftime(self._template, moment),
            )
        return (tag if "${tag}" in self._template else "", time.strftime(self._slice, moment))

    def emit(self, tag: str, events: list[Event]) -> None:
        _require_hashes(events)
        fmt = self.match.format
        groups: dict[tuple[str, str], list[bytes]] = {}
        for when, record in events:
            groups.setdefault(self._key(tag, when), []).append(_format_line(fmt, tag, when, record))
        with self._lock:
            for key, lines in groups.items():
                self._pending.setdefault(key, []).extend(lines)

    def path_for(self, tag: str, sliced: str, index: int | None) -> str:
        match = self.match
        base = sliced if self._has_time else f"{self._template}.{sliced}"
        base = base.replace("${tag}", tag)
        if not match.append:
            base += f"_{index or 0}"
        return base + (match.path_suffix if match.add_path_suffix else "")

    def flush(self) -> None:
        with self._write_lock:
            with self._lock:
                pending, self._pending = self._pending, {}
            for (tag, sliced), lines in pending.items():
                index = 0
                target = self.path_for(tag, sliced, index)
                if not self.match.append:
                    while os.path.exists(target):
                        index += 1
                        target = self.path_for(tag, sliced, index)
                os.makedirs(os.path.dirname(os.path.abspath(target)), exist_ok=True)
                with open(target, "ab") as handle:
                    handle.write(b"".join(lines))


def make_output(match: MatchConfig, stdout: IO[bytes] | None = None) -> Output:
    factories: dict[str, Callable[[], Output]] = {
        "file": lambda: FileOutput(match),
        "stdout": lambda: StdoutOutput(match, stdout),
        "null": lambda: NullOutput(match),
    }
    return factories[match.type]()


# --- reading what was written --------------------------------------------------


def _sort_key(path: str) -> list[Any]:
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", path)]


def read_events(path_prefix: str | Path) -> list[tuple[str | None, str | None, dict[str, Any]]]:
    """(time, tag, record) of every line in the files starting with ``path_prefix``.

    Lines in out_file's format give time and tag; JSON lines give (None,
    None, record). Files are read in name order (date, then chunk index),
    each in write order.
    """
    out: list[tuple[str | None, str | None, dict[str, Any]]] = []
    for name in sorted(glob.glob(glob.escape(str(path_prefix)) + "*"), key=_sort_key):
        if not os.path.isfile(name):
            continue
        with open(name, "rb") as handle:
            for line in handle:
                line = line.rstrip(b"\n")
                if not line:
                    continue
                if line.startswith(b"{") or b"\t" not in line:
                    out.append((None, None, orjson.loads(line)))
                    continue
                when, tag, body = line.split(b"\t", 2)
                out.append((when.decode(), tag.decode(), orjson.loads(body)))
    return out


def read_records(path_prefix: str | Path) -> list[dict[str, Any]]:
    """Every record written to the files starting with ``path_prefix``."""
    return [record for _, _, record in read_events(path_prefix)]
