#!/usr/bin/env python3
"""How fast the Fluentd client and the sandbox Fluentd move events, over mutual TLS.

Starts ``sandbox-fluentd`` as its own process (file output, the generated
fluent.conf's <parse>), then delivers Teleport-sized events (~690 bytes) with
``FluentdClient`` as JSON arrays of 100 and 500 and one event per POST (the Go
plugin's wire form), from 1 and 4 threads. Prints events/s and the CPU each
side spent per event, and checks that every event was stored.

    .venv/bin/python bench/sink_throughput.py [--events 20000] [--single-events 3000]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import orjson

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests" / "unit" / "sandbox"))  # the certificate fixtures

from fluentd_certs import fluent_conf, make_fluentd_certs  # noqa: E402

from teleport_event_handler.backoff import Shutdown  # noqa: E402
from teleport_event_handler.sink import FluentdClient  # noqa: E402
from teleport_sandbox.fluentd import read_records  # noqa: E402

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def teleport_event(i: int) -> bytes:
    return orjson.dumps(
        {
            "ei": i,
            "event": "session.start",
            "uid": f"{i:08x}-6f2c-4a8e-9c1d-3b5e7a9f1c2d",
            "code": "T2000I",
            "time": "2025-06-01T23:57:37.919Z",
            "cluster_name": "teleport.example.com",
            "user": "alice@example.com",
            "login": "root",
            "sid": "9d6f3c1e-2b4a-4f8e-a1c3-5e7d9b2f4a6c",
            "namespace": "default",
            "server_id": "b3c2a1d0-9e8f-4a7b-8c6d-5e4f3a2b1c0d",
            "server_hostname": "node-01.example.com",
            "server_addr": "10.0.0.17:3022",
            "addr.remote": "203.0.113.9:51234",
            "proto": "ssh",
            "size": "80:25",
            "initial_command": [""],
            "session_recording": "node",
            "private_key_policy": "none",
            "user_kind": 1,
            "server_labels": {"env": "prod", "team": "platform", "region": "eu-west-1"},
        }
    )


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def run_case(
    url: str, certs_dir: Path, events: list[bytes], threads: int, batch: int | None, pid: int
) -> tuple[float, float, float]:
    """(events/s, client CPU µs/event, receiver CPU µs/event)."""
    client = FluentdClient(
        ca=str(certs_dir / "ca.crt"),
        cert=str(certs_dir / "client.crt"),
        key=str(certs_dir / "client.key"),
        max_connections=threads,
        shutdown=Shutdown(),
    )
    shares = [events[n::threads] for n in range(threads)]

    def work(share: list[bytes]) -> None:
        if batch is None:
            client.deliver(url, share, as_array=False)
            return
        for start in range(0, len(share), batch):
            client.deliver(url, share[start : start + batch], as_array=True)

    workers = [threading.Thread(target=work, args=(share,)) for share in shares]
    server_cpu, client_cpu, started = cpu_seconds(pid), time.process_time(), time.perf_counter()
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    elapsed = time.perf_counter() - started
    client_cpu = time.process_time() - client_cpu
    server_cpu = cpu_seconds(pid) - server_cpu
    client.close()
    assert client.events == len(events) and client.retries == 0, "delivery was not clean"
    count = len(events)
    return count / elapsed, client_cpu / count * 1e6, server_cpu / count * 1e6


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=20000, help="events per array case")
    parser.add_argument("--single-events", type=int, default=3000, help="events per single case")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="sink-bench-"))
    certs = make_fluentd_certs(work / "certs")
    out = work / "out" / "events"
    conf = work / "fluent.conf"
    conf.write_text(fluent_conf(certs, out, match="**"))
    port_file = work / "port"
    command = [sys.executable, "-m", "teleport_sandbox.fluentd"]
    receiver = subprocess.Popen(
        [*command, "--config", str(conf), "--port", "0", "--port-file", str(port_file)]
    )
    try:
        deadline = time.monotonic() + 20
        while not port_file.exists():
            if receiver.poll() is not None or time.monotonic() > deadline:
                raise SystemExit("sandbox-fluentd did not start")
            time.sleep(0.05)
        url = f"https://localhost:{int(port_file.read_text())}/test.log"
        size = len(teleport_event(0))
        print(f"events of {size} bytes, mutual TLS, sandbox Fluentd with file output")
        print(
            f"{'mode':<14}{'threads':>8}{'events':>8}{'events/s':>11}"
            f"{'client µs/ev':>14}{'fluentd µs/ev':>15}"
        )
        total = 0
        for label, batch, count in (
            ("array of 100", 100, args.events),
            ("array of 500", 500, args.events),
            ("single", None, args.single_events),
        ):
            for threads in (1, 4):
                events = [teleport_event(total + i) for i in range(count)]
                total += count
                rate, client_us, server_us = run_case(
                    url, certs.directory, events, threads, batch, receiver.pid
                )
                print(
                    f"{label:<14}{threads:>8}{count:>8}{rate:>11,.0f}"
                    f"{client_us:>14.1f}{server_us:>15.1f}"
                )
    finally:
        receiver.terminate()
        receiver.wait(timeout=30)
    stored = len(read_records(out))
    print(f"stored {stored} of {total} events" + ("" if stored == total else "  <-- LOST"))
    return 0 if stored == total else 1


if __name__ == "__main__":
    sys.exit(main())
