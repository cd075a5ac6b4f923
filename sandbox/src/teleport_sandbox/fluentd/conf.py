"""Read the part of Fluentd's ``fluent.conf`` language that a generated config uses.

The syntax follows Fluentd v1: ``<section arg>`` blocks, ``key value`` lines,
``#`` comments (also after a value, when preceded by a blank), double-quoted
values with backslash escapes and single-quoted literal values, ``@type`` with
the deprecated ``type`` spelling still accepted. The meaning follows Fluentd
v1.16: parameters a plugin does not know are warned about and ignored, and a
``<buffer>`` inside ``<source>`` is warned about exactly as Fluentd does,
because in_http has no buffer. Anything that would make the sandbox behave
differently from a real Fluentd without saying so is an error naming the
line and the fix.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field

__all__ = [
    "TLS_VERSIONS",
    "ConfigError",
    "Element",
    "FluentConfig",
    "FormatConfig",
    "ForwardSourceConfig",
    "MatchConfig",
    "ParseConfig",
    "SourceConfig",
    "TagRouter",
    "TlsConfig",
    "compile_pattern",
    "load_config",
    "parse_bool",
    "parse_config",
    "parse_size",
    "parse_time_span",
]

# <transport tls> version names (Fluentd v1.16 lib/fluent/tls.rb SUPPORTED_VERSIONS).
TLS_VERSIONS = ("TLSv1_1", "TLSv1_2", "TLSv1_3", "TLS1_1", "TLS1_2", "TLS1_3")
# in_http's defaults (Fluentd v1.16 plugin/in_http.rb).
DEFAULT_PORT = 9880
DEFAULT_BODY_SIZE_LIMIT = 32 * 1024 * 1024
DEFAULT_KEEPALIVE_TIMEOUT = 10.0
# A sandbox must not listen on every interface by accident: without ``bind``
# it listens on loopback, where Fluentd would take 0.0.0.0. ``bind 0.0.0.0``
# is honoured when written.
SANDBOX_DEFAULT_BIND = "127.0.0.1"
# in_forward's default port (Fluentd v1.16 lib/fluent/plugin/in_forward.rb DEFAULT_LISTEN_PORT).
DEFAULT_FORWARD_PORT = 24224


class ConfigError(Exception):
    """A fluent.conf the sandbox cannot run; the message names file, line and fix."""


@dataclass
class Param:
    value: str
    line: int


@dataclass
class Element:
    """One ``<name arg>`` section with its parameters and subsections."""

    name: str
    arg: str
    line: int
    params: dict[str, Param] = field(default_factory=dict)
    children: list[Element] = field(default_factory=list)


@dataclass(frozen=True)
class TlsConfig:
    cert_path: str
    private_key_path: str
    private_key_passphrase: str | None
    ca_path: str | None
    client_cert_auth: bool
    min_version: str | None
    max_version: str | None
    ciphers: str | None
    line: int
    # Fluentd's ``version`` (lib/fluent/tls.rb DEFAULT_VERSION): with neither
    # min_version nor max_version, the one protocol spoken.
    version: str = "TLSv1_2"


@dataclass(frozen=True)
class ParseConfig:
    """``<parse>``; ``type`` is "in_http" when the source has no ``<parse>``.

    Without ``<parse>``, in_http reads the body by its Content-Type (JSON,
    NDJSON) and takes a numeric ``time`` key; with ``<parse> @type json`` any
    body is JSON and ``time`` is read with ``time_type``/``time_format``.
    """

    type: str = "in_http"
    time_key: str = "time"
    time_type: str = "float"
    time_format: str | None = None
    keep_time_key: bool = False
    utc: bool = False
    timezone: str | None = None
    line: int = 0


@dataclass(frozen=True)
class SourceConfig:
    port: int = DEFAULT_PORT
    bind: str = SANDBOX_DEFAULT_BIND
    body_size_limit: int = DEFAULT_BODY_SIZE_LIMIT
    keepalive_timeout: float = DEFAULT_KEEPALIVE_TIMEOUT
    tls: TlsConfig | None = None
    parse: ParseConfig = ParseConfig()
    add_http_headers: bool = False
    add_remote_addr: bool = False
    use_204_response: bool = False
    line: int = 0


@dataclass(frozen=True)
class ForwardSourceConfig:
    """``<source> @type forward`` (in_forward): msgpack messages, acks for ``chunk``.

    ``chunk_size_limit``: a message larger than this is dropped without an
    ack (in_forward.rb #on_message). ``skip_invalid_event``: entries whose
    time is not an integer or EventTime, or whose record is not a map, are
    dropped instead of emitted (#invalid_event?).
    """

    port: int = DEFAULT_FORWARD_PORT
    bind: str = SANDBOX_DEFAULT_BIND
    tls: TlsConfig | None = None
    chunk_size_limit: int | None = None
    skip_invalid_event: bool = False
    deny_keepalive: bool = False
    line: int = 0


@dataclass(frozen=True)
class FormatConfig:
    """``<format>`` of an output: "json", "out_file" or "stdout"."""

    type: str
    delimiter: str = "\t"
    output_tag: bool = True
    output_time: bool = True


@dataclass(frozen=True)
class MatchConfig:
    patterns: tuple[str, ...]
    type: str
    line: int
    path: str | None = None
    append: bool = False
    add_path_suffix: bool = True
    path_suffix: str = ".log"
    format: FormatConfig = FormatConfig("out_file")
    flush_interval: float | None = None
    # out_file slices files by the buffer's timekey (1 day unless <buffer> says).
    timekey: float = 86400.0
    timekey_use_utc: bool = False


@dataclass(frozen=True)
class FluentConfig:
    path: str
    source: SourceConfig
    matches: tuple[MatchConfig, ...]
    warnings: tuple[str, ...]
    forward: ForwardSourceConfig | None = None


# --- values ------------------------------------------------------------------

_TRUE = {"true", "yes", ""}
_FALSE = {"false", "no"}
_SIZE_UNITS = {"k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4}
_TIME_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_bool(value: str) -> bool:
    lowered = value.strip().lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise ValueError(f"{value!r} is not a boolean: write true or false")


def parse_size(value: str) -> int:
    """Fluentd sizes: ``32m``, ``10k``, ``1g``, plain bytes (1024-based units)."""
    match = re.fullmatch(r"\s*(\d+)\s*([kmgtKMGT])?[bB]?\s*", value)
    if not match:
        raise ValueError(f"{value!r} is not a size: write e.g. 32m, 512k or 1048576")
    unit = match.group(2)
    return int(match.group(1)) * (_SIZE_UNITS[unit.lower()] if unit else 1)


def parse_time_span(value: str) -> float:
    """Fluentd durations: ``10s``, ``1m``, ``2h``, ``1d``, ``0.5``, ``0.5s``."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhd])?\s*", value)
    if not match:
        raise ValueError(f"{value!r} is not a duration: write e.g. 10s, 1m or 0.5")
    unit = match.group(2)
    return float(match.group(1)) * (_TIME_UNITS[unit] if unit else 1.0)


# --- syntax --------------------------------------------------------------------

_OPEN = re.compile(r"<([A-Za-z_][\w-]*)(?:\s+([^>]*?))?\s*>\s*(?:#.*)?")
_CLOSE = re.compile(r"</([A-Za-z_][\w-]*)\s*>\s*(?:#.*)?")
_PARAM = re.compile(r"(@?[A-Za-z_][\w.-]*)(?:\s+(.*))?")
_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "\\": "\\", '"': '"', "0": "\0", "#": "#"}


def _value(raw: str, where: str) -> str:
    raw = raw.strip()
    if raw.startswith('"'):
        out: list[str] = []
        i = 1
        while i < len(raw):
            char = raw[i]
            if char == "\\" and i + 1 < len(raw):
                out.append(_ESCAPES.get(raw[i + 1], "\\" + raw[i + 1]))
                i += 2
                continue
            if char == '"':
                rest = raw[i + 1 :].strip()
                if rest and not rest.startswith("#"):
                    raise ConfigError(f"{where}: text after the closing quote: remove {rest!r}")
                return "".join(out)
            out.append(char)
            i += 1
        raise ConfigError(f'{where}: unterminated double-quoted value: add the closing "')
    if raw.startswith("'"):
        # Literal, but for \' and \\ (Fluentd's lib/fluent/config/literal_parser.rb
        # #scan_single_quoted_string).
        chars: list[str] = []
        i = 1
        while i < len(raw):
            if raw.startswith(("\\'", "\\\\"), i):
                chars.append(raw[i + 1])
                i += 2
                continue
            if raw[i] == "'":
                rest = raw[i + 1 :].strip()
                if rest and not rest.startswith("#"):
                    raise ConfigError(f"{where}: text after the closing quote: remove {rest!r}")
                return "".join(chars)
            chars.append(raw[i])
            i += 1
        raise ConfigError(f"{where}: unterminated single-quoted value: add the closing '")
    # Unquoted: a '#' after a blank starts a comment, as in Fluentd v1.
    return re.split(r"\s#", raw, maxsplit=1)[0].strip()


def parse_config(text: str, path: str = "fluent.conf") -> Element:
    """The syntax tree of ``text``; the root element is named "ROOT"."""
    root = Element("ROOT", "", 0)
    stack = [root]
    for number, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        where = f"{path}:{number}"
        closing = _CLOSE.fullmatch(stripped)
        if closing:
            name = closing.group(1)
            current = stack[-1]
            if current is root:
                raise ConfigError(f"{where}: </{name}> closes nothing: remove it")
            if name != current.name:
                raise ConfigError(
                    f"{where}: </{name}> closes <{current.name}> opened at line "
                    f"{current.line}: write </{current.name}>"
                )
            stack.pop()
            continue
        opening = _OPEN.fullmatch(stripped)
        if opening:
            element = Element(opening.group(1), (opening.group(2) or "").strip(), number)
            stack[-1].children.append(element)
            stack.append(element)
            continue
        if stripped.startswith("<"):
            raise ConfigError(f"{where}: cannot read {stripped!r}: write <name> or <name arg>")
        param = _PARAM.fullmatch(stripped)
        if not param:
            raise ConfigError(f"{where}: cannot read {stripped!r}: write 'key value'")
        key = param.group(1)
        if key == "@include":
            raise ConfigError(f"{where}: @include is not supported by the sandbox: inline the file")
        stack[-1].params[key] = Param(_value(param.group(2) or "", where), number)
    if len(stack) > 1:
        open_element = stack[-1]
        raise ConfigError(
            f"{path}:{open_element.line}: <{open_element.name}> is never closed: "
            f"add </{open_element.name}>"
        )
    return root


# --- meaning -------------------------------------------------------------------


class _Section:
    """Reads typed parameters of one element and warns about unused ones."""

    def __init__(self, element: Element, path: str, label: str, warnings: list[str]) -> None:
        self.element = element
        self.path = path
        self.label = label
        self.warnings = warnings
        self.used: set[str] = {"@id", "@log_level"}
        self.plugin = ""

    def where(self, key: str | None = None) -> str:
        if key is not None and key in self.element.params:
            return f"{self.path}:{self.element.params[key].line}"
        return f"{self.path}:{self.element.line}"

    def raw(self, key: str) -> str | None:
        self.used.add(key)
        param = self.element.params.get(key)
        return None if param is None else param.value

    def plugin_type(self, hint: str) -> str:
        value = self.raw("@type")
        if value is None and "type" in self.element.params:
            value = self.raw("type")
            self.warnings.append(
                f"{self.where('type')}: 'type' is deprecated parameter name. use '@type' instead."
            )
        if not value:
            raise ConfigError(f"{self.where()}: {self.label} has no @type: add '@type {hint}'")
        self.plugin = f" of {value} plugin"
        return value

    def convert(self, key: str, kind: str, default: object) -> object:
        value = self.raw(key)
        if value is None:
            return default
        try:
            if kind == "bool":
                return parse_bool(value)
            if kind == "size":
                return parse_size(value)
            if kind == "time":
                return parse_time_span(value)
            if kind == "int":
                return int(value)
        except ValueError as exc:
            raise ConfigError(f"{self.where(key)}: {key} in {self.label}: {exc}") from exc
        return value

    def text(self, key: str, default: str | None = None) -> str | None:
        value = self.raw(key)
        return default if value is None else value

    def flag(self, key: str, default: bool) -> bool:
        return bool(self.convert(key, "bool", default))

    def accept(self, keys: Iterable[str]) -> None:
        """Parameters that are valid for the real plugin but change nothing here."""
        self.used.update(keys)

    def finish(self, known_sections: Iterable[str] = ()) -> None:
        for key, param in self.element.params.items():
            if key not in self.used:
                self.warnings.append(
                    f"{self.path}:{param.line}: parameter '{key}' in {self.label} is not used."
                )
        allowed = set(known_sections)
        for child in self.element.children:
            if child.name not in allowed:
                self.warnings.append(
                    f"{self.path}:{child.line}: section <{child.name}> is not used in "
                    f"{self.label}{self.plugin}"
                )


_BUFFER_PARAMS = [
    "@type",
    "path",
    "timekey",
    "timekey_wait",
    "timekey_use_utc",
    "timekey_zone",
    "chunk_limit_size",
    "chunk_limit_records",
    "total_limit_size",
    "queue_limit_length",
    "chunk_full_threshold",
    "queued_chunks_limit_size",
    "compress",
    "flush_at_shutdown",
    "flush_mode",
    "flush_interval",
    "flush_thread_count",
    "flush_thread_interval",
    "flush_thread_burst_interval",
    "delayed_commit_timeout",
    "overflow_action",
    "retry_timeout",
    "retry_forever",
    "retry_max_times",
    "retry_secondary_threshold",
    "retry_type",
    "retry_wait",
    "retry_exponential_backoff_base",
    "retry_max_interval",
    "retry_randomize",
    "disable_chunk_backup",
    "type",
]


def _children(element: Element, name: str) -> list[Element]:
    return [child for child in element.children if child.name == name]


def _tls(element: Element, path: str, warnings: list[str]) -> TlsConfig:
    if element.arg not in ("tls",):
        raise ConfigError(
            f"{path}:{element.line}: <transport {element.arg}> is not served by the sandbox: "
            "write <transport tls> or remove the section for plain HTTP"
        )
    section = _Section(element, path, "<transport tls>", warnings)
    cert_path = section.text("cert_path")
    key_path = section.text("private_key_path")
    if not cert_path or not key_path:
        raise ConfigError(
            f"{section.where()}: <transport tls> needs cert_path and private_key_path: give "
            "the server certificate and its key (the sandbox does not generate one)"
        )
    client_cert_auth = section.flag("client_cert_auth", False)
    ca_path = section.text("ca_path")
    for version_key in ("min_version", "max_version", "version"):
        value = section.text(version_key)
        if value is not None and value not in TLS_VERSIONS:
            raise ConfigError(
                f"{section.where(version_key)}: {version_key} {value!r}: write one of "
                + ", ".join(TLS_VERSIONS)
            )
    # Fluentd's own check (lib/fluent/tls.rb #set_version_to_context).
    min_version, max_version = section.text("min_version"), section.text("max_version")
    if (min_version is None) != (max_version is None):
        given, other = (
            ("min_version", "max_version") if min_version else ("max_version", "min_version")
        )
        raise ConfigError(
            f"{section.where(given)}: When you set {given}, must set {other} together"
        )
    tls = TlsConfig(
        cert_path=cert_path,
        private_key_path=key_path,
        private_key_passphrase=section.text("private_key_passphrase"),
        ca_path=ca_path,
        client_cert_auth=client_cert_auth,
        min_version=min_version,
        max_version=max_version,
        ciphers=section.text("ciphers"),
        line=element.line,
        version=section.text("version", "TLSv1_2") or "TLSv1_2",
    )
    section.accept(["insecure", "cert_verifier", "ca_cert_path", "client_cert_auth"])
    if client_cert_auth and not ca_path:
        warnings.append(
            f"{section.where()}: client_cert_auth true without ca_path: client certificates "
            "are checked against the system trust store"
        )
    section.finish()
    return tls


_TIME_TYPES = ("float", "unixtime", "string", "mixed")


def _parse_section(element: Element, path: str, warnings: list[str]) -> ParseConfig:
    section = _Section(element, path, "<parse>", warnings)
    kind = section.plugin_type("json")
    if kind != "json":
        raise ConfigError(
            f"{section.where('@type')}: <parse> @type {kind} is not served by the sandbox: "
            "write '@type json' (what the event handler sends)"
        )
    json_parser = section.text("json_parser", "oj")
    if json_parser not in ("oj", "yajl", "json"):
        raise ConfigError(
            f"{section.where('json_parser')}: json_parser {json_parser!r}: write oj, yajl or json"
        )
    if json_parser == "oj":
        # What Fluentd says when the oj gem is missing, as in the stock images.
        warnings.append(
            f"{section.where('json_parser')}: Oj is not installed, and failing back to Yajl "
            "for json parser"
        )
    time_type = section.text("time_type", "float") or "float"
    if time_type not in _TIME_TYPES:
        raise ConfigError(
            f"{section.where('time_type')}: time_type {time_type!r}: write one of "
            + ", ".join(_TIME_TYPES)
        )
    parse = ParseConfig(
        type="json",
        time_key=section.text("time_key", "time") or "time",
        time_type=time_type,
        time_format=section.text("time_format"),
        keep_time_key=section.flag("keep_time_key", False),
        utc=section.flag("utc", False),
        timezone=section.text("timezone"),
        line=element.line,
    )
    section.accept(["localtime", "null_empty_string", "estimate_current_event", "types"])
    section.accept(["null_value_pattern", "stream_buffer_size", "time_format_fallbacks"])
    section.finish()
    return parse


def _forward_source(section: _Section, path: str, warnings: list[str]) -> ForwardSourceConfig:
    element = section.element
    if "@label" in element.params:
        raise ConfigError(
            f"{section.where('@label')}: @label routing is not supported by the sandbox: "
            "remove @label and route with top-level <match>"
        )
    if _children(element, "security"):
        raise ConfigError(
            f"{path}:{_children(element, 'security')[0].line}: <security> (the shared-key "
            "HELO/PING/PONG handshake) is not served by the sandbox: authenticate with "
            "<transport tls> client_cert_auth true"
        )
    port = int(str(section.convert("port", "int", DEFAULT_FORWARD_PORT)))
    if not 0 <= port <= 65535:
        raise ConfigError(f"{section.where('port')}: port {port} is out of range: use 1-65535")
    transports = _children(element, "transport")
    if transports[1:]:
        raise ConfigError(f"{path}:{transports[1].line}: a second <transport> in <source>")
    limit = section.convert("chunk_size_limit", "size", None)
    source = ForwardSourceConfig(
        port=port,
        bind=section.text("bind", SANDBOX_DEFAULT_BIND) or SANDBOX_DEFAULT_BIND,
        tls=_tls(transports[0], path, warnings) if transports else None,
        chunk_size_limit=None if limit is None else int(str(limit)),
        skip_invalid_event=section.flag("skip_invalid_event", False),
        deny_keepalive=section.flag("deny_keepalive", False),
        line=element.line,
    )
    section.accept(["linger_timeout", "backlog", "chunk_size_warn_limit", "resolve_hostname"])
    section.accept(["send_keepalive_packet", "source_address_key", "source_hostname_key"])
    section.finish(known_sections=("transport",))
    return source


def _source(element: Element, path: str, warnings: list[str]) -> SourceConfig | ForwardSourceConfig:
    section = _Section(element, path, "<source>", warnings)
    kind = section.plugin_type("http")
    if kind == "forward":
        return _forward_source(section, path, warnings)
    if kind != "http":
        raise ConfigError(
            f"{section.where('@type')}: <source> @type {kind} is not served by the sandbox "
            "Fluentd: it serves in_http and in_forward; write '@type http' or '@type forward'"
        )
    if "@label" in element.params:
        raise ConfigError(
            f"{section.where('@label')}: @label routing is not supported by the sandbox: "
            "remove @label and route with top-level <match>"
        )
    port = int(str(section.convert("port", "int", DEFAULT_PORT)))
    if not 0 <= port <= 65535:
        raise ConfigError(f"{section.where('port')}: port {port} is out of range: use 1-65535")
    transports = _children(element, "transport")
    parses = _children(element, "parse")
    for extra in (transports[1:], parses[1:]):
        if extra:
            raise ConfigError(
                f"{path}:{extra[0].line}: a second <{extra[0].name}> in <source>: keep one"
            )
    parse = (
        _parse_section(parses[0], path, warnings)
        if parses
        else ParseConfig(keep_time_key=section.flag("keep_time_key", False))
    )
    source = SourceConfig(
        port=port,
        bind=section.text("bind", SANDBOX_DEFAULT_BIND) or SANDBOX_DEFAULT_BIND,
        body_size_limit=int(
            str(section.convert("body_size_limit", "size", DEFAULT_BODY_SIZE_LIMIT))
        ),
        keepalive_timeout=float(
            str(section.convert("keepalive_timeout", "time", DEFAULT_KEEPALIVE_TIMEOUT))
        ),
        tls=_tls(transports[0], path, warnings) if transports else None,
        parse=parse,
        add_http_headers=section.flag("add_http_headers", False),
        add_remote_addr=section.flag("add_remote_addr", False),
        use_204_response=section.flag("use_204_response", False),
        line=element.line,
    )
    section.accept(["keep_time_key", "cors_allow_origins", "cors_allow_credentials"])
    section.accept(["respond_with_empty_img", "dump_error_log", "backlog", "blocking_timeout"])
    # Fluentd's words for a <buffer> here: "section <buffer> is not used in
    # <source> of http plugin" (a buffer belongs in an output).
    section.finish(known_sections=("transport", "parse"))
    return source


def _format(element: Element | None, default: str, path: str, warnings: list[str]) -> FormatConfig:
    if element is None:
        return FormatConfig(default)
    section = _Section(element, path, "<format>", warnings)
    kind = section.plugin_type("json")
    if kind not in ("json", "out_file", "stdout"):
        raise ConfigError(
            f"{section.where('@type')}: <format> @type {kind} is not served by the sandbox: "
            "write json or out_file"
        )
    delimiter = section.text("delimiter", "\t") or "\t"
    delimiter = {"TAB": "\t", "SPACE": " ", "COMMA": ","}.get(delimiter, delimiter)
    fmt = FormatConfig(
        kind,
        delimiter=delimiter,
        output_tag=section.flag("output_tag", True),
        output_time=section.flag("output_time", True),
    )
    section.accept(["time_format", "time_type", "localtime", "utc", "timezone", "add_newline"])
    section.finish()
    return fmt


def _match(element: Element, path: str, warnings: list[str]) -> MatchConfig:
    patterns = tuple(element.arg.split())
    if not patterns:
        raise ConfigError(
            f"{path}:{element.line}: <match> needs a tag pattern: write e.g. <match test.log>"
        )
    for pattern in patterns:
        compile_pattern(pattern, f"{path}:{element.line}")
    label = f"<match {element.arg}>"
    section = _Section(element, path, label, warnings)
    kind = section.plugin_type("file")
    formats = _children(element, "format")
    buffers = _children(element, "buffer")
    flush_interval: float | None = None
    timekey, timekey_use_utc = 86400.0, False
    for buffer in buffers:
        buffer_section = _Section(buffer, path, "<buffer>", warnings)
        flush_interval = float(str(buffer_section.convert("flush_interval", "time", 0.0))) or None
        timekey = float(str(buffer_section.convert("timekey", "time", 86400.0)))
        if timekey < 60:
            raise ConfigError(
                f"{buffer_section.where('timekey')}: timekey below 60s is not supported by the "
                "sandbox: use 1m or more"
            )
        timekey_use_utc = buffer_section.flag("timekey_use_utc", False)
        buffer_section.accept(_BUFFER_PARAMS)
        buffer_section.finish()
    if kind == "file":
        if not buffers:
            # Not Fluentd's words: it says nothing, and holds the events.
            warnings.append(
                f"{path}:{element.line}: sandbox: {label} @type file has no <buffer>: a real "
                "Fluentd buffers it by day (timekey 1d, timekey_wait 10m, no flush at "
                "shutdown) and writes today's events after midnight; the sandbox writes them "
                "at once. Add <buffer> with flush_mode interval and flush_at_shutdown true"
            )
        target = section.text("path")
        if not target:
            raise ConfigError(
                f"{section.where()}: {label} @type file needs 'path': add e.g. "
                "'path /var/log/fluent/audit'"
            )
        if section.text("compress") not in (None, "text"):
            raise ConfigError(
                f"{section.where('compress')}: compress is not supported by the sandbox: remove it"
            )
        match = MatchConfig(
            patterns=patterns,
            type="file",
            line=element.line,
            path=target,
            append=section.flag("append", False),
            add_path_suffix=section.flag("add_path_suffix", True),
            path_suffix=section.text("path_suffix", ".log") or "",
            format=_format(formats[0] if formats else None, "out_file", path, warnings),
            flush_interval=flush_interval,
            timekey=timekey,
            timekey_use_utc=timekey_use_utc,
        )
        section.accept(["symlink_path", "file_permission", "dir_permission", "recompress"])
    elif kind == "stdout":
        match = MatchConfig(
            patterns,
            "stdout",
            element.line,
            format=_format(formats[0] if formats else None, "stdout", path, warnings),
            flush_interval=flush_interval,
        )
        section.accept(["output_type"])
    elif kind == "null":
        match = MatchConfig(patterns, "null", element.line)
        section.accept(["never_flush"])
    else:
        raise ConfigError(
            f"{section.where('@type')}: {label} @type {kind} is not available in the sandbox: "
            "use file, stdout or null"
        )
    section.finish(known_sections=("format", "buffer") if kind != "null" else ("buffer",))
    return match


def load_config(path: str) -> FluentConfig:
    """Read and check the fluent.conf at ``path``."""
    try:
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the Fluentd config ({exc.strerror})") from exc
    return build_config(text, path)


def build_config(text: str, path: str = "fluent.conf") -> FluentConfig:
    root = parse_config(text, path)
    warnings: list[str] = []
    sources: list[SourceConfig] = []
    forwards: list[ForwardSourceConfig] = []
    matches: list[MatchConfig] = []
    for key, param in root.params.items():
        warnings.append(f"{path}:{param.line}: top-level parameter '{key}' is not used.")
    for element in root.children:
        if element.name == "source":
            source = _source(element, path, warnings)
            if isinstance(source, ForwardSourceConfig):
                forwards.append(source)
            else:
                sources.append(source)
        elif element.name == "match":
            matches.append(_match(element, path, warnings))
        elif element.name == "system":
            continue
        elif element.name == "filter":
            warnings.append(
                f"{path}:{element.line}: <filter {element.arg}> is ignored by the sandbox Fluentd"
            )
        else:
            raise ConfigError(
                f"{path}:{element.line}: <{element.name}> is not supported by the sandbox: "
                "use <source>, <match>, <filter> or <system>"
            )
    if forwards and not sources:
        raise ConfigError(
            f"{path}: the sandbox serves in_forward next to an in_http <source> only: add "
            "'<source>\\n  @type http\\n</source>'"
        )
    if not sources:
        raise ConfigError(f"{path}: no <source>: add '<source>\\n  @type http\\n</source>'")
    if len(sources) > 1:
        raise ConfigError(
            f"{path}:{sources[1].line}: the sandbox serves one <source>: remove the others"
        )
    if len(forwards) > 1:
        raise ConfigError(
            f"{path}:{forwards[1].line}: the sandbox serves one <source> @type forward: "
            "remove the others"
        )
    forward = forwards[0] if forwards else None
    return FluentConfig(path, sources[0], tuple(matches), tuple(warnings), forward)


# --- tag patterns --------------------------------------------------------------


def _glob_regex(pattern: str, where: str) -> str:
    """Fluentd's glob: ``*`` one tag part, ``**`` zero or more parts, ``{a,b}`` either."""
    out: list[str] = []
    i = 0
    while i < len(pattern):
        char = pattern[i]
        if pattern.startswith("**", i):
            before_dot = i > 0 and pattern[i - 1] == "."
            after_dot = pattern.startswith(".", i + 2)
            if before_dot and out and out[-1] == r"\.":
                # "a.**" also matches "a"; "a.**.b" also matches "a.b".
                out.pop()
                out.append(r"(?:\..*)?" if not after_dot else r"\.(?:.*\.)?")
                i += 3 if after_dot else 2
            elif after_dot:
                out.append(r"(?:.*\.)?")
                i += 3
            else:
                out.append(".*")
                i += 2
        elif char == "*":
            out.append(r"[^.]*")
            i += 1
        elif char == "{":
            depth, j = 1, i + 1
            while j < len(pattern) and depth:
                depth += {"{": 1, "}": -1}.get(pattern[j], 0)
                j += 1
            if depth:
                raise ConfigError(f"{where}: pattern {pattern!r} has an unclosed '{{': add '}}'")
            choices = _split_top(pattern[i + 1 : j - 1])
            out.append("(?:" + "|".join(_glob_regex(c, where) for c in choices) + ")")
            i = j
        elif char == "}":
            raise ConfigError(f"{where}: pattern {pattern!r} has a stray '}}': remove it")
        else:
            out.append(re.escape(char))
            i += 1
    return "".join(out)


def _split_top(text: str) -> list[str]:
    parts, depth, start = [], 0, 0
    for index, char in enumerate(text):
        if char == "{":
            depth += 1
        elif char == "}":
            depth -= 1
        elif char == "," and depth == 0:
            parts.append(text[start:index])
            start = index + 1
    parts.append(text[start:])
    return parts


def compile_pattern(pattern: str, where: str = "pattern") -> re.Pattern[str]:
    return re.compile(_glob_regex(pattern, where) + r"\Z")


class TagRouter:
    """First ``<match>`` whose pattern matches the tag wins; results are cached per tag."""

    def __init__(self, matches: Iterable[MatchConfig]) -> None:
        self._rules = [
            (tuple(compile_pattern(p) for p in match.patterns), index)
            for index, match in enumerate(matches)
        ]
        self._cache: dict[str, int | None] = {}

    def route(self, tag: str) -> int | None:
        """Index of the winning ``<match>``, or None when no pattern matched."""
        try:
            return self._cache[tag]
        except KeyError:
            pass
        found: int | None = None
        for patterns, index in self._rules:
            if any(p.match(tag) for p in patterns):
                found = index
                break
        if len(self._cache) < 100_000:
            self._cache[tag] = found
        return found
