"""``sandbox-fluentd``: run the sandbox Fluentd until SIGTERM/SIGINT.

Exit codes: 0 after a clean stop (outputs flushed, stats written) or a good
``--dry-run``; 1 for a config, TLS or fault error (printed, naming the file
and the fix); 2 for bad command-line usage.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
import time
from types import FrameType

from teleport_event_handler import pki

from .conf import ConfigError, load_config
from .server import DEFAULT_FLUSH_INTERVAL, Faults, FluentdServer

log = logging.getLogger("fluentd")

_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warn": logging.WARNING}
_LEVELS |= {"error": logging.ERROR}


class _FluentdFormatter(logging.Formatter):
    """Fluentd's log line: ``2026-11-27 10:17:12 +0000 [warn]: message``."""

    _NAMES = {logging.WARNING: "warn", logging.CRITICAL: "fatal"}

    def format(self, record: logging.LogRecord) -> str:
        stamp = time.strftime("%Y-%m-%d %H:%M:%S %z", time.localtime(record.created))
        level = self._NAMES.get(record.levelno, record.levelname.lower())
        return f"{stamp} [{level}]: {record.getMessage()}"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sandbox-fluentd",
        description="A sandbox Fluentd (in_http over mutual TLS) for tests and demos.",
    )
    parser.add_argument("-c", "--config", required=True, help="the fluent.conf to run")
    parser.add_argument("--port", type=int, help="listen on this port instead (0: any free)")
    parser.add_argument("--bind", help="listen on this address instead of the config's bind")
    parser.add_argument("--port-file", help="write the bound port here once listening")
    parser.add_argument(
        "--control-file",
        help="JSON object of faults, re-read whenever it changes; it replaces the faults",
    )
    parser.add_argument("--stats-file", help="write request/record counts here (JSON)")
    parser.add_argument(
        "--arrival-log",
        help="append '<uid> <arrival unix ns> <event time>' per stored event (benchmarks)",
    )
    parser.add_argument(
        "--fault",
        action="append",
        default=[],
        metavar="K=V",
        help="refuse, status=503, status_rate=0.5, latency_ms=200, reply_status=204, reject_array",
    )
    parser.add_argument(
        "--flush-interval",
        type=float,
        default=DEFAULT_FLUSH_INTERVAL,
        help="seconds between output flushes when <buffer> gives no flush_interval",
    )
    parser.add_argument("--log-level", choices=sorted(_LEVELS), default="info")
    parser.add_argument(
        "--dry-run", action="store_true", help="check the config and TLS files, then exit"
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_FluentdFormatter())
    log.handlers[:] = [handler]
    log.setLevel(_LEVELS[args.log_level])
    log.propagate = False
    try:
        faults = Faults.from_pairs(args.fault)
        config = load_config(args.config)
        for warning in config.warnings:
            log.warning("%s", warning)
        server = FluentdServer(
            config,
            port=0 if args.dry_run else args.port,
            bind=args.bind,
            faults=faults,
            control_file=args.control_file,
            stats_file=args.stats_file,
            flush_interval=args.flush_interval,
            arrival_log=args.arrival_log,
        )
    except (ConfigError, ValueError) as exc:
        log.error("%s", exc)
        return 1
    if args.dry_run:
        server.stop()
        log.info("%s: configuration is valid", args.config)
        return 0
    stopping = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        log.info("received %s, shutting down", signal.Signals(signum).name)
        stopping.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    server.start()
    try:
        if args.port_file:
            # Atomic, so a waiting test never reads a half-written port.
            pki.write_file_atomic(args.port_file, f"{server.port}\n".encode(), mode=0o644)
        log.info("fluentd worker is now running worker=0")
        while not stopping.wait(1.0):
            pass
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
