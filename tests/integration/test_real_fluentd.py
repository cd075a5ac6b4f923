"""What a real Fluentd 1.16 does, and the sandbox Fluentd with it (issue 6, facts 10-13).

Each test runs against the real Fluentd (``../shared/vendor/fluentd/fluentd``
or ``fluentd`` on PATH, through ``Stack(fluentd="real")``) and, where the
sandbox copies the behaviour, against ``sandbox-fluentd`` with the same
``fluent.conf``. The Fluentd source each fact comes from is named per test
(paths inside the Fluentd 1.16.11 source tree).
"""

from __future__ import annotations

import gzip
import http.client
import json
import os
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from teleport_event_handler.backoff import Shutdown
from teleport_event_handler.fluentconf import render_fluent_conf
from teleport_event_handler.sink import FluentdClient, SinkError
from teleport_sandbox.fluentd.conf import build_config
from teleport_sandbox.stack import (
    FluentdMaterial,
    Stack,
    find_fluentd,
    fluent_conf_values,
    make_fluentd_material,
)

KINDS = ["real", "sandbox"]
# Quotes, a backslash and Ruby's "#{...}": all must reach OpenSSL unchanged.
ODD_PASSPHRASE = "it's #{raise 'no'} \"x\" \\ y"


def _receiver(root: Path, kind: str, passphrase: str | None = None) -> Stack:
    """A Fluentd of ``kind`` (no Teleport) with the project's template, started."""
    stack = Stack(root=str(root), fluentd=kind)
    os.makedirs(stack.out_dir, exist_ok=True)
    stack.material = make_fluentd_material(
        os.path.join(stack.fluentd_dir, "certs"), passphrase=passphrase
    )
    stack.start_fluentd()
    return stack


@pytest.fixture(params=KINDS)
def receiver(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Stack]:
    stack = _receiver(tmp_path / "stack", request.param)
    try:
        yield stack
    finally:
        stack.stop_fluentd()
        print(stack.fluentd_log()[-3000:])


@pytest.fixture
def real(tmp_path: Path) -> Iterator[Stack]:
    stack = _receiver(tmp_path / "stack", "real")
    try:
        yield stack
    finally:
        stack.stop_fluentd()
        print(stack.fluentd_log()[-3000:])


def _client(
    stack: Stack, *, cert: bool = True, ca: str | None = None, **kw: object
) -> FluentdClient:
    material = stack.material
    assert material is not None
    return FluentdClient(
        ca=ca or material.ca,
        cert=material.client_cert if cert else None,
        key=material.client_key if cert else None,
        max_connections=int(str(kw.get("max_connections", 2))),
        timeout=5.0,
        shutdown=Shutdown(),
    )


def _url(stack: Stack, path: str = "test.log") -> str:
    return f"https://localhost:{stack.fluentd_port}/{path}"


def _https(stack: Stack) -> http.client.HTTPSConnection:
    material = stack.material
    assert material is not None
    context = ssl.create_default_context(cafile=material.ca)
    context.load_cert_chain(material.client_cert, material.client_key)
    return http.client.HTTPSConnection("localhost", stack.fluentd_port, context=context, timeout=10)


def _request(
    stack: Stack, method: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None
) -> tuple[int, bytes]:
    conn = _https(stack)
    try:
        conn.request(method, path, body or None, headers or {})
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


# --- fact 10: TLS 1.2 only; handshake_failure without a client certificate ----------


def test_client_without_certificate_stops_with_the_fix(receiver: Stack) -> None:
    """lib/fluent/plugin_helper/cert_option.rb #cert_option_create_context sets
    VERIFY_PEER|VERIFY_FAIL_IF_NO_PEER_CERT and lib/fluent/tls.rb
    #set_version_to_context pins TLS 1.2 (DEFAULT_VERSION): OpenSSL answers a
    client without a certificate with handshake_failure, which the forwarder
    must not retry for ever."""
    client = _client(receiver, cert=False)
    with pytest.raises(SinkError) as caught:
        client.check(_url(receiver))
    message = str(caught.value)
    assert "SSLV3_ALERT_HANDSHAKE_FAILURE" in message, message
    assert "--fluentd-cert" in message and "ca_path" in message, message


def test_client_certificate_from_another_ca_stops_with_the_fix(
    receiver: Stack, tmp_path: Path
) -> None:
    """The same context's ca_path verifies the client chain: a foreign CA gets
    unknown_ca (cert_option.rb #cert_option_create_context, ctx.ca_file)."""
    assert receiver.material is not None
    foreign = make_fluentd_material(str(tmp_path / "foreign"))
    client = FluentdClient(
        ca=receiver.material.ca,
        cert=foreign.client_cert,
        key=foreign.client_key,
        max_connections=1,
        timeout=5.0,
        shutdown=Shutdown(),
    )
    with pytest.raises(SinkError) as caught:
        client.check(_url(receiver))
    message = str(caught.value)
    assert "UNKNOWN_CA" in message and "ca_path" in message, message


def test_speaks_tls_1_2_only(receiver: Stack) -> None:
    """lib/fluent/tls.rb DEFAULT_VERSION TLSv1_2 and #set_version_to_context:
    min and max are both TLS 1.2 unless min_version/max_version are set."""
    assert receiver.material is not None
    context = ssl.create_default_context(cafile=receiver.material.ca)
    context.load_cert_chain(receiver.material.client_cert, receiver.material.client_key)
    with (
        socket.create_connection(("127.0.0.1", receiver.fluentd_port), timeout=5) as raw,
        context.wrap_socket(raw, server_hostname="localhost") as tls,
    ):
        assert tls.version() == "TLSv1.2"
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    with (
        socket.create_connection(("127.0.0.1", receiver.fluentd_port), timeout=5) as raw,
        pytest.raises(ssl.SSLError, match=r"PROTOCOL_VERSION|UNSUPPORTED_PROTOCOL"),
    ):
        context.wrap_socket(raw, server_hostname="localhost")


# --- fact 12: close TLS with close_notify ---------------------------------------------


def test_clean_close_leaves_no_unexpected_eof_at_fluentd(receiver: Stack) -> None:
    """lib/fluent/plugin_helper/server.rb TLSCallbackSocket#on_readable logs
    "close socket due to unexpected ssl error: SSL_read: unexpected eof" for a
    client that closes without close_notify."""
    client = _client(receiver, max_connections=3)
    events = [json.dumps({"uid": f"u{i}", "n": i}).encode() for i in range(30)]

    def send(part: list[bytes]) -> None:
        client.deliver(_url(receiver), part, as_array=False)

    threads = [threading.Thread(target=send, args=(events[i::3],)) for i in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert client.check(_url(receiver)) is None
    client.close()
    time.sleep(1.0)
    assert client.requests == 30
    assert "unexpected eof" not in receiver.fluentd_log().lower()
    # And a client that does drop its connections is seen (the check can fail).
    conn = _https(receiver)
    conn.request("POST", "/test.log", b'{"uid":"ragged"}', {"Content-Type": "application/json"})
    conn.getresponse().read()
    assert conn.sock is not None
    os.close(conn.sock.detach())  # the descriptor goes without close_notify
    deadline = time.monotonic() + 5
    while "unexpected eof" not in receiver.fluentd_log().lower():
        assert time.monotonic() < deadline, "Fluentd did not log the ragged close"
        time.sleep(0.1)


# --- fact 13: request handling ---------------------------------------------------------


def test_get_is_a_health_check(receiver: Stack) -> None:
    """lib/fluent/plugin/in_http.rb Handler#on_message_complete ->
    #handle_get_request: 200 with an empty body, then close."""
    status, body = _request(receiver, "GET", "/any/path")
    assert (status, body) == (200, b"")
    status, _ = _request(receiver, "OPTIONS", "/test.log")
    assert status == 403  # #handle_options_request without cors_allow_origins


def test_time_query_parameter_sets_the_event_time(receiver: Stack) -> None:
    """in_http.rb #on_request: ``params['time'].to_f`` is the event time of the
    record (and of each array element); out_file names files by it."""
    moment = 1_000_000_000  # 2001-09-09 UTC
    status, _ = _request(
        receiver,
        "POST",
        f"/test.log?time={moment}",
        b'[{"uid":"q1"},{"uid":"q2","time":"2026-01-01T00:00:00Z"}]',
        {"Content-Type": "application/json"},
    )
    assert status == 200
    receiver_files = _wait_for_files(receiver, "audit.20010909")
    assert receiver_files, os.listdir(receiver.out_dir)
    assert {r["uid"] for r in receiver.received("audit")} == {"q1", "q2"}


def test_gzip_bodies_are_accepted(receiver: Stack) -> None:
    """in_http.rb Handler#on_message_complete inflates Content-Encoding gzip
    and deflate; a body that does not inflate is 400."""
    body = gzip.compress(b'[{"uid":"g1"},{"uid":"g2"}]')
    headers = {"Content-Type": "application/json", "Content-Encoding": "gzip"}
    assert _request(receiver, "POST", "/test.log", body, headers)[0] == 200
    assert _request(receiver, "POST", "/test.log", b"not gzip", headers)[0] == 400
    assert {r["uid"] for r in receiver.received("audit")} == {"g1", "g2"}


def test_array_elements_that_are_not_objects_are_accepted(receiver: Stack) -> None:
    """in_http.rb #on_request emits every element of a batch; with <parse>
    lib/fluent/plugin/parser.rb #parse_time lets non-Hash values through. A
    buffered output then refuses the whole batch (lib/fluent/plugin/output.rb
    #metadata: "record must be a Hash"), which in_http answers 500."""
    json_body = {"Content-Type": "application/json"}
    body = b'[{"uid":"o1"},1]'
    assert _request(receiver, "POST", "/nobody.listens", body, json_body)[0] == 200
    status, answer = _request(receiver, "POST", "/test.log", body, json_body)
    assert status == 500 and b"record must be a Hash: Integer" in answer, answer
    assert _request(receiver, "POST", "/test.log", b'[{"uid":"o2"}]', json_body)[0] == 200
    assert receiver.received("audit") == [{"uid": "o2"}]


def _wait_for_files(stack: Stack, prefix: str, timeout: float = 10.0) -> list[str]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = [n for n in os.listdir(stack.out_dir) if n.startswith(prefix)]
        if found:
            return found
        time.sleep(0.1)
    return []


# --- fact 11: one fluent.conf template, right on a real Fluentd -------------------------


def _variants(material: FluentdMaterial, tmp_path: Path) -> dict[str, dict[str, object]]:
    base = fluent_conf_values(24224, material, str(tmp_path / "out"))
    odd = make_fluentd_material(str(tmp_path / "odd"), passphrase=ODD_PASSPHRASE)
    minimal = {k: base[k] for k in base if k not in ("bind", "audit_tag", "session_tag_prefix")}
    return {
        "stack": base,
        "minimal (defaults)": minimal,
        "everything": {
            **base,
            "bind": "0.0.0.0",
            "audit_tag": "teleport.audit",
            "session_tag_prefix": "teleport.session",
            "flush_interval": "5s",
            "buffer_type": "memory",
        },
        "odd paths and passphrase": {
            **fluent_conf_values(24224, odd, str(tmp_path / "a dir # with 'quotes'")),
            "buffer_dir": str(tmp_path / "buf\\fer"),
        },
    }


def test_every_rendered_variant_passes_fluentd_dry_run(tmp_path: Path) -> None:
    """Fluentd's own check (``fluentd --dry-run``, lib/fluent/supervisor.rb
    #dry_run) accepts every variant, and so does the sandbox's reader."""
    material = make_fluentd_material(str(tmp_path / "certs"))
    for name, values in _variants(material, tmp_path).items():
        text = render_fluent_conf(values)
        conf = tmp_path / f"{name.replace(' ', '_')}.conf"
        conf.write_text(text)
        result = subprocess.run(
            [*find_fluentd(), "--dry-run", "-c", str(conf)],
            capture_output=True,
            text=True,
            timeout=120,
        )
        output = result.stdout + result.stderr
        assert result.returncode == 0, f"{name}:\n{text}\n{output}"
        assert "[warn]" not in output and "[error]" not in output, f"{name}:\n{output}"
        assert "finished dry run mode" in output, output
        config = build_config(text, str(conf))
        assert [m.patterns for m in config.matches] == [
            (str(values.get("audit_tag", "test.log")),),
            (f"{values.get('session_tag_prefix', 'session')}.*.log",),
        ]
        assert config.source.tls is not None
        assert config.source.tls.private_key_passphrase == values["private_key_passphrase"]
        assert config.source.tls.client_cert_auth


def test_a_passphrase_with_quotes_and_ruby_code_loads_the_key(tmp_path: Path) -> None:
    """Single-quoted values are literal (lib/fluent/config/literal_parser.rb
    #scan_single_quoted_string); a double-quoted one would run #{...}."""
    for kind in KINDS:
        stack = _receiver(tmp_path / kind, kind, passphrase=ODD_PASSPHRASE)
        try:
            status, _ = _request(
                stack, "POST", "/test.log", b'{"uid":"p"}', {"Content-Type": "application/json"}
            )
            assert status == 200
            assert stack.received("audit") == [{"uid": "p"}]
        finally:
            stack.stop_fluentd()


def test_events_reach_the_files_within_seconds_whole_and_for_every_tag(real: Stack) -> None:
    """Without a <buffer>, out_file buffers by day (lib/fluent/plugin/out_file.rb
    config_section :buffer, timekey 1d) and writes today's events after
    midnight; the template's buffer flushes every flush_interval
    (lib/fluent/plugin/output.rb #enqueue_thread_run) and keeps ``time``
    (keep_time_key, lib/fluent/plugin/parser.rb #parse_time)."""
    event = {"uid": "w1", "event": "user.login", "time": "2026-12-02T10:11:12.123456789Z"}
    session = {"uid": "s1", "event": "session.print", "time": "2026-12-02T10:11:13Z"}
    client = _client(real)
    started = time.monotonic()
    client.deliver(_url(real), [json.dumps(event).encode()], as_array=True)
    client.deliver(_url(real, "session/abc-123.log"), [json.dumps(session).encode()], as_array=True)
    client.close()
    while real.output_bytes("") == 0 or real.buffered_chunks():
        assert time.monotonic() - started < 5, "events were not written within 5 s"
        time.sleep(0.1)
    assert real.received("audit") == [event]
    assert real.received("session") == [session]
    assert "no patterns matched" not in real.fluentd_log()


def test_events_are_flushed_at_shutdown(tmp_path: Path) -> None:
    """flush_at_shutdown true (lib/fluent/plugin/output.rb #before_shutdown
    -> #force_flush): a stop writes what was accepted, even before flush_interval."""
    stack = Stack(root=str(tmp_path / "stack"), fluentd="real")
    os.makedirs(stack.out_dir)
    stack.material = make_fluentd_material(os.path.join(stack.fluentd_dir, "certs"))
    values = fluent_conf_values(0, stack.material, stack.out_dir, flush_interval="1h")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        values["port"] = stack.fluentd_port = probe.getsockname()[1]
    (Path(stack.fluentd_dir) / "fluent.conf").write_text(render_fluent_conf(values))
    proc = subprocess.Popen(
        [*find_fluentd(), "-c", str(Path(stack.fluentd_dir) / "fluent.conf"), "--no-supervisor"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if _request(stack, "GET", "/")[0] == 200:
                    break
            except OSError:
                assert time.monotonic() < deadline and proc.poll() is None
                time.sleep(0.1)
        status, _ = _request(
            stack, "POST", "/test.log", b'{"uid":"late"}', {"Content-Type": "application/json"}
        )
        assert status == 200
        time.sleep(1.5)
        assert stack.output_bytes("") == 0, "flushed before the interval: the test proves nothing"
    finally:
        proc.terminate()
        proc.wait(30)
    assert stack.received("audit") == [{"uid": "late"}]


def test_a_file_output_without_buffer_holds_todays_events(tmp_path: Path) -> None:
    """Why the template has a <buffer>: out_file's default buffer
    (lib/fluent/plugin/out_file.rb config_section :buffer: chunk key time,
    timekey 1d; lib/fluent/plugin/output.rb flush_mode lazy, timekey_wait
    600 s) writes nothing of today's events for hours. The sandbox says so."""
    stack = _receiver(tmp_path / "stack", "real")
    try:
        conf = Path(stack.fluentd_dir) / "fluent.conf"
        text = conf.read_text()
        start, end = text.index("<buffer time>"), text.index("</buffer>") + len("</buffer>")
        bufferless = text[:start] + text[end:]
        assert "sandbox: <match test.log> @type file has no <buffer>" in " ".join(
            build_config(bufferless).warnings
        )
        stack.stop_fluentd()
        with open(conf, "w") as handle:
            handle.write(bufferless)
        stack.fluent_conf = lambda: str(conf)  # type: ignore[method-assign]
        stack.start_fluentd()
        status, _ = _request(
            stack, "POST", "/test.log", b'{"uid":"held"}', {"Content-Type": "application/json"}
        )
        assert status == 200
        time.sleep(4)
        assert stack.output_bytes("") == 0, os.listdir(stack.out_dir)
    finally:
        stack.stop_fluentd()
