"""The Fluentd client against the sandbox Fluentd, over real mutual TLS sockets."""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import orjson
import pytest
from sandbox.fluentd_certs import FluentdCerts, fluent_conf, make_fluentd_certs

from teleport_event_handler import pki
from teleport_event_handler.backoff import Backoff, Shutdown
from teleport_event_handler.sink import FluentdClient, ShutdownRequested, SinkError
from teleport_sandbox.fluentd import (
    Faults,
    FluentdServer,
    build_config,
    read_records,
)


@contextlib.contextmanager
def caplog_of(name: str) -> Iterator[list[logging.LogRecord]]:
    """The records logger ``name`` emits inside the block."""
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    handler = Keep(logging.WARNING)
    target = logging.getLogger(name)
    target.addHandler(handler)
    try:
        yield records
    finally:
        target.removeHandler(handler)


def fast_backoff() -> Backoff:
    return Backoff(base=0.01, cap=0.05)


def events(count: int, start: int = 0) -> list[bytes]:
    return [
        orjson.dumps({"event": "user.login", "i": i, "time": "2025-06-01T23:57:37.919Z"})
        for i in range(start, start + count)
    ]


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> FluentdCerts:
    return make_fluentd_certs(tmp_path_factory.mktemp("certs"))


@pytest.fixture
def out(tmp_path: Path) -> Path:
    return tmp_path / "out" / "events"


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Callable[..., FluentdServer]]:
    started: list[FluentdServer] = []

    def start(conf: str, **kwargs: object) -> FluentdServer:
        config = build_config(conf, str(tmp_path / "fluent.conf"))
        server = FluentdServer(config, **kwargs)  # type: ignore[arg-type]
        started.append(server.start())
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture
def server(certs: FluentdCerts, out: Path, serve: Callable[..., FluentdServer]) -> FluentdServer:
    return serve(fluent_conf(certs, out, match="test.log session.*.log"))


def make_client(
    certs: FluentdCerts, shutdown: Shutdown | None = None, **kwargs: object
) -> FluentdClient:
    options: dict[str, object] = {
        "ca": str(certs.ca),
        "cert": str(certs.client_cert),
        "key": str(certs.client_key),
        "max_connections": 4,
        "shutdown": shutdown or Shutdown(),
        "backoff": fast_backoff,
    }
    options.update(kwargs)
    return FluentdClient(**options)  # type: ignore[arg-type]


def ids(out: Path) -> list[int]:
    return sorted(record["i"] for record in read_records(out))


def in_thread(target: Callable[[], None]) -> tuple[threading.Thread, list[BaseException]]:
    errors: list[BaseException] = []

    def run() -> None:
        try:
            target()
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, errors


def wait_for(condition: Callable[[], bool], seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.01)


def test_arrays_and_single_events_all_arrive_under_their_tags(
    certs: FluentdCerts, server: FluentdServer, out: Path
) -> None:
    client = make_client(certs)
    client.deliver(server.url("test.log", "localhost"), events(250), as_array=True)
    client.deliver(server.url("test.log", "localhost"), events(20, 250), as_array=False)
    client.deliver(server.url("session.s1.log", "localhost"), events(3, 270), as_array=True)
    client.deliver(server.url("test.log", "localhost"), [], as_array=True)
    client.close()
    server.stop()
    assert ids(out) == list(range(273))
    assert (client.requests, client.events, client.retries, client.rejected) == (22, 273, 0, 0)
    stats = server.stats.snapshot()
    assert stats["tags"]["test.log"] == {"requests": 21, "records": 270}
    assert stats["tags"]["session.s1.log"] == {"requests": 1, "records": 3}
    assert stats["connections"]["accepted"] == 1  # one keep-alive connection did it all


@pytest.mark.parametrize("reply", [201, 204])
def test_any_2xx_is_success(
    certs: FluentdCerts, server: FluentdServer, out: Path, reply: int
) -> None:
    server.set_faults(reply_status=reply)
    client = make_client(certs)
    client.deliver(server.url("test.log", "localhost"), events(5), as_array=True)
    client.deliver(server.url("test.log", "localhost"), events(5, 5), as_array=False)
    server.stop()
    assert client.retries == 0
    assert ids(out) == list(range(10))


@pytest.mark.parametrize("fault", [Faults(refuse=True), Faults(status=503), Faults(status=429)])
def test_outage_then_recovery_loses_nothing(
    certs: FluentdCerts, server: FluentdServer, out: Path, fault: Faults
) -> None:
    client = make_client(certs)
    url = server.url("test.log", "localhost")
    client.deliver(url, events(10), as_array=True)  # a pooled keep-alive connection exists
    server.set_faults(fault)
    thread, errors = in_thread(lambda: client.deliver(url, events(10, 10), as_array=True))
    wait_for(lambda: client.retries >= 3)
    assert thread.is_alive()
    server.set_faults(Faults())
    thread.join(timeout=10)
    assert not thread.is_alive()
    assert errors == []
    server.stop()
    assert ids(out) == list(range(20))


def test_a_bad_event_in_an_array_is_isolated_and_dead_lettered(
    certs: FluentdCerts, server: FluentdServer, out: Path
) -> None:
    rejected: list[tuple[str, bytes, int, bytes]] = []
    client = make_client(certs, on_rejected=lambda *args: rejected.append(args))
    batch = events(16)
    poison = b'{"event":"broken","time":"not a time"}'
    batch.insert(11, poison)
    url = server.url("test.log", "localhost")
    client.deliver(url, batch, as_array=True)
    server.stop()
    assert ids(out) == list(range(16))
    assert len(rejected) == 1
    assert rejected[0][:3] == (url, poison, 400)
    assert b"invalid time format" in rejected[0][3]
    assert client.rejected == 1
    assert client.retries == 0


def test_too_large_arrays_are_split_and_a_too_large_event_rejected(
    certs: FluentdCerts, out: Path, serve: Callable[..., FluentdServer]
) -> None:
    server = serve(fluent_conf(certs, out, extra_source="  body_size_limit 1k\n"))
    rejected: list[tuple[str, bytes, int, bytes]] = []
    client = make_client(certs, on_rejected=lambda *args: rejected.append(args))
    huge = orjson.dumps({"i": 999, "blob": "x" * 2000})
    client.deliver(server.url("test.log", "localhost"), [*events(40), huge], as_array=True)
    server.stop()
    assert ids(out) == list(range(40))
    assert [(event, status) for _, event, status, _ in rejected] == [(huge, 413)]


def test_without_a_dead_letter_handler_rejections_are_retried(
    certs: FluentdCerts, server: FluentdServer, out: Path
) -> None:
    shutdown = Shutdown()
    client = make_client(certs, shutdown)
    url = server.url("test.log", "localhost")
    thread, errors = in_thread(lambda: client.deliver(url, [b'{"time":"bad"}'], as_array=True))
    wait_for(lambda: client.retries >= 2)
    shutdown.request()
    thread.join(timeout=5)
    assert [type(e) for e in errors] == [ShutdownRequested]
    assert client.rejected == 0


def test_receiver_that_cannot_take_arrays_gets_single_events(
    certs: FluentdCerts, server: FluentdServer, out: Path
) -> None:
    server.set_faults(reject_array=True)
    client = make_client(certs)
    client.deliver(server.url("test.log", "localhost"), events(6), as_array=False)
    server.stop()
    assert ids(out) == list(range(6))
    assert server.stats.snapshot()["statuses"] == {"200": 6}


def test_wrong_ca_is_a_clear_error(certs: FluentdCerts, server: FluentdServer) -> None:
    client = make_client(certs, ca=str(certs.foreign_ca))
    with pytest.raises(SinkError) as caught:
        client.deliver(server.url("test.log", "localhost"), events(1), as_array=True)
    message = str(caught.value)
    assert "does not verify" in message
    assert f"--fluentd-ca {certs.foreign_ca}" in message


def test_client_without_certificate_is_refused(certs: FluentdCerts, server: FluentdServer) -> None:
    # Fluentd 1.16 speaks TLS 1.2 only (lib/fluent/tls.rb DEFAULT_VERSION): no
    # certificate is a handshake_failure alert, which must stop, not retry.
    client = make_client(certs, cert=None, key=None)
    with pytest.raises(
        SinkError, match=r"refused the TLS handshake .*HANDSHAKE_FAILURE.*--fluentd-cert.*ca_path"
    ):
        client.deliver(server.url("test.log", "localhost"), events(1), as_array=True)
    stranger = make_client(
        certs, cert=str(certs.foreign_client_cert), key=str(certs.foreign_client_key)
    )
    with pytest.raises(SinkError, match="signed by the CA in Fluentd's <transport tls> ca_path"):
        stranger.deliver(server.url("test.log", "localhost"), events(1), as_array=True)


def test_tls_1_3_receiver_without_client_certificate_is_refused(
    certs: FluentdCerts, out: Path, serve: Callable[..., FluentdServer]
) -> None:
    """A Fluentd set to ``version TLSv1_3`` says certificate_required instead."""
    tls13 = certs.transport_tls(extra="    version TLSv1_3\n")
    server = serve(fluent_conf(None, out, extra_source=tls13))
    client = make_client(certs, cert=None, key=None)
    with pytest.raises(SinkError, match=r"refused the client certificate .*CERTIFICATE_REQUIRED"):
        client.check(server.url("test.log", "localhost"))


def test_close_ends_tls_with_close_notify(certs: FluentdCerts, server: FluentdServer) -> None:
    """Fluentd logs "SSL_read: unexpected eof" for every connection closed
    without close_notify (lib/fluent/plugin_helper/server.rb
    TLSCallbackSocket#on_readable); so does the sandbox."""
    client = make_client(certs, max_connections=3)
    url = server.url("test.log", "localhost")
    threads = [
        threading.Thread(
            target=client.deliver, args=(url, events(5, 5 * i)), kwargs={"as_array": False}
        )
        for i in range(3)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert client.check(url) is None
    with caplog_of("fluentd") as records:
        client.close()
        time.sleep(0.5)
    assert server.stats.snapshot()["connections"]["accepted"] >= 2
    assert not [r for r in records if "unexpected eof" in r.getMessage()], records


def test_start_up_check_finds_setup_mistakes_before_any_event(
    certs: FluentdCerts, server: FluentdServer
) -> None:
    url = server.url("test.log", "localhost")
    assert make_client(certs).check(url) is None
    with pytest.raises(SinkError, match="does not verify"):
        make_client(certs, ca=str(certs.foreign_ca)).check(url)
    with pytest.raises(SinkError, match="refused the TLS handshake"):
        make_client(certs, cert=None, key=None).check(url)
    assert server.stats.snapshot()["records"] == 0
    server.stop()
    down = make_client(certs).check(url)
    assert down is not None and "not reachable yet" in down


def test_hostname_must_match_the_certificate(
    tmp_path: Path, certs: FluentdCerts, out: Path, serve: Callable[..., FluentdServer]
) -> None:
    other = make_fluentd_certs(tmp_path / "other", dns_names=("fluentd.example",), ip_addresses=())
    server = serve(fluent_conf(other, out))
    client = FluentdClient(
        ca=str(other.ca),
        cert=str(other.client_cert),
        key=str(other.client_key),
        max_connections=1,
        shutdown=Shutdown(),
    )
    with pytest.raises(SinkError, match=r"Hostname mismatch.*'localhost'"):
        client.deliver(server.url("test.log", "localhost"), events(1), as_array=True)
    assert server.stats.snapshot()["requests"] == 0


def test_configuration_errors_name_the_file_and_the_fix(
    tmp_path: Path, certs: FluentdCerts
) -> None:
    def error(**kwargs: object) -> str:
        with pytest.raises(SinkError) as caught:
            make_client(certs, **kwargs)
        return str(caught.value)

    assert "--fluentd-cert is set but --fluentd-key is not" in error(key=None)
    assert "--fluentd-key is set but --fluentd-cert is not" in error(cert=None)
    missing = tmp_path / "missing.crt"
    assert f"--fluentd-ca {missing} ([forward.fluentd] ca): no such file" in error(ca=str(missing))
    assert "not a PEM CA certificate" in error(ca=str(certs.client_key))
    assert "does not belong to the certificate" in error(key=str(certs.foreign_client_key))
    encrypted = tmp_path / "encrypted.key"
    encrypted.write_bytes(
        pki.private_key_pem(pki.load_private_key(certs.client_key.read_bytes()), "pw")
    )
    assert "client key encryption is not supported" in error(key=str(encrypted))
    assert "give 1 or more" in error(max_connections=0)
    client = make_client(certs)
    with pytest.raises(SinkError, match="give an https:// URL"):
        client.deliver("ftp://localhost/test.log", events(1), as_array=True)


def test_max_connections_caps_requests_in_flight(
    certs: FluentdCerts, server: FluentdServer, out: Path
) -> None:
    server.set_faults(latency_ms=50)
    client = make_client(certs, max_connections=3)
    url = server.url("test.log", "localhost")
    threads = [
        in_thread(lambda n=n: client.deliver(url, events(5, n * 5), as_array=(n % 2 == 0)))[0]
        for n in range(8)
    ]
    for thread in threads:
        thread.join(timeout=30)
    server.stop()
    stats = server.stats.snapshot()
    assert stats["max_in_flight"] == 3
    assert stats["connections"]["max_open"] == 3
    assert stats["connections"]["accepted"] == 3
    assert ids(out) == list(range(40))


def test_shutdown_interrupts_a_retry_loop_promptly(
    certs: FluentdCerts, server: FluentdServer
) -> None:
    shutdown = Shutdown()
    client = make_client(certs, shutdown, backoff=lambda: Backoff(base=5.0, cap=30.0))
    server.set_faults(refuse=True)
    url = server.url("test.log", "localhost")
    thread, errors = in_thread(lambda: client.deliver(url, events(3), as_array=True))
    wait_for(lambda: client.retries >= 1)
    asked = time.monotonic()
    shutdown.request()
    thread.join(timeout=5)
    assert time.monotonic() - asked < 1.0
    assert [type(e) for e in errors] == [ShutdownRequested]


def test_close_aborts_a_request_in_flight(certs: FluentdCerts, server: FluentdServer) -> None:
    shutdown = Shutdown()
    client = make_client(certs, shutdown)
    server.set_faults(latency_ms=20_000)
    url = server.url("test.log", "localhost")
    thread, errors = in_thread(lambda: client.deliver(url, events(1), as_array=True))
    wait_for(lambda: server.stats.snapshot()["in_flight"] == 1)
    asked = time.monotonic()
    shutdown.request()
    client.close()
    thread.join(timeout=5)
    assert time.monotonic() - asked < 1.0
    assert [type(e) for e in errors] == [ShutdownRequested]


def test_a_keep_alive_connection_closed_by_the_server_is_replaced(
    certs: FluentdCerts, out: Path, serve: Callable[..., FluentdServer]
) -> None:
    server = serve(fluent_conf(certs, out, extra_source="  keepalive_timeout 0.2s\n"))
    client = make_client(certs)
    url = server.url("test.log", "localhost")
    client.deliver(url, events(2), as_array=True)
    wait_for(lambda: server.stats.snapshot()["connections"]["open"] == 0)
    client.deliver(url, events(2, 2), as_array=True)
    server.stop()
    assert (client.reconnects, client.retries) == (1, 0)
    assert ids(out) == [0, 1, 2, 3]


def test_dry_run_sends_nothing(certs: FluentdCerts, server: FluentdServer) -> None:
    client = make_client(certs, dry_run=True)
    client.deliver(server.url("test.log", "localhost"), events(7), as_array=False)
    assert (client.requests, client.events) == (7, 7)
    assert server.stats.snapshot()["connections"]["accepted"] == 0


def test_plain_http_url_to_a_receiver_without_tls(
    out: Path, serve: Callable[..., FluentdServer], certs: FluentdCerts
) -> None:
    server = serve(fluent_conf(None, out))
    client = make_client(certs)
    client.deliver(server.url("test.log"), events(3), as_array=True)
    server.stop()
    assert ids(out) == [0, 1, 2]
