"""Where the handler's time goes: one export under py-spy, summarised as tables.

    .venv/bin/python bench/profile.py [--mode bulk|legacy] [--events 200000] [--days 2]
                                      [--forward] [--native] [--top 25]

A fresh sandbox Teleport with ``--events`` over ``--days`` days is exported
into the real Fluentd 1.16.11 with ``--exit-on-last-event`` while py-spy
(``pip install py-spy``) samples every thread of the handler 200 times a
second. The tables give, per function, the share of samples where it is on
top of the stack (self) and anywhere on it (inclusive), over the samples of
busy threads only (``--idle`` off: threads waiting in a lock or on a socket
are not counted); ``--native`` adds the C frames of gRPC and the interpreter.
The raw profile (collapsed stacks) stays next to the table's path for
flame-graph tools.
"""

from __future__ import annotations

import argparse
import collections
import os
import shutil
import subprocess
import sys
import tempfile

from teleport_sandbox.stack import Stack


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--mode", choices=("bulk", "legacy"), default="bulk")
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--days", type=int, default=2)
    parser.add_argument("--forward", action="store_true")
    parser.add_argument("--native", action="store_true")
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--keep", help="copy the raw profile here")
    args = parser.parse_args()
    spy = shutil.which("py-spy")
    if not spy:
        raise SystemExit("py-spy is not installed: .venv/bin/pip install py-spy")
    work = tempfile.mkdtemp(prefix="teh-profile-")
    stack = Stack(
        root=os.path.join(work, "stack"),
        days=args.days,
        events_per_day=-(-args.events // args.days),
        mode=args.mode,
        forward=args.forward,
    )
    try:
        stack.init(["--sessions-per-day", "0"])
        stack.start_teleport()
        stack.start_fluentd()
        toml = stack.handler_toml(start_time=stack.corpus_start())
        raw = os.path.join(work, "profile.txt")
        command = [
            spy, "record", "--rate", "200", "--format", "raw", "--output", raw,
            "--threads", "--nonblocking", *(["--native"] if args.native else []),
            "--", *stack.handler_command(toml, "--exit-on-last-event"),
        ]  # fmt: skip
        with open(os.path.join(stack.root, "handler.log"), "ab") as log:
            subprocess.run(command, check=True, stdout=log, stderr=subprocess.STDOUT)
        self_time: collections.Counter[str] = collections.Counter()
        inclusive: collections.Counter[str] = collections.Counter()
        total = 0
        with open(raw) as handle:
            for line in handle:
                stack_text, _, count_text = line.rstrip("\n").rpartition(" ")
                count = int(count_text)
                frames = [f for f in stack_text.split(";") if not f.startswith("thread (")]
                if not frames:
                    continue
                total += count
                self_time[_short(frames[-1])] += count
                for name in {_short(f) for f in frames}:
                    inclusive[name] += count
        if args.keep:
            shutil.copy(raw, args.keep)
        print(f"\n{args.mode} engine, {args.events:,} events, {total:,} busy samples\n")
        print("| function (self) | share |")
        print("|---|---:|")
        for name, count in self_time.most_common(args.top):
            print(f"| `{name}` | {100 * count / total:.1f}% |")
        print("\n| function (inclusive) | share |")
        print("|---|---:|")
        for name, count in inclusive.most_common(args.top):
            print(f"| `{name}` | {100 * count / total:.1f}% |")
    finally:
        stack.stop()
        shutil.rmtree(work, ignore_errors=True)
    return 0


def _short(frame: str) -> str:
    """``func (path/to/module.py:12)`` → ``module.func``."""
    name, _, where = frame.partition(" (")
    path = where.split(":")[0]
    module = os.path.splitext(os.path.basename(path))[0] if path else ""
    return f"{module}.{name}" if module else name


if __name__ == "__main__":
    sys.exit(main())
