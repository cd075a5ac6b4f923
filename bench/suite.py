"""Issue 10's benchmark scenarios, each beside the ceilings measured in the same run.

    .venv/bin/python bench/suite.py backlog  [--events 1000000] [--days 7]
    .venv/bin/python bench/suite.py latency  [--events 20000] [--serial-seconds 30]
    .venv/bin/python bench/suite.py live     [--rate 2000] [--seconds 60]
    .venv/bin/python bench/suite.py sessions [--sessions 500] [--events-per-session 2000]
    .venv/bin/python bench/suite.py workers  [--events 300000] [--counts 0,1,2,3]
    .venv/bin/python bench/suite.py fluentd  [--events 600000] [--rounds 8]

backlog
    A backlog of ``--events`` over ``--days`` days exported into the real
    Fluentd 1.16.11 (``../shared/vendor/fluentd``, the project's fluent.conf),
    bulk and legacy engines, HTTP arrays and the Forward protocol. Beside it,
    in the same run and on the same corpus: the real Fluentd's own ingest
    rate from a bare client (the same arrays of ``fluentd-batch-size`` events,
    ``fluentd-max-connections`` connections; PackedForward frames with acks),
    and the sandbox Teleport's own streaming rate to a bare reader (the bulk
    export with three chunks at once, as the handler; paged search with pages
    of 500, as the legacy engine). "of ceiling" is the handler's rate over the
    lower of its source and sink ceilings. Each engine also runs without the
    compiled accelerator (accel/) over both wire forms, and the bulk engine with two worker
    processes (``export-workers = 2``).
latency
    25 ms added to every answer of the sandbox Fluentd (Teleport #56268): the
    default (arrays, parallel connections) against one event per request sent
    serially (the Go plugin's way), which runs ``--serial-seconds``.
live
    The sandbox Teleport appends ``--rate`` events a second (sealed chunks
    every second) while the handler tails; the sandbox Fluentd logs when each
    event arrived; p50/p99/max of arrival minus the event's time, after a
    10 s warm-up.
sessions
    ``--sessions`` recordings of ``--events-per-session`` events each, exported
    into the real Fluentd, beside the sandbox's own rate of streaming the same
    recordings to a bare reader with the handler's session concurrency.
workers
    The bulk engine with 0, 1, 2 and 3 worker processes (``export-workers``):
    CPU per event of the engine's own process (the part bound to one core)
    and of the workers (the part that spreads over cores).
fluentd
    The real Fluentd's HTTP ceiling in ``--rounds`` fresh processes in a row,
    each with its own CPU per event: Fluentd runs some of its lives at about
    twice the CPU per event of others (docs/performance.md).

Every handler row gives the peak RSS (VmHWM) and CPU seconds (user + system)
per 100,000 events, and checks that every event arrived, once.
"""

from __future__ import annotations

import argparse
import base64
import concurrent.futures
import datetime
import http.client
import os
import queue
import resource
import shutil
import socket
import ssl
import statistics
import struct
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import msgpack
import orjson
from throughput import high_water_kib  # bench/ is the script's directory

from teleport_event_handler.accelerator import NO_ACCEL_ENV
from teleport_event_handler.teleport import TeleportClient, load_identity_file
from teleport_sandbox.stack import Stack
from teleport_sandbox.teleport.corpus import all_events

BATCH = 200  # fluentd-batch-size's default
CONNECTIONS = 10  # fluentd-max-connections's default (2 x concurrency 5)
CHUNKS_AT_ONCE = 3  # the bulk engine's chunk concurrency
PAGE = 500  # the legacy engine's pages in these runs (the sandbox TOML's batch)
SESSIONS_AT_ONCE = 5  # concurrency's default


@dataclass
class Row:
    name: str
    events: int
    seconds: float
    ceiling: float | None = None
    rss_mib: int | None = None
    cpu_s: float | None = None
    # Fluentd's own CPU (user + system) over the run: its cost per event shows
    # which of its two modes it ran in (docs/performance.md).
    sink_cpu_s: float | None = None
    note: str = ""

    @property
    def rate(self) -> float:
        return self.events / self.seconds if self.seconds else 0.0


def print_table(title: str, rows: list[Row]) -> None:
    print(f"\n{title}\n")
    print(
        "| scenario | events | seconds | events/s | of ceiling | peak RSS MiB | CPU s/100k "
        "| Fluentd CPU µs/event |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        share = f"{r.rate / r.ceiling:.2f}" if r.ceiling else ""
        rss = str(r.rss_mib) if r.rss_mib is not None else ""
        cpu = f"{r.cpu_s * 100_000 / r.events:.1f}" if r.cpu_s is not None and r.events else ""
        sink = f"{r.sink_cpu_s * 1e6 / r.events:.0f}" if r.sink_cpu_s and r.events else ""
        name = f"{r.name} ({r.note})" if r.note else r.name
        print(
            f"| {name} | {r.events:,} | {r.seconds:.1f} | {r.rate:,.0f} | {share} | {rss} "
            f"| {cpu} | {sink} |"
        )
    sys.stdout.flush()


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# --- the handler --------------------------------------------------------------------


def run_handler(
    stack: Stack,
    toml: str,
    *flags: str,
    seconds: float | None = None,
    env: dict[str, str] | None = None,
) -> Row:
    """Run the handler to its last event (or for ``seconds``): wall time, VmHWM, CPU."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    sink_before = sink_cpu(stack)
    started = time.monotonic()
    proc = stack.start_handler(toml, *flags, env=env)
    peak = 0
    while proc.poll() is None:
        peak = max(peak, high_water_kib(proc.pid))
        if seconds is not None and time.monotonic() - started > seconds:
            proc.terminate()
            proc.wait(60)
            break
        time.sleep(0.02)
    elapsed = time.monotonic() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if seconds is None and proc.returncode != 0:
        raise SystemExit(f"handler exited {proc.returncode}; see {stack.root}/handler.log")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    row = Row("", 0, elapsed, rss_mib=peak // 1024, cpu_s=cpu)
    row.sink_cpu_s = _less(sink_cpu(stack), sink_before)
    return row


def sink_cpu(stack: Stack) -> float | None:
    """CPU seconds of the stack's Fluentd so far, if it runs."""
    pid = stack.fluentd_pid
    return _cpu_seconds(pid) if pid is not None else None


def _less(after: float | None, before: float | None) -> float | None:
    return after - before if after is not None and before is not None else None


def arrived(stack: Stack, prefix: str) -> tuple[int, int]:
    """(records, distinct records) Fluentd wrote for ``prefix`` (audit or session)."""
    stack.wait_for_flush(timeout=600)
    records, uids = 0, set()
    for name in os.listdir(stack.out_dir):
        if not (name.startswith(prefix) and name.endswith(".log")):
            continue
        with open(os.path.join(stack.out_dir, name), "rb") as handle:
            for line in handle:
                if line.strip():
                    records += 1
                    # Recorded events (print) carry no uid or session id: the whole
                    # record tells them apart (each has its own time and data).
                    uids.add(line.strip())
    return records, len(uids)


def fresh_fluentd(stack: Stack) -> None:
    """Fluentd restarted with empty outputs and buffers; the handler's state wiped."""
    stack.stop_fluentd()
    for directory in (stack.out_dir, stack.buffer_dir, stack.storage):
        shutil.rmtree(directory, ignore_errors=True)
    os.makedirs(stack.out_dir, exist_ok=True)
    os.makedirs(stack.storage, exist_ok=True)
    stack.start_fluentd()


def toml_for(stack: Stack, *, forward: bool, **overrides: object) -> str:
    urls: dict[str, object] = {}
    if forward:
        urls["fluentd__url"] = f"tls://localhost:{stack.forward_port}/test.log"
        urls["fluentd__session_url"] = f"tls://localhost:{stack.forward_port}/session"
    else:
        urls["fluentd__url"] = f"https://localhost:{stack.fluentd_port}/test.log"
        urls["fluentd__session_url"] = f"https://localhost:{stack.fluentd_port}/session"
    return stack.handler_toml(start_time=stack.corpus_start(), **urls, **overrides)


# --- ceilings: bare clients -----------------------------------------------------------


def client_context(stack: Stack) -> ssl.SSLContext:
    assert stack.material is not None
    context = ssl.create_default_context(cafile=stack.material.ca)
    context.load_cert_chain(stack.material.client_cert, stack.material.client_key)
    return context


def run_parallel(
    batches: list[bytes], workers: int, send: Callable[[], Callable[[bytes], None]]
) -> float:
    """Send every batch over ``workers`` connections; the wall time."""
    work: queue.SimpleQueue[bytes | None] = queue.SimpleQueue()
    for batch in batches:
        work.put(batch)
    for _ in range(workers):
        work.put(None)
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            deliver = send()
            while (batch := work.get()) is not None:
                deliver(batch)
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(workers)]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise SystemExit(f"bare client failed: {errors[0]!r}")
    return time.monotonic() - started


def http_ceiling(stack: Stack, events: list[bytes]) -> float:
    batches = [b"[" + b",".join(events[i : i + BATCH]) + b"]" for i in range(0, len(events), BATCH)]
    context = client_context(stack)

    def connect() -> Callable[[bytes], None]:
        conn = http.client.HTTPSConnection("localhost", stack.fluentd_port, context=context)
        conn.connect()
        # As the handler's pool does: http.client writes headers and body apart, and
        # Nagle with delayed ACKs would hold each request about 40 ms.
        conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        headers = {"Content-Type": "application/json"}

        def deliver(body: bytes) -> None:
            conn.request("POST", "/test.log", body, headers)
            response = conn.getresponse()
            response.read()
            if response.status != 200:
                raise RuntimeError(f"Fluentd answered {response.status}")

        return deliver

    return run_parallel(batches, CONNECTIONS, connect)


def sink_ceiling(
    stack: Stack,
    bodies: list[bytes],
    measure: Callable[[Stack, list[bytes]], float],
    name: str,
) -> Row:
    """One bare-client ceiling run (``http_ceiling`` or ``forward_ceiling``) as a row,
    with Fluentd's CPU over it."""
    before = sink_cpu(stack)
    seconds = measure(stack, bodies)
    return Row(name, len(bodies), seconds, sink_cpu_s=_less(sink_cpu(stack), before))


def _event_time(event: dict[str, object]) -> msgpack.ExtType:
    moment = datetime.datetime.fromisoformat(str(event["time"]).replace("Z", "+00:00"))
    return msgpack.ExtType(
        0, struct.pack(">II", int(moment.timestamp()), moment.microsecond * 1000)
    )


def forward_ceiling(stack: Stack, events: list[bytes]) -> float:
    frames: list[bytes] = []
    for i in range(0, len(events), BATCH):
        entries = b"".join(
            msgpack.packb([_event_time(e), e], use_bin_type=True)
            for e in map(orjson.loads, events[i : i + BATCH])
        )
        chunk = base64.b64encode(os.urandom(16)).decode()
        frames.append(
            msgpack.packb(["test.log", entries, {"chunk": chunk, "size": BATCH}], use_bin_type=True)
        )
    context = client_context(stack)

    def connect() -> Callable[[bytes], None]:
        raw = socket.create_connection(("localhost", stack.forward_port))
        raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # as the handler does
        sock = context.wrap_socket(raw, server_hostname="localhost")
        unpacker = msgpack.Unpacker(raw=False)

        def deliver(frame: bytes) -> None:
            sock.sendall(frame)
            while True:
                for answer in unpacker:
                    if isinstance(answer, dict) and "ack" in answer:
                        return
                data = sock.recv(65536)
                if not data:
                    raise RuntimeError("Fluentd closed the connection before its ack")
                unpacker.feed(data)

        return deliver

    return run_parallel(frames, CONNECTIONS, connect)


def teleport_client(stack: Stack) -> TeleportClient:
    return TeleportClient(stack.teleport_addr, load_identity_file(stack.identity))


def days_of(stack: Stack, days: int) -> list[datetime.date]:
    first = stack.corpus_start().date()
    return [first + datetime.timedelta(days=n) for n in range(days + 1)]


def bulk_source_ceiling(stack: Stack, days: int) -> tuple[int, float]:
    client = teleport_client(stack)
    try:
        started = time.monotonic()
        chunks = [
            (day, chunk) for day in days_of(stack, days) for chunk in client.export_chunks(day)
        ]

        def read(item: tuple[datetime.date, str]) -> int:
            return sum(1 for _ in client.export_events(item[0], item[1], ""))

        with concurrent.futures.ThreadPoolExecutor(CHUNKS_AT_ONCE) as pool:
            count = sum(pool.map(read, chunks))
        return count, time.monotonic() - started
    finally:
        client.close()


def legacy_source_ceiling(stack: Stack, days: int) -> tuple[int, float]:
    client = teleport_client(stack)
    start = stack.corpus_start()
    end = start + datetime.timedelta(days=days + 1)
    try:
        started = time.monotonic()
        count, key = 0, ""
        while True:
            page = client.get_events(start, end, (), PAGE, key)
            count += len(page.items)
            key = page.last_key
            if not key:
                break
        return count, time.monotonic() - started
    finally:
        client.close()


def sessions_source_ceiling(stack: Stack, sids: list[str]) -> tuple[int, float]:
    client = teleport_client(stack)
    try:
        started = time.monotonic()

        def read(sid: str) -> int:
            return sum(1 for _ in client.session_events(sid, 0))

        with concurrent.futures.ThreadPoolExecutor(SESSIONS_AT_ONCE) as pool:
            count = sum(pool.map(read, sids))
        return count, time.monotonic() - started
    finally:
        client.close()


def corpus_json(stack: Stack) -> list[bytes]:
    return [orjson.dumps(event) for event in all_events(stack.teleport_dir)]


# --- scenarios ------------------------------------------------------------------------


def variants(mode: str) -> list[tuple[bool, str, dict[str, object], dict[str, str]]]:
    """The handler runs of the backlog: (Forward?, name, TOML overrides, environment)."""
    runs: list[tuple[bool, str, dict[str, object], dict[str, str]]] = [
        (False, "HTTP arrays", {}, {}),
        (True, "Forward", {}, {}),
        (False, "HTTP arrays, pure Python (no accelerator)", {}, {NO_ACCEL_ENV: "1"}),
        (True, "Forward, pure Python (no accelerator)", {}, {NO_ACCEL_ENV: "1"}),
    ]
    if mode == "bulk":
        runs.append((False, "HTTP arrays, export-workers = 2", {"export_workers": 2}, {}))
    return runs


def backlog(work: str, events: int, days: int) -> None:
    per_day = -(-events // days)
    log(f"generating {days} days x {per_day:,} events ...")
    stack = Stack(
        root=os.path.join(work, "backlog"), days=days, events_per_day=per_day, forward=True
    )
    stack.init(["--sessions-per-day", "0"])
    bodies = corpus_json(stack)
    total = len(bodies)
    rows: list[Row] = []
    try:
        stack.start_fluentd()
        # Fluentd over HTTP runs some of its lives at about twice the CPU per event
        # (docs/performance.md): the faster of two fresh processes is its ceiling.
        http_s = float("inf")
        for attempt in (1, 2):
            if attempt > 1:
                fresh_fluentd(stack)
            log(f"ceiling: real Fluentd over HTTP from a bare client ({attempt} of 2)")
            row = sink_ceiling(
                stack,
                bodies,
                http_ceiling,
                f"real Fluentd ingest, HTTP arrays of {BATCH}, {CONNECTIONS} connections, "
                f"fresh Fluentd {attempt}",
            )
            rows.append(row)
            http_s = min(http_s, row.seconds)
        fresh_fluentd(stack)
        log("ceiling: real Fluentd over Forward from a bare client")
        row = sink_ceiling(
            stack,
            bodies,
            forward_ceiling,
            f"real Fluentd ingest, Forward frames of {BATCH}, {CONNECTIONS} connections",
        )
        rows.append(row)
        fwd_s = row.seconds
        del bodies
        sink = {False: total / http_s, True: total / fwd_s}
        source: dict[str, float] = {}
        for mode, measure, what in (
            ("bulk", bulk_source_ceiling, f"bulk export, {CHUNKS_AT_ONCE} chunks at once"),
            ("legacy", legacy_source_ceiling, f"paged search, pages of {PAGE}"),
        ):
            stack.start_teleport(mode=mode)
            log(f"ceiling: sandbox Teleport, {what}, to a bare reader")
            count, seconds = measure(stack, days)
            source[mode] = count / seconds
            rows.append(Row(f"sandbox Teleport streaming, {what}", count, seconds))
            for forward, how, overrides, env in variants(mode):
                name = f"handler, {mode} engine, {how}"
                fresh_fluentd(stack)
                log(name)
                toml = toml_for(stack, forward=forward, **overrides)
                row = run_handler(stack, toml, "--exit-on-last-event", env=env)
                records, distinct = arrived(stack, "audit")
                row.name, row.events = name, records
                row.ceiling = min(source[mode], sink[forward])
                if records != total or distinct != total:
                    row.note = f"{records:,} records, {distinct:,} distinct of {total:,}"
                rows.append(row)
            stack.stop_teleport()
    finally:
        stack.stop()
    print_table(f"Backlog: {total:,} events over {days} days into the real Fluentd 1.16.11", rows)


def latency(work: str, events: int, serial_seconds: float) -> None:
    stack = Stack(
        root=os.path.join(work, "latency"), days=1, events_per_day=events, fluentd="sandbox"
    )
    stack.init(["--sessions-per-day", "0"])
    stack.fluentd_args = ["--fault=latency_ms=25"]
    rows: list[Row] = []
    try:
        stack.start_teleport()
        for name, overrides, seconds in (
            ("default: arrays of 200, 10 connections", {}, None),
            (
                "one event per request, one connection (the Go plugin's way)",
                {"fluentd__array": False, "fluentd__max_connections": 1},
                serial_seconds,
            ),
        ):
            fresh_fluentd(stack)
            log(f"+25 ms: {name}")
            row = run_handler(
                stack,
                toml_for(stack, forward=False, **overrides),
                "--exit-on-last-event",
                seconds=seconds,
            )
            row.name, row.events = name, arrived(stack, "audit")[0]
            rows.append(row)
    finally:
        stack.stop()
    print_table("25 ms of receiver latency (sandbox Fluentd)", rows)
    print(f"\nratio: {rows[0].rate / rows[1].rate:,.0f}x the serial one-event mode")


def live(work: str, rate: int, seconds: float) -> None:
    print(
        f"\nLive tail: {rate:,} events/s appended for {seconds:.0f} s"
        " (arrival times at the sandbox Fluentd)\n"
    )
    print("| engine | events | p50 s | p99 s | max s | peak RSS MiB |")
    print("|---|---:|---:|---:|---:|---:|")
    for mode in ("bulk", "legacy"):
        stack = Stack(
            root=os.path.join(work, f"live-{mode}"),
            days=1,
            events_per_day=1000,
            fluentd="sandbox",
            mode=mode,
        )
        stack.init(["--sessions-per-day", "0"])
        arrivals = os.path.join(stack.root, "arrivals.log")
        stack.fluentd_args = ["--arrival-log", arrivals]
        try:
            stack.start_fluentd()
            stack.start_teleport(extra=["--live-rate", str(rate)])
            started_ns = time.time_ns()
            row = run_handler(stack, toml_for(stack, forward=False), seconds=seconds)
            delays = []
            with open(arrivals) as handle:
                for line in handle:
                    _uid, arrival, when = line.split()
                    moment = datetime.datetime.fromisoformat(when.replace("Z", "+00:00"))
                    event_ns = int(moment.timestamp()) * 1_000_000_000 + moment.microsecond * 1000
                    if event_ns > started_ns + 10 * 1_000_000_000:
                        delays.append((int(arrival) - event_ns) / 1e9)
        finally:
            stack.stop()
        if not delays:
            print(f"| {mode} | 0 | | | | {row.rss_mib} |")
            continue
        cuts = statistics.quantiles(delays, n=100)
        print(
            f"| {mode} | {len(delays):,} | {cuts[49]:.2f} | {cuts[98]:.2f} | {max(delays):.2f}"
            f" | {row.rss_mib} |"
        )
    sys.stdout.flush()


def sessions(work: str, count: int, per_session: int) -> None:
    prints = per_session - 3  # session.start, resize and session.end come with the prints
    stack = Stack(root=os.path.join(work, "sessions"), days=1, events_per_day=3 * count + 100)
    stack.init(["--sessions-per-day", str(count), "--session-prints", str(prints)])
    sids = sorted(
        {
            str(e["sid"])
            for e in all_events(stack.teleport_dir)
            if e.get("event") == "session.upload"
        }
    )
    rows: list[Row] = []
    try:
        stack.start_teleport()
        log(f"ceiling: sandbox Teleport streaming {len(sids)} recordings to a bare reader")
        events, seconds = sessions_source_ceiling(stack, sids)
        rows.append(
            Row(f"sandbox Teleport streaming, {SESSIONS_AT_ONCE} sessions at once", events, seconds)
        )
        fresh_fluentd(stack)
        log("handler: audit log and recordings")
        # Every recorded event is forwarded (the default skips print events, the bulk of one).
        toml = toml_for(stack, forward=False, skip_session_types=[])
        row = run_handler(stack, toml, "--exit-on-last-event")
        records, distinct = arrived(stack, "session")
        row.name, row.events, row.ceiling = (
            "handler, session recordings, HTTP arrays",
            records,
            events / seconds,
        )
        if distinct != records:
            row.note = f"{records - distinct:,} duplicates"
        rows.append(row)
    finally:
        stack.stop()
    print_table(
        f"Session recordings: {len(sids)} sessions x {per_session:,} events into the real Fluentd",
        rows,
    )


def clients(work: str, events: int, trees: list[str], rounds: int) -> None:
    """The same export with the handler's code from each source tree, alternating."""
    stack = Stack(root=os.path.join(work, "clients"), days=2, events_per_day=-(-events // 2))
    stack.init(["--sessions-per-day", "0"])
    rows: list[Row] = []
    try:
        stack.start_teleport(mode="legacy")
        for mode_name, overrides in (
            ("arrays of 200", {}),
            ("one event per request", {"fluentd__array": False}),
        ):
            for n in range(rounds):
                for tree in trees:
                    label, _, path = tree.partition("=")
                    fresh_fluentd(stack)
                    name = f"legacy engine, {mode_name}, {label}, round {n + 1}"
                    log(name)
                    toml = toml_for(stack, forward=False, **overrides)
                    env = {"PYTHONPATH": path} if path else None
                    limit = 60.0 if overrides else None
                    flags = () if limit else ("--exit-on-last-event",)
                    row = run_handler(stack, toml, *flags, seconds=limit, env=env)
                    row.name, row.events = name, arrived(stack, "audit")[0]
                    rows.append(row)
    finally:
        stack.stop()
    print_table(f"HTTP clients: {events:,} events (one event per request: 60 s)", rows)


def _cpu_seconds(pid: int) -> float | None:
    """User + system CPU of one process so far (from /proc), or None once it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            fields = handle.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as handle:
            return [int(child) for child in handle.read().split()]
    except OSError:
        return []


def workers(work: str, events: int, days: int, counts: list[int]) -> None:
    """Where the bulk engine's CPU goes with 0..N worker processes: the engine's
    own process (the part that stays on one GIL) against the workers."""
    per_day = -(-events // days)
    log(f"generating {days} days x {per_day:,} events ...")
    stack = Stack(root=os.path.join(work, "workers"), days=days, events_per_day=per_day)
    stack.init(["--sessions-per-day", "0"])
    title = f"Bulk engine, {events:,} events over {days} days into the real Fluentd"
    print(f"\n{title}: CPU per event\n")
    print("| export-workers | events/s | engine process µs/event | worker processes µs/event |")
    print("|---:|---:|---:|---:|")
    try:
        stack.start_teleport(mode="bulk")
        for count in counts:
            fresh_fluentd(stack)
            log(f"export-workers = {count}")
            toml = toml_for(stack, forward=False, export_workers=count)
            started = time.monotonic()
            proc = stack.start_handler(toml, "--exit-on-last-event")
            last: dict[int, float] = {}
            while proc.poll() is None:
                for pid in [proc.pid, *_children(proc.pid)]:
                    seconds = _cpu_seconds(pid)
                    if seconds is not None:
                        last[pid] = seconds
                time.sleep(0.1)
            elapsed = time.monotonic() - started
            if proc.returncode != 0:
                raise SystemExit(f"handler exited {proc.returncode}; see {stack.root}/handler.log")
            records, distinct = arrived(stack, "audit")
            if distinct != records:
                raise SystemExit(f"{records - distinct} events arrived twice")
            engine = last.pop(proc.pid, 0.0)
            print(
                f"| {count} | {records / elapsed:,.0f} | {engine / records * 1e6:.0f} "
                f"| {sum(last.values()) / records * 1e6:.0f} |"
            )
            sys.stdout.flush()
    finally:
        stack.stop()


def fluentd_modes(work: str, events: int, rounds: int) -> None:
    """The bare HTTP client's ceiling in fresh Fluentd processes, one after another."""
    stack = Stack(root=os.path.join(work, "fluentd"), days=2, events_per_day=-(-events // 2))
    stack.init(["--sessions-per-day", "0"])
    bodies = corpus_json(stack)
    rows: list[Row] = []
    try:
        for n in range(rounds):
            fresh_fluentd(stack)
            log(f"fresh Fluentd {n + 1} of {rounds}")
            rows.append(
                sink_ceiling(
                    stack,
                    bodies,
                    http_ceiling,
                    f"fresh Fluentd {n + 1}, bare client, HTTP arrays of {BATCH}",
                )
            )
    finally:
        stack.stop()
    print_table(f"Fluentd's HTTP ceiling, {len(bodies):,} events per fresh process", rows)


def main(argv: Iterable[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    sub = parser.add_subparsers(dest="scenario", required=True)
    p = sub.add_parser("backlog")
    p.add_argument("--events", type=int, default=1_000_000)
    p.add_argument("--days", type=int, default=7)
    p = sub.add_parser("latency")
    p.add_argument("--events", type=int, default=20_000)
    p.add_argument("--serial-seconds", type=float, default=30.0)
    p = sub.add_parser("live")
    p.add_argument("--rate", type=int, default=2000)
    p.add_argument("--seconds", type=float, default=60.0)
    p = sub.add_parser("sessions")
    p.add_argument("--sessions", type=int, default=500)
    p.add_argument("--events-per-session", type=int, default=2000)
    p = sub.add_parser("workers")
    p.add_argument("--events", type=int, default=300_000)
    p.add_argument("--days", type=int, default=3)
    p.add_argument("--counts", default="0,1,2,3", help="export-workers values to run")
    p = sub.add_parser("fluentd")
    p.add_argument("--events", type=int, default=600_000)
    p.add_argument("--rounds", type=int, default=8)
    p = sub.add_parser("clients")
    p.add_argument("--events", type=int, default=300_000)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument(
        "--tree",
        action="append",
        required=True,
        metavar="LABEL=SRC",
        help="a label and the src directory of a checkout to run the handler from",
    )
    args = parser.parse_args(list(argv) if argv is not None else None)
    work = tempfile.mkdtemp(prefix="teh-suite-")
    try:
        if args.scenario == "backlog":
            backlog(work, args.events, args.days)
        elif args.scenario == "latency":
            latency(work, args.events, args.serial_seconds)
        elif args.scenario == "clients":
            clients(work, args.events, args.tree, args.rounds)
        elif args.scenario == "workers":
            workers(work, args.events, args.days, [int(n) for n in args.counts.split(",")])
        elif args.scenario == "fluentd":
            fluentd_modes(work, args.events, args.rounds)
        elif args.scenario == "live":
            live(work, args.rate, args.seconds)
        else:
            sessions(work, args.sessions, args.events_per_session)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
