"""``sandbox-teleport``: create, serve and poke a sandbox Teleport cluster.

::

    sandbox-teleport init   --data-dir D [--cluster-name N] [--days 3] [--events-per-day N]
                            [--start-date YYYY-MM-DD] [--seed S] [--oversized N] [--unknown N]
                            [--sessions-per-day N] [--session-prints N] [--force]
    sandbox-teleport serve  --data-dir D [--listen 127.0.0.1:3025] [--port-file F]
                            [--mode bulk|legacy] [--live-rate N] [--fault K=V ...]
    sandbox-teleport proxy  --data-dir D --auth-addr HOST:PORT [--listen 127.0.0.1:3080]
                            [--port-file F]
    sandbox-teleport append --data-dir D --count N [--type T] [--failed-logins USER:LOGIN ...]
                            [--at 2026-01-02T03:04:05.000000000Z]
    sandbox-teleport faults --data-dir D set K=V ... | clear | show
    sandbox-teleport info   --data-dir D
"""

from __future__ import annotations

import argparse
import datetime
import json
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Sequence
from typing import Any

__all__ = ["main"]

log = logging.getLogger("sandbox.teleport")


def _date(text: str) -> datetime.date:
    try:
        return datetime.date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a date like 2026-11-25") from None


def _time_ns(text: str) -> int:
    from teleport_sandbox.teleport import corpus

    try:
        return corpus.parse_time_ns(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a UTC time like 2026-01-02T03:04:05.123456789Z"
        ) from None


def _failed_login(text: str) -> tuple[str, str]:
    user, sep, login = text.partition(":")
    if not sep or not user or not login:
        raise argparse.ArgumentTypeError(f"{text!r} is not USER:LOGIN, e.g. bob:root")
    return user, login


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sandbox-teleport",
        description="A sandbox Teleport Auth Service serving a generated audit log over mTLS.",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    init = sub.add_parser("init", help="create the cluster's CAs, state and event corpus")
    init.add_argument("--data-dir", required=True)
    init.add_argument(
        "--cluster-name", default=None, help="default sandbox.teleport.local; kept once created"
    )
    init.add_argument("--days", type=int, default=3)
    init.add_argument("--events-per-day", type=int, default=1000)
    init.add_argument("--start-date", type=_date, default=None, help="default: days end today")
    init.add_argument("--seed", type=int, default=1)
    init.add_argument("--oversized", type=int, default=0, help="events whose JSON is > 1 MiB")
    init.add_argument("--unknown", type=int, default=0, help="events of undefined types")
    init.add_argument("--sessions-per-day", type=int, default=20)
    init.add_argument(
        "--session-prints",
        type=int,
        default=0,
        help="print events per session recording (default: between 6 and 40)",
    )
    init.add_argument("--force", action="store_true", help="regenerate an existing corpus")

    serve = sub.add_parser("serve", help="serve the cluster's gRPC API until SIGTERM")
    serve.add_argument("--data-dir", required=True)
    serve.add_argument("--listen", default="127.0.0.1:3025", help="HOST:PORT; port 0 = any")
    serve.add_argument("--port-file", help="write the bound port here once ready")
    serve.add_argument("--mode", choices=("bulk", "legacy"), default="bulk")
    serve.add_argument("--live-rate", type=float, default=0.0, help="new events per second")
    serve.add_argument(
        "--fault", action="extend", nargs="+", default=[], metavar="K=V", help="see faults"
    )
    serve.add_argument(
        "--max-page-bytes",
        type=int,
        default=None,
        help="page budget of event JSON (default 1 MiB, Teleport's)",
    )
    serve.add_argument("--debug", "-d", action="store_true")

    proxy = sub.add_parser(
        "proxy", help="a Proxy front: TLS routing (ALPN teleport-auth@...) to the Auth listener"
    )
    proxy.add_argument("--data-dir", required=True)
    proxy.add_argument("--auth-addr", required=True, help="the Auth Service's HOST:PORT")
    proxy.add_argument("--listen", default="127.0.0.1:3080", help="HOST:PORT; port 0 = any")
    proxy.add_argument("--port-file", help="write the bound port here once ready")
    proxy.add_argument("--debug", "-d", action="store_true")

    append = sub.add_parser("append", help="append events timed now (works while serving)")
    append.add_argument("--data-dir", required=True)
    append.add_argument("--count", type=int, required=True)
    append.add_argument("--type", dest="event_type", default=None)
    append.add_argument(
        "--failed-logins",
        type=_failed_login,
        action="extend",
        nargs="+",
        default=[],
        metavar="USER:LOGIN",
        help="make failed user.login events for these users/logins",
    )
    append.add_argument(
        "--at",
        type=_time_ns,
        default=None,
        metavar="TIME",
        help="time the first event exactly at TIME (UTC, to the nanosecond, e.g. "
        "2026-01-02T03:04:05.5Z) instead of now; it must be after every stored event",
    )

    faults = sub.add_parser("faults", help="change the faults of a running server")
    faults.add_argument("--data-dir", required=True)
    fsub = faults.add_subparsers(dest="action", required=True)
    fset = fsub.add_parser("set", help="merge KEY=VALUE settings")
    fset.add_argument("assignments", nargs="+", metavar="K=V")
    fsub.add_parser("clear", help="remove every fault")
    fsub.add_parser("show", help="print the current settings")

    info = sub.add_parser("info", help="counts per day and type, as JSON")
    info.add_argument("--data-dir", required=True)
    return parser


def _print_json(value: Any) -> None:
    sys.stdout.write(json.dumps(value, indent=2, sort_keys=True) + "\n")


def _cmd_init(args: argparse.Namespace) -> int:
    from teleport_sandbox.teleport import authority, corpus

    os.makedirs(args.data_dir, exist_ok=True)
    authority.init_authority(args.data_dir, args.cluster_name or authority.DEFAULT_CLUSTER_NAME)
    # The cluster keeps the name it was created with; events must carry that one.
    cluster_name = authority.cluster_name(args.data_dir)
    if args.cluster_name and args.cluster_name != cluster_name:
        sys.stderr.write(
            f"WARNING: {args.data_dir} already holds cluster {cluster_name!r}; "
            f"--cluster-name {args.cluster_name!r} ignored (use an empty --data-dir)\n"
        )
    existed = corpus.corpus_exists(args.data_dir)
    meta = corpus.generate_corpus(
        args.data_dir,
        corpus.GenerateOptions(
            cluster_name=cluster_name,
            days=args.days,
            events_per_day=args.events_per_day,
            start_date=args.start_date,
            seed=args.seed,
            oversized=args.oversized,
            unknown=args.unknown,
            sessions_per_day=args.sessions_per_day,
            session_prints=args.session_prints,
        ),
        force=args.force,
    )
    verb = "kept existing" if existed and not args.force else "generated"
    print(
        f"{args.data_dir}: {verb} corpus of {meta['count']} events over {meta['days']} days "
        f"from {meta['start_date']} (cluster {meta['cluster_name']}, seed {meta['seed']})"
    )
    return 0


def _write_port_file(path: str, port: int) -> None:
    tmp = f"{path}.tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(f"{port}\n")
    os.replace(tmp, path)


def _cmd_serve(args: argparse.Namespace) -> int:
    from teleport_sandbox.teleport import corpus, faults, server

    logging.basicConfig(
        level=logging.DEBUG if args.debug else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    faults.write_faults(args.data_dir, faults.parse_assignments(args.fault))
    started = time.monotonic()
    running = server.start_server(
        args.data_dir,
        listen=args.listen,
        mode=args.mode,
        live_rate=args.live_rate,
        max_page_bytes=args.max_page_bytes or corpus.MAX_EVENT_BYTES_IN_RESPONSE,
    )
    stop = threading.Event()

    def _on_signal(signum: int, _frame: object) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    if args.port_file:
        _write_port_file(args.port_file, running.port)
    log.info(
        "serving %s on port %d (mode %s, %d events, faults %s) after %.2fs",
        args.data_dir,
        running.port,
        args.mode,
        running.service.corpus.count,
        faults.read_faults(args.data_dir) or "none",
        time.monotonic() - started,
    )
    while not stop.wait(3600):
        pass
    running.stop(grace=1.0)
    log.info("stopped")
    return 0


def _cmd_proxy(args: argparse.Namespace) -> int:
    from teleport_sandbox.teleport import proxy

    logging.basicConfig(
        level=logging.DEBUG if args.debug else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    front = proxy.start_proxy(args.data_dir, args.listen, args.auth_addr)
    stop = threading.Event()

    def _on_signal(signum: int, _frame: object) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    if args.port_file:
        _write_port_file(args.port_file, front.port)
    log.info(
        "proxy for cluster %r on port %d, routing to Auth at %s",
        front.cluster_name,
        front.port,
        args.auth_addr,
    )
    while not stop.wait(3600):
        pass
    front.stop()
    log.info("stopped")
    return 0


def _cmd_append(args: argparse.Namespace) -> int:
    from teleport_sandbox.teleport import corpus

    if args.failed_logins and args.event_type not in (None, "user.login"):
        raise corpus.CorpusError("append: --failed-logins makes user.login events; drop --type")
    events = corpus.append_events(
        args.data_dir,
        args.count,
        event_type=args.event_type,
        failed_logins=args.failed_logins,
        now_ns=args.at,
        exact=args.at is not None,
    )
    _print_json(
        {
            "appended": len(events),
            "first_time": events[0]["time"] if events else None,
            "last_time": events[-1]["time"] if events else None,
            "uids": [ev["uid"] for ev in events][:1000],
        }
    )
    return 0


def _cmd_faults(args: argparse.Namespace) -> int:
    from teleport_sandbox.teleport import faults

    if args.action == "set":
        _print_json(faults.update_faults(args.data_dir, faults.parse_assignments(args.assignments)))
    elif args.action == "clear":
        faults.clear_faults(args.data_dir)
        _print_json({})
    else:
        _print_json(faults.read_faults(args.data_dir))
    return 0


def _cmd_info(args: argparse.Namespace) -> int:
    from teleport_sandbox.teleport import corpus

    _print_json(corpus.info(args.data_dir))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    from teleport_sandbox.teleport.corpus import CorpusError
    from teleport_sandbox.teleport.faults import FaultError
    from teleport_sandbox.teleport.resources import SandboxError

    handlers = {
        "init": _cmd_init,
        "serve": _cmd_serve,
        "proxy": _cmd_proxy,
        "append": _cmd_append,
        "faults": _cmd_faults,
        "info": _cmd_info,
    }
    try:
        return handlers[args.command](args)
    except (CorpusError, FaultError, SandboxError, OSError) as exc:
        sys.stderr.write(f"ERROR: {exc}\n")
        return 1


if __name__ == "__main__":
    sys.exit(main())
