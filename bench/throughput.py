"""End-to-end throughput and memory of teleport-event-handler on the sandbox.

    .venv/bin/python bench/throughput.py [--events-per-day N] [--days D] [--only TEXT]
                                         [--fluentd sandbox|real]

For each scenario a fresh copy of one sandbox cluster is exported from the
first event to the last (``--exit-on-last-event``) through the sandbox
Fluentd over mutual TLS, and the table shows events/s (events at Fluentd
divided by the handler's wall time, start-up included) and the handler's
peak RSS (VmHWM, sampled every 20 ms). Scenarios cover both engines,
JSON-array batches (the default) and one event per request (the Go plugin's
wire form), legacy pages of 500 (the sandbox TOML's ``batch``) and of 20 (the
Go template's), with and without 25 ms of added receiver latency (the latency
of Teleport issue #56268). ``--fluentd real`` sends to a real Fluentd 1.16
with the project's fluent.conf instead (a real deployment's figures; the
latency scenarios need the sandbox's faults and are skipped). The
"forward" scenarios send over Fluentd's Forward protocol (in_forward,
PackedForward batches with acks, mutual TLS) instead of in_http; ``--only
arrays`` runs them next to the HTTP array scenarios in one run.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass

from teleport_sandbox.stack import FLUENTD_KINDS, Stack


@dataclass
class Scenario:
    name: str
    mode: str
    array: bool
    latency_ms: int = 0
    max_connections: int | None = None
    page_size: int | None = None
    forward: bool = False


SCENARIOS = [
    Scenario("bulk, arrays of 200 (default)", "bulk", True),
    Scenario("legacy, pages of 500, arrays of 200", "legacy", True),
    Scenario("legacy, pages of 20 (Go template)", "legacy", True, page_size=20),
    Scenario("bulk, one event per request", "bulk", False),
    Scenario("legacy, one event per request", "legacy", False),
    Scenario("bulk, forward, arrays of 200", "bulk", True, forward=True),
    Scenario("legacy, forward, arrays of 200", "legacy", True, forward=True),
    Scenario("bulk, arrays, +25 ms latency", "bulk", True, 25),
    Scenario("bulk, one per request, +25 ms latency", "bulk", False, 25),
]


def run(template: str, work: str, scenario: Scenario, fluentd: str) -> tuple[int, float, int]:
    root = os.path.join(work, scenario.name.replace(" ", "_").replace(",", ""))
    stack = Stack.copy_of(
        template, root, mode=scenario.mode, fluentd=fluentd, forward=scenario.forward
    )
    fluentd_args = [f"--fault=latency_ms={scenario.latency_ms}"] if scenario.latency_ms else []
    stack.fluentd_args = fluentd_args
    stack.start_teleport()
    stack.start_fluentd()
    try:
        overrides: dict[str, object] = {
            "start_time": stack.corpus_start(),
            "fluentd__array": scenario.array,
        }
        if scenario.max_connections:
            overrides["fluentd__max_connections"] = scenario.max_connections
        if scenario.page_size:
            overrides["batch"] = scenario.page_size
        toml = stack.handler_toml(**overrides)
        started = time.monotonic()
        proc = stack.start_handler(toml, "--exit-on-last-event")
        peak_kib = 0
        while proc.poll() is None:
            peak_kib = max(peak_kib, high_water_kib(proc.pid))
            time.sleep(0.02)
        elapsed = time.monotonic() - started
        if proc.returncode != 0:
            raise SystemExit(f"{scenario.name}: handler exited {proc.returncode}; see {root}")
        received = len(stack.received("audit"))
        return received, elapsed, peak_kib // 1024
    finally:
        stack.stop()
        shutil.rmtree(root, ignore_errors=True)


def high_water_kib(pid: int) -> int:
    """The process's peak RSS so far (VmHWM). ``wait4``'s ru_maxrss would count
    the benchmark's own memory, which the child holds between fork and exec."""
    try:
        with open(f"/proc/{pid}/status") as handle:
            for line in handle:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--days", type=int, default=3)
    parser.add_argument("--events-per-day", type=int, default=20_000)
    parser.add_argument("--only", help="run the scenarios whose name contains this text")
    parser.add_argument(
        "--fluentd",
        choices=FLUENTD_KINDS,
        default="sandbox",
        help="sandbox: the forwarder's ceiling; real: Fluentd 1.16 with the project's fluent.conf",
    )
    args = parser.parse_args()
    work = tempfile.mkdtemp(prefix="teh-bench-")
    try:
        template = os.path.join(work, "template")
        print(f"preparing {args.days} days x {args.events_per_day} events ...", file=sys.stderr)
        Stack(root=template, days=args.days, events_per_day=args.events_per_day).init()
        print(f"{'scenario':<40}{'events':>9}{'seconds':>9}{'events/s':>10}{'peak RSS MiB':>14}")
        for scenario in SCENARIOS:
            if args.only and args.only not in scenario.name:
                continue
            if scenario.latency_ms and args.fluentd == "real":
                print(f"{scenario.name:<40}  skipped: a real Fluentd has no latency on cue")
                continue
            received, elapsed, rss = run(template, work, scenario, args.fluentd)
            print(
                f"{scenario.name:<40}{received:>9}{elapsed:>9.1f}"
                f"{received / elapsed:>10,.0f}{rss:>14}",
                flush=True,
            )
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
