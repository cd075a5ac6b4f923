"""The ``teleport-event-handler`` command: the Go plugin's commands and flags, plus check-config.

Subcommands live in one table (``COMMANDS``); adding one means writing its
``add_arguments`` and ``run`` and appending a row.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from teleport_event_handler import __version__, config, configure
from teleport_event_handler.durations import format_duration
from teleport_event_handler.protos import TELEPORT_API_VERSION

__all__ = ["COMMANDS", "Command", "build_parser", "configure_logging", "main"]

PROG = config.PROG
DESCRIPTION = "Forwards Teleport AuditLog to external sources"

# What `version` says about the Teleport API we speak: the protos are our own,
# written to Teleport's public wire contract, so no Teleport release is vendored.
API_NOTE = (
    "Teleport API: teleport.auditlog.v1.AuditLogService and proto.AuthService/UpsertLock, "
    "from this package's own .proto files matching Teleport's wire contract "
    f"(v{TELEPORT_API_VERSION}, sent as the version metadata unless api.version says otherwise)"
)

Runner = Callable[[argparse.Namespace, Mapping[str, str]], int]


@dataclass(frozen=True)
class Command:
    name: str
    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Runner


def _no_arguments(parser: argparse.ArgumentParser) -> None:
    del parser


def _run_version(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    del args, environ
    print(f"{PROG} v{__version__} python")
    print(API_NOTE)
    return 0


def _run_start(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    settings = config.config_from_args(vars(args), environ, check_files=True)
    configure_logging(settings.debug, settings.log_format)
    _log_notices(settings)
    # Imported here so that the other commands work without the app's dependencies loaded.
    app = importlib.import_module("teleport_event_handler.app")
    run: Callable[[config.Config], int] = app.run
    return run(settings)


def _add_check_config_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", metavar="FILE", help="TOML config file to check")


def _run_check_config(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    path: str = args.file
    try:
        settings = config.check_config_file(path, environ)
    except config.ConfigError as exc:
        for problem in exc.problems:
            # The file is already named once at the start of the line.
            print(f"{path}: {problem.key}: {problem.problem}; {problem.fix}", file=sys.stderr)
        return 1
    for warning in settings.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    if settings.debug:
        for note in settings.notes:
            print(f"note: {note}", file=sys.stderr)
    print(f"{path}: OK")
    for line in _summary(settings):
        print(f"  {line}")
    return 0


def _summary(settings: config.Config) -> list[str]:
    if settings.teleport_identity:
        credentials = f"identity {settings.teleport_identity}"
        if settings.teleport_refresh_enabled:
            credentials += (
                f" (reloaded every {format_duration(settings.teleport_refresh_interval)})"
            )
    else:
        credentials = f"cert {settings.teleport_cert}, key {settings.teleport_key}"
        credentials += f", ca {settings.teleport_ca}"
    start = settings.start_time.strftime("%Y-%m-%dT%H:%M:%SZ") if settings.start_time else "now"
    types = ",".join(settings.types) or "all"
    skipped = ",".join(settings.skip_event_types) or "none"
    if settings.fluentd_array:
        sending = f"JSON arrays of up to {settings.fluentd_batch_size} events"
    else:
        sending = "one event per request"
    mtls = "mutual TLS" if settings.fluentd_cert else "no client certificate"
    return [
        f"teleport: addr {settings.teleport_addr}, {credentials}",
        f"engine inputs: start-time {start}, batch {settings.batch}, "
        f"window-size {format_duration(settings.window_size)}, "
        f"timeout {format_duration(settings.timeout)}, types {types}, "
        f"skip-event-types {skipped}, concurrency {settings.concurrency}"
        + (", dry-run" if settings.dry_run else ""),
        f"fluentd: url {settings.fluentd_url}, session-url {settings.fluentd_session_url}, "
        f"{sending}, {mtls}, max-connections {settings.fluentd_max_connections}",
        f"storage: {settings.storage}",
    ]


def _run_configure(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    del environ
    stdin_text = sys.stdin.read() if args.passphrase_file == "-" else None
    try:
        lines = configure.main_configure(args, stdin_text)
    except configure.ConfigureError as exc:
        print(f"{PROG} configure: error: {exc}", file=sys.stderr)
        return 1
    for line in lines:
        print(line)
    return 0


def _lazy(name: str) -> Any:
    """A module of this package, imported when its command runs (keeps the CLI quick)."""
    return importlib.import_module(f"teleport_event_handler.{name}")


def _add_status_arguments(parser: argparse.ArgumentParser) -> None:
    status = importlib.import_module("teleport_event_handler.status")
    status.add_status_arguments(parser)


def _run_status(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    status = importlib.import_module("teleport_event_handler.status")
    run: Runner = status.run_status
    return run(args, environ)


COMMANDS: tuple[Command, ...] = (
    Command("version", "Print the version", _no_arguments, _run_version),
    Command(
        "configure",
        "Generate mTLS certificates for Fluentd, and the handler's, Fluentd's and "
        "Teleport's starter configuration",
        configure.add_configure_arguments,
        _run_configure,
    ),
    Command("start", "Start log ingestion", config.add_start_arguments, _run_start),
    Command(
        "check-config",
        "Check a config file and the files it names; exit 1 on problems",
        _add_check_config_arguments,
        _run_check_config,
    ),
    Command(
        "dead-letter",
        "replay: send the events Fluentd refused (kept in dead-letter.jsonl) again, and "
        "remove those it accepts",
        lambda parser: _lazy("deadletter").add_arguments(parser),
        lambda args, environ: int(_lazy("deadletter").run(args, environ)),
    ),
    Command(
        "status",
        "Show where the export stands (cursors, lag, stalls, sessions, identity, dead "
        "letters); safe while the handler runs",
        _add_status_arguments,
        _run_status,
    ),
)


def build_parser() -> config.ArgumentParser:
    """The top-level parser; -c/-d are accepted before and after the subcommand."""
    parser = config.ArgumentParser(prog=PROG, description=DESCRIPTION, allow_abbrev=False)
    config.add_global_arguments(parser)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for command in COMMANDS:
        sub = commands.add_parser(
            command.name,
            help=command.help,
            description=command.help,
            allow_abbrev=False,
        )
        config.add_global_arguments(sub)
        command.add_arguments(sub)
        sub.set_defaults(run=command.run)
    return parser


class JSONFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, and any extra fields."""

    _STANDARD = frozenset(vars(logging.makeLogRecord({}))) | {"message", "asctime"}

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, object] = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S%z"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in self._STANDARD and not key.startswith("_"):
                out[key] = value if isinstance(value, str | int | float | bool) else str(value)
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        return json.dumps(out, ensure_ascii=False)


def configure_logging(debug: bool, log_format: str = "text") -> None:
    """Logs to stderr: text lines as the Go plugin writes them, or JSON; debug with -d."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    handler = logging.StreamHandler(sys.stderr)
    if log_format == "json":
        handler.setFormatter(JSONFormatter())
    else:
        handler.setFormatter(
            logging.Formatter(
                "%(asctime)s %(levelname)s %(name)s: %(message)s", "%Y-%m-%dT%H:%M:%S%z"
            )
        )
    root.addHandler(handler)
    root.setLevel(logging.DEBUG if debug else logging.INFO)


def _log_notices(settings: config.Config) -> None:
    log = logging.getLogger("teleport_event_handler.config")
    for note in settings.notes:
        log.debug("%s", note)
    for warning in settings.warnings:
        log.warning("%s", warning)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script; returns the exit code."""
    arguments = list(sys.argv[1:] if argv is None else argv)
    try:
        args = build_parser().parse_args(config.normalize_bool_args(arguments))
        runner: Runner = args.run
        return runner(args, os.environ)
    except config.ConfigError as exc:
        for problem in exc.problems:
            print(f"{PROG}: error: {problem}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
