"""The compiled accelerator (accel/) gives the pure-Python bytes, or hands back.

Both of its functions are held to the Python code they replace: a payload's
JSON (``struct_json``) and an event's Forward-protocol entry (``forward_entry``).

``scripts/bootstrap`` builds and installs it, so these tests always run it; the
forwarder without it is covered by every other test run with
``TELEPORT_EVENT_HANDLER_NO_ACCEL`` (``test_the_forwarder_runs_without_it``).
"""

from __future__ import annotations

import datetime
import json
import math
import os
import subprocess
import sys
import time
from typing import Any

import msgpack  # type: ignore[import-untyped]
import orjson
import teleport_event_handler_accel as accel
from google.protobuf import struct_pb2
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from teleport_event_handler import accelerator, forward
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
    assert accelerator.CONVERSION == "compiled accelerator"
    assert forward._forward_entry is not None


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
        "from teleport_event_handler import accelerator, events, forward;"
        "from google.protobuf import struct_pb2;"
        "s = struct_pb2.Struct(); s.update({'a': [1, 'b']});"
        "print(accelerator.CONVERSION, events.struct_to_json(s).decode(),"
        " forward._forward_entry, forward.encode_entry(b'{\"a\":1}')[11:].hex())"
    )
    env = {**os.environ, accelerator.NO_ACCEL_ENV: "1"}
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == 'pure Python {"a":[1,"b"]} None 81a16101'


# --- forward_entry -----------------------------------------------------------------

json_scalars = (
    st.none()
    | st.booleans()
    | st.text()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(), inner, max_size=5),
    max_leaves=30,
)
# RFC 3339 times as Teleport writes them and as other writers might: every
# fraction length, Z or an offset.


def _rfc3339(moment: datetime.datetime, digits: int, zone: str) -> str:
    fraction = f"{moment.microsecond:06d}{moment.microsecond % 1000:03d}"[:digits]
    return moment.strftime("%Y-%m-%dT%H:%M:%S") + ("." + fraction if digits else "") + zone


rfc3339 = st.builds(
    _rfc3339,
    st.datetimes(datetime.datetime(1970, 1, 2), datetime.datetime(2106, 2, 6)),
    st.integers(0, 12),
    st.sampled_from(["Z", "z", "+00:00", "-00:00", "+05:30", "-08:00", "+23:59"]),
)
times = (
    rfc3339
    | st.text(max_size=30)  # anything else: the entry then carries the time of sending
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.none()
)
dumps = st.sampled_from(
    [
        orjson.dumps,
        lambda value: json.dumps(value).encode(),  # \u escapes, surrogate pairs
        lambda value: json.dumps(value, indent=1, ensure_ascii=False).encode(),
    ]
)


def _parsed_time(record: dict[str, Any]) -> bool:
    """Whether the Python encoding takes the entry's time from the record (not now)."""
    first = forward._event_time(record)
    time.sleep(0.000_002)
    return bool(first == forward._event_time(record))


def _same_entry(fast: bytes, text: bytes) -> None:
    before = time.time_ns()
    slow = forward.python_encode_entry(text)
    after = time.time_ns()
    assert fast[:3] == slow[:3] and fast[11:] == slow[11:]
    if _parsed_time(orjson.loads(text)):
        assert fast[3:11] == slow[3:11]
    else:
        seconds, nanos = msgpack.unpackb(fast)[0].data[:4], fast[7:11]
        sent = int.from_bytes(seconds) * 10**9 + int.from_bytes(nanos)
        assert before - 10**9 <= sent <= after


@settings(max_examples=500, deadline=None)
@given(st.dictionaries(st.text(), json_values, max_size=12), times, dumps)
def test_same_entry_as_the_python_encoding(record: dict[str, Any], when: object, dump: Any) -> None:
    if when is not None:
        record["time"] = when
    text = dump(record)
    fast = accel.forward_entry(text)
    if isinstance(when, str) and not (when.isascii() and "\n" not in when):
        # Python's pattern takes any Unicode digit (and a final newline): such a
        # "time" goes to Python, whatever it holds.
        assume(fast is not None)
    assert fast is not None, text
    _same_entry(fast, text)


@settings(max_examples=500, deadline=None)
@given(st.dictionaries(st.text(), json_values, max_size=6), st.data())
def test_any_damage_is_handed_back_or_encoded_alike(record: dict[str, Any], data: Any) -> None:
    text = bytearray(orjson.dumps(record))
    at = data.draw(st.integers(0, len(text)))
    what = data.draw(st.sampled_from(["cut", "byte", "insert"]))
    if what == "cut":
        del text[at:]
    elif what == "byte" and at < len(text):
        text[at] = data.draw(st.integers(0, 255))
    else:
        text[at:at] = data.draw(st.sampled_from([b",", b"}", b"]", b'"', b"\\", b"-", b"\xff"]))
    fast = accel.forward_entry(bytes(text))
    try:
        forward.python_encode_entry(bytes(text))
    except ValueError:
        assert fast is None
        return
    if fast is not None:
        _same_entry(fast, bytes(text))


def test_what_it_does_not_encode_exactly_is_handed_back() -> None:
    for text in (
        b'{"a":1,"a":2}',  # orjson keeps the last value of a repeated key
        b'{"a":18446744073709551616}',  # beyond 64 bits: orjson reads a float
        b'{"a":-9223372036854775809}',
        b'{"a":1e400}',
        b'{"a":"\\ud800"}',
        b'{"a":"\xed\xa0\x80"}',
        b"[1]",
        b'{"time":"2026-02-30T00:00:00Z"}',  # not a date: Python's check decides
        b'{"time":"2026-01-01T00:00:60Z"}',
        b'{"time":"2026-01-01T00:00:00\\n"}',
        b'{"time":"\xd9\xa2026-01-01T00:00:00Z"}',
        b'{"time":"2200-01-01T00:00:00Z"}',  # past EventTime's 32 bits
        b'{"time":"1969-12-31T23:59:59Z"}',
        b'{"d":' * 70 + b"1" + b"}" * 70,
    ):
        assert accel.forward_entry(text) is None, text


def test_entry_formats_are_the_smallest_as_msgpack_writes_them() -> None:
    for value in (
        0, 127, 128, 255, 256, 65535, 65536, 2**32 - 1, 2**32, 2**64 - 1,
        -1, -32, -33, -128, -129, -32768, -32769, -(2**31), -(2**31) - 1, -(2**63),
        0.0, -0.0, 1.5, 1e300, "", "x" * 31, "x" * 32, "x" * 255, "x" * 256, "x" * 65536,
        [0] * 15, [0] * 16, [0] * 65536, {str(i): i for i in range(16)},
        {str(i): i for i in range(65536)},
    ):  # fmt: skip
        text = orjson.dumps({"v": value, "time": "2026-12-04T10:00:00.5Z"})
        fast = accel.forward_entry(text)
        if isinstance(value, dict) and len(value) > 512:
            assert fast is None  # too many keys to check for repeats: Python encodes it
            continue
        assert fast == forward.python_encode_entry(text), repr(value)[:40]
