"""The compiled accelerator (accel/) gives the pure-Python conversion's JSON, or hands back.

``scripts/bootstrap`` builds and installs it, so these tests always run it; the
forwarder without it is covered by every other test run with
``TELEPORT_EVENT_HANDLER_NO_ACCEL`` (``test_the_forwarder_runs_without_it``).
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
from typing import Any

import orjson
import teleport_event_handler_accel as accel
from google.protobuf import struct_pb2
from hypothesis import given, settings
from hypothesis import strategies as st

from teleport_event_handler import events
from teleport_event_handler.events import python_struct_to_json, struct_to_dict, struct_to_json

scalars = (
    st.none()
    | st.booleans()
    | st.text()  # every code point, control characters and quotes included
    | st.integers(min_value=-(2**60), max_value=2**60).map(float)
    | st.floats(allow_nan=False, allow_infinity=False)
)
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(), inner, max_size=5),
    max_leaves=30,
)


def _struct(payload: dict[str, Any]) -> struct_pb2.Struct:
    struct = struct_pb2.Struct()
    struct.update(payload)
    return struct


def _same(a: Any, b: Any) -> bool:
    """Equal, with the same JSON types (1 and 1.0 differ)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


def test_the_forwarder_uses_it() -> None:
    assert events.CONVERSION == "compiled accelerator"


@settings(max_examples=500, deadline=None)
@given(st.dictionaries(st.text(), values, max_size=12))
def test_same_json_as_the_python_conversion(payload: dict[str, Any]) -> None:
    struct = _struct(payload)
    fast = accel.struct_json(struct.SerializeToString())
    assert fast is not None
    assert _same(orjson.loads(fast), orjson.loads(python_struct_to_json(struct)))
    assert _same(orjson.loads(fast), struct_to_dict(struct))


def test_numbers_print_as_the_python_conversion_prints_them() -> None:
    cases = {
        -0.0: b"0",
        3.0: b"3",
        -17.0: b"-17",
        2.0**53 - 1: b"9007199254740991",
        0.1: b"0.1",
        1.5e-7: b"1.5e-07",
        2.0**53: b"9007199254740992.0",  # a float from here on, as in the Python path
    }
    for number, text in cases.items():
        out = accel.struct_json(_struct({"n": number}).SerializeToString())
        assert out is not None
        value = orjson.loads(out)["n"]
        assert _same(value, orjson.loads(python_struct_to_json(_struct({"n": number})))["n"])
        assert float(value) == float(orjson.loads(text))


def test_strings_are_escaped_as_json_requires() -> None:
    text = 'q"b\\s/\n\r\t\b\f\x00\x1f\x7fü✓\u2028😀'
    out = accel.struct_json(_struct({"k\n": text}).SerializeToString())
    assert out is not None
    assert orjson.loads(out) == {"k\n": text}
    assert b"\\u0000" in out and b"\\u001f" in out and "ü✓".encode() in out


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _field(number: int, payload: bytes) -> bytes:
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def _entry(key: bytes, value: bytes) -> bytes:
    return _field(1, _field(1, key) + _field(2, value))


def test_what_it_does_not_convert_exactly_is_handed_back() -> None:
    string_value = _field(3, b"x")
    duplicate = _entry(b"a", string_value) + _entry(b"a", _field(3, b"y"))
    unknown_field = _entry(b"a", string_value) + _field(9, b"?")
    two_kinds = _entry(b"a", string_value + _varint(4 << 3) + b"\x01")
    nan = _entry(
        b"a", _varint(2 << 3 | 1) + struct_pb2.Value(number_value=math.nan).SerializeToString()[1:]
    )
    truncated = _entry(b"a", string_value)[:-1]
    deep = struct_pb2.Struct()
    level = deep
    for _ in range(80):
        level = level.fields["d"].struct_value
    for data in (duplicate, unknown_field, two_kinds, nan, truncated, deep.SerializeToString()):
        assert accel.struct_json(data) is None, data[:40]
    # The forwarder then converts in Python: protobuf keeps the last of a repeated key.
    parsed = struct_pb2.Struct.FromString(duplicate)
    assert orjson.loads(struct_to_json(parsed)) == {"a": "y"}
    assert orjson.loads(struct_to_json(deep))["d"]["d"]["d"] is not None


def test_missing_key_or_value_is_what_protobuf_reads() -> None:
    no_value = _field(1, _field(1, b"a"))
    no_key = _field(1, _field(2, _field(3, b"v")))
    for data in (no_value, no_key):
        out = accel.struct_json(data)
        assert out is not None
        assert orjson.loads(out) == struct_to_dict(struct_pb2.Struct.FromString(data))


def test_the_forwarder_runs_without_it() -> None:
    code = (
        "from teleport_event_handler import events; from google.protobuf import struct_pb2;"
        "s = struct_pb2.Struct(); s.update({'a': [1, 'b']});"
        "print(events.CONVERSION, events.struct_to_json(s).decode())"
    )
    env = {**os.environ, events.NO_ACCEL_ENV: "1"}
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == 'pure Python {"a":[1,"b"]}'
