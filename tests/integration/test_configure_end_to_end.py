"""``configure``'s files run the guide end to end, with nothing else.

A fresh sandbox Teleport takes the role YAML (``sandbox-tctl create -f``) and
signs the handler's identity into OUT; ``check-config`` passes the TOML; the
real Fluentd 1.16 loads ``fluent.conf`` (``--dry-run``, then for real, which
decrypts the server key with the written passphrase); the forwarder then
exports every event over mutual TLS between the written client and server
certificates, and Fluentd writes them where ``fluent.conf`` says.
"""

from __future__ import annotations

import collections
import json
import os
import socket
import ssl
import stat
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from teleport_sandbox.stack import Stack, find_fluentd

RUN_TIMEOUT = 300
HANDLER = os.path.join(os.path.dirname(sys.executable), "teleport-event-handler")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def teleport(tmp_path: Path) -> Iterator[Stack]:
    """A sandbox Teleport with no event-handler role, user or identity yet."""
    stack = Stack(root=str(tmp_path / "stack"), days=2, events_per_day=60)
    os.makedirs(stack.root)
    stack.run_teleport_cli("init", "--days", str(stack.days), "--events-per-day", "60")
    stack.start_teleport()
    try:
        yield stack
    finally:
        stack.stop_teleport()


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [HANDLER, *args], capture_output=True, text=True, timeout=RUN_TIMEOUT, check=False
    )


def _wait_for_fluentd(proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 60
    while "fluentd worker is now running" not in log.read_text(errors="replace"):
        assert proc.poll() is None, f"Fluentd exited {proc.returncode}: {log.read_text()[-2000:]}"
        assert time.monotonic() < deadline, f"Fluentd not ready: {log.read_text()[-2000:]}"
        time.sleep(0.05)


def _received(out_dir: Path) -> collections.Counter[str]:
    counts: collections.Counter[str] = collections.Counter()
    for path in sorted(out_dir.glob("audit*.log")):
        for line in path.read_text().splitlines():
            if line.strip():
                counts[str(json.loads(line)["uid"])] += 1
    return counts


def test_configure_output_runs_the_guide_end_to_end(teleport: Stack, tmp_path: Path) -> None:
    out = tmp_path / "event-handler"
    out.mkdir()
    port = _free_port()
    # Default key profile (RSA 4096) and DNS names: what a guide reader gets.
    done = _run("configure", str(out), teleport.teleport_addr, "--port", str(port))
    assert done.returncode == 0, done.stderr
    assert "[4] Generated plugin configuration file" in done.stdout
    for name in ("ca.key", "server.key", "client.key", "fluent.conf"):
        assert stat.S_IMODE((out / name).stat().st_mode) == 0o600, name

    # Step 3 of the guide: the role and user, then an identity signed for that user.
    created = teleport.tctl("create", "-f", str(out / "teleport-event-handler-role.yaml"))
    assert 'role "teleport-event-handler" has been created' in created
    assert 'user "teleport-event-handler" has been created' in created
    assert 'role "teleport-event-handler-impersonator" has been created' in created
    teleport.sign_identity(out=str(out / "identity"))

    toml = str(out / "teleport-event-handler.toml")
    checked = _run("check-config", toml)
    assert checked.returncode == 0, checked.stderr
    assert f"{toml}: OK" in checked.stdout

    fluentd = [*find_fluentd()]
    dry = subprocess.run(
        [*fluentd, "--dry-run", "-c", str(out / "fluent.conf")],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert dry.returncode == 0, dry.stdout[-2000:] + dry.stderr[-2000:]

    log = tmp_path / "fluentd.log"
    with open(log, "wb") as sink:
        proc = subprocess.Popen(
            [*fluentd, "-c", str(out / "fluent.conf"), "--no-supervisor"],
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
    try:
        _wait_for_fluentd(proc, log)
        # The TOML as written; only where to start from is given on the command line.
        start = teleport.corpus_start().strftime("%Y-%m-%dT%H:%M:%SZ")
        ran = _run("start", "--config", toml, "--start-time", start, "--exit-on-last-event")
        assert ran.returncode == 0, ran.stderr[-3000:]
        expected = teleport.teleport_uids()
        deadline = time.monotonic() + 60
        while set(_received(out / "fluentd")) != expected and time.monotonic() < deadline:
            time.sleep(0.2)
        counts = _received(out / "fluentd")
        assert set(counts) == expected, f"{len(expected - set(counts))} events missing"
        assert max(counts.values()) == 1
    finally:
        proc.terminate()
        proc.wait(60)


def test_a_client_without_the_written_certificate_is_refused(tmp_path: Path) -> None:
    """The written fluent.conf demands the client certificate the written CA signed."""
    out = tmp_path / "out"
    out.mkdir()
    port = _free_port()
    assert (
        _run("configure", str(out), "--port", str(port), "--key-type", "ecdsa-p256").returncode == 0
    )
    log = tmp_path / "fluentd.log"
    with open(log, "wb") as sink:
        proc = subprocess.Popen(
            [*find_fluentd(), "-c", str(out / "fluent.conf"), "--no-supervisor"],
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
    try:
        _wait_for_fluentd(proc, log)
        url = f"https://localhost:{port}/test.log"
        body = json.dumps({"uid": "x", "time": "2026-01-01T00:00:00Z"}).encode()

        def post(context: ssl.SSLContext) -> int:
            request = urllib.request.Request(
                url, body, {"Content-Type": "application/json"}, method="POST"
            )
            with urllib.request.urlopen(request, context=context, timeout=10) as response:
                return int(response.status)

        trusting = ssl.create_default_context(cafile=str(out / "ca.crt"))
        with pytest.raises((ssl.SSLError, urllib.error.URLError, ConnectionError)):
            post(trusting)
        trusting.load_cert_chain(str(out / "client.crt"), str(out / "client.key"))
        assert post(trusting) == 200
    finally:
        proc.terminate()
        proc.wait(60)


def test_the_lock_enabled_role_loads_with_its_lock_rule(tmp_path: Path) -> None:
    stack = Stack(root=str(tmp_path / "stack"), days=1, events_per_day=10)
    os.makedirs(stack.root)
    stack.run_teleport_cli("init", "--days", "1", "--events-per-day", "10")
    out = tmp_path / "out"
    out.mkdir()
    done = _run("configure", str(out), "--key-type", "ecdsa-p256", "--lock-enabled")
    assert done.returncode == 0, done.stderr
    stack.tctl("create", "-f", str(out / "teleport-event-handler-role.yaml"))
    role = stack.tctl("get", "role/teleport-event-handler", "--format", "json")
    (doc,) = json.loads(role)
    assert {"resources": ["lock"], "verbs": ["create", "update"]} in doc["spec"]["allow"]["rules"]
