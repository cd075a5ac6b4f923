"""Property tests (hypothesis): what must hold for every input, not only the examples.

The TOML/flag/environment resolution keeps kong's precedence for any values;
durations survive a round trip through their Go spelling; the identity-file
parser answers any bytes with an identity or a PkiError naming the file,
never another exception; the state store reads back what it committed, and a
batch it refused leaves nothing behind.
"""

from __future__ import annotations

import datetime
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from teleport_event_handler import pki
from teleport_event_handler.config import load_config
from teleport_event_handler.durations import format_duration, go_seconds
from teleport_event_handler.state import ChunkCursor, LegacyCursor, State

REQUIRED = [
    "--fluentd-url=https://fluentd.example.com:8888/test.log",
    "--fluentd-session-url=https://fluentd.example.com:8888/session",
    "--storage=/var/lib/teleport-event-handler",
    "--teleport-identity=/etc/identity",
]
batches = st.integers(min_value=1, max_value=10000)


@given(flag=st.none() | batches, toml=st.none() | batches, env=st.none() | batches)
@settings(max_examples=60, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_flag_beats_toml_beats_environment_beats_default(
    flag: int | None, toml: int | None, env: int | None
) -> None:
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "handler.toml"
        path.write_text("" if toml is None else f"batch = {toml}\n")
        argv = [*REQUIRED, "--config", str(path)]
        if flag is not None:
            argv.append(f"--batch={flag}")
        environ = {} if env is None else {"FDFWD_BATCH": str(env)}
        config = load_config(argv, environ)
    expected = next((v for v in (flag, toml, env) if v is not None), 20)
    assert config.batch == expected


@given(nanos=st.integers(min_value=0, max_value=10**9 * 3600 * 24 * 365))
def test_durations_round_trip_through_their_go_spelling(nanos: int) -> None:
    seconds = nanos / 1e9
    assert abs(go_seconds(format_duration(seconds)) - seconds) <= 1e-9 * max(1.0, seconds)


@given(data=st.binary(max_size=4096))
def test_the_identity_parser_refuses_garbage_with_a_named_error(data: bytes) -> None:
    try:
        pki.parse_identity_file(data, "/etc/identity")
    except pki.PkiError as exc:
        assert "/etc/identity" in str(exc)


cursor_text = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=40)


@given(
    cursors=st.lists(
        st.tuples(
            st.sampled_from(["2026-12-01", "2026-12-02"]), cursor_text, cursor_text, st.booleans()
        ),
        max_size=30,
    ),
    window=st.datetimes(
        min_value=datetime.datetime(2020, 1, 1), max_value=datetime.datetime(2030, 1, 1)
    ),
    page=cursor_text,
    last_id=cursor_text,
)
@settings(max_examples=40, deadline=None)
def test_the_state_reads_back_what_it_committed(
    cursors: list[tuple[str, str, str, bool]],
    window: datetime.datetime,
    page: str,
    last_id: str,
) -> None:
    with tempfile.TemporaryDirectory() as directory:
        state = State(directory)
        try:
            updates = [
                ChunkCursor(date, chunk, cursor, done) for date, chunk, cursor, done in cursors
            ]
            legacy = LegacyCursor(window.replace(tzinfo=datetime.UTC), page, last_id)
            state.apply([*updates, legacy])
            expected: dict[tuple[str, str], ChunkCursor] = {}
            for update in updates:
                expected[(update.date, update.chunk)] = update  # the last one wins
            for date in ("2026-12-01", "2026-12-02"):
                stored = state.chunks(date)
                assert stored == {c: u for (d, c), u in expected.items() if d == date}
            assert state.legacy_cursor() == legacy
        finally:
            state.close()
        # Reopened (as after a crash), the same.
        again = State(directory)
        try:
            assert again.legacy_cursor() == legacy
        finally:
            again.close()
