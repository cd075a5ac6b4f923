"""The sandbox Proxy front: Teleport's TLS routing to the Auth Service, and nothing else.

What Teleport's Proxy does with a connection on its web port, as far as
reaching Auth goes (lib/srv/alpnproxy/proxy.go, Proxy.handleConn):

1. read the TLS ClientHello WITHOUT terminating TLS
   (readHelloMessageWithoutTLSTermination) and route on its ALPN list;
2. ``teleport-auth@...`` routes to AuthProxyDialerService, registered with
   ``ForwardTLS`` (lib/service/service.go): the raw connection, ClientHello
   included, goes to the Auth Service, which does the handshake itself;
3. the cluster is taken from the FIRST ALPN value only
   (lib/srv/alpnproxy/auth/auth_proxy.go, getClusterName: the prefix
   ``teleport-auth@`` then api/utils DecodeClusterName of the rest);
4. the local cluster's name dials the local Auth Service; any other name is
   looked up among leaf clusters and, not found, refused with
   ``cluster name "<name>" not found`` (dialRemoteAuthServer). The router
   logs "Failed to handle client connection" with that error and closes the
   client connection: the client sees its handshake end without an answer;
5. any other hello is served by the Proxy's own TLS (its web certificate).
   The sandbox completes that handshake and closes, as it serves nothing else.

Forwarding uses plain sockets and ``MSG_PEEK`` for the hello, so the bytes
reach Auth untouched.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import ssl
import struct
import tempfile
import threading
import time
from dataclasses import dataclass, field

from teleport_sandbox.teleport import authority

__all__ = ["ClientHello", "ProxyFront", "parse_client_hello", "start_proxy"]

log = logging.getLogger("sandbox.proxy")

PROTOCOL_AUTH = "teleport-auth@"  # lib/srv/alpnproxy/common/protocols.go ProtocolAuth
API_DOMAIN = authority.API_DOMAIN
# Teleport's defaults.HandshakeReadDeadline.
HANDSHAKE_READ_DEADLINE = 5.0
_MAX_HELLO = 64 * 1024


class RoutingError(Exception):
    """Why the Proxy refused a connection, in Teleport's words."""


@dataclass
class ClientHello:
    server_name: str = ""
    alpn: list[str] = field(default_factory=list)


class _Incomplete(Exception):
    pass


def parse_client_hello(data: bytes) -> ClientHello:
    """SNI and ALPN of a TLS ClientHello (maybe over several records); ``_Incomplete`` if short."""
    body = b""
    offset = 0
    needed: int | None = None
    while needed is None or len(body) < needed:
        if len(data) < offset + 5:
            raise _Incomplete
        content_type, _version, length = struct.unpack_from("!BHH", data, offset)
        if content_type != 22:
            raise RoutingError("not a TLS handshake")
        if len(data) < offset + 5 + length:
            raise _Incomplete
        body += data[offset + 5 : offset + 5 + length]
        offset += 5 + length
        if needed is None and len(body) >= 4:
            if body[0] != 1:
                raise RoutingError("not a TLS ClientHello")
            needed = 4 + int.from_bytes(body[1:4], "big")
    hello = ClientHello()
    pos = 4 + 2 + 32  # header, legacy version, random
    pos += 1 + body[pos]  # session id
    pos += 2 + int.from_bytes(body[pos : pos + 2], "big")  # cipher suites
    pos += 1 + body[pos]  # compression methods
    if pos + 2 > len(body):
        return hello
    end = pos + 2 + int.from_bytes(body[pos : pos + 2], "big")
    pos += 2
    while pos + 4 <= end:
        ext_type, ext_len = struct.unpack_from("!HH", body, pos)
        ext = body[pos + 4 : pos + 4 + ext_len]
        pos += 4 + ext_len
        if ext_type == 0 and len(ext) >= 5 and ext[2] == 0:
            name_len = int.from_bytes(ext[3:5], "big")
            hello.server_name = ext[5 : 5 + name_len].decode("ascii", "replace")
        elif ext_type == 16 and len(ext) >= 2:
            i = 2
            while i < len(ext):
                n = ext[i]
                hello.alpn.append(ext[i + 1 : i + 1 + n].decode("utf-8", "replace"))
                i += 1 + n
    return hello


def decode_cluster_name(server_name: str) -> str:
    """api/utils/cluster.go DecodeClusterName, with its errors."""
    if server_name == API_DOMAIN:
        raise RoutingError("no cluster name is encoded")
    suffix = "." + API_DOMAIN
    if not server_name.endswith(suffix):
        raise RoutingError("no cluster name is encoded")
    try:
        return bytes.fromhex(server_name[: -len(suffix)]).decode()
    except ValueError as exc:
        raise RoutingError(f"failed to decode cluster name: {exc}") from exc


def cluster_from_alpn(alpn: list[str]) -> str:
    """auth_proxy.go getClusterName: only the first ALPN value counts."""
    if not alpn:
        raise RoutingError("missing ALPN value")
    protocol = alpn[0]
    if not protocol.startswith(PROTOCOL_AUTH):
        raise RoutingError("auth routing prefix not found")
    return decode_cluster_name(protocol[len(PROTOCOL_AUTH) :])


def _peek_hello(conn: socket.socket) -> ClientHello:
    deadline = time.monotonic() + HANDSHAKE_READ_DEADLINE
    while True:
        conn.settimeout(max(deadline - time.monotonic(), 0.01))
        data = conn.recv(_MAX_HELLO, socket.MSG_PEEK)
        if not data:
            raise RoutingError("connection closed before a ClientHello")
        try:
            return parse_client_hello(data)
        except _Incomplete:
            if time.monotonic() > deadline or len(data) >= _MAX_HELLO:
                raise RoutingError("no complete ClientHello in time") from None
            time.sleep(0.01)


def _pump(source: socket.socket, target: socket.socket) -> None:
    try:
        while data := source.recv(65536):
            target.sendall(data)
    except OSError:
        pass
    finally:
        with contextlib.suppress(OSError):
            target.shutdown(socket.SHUT_WR)


class ProxyFront:
    """Accepts on ``listen``; routes ``teleport-auth@<this cluster>`` to ``auth_addr``."""

    def __init__(self, data_dir: str, listen: str, auth_addr: str) -> None:
        self.data_dir = data_dir
        self.cluster_name = authority.cluster_name(data_dir)
        host, _, port = auth_addr.rpartition(":")
        self.auth = (host, int(port))
        key, cert, _ca = authority.proxy_credentials(data_dir)
        self._web = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        with tempfile.TemporaryDirectory() as scratch:
            path = os.path.join(scratch, "web.pem")
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as handle:
                handle.write(key + b"\n" + cert)
            self._web.load_cert_chain(path)
        self._web.set_alpn_protocols(["h2", "http/1.1"])
        lhost, _, lport = listen.rpartition(":")
        self._sock = socket.create_server((lhost, int(lport)))
        self.port: int = self._sock.getsockname()[1]
        self.refused = 0
        self.forwarded = 0
        self._thread = threading.Thread(target=self._accept, name="proxy", daemon=True)

    def start(self) -> ProxyFront:
        self._thread.start()
        return self

    def stop(self) -> None:
        with contextlib.suppress(OSError):
            self._sock.shutdown(socket.SHUT_RDWR)
        self._sock.close()

    def _accept(self) -> None:
        while True:
            try:
                conn, _peer = self._sock.accept()
            except OSError:
                return
            threading.Thread(target=self._handle, args=(conn,), daemon=True).start()

    def _handle(self, conn: socket.socket) -> None:
        try:
            hello = _peek_hello(conn)
            if not (hello.alpn and hello.alpn[0].startswith(PROTOCOL_AUTH)):
                self._serve_web(conn)
                return
            name = cluster_from_alpn(hello.alpn)
            if name != self.cluster_name:
                # No leaf cluster by that name: dialRemoteAuthServer's NotFound.
                raise RoutingError(f'cluster name "{name}" not found')
            upstream = socket.create_connection(self.auth, timeout=10)
        except (RoutingError, OSError) as exc:
            self.refused += 1
            log.warning('Failed to handle client connection error="%s"', exc)
            conn.close()
            return
        self.forwarded += 1
        conn.settimeout(None)
        upstream.settimeout(None)
        back = threading.Thread(target=_pump, args=(upstream, conn), daemon=True)
        back.start()
        _pump(conn, upstream)
        back.join()
        conn.close()
        upstream.close()

    def _serve_web(self, conn: socket.socket) -> None:
        conn.settimeout(HANDSHAKE_READ_DEADLINE)
        try:
            with self._web.wrap_socket(conn, server_side=True):
                pass
        except (OSError, ssl.SSLError):
            conn.close()


def start_proxy(data_dir: str, listen: str, auth_addr: str) -> ProxyFront:
    return ProxyFront(data_dir, listen, auth_addr).start()
