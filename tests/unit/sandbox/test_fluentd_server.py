"""The sandbox Fluentd over real sockets: in_http semantics, mutual TLS, outputs, faults."""

from __future__ import annotations

import gzip
import http.client
import io
import json
import os
import socket
import ssl
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from fluentd_certs import FluentdCerts, fluent_conf, make_fluentd_certs

from teleport_event_handler import pki
from teleport_sandbox.fluentd import (
    ConfigError,
    Faults,
    FluentdServer,
    build_config,
    read_events,
    read_records,
)

TELEPORT_EVENT = {
    "event": "user.login",
    "code": "T1000I",
    "time": "2025-06-01T23:57:37.919Z",
    "uid": "0b2c",
    "user": "alice",
}


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> FluentdCerts:
    return make_fluentd_certs(tmp_path_factory.mktemp("certs"))


def client_context(
    certs: FluentdCerts,
    *,
    cert: Path | None = None,
    key: Path | None = None,
    ca: Path | None = None,
) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(ca or certs.ca))
    if cert is not None and key is not None:
        context.load_cert_chain(cert, key)
    return context


def good_context(certs: FluentdCerts) -> ssl.SSLContext:
    return client_context(certs, cert=certs.client_cert, key=certs.client_key)


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Callable[..., FluentdServer]]:
    started: list[FluentdServer] = []

    def start(conf: str, **kwargs: object) -> FluentdServer:
        server = FluentdServer(build_config(conf, str(tmp_path / "fluent.conf")), **kwargs)  # type: ignore[arg-type]
        started.append(server.start())
        return server

    yield start
    for server in started:
        server.stop()


def post(
    server: FluentdServer,
    path: str,
    body: bytes,
    context: ssl.SSLContext | None,
    headers: dict[str, str] | None = None,
) -> tuple[int, bytes]:
    if context is None:
        conn: http.client.HTTPConnection = http.client.HTTPConnection(
            "127.0.0.1", server.port, timeout=10
        )
    else:
        conn = http.client.HTTPSConnection("localhost", server.port, context=context, timeout=10)
    try:
        conn.request("POST", path, body, headers if headers is not None else {})
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def test_in_http_bodies_tags_and_time_like_fluentd(
    certs: FluentdCerts, tmp_path: Path, serve: Callable[..., FluentdServer]
) -> None:
    out = tmp_path / "out" / "audit"
    server = serve(fluent_conf(certs, out, match="test.log session.*.log a.b"))
    ctx = good_context(certs)
    event = json.dumps(TELEPORT_EVENT).encode()
    json_header = {"Content-Type": "application/json"}
    assert post(server, "/test.log", event, ctx, json_header) == (200, b"")
    assert post(server, "/test.log", b"[" + b",".join([event] * 3) + b"]", ctx) == (200, b"")
    assert post(server, "/test.log", b"[]", ctx) == (200, b"")
    assert post(server, "/session.abc.log", b'{"sid":"abc"}', ctx)[0] == 200
    assert post(server, "/a/b", b'{"path":"a/b"}', ctx)[0] == 200  # '/' becomes '.'
    assert post(server, "/nobody.listens", b'{"lost":true}', ctx)[0] == 200
    status, body = post(server, "/test.log", event + b"\n" + event + b"\n", ctx)
    assert status == 400
    assert body.startswith(b"400 Bad Request\n")
    assert post(server, "/test.log", b"{not json", ctx)[0] == 400
    assert post(server, "/test.log", b'{"time":"yesterday"}', ctx)[0] == 400
    server.stop()

    records = read_records(out)
    stored = {k: v for k, v in TELEPORT_EVENT.items() if k != "time"}
    assert records == [stored] * 4 + [{"sid": "abc"}, {"path": "a/b"}]
    stats = server.stats.snapshot()
    assert stats["tags"]["test.log"] == {"requests": 6, "records": 4}
    assert stats["tags"]["nobody.listens"] == {"requests": 1, "records": 1}
    assert stats["unmatched_records"] == 1
    assert stats["records"] == 6
    assert stats["statuses"] == {"200": 6, "400": 3}
    # Teleport's event time, to the second, names the day file (local time).
    day = time.strftime("%Y%m%d", time.localtime(1748822257))
    assert (tmp_path / "out" / f"audit.{day}.log").is_file()


def test_out_file_default_format_and_chunk_files_without_append(
    tmp_path: Path, serve: Callable[..., FluentdServer]
) -> None:
    conf = (
        "<source>\n  @type http\n  port 0\n  <parse>\n    @type json\n    time_type string\n"
        "    time_format %Y-%m-%dT%H:%M:%S%z\n  </parse>\n</source>\n"
        f"<match **>\n  @type file\n  path {tmp_path}/plain\n</match>\n"
    )
    server = serve(conf, flush_interval=3600)
    assert post(server, "/x.y", b'{"time":"2025-06-01T10:00:00+00:00","k":"v"}', None)[0] == 200
    server.flush()
    assert post(server, "/x.y", b'{"time":"2025-06-01T11:00:00+00:00","k":"w"}', None)[0] == 200
    server.stop()
    moment = time.localtime(1748772000)
    day = time.strftime("%Y%m%d", moment)
    offset = time.strftime("%z", moment)
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", moment) + offset[:3] + ":" + offset[3:]
    first = (tmp_path / f"plain.{day}_0.log").read_text()
    assert first == f'{stamp}\tx.y\t{{"k":"v"}}\n'
    assert (tmp_path / f"plain.{day}_1.log").is_file()
    assert read_events(tmp_path / "plain") == [
        (stamp, "x.y", {"k": "v"}),
        (
            time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(1748775600)) + stamp[-6:],
            "x.y",
            {"k": "w"},
        ),
    ]


def test_stdout_output_and_defaults_without_parse(serve: Callable[..., FluentdServer]) -> None:
    stream = io.BytesIO()
    conf = "<source>\n  @type http\n  port 0\n</source>\n<match t>\n  @type stdout\n</match>\n"
    server = serve(conf, stdout=stream)
    json_header = {"Content-Type": "application/json"}
    assert post(server, "/t", b'{"a":1,"time":1700000000}', None, json_header)[0] == 200
    status, body = post(server, "/t", b'{"a":1}', None, {})
    assert status == 400
    assert b"parameter is required" in body
    server.stop()
    stamp = time.strftime("%Y-%m-%d %H:%M:%S.000000000 %z", time.localtime(1700000000))
    assert stream.getvalue() == f'{stamp} t: {{"a":1}}\n'.encode()


def test_mutual_tls_refuses_strangers_at_the_handshake(
    certs: FluentdCerts, tmp_path: Path, serve: Callable[..., FluentdServer]
) -> None:
    server = serve(fluent_conf(certs, tmp_path / "out"))
    # TLS 1.2 only, as Fluentd 1.16: no certificate is handshake_failure.
    with pytest.raises(ssl.SSLError, match="HANDSHAKE_FAILURE"):
        post(server, "/test.log", b"{}", client_context(certs))
    foreign = client_context(certs, cert=certs.foreign_client_cert, key=certs.foreign_client_key)
    with pytest.raises(ssl.SSLError, match="UNKNOWN_CA"):
        post(server, "/test.log", b"{}", foreign)
    with pytest.raises(ssl.SSLCertVerificationError):
        post(server, "/test.log", b"{}", client_context(certs, ca=certs.foreign_ca))
    with pytest.raises((http.client.RemoteDisconnected, ConnectionResetError)):
        post(server, "/test.log", b"{}", None)  # plain http
    assert post(server, "/test.log", b"{}", good_context(certs)) == (200, b"")
    stats = server.stats.snapshot()
    assert stats["connections"]["handshake_failures"] == 4
    assert stats["requests"] == 1


def test_without_client_cert_auth_any_client_may_post(
    certs: FluentdCerts, tmp_path: Path, serve: Callable[..., FluentdServer]
) -> None:
    conf = fluent_conf(certs, tmp_path / "out").replace(
        "client_cert_auth true", "client_cert_auth false"
    )
    server = serve(conf)
    assert post(server, "/test.log", b"{}", client_context(certs))[0] == 200


@pytest.mark.parametrize("form", ["traditional-rsa", "pkcs8", "unencrypted"])
def test_server_keys_load_in_every_form_fluentd_reads(
    certs: FluentdCerts, tmp_path: Path, serve: Callable[..., FluentdServer], form: str
) -> None:
    from cryptography.hazmat.primitives import serialization

    ca_key = pki.load_private_key(certs.ca_key.read_bytes())
    ca = pki.load_certificate(certs.ca.read_bytes())
    key = pki.generate_private_key("rsa2048" if form == "traditional-rsa" else "ecdsa-p256")
    leaf = pki.issue_leaf(ca, ca_key, key.public_key(), "localhost", "server", ("localhost",))
    passphrase = "s3cret phrase"
    if form == "traditional-rsa":
        pem = pki.private_key_pem(key, passphrase)
        assert b"Proc-Type: 4,ENCRYPTED" in pem
        assert b"DEK-Info: AES-256-CBC" in pem
    elif form == "pkcs8":
        pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(passphrase.encode()),
        )
        assert pem.startswith(b"-----BEGIN ENCRYPTED PRIVATE KEY-----")
    else:
        pem = pki.private_key_pem(key)
    (tmp_path / "k.pem").write_bytes(pem)
    (tmp_path / "c.pem").write_bytes(pki.cert_pem(leaf))
    tls = certs.transport_tls().replace(str(certs.server_key), str(tmp_path / "k.pem"))
    tls = tls.replace(str(certs.server_cert), str(tmp_path / "c.pem"))
    tls = tls.replace(certs.passphrase, passphrase)
    conf = fluent_conf(None, tmp_path / "out", extra_source=tls)
    server = serve(conf)
    assert post(server, "/test.log", b"{}", good_context(certs)) == (200, b"")


def test_wrong_passphrase_fails_at_start_with_a_clear_error(
    certs: FluentdCerts, tmp_path: Path
) -> None:
    conf = fluent_conf(certs, tmp_path / "out").replace(certs.passphrase, "not-it")
    with pytest.raises(ConfigError) as caught:
        FluentdServer(build_config(conf, "fluent.conf"))
    message = str(caught.value)
    assert message.startswith("fluent.conf:5: Could not parse PKey:")
    assert "could not decrypt" in message
    assert str(certs.server_key) in message
    assert "private_key_passphrase" in message


def test_keep_alive_body_limit_and_connection_close(
    certs: FluentdCerts, tmp_path: Path, serve: Callable[..., FluentdServer]
) -> None:
    conf = fluent_conf(certs, tmp_path / "out", extra_source="  body_size_limit 1k\n")
    server = serve(conf)
    conn = http.client.HTTPSConnection("localhost", server.port, context=good_context(certs))
    for _ in range(5):
        conn.request("POST", "/test.log", b'{"n":1}')
        assert conn.getresponse().read() == b""
    conn.request("POST", "/test.log", b'{"big":"' + b"x" * 2000 + b'"}')
    response = conn.getresponse()
    assert response.status == 413
    assert response.will_close
    response.read()
    conn.request("POST", "/test.log", b'{"n":2}', {"Connection": "close"})
    response = conn.getresponse()
    assert (response.status, response.will_close) == (200, True)
    conn.close()
    server.stop()
    assert server.stats.snapshot()["connections"]["accepted"] == 2
    assert len(read_records(tmp_path / "out")) == 6


def test_chunked_body_and_expect_continue(
    certs: FluentdCerts, tmp_path: Path, serve: Callable[..., FluentdServer]
) -> None:
    server = serve(fluent_conf(certs, tmp_path / "out"))
    conn = http.client.HTTPSConnection("localhost", server.port, context=good_context(certs))
    conn.request(
        "POST",
        "/test.log",
        iter([b'[{"a":', b'1},{"a":2}]']),
        {"Expect": "100-continue"},
        encode_chunked=True,
    )
    assert conn.getresponse().status == 200
    conn.close()
    server.stop()
    assert read_records(tmp_path / "out") == [{"a": 1}, {"a": 2}]


def test_faults_status_latency_reply_and_reject_array(
    certs: FluentdCerts, tmp_path: Path, serve: Callable[..., FluentdServer]
) -> None:
    server = serve(fluent_conf(certs, tmp_path / "out"), faults=Faults(status=503))
    ctx = good_context(certs)
    status, body = post(server, "/test.log", b'{"n":0}', ctx)
    assert (status, body) == (503, b"503 Service Unavailable\nfault injected\n")

    server.set_faults(Faults(status=503, status_rate=0.5))
    statuses = [post(server, "/test.log", b'{"n":1}', ctx)[0] for _ in range(60)]
    assert set(statuses) == {200, 503}
    assert 10 <= statuses.count(503) <= 50

    server.set_faults(Faults(latency_ms=300, reply_status=204))
    started = time.monotonic()
    assert post(server, "/test.log", b'{"n":2}', ctx) == (204, b"")
    assert time.monotonic() - started >= 0.3

    server.set_faults(Faults(reject_array=True, reply_status=201))
    assert post(server, "/test.log", b'[{"n":3}]', ctx)[0] == 400
    assert post(server, "/test.log", b'{"n":4}', ctx)[0] == 201
    server.stop()
    numbers = [r["n"] for r in read_records(tmp_path / "out")]
    assert numbers == [1] * statuses.count(200) + [2, 4]


def test_refuse_drops_open_and_new_connections_until_lifted(
    certs: FluentdCerts, tmp_path: Path, serve: Callable[..., FluentdServer]
) -> None:
    server = serve(fluent_conf(certs, tmp_path / "out"))
    ctx = good_context(certs)
    kept = http.client.HTTPSConnection("localhost", server.port, context=ctx, timeout=5)
    kept.request("POST", "/test.log", b'{"n":1}')
    assert kept.getresponse().read() == b""
    server.set_faults(refuse=True)
    with pytest.raises((ConnectionError, http.client.HTTPException, ssl.SSLError)):
        kept.request("POST", "/test.log", b'{"n":2}')
        kept.getresponse()
    with pytest.raises((ConnectionError, ssl.SSLError)):
        post(server, "/test.log", b'{"n":3}', ctx)
    server.set_faults(refuse=False)
    assert post(server, "/test.log", b'{"n":4}', ctx)[0] == 200
    server.stop()
    assert [r["n"] for r in read_records(tmp_path / "out")] == [1, 4]
    assert server.stats.snapshot()["connections"]["refused"] >= 1


def _wait_for(condition: Callable[[], bool], seconds: float = 5.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.02)


def test_control_file_changes_faults_while_running(
    certs: FluentdCerts, tmp_path: Path, serve: Callable[..., FluentdServer]
) -> None:
    control = tmp_path / "faults.json"
    server = serve(
        fluent_conf(certs, tmp_path / "out"), control_file=str(control), faults=Faults(latency_ms=1)
    )
    control.write_text(json.dumps({"status": 429}))
    _wait_for(lambda: server.faults.status == 429)
    assert server.faults.latency_ms == 0  # the file replaces the faults
    assert post(server, "/test.log", b"{}", good_context(certs))[0] == 429
    control.write_text("{broken")
    time.sleep(0.3)
    assert server.faults.status == 429  # a half-written file is ignored
    control.unlink()
    _wait_for(lambda: server.faults == Faults(latency_ms=1))
    with pytest.raises(ValueError, match="unknown fault 'stauts'"):
        Faults.from_mapping({"stauts": 503}, "faults.json")
    with pytest.raises(ValueError, match="reply_status 500: give a 2xx"):
        Faults.from_pairs(["reply_status=500"])


def test_stats_file_and_concurrency_counts(
    certs: FluentdCerts, tmp_path: Path, serve: Callable[..., FluentdServer]
) -> None:
    stats_file = tmp_path / "stats.json"
    server = serve(
        fluent_conf(certs, tmp_path / "out"),
        stats_file=str(stats_file),
        faults=Faults(latency_ms=300),
    )
    ctx = good_context(certs)
    threads = [
        threading.Thread(target=post, args=(server, "/test.log", b'{"c":1}', ctx)) for _ in range(3)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)
    _wait_for(stats_file.exists, 3)
    server.stop()
    stats = json.loads(stats_file.read_text())
    assert stats["max_in_flight"] == 3
    assert stats["connections"]["max_open"] == 3
    assert stats["connections"]["open"] == 0
    assert stats["tags"] == {"test.log": {"requests": 3, "records": 3}}


def test_port_in_use_is_a_clear_error(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        config = build_config("<source>\n  @type http\n</source>\n", "f.conf")
        with pytest.raises(ConfigError, match=rf"f.conf:1: cannot listen on 127.0.0.1:{port}"):
            FluentdServer(config, port=port)
    assert not os.listdir(tmp_path)


def _tls_version(server: FluentdServer, context: ssl.SSLContext) -> str | None:
    with (
        socket.create_connection(("127.0.0.1", server.port), timeout=5) as raw,
        context.wrap_socket(raw, server_hostname="localhost") as tls,
    ):
        return tls.version()


def test_tls_versions_follow_fluentd(
    certs: FluentdCerts, tmp_path: Path, serve: Callable[..., FluentdServer]
) -> None:
    """Fluentd 1.16 lib/fluent/tls.rb #set_version_to_context: ``version``
    (default TLSv1_2) is both ends unless min_version and max_version are
    both given; one of them alone is a configuration error."""
    out = tmp_path / "out"
    server = serve(fluent_conf(certs, out))
    assert _tls_version(server, good_context(certs)) == "TLSv1.2"
    only13 = good_context(certs)
    only13.minimum_version = ssl.TLSVersion.TLSv1_3
    with pytest.raises(ssl.SSLError, match="PROTOCOL_VERSION"):
        _tls_version(server, only13)
    tls13 = certs.transport_tls(extra="    version TLSv1_3\n")
    server13 = serve(fluent_conf(None, out, extra_source=tls13))
    assert _tls_version(server13, good_context(certs)) == "TLSv1.3"
    with pytest.raises(ssl.SSLError, match="CERTIFICATE_REQUIRED"):
        post(server13, "/test.log", b"{}", client_context(certs))
    both = certs.transport_tls(extra="    min_version TLS1_2\n    max_version TLS1_3\n")
    assert _tls_version(serve(fluent_conf(None, out, extra_source=both)), good_context(certs)) == (
        "TLSv1.3"
    )
    alone = certs.transport_tls(extra="    min_version TLS1_2\n")
    with pytest.raises(ConfigError, match="must set max_version together"):
        build_config(fluent_conf(None, out, extra_source=alone))


def _request(
    server: FluentdServer,
    method: str,
    path: str,
    body: bytes | None,
    context: ssl.SSLContext,
    headers: dict[str, str] | None = None,
) -> tuple[int, bytes, str | None]:
    conn = http.client.HTTPSConnection("localhost", server.port, context=context, timeout=10)
    try:
        conn.request(method, path, body, headers or {})
        response = conn.getresponse()
        return response.status, response.read(), response.getheader("Connection")
    finally:
        conn.close()


def test_request_handling_like_in_http(
    certs: FluentdCerts, tmp_path: Path, serve: Callable[..., FluentdServer]
) -> None:
    """Fluentd 1.16 lib/fluent/plugin/in_http.rb: Handler#on_message_complete
    answers GET 200 (#handle_get_request, a health check) and OPTIONS 403
    without CORS (#handle_options_request), inflates gzip and deflate bodies,
    and #on_request takes ``?time=`` (String#to_f) as the event time."""
    out = tmp_path / "out" / "audit"
    server = serve(fluent_conf(certs, out))
    ctx = good_context(certs)
    assert _request(server, "GET", "/any", None, ctx) == (200, b"", None)
    assert _request(server, "OPTIONS", "/test.log", None, ctx)[0] == 403
    json_header = {"Content-Type": "application/json"}
    gz = {**json_header, "Content-Encoding": "gzip"}
    assert _request(server, "POST", "/test.log", gzip.compress(b'{"uid":"g"}'), ctx, gz)[0] == 200
    deflate = {**json_header, "Content-Encoding": "deflate"}
    assert (
        _request(server, "POST", "/test.log", zlib.compress(b'{"uid":"d"}'), ctx, deflate)[0] == 200
    )
    assert _request(server, "POST", "/test.log", b"not gzip", ctx, gz)[:2] == (400, b"")
    body = b'[{"uid":"t1","time":"2025-06-01T10:00:00"},{"uid":"t2"}]'
    assert _request(server, "POST", "/test.log?time=1000000000.5", body, ctx, json_header)[0] == 200
    assert _request(server, "PUT", "/test.log", b'{"uid":"p"}', ctx, json_header)[0] == 200
    server.flush()
    names = sorted(os.listdir(out.parent))
    day = time.strftime("%Y%m%d", time.localtime(1000000000))
    assert f"audit.{day}.log" in names, names
    # ?time= leaves the elements' own time keys alone.
    assert {"uid": "t1", "time": "2025-06-01T10:00:00"} in read_records(out)
    assert {r["uid"] for r in read_records(out)} == {"g", "d", "t1", "t2", "p"}


def test_records_that_are_not_objects_are_parsed_but_refused_by_file_outputs(
    certs: FluentdCerts, tmp_path: Path, serve: Callable[..., FluentdServer]
) -> None:
    """in_http.rb #on_request emits every element; a buffered output checks
    each record (lib/fluent/plugin/output.rb #metadata) before writing any."""
    out = tmp_path / "out" / "audit"
    server = serve(fluent_conf(certs, out))
    ctx = good_context(certs)
    json_header = {"Content-Type": "application/json"}
    assert _request(server, "POST", "/other.tag", b'[{"a":1},1]', ctx, json_header)[0] == 200
    status, answer, _ = _request(server, "POST", "/test.log", b'[{"a":1},1]', ctx, json_header)
    assert status == 500 and b"record must be a Hash: Integer" in answer
    server.flush()
    assert read_records(out) == []


def test_a_close_without_close_notify_is_logged_as_fluentd_does(
    certs: FluentdCerts,
    tmp_path: Path,
    serve: Callable[..., FluentdServer],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """lib/fluent/plugin_helper/server.rb TLSCallbackSocket#on_readable."""
    server = serve(fluent_conf(certs, tmp_path / "out"))
    conn = http.client.HTTPSConnection("localhost", server.port, context=good_context(certs))
    conn.request("POST", "/test.log", b"{}", {"Content-Type": "application/json"})
    conn.getresponse().read()
    assert conn.sock is not None
    os.close(conn.sock.detach())
    deadline = time.monotonic() + 5
    while "SSL_read: unexpected eof" not in caplog.text:
        assert time.monotonic() < deadline, caplog.text
        time.sleep(0.05)
    tidy = http.client.HTTPSConnection("localhost", server.port, context=good_context(certs))
    tidy.request("POST", "/test.log", b"{}", {"Content-Type": "application/json"})
    tidy.getresponse().read()
    assert tidy.sock is not None
    caplog.clear()
    tidy.sock.unwrap()
    tidy.close()
    time.sleep(0.3)
    assert "unexpected eof" not in caplog.text
