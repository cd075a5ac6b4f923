"""The Forward-protocol client against the sandbox in_forward, over real mutual TLS sockets."""

from __future__ import annotations

import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import msgpack  # type: ignore[import-untyped]
import orjson
import pytest
from sandbox.fluentd_certs import FluentdCerts, fluent_conf, make_fluentd_certs

from teleport_event_handler.backoff import Backoff, Shutdown
from teleport_event_handler.config import ConfigError, load_config
from teleport_event_handler.forward import ForwardClient, encode_entry, forward_tag
from teleport_event_handler.sink import SinkError
from teleport_sandbox.fluentd import FluentdServer, build_config, read_records

FORWARD_SOURCE = "<source>\n  @type forward\n  port 0\n  bind 127.0.0.1\n{tls}</source>\n"


def fast_backoff() -> Backoff:
    return Backoff(base=0.01, cap=0.05)


def events(count: int, start: int = 0) -> list[bytes]:
    return [
        orjson.dumps({"event": "user.login", "i": i, "time": "2025-06-01T23:57:37.919123456Z"})
        for i in range(start, start + count)
    ]


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> FluentdCerts:
    return make_fluentd_certs(tmp_path_factory.mktemp("certs"))


@pytest.fixture
def out(tmp_path: Path) -> Path:
    return tmp_path / "out" / "events"


@pytest.fixture
def server(certs: FluentdCerts, out: Path, tmp_path: Path) -> Iterator[FluentdServer]:
    text = fluent_conf(certs, out) + FORWARD_SOURCE.format(tls=certs.transport_tls())
    with FluentdServer(build_config(text, str(tmp_path / "fluent.conf")), port=0) as running:
        yield running


def url(server: FluentdServer, tag: str = "test.log") -> str:
    assert server.forward is not None
    return server.forward.url(tag, host="localhost")


def make_client(certs: FluentdCerts, **kwargs: object) -> ForwardClient:
    options: dict[str, object] = {
        "ca": str(certs.ca),
        "cert": str(certs.client_cert),
        "key": str(certs.client_key),
        "max_connections": 4,
        "shutdown": Shutdown(),
        "backoff": fast_backoff,
        "timeout": 2.0,
    }
    options.update(kwargs)
    return ForwardClient(**options)  # type: ignore[arg-type]


def ids(server: FluentdServer, out: Path) -> list[int]:
    server.flush()
    if not out.parent.exists():
        return []
    return sorted(int(record["i"]) for record in read_records(out))


# --- encoding ----------------------------------------------------------------------


def test_entries_carry_the_event_time_with_nanoseconds() -> None:
    entry = msgpack.unpackb(encode_entry(events(1)[0]), raw=False)
    stamp, record = entry
    assert stamp.code == 0
    seconds, nanos = struct.unpack(">II", stamp.data)
    assert seconds == 1748822257 and nanos == 919123456
    assert record["i"] == 0 and record["time"].startswith("2025-06-01T23:57:37")


def test_an_event_without_a_readable_time_gets_now() -> None:
    before = int(time.time())
    stamp, _ = msgpack.unpackb(encode_entry(b'{"time": 5}'), raw=False)
    assert struct.unpack(">II", stamp.data)[0] >= before


@pytest.mark.parametrize(
    ("event", "why"),
    [(b"[1]", "not an object"), (b"{", "not JSON"), (b'{"n": 1e999999}', "not JSON")],
)
def test_what_cannot_be_a_forward_record_says_why(event: bytes, why: str) -> None:
    with pytest.raises(ValueError, match=why):
        encode_entry(event)


def test_a_lone_surrogate_is_not_json_for_forward() -> None:
    # in_http would take it; msgpack strings must be UTF-8, so it cannot be a record.
    with pytest.raises(ValueError, match="not JSON"):
        encode_entry(b'{"s": "\\ud800"}')


def test_tags_follow_in_https_rule() -> None:
    assert forward_tag("/test.log") == "test.log"
    assert forward_tag("/a/b") == "a.b"
    assert forward_tag("/session.1234.log") == "session.1234.log"


# --- delivery ------------------------------------------------------------------------


def test_batches_arrive_acked_under_their_tags(
    server: FluentdServer, certs: FluentdCerts, out: Path
) -> None:
    with make_client(certs) as client:
        client.deliver(url(server), events(300), as_array=True)
        client.deliver(url(server), events(5, 300), as_array=False)
        client.deliver(url(server, "session") + ".abc.log", events(2, 305), as_array=True)
        assert client.events == 307 and client.requests == 1 + 5 + 1
    assert ids(server, out) == list(range(307))
    assert server.stats.records_for("session.abc.log") == 2


def test_parallel_senders_share_the_connections(
    server: FluentdServer, certs: FluentdCerts, out: Path
) -> None:
    with make_client(certs, max_connections=2) as client:
        threads = [
            threading.Thread(
                target=client.deliver,
                args=(url(server), events(100, n * 100)),
                kwargs={"as_array": True},
            )
            for n in range(6)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
    assert ids(server, out) == list(range(600))
    assert server.stats.max_open_connections <= 2


def test_a_missing_ack_is_retried_on_a_new_connection(
    server: FluentdServer, certs: FluentdCerts, out: Path
) -> None:
    server.set_faults(forward_no_ack=True)
    with make_client(certs, timeout=0.3) as client:
        done = threading.Event()
        thread = threading.Thread(
            target=lambda: (client.deliver(url(server), events(10), as_array=True), done.set())
        )
        thread.start()
        deadline = time.monotonic() + 10
        while client.retries < 2:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        assert not done.is_set()
        server.set_faults(forward_no_ack=False)
        thread.join(10)
        assert done.is_set()
    got = ids(server, out)
    assert set(got) == set(range(10))  # nothing lost; duplicates of the unacked chunk
    assert server.stats.connections_accepted >= 3


def test_dropped_chunks_are_sent_again(
    server: FluentdServer, certs: FluentdCerts, out: Path
) -> None:
    server.set_faults(forward_drop_rate=0.5)
    with make_client(certs, timeout=0.2) as client:
        for n in range(10):
            client.deliver(url(server), events(10, n * 10), as_array=True)
    assert ids(server, out) == list(range(100))  # a dropped chunk is not stored: exactly once


def test_unencodable_events_go_to_dead_letters_the_rest_arrive(
    server: FluentdServer, certs: FluentdCerts, out: Path
) -> None:
    rejected: list[tuple[str, bytes, int, bytes]] = []
    with make_client(certs, on_rejected=lambda *a: rejected.append(a)) as client:
        batch = [*events(2), b"[1,2]", *events(2, 2)]
        client.deliver(url(server), batch, as_array=True)
        assert client.rejected == 1
    assert ids(server, out) == [0, 1, 2, 3]
    assert rejected[0][1] == b"[1,2]" and rejected[0][2] == 0
    assert b"not an object" in rejected[0][3]


def test_a_client_without_certificate_is_told_the_fix(
    server: FluentdServer, certs: FluentdCerts
) -> None:
    client = make_client(certs, cert=None, key=None)
    with pytest.raises(SinkError, match="requires a client certificate"):
        client.check(url(server))
    with pytest.raises(SinkError, match="--fluentd-cert"):
        client.deliver(url(server), events(1), as_array=True)


def test_check_reports_a_receiver_that_is_down(certs: FluentdCerts) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    message = make_client(certs).check(f"tls://localhost:{port}/test.log")
    assert message is not None and "not reachable yet" in message


def _helo_server() -> tuple[socket.socket, int]:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)

    def serve() -> None:
        conn, _ = listener.accept()
        with conn:
            conn.sendall(msgpack.packb(["HELO", {"nonce": b"n", "auth": "", "keepalive": True}]))
            conn.recv(65536)
            time.sleep(0.5)

    threading.Thread(target=serve, daemon=True).start()
    return listener, listener.getsockname()[1]


def test_a_shared_key_handshake_stops_with_the_fix(certs: FluentdCerts) -> None:
    listener, port = _helo_server()
    with listener, make_client(certs) as client, pytest.raises(SinkError, match="<security>"):
        client.deliver(f"tcp://127.0.0.1:{port}/test.log", events(1), as_array=True)


def test_urls_need_a_tag_and_a_forward_scheme(certs: FluentdCerts) -> None:
    client = make_client(certs)
    with pytest.raises(SinkError, match="no tag"):
        client.deliver("tls://localhost:24224/", events(1), as_array=True)
    with pytest.raises(SinkError, match="tls://"):
        client.deliver("http://localhost:24224/x", events(1), as_array=True)


def test_dry_run_sends_nothing(certs: FluentdCerts) -> None:
    client = make_client(certs, dry_run=True)
    client.deliver("tls://localhost:1/test.log", events(3), as_array=True)
    assert client.events == 3 and client.check("tls://localhost:1/test.log") is None


# --- configuration -----------------------------------------------------------------

BASE = ["--storage=/s", "--teleport-identity=/i"]


def config_of(*argv: str) -> Callable[[], object]:
    return lambda: load_config([*BASE, *argv], {})


def test_tls_urls_choose_forward() -> None:
    config = load_config(
        [*BASE, "--fluentd-url=tls://f:24224/test.log", "--fluentd-session-url=tls://f:24224/s"],
        {},
    )
    assert config.uses_forward and config.fluentd_protocol == "auto"
    https = ["--fluentd-url=https://f:8888/t", "--fluentd-session-url=https://f:8888/s"]
    assert not load_config([*BASE, *https], {}).uses_forward
    forward = load_config([*BASE, *https], {"FDWRD_FLUENTD_PROTOCOL": "forward"})
    assert forward.uses_forward


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (
            ["--fluentd-url=tls://f:1/t", "--fluentd-session-url=https://f:2/s"],
            "same kind of receiver",
        ),
        (
            [
                "--fluentd-url=tls://f:1/t",
                "--fluentd-session-url=tls://f:1/s",
                "--fluentd-protocol=http",
            ],
            "set the protocol to forward",
        ),
        (
            [
                "--fluentd-url=http://f:1/t",
                "--fluentd-session-url=http://f:1/s",
                "--fluentd-protocol=forward",
            ],
            "tcp:// to choose no encryption",
        ),
        (
            [
                "--fluentd-url=tls://f:1/t",
                "--fluentd-session-url=tls://f:1/s",
                "--fluentd-protocol=udp",
            ],
            "write auto, http or forward",
        ),
    ],
)
def test_protocol_mismatches_name_the_fix(argv: list[str], needle: str) -> None:
    with pytest.raises(ConfigError, match=needle.replace("/", "/")):
        load_config([*BASE, *argv], {})


def test_tcp_is_taken_with_a_warning() -> None:
    config = load_config(
        [*BASE, "--fluentd-url=tcp://f:24224/t", "--fluentd-session-url=tcp://f:24224/s"], {}
    )
    assert config.uses_forward
    assert any("unencrypted" in w for w in config.warnings)


def test_dead_letters_say_forward_for_status_0(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from teleport_event_handler.app import DeadLetters

    dead = DeadLetters(str(tmp_path))
    with caplog.at_level("ERROR"):
        dead("tls://f:24224/test.log", b"[1]", 0, b"cannot be sent: not an object")
    assert "cannot be sent over the Forward protocol" in caplog.text
    assert "HTTP" not in caplog.text
    line = orjson.loads((tmp_path / "dead-letter.jsonl").read_bytes())
    assert line["status"] == 0 and line["event"] == "[1]"
