"""The long form of the fault suite (its bounded form is tests/integration/test_fault_suite.py).

    .venv/bin/python bench/faults.py [--events 200000] [--kills 50] [--only NAME]

Each fault runs one export of the same sandbox cluster (audit events and the
session recordings they announce) and compares what Fluentd stored with a
clean export of that cluster made first: "lost" counts records of the clean
run missing from the faulty one, "re-sent" counts records stored more than
once, "bound" is what the docs promise a crash re-sends at most (one in-flight
window, ``fluentd-max-connections`` x ``fluentd-batch-size``, per kill).
"recovery" is the time from the end of a receiver outage to the first record
stored after it.

Faults:
  kill-9           ``--kills`` kill -9 at random points, then a run to the end,
                   against the real Fluentd (arrays, and one event per request)
  fluentd-down     the real Fluentd stopped for 60 s mid-export, then started again
  fluentd-500      the sandbox Fluentd answers 500 to everything for 30 s
  fluentd-hang     the sandbox Fluentd holds every answer 20 s for 30 s
  teleport-flaky   the sandbox Teleport fails 30% of calls with UNAVAILABLE, 10% with
                   DEADLINE_EXCEEDED, and cuts each stream after 500 events
"""

from __future__ import annotations

import argparse
import collections
import os
import random
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass

import orjson

from teleport_sandbox.stack import Stack

MAX_CONNECTIONS = 4
BATCH_SIZE = 50
WINDOW = MAX_CONNECTIONS * BATCH_SIZE
RUN_TIMEOUT = 1800


@dataclass
class Result:
    fault: str
    records: int
    lost: int
    resent: int
    bound: str = ""
    recovery: str = ""
    seconds: float = 0.0


Key = tuple[object, ...]


def stored(stack: Stack) -> collections.Counter[Key]:
    """Every record Fluentd stored (audit and session), by identity."""
    stack.wait_for_flush(timeout=600)
    counts: collections.Counter[Key] = collections.Counter()
    for name in os.listdir(stack.out_dir):
        if not name.endswith(".log"):
            continue
        with open(os.path.join(stack.out_dir, name), "rb") as handle:
            for line in handle:
                if line.strip():
                    r = orjson.loads(line)
                    counts[(r.get("uid"), r.get("sid"), r.get("ei"), r.get("event"))] += 1
    return counts


def newest_record_time(stack: Stack) -> float:
    latest = 0.0
    for name in os.listdir(stack.out_dir):
        path = os.path.join(stack.out_dir, name)
        if name.endswith(".log") and os.path.getsize(path):
            latest = max(latest, os.path.getmtime(path))
    return latest


def toml(stack: Stack, array: bool = True) -> str:
    return stack.handler_toml(
        start_time=stack.corpus_start(),
        fluentd__array=array,
        fluentd__max_connections=MAX_CONNECTIONS,
        fluentd__batch_size=BATCH_SIZE,
    )


def to_end(stack: Stack, config: str) -> float:
    started = time.monotonic()
    proc = stack.start_handler(config, "--exit-on-last-event")
    if proc.wait(RUN_TIMEOUT) != 0:
        raise SystemExit(f"handler exited {proc.returncode}; see {stack.root}/handler.log")
    return time.monotonic() - started


def compare(name: str, stack: Stack, clean: collections.Counter[Key], seconds: float) -> Result:
    got = stored(stack)
    lost = sum(1 for key in clean if key not in got)
    resent = sum(count - 1 for count in got.values() if count > 1)
    return Result(name, sum(got.values()), lost, resent, seconds=seconds)


def kill_9(stack: Stack, kills: int, array: bool, seed: int) -> float:
    rng = random.Random(seed)
    config = toml(stack, array)
    started = time.monotonic()
    for _ in range(kills):
        before = stack.output_bytes("")
        proc = stack.start_handler(config)
        deadline = time.monotonic() + 120
        while stack.output_bytes("") <= before:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"handler sent nothing before the kill; see {stack.root}")
            time.sleep(0.05)
        time.sleep(rng.uniform(0.0, 1.5))
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    to_end(stack, config)
    return time.monotonic() - started


def outage(
    stack: Stack, down: Callable[[], None], up: Callable[[], None], seconds: float
) -> tuple[float, float]:
    """Start an export, cause ``down`` once records flow, ``up`` after ``seconds``;
    returns (recovery seconds, wall time to the end)."""
    config = toml(stack)
    started = time.monotonic()
    proc = stack.start_handler(config, "--exit-on-last-event")
    while stack.output_bytes("") == 0:
        time.sleep(0.05)
    down()
    time.sleep(seconds)
    up()
    back = time.time()
    recovery = float("nan")
    while proc.poll() is None:
        if recovery != recovery and newest_record_time(stack) > back:
            recovery = newest_record_time(stack) - back
        time.sleep(0.05)
    if recovery != recovery:
        recovery = max(0.0, newest_record_time(stack) - back)
    if proc.returncode != 0:
        raise SystemExit(f"handler exited {proc.returncode}; see {stack.root}/handler.log")
    return recovery, time.monotonic() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--kills", type=int, default=50)
    parser.add_argument("--only", help="run the faults whose name contains this text")
    args = parser.parse_args()
    work = tempfile.mkdtemp(prefix="teh-faults-")
    results: list[Result] = []
    try:
        template = os.path.join(work, "template")
        print(
            f"preparing 2 days x {args.events // 2:,} events with recordings ...", file=sys.stderr
        )
        Stack(root=template, days=2, events_per_day=args.events // 2).init()
        clean: dict[str, collections.Counter[Key]] = {}

        def stack_for(name: str, fluentd: str = "real", **kwargs: object) -> Stack:
            root = os.path.join(work, name)
            shutil.rmtree(root, ignore_errors=True)
            return Stack.copy_of(template, root, fluentd=fluentd, mode="bulk", **kwargs)

        def reference(fluentd: str) -> collections.Counter[Key]:
            if fluentd not in clean:
                stack = stack_for(f"clean-{fluentd}", fluentd)
                try:
                    stack.start_teleport()
                    stack.start_fluentd()
                    seconds = to_end(stack, toml(stack))
                    clean[fluentd] = stored(stack)
                    results.append(
                        Result(
                            f"none ({fluentd} Fluentd)",
                            sum(clean[fluentd].values()),
                            0,
                            0,
                            seconds=seconds,
                        )
                    )
                finally:
                    stack.stop()
            return clean[fluentd]

        def want(name: str) -> bool:
            return not args.only or args.only in name

        for array in (True, False):
            name = f"kill-9 x{args.kills}, {'arrays' if array else 'one event per request'}"
            if not want(name):
                continue
            ref = reference("real")
            stack = stack_for("kill")
            try:
                stack.start_teleport()
                stack.start_fluentd()
                seconds = kill_9(stack, args.kills, array, seed=7 if array else 11)
                result = compare(name, stack, ref, seconds)
                result.bound = f"{args.kills * WINDOW:,}"
                results.append(result)
            finally:
                stack.stop()
            print(f"{name}: done", file=sys.stderr)

        if want("fluentd-down"):
            ref = reference("real")
            stack = stack_for("down")
            try:
                stack.start_teleport()
                stack.start_fluentd()
                recovery, seconds = outage(stack, stack.stop_fluentd, stack.start_fluentd, 60)
                result = compare("fluentd-down 60 s (real Fluentd)", stack, ref, seconds)
                result.recovery = f"{recovery:.1f} s"
                results.append(result)
            finally:
                stack.stop()

        for name, faults in (
            ("fluentd-500 for 30 s", {"status": 500}),
            ("fluentd-hang (20 s answers) for 30 s", {"latency_ms": 20_000}),
        ):
            if not want(name):
                continue
            ref = reference("sandbox")
            stack = stack_for("sandbox-fault", "sandbox")
            try:
                stack.start_teleport()
                stack.start_fluentd()
                recovery, seconds = outage(
                    stack, lambda s=stack, f=faults: s.fluentd_faults(**f), stack.fluentd_faults, 30
                )
                result = compare(name, stack, ref, seconds)
                result.recovery = f"{recovery:.1f} s"
                results.append(result)
            finally:
                stack.stop()

        name = "teleport-flaky (30% UNAVAILABLE, 10% DEADLINE_EXCEEDED, streams cut at 500)"
        if want("teleport-flaky"):
            ref = reference("real")
            stack = stack_for(
                "flaky",
                teleport_args=[
                    "--fault", "unavailable=0.3", "deadline=0.1", "drop_stream_after=500",
                ],
            )  # fmt: skip
            try:
                stack.start_teleport()
                stack.start_fluentd()
                seconds = to_end(stack, toml(stack))
                results.append(compare(name, stack, ref, seconds))
            finally:
                stack.stop()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"\nFault suite, long form: {args.events:,} audit events and their recordings\n")
    print("| fault | records stored | lost | re-sent | re-send bound | recovery | seconds |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for r in results:
        print(
            f"| {r.fault} | {r.records:,} | {r.lost} | {r.resent:,} | {r.bound} | {r.recovery}"
            f" | {r.seconds:.0f} |"
        )
    return 1 if any(r.lost for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
