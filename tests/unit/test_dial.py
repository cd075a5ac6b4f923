"""The Proxy dialer: routing names, the cluster name from a certificate, a private relay."""

from __future__ import annotations

import datetime
import os
import socket
import ssl
import stat

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from teleport_event_handler import dialer
from teleport_event_handler.teleport import (
    TELEPORT_CLUSTER_OID,
    Credentials,
    cluster_name_of,
)


def test_cluster_names_are_hex_encoded_as_teleport_does() -> None:
    # api/utils/cluster.go EncodeClusterName; the reference's example for example.com.
    assert dialer.auth_alpn("example.com") == (
        "teleport-auth@6578616d706c652e636f6d.teleport.cluster.local"
    )
    assert dialer.decode_cluster_name(dialer.encode_cluster_name("ä.example")) == "ä.example"
    assert dialer.decode_cluster_name("teleport.cluster.local") is None
    assert dialer.decode_cluster_name("zz.teleport.cluster.local") is None


def test_a_cluster_name_too_long_for_one_alpn_id_is_refused() -> None:
    assert dialer.auth_alpn("a" * 109)  # 14 + 218 + 23 = 255 bytes: fits
    with pytest.raises(dialer.DialError, match="255 bytes"):
        dialer.auth_alpn("a" * 110)


def _cert(subject: x509.Name, issuer: x509.Name) -> bytes:
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(hours=1))
        .sign(key, hashes.SHA256())
    )
    from cryptography.hazmat.primitives.serialization import Encoding

    return cert.public_bytes(Encoding.PEM)


def test_the_cluster_name_comes_from_the_certificate() -> None:
    """Teleport's subject attribute 1.3.9999.1.7 first (lib/tlsca/ca.go), then the issuer's O."""
    issuer = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "from-issuer")])
    with_oid = x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, "bot"),
            x509.NameAttribute(TELEPORT_CLUSTER_OID, "from-subject"),
        ]
    )
    plain = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "bot")])
    assert cluster_name_of(_cert(with_oid, issuer)) == "from-subject"
    assert cluster_name_of(_cert(plain, issuer)) == "from-issuer"


def test_the_expiry_warning_comes_when_a_third_of_the_lifetime_is_left() -> None:
    now = datetime.datetime(2026, 1, 1, 12, tzinfo=datetime.UTC)
    creds = Credentials(
        private_key_pem=b"",
        cert_pem=b"",
        ca_pems=b"",
        source="identity file x",
        user="bot",
        not_before=now - datetime.timedelta(hours=5, minutes=20),
        not_after=now + datetime.timedelta(hours=2, minutes=41),
    )
    assert not creds.expires_soon(now)
    assert creds.expires_soon(now + datetime.timedelta(minutes=2))
    assert not creds.expired(now + datetime.timedelta(hours=2))
    assert creds.expired(now + datetime.timedelta(hours=3))


def test_the_relay_socket_is_private() -> None:
    relay = dialer.ProxyRelay("127.0.0.1", 9, lambda: ssl.create_default_context()).start()
    try:
        assert relay.target == "unix:" + relay.path
        assert stat.S_IMODE(os.stat(relay.directory).st_mode) == 0o700
        assert os.stat(relay.directory).st_uid == os.getuid()
        assert stat.S_IMODE(os.stat(relay.path).st_mode) == 0o600
        assert stat.S_ISSOCK(os.stat(relay.path).st_mode)
    finally:
        relay.close()
    assert not os.path.exists(relay.directory)


@pytest.mark.skipif(os.getuid() != 0, reason="needs root to become another user")
def test_another_local_user_cannot_reach_the_relay() -> None:
    relay = dialer.ProxyRelay("127.0.0.1", 9, lambda: ssl.create_default_context()).start()
    try:
        pid = os.fork()
        if pid == 0:  # the child becomes 'nobody' and tries the socket
            code = 3
            try:
                os.setgid(65534)
                os.setuid(65534)
                with socket.socket(socket.AF_UNIX) as sock:
                    sock.connect(relay.path)
                code = 1
            except PermissionError:
                code = 0
            finally:
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
    finally:
        relay.close()


def test_a_proxy_that_closes_during_the_handshake_is_explained() -> None:
    text = dialer.describe_failure(ssl.SSLEOFError(8, "EOF"), "proxy", 443, "c.example")
    assert "'c.example'" in text and "tctl auth sign" in text and "--teleport-addr" in text
