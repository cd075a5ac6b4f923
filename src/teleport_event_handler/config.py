"""The forwarder's settings: command-line flags, TOML file and environment in one typed object.

Compatibility with the Go plugin is the point of this module. Every flag name,
environment variable (including the Go code's ``FDWRD_`` typos, next to the
documented ``FDFWD_`` spellings) and TOML key it reads works here unchanged,
and values resolve in the same order kong resolves them:

    command-line flag  >  TOML config file  >  environment variable  >  default

TOML keys follow kong's resolver: a flag ``fluentd-<rest>`` lives under
``[forward.fluentd]`` as ``<rest>``; any flag may also be written in dotted
form (``-`` becomes ``.``), which wins when both are present, so
``teleport-refresh-enabled`` is ``[teleport] refresh.enabled`` and
``lock-enabled`` is ``lock.enabled`` or top-level ``lock-enabled``.

Unlike the Go plugin, unknown TOML keys are errors (naming the closest known
key) and every problem is reported at once, each naming where the value came
from and how to fix it.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import difflib
import os
import re
import stat
import tomllib
import urllib.parse
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, NoReturn

from teleport_event_handler.durations import DurationError, format_duration, go_seconds
from teleport_event_handler.protos import TELEPORT_API_VERSION

__all__ = [
    "OPTIONS",
    "PROG",
    "Config",
    "ConfigError",
    "Option",
    "Problem",
    "add_global_arguments",
    "add_start_arguments",
    "check_config_file",
    "config_from_args",
    "load_config",
    "normalize_bool_args",
]

PROG = "teleport-event-handler"

# Teleport's default event types that carry binary recording data or terminal
# output; the Go plugin skips them in session streams since PR #59651.
DEFAULT_SKIP_SESSION_TYPES = ("print", "desktop.recording")
# The largest page GetUnstructuredEvents serves (Teleport's EventsMaxIterationLimit).
TELEPORT_MAX_PAGE_LIMIT = 10000
# How the forwarder reaches the Auth Service (see teleport.choose_dial).
DIAL_MODES = ("auto", "auth", "proxy")
# How events reach Fluentd: "auto" lets the URL scheme decide (tls:// and tcp:// are Forward).
PROTOCOLS = ("auto", "http", "forward")
LOG_FORMATS = ("text", "json")

_TRUE = frozenset({"1", "t", "true", "y", "yes", "on"})
_FALSE = frozenset({"0", "f", "false", "n", "no", "off"})

# Keys older Go plugin configs carry that the current CLI ignores; accepted so
# those files keep loading.
_IGNORED_TOML_KEYS = {
    ("namespace",): "namespace is ignored: events of every namespace are exported "
    "(the Go plugin stopped reading it too)",
}

_CREDENTIAL_FIX = (
    "write a fresh identity with 'tctl auth sign --format=file --user=<bot user> "
    "--out=<file> --ttl=<ttl>' or let tbot keep it renewed (and set "
    "teleport.refresh.enabled = true so the forwarder reloads it)"
)


# --- problems ----------------------------------------------------------------


@dataclass(frozen=True)
class Problem:
    """One thing wrong with the configuration: where, what, and how to fix it."""

    key: str  # a TOML key, "--flag" or "ENV_VAR (environment)"
    problem: str
    fix: str
    file: str | None = None  # the config file the key lives in, when it does

    def __str__(self) -> str:
        prefix = f"{self.file}: " if self.file else ""
        return f"{prefix}{self.key}: {self.problem}; {self.fix}"


class ConfigError(Exception):
    """The configuration cannot be used; ``problems`` lists every reason found."""

    def __init__(self, problems: Sequence[Problem]) -> None:
        self.problems: tuple[Problem, ...] = tuple(problems)
        super().__init__("\n".join(str(p) for p in self.problems))


class _Invalid(Exception):
    """A single value failed conversion; the caller adds where it came from."""

    def __init__(self, problem: str, fix: str) -> None:
        super().__init__(problem)
        self.problem = problem
        self.fix = fix


# --- the typed result ----------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class Config:
    """Every setting the forwarder runs with, validated; durations in seconds.

    Keyword-only with the CLI's defaults, so code and tests can also build one
    directly: ``Config(fluentd_url=..., fluentd_session_url=..., storage=...,
    teleport_identity=...)``. Only ``load_config`` validates.
    """

    config_path: str | None = None
    debug: bool = False
    # [forward.fluentd]
    fluentd_url: str
    fluentd_session_url: str
    fluentd_cert: str | None = None
    fluentd_key: str | None = None
    fluentd_ca: str | None = None
    fluentd_max_connections: int = 0  # 0 means 2 * concurrency, resolved in __post_init__
    fluentd_batch_size: int = 200
    fluentd_array: bool = True
    fluentd_timeout: float = 30.0
    fluentd_protocol: str = "auto"
    # [teleport]
    teleport_addr: str = "localhost:3025"
    teleport_identity: str | None = None
    teleport_refresh_enabled: bool = False
    teleport_refresh_interval: float = 60.0
    teleport_ca: str | None = None
    teleport_cert: str | None = None
    teleport_key: str | None = None
    teleport_api_version: str = TELEPORT_API_VERSION
    teleport_dial: str = "auto"
    # ingest
    storage: str
    batch: int = 20
    types: tuple[str, ...] = ()
    skip_event_types: tuple[str, ...] = ()
    skip_session_types: tuple[str, ...] = DEFAULT_SKIP_SESSION_TYPES
    start_time: datetime.datetime | None = None
    timeout: float = 5.0
    dry_run: bool = False
    exit_on_last_event: bool = False
    concurrency: int = 5
    window_size: float = 86400.0
    export_workers: int = 0
    # lock
    lock_enabled: bool = False
    lock_failed_attempts_count: int = 3
    lock_period: float = 60.0
    lock_for: float = 0.0
    # observability
    metrics_addr: str | None = None
    log_format: str = "text"
    stuck_after: float = 300.0
    # What loading noticed; the CLI logs them once logging is set up.
    warnings: tuple[str, ...] = field(default=(), compare=False)
    notes: tuple[str, ...] = field(default=(), compare=False)

    def __post_init__(self) -> None:
        if self.fluentd_max_connections == 0:
            # The Go plugin's Validate(): one connection per concurrent session, twice over.
            object.__setattr__(self, "fluentd_max_connections", 2 * self.concurrency)

    @property
    def uses_forward(self) -> bool:
        """Events go to in_forward: protocol forward, or auto with a tls:// or tcp:// URL."""
        if self.fluentd_protocol != "auto":
            return self.fluentd_protocol == "forward"
        return urllib.parse.urlsplit(self.fluentd_url).scheme in ("tls", "tcp")

    def describe(self) -> dict[str, Any]:
        """The settings as plain values for the startup log line (holds no secrets)."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            if f.name in ("warnings", "notes"):
                continue
            value = getattr(self, f.name)
            if f.name in _DURATION_FIELDS:
                value = format_duration(value)
            elif isinstance(value, datetime.datetime):
                value = _rfc3339(value)
            elif isinstance(value, tuple):
                value = list(value)
            out[f.name] = value
        return out


def _rfc3339(value: datetime.datetime) -> str:
    return value.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# --- the option table ------------------------------------------------------------

Kind = Literal["str", "path", "url", "addr", "int", "bool", "duration", "list", "time"]


@dataclass(frozen=True)
class Option:
    """One setting: its flag, its Config field, how to parse it and where else it may come from."""

    flag: str  # long flag without dashes; the Config field is this with '-' -> '_'
    kind: Kind
    env: tuple[str, ...]  # first is the documented spelling
    help: str
    group: str
    required: bool = False
    minimum: float | None = None
    maximum: float | None = None
    ours: bool = False  # not in the Go plugin

    @property
    def field(self) -> str:
        return self.flag.replace("-", "_")

    @property
    def default(self) -> Any:
        if self.flag == "debug":
            return False
        f = Config.__dataclass_fields__[self.field]
        return None if f.default is dataclasses.MISSING else f.default

    def toml_paths(self) -> tuple[tuple[str, ...], ...]:
        """Where kong's TOML resolver looks for this flag, the winning form first."""
        if self.flag.startswith("fluentd-"):
            rest = self.flag[len("fluentd-") :]
            dotted = ("forward", "fluentd", *rest.split("-"))
            plain: tuple[str, ...] = ("forward", "fluentd", rest)
        else:
            dotted = tuple(self.flag.split("-"))
            plain = (self.flag,)
        return (dotted,) if dotted == plain else (dotted, plain)

    @property
    def toml_key(self) -> str:
        """The spelling documentation and messages use (the configure template's)."""
        if self.flag.startswith("fluentd-"):
            return "forward.fluentd." + self.flag[len("fluentd-") :]
        if self.flag.startswith("teleport-"):
            return "teleport." + self.flag[len("teleport-") :].replace("-", ".")
        return self.flag

    def toml_hint(self) -> str:
        head, _, leaf = self.toml_key.rpartition(".")
        if head in ("forward.fluentd", "teleport"):
            return f"'{leaf}' under [{head}]"
        if self.flag.startswith("teleport-"):
            return f"'{self.toml_key[len('teleport.') :]}' under [teleport]"
        return f"top-level '{self.flag}'"

    def how_to_set(self) -> str:
        return f"{self.toml_hint()} in the config file, --{self.flag} or {self.env[0]}"


_FLUENTD = "Fluentd ([forward.fluentd] in the config file)"
_TELEPORT = "Teleport ([teleport] in the config file)"
_INGEST = "ingest (top level in the config file)"
_LOCK = "auto-lock on failed logins (top level in the config file)"
_OBSERVE = "observability (top level in the config file)"

OPTIONS: tuple[Option, ...] = (
    Option("debug", "bool", ("FDFWD_DEBUG",), "log at debug level", "global"),
    # Fluentd
    Option(
        "fluentd-url",
        "url",
        ("FDFWD_FLUENTD_URL",),
        "Fluentd URL that audit events are POSTed to",
        _FLUENTD,
        required=True,
    ),
    Option(
        "fluentd-session-url",
        "url",
        ("FDFWD_FLUENTD_SESSION_URL",),
        "Fluentd URL prefix for session recordings; '.<session id>.log' is appended",
        _FLUENTD,
        required=True,
    ),
    Option(
        "fluentd-cert",
        "path",
        ("FDFWD_FLUENTD_CERT", "FDWRD_FLUENTD_CERT"),
        "client certificate presented to Fluentd (PEM)",
        _FLUENTD,
    ),
    Option(
        "fluentd-key",
        "path",
        ("FDFWD_FLUENTD_KEY", "FDWRD_FLUENTD_KEY"),
        "private key of --fluentd-cert (unencrypted PEM)",
        _FLUENTD,
    ),
    Option(
        "fluentd-ca",
        "path",
        ("FDFWD_FLUENTD_CA", "FDWRD_FLUENTD_CA"),
        "CA bundle that signs Fluentd's server certificate",
        _FLUENTD,
    ),
    Option(
        "fluentd-max-connections",
        "int",
        ("FDFWD_MAX_CONNECTIONS", "FDWRD_MAX_CONNECTIONS", "FDFWD_FLUENTD_MAX_CONNECTIONS"),
        "most HTTP connections to Fluentd at once; 0 means 2 x --concurrency",
        _FLUENTD,
        minimum=0,
    ),
    Option(
        "fluentd-batch-size",
        "int",
        ("FDFWD_FLUENTD_BATCH_SIZE",),
        "most events in one JSON array POST",
        _FLUENTD,
        minimum=1,
        maximum=10000,
        ours=True,
    ),
    Option(
        "fluentd-array",
        "bool",
        ("FDFWD_FLUENTD_ARRAY",),
        "POST events as JSON arrays (false: one event per request, as the Go plugin does)",
        _FLUENTD,
        ours=True,
    ),
    Option(
        "fluentd-timeout",
        "duration",
        ("FDFWD_FLUENTD_TIMEOUT",),
        "time limit for one request to Fluentd",
        _FLUENTD,
        minimum=0,
        ours=True,
    ),
    Option(
        "fluentd-protocol",
        "str",
        ("FDFWD_FLUENTD_PROTOCOL", "FDWRD_FLUENTD_PROTOCOL"),
        "'http' (in_http), 'forward' (in_forward, msgpack with acks) or 'auto' "
        "(tls:// and tcp:// URLs are forward, https:// and http:// are http)",
        _FLUENTD,
        ours=True,
    ),
    # Teleport
    Option(
        "teleport-addr",
        "addr",
        ("FDFWD_TELEPORT_ADDR",),
        "Teleport Auth or Proxy address, host:port",
        _TELEPORT,
    ),
    Option(
        "teleport-identity",
        "path",
        ("FDFWD_TELEPORT_IDENTITY",),
        "identity file from 'tctl auth sign --format=file' or tbot",
        _TELEPORT,
    ),
    Option(
        "teleport-refresh-enabled",
        "bool",
        ("FDFWD_TELEPORT_REFRESH_ENABLED",),
        "re-read the identity file periodically (for tbot-renewed identities)",
        _TELEPORT,
    ),
    Option(
        "teleport-refresh-interval",
        "duration",
        ("FDFWD_TELEPORT_REFRESH_INTERVAL",),
        "how often the identity file is re-read",
        _TELEPORT,
        minimum=0,
    ),
    Option(
        "teleport-ca",
        "path",
        ("FDFWD_TELEPORT_CA",),
        "Teleport host CA (PEM), with --teleport-cert and --teleport-key",
        _TELEPORT,
    ),
    Option(
        "teleport-cert",
        "path",
        ("FDFWD_TELEPORT_CERT", "FDWRD_TELEPORT_CERT"),
        "client certificate for Teleport (PEM), instead of an identity file",
        _TELEPORT,
    ),
    Option(
        "teleport-key",
        "path",
        ("FDFWD_TELEPORT_KEY",),
        "private key of --teleport-cert (PEM)",
        _TELEPORT,
    ),
    Option(
        "teleport-api-version",
        "str",
        ("FDFWD_TELEPORT_API_VERSION",),
        "Teleport API version announced to the Auth Service (the 'version' gRPC metadata); "
        "raise it when the cluster refuses older clients",
        _TELEPORT,
        ours=True,
    ),
    Option(
        "teleport-dial",
        "str",
        ("FDFWD_TELEPORT_DIAL",),
        "how to reach Auth at --teleport-addr: 'auth' (direct), 'proxy' (the Proxy's TLS "
        "routing) or 'auto' (ask the address which it is)",
        _TELEPORT,
        ours=True,
    ),
    # ingest
    Option(
        "storage",
        "path",
        ("FDFWD_STORAGE",),
        "directory for the export cursors",
        _INGEST,
        required=True,
    ),
    Option(
        "batch",
        "int",
        ("FDFWD_BATCH",),
        "events fetched per page (legacy engine); Teleport refuses more than 10000",
        _INGEST,
        minimum=1,
        # Teleport's backends refuse a page limit above defaults.EventsMaxIterationLimit
        # (lib/defaults/defaults.go) with "limit N exceeds 10000" (lib/events/dynamoevents,
        # pgevents, filelog search functions): a larger batch could never be read.
        maximum=TELEPORT_MAX_PAGE_LIMIT,
    ),
    Option(
        "types", "list", ("FDFWD_TYPES",), "export only these event types (comma list)", _INGEST
    ),
    Option(
        "skip-event-types",
        "list",
        ("FDFWD_SKIP_EVENT_TYPES",),
        "audit event types not to export (comma list)",
        _INGEST,
    ),
    Option(
        "skip-session-types",
        "list",
        ("FDFWD_SKIP_SESSION_TYPES",),
        "session recording event types not to export (comma list)",
        _INGEST,
    ),
    Option(
        "start-time",
        "time",
        ("FDFWD_START_TIME",),
        "export events from this RFC3339 time (first run only)",
        _INGEST,
    ),
    Option(
        "timeout",
        "duration",
        ("FDFWD_TIMEOUT",),
        "pause between polls when idle (legacy engine)",
        _INGEST,
        minimum=0,
    ),
    Option(
        "dry-run",
        "bool",
        ("FDFWD_DRY_RUN",),
        "read events from Teleport but do not send them; uses separate storage",
        _INGEST,
    ),
    Option(
        "exit-on-last-event",
        "bool",
        ("FDFWD_EXIT_ON_LAST_EVENT",),
        "exit once every event up to now is exported",
        _INGEST,
    ),
    Option(
        "concurrency",
        "int",
        ("FDFWD_CONCURRENCY",),
        "session recordings exported at once",
        _INGEST,
        minimum=1,
    ),
    Option(
        "window-size",
        "duration",
        ("FDFWD_WINDOW_SIZE",),
        "time window of one events query (legacy engine)",
        _INGEST,
        minimum=0,
    ),
    Option(
        "export-workers",
        "int",
        ("FDFWD_EXPORT_WORKERS",),
        "worker processes that stream and convert bulk export chunks, one chunk each "
        "(0: threads of this process)",
        _INGEST,
        minimum=0,
        ours=True,
    ),
    # lock
    Option(
        "lock-enabled",
        "bool",
        ("FDFWD_LOCKING_ENABLED",),
        "lock users after repeated failed logins",
        _LOCK,
    ),
    Option(
        "lock-failed-attempts-count",
        "int",
        ("FDFWD_LOCKING_FAILED_ATTEMPTS",),
        "failed logins allowed per --lock-period",
        _LOCK,
        minimum=1,
    ),
    Option(
        "lock-period",
        "duration",
        ("FDFWD_LOCKING_PERIOD",),
        "period over which failed logins are counted",
        _LOCK,
        minimum=0,
    ),
    Option(
        "lock-for",
        "duration",
        ("FDFWD_LOCKING_FOR",),
        "how long a lock lasts; 0 means it never expires",
        _LOCK,
    ),
    # observability
    Option(
        "metrics-addr",
        "str",
        ("FDFWD_METRICS_ADDR",),
        "serve Prometheus metrics at http://HOST:PORT/metrics (off when empty)",
        _OBSERVE,
        ours=True,
    ),
    Option(
        "log-format",
        "str",
        ("FDFWD_LOG_FORMAT",),
        "'text' (the Go plugin's lines) or 'json' (one object per line)",
        _OBSERVE,
        ours=True,
    ),
    Option(
        "stuck-after",
        "duration",
        ("FDFWD_STUCK_AFTER",),
        "warn (and set the stuck metric) when nothing was exported for this long "
        "while Teleport holds newer events",
        _OBSERVE,
        minimum=0,
        ours=True,
    ),
)

_BY_FIELD = {opt.field: opt for opt in OPTIONS}
_DURATION_FIELDS = frozenset(opt.field for opt in OPTIONS if opt.kind == "duration")
_BOOL_FLAGS = frozenset(opt.flag for opt in OPTIONS if opt.kind == "bool")
# Durations that must be strictly positive; lock-for may be 0 ("forever").
_POSITIVE_DURATIONS = frozenset(
    opt.field for opt in OPTIONS if opt.kind == "duration" and opt.minimum is not None
)


# --- value conversion ------------------------------------------------------------


def parse_bool(text: str) -> bool:
    """Booleans as Go's strconv.ParseBool reads them, plus yes/no/on/off."""
    lowered = text.strip().lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise _Invalid(f"{text!r} is not a boolean", "write true or false")


def _type_name(value: Any) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a float"
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, datetime.datetime | datetime.date | datetime.time):
        return "a date/time"
    return "a string"


def _need_str(value: Any, example: str) -> str:
    if not isinstance(value, str):
        raise _Invalid(f"got {_type_name(value)}", f"write a quoted string, e.g. {example}")
    return value


def _to_url(value: Any, opt: Option) -> str:
    text = _need_str(value, '"https://fluentd.example.com:8888/test.log"').strip()
    parts = urllib.parse.urlsplit(text)
    example = "https://fluentd.example.com:8888/" + (
        "session" if opt.flag == "fluentd-session-url" else "test.log"
    )
    if parts.scheme not in ("https", "http", "tls", "tcp"):
        raise _Invalid(
            f"{text!r} is not an https:// URL",
            f"write a URL such as {example} (or tls://host:24224/<tag> for Fluentd's in_forward)",
        )
    try:
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError:
        raise _Invalid(f"{text!r} has an invalid port", f"write a URL such as {example}") from None
    if not parts.hostname:
        raise _Invalid(f"{text!r} has no host", f"write a URL such as {example}")
    if opt.flag == "fluentd-session-url" and (parts.query or parts.fragment):
        raise _Invalid(
            f"{text!r} has a query or fragment, but '.<session id>.log' is appended to it",
            f"drop the '?...'/'#...' part, e.g. {example}",
        )
    return text


def _to_addr(value: Any) -> str:
    text = _need_str(value, '"teleport.example.com:443"').strip()
    fix = "write host:port, e.g. teleport.example.com:443 (Proxy) or auth.example.com:3025 (Auth)"
    if "://" in text:
        raise _Invalid(f"{text!r} has a URL scheme", fix)
    host, sep, port = text.rpartition(":")
    if not sep or not host:
        raise _Invalid(f"{text!r} has no port", fix)
    if ":" in host and not (host.startswith("[") and host.endswith("]")):
        raise _Invalid(f"{text!r}: an IPv6 address needs brackets", "write [address]:port")
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise _Invalid(f"{text!r}: port {port!r} is not a number from 1 to 65535", fix)
    return text


def _to_int(value: Any, opt: Option) -> int:
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise _Invalid(f"got {_type_name(value)}", f"write a whole number, e.g. {opt.default}")
    if isinstance(value, str):
        if not re.fullmatch(r"[+-]?\d+", value.strip()):
            raise _Invalid(f"{value!r} is not a whole number", f"write e.g. {opt.default}")
        value = int(value.strip())
    number: int = value
    if (opt.minimum is not None and number < opt.minimum) or (
        opt.maximum is not None and number > opt.maximum
    ):
        raise _Invalid(f"{number} is out of range", f"use {_bounds_text(opt)}")
    return number


def _bounds_text(opt: Option) -> str:
    if opt.maximum is not None:
        return f"a number from {opt.minimum:g} to {opt.maximum:g}"
    if opt.minimum == 0:
        return "0 or more"
    return f"{opt.minimum:g} or more"


def _to_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str):
        return parse_bool(value)
    raise _Invalid(f"got {_type_name(value)}", "write true or false (unquoted in TOML)")


def _to_duration(value: Any, opt: Option) -> float:
    if isinstance(value, int) and not isinstance(value, bool) and value == 0:
        seconds = 0.0
    elif isinstance(value, int | float) and not isinstance(value, bool):
        raise _Invalid(
            f"{value} has no unit", f'add a unit, e.g. "{value}s" (a quoted Go duration)'
        )
    else:
        text = _need_str(value, '"10s"')
        try:
            seconds = go_seconds(text)
        except DurationError as exc:
            raise _Invalid(exc.problem, exc.fix) from None
    if opt.field in _POSITIVE_DURATIONS and seconds <= 0:
        raise _Invalid(f"{format_duration(seconds)} is not positive", "use e.g. 10s or 1m")
    if seconds < 0:
        raise _Invalid(f"{format_duration(seconds)} is negative", "use 0 or a positive duration")
    return seconds


def _to_list(value: Any) -> tuple[str, ...]:
    items: list[str]
    if isinstance(value, str):
        items = value.split(",")
    elif isinstance(value, list) and all(isinstance(v, str) for v in value):
        items = [str(v) for v in value]
    else:
        raise _Invalid(
            f"got {_type_name(value)}",
            'write a comma list "a,b" or an array of strings ["a", "b"]',
        )
    return tuple(item.strip() for item in items if item.strip())


_RFC3339 = re.compile(r"(\d{4}-\d{2}-\d{2})[Tt](\d{2}:\d{2}:\d{2})(\.\d+)?([Zz]|[+-]\d{2}:\d{2})")


def _to_time(value: Any) -> datetime.datetime:
    fix = 'write RFC3339 with a zone, e.g. "2021-05-05T00:00:00Z"'
    if isinstance(value, datetime.datetime):
        if value.tzinfo is None:
            raise _Invalid(f"{value.isoformat()} has no time zone", fix)
        moment = value
    elif isinstance(value, str):
        match = _RFC3339.fullmatch(value.strip())
        if match is None:
            raise _Invalid(f"{value!r} is not an RFC3339 time", fix)
        date, clock, _fraction, zone = match.groups()
        zone = "+00:00" if zone in ("Z", "z") else zone
        try:
            moment = datetime.datetime.fromisoformat(f"{date}T{clock}{zone}")
        except ValueError as exc:
            raise _Invalid(f"{value!r} is not a valid time ({exc})", fix) from None
    else:
        raise _Invalid(f"got {_type_name(value)}", fix)
    # Teleport's state keeps seconds only; truncating here keeps restarts comparable.
    return moment.astimezone(datetime.UTC).replace(microsecond=0)


def _to_api_version(value: Any) -> str:
    """A semantic version, as Teleport parses the client's (lib/auth/middleware.go)."""
    text = _need_str(value, f'"{TELEPORT_API_VERSION}"').strip()
    if not re.fullmatch(r"\d+\.\d+\.\d+(?:-[0-9A-Za-z.-]+)?", text):
        raise _Invalid(
            f"{text!r} is not a Teleport version",
            f"write MAJOR.MINOR.PATCH, e.g. {TELEPORT_API_VERSION} (Teleport refuses other values)",
        )
    return text


def _to_dial(value: Any) -> str:
    text = _need_str(value, '"auto"').strip().lower()
    if text not in DIAL_MODES:
        raise _Invalid(f"{text!r} is not a way to dial Teleport", "write auto, auth or proxy")
    return text


def _to_protocol(value: Any) -> str:
    text = _need_str(value, '"forward"').strip().lower()
    if text not in PROTOCOLS:
        raise _Invalid(f"{text!r} is not a Fluentd protocol", "write auto, http or forward")
    return text


def _to_log_format(value: Any) -> str:
    text = _need_str(value, '"json"').strip().lower()
    if text not in LOG_FORMATS:
        raise _Invalid(f"{text!r} is not a log format", "write text or json")
    return text


def _to_listen_addr(value: Any) -> str | None:
    """Where /metrics listens: HOST:PORT (an empty value turns it off)."""
    text = _need_str(value, '"127.0.0.1:9464"').strip()
    if not text:
        return None
    fix = "write HOST:PORT, e.g. 127.0.0.1:9464 (an empty value turns metrics off)"
    if "://" in text or "/" in text:
        raise _Invalid(f"{text!r} is not HOST:PORT", fix)
    host, sep, port = text.rpartition(":")
    if not sep:
        raise _Invalid(f"{text!r} has no port", fix)
    if ":" in host and not (host.startswith("[") and host.endswith("]")):
        raise _Invalid(f"{text!r}: an IPv6 address needs brackets", "write [address]:port")
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise _Invalid(f"{text!r}: port {port!r} is not a number from 1 to 65535", fix)
    return text


def _convert(opt: Option, value: Any) -> Any:
    if opt.field == "fluentd_protocol":
        return _to_protocol(value)
    if opt.field == "metrics_addr":
        return _to_listen_addr(value)
    if opt.field == "log_format":
        return _to_log_format(value)
    if opt.field == "teleport_api_version":
        return _to_api_version(value)
    if opt.field == "teleport_dial":
        return _to_dial(value)
    if opt.kind == "url":
        return _to_url(value, opt)
    if opt.kind == "addr":
        return _to_addr(value)
    if opt.kind in ("str", "path"):
        text = _need_str(value, '"/var/lib/teleport-event-handler"')
        return text or None
    if opt.kind == "int":
        return _to_int(value, opt)
    if opt.kind == "bool":
        return _to_bool(value)
    if opt.kind == "duration":
        return _to_duration(value, opt)
    if opt.kind == "list":
        return _to_list(value)
    return _to_time(value)


# --- the command line ------------------------------------------------------------


class ArgumentParser(argparse.ArgumentParser):
    """argparse that raises ConfigError instead of exiting, so callers choose the exit code."""

    def error(self, message: str) -> NoReturn:
        fix = f"see '{PROG} {self._command()}--help'"
        match = re.match(r"unrecognized arguments: (\S+)", message)
        if match:
            known = [s for a in self._actions for s in a.option_strings if s.startswith("--")]
            close = difflib.get_close_matches(match.group(1).split("=")[0], known, n=1)
            if close:
                fix = f"did you mean {close[0]}? ({fix})"
        raise ConfigError([Problem("command line", message, fix)])

    def _command(self) -> str:
        words = self.prog.split()[1:]
        return " ".join(words) + " " if words else ""


def add_global_arguments(parser: argparse.ArgumentParser) -> None:
    """-c/--config and -d/--debug; the CLI adds them before and after the subcommand."""
    parser.add_argument(
        "-c",
        "--config",
        dest="config",
        metavar="FILE",
        default=argparse.SUPPRESS,
        help="TOML config file, as the Go plugin reads it ($FDFWD_CONFIG)",
    )
    parser.add_argument(
        "-d",
        "--debug",
        dest="debug",
        action="store_const",
        const="true",
        default=argparse.SUPPRESS,
        help="log at debug level ($FDFWD_DEBUG)",
    )
    parser.add_argument(
        "--no-debug",
        dest="debug",
        action="store_const",
        const="false",
        default=argparse.SUPPRESS,
        help=argparse.SUPPRESS,
    )


def add_start_arguments(parser: argparse.ArgumentParser) -> None:
    """Every `start` flag of the Go plugin plus ours, grouped as in the config file.

    Values are stored as given (strings) and only converted in
    ``config_from_args``, so a bad value is reported the same way whether it
    came from a flag, the file or the environment.
    """
    groups: dict[str, Any] = {}
    for opt in OPTIONS:
        if opt.group == "global":
            continue
        group = groups.get(opt.group)
        if group is None:
            group = groups[opt.group] = parser.add_argument_group(opt.group)
        env = " or ".join("$" + name for name in opt.env)
        default = _default_text(opt)
        suffix = f" [{'required' if opt.required else 'default ' + default}; {env}]"
        if opt.kind == "bool":
            group.add_argument(
                f"--{opt.flag}",
                dest=opt.field,
                action="store_const",
                const="true",
                default=argparse.SUPPRESS,
                help=opt.help + suffix + f" (also --{opt.flag}=false, --no-{opt.flag})",
            )
            group.add_argument(
                f"--no-{opt.flag}",
                dest=opt.field,
                action="store_const",
                const="false",
                default=argparse.SUPPRESS,
                help=argparse.SUPPRESS,
            )
        elif opt.kind == "list":
            group.add_argument(
                f"--{opt.flag}",
                dest=opt.field,
                action="append",
                metavar="A,B",
                default=argparse.SUPPRESS,
                help=opt.help + suffix,
            )
        else:
            group.add_argument(
                f"--{opt.flag}",
                dest=opt.field,
                metavar=_METAVARS[opt.kind],
                default=argparse.SUPPRESS,
                help=opt.help + suffix,
            )


_METAVARS: dict[str, str] = {
    "str": "TEXT",
    "path": "PATH",
    "url": "URL",
    "addr": "HOST:PORT",
    "int": "N",
    "duration": "DURATION",
    "time": "RFC3339",
}


def _default_text(opt: Option) -> str:
    default = opt.default
    if opt.flag == "fluentd-max-connections":
        return "0 (2 x concurrency)"
    if opt.flag == "start-time":
        return "now, on first run"
    if opt.flag == "fluentd-ca":
        return "system trust store"
    if opt.kind == "duration":
        return format_duration(default)
    if opt.kind == "list":
        return ",".join(default) if default else "none"
    if opt.kind == "bool":
        return "true" if default else "false"
    return "none" if default is None else str(default)


def normalize_bool_args(argv: Sequence[str]) -> list[str]:
    """Turn ``--flag=true|false`` and ``--flag true|false`` into ``--flag``/``--no-flag``.

    kong accepts ``--flag=false``; argparse's store_const does not. The
    space-separated form is what the Go plugin's guide suggests removing
    ("the --teleport-refresh-enabled true flag"), so it is accepted too.
    """
    out: list[str] = []
    args = list(argv)
    i = 0
    while i < len(args):
        token = args[i]
        i += 1
        if token == "--":
            out.extend(args[i - 1 :])
            break
        name, eq, value = token[2:].partition("=") if token.startswith("--") else ("", "", "")
        if token == "-d":
            name = "debug"
        if name.startswith("no-") and name[3:] in _BOOL_FLAGS and eq:
            raise ConfigError(
                [Problem(f"--{name}", "takes no value", f"write --{name} or --{name[3:]}=false")]
            )
        if name not in _BOOL_FLAGS:
            out.append(token)
            continue
        if not eq and i < len(args) and args[i].lower() in ("true", "false"):
            eq, value = "=", args[i]
            i += 1
        if not eq:
            out.append(token)
            continue
        try:
            flag_value = parse_bool(value)
        except _Invalid as exc:
            raise ConfigError(
                [
                    Problem(
                        f"--{name}",
                        exc.problem,
                        f"write --{name}, --{name}=true, --{name}=false or --no-{name}",
                    )
                ]
            ) from None
        out.append(f"--{name}" if flag_value else f"--no-{name}")
    return out


def start_parser() -> ArgumentParser:
    parser = ArgumentParser(
        prog=f"{PROG} start", description="Start log ingestion", allow_abbrev=False
    )
    add_global_arguments(parser)
    add_start_arguments(parser)
    return parser


# --- resolution ------------------------------------------------------------------


@dataclass
class _Origin:
    kind: Literal["flag", "file", "env", "default"]
    key: str  # as shown in messages
    file: str | None = None


@dataclass
class _Resolution:
    """Everything resolved so far; check_config_file keeps going after problems."""

    config_path: str | None
    values: dict[str, Any] = field(default_factory=dict)
    origins: dict[str, _Origin] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    fatal: bool = False  # the file could not be read: other checks would only add noise

    def label(self, name: str) -> tuple[str, str | None]:
        """How a field is named in a message: where it came from, or where to set it."""
        origin = self.origins.get(name)
        if origin is not None and origin.kind != "default":
            return origin.key, origin.file
        opt = _BY_FIELD[name]
        if self.config_path:
            return opt.toml_key, self.config_path
        return f"--{opt.flag}", None

    def add(self, name: str, problem: str, fix: str) -> None:
        key, file = self.label(name)
        self.problems.append(Problem(key, problem, fix, file))

    def warn(self, name: str, message: str) -> None:
        key, file = self.label(name)
        self.warnings.append(f"{file + ': ' if file else ''}{key}: {message}")


_MISSING: Any = object()


def _get_path(tree: Mapping[str, Any], path: tuple[str, ...]) -> Any:
    node: Any = tree
    for part in path:
        if not isinstance(node, dict) or part not in node:
            return _MISSING
        node = node[part]
    return node


def _read_toml(path: str, res: _Resolution) -> dict[str, Any]:
    key = "config file"
    try:
        with open(path, "rb") as handle:
            return tomllib.load(handle)
    except FileNotFoundError:
        res.problems.append(
            Problem(key, f"{path} does not exist", "give the path of an existing TOML file")
        )
    except IsADirectoryError:
        res.problems.append(Problem(key, f"{path} is a directory", "give a TOML file"))
    except PermissionError:
        res.problems.append(
            Problem(key, f"{path} is not readable by uid {os.getuid()}", "grant read access")
        )
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        res.problems.append(Problem("TOML syntax", str(exc), "correct the file", path))
    except OSError as exc:
        res.problems.append(Problem(key, f"{path}: {exc.strerror}", "check the path"))
    res.fatal = True
    return {}


def _known_toml_paths() -> dict[tuple[str, ...], Option | None]:
    known: dict[tuple[str, ...], Option | None] = {}
    for opt in OPTIONS:
        for path in opt.toml_paths():
            known[path] = opt
    for path in _IGNORED_TOML_KEYS:
        known[path] = None
    return known


_KNOWN_TOML = _known_toml_paths()
_TOML_PREFIXES = frozenset(path[:i] for path in _KNOWN_TOML for i in range(1, len(path)))


def _unknown_keys(
    tree: Mapping[str, Any], prefix: tuple[str, ...] = ()
) -> Iterator[tuple[str, ...]]:
    for key, value in tree.items():
        path = (*prefix, key)
        if path in _KNOWN_TOML:
            continue
        if path in _TOML_PREFIXES and isinstance(value, dict):
            yield from _unknown_keys(value, path)
        else:
            yield path


def _check_toml_keys(tree: Mapping[str, Any], res: _Resolution) -> None:
    known = sorted(".".join(p) for p in _KNOWN_TOML)
    for path in _unknown_keys(tree):
        name = ".".join(path)
        close = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
        if close:
            fix = f"did you mean {close[0]}? Otherwise remove it"
        else:
            fix = f"remove it; the keys are the start flags, see '{PROG} start --help'"
        res.problems.append(Problem(name, "unknown key", fix, res.config_path))
    for path, message in _IGNORED_TOML_KEYS.items():
        if _get_path(tree, path) is not _MISSING:
            res.notes.append(f"{res.config_path}: {message}")


def _from_env(opt: Option, environ: Mapping[str, str], res: _Resolution) -> Any:
    # An empty variable counts as unset, as systemd's "X=" lines mean it.
    found = [(name, environ[name]) for name in opt.env if environ.get(name, "") != ""]
    if not found:
        return _MISSING
    name, value = found[0]
    differing = [other for other, v in found[1:] if v != value]
    if differing:
        res.problems.append(
            Problem(
                f"{name} (environment)",
                f"disagrees with {', '.join(differing)}, which set the same option",
                "set only one of them",
            )
        )
    res.origins[opt.field] = _Origin("env", f"{name} (environment)")
    return value


def _resolve(args: Mapping[str, Any], environ: Mapping[str, str]) -> _Resolution:
    config_path = args.get("config") or environ.get("FDFWD_CONFIG") or None
    res = _Resolution(config_path=config_path)
    tree: dict[str, Any] = {}
    if config_path:
        tree = _read_toml(config_path, res)
        if res.fatal:
            return res
        _check_toml_keys(tree, res)

    for opt in OPTIONS:
        raw: Any = _MISSING
        given = args.get(opt.field)
        if given is not None:
            raw = ",".join(given) if isinstance(given, list) else given
            res.origins[opt.field] = _Origin("flag", f"--{opt.flag}")
        if raw is _MISSING:
            found = [(p, _get_path(tree, p)) for p in opt.toml_paths()]
            found = [(p, v) for p, v in found if v is not _MISSING]
            if found:
                path, raw = found[0]
                res.origins[opt.field] = _Origin("file", ".".join(path), config_path)
                if len(found) > 1:
                    res.warn(
                        opt.field,
                        f"also set as {'.'.join(found[1][0])}; the dotted form wins, "
                        "as in the Go plugin: remove one",
                    )
        if raw is _MISSING:
            raw = _from_env(opt, environ, res)
        if raw is _MISSING:
            res.origins[opt.field] = _Origin("default", opt.toml_key)
            res.values[opt.field] = opt.default
            continue
        try:
            res.values[opt.field] = _convert(opt, raw)
        except _Invalid as exc:
            res.add(opt.field, exc.problem, exc.fix)
            res.values[opt.field] = None
    _cross_check(res)
    return res


def _check_protocol(res: _Resolution) -> None:
    """Both URLs must suit the protocol; tcp:// is taken only when written out."""
    protocol = res.values.get("fluentd_protocol") or "auto"
    schemes = {}
    for name in ("fluentd_url", "fluentd_session_url"):
        url = res.values.get(name)
        if isinstance(url, str):
            schemes[name] = urllib.parse.urlsplit(url).scheme
    forward = {name for name, scheme in schemes.items() if scheme in ("tls", "tcp")}
    if protocol == "auto" and forward and len(forward) != len(schemes):
        res.add(
            sorted(set(schemes) - forward)[0],
            "is an in_http URL while the other Fluentd URL is tls:// or tcp:// (in_forward)",
            "send both to the same kind of receiver: tls://host:24224/tag for both, "
            "or https:// for both",
        )
    elif protocol == "http" and forward:
        res.add(
            sorted(forward)[0],
            "is a tls:// or tcp:// URL, but the Fluentd protocol is http",
            "give an https:// URL, or set the protocol to forward",
        )
    elif protocol == "forward":
        for name, scheme in schemes.items():
            if scheme == "http":
                res.add(
                    name,
                    "is http://, but the Fluentd protocol is forward",
                    "write tls://host:port/tag (or tcp:// to choose no encryption)",
                )
    for name, scheme in schemes.items():
        if scheme == "tcp":
            res.warn(
                name,
                "tcp:// sends events to in_forward unencrypted and without client "
                "certificates; use tls:// for mutual TLS",
            )


def _cross_check(res: _Resolution) -> None:
    values = res.values

    def given(name: str) -> bool:
        return values.get(name) is not None and res.origins[name].kind != "default"

    def names(fields: Sequence[str]) -> str:
        return ", ".join(res.label(f)[0] for f in fields)

    for name in ("fluentd_url", "fluentd_session_url", "storage"):
        if res.origins[name].kind == "default" or (
            values.get(name) is None and not _has_problem(res, name)
        ):
            res.add(name, "required but not set", "set " + _BY_FIELD[name].how_to_set())

    for name in ("fluentd_url", "fluentd_session_url"):
        url = values.get(name)
        if isinstance(url, str) and url.startswith("http://"):
            res.warn(
                name,
                "http:// sends events unencrypted and without client certificates; "
                "use https:// for mutual TLS",
            )

    _check_protocol(res)

    cert, key = given("fluentd_cert"), given("fluentd_key")
    if cert != key:
        missing, present = (
            ("fluentd_key", "fluentd_cert") if cert else ("fluentd_cert", "fluentd_key")
        )
        res.add(
            missing,
            f"not set, but {names([present])} is",
            "give the client certificate and its key together, or neither",
        )

    trio = ("teleport_cert", "teleport_key", "teleport_ca")
    have = [f for f in trio if given(f)]
    if given("teleport_identity"):
        if have:
            res.add(
                "teleport_identity",
                f"set together with {names(have)}",
                "use either an identity file or cert, key and ca, not both",
            )
    elif not have:
        res.add(
            "teleport_identity",
            "no Teleport credentials are set",
            "point 'identity' under [teleport] in the config file (or --teleport-identity, "
            "FDFWD_TELEPORT_IDENTITY) at an identity file from 'tctl auth sign --format=file' "
            "or tbot, or set cert, key and ca together",
        )
    elif len(have) < len(trio):
        lacking = [f for f in trio if f not in have]
        res.add(
            lacking[0],
            f"not set, but {names(have)} {'is' if len(have) == 1 else 'are'}",
            f"set {names(trio)} all together, or use an identity file instead",
        )

    if values.get("teleport_refresh_enabled") and not given("teleport_identity"):
        res.warn(
            "teleport_refresh_enabled",
            "has no effect without an identity file (only identity files are reloaded)",
        )


def _has_problem(res: _Resolution, name: str) -> bool:
    key, file = res.label(name)
    return any(p.key == key and p.file == file for p in res.problems)


def _build(res: _Resolution) -> Config:
    if res.problems:
        raise ConfigError(res.problems)
    values = dict(res.values)
    return Config(
        config_path=res.config_path,
        warnings=tuple(res.warnings),
        notes=tuple(res.notes),
        **values,
    )


def config_from_args(
    args: Mapping[str, Any], environ: Mapping[str, str], *, check_files: bool = False
) -> Config:
    """A validated Config from parsed `start` arguments (argparse's dest -> raw value).

    With ``check_files`` (``start``), every file the settings name is opened
    and checked as ``check-config`` does, so a missing, unreadable or wrong
    file is a configuration error (exit 2) naming it, before anything runs.
    """
    res = _resolve(args, environ)
    if check_files and not res.fatal:
        _FileChecker(res, times=False).run()
    return _build(res)


def load_config(argv: Sequence[str], environ: Mapping[str, str]) -> Config:
    """Parse the `start` command's arguments, read the TOML file and environment, validate.

    Raises ConfigError listing every problem found. Referenced files are not
    opened here; the app checks them when it uses them.
    """
    namespace = start_parser().parse_args(normalize_bool_args(argv))
    return config_from_args(vars(namespace), environ)


# --- check-config ------------------------------------------------------------------


def check_config_file(path: str, environ: Mapping[str, str] | None = None) -> Config:
    """Load ``path`` (plus the environment) as `start --config path` would, then check its files.

    Beyond ``load_config`` this opens every referenced file: it must exist and
    be readable, certificates must parse and be valid now, keys must parse and
    match their certificates, and an identity file must parse and not be
    expired. Every problem is reported in one ConfigError.
    """
    res = _resolve({"config": path}, os.environ if environ is None else environ)
    if not res.fatal:
        _FileChecker(res).run()
    return _build(res)


class _FileChecker:
    """Open and check every file the settings name.

    ``times`` also reports certificates that expired or are not valid yet;
    ``start`` leaves that to the Teleport client, which refuses an expired
    identity with exit 1 (a renewal, not a configuration change, fixes it).
    """

    def __init__(self, res: _Resolution, *, times: bool = True) -> None:
        from teleport_event_handler import pki  # deferred: cryptography is slow to import

        self.pki = pki
        self.res = res
        self.now = pki.utcnow()
        self.times = times

    def run(self) -> None:
        values = self.res.values
        identity = self._read("teleport_identity", secret=True)
        if identity is not None:
            self._check_identity(identity)
        for cert_field, key_field in (
            ("fluentd_cert", "fluentd_key"),
            ("teleport_cert", "teleport_key"),
        ):
            cert = self._read(cert_field)
            key = self._read(key_field, secret=True)
            cert_obj = self._certificate(cert_field, cert) if cert is not None else None
            key_obj = self._private_key(key_field, key) if key is not None else None
            matched = cert_obj is None or key_obj is None
            if not matched and not self.pki.key_matches_cert(key_obj, cert_obj):
                self.res.add(
                    key_field,
                    f"does not match the certificate {values[cert_field]}",
                    "give the key the certificate was issued for",
                )
        for ca_field in ("fluentd_ca", "teleport_ca"):
            data = self._read(ca_field)
            if data is not None:
                self._ca_bundle(ca_field, data)
        storage = values.get("storage")
        if isinstance(storage, str) and os.path.exists(storage) and not os.path.isdir(storage):
            self.res.add("storage", f"{storage} is not a directory", "point it at a directory")

    def _read(self, name: str, secret: bool = False) -> bytes | None:
        path = self.res.values.get(name)
        if not isinstance(path, str):
            return None
        try:
            info = os.stat(path)
            if stat.S_ISDIR(info.st_mode):
                self.res.add(name, f"{path} is a directory", "give the path of a file")
                return None
            with open(path, "rb") as handle:
                data = handle.read(4 * 1024 * 1024)
        except FileNotFoundError:
            where = "" if os.path.isabs(path) else f" (relative to {os.getcwd()})"
            self.res.add(
                name,
                f"{path} does not exist{where}",
                "create it or correct the path; absolute paths are safest",
            )
            return None
        except PermissionError:
            self.res.add(
                name,
                f"{path} is not readable by uid {os.getuid()}",
                "grant read access to the user that runs the forwarder",
            )
            return None
        except OSError as exc:
            self.res.add(name, f"{path}: {exc.strerror}", "check the path")
            return None
        if secret and info.st_mode & 0o077:
            self.res.warn(
                name,
                f"{path} is readable by group or others (mode {stat.S_IMODE(info.st_mode):04o}); "
                f"chmod 600 {path}",
            )
        return data

    def _valid_now(self, name: str, cert: Any, what: str, fix: str) -> bool:
        if not self.times:
            return True
        info = self.pki.cert_info(cert)
        if info.not_after <= self.now:
            self.res.add(name, f"{what} expired at {_rfc3339(info.not_after)}", fix)
            return False
        if info.not_before > self.now:
            self.res.add(
                name,
                f"{what} is not valid before {_rfc3339(info.not_before)}",
                "check this host's clock, or wait",
            )
            return False
        return True

    def _certificate(self, name: str, data: bytes) -> Any:
        path = self.res.values[name]
        try:
            cert = self.pki.load_certificate(data, source=path)
        except self.pki.PkiError as exc:
            self.res.add(name, str(exc), "give a PEM certificate")
            return None
        fix = (
            "issue a new client certificate (e.g. with the teleport.event_handler.fluentd_mtls "
            "module)"
            if name == "fluentd_cert"
            else "issue a new certificate with 'tctl auth sign', or use an identity file"
        )
        # An expired certificate is still returned: its key match is worth reporting too.
        self._valid_now(name, cert, f"the certificate in {path}", fix)
        return cert

    def _private_key(self, name: str, data: bytes) -> Any:
        path = self.res.values[name]
        if b"ENCRYPTED" in data.split(b"\n", 2)[0] + data[:200]:
            self.res.add(
                name,
                f"{path} is encrypted",
                "give an unencrypted key: the forwarder has no passphrase setting",
            )
            return None
        try:
            return self.pki.load_private_key(data, source=path)
        except self.pki.PkiError as exc:
            self.res.add(name, str(exc), "give an unencrypted PEM private key")
            return None

    def _ca_bundle(self, name: str, data: bytes) -> None:
        path = self.res.values[name]
        try:
            certs = self.pki.load_certificates(data, source=path)
        except self.pki.PkiError as exc:
            self.res.add(name, str(exc), "give a PEM CA certificate bundle")
            return
        valid = [
            c
            for c in certs
            if self.pki.cert_info(c).not_before <= self.now < self.pki.cert_info(c).not_after
        ]
        if not valid:
            latest = max(self.pki.cert_info(c).not_after for c in certs)
            self.res.add(
                name,
                f"no certificate in {path} is valid now (latest expiry {_rfc3339(latest)})",
                "give the current CA certificate",
            )

    def _check_identity(self, data: bytes) -> None:
        name = "teleport_identity"
        path = self.res.values[name]
        try:
            parts = self.pki.parse_identity_file(data, source=path)
            cert = self.pki.load_certificate(parts.tls_cert_pem, source=f"{path} (TLS certificate)")
            key = self.pki.load_private_key(parts.private_key_pem, source=f"{path} (private key)")
        except self.pki.PkiError as exc:
            self.res.add(name, str(exc), _CREDENTIAL_FIX)
            return
        self._valid_now(name, cert, f"the identity in {path}", _CREDENTIAL_FIX)
        if not self.pki.key_matches_cert(key, cert):
            self.res.add(
                name,
                f"{path}: the private key does not match the TLS certificate",
                _CREDENTIAL_FIX,
            )
        if not parts.tls_ca_pems:
            self.res.add(
                name,
                f"{path} holds no TLS CA certificates, so Teleport's server cannot be verified",
                _CREDENTIAL_FIX,
            )
