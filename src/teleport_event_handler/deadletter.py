"""Events Fluentd refused, kept in ``dead-letter.jsonl``, and sending them again.

The running handler appends one JSON line per refused event (``DeadLetters``),
fsynced before the event's cursor moves. ``teleport-event-handler dead-letter
replay`` sends each kept event again, one at a time, to the URL it was refused
at, with the handler's own Fluentd client and settings; what Fluentd accepts
leaves the file, what it refuses again (or what could not be sent before the
time limit) stays. Both sides take an exclusive ``flock`` on the file, and the
replay rewrites it atomically (a new file renamed over it) keeping every line
it did not send, including lines the running handler appended meanwhile.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import errno
import fcntl
import logging
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass

import orjson

from teleport_event_handler import config
from teleport_event_handler.backoff import Shutdown
from teleport_event_handler.forward import ForwardClient
from teleport_event_handler.sink import FluentdClient, ShutdownRequested, SinkError
from teleport_event_handler.state import state_dir

__all__ = ["FILE_NAME", "DeadLetters", "ReplayResult", "add_arguments", "replay", "run"]

log = logging.getLogger("teleport_event_handler")

FILE_NAME = "dead-letter.jsonl"


@contextlib.contextmanager
def _locked(fd: int) -> Iterator[None]:
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)


class DeadLetters:
    """Events the receiver refused as malformed (4xx), kept instead of dropped.

    One JSON line per event in ``dead-letter.jsonl`` in the state directory,
    written and fsynced before the event's cursor is committed.
    """

    def __init__(self, directory: str, on_kept: Callable[[bytes], None] | None = None) -> None:
        self.path = os.path.join(directory, FILE_NAME)
        self._lock = threading.Lock()
        self.count = 0
        self._on_kept = on_kept

    def __call__(self, url: str, event: bytes, status: int, response: bytes) -> None:
        line = orjson.dumps(
            {
                "time": datetime.datetime.now(datetime.UTC).isoformat(),
                "url": url,
                "status": status,
                "response": response[:2048].decode("utf-8", "replace"),
                "event": event.decode("utf-8", "replace"),
            }
        )
        with self._lock:
            self._write(line + b"\n")
            self.count += 1
        if self._on_kept is not None:
            self._on_kept(event)
        # Status 0: the Forward client could not encode the event (see forward.py).
        why = (
            f"Fluentd refused an event with HTTP {status}"
            if status
            else "an event cannot be sent over the Forward protocol"
        )
        log.error(
            "%s; kept it in %s (fix the receiver, then send it again with "
            "'teleport-event-handler dead-letter replay')",
            why,
            self.path,
        )

    def _write(self, data: bytes) -> None:
        """Append and fsync; while the disk is full, wait for space (the event is not dropped)."""
        delay, logged = 0.5, False
        while True:
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            try:
                with _locked(fd):
                    size = os.fstat(fd).st_size
                    try:
                        os.write(fd, data)
                        os.fsync(fd)
                        return
                    except OSError as exc:
                        if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
                            raise
                        os.ftruncate(fd, size)  # no half line
                if not logged:
                    log.error(
                        "cannot keep a refused event in %s: the disk is full; the export "
                        "waits until space is freed there (nothing is lost)",
                        self.path,
                    )
                    logged = True
            finally:
                os.close(fd)
            time.sleep(delay)
            delay = min(delay * 2, 5.0)


@dataclass
class ReplayResult:
    path: str
    sent: int = 0
    refused: int = 0
    unsent: int = 0
    unreadable: int = 0


def replay(settings: config.Config, *, time_limit: float) -> ReplayResult:
    """Send the kept events again; remove from the file what Fluentd accepted."""
    directory = state_dir(settings.storage, settings.teleport_addr, settings.dry_run)
    path = os.path.join(directory, FILE_NAME)
    result = ReplayResult(path)
    try:
        with open(path, "rb") as handle:
            lines = [line for line in handle if line.strip()]
    except FileNotFoundError:
        return result
    shutdown = Shutdown()
    timer = threading.Timer(time_limit, shutdown.request)
    timer.daemon = True
    refused_now: list[bytes] = []

    def on_refused(url: str, event: bytes, status: int, response: bytes) -> None:
        del url, event
        refused_now.append(f"HTTP {status}: {response[:200].decode('utf-8', 'replace')}".encode())

    sink: FluentdClient | ForwardClient
    if settings.uses_forward:
        sink = ForwardClient(
            ca=settings.fluentd_ca,
            cert=settings.fluentd_cert,
            key=settings.fluentd_key,
            max_connections=1,
            timeout=settings.fluentd_timeout,
            shutdown=shutdown,
            on_rejected=on_refused,
        )
    else:
        # These events were refused before: a refusal now is about them, not the receiver.
        sink = FluentdClient(
            ca=settings.fluentd_ca,
            cert=settings.fluentd_cert,
            key=settings.fluentd_key,
            max_connections=1,
            timeout=settings.fluentd_timeout,
            shutdown=shutdown,
            on_rejected=on_refused,
            trust_refusals=True,
        )
    accepted: set[int] = set()
    timer.start()
    try:
        for index, line in enumerate(lines):
            try:
                record = orjson.loads(line)
                url, event = str(record["url"]), str(record["event"]).encode()
            except (orjson.JSONDecodeError, KeyError, TypeError):
                result.unreadable += 1
                continue
            if shutdown.requested:
                result.unsent += 1
                continue
            before = len(refused_now)
            try:
                sink.deliver(url, [event], as_array=True)
            except ShutdownRequested:
                result.unsent += 1
                continue
            if len(refused_now) > before:
                result.refused += 1
                log.warning("Fluentd refused a kept event again (%s)", refused_now[-1].decode())
            else:
                accepted.add(index)
                result.sent += 1
    finally:
        timer.cancel()
        sink.close()
    if accepted:
        _remove(path, [lines[i] for i in sorted(accepted)])
    return result


def _remove(path: str, sent: list[bytes]) -> None:
    """Rewrite ``path`` without the ``sent`` lines (each once), atomically, under the lock."""
    fd = os.open(path, os.O_RDWR)
    try:
        with _locked(fd):
            with os.fdopen(os.dup(fd), "rb") as handle:
                current = handle.readlines()
            pending: dict[bytes, int] = {}
            for line in sent:
                pending[line] = pending.get(line, 0) + 1
            keep: list[bytes] = []
            for line in current:
                if pending.get(line, 0) > 0:
                    pending[line] -= 1
                else:
                    keep.append(line)
            temporary = f"{path}.replay-{os.getpid()}"
            out = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            try:
                os.write(out, b"".join(keep))
                os.fsync(out)
            finally:
                os.close(out)
            os.replace(temporary, path)
            directory = os.open(os.path.dirname(path) or ".", os.O_RDONLY)
            try:
                os.fsync(directory)
            finally:
                os.close(directory)
    finally:
        os.close(fd)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "action", choices=("replay",), help="replay: send the kept events to Fluentd again"
    )
    parser.add_argument(
        "--time-limit",
        type=float,
        default=300.0,
        metavar="SECONDS",
        help="stop sending after this long; what was not sent stays in the file (default 300)",
    )
    config.add_start_arguments(parser)


def run(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    settings = config.config_from_args(vars(args), environ, check_files=True)
    try:
        result = replay(settings, time_limit=args.time_limit)
    except SinkError as exc:
        print(f"{config.PROG} dead-letter replay: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(
            f"{config.PROG} dead-letter replay: {exc.filename}: {exc.strerror}; run it as the "
            "user that runs the handler",
            file=sys.stderr,
        )
        return 1
    left = result.refused + result.unsent + result.unreadable
    print(
        f"{result.path}: {result.sent} events sent again and removed; {left} kept "
        f"({result.refused} refused again, {result.unsent} not sent within the time limit, "
        f"{result.unreadable} unreadable lines)"
    )
    return 0 if left == 0 else 3
