"""``python -m teleport_sandbox.demo``: the main job on this machine.

Builds a sandbox Teleport cluster (with a few days of audit events), the
event handler's role, user and identity, Fluentd mTLS material and a real
Fluentd 1.16 with the project's ``fluent.conf`` template (``--fluentd
sandbox`` runs the stand-in instead), then runs ``teleport-event-handler
start`` until it has exported every event, stops and restarts it to show it
resumes where it stopped, and prints what arrived.
"""

from __future__ import annotations

import argparse
import collections
import os
import subprocess
import sys
import time

from teleport_sandbox.stack import FLUENTD_KINDS, Stack


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--dir", default=os.path.abspath("demo-run"), help="work directory")
    parser.add_argument("--days", type=int, default=3)
    parser.add_argument("--events-per-day", type=int, default=5000)
    parser.add_argument("--mode", choices=("bulk", "legacy"), default="bulk")
    parser.add_argument(
        "--fluentd",
        choices=FLUENTD_KINDS,
        default="real",
        help="real: Fluentd 1.16 (../shared/vendor/fluentd or PATH); sandbox: the stand-in",
    )
    args = parser.parse_args(argv)

    stack = Stack(
        root=args.dir,
        days=args.days,
        events_per_day=args.events_per_day,
        mode=args.mode,
        fluentd=args.fluentd,
    )
    stack.clean()
    print(f"[1] sandbox Teleport: {args.days} days x {args.events_per_day} events in {args.dir}")
    stack.init()
    print(f"[2] tctl: role and user teleport-event-handler created; identity in {stack.identity}")
    stack.start_teleport()
    stack.start_fluentd()
    which = "Fluentd 1.16" if args.fluentd == "real" else "sandbox Fluentd"
    print(
        f"[3] Teleport Auth at {stack.teleport_addr}, {which} at "
        f"https://localhost:{stack.fluentd_port} (config {stack.fluentd_dir}/fluent.conf)"
    )
    toml = stack.handler_toml(start_time=stack.corpus_start())
    try:
        started = time.monotonic()
        handler = stack.start_handler(toml, "--exit-on-last-event")
        code = handler.wait(timeout=1800)
        elapsed = time.monotonic() - started
        if code != 0:
            print(f"teleport-event-handler exited {code}; see {stack.root}/handler.log")
            return 1
        records = stack.received("audit")
        print(
            f"[4] exported {len(records)} events in {elapsed:.1f}s ({len(records) / elapsed:.0f}/s)"
        )
        print("[5] run again: it resumes from its stored cursors")
        again = subprocess.run(
            stack.handler_command(toml, "--exit-on-last-event"), check=False, capture_output=True
        )
        after = stack.received("audit")
        expected = stack.teleport_uids()
        got = {r.get("uid") for r in after}
        by_type = collections.Counter(str(r.get("event")) for r in after)
        print(f"    second run exit {again.returncode}, {len(after) - len(records)} events re-sent")
        print()
        print(f"{'event type':<28}{'received':>10}")
        for event_type, count in sorted(by_type.items()):
            print(f"{event_type:<28}{count:>10}")
        print(f"{'total':<28}{len(after):>10}")
        missing = expected - got
        print()
        print(
            f"events in Teleport: {len(expected)}; distinct at Fluentd: {len(got & expected)}; "
            f"missing: {len(missing)}"
        )
        print(f"Fluentd output: {stack.out_dir}; handler state: {stack.storage}")
        return 0 if not missing else 1
    finally:
        stack.stop()


if __name__ == "__main__":
    sys.exit(main())
