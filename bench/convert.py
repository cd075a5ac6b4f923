"""The per-event conversions alone: µs per event, each way, on the sandbox corpus.

    .venv/bin/python bench/convert.py [--events 5000] [--rounds 5]

Events come from the sandbox corpus generator (the kinds and sizes the
backlog benchmark exports). Rows: protobuf's own ``json_format.MessageToJson``,
the forwarder's Python walk (``python_struct_to_json``), and the compiled
accelerator (``accel/``) including the payload's serialisation it reads.
Then the Forward protocol's entry of each event's JSON (``[EventTime,
record]`` as msgpack): the Python encoding (orjson, msgpack, the time parsed)
and the accelerator's. The best of ``--rounds`` rounds is printed.
"""

from __future__ import annotations

import argparse
import random
import time
from collections.abc import Callable
from typing import TypeVar

from google.protobuf import json_format, struct_pb2

from teleport_event_handler.events import python_struct_to_json
from teleport_event_handler.forward import python_encode_entry
from teleport_sandbox.teleport import corpus

T = TypeVar("T")


def _events(count: int) -> list[struct_pb2.Struct]:
    generator = corpus._Generator("bench.example.com", 1)
    rng = random.Random(1)
    out = []
    for index in range(count):
        event = generator.random_event(rng, 1_700_000_000_000_000_000 + index * 1000)
        out.append(struct_pb2.Struct.FromString(corpus._struct(event)))
    return out


def _best(events: list[T], convert: Callable[[T], object], rounds: int) -> float:
    best = float("inf")
    for _ in range(rounds):
        started = time.perf_counter()
        for event in events:
            convert(event)
        best = min(best, time.perf_counter() - started)
    return best / len(events) * 1e6


def _table(what: str, rows: list[tuple[str, float]]) -> None:
    print(f"| {what} | µs per event | x the Python path |")
    print("|---|---:|---:|")
    python = next(micros for name, micros in rows if name.startswith("Python"))
    for name, micros in rows:
        print(f"| {name} | {micros:.2f} | {python / micros:.1f} |")


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
        accel = None
    if accel is not None:
        rows.append(
            (
                "compiled accelerator (serialise + C)",
                _best(events, lambda s: accel.struct_json(s.SerializeToString()), args.rounds),
            )
        )
    print(f"\n{len(events):,} events, {size:.0f} bytes of payload on average\n")
    _table("conversion", rows)
    bodies = [python_struct_to_json(event) for event in events]
    rows = [
        ("Python: orjson, msgpack, time parsed", _best(bodies, python_encode_entry, args.rounds))
    ]
    if accel is not None:
        rows.append(("compiled accelerator", _best(bodies, accel.forward_entry, args.rounds)))
    print(f"\nForward entries of the same {len(bodies):,} events' JSON\n")
    _table("encoding", rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
