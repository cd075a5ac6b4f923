"""The payload-to-JSON conversion alone: µs per event, three ways, on the sandbox corpus.

    .venv/bin/python bench/convert.py [--events 5000] [--rounds 5]

Events come from the sandbox corpus generator (the kinds and sizes the
backlog benchmark exports). Rows: protobuf's own ``json_format.MessageToJson``,
the forwarder's Python walk (``python_struct_to_json``), and the compiled
accelerator (``accel/``) including the payload's serialisation it reads.
The best of ``--rounds`` rounds is printed.
"""

from __future__ import annotations

import argparse
import random
import time
from collections.abc import Callable

from google.protobuf import json_format, struct_pb2

from teleport_event_handler.events import python_struct_to_json
from teleport_sandbox.teleport import corpus


def _events(count: int) -> list[struct_pb2.Struct]:
    generator = corpus._Generator("bench.example.com", 1)
    rng = random.Random(1)
    out = []
    for index in range(count):
        event = generator.random_event(rng, 1_700_000_000_000_000_000 + index * 1000)
        out.append(struct_pb2.Struct.FromString(corpus._struct(event)))
    return out


def _best(
    events: list[struct_pb2.Struct], convert: Callable[[struct_pb2.Struct], object], rounds: int
) -> float:
    best = float("inf")
    for _ in range(rounds):
        started = time.perf_counter()
        for event in events:
            convert(event)
        best = min(best, time.perf_counter() - started)
    return best / len(events) * 1e6


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--events", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    events = _events(args.events)
    size = sum(event.ByteSize() for event in events) / len(events)
    rows: list[tuple[str, float]] = [
        (
            "protobuf json_format.MessageToJson",
            _best(events, json_format.MessageToJson, args.rounds),
        ),
        (
            "Python walk + orjson (pure-Python path)",
            _best(events, python_struct_to_json, args.rounds),
        ),
    ]
    try:
        import teleport_event_handler_accel as accel
    except ImportError:
        print("(the accelerator is not installed: pip install ./accel)")
    else:
        rows.append(
            (
                "compiled accelerator (serialise + C)",
                _best(events, lambda s: accel.struct_json(s.SerializeToString()), args.rounds),
            )
        )
    print(f"\n{len(events):,} events, {size:.0f} bytes of payload on average\n")
    print("| conversion | µs per event | x the Python walk |")
    print("|---|---:|---:|")
    walk = rows[1][1]
    for name, micros in rows:
        print(f"| {name} | {micros:.2f} | {walk / micros:.1f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
