"""The sandbox Proxy front routes like Teleport's ALPN router (lib/srv/alpnproxy).

Hellos come from Python's own TLS client (a memory BIO), so the parser reads
what real clients send.
"""

from __future__ import annotations

import socket
import ssl
from collections.abc import Iterator

import pytest
from teleport_server_support import make_cluster

from teleport_event_handler import dialer
from teleport_event_handler.teleport import TeleportClient, load_identity_file
from teleport_sandbox.teleport import proxy, server


def _hello(alpn: list[str], server_name: str = "teleport.cluster.local") -> bytes:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.set_alpn_protocols(alpn)
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = context.wrap_bio(incoming, outgoing, server_hostname=server_name)
    with pytest.raises(ssl.SSLWantReadError):
        tls.do_handshake()
    return outgoing.read()


def test_the_hello_is_read_without_terminating_tls() -> None:
    wanted = dialer.auth_alpn("sandbox.test")
    data = _hello([wanted, "h2"])
    hello = proxy.parse_client_hello(data)
    assert hello.server_name == "teleport.cluster.local"
    assert hello.alpn == [wanted, "h2"]
    with pytest.raises(proxy._Incomplete):
        proxy.parse_client_hello(data[:40])


def test_only_the_first_alpn_value_names_the_cluster() -> None:
    """auth_proxy.go getClusterName reads info.ALPN[0] only."""
    assert proxy.cluster_from_alpn([dialer.auth_alpn("a.example"), "h2"]) == "a.example"
    with pytest.raises(proxy.RoutingError, match="auth routing prefix not found"):
        proxy.cluster_from_alpn(["h2", dialer.auth_alpn("a.example")])
    with pytest.raises(proxy.RoutingError, match="missing ALPN value"):
        proxy.cluster_from_alpn([])
    with pytest.raises(proxy.RoutingError, match="no cluster name is encoded"):
        proxy.cluster_from_alpn(["teleport-auth@teleport.cluster.local"])
    with pytest.raises(proxy.RoutingError, match="failed to decode cluster name"):
        proxy.cluster_from_alpn(["teleport-auth@zz.teleport.cluster.local"])


@pytest.fixture(scope="module")
def routed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, proxy.ProxyFront]]:
    cluster = make_cluster(tmp_path_factory.mktemp("proxied"), days=1, events_per_day=10)
    running = server.start_server(cluster.data_dir, mode="bulk")
    front = proxy.start_proxy(cluster.data_dir, "127.0.0.1:0", f"127.0.0.1:{running.port}")
    yield cluster.identities["reader"], front
    front.stop()
    running.stop(grace=None)


def test_the_auth_service_answers_through_the_front(
    routed: tuple[str, proxy.ProxyFront],
) -> None:
    identity, front = routed
    client = TeleportClient(f"127.0.0.1:{front.port}", load_identity_file(identity), via_proxy=True)
    try:
        assert client.ping().ClusterName == "sandbox.test"
    finally:
        client.close()


def test_another_cluster_is_refused_in_teleports_words(
    routed: tuple[str, proxy.ProxyFront], caplog: pytest.LogCaptureFixture
) -> None:
    _identity, front = routed
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.set_alpn_protocols([dialer.auth_alpn("other.example"), "h2"])
    with (
        socket.create_connection(("127.0.0.1", front.port), timeout=5) as raw,
        pytest.raises((ssl.SSLEOFError, ConnectionResetError, ssl.SSLZeroReturnError)),
    ):
        context.wrap_socket(raw, server_hostname="teleport.cluster.local")
    assert 'cluster name "other.example" not found' in caplog.text


def test_a_hello_without_the_routing_alpn_meets_the_proxys_own_certificate(
    routed: tuple[str, proxy.ProxyFront],
) -> None:
    identity, front = routed
    creds = load_identity_file(identity)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.load_verify_locations(cadata=creds.ca_pems.decode())
    assert not dialer.probe_is_auth("127.0.0.1", front.port, context)
