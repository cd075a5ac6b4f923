"""teleport.event_handler.fluentd_mtls, run by ansible-playbook on real files.

Four runs (check, apply, check, apply), renewal inside ``renew_before`` of
only the stale parts, a CA rotation that keeps the old CA trusted, and the
result used for real: the sandbox Fluentd serves with the server certificate
and its encrypted key, and the forwarder's Fluentd client is accepted with
the client certificate.
"""

from __future__ import annotations

import json
import socket
import ssl
import subprocess
import time
from pathlib import Path

import pytest
from test_modules_support import BIN, changes, four_times, mode_of, run_playbook

from teleport_event_handler import pki
from teleport_event_handler.backoff import Shutdown
from teleport_event_handler.fluentconf import render_fluent_conf
from teleport_event_handler.sink import FluentdClient

pytestmark = pytest.mark.timeout(300)


def _bundle(directory: Path) -> dict[str, Path]:
    names = ["ca.crt", "ca.key", "server.crt", "server.key", "client.crt", "client.key"]
    names += ["server.pass", "ca-bundle.crt"]
    return {name: directory / name for name in names}


def _fingerprint(path: Path) -> str:
    return pki.cert_info(pki.load_certificate(path.read_bytes())).sha256_fingerprint


def _bundle_fingerprints(path: Path) -> list[str]:
    return [pki.cert_info(c).sha256_fingerprint for c in pki.load_certificates(path.read_bytes())]


def test_four_runs_with_the_go_plugin_defaults(tmp_path: Path) -> None:
    certs = tmp_path / "certs"
    certs.mkdir()
    # The Go plugin's defaults: RSA 4096, 87600h, SAN localhost.
    results, output = run_playbook(tmp_path, four_times("fluentd_mtls", {"path": str(certs)}))
    assert changes(results) == [True, True, False, False]
    assert results[0]["renewed"] == ["ca", "server", "client", "passphrase", "trust_bundle"]
    assert results[2]["reasons"] == [] and results[3]["renewed"] == []

    files = _bundle(certs)
    for name in ("ca.key", "server.key", "client.key", "server.pass"):
        assert mode_of(files[name]) == 0o600, name
    for name in ("ca.crt", "server.crt", "client.crt", "ca-bundle.crt"):
        assert mode_of(files[name]) == 0o644, name
    server_key_pem = files["server.key"].read_bytes()
    assert (
        b"Proc-Type: 4,ENCRYPTED" in server_key_pem and b"DEK-Info: AES-256-CBC" in server_key_pem
    )
    passphrase = files["server.pass"].read_text().strip()
    server_key = pki.load_private_key(server_key_pem, passphrase)
    assert pki.key_type_of(server_key) == "rsa4096"
    server = pki.load_certificate(files["server.crt"].read_bytes())
    assert pki.key_matches_cert(server_key, server)
    assert pki.cert_info(server).dns_names == ("localhost",)
    assert b"BEGIN RSA PRIVATE KEY" in files["client.key"].read_bytes()  # PKCS#1, unencrypted

    # The returned expiry is the certificate's; diffs and output hold no secret.
    assert results[1]["not_after"]["server"] == pki.iso_utc(pki.cert_info(server).not_after)
    assert "PRIVATE KEY" not in output and passphrase not in output
    assert "PRIVATE KEY" not in json.dumps(results) and passphrase not in json.dumps(results)


def test_only_stale_parts_are_renewed_and_a_ca_rotation_keeps_the_old_ca(tmp_path: Path) -> None:
    certs = tmp_path / "certs"
    certs.mkdir()
    files = _bundle(certs)
    base = {"path": str(certs), "key_type": "ecdsa-p256", "ip_addresses": ["127.0.0.1"]}
    short = dict(base, ttl="2h", ca_ttl="4h", renew_before="1h")
    results, _ = run_playbook(tmp_path, four_times("fluentd_mtls", short))
    assert changes(results) == [True, True, False, False]
    ca_before = _fingerprint(files["ca.crt"])
    client_before = _fingerprint(files["client.crt"])
    key_before = files["server.key"].read_bytes()

    # Leaves (2 h left) are inside a 3 h renew_before; the CA (4 h left) is not.
    leaves = dict(base, ttl="10h", ca_ttl="4h", renew_before="3h")
    results, _ = run_playbook(tmp_path, four_times("fluentd_mtls", leaves))
    assert changes(results) == [True, True, False, False]
    assert results[0]["renewed"] == results[1]["renewed"] == ["server", "client"]
    assert all("within renew_before" in reason for reason in results[1]["reasons"])
    assert _fingerprint(files["ca.crt"]) == ca_before
    assert _fingerprint(files["client.crt"]) != client_before
    assert files["server.key"].read_bytes() != key_before

    # Now the CA is inside renew_before: it rotates and the old CA stays trusted.
    old_client_cert = files["client.crt"].read_bytes()
    old_client_key = files["client.key"].read_bytes()
    rotate = dict(base, ttl="10h", ca_ttl="100h", renew_before="5h")
    results, _ = run_playbook(tmp_path, four_times("fluentd_mtls", rotate))
    assert changes(results) == [True, True, False, False]
    assert results[1]["renewed"] == ["ca", "server", "client", "trust_bundle"]
    ca_after = _fingerprint(files["ca.crt"])
    assert ca_after != ca_before
    assert _bundle_fingerprints(files["ca-bundle.crt"]) == [ca_after, ca_before]
    new_ca = pki.load_certificate(files["ca.crt"].read_bytes())
    assert pki.is_signed_by(pki.load_certificate(files["server.crt"].read_bytes()), new_ca)

    # During the rollout a peer that trusts the bundle still accepts the old client.
    (tmp_path / "old-client.crt").write_bytes(old_client_cert)
    (tmp_path / "old-client.key").write_bytes(old_client_key)
    with _fluentd(tmp_path, certs, ca_path=files["ca-bundle.crt"]) as port:
        _handshake(port, files["ca.crt"], tmp_path / "old-client.crt", tmp_path / "old-client.key")
        _handshake(port, files["ca.crt"], files["client.crt"], files["client.key"])


def test_leaf_rotation_then_retiring_the_old_ca(tmp_path: Path) -> None:
    certs = tmp_path / "certs"
    certs.mkdir()
    files = _bundle(certs)
    base = {"path": str(certs), "key_type": "ecdsa-p256", "ip_addresses": ["127.0.0.1"]}
    run_playbook(tmp_path, [{"teleport.event_handler.fluentd_mtls": base}])
    ca_before = _fingerprint(files["ca.crt"])
    server_before = _fingerprint(files["server.crt"])

    # Leaf-only: new server and client from the same CA; the bundle stays.
    results, _ = run_playbook(tmp_path, four_times("fluentd_mtls", dict(base, force_leaves=True)))
    assert changes(results) == [True, True, True, True]  # forcing renews every time
    assert results[1]["renewed"] == ["server", "client"]
    assert _fingerprint(files["ca.crt"]) == ca_before
    assert _fingerprint(files["server.crt"]) != server_before
    assert _bundle_fingerprints(files["ca-bundle.crt"]) == [ca_before]

    # A CA rotation keeps the old CA trusted; retiring it in the same run is refused.
    results, _ = run_playbook(
        tmp_path,
        [
            {
                "teleport.event_handler.fluentd_mtls": dict(base, force=True, retire_old_cas=True),
                "ignore_errors": True,
            },
            {"teleport.event_handler.fluentd_mtls": dict(base, force=True)},
        ],
    )
    assert results[0]["failed"] and "retire old CAs in a later run" in results[0]["msg"]
    ca_after = _fingerprint(files["ca.crt"])
    assert _bundle_fingerprints(files["ca-bundle.crt"]) == [ca_after, ca_before]

    # Once every host has the new leaves: the old CA leaves the bundle, idempotently.
    retire = dict(base, retire_old_cas=True)
    results, _ = run_playbook(tmp_path, four_times("fluentd_mtls", retire))
    assert changes(results) == [True, True, False, False]
    assert results[1]["renewed"] == ["trust_bundle"]
    assert _bundle_fingerprints(files["ca-bundle.crt"]) == [ca_after]
    # And later runs without retire_old_cas do not bring it back.
    results, _ = run_playbook(tmp_path, [{"teleport.event_handler.fluentd_mtls": base}])
    assert changes(results) == [False]
    assert _bundle_fingerprints(files["ca-bundle.crt"]) == [ca_after]


def test_the_forwarder_is_accepted_by_fluentd_with_the_bundle(tmp_path: Path) -> None:
    certs = tmp_path / "certs"
    certs.mkdir()
    files = _bundle(certs)
    args = {"path": str(certs), "key_type": "ecdsa-p256", "passphrase": "correct horse battery"}
    results, output = run_playbook(tmp_path, four_times("fluentd_mtls", args))
    assert changes(results) == [True, True, False, False]
    assert "correct horse battery" not in output
    assert files["server.pass"].read_text().strip() == "correct horse battery"

    with _fluentd(tmp_path, certs, ca_path=files["ca-bundle.crt"]) as port:
        shutdown = Shutdown()
        client = FluentdClient(
            ca=str(files["ca-bundle.crt"]),
            cert=str(files["client.crt"]),
            key=str(files["client.key"]),
            max_connections=1,
            timeout=10,
            shutdown=shutdown,
        )
        event = {"event": "user.login", "uid": "u-1", "time": "2026-11-27T10:00:00.123Z"}
        try:
            client.deliver(
                f"https://localhost:{port}/test.log", [json.dumps(event).encode()], as_array=False
            )
        finally:
            shutdown.request()
            client.close()
        assert client.events == 1
        records = _records(tmp_path / "out", timeout=10)
        assert [r["uid"] for r in records] == ["u-1"]

        # A client certificate from another CA is refused at the handshake.
        stranger = tmp_path / "stranger"
        stranger.mkdir()
        run_playbook(
            tmp_path,
            [
                {
                    "teleport.event_handler.fluentd_mtls": {
                        "path": str(stranger),
                        "key_type": "ecdsa-p256",
                    }
                }
            ],
        )
        with pytest.raises((ssl.SSLError, ConnectionError, OSError)):
            _handshake(port, files["ca.crt"], stranger / "client.crt", stranger / "client.key")


def test_check_mode_writes_nothing(tmp_path: Path) -> None:
    certs = tmp_path / "certs"
    certs.mkdir()
    args = {"path": str(certs), "key_type": "ecdsa-p256"}
    results, _ = run_playbook(
        tmp_path, [{"teleport.event_handler.fluentd_mtls": args, "check_mode": True}]
    )
    assert changes(results) == [True]
    assert list(certs.iterdir()) == []


def test_check_mode_fails_where_the_real_run_fails(tmp_path: Path) -> None:
    # Check mode must report what a real run would do: a failure, not "changed".
    missing = {"path": str(tmp_path / "missing"), "key_type": "ecdsa-p256"}
    certs = tmp_path / "certs"
    certs.mkdir()
    bad_ip = {"path": str(certs), "key_type": "ecdsa-p256", "ip_addresses": ["10.0.0.300"]}
    tasks = [
        {"teleport.event_handler.fluentd_mtls": args, "check_mode": check, "ignore_errors": True}
        for args in (missing, bad_ip)
        for check in (True, False)
    ]
    results, _ = run_playbook(tmp_path, tasks)
    assert [bool(r.get("failed")) for r in results] == [True] * 4
    assert results[0]["msg"] == results[1]["msg"]
    assert "does not exist; create it first" in results[0]["msg"]
    assert results[2]["msg"] == results[3]["msg"]
    assert "ip_addresses" in results[2]["msg"] and "10.0.0.300" in results[2]["msg"]
    assert list(certs.iterdir()) == []


def test_a_key_mode_readable_by_others_is_refused(tmp_path: Path) -> None:
    certs = tmp_path / "certs"
    certs.mkdir()
    modes: list[object] = ["0644", "u=rw,o=r", 0o604, "0640", "u=rw,g=r"]
    tasks = [
        {
            "teleport.event_handler.fluentd_mtls": {
                "path": str(certs),
                "key_type": "ecdsa-p256",
                "key_mode": mode,
            },
            "ignore_errors": True,
        }
        for mode in modes
    ]
    results, output = run_playbook(tmp_path, tasks)
    assert [bool(r.get("failed")) for r in results] == [True, True, True, False, False]
    for result in results[:3]:
        assert "every user of the host" in result["msg"] and "'0600'" in result["msg"]
    # Group access is the operator's choice (Fluentd reads its key through its group).
    assert mode_of(certs / "server.key") == 0o640
    assert "BEGIN" not in output


class _fluentd:
    """The sandbox Fluentd on 127.0.0.1 serving with the bundle's server certificate."""

    def __init__(self, tmp_path: Path, certs: Path, ca_path: Path) -> None:
        self.tmp_path = tmp_path
        out = tmp_path / "out"
        out.mkdir(exist_ok=True)
        self.conf = tmp_path / "fluent.conf"
        self.conf.write_text(
            render_fluent_conf(
                {
                    "bind": "127.0.0.1",
                    "port": 0,
                    "ca_path": str(ca_path),
                    "cert_path": str(certs / "server.crt"),
                    "private_key_path": str(certs / "server.key"),
                    "private_key_passphrase": (certs / "server.pass").read_text().strip(),
                    "output_dir": str(out),
                }
            )
        )
        self.port_file = tmp_path / "fluentd.port"
        self.proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> int:
        log = open(self.tmp_path / "fluentd.log", "wb")
        self.proc = subprocess.Popen(
            [
                str(BIN / "sandbox-fluentd"),
                "--config",
                str(self.conf),
                "--port",
                "0",
                "--port-file",
                str(self.port_file),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.port_file.exists() and self.port_file.read_text().strip():
                return int(self.port_file.read_text())
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        self.__exit__()
        raise AssertionError(
            "sandbox-fluentd did not start:\n" + (self.tmp_path / "fluentd.log").read_text()
        )

    def __exit__(self, *exc: object) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def _handshake(port: int, ca: Path, cert: Path, key: Path) -> None:
    """A complete mutual-TLS exchange: handshake, then one HTTP round trip."""
    context = ssl.create_default_context(cafile=str(ca))
    context.load_cert_chain(str(cert), str(key))
    with (
        socket.create_connection(("127.0.0.1", port), timeout=10) as raw,
        context.wrap_socket(raw, server_hostname="localhost") as tls,
    ):
        # TLS 1.3 reports a refused client certificate on the first read.
        tls.sendall(
            b"POST /probe.log HTTP/1.1\r\nHost: localhost\r\n"
            b"Content-Type: application/json\r\nContent-Length: 2\r\n\r\n{}"
        )
        reply = tls.recv(100)
    assert reply.startswith(b"HTTP/1.1 "), reply


def _records(out: Path, timeout: float) -> list[dict[str, object]]:
    deadline = time.monotonic() + timeout
    while True:
        records = []
        for path in sorted(out.rglob("audit*")):
            if path.is_file():
                records += [json.loads(line) for line in path.read_text().splitlines() if line]
        if records or time.monotonic() > deadline:
            return records
        time.sleep(0.1)
