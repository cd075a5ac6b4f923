"""The sandbox's in_forward over real sockets: PackedForward, acks, TLS, faults."""

from __future__ import annotations

import base64
import os
import socket
import ssl
import struct
import time
from collections.abc import Iterator
from pathlib import Path

import msgpack  # type: ignore[import-untyped]
import pytest
from fluentd_certs import FluentdCerts, fluent_conf, make_fluentd_certs

from teleport_sandbox.fluentd import ConfigError, FluentdServer, build_config, read_records


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> FluentdCerts:
    return make_fluentd_certs(tmp_path_factory.mktemp("certs"))


def forward_source(certs: FluentdCerts | None, extra: str = "") -> str:
    transport = certs.transport_tls() if certs else ""
    return f"<source>\n  @type forward\n  port 0\n  bind 127.0.0.1\n{extra}{transport}</source>\n"


@pytest.fixture
def out(tmp_path: Path) -> Path:
    return tmp_path / "out"


@pytest.fixture
def server(certs: FluentdCerts, out: Path, tmp_path: Path) -> Iterator[FluentdServer]:
    text = fluent_conf(certs, out) + forward_source(certs)
    with FluentdServer(build_config(text, str(tmp_path / "fluent.conf")), port=0) as running:
        yield running


def tls_socket(certs: FluentdCerts, port: int, *, client_cert: bool = True) -> ssl.SSLSocket:
    context = ssl.create_default_context(cafile=str(certs.ca))
    if client_cert:
        context.load_cert_chain(certs.client_cert, certs.client_key)
    raw = socket.create_connection(("127.0.0.1", port), timeout=5)
    raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return context.wrap_socket(raw, server_hostname="localhost")


def event_time(seconds: int, nanos: int = 0) -> msgpack.ExtType:
    return msgpack.ExtType(0, struct.pack(">II", seconds, nanos))


def packed_forward(tag: str, records: list[dict[str, object]], chunk: str | None) -> bytes:
    entries = b"".join(
        msgpack.packb([event_time(1_700_000_000, 5), r], use_bin_type=True) for r in records
    )
    option: dict[str, object] = {"size": len(records)}
    if chunk:
        option["chunk"] = chunk
    data: bytes = msgpack.packb([tag, entries, option], use_bin_type=True)
    return data


def read_answer(sock: socket.socket, timeout: float = 5.0) -> object:
    sock.settimeout(timeout)
    unpacker = msgpack.Unpacker(raw=False)
    while True:
        for answer in unpacker:
            return answer
        data = sock.recv(65536)
        if not data:
            raise ConnectionError("closed")
        unpacker.feed(data)


def wait_records(server: FluentdServer, out: Path, count: int) -> list[dict[str, object]]:
    deadline = time.monotonic() + 5
    while True:
        server.flush()
        records = read_records(out) if any(out.parent.glob(out.name + "*")) else []
        if len(records) >= count or time.monotonic() > deadline:
            return records
        time.sleep(0.05)


def test_the_config_reader_takes_a_forward_source(certs: FluentdCerts, out: Path) -> None:
    config = build_config(fluent_conf(certs, out) + forward_source(certs, "  port 24230\n"))
    assert config.forward is not None
    assert config.forward.tls is not None and config.forward.tls.client_cert_auth
    assert config.source.tls is not None  # in_http is still served


def test_security_is_refused_with_the_fix(certs: FluentdCerts, out: Path) -> None:
    extra = "  <security>\n    self_hostname f\n    shared_key k\n  </security>\n"
    with pytest.raises(ConfigError, match="client_cert_auth"):
        build_config(fluent_conf(certs, out) + forward_source(certs, extra))


def test_packed_forward_with_chunk_is_acked_and_stored(
    server: FluentdServer, certs: FluentdCerts, out: Path
) -> None:
    assert server.forward is not None
    chunk = base64.b64encode(os.urandom(16)).decode()
    records: list[dict[str, object]] = [{"uid": str(n), "event": "user.login"} for n in range(50)]
    with tls_socket(certs, server.forward.port) as sock:
        sock.sendall(packed_forward("test.log", records, chunk))
        assert read_answer(sock) == {"ack": chunk}
        # The same connection takes the next chunk.
        sock.sendall(packed_forward("test.log", [{"uid": "x"}], "c2"))
        assert read_answer(sock) == {"ack": "c2"}
    stored = wait_records(server, out, 51)
    assert sorted(str(r["uid"]) for r in stored) == sorted([*(str(n) for n in range(50)), "x"])


def test_message_and_forward_modes_are_stored(
    server: FluentdServer, certs: FluentdCerts, out: Path
) -> None:
    assert server.forward is not None
    with tls_socket(certs, server.forward.port) as sock:
        message = ["test.log", 1_700_000_000, {"uid": "m"}, {"chunk": "m1"}]
        sock.sendall(msgpack.packb(message, use_bin_type=True))
        assert read_answer(sock) == {"ack": "m1"}
        forward = ["test.log", [[event_time(1, 2), {"uid": "f"}]], {"chunk": "f1"}]
        sock.sendall(msgpack.packb(forward, use_bin_type=True))
        assert read_answer(sock) == {"ack": "f1"}
    assert {str(r["uid"]) for r in wait_records(server, out, 2)} == {"m", "f"}


def test_no_chunk_option_means_no_ack(
    server: FluentdServer, certs: FluentdCerts, out: Path
) -> None:
    assert server.forward is not None
    with tls_socket(certs, server.forward.port) as sock:
        sock.sendall(packed_forward("test.log", [{"uid": "n"}], None))
        with pytest.raises(TimeoutError):
            read_answer(sock, timeout=0.5)
    assert [r["uid"] for r in wait_records(server, out, 1)] == ["n"]


def test_a_client_without_certificate_is_refused_in_the_handshake(
    server: FluentdServer, certs: FluentdCerts
) -> None:
    assert server.forward is not None
    port = server.forward.port
    with pytest.raises(ssl.SSLError) as caught, tls_socket(certs, port, client_cert=False) as sock:
        sock.sendall(packed_forward("test.log", [{"uid": "x"}], "c"))
        read_answer(sock)
    # TLS 1.2, as Fluentd's default: the handshake fails with this alert.
    assert caught.value.reason == "SSLV3_ALERT_HANDSHAKE_FAILURE"


def test_fault_no_ack_stores_but_never_acks(
    server: FluentdServer, certs: FluentdCerts, out: Path
) -> None:
    assert server.forward is not None
    server.set_faults(forward_no_ack=True)
    with tls_socket(certs, server.forward.port) as sock:
        sock.sendall(packed_forward("test.log", [{"uid": "q"}], "c"))
        with pytest.raises(TimeoutError):
            read_answer(sock, timeout=0.5)
    assert [r["uid"] for r in wait_records(server, out, 1)] == ["q"]


def test_fault_drop_rate_drops_unstored_and_unacked(
    server: FluentdServer, certs: FluentdCerts, out: Path
) -> None:
    assert server.forward is not None
    server.set_faults(forward_drop_rate=1.0)
    with tls_socket(certs, server.forward.port) as sock:
        sock.sendall(packed_forward("test.log", [{"uid": "d"}], "c"))
        with pytest.raises(TimeoutError):
            read_answer(sock, timeout=0.5)
    server.flush()
    assert not any(out.parent.glob(out.name + "*")) or read_records(out) == []
    assert server.forward.dropped == 1


def test_fault_refuse_resets_connections(server: FluentdServer, certs: FluentdCerts) -> None:
    assert server.forward is not None
    server.set_faults(refuse=True)
    with pytest.raises((ssl.SSLError, OSError)), tls_socket(certs, server.forward.port) as sock:
        sock.sendall(packed_forward("test.log", [{"uid": "r"}], "c"))
        read_answer(sock)


def test_chunk_size_limit_drops_without_ack(certs: FluentdCerts, out: Path, tmp_path: Path) -> None:
    text = fluent_conf(certs, out) + forward_source(certs, "  chunk_size_limit 100\n")
    with FluentdServer(build_config(text, str(tmp_path / "f.conf")), port=0) as server:
        assert server.forward is not None
        with tls_socket(certs, server.forward.port) as sock:
            big = [{"uid": str(n), "pad": "x" * 50} for n in range(5)]
            sock.sendall(packed_forward("test.log", big, "big"))
            with pytest.raises(TimeoutError):
                read_answer(sock, timeout=0.5)
            sock.sendall(packed_forward("test.log", [{"uid": "s"}], "small"))
            assert read_answer(sock) == {"ack": "small"}
