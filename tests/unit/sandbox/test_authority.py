"""The sandbox authority: CAs, server credentials, identities, real TLS handshakes."""

from __future__ import annotations

import datetime
import os
import socket
import ssl
import stat
import threading
from pathlib import Path

import pytest
import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import NameOID

from teleport_event_handler import pki
from teleport_sandbox.teleport import authority
from teleport_sandbox.teleport.resources import (
    AccessDenied,
    NotFound,
    ResourceStore,
)

CLUSTER = "unit.example.com"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> str:
    data_dir = str(tmp_path_factory.mktemp("cluster") / "data")
    authority.init_authority(data_dir, CLUSTER)
    store = ResourceStore(data_dir)
    store.create(
        {
            "kind": "role",
            "metadata": {"name": "teleport-event-handler"},
            "spec": {"allow": {"rules": [{"resources": ["event", "session"], "verbs": ["list"]}]}},
        },
        overwrite=False,
    )
    store.create(
        {
            "kind": "user",
            "metadata": {"name": "teleport-event-handler"},
            "spec": {"roles": ["teleport-event-handler", "auditor"]},
        },
        overwrite=False,
    )
    return data_dir


def _load(path: str) -> object:
    return pki.load_certificate(Path(path).read_bytes(), path)


def _mode(path: str) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_init_writes_config_cas_and_presets(cluster: str) -> None:
    config = yaml.safe_load(Path(cluster, "teleport.yaml").read_text())
    assert config["version"] == "v3"
    assert config["teleport"] == {"data_dir": os.path.abspath(cluster), "nodename": "sandbox"}
    assert config["auth_service"] == {
        "enabled": True,
        "cluster_name": CLUSTER,
        "listen_addr": "127.0.0.1:3025",
    }
    assert authority.cluster_name(cluster) == CLUSTER
    for secret in (
        "host_ca.key",
        "user_ca.key",
        "ssh_host_ca.key",
        "ssh_user_ca.key",
        "server.key",
    ):
        assert _mode(os.path.join(cluster, "ca", secret)) == 0o600, secret
    assert _mode(os.path.join(cluster, "state.json")) == 0o600
    names = [r["metadata"]["name"] for r in ResourceStore(cluster).list("role")]
    assert {"access", "editor", "auditor"} <= set(names)


def test_host_and_user_cas_are_distinct_and_sign_what_they_should(cluster: str) -> None:
    host_ca = pki.load_certificate(authority.host_ca_pem(cluster))
    user_ca = pki.load_certificate(authority.user_ca_pem(cluster))
    assert pki.cert_usage(host_ca) == pki.cert_usage(user_ca) == "ca"
    assert pki.public_key_fingerprint(host_ca.public_key()) != pki.public_key_fingerprint(
        user_ca.public_key()
    )
    key_pem, cert_pem, client_ca_pem = authority.server_credentials(cluster)
    server = pki.load_certificate(cert_pem)
    assert client_ca_pem == authority.user_ca_pem(cluster)
    assert pki.is_signed_by(server, host_ca)
    assert not pki.is_signed_by(server, user_ca)
    assert pki.key_matches_cert(pki.load_private_key(key_pem), server)
    info = pki.cert_info(server)
    assert set(info.dns_names) == {
        "teleport.cluster.local",
        "*.teleport.cluster.local",
        "localhost",
    }
    assert info.ip_addresses == ("127.0.0.1",)
    assert "server" in info.usage
    assert authority.ca_pin(cluster) == "sha256:" + pki.public_key_fingerprint(host_ca.public_key())


def test_init_is_idempotent_and_keeps_cas(cluster: str) -> None:
    before = (authority.host_ca_pem(cluster), authority.user_ca_pem(cluster))
    server_before = authority.server_credentials(cluster)[1]
    store = ResourceStore(cluster)
    store.create({"kind": "role", "metadata": {"name": "keepme"}}, overwrite=True)
    authority.init_authority(cluster, "another.name")
    assert (authority.host_ca_pem(cluster), authority.user_ca_pem(cluster)) == before
    assert authority.server_credentials(cluster)[1] == server_before
    assert authority.cluster_name(cluster) == CLUSTER  # the existing config wins
    assert store.get("role", "keepme") is not None


def test_identity_file_follows_teleport_encoding(cluster: str, tmp_path: Path) -> None:
    out = str(tmp_path / "identity")
    before = pki.utcnow()
    not_after = authority.issue_identity(
        cluster, "teleport-event-handler", datetime.timedelta(hours=12), out
    )
    after = pki.utcnow()
    assert _mode(out) == 0o600
    assert before + datetime.timedelta(hours=12) - datetime.timedelta(seconds=1) <= not_after
    assert not_after <= after + datetime.timedelta(hours=12)

    parts = pki.parse_identity_file(Path(out).read_bytes(), out)
    key = pki.load_private_key(parts.private_key_pem)
    tls = pki.load_certificate(parts.tls_cert_pem)
    assert pki.key_matches_cert(key, tls)
    assert tls.not_valid_after_utc == not_after
    user_ca = pki.load_certificate(authority.user_ca_pem(cluster))
    host_ca = pki.load_certificate(authority.host_ca_pem(cluster))
    assert pki.is_signed_by(tls, user_ca)
    assert not pki.is_signed_by(tls, host_ca)
    assert pki.cert_usage(tls) == "client"
    cns = [a.value for a in tls.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]
    orgs = [a.value for a in tls.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)]
    assert cns == ["teleport-event-handler"]
    assert orgs == ["teleport-event-handler", "auditor"]

    # The TLS CA in the file is the host CA that signed the server certificate.
    assert len(parts.tls_ca_pems) == 1
    file_ca = pki.load_certificate(parts.tls_ca_pems[0])
    server = pki.load_certificate(authority.server_credentials(cluster)[1])
    assert pki.is_signed_by(server, file_ca)
    assert file_ca.fingerprint(file_ca.signature_hash_algorithm) == host_ca.fingerprint(
        host_ca.signature_hash_algorithm
    )

    # SSH: a user certificate for the same key, principal = user, from the SSH user CA.
    ssh_cert = serialization.load_ssh_public_identity(parts.ssh_cert)
    assert isinstance(ssh_cert, serialization.SSHCertificate)
    assert ssh_cert.type == serialization.SSHCertificateType.USER
    assert ssh_cert.valid_principals == [b"teleport-event-handler"]
    assert ssh_cert.valid_before == int(not_after.timestamp())
    ssh_cert.verify_cert_signature()
    ssh_user_ca = serialization.load_ssh_private_key(
        Path(cluster, "ca", "ssh_user_ca.key").read_bytes(), None
    )
    assert ssh_cert.signature_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    ) == ssh_user_ca.public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    )
    assert ssh_cert.public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    ) == key.public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    )
    assert len(parts.ssh_ca_lines) == 1
    fields = parts.ssh_ca_lines[0].split()
    assert fields[0] == b"@cert-authority"
    assert fields[1] == f"{CLUSTER},*.{CLUSTER}".encode()
    assert fields[-1] == b"type=host"

    peer = authority.peer_identity(cluster, parts.tls_cert_pem)
    assert peer == authority.PeerIdentity(
        "teleport-event-handler", ("teleport-event-handler", "auditor"), not_after
    )
    assert authority.load_identity(cluster, out) == peer


def test_tls_format_writes_crt_key_cas(cluster: str, tmp_path: Path) -> None:
    out = str(tmp_path / "client")
    authority.issue_identity(
        cluster, "teleport-event-handler", datetime.timedelta(minutes=30), out, fmt="tls"
    )
    for suffix in (".crt", ".key", ".cas"):
        assert _mode(out + suffix) == 0o600
    cert = pki.load_certificate(Path(out + ".crt").read_bytes())
    assert pki.key_matches_cert(pki.load_private_key(Path(out + ".key").read_bytes()), cert)
    assert Path(out + ".cas").read_bytes() == authority.host_ca_pem(cluster)
    assert not os.path.exists(out)


def test_unknown_user_is_refused(cluster: str, tmp_path: Path) -> None:
    with pytest.raises(NotFound, match='user "nobody" is not found'):
        authority.issue_identity(
            cluster, "nobody", datetime.timedelta(hours=1), str(tmp_path / "i")
        )
    assert not (tmp_path / "i").exists()


def _signed_by_file_ca(
    cluster: str, ca: str, not_before: datetime.datetime, ttl: datetime.timedelta
) -> tuple[bytes, bytes]:
    """A client cert for "teleport-event-handler" signed by one of the cluster's CA files."""
    ca_cert = _load(os.path.join(cluster, "ca", f"{ca}.crt"))
    ca_key = pki.load_private_key(Path(cluster, "ca", f"{ca}.key").read_bytes())
    key = pki.generate_private_key("ecdsa-p256")
    cert = pki.issue_leaf(
        ca_cert,
        ca_key,
        key.public_key(),
        "teleport-event-handler",
        "client",
        ttl=ttl,
        organizations=("editor",),
        not_before=not_before,
    )
    return pki.private_key_pem(key), pki.cert_pem(cert)


def test_peer_identity_refuses_foreign_and_expired(cluster: str) -> None:
    now = pki.utcnow()
    _, foreign = _signed_by_file_ca(cluster, "host_ca", now, datetime.timedelta(hours=1))
    with pytest.raises(AccessDenied, match="not signed by the user CA"):
        authority.peer_identity(cluster, foreign)
    _, expired = _signed_by_file_ca(
        cluster, "user_ca", now - datetime.timedelta(hours=2), datetime.timedelta(hours=1)
    )
    with pytest.raises(AccessDenied, match="expired"):
        authority.peer_identity(cluster, expired)
    _, good = _signed_by_file_ca(cluster, "user_ca", now, datetime.timedelta(hours=1))
    assert authority.peer_identity(cluster, good).roles == ("editor",)
    with pytest.raises(AccessDenied, match="expired"):
        authority.peer_identity(cluster, good, now=now + datetime.timedelta(hours=2))


def _handshake(cluster: str, client_key: bytes, client_cert: bytes, tmp_path: Path) -> str:
    """Run one mutual-TLS handshake against a server built from server_credentials.

    Returns "ok" with the server-side peer CN, or the server's handshake error.
    """
    key_pem, cert_pem, client_ca = authority.server_credentials(cluster)
    (tmp_path / "s.key").write_bytes(key_pem)
    (tmp_path / "s.crt").write_bytes(cert_pem)
    (tmp_path / "c.key").write_bytes(client_key)
    (tmp_path / "c.crt").write_bytes(client_cert)
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(tmp_path / "s.crt", tmp_path / "s.key")
    server_ctx.load_verify_locations(cadata=client_ca.decode())
    server_ctx.verify_mode = ssl.CERT_REQUIRED
    client_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    client_ctx.load_verify_locations(cadata=authority.host_ca_pem(cluster).decode())
    client_ctx.load_cert_chain(tmp_path / "c.crt", tmp_path / "c.key")
    result: dict[str, str] = {}
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(10)
    port = listener.getsockname()[1]

    def serve() -> None:
        conn, _ = listener.accept()
        conn.settimeout(10)
        try:
            with server_ctx.wrap_socket(conn, server_side=True) as tls:
                peer = tls.getpeercert() or {}
                subject = dict(x[0] for x in peer.get("subject", ()))
                result["server"] = "ok " + str(subject.get("commonName"))
                tls.sendall(b"x")
        except (ssl.SSLError, OSError) as exc:
            result["server"] = f"refused: {exc}"
            conn.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        with (
            socket.create_connection(("127.0.0.1", port), timeout=10) as raw,
            client_ctx.wrap_socket(raw, server_hostname="teleport.cluster.local") as tls,
        ):
            tls.recv(1)
    except (ssl.SSLError, OSError):
        pass
    thread.join(10)
    listener.close()
    return result["server"]


def test_real_handshakes_accept_user_ca_only(cluster: str, tmp_path: Path) -> None:
    out = str(tmp_path / "identity")
    authority.issue_identity(cluster, "teleport-event-handler", datetime.timedelta(hours=1), out)
    parts = pki.parse_identity_file(Path(out).read_bytes())
    ok = _handshake(cluster, parts.private_key_pem, parts.tls_cert_pem, tmp_path)
    assert ok == "ok teleport-event-handler"

    now = pki.utcnow()
    foreign = _signed_by_file_ca(cluster, "host_ca", now, datetime.timedelta(hours=1))
    assert _handshake(cluster, *foreign, tmp_path).startswith("refused")
    expired = _signed_by_file_ca(
        cluster, "user_ca", now - datetime.timedelta(hours=2), datetime.timedelta(hours=1)
    )
    assert "expired" in _handshake(cluster, *expired, tmp_path)


def test_load_identity_refuses_foreign_expired_and_mismatched(cluster: str, tmp_path: Path) -> None:
    good = str(tmp_path / "good")
    authority.issue_identity(cluster, "teleport-event-handler", datetime.timedelta(hours=1), good)
    parts = pki.parse_identity_file(Path(good).read_bytes())
    now = pki.utcnow()
    cases = {
        "foreign": _signed_by_file_ca(cluster, "host_ca", now, datetime.timedelta(hours=1)),
        "expired": _signed_by_file_ca(
            cluster, "user_ca", now - datetime.timedelta(hours=2), datetime.timedelta(hours=1)
        ),
    }
    for name, (key_pem, cert_pem) in cases.items():
        path = str(tmp_path / name)
        Path(path).write_bytes(
            pki.build_identity_file(parts._replace(private_key_pem=key_pem, tls_cert_pem=cert_pem))
        )
        with pytest.raises(AccessDenied, match=f"identity file {path} is not accepted"):
            authority.load_identity(cluster, path)
    mismatched = str(tmp_path / "mismatched")
    other_key = cases["foreign"][0]
    Path(mismatched).write_bytes(pki.build_identity_file(parts._replace(private_key_pem=other_key)))
    with pytest.raises(Exception, match="does not match the TLS certificate"):
        authority.load_identity(cluster, mismatched)


def test_bot_identity_carries_the_bots_roles(cluster: str, tmp_path: Path) -> None:
    store = ResourceStore(cluster)
    store.add_bot("forwarder", ["teleport-event-handler"], overwrite=True)
    out = str(tmp_path / "bot")
    authority.issue_identity(cluster, "bot-forwarder", datetime.timedelta(hours=1), out)
    parts = pki.parse_identity_file(Path(out).read_bytes())
    peer = authority.peer_identity(cluster, parts.tls_cert_pem)
    assert peer.user == "bot-forwarder"
    assert peer.roles == ("teleport-event-handler",)
