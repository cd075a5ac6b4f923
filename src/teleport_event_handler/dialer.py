"""Reaching the Auth Service through the Proxy Service's TLS routing.

Teleport's Proxy peeks at a connection's TLS ClientHello and, when the FIRST
ALPN protocol is ``teleport-auth@<hex of the cluster name>.teleport.cluster.local``,
forwards the raw connection to that cluster's Auth Service without
terminating TLS (lib/srv/alpnproxy/proxy.go, Proxy.handleConn with
``ForwardTLS``; lib/srv/alpnproxy/auth/auth_proxy.go, getClusterName and
AuthProxyDialerService.dialAuthServer). The handshake, the client certificate
and the check of the server against the cluster's host CA are therefore end
to end with Auth; Teleport's own client asks for it with
api/client/client.go ConfigureALPN and api/utils/cluster.go EncodeClusterName.

grpcio cannot offer a custom ALPN list, so the TLS is done here with Python's
``ssl`` and grpcio speaks plain HTTP/2 to a :class:`ProxyRelay`:

* the relay listens on a Unix socket inside a fresh directory that only this
  process's user can enter (``mkdtemp``: mode 0700, owned by the service
  user), the socket itself is 0600, and every accepted connection's peer uid
  (``SO_PEERCRED``) must be ours: nothing another local user can reach, and no
  TCP port at all;
* each connection grpcio opens becomes one TLS connection to the Proxy, with
  the routing ALPN first, ``h2`` second, SNI ``teleport.cluster.local``, the
  identity's client certificate, and verification against the identity's CA.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import socket
import ssl
import struct
import tempfile
import threading
from collections.abc import Callable
from concurrent.futures import Future

log = logging.getLogger(__name__)

API_DOMAIN = "teleport.cluster.local"
# lib/srv/alpnproxy/common/protocols.go: ProtocolAuth.
AUTH_ALPN_PREFIX = "teleport-auth@"
CONNECT_TIMEOUT = 15.0
# One ALPN protocol id is at most 255 bytes (RFC 7301).
MAX_ALPN_BYTES = 255


class DialError(Exception):
    """A connection to the Proxy failed, worded with what to check."""


def encode_cluster_name(cluster_name: str) -> str:
    """``<hex of the UTF-8 name>.teleport.cluster.local`` (api/utils EncodeClusterName)."""
    return cluster_name.encode().hex() + "." + API_DOMAIN


def decode_cluster_name(server_name: str) -> str | None:
    """The cluster name in an encoded server name; None when it holds none (DecodeClusterName)."""
    suffix = "." + API_DOMAIN
    if not server_name.endswith(suffix):
        return None
    try:
        return bytes.fromhex(server_name[: -len(suffix)]).decode()
    except (ValueError, UnicodeDecodeError):
        return None


def auth_alpn(cluster_name: str) -> str:
    """The ALPN protocol that asks a Proxy for the Auth Service of ``cluster_name``."""
    protocol = AUTH_ALPN_PREFIX + encode_cluster_name(cluster_name)
    if len(protocol.encode()) > MAX_ALPN_BYTES:
        raise DialError(
            f"cluster name {cluster_name!r} is too long to route through the Proxy "
            f"(its ALPN id would exceed {MAX_ALPN_BYTES} bytes); dial the Auth Service directly"
        )
    return protocol


def client_context(
    cert_pem: bytes, key_pem: bytes, ca_pems: bytes, alpn: list[str], key_dir: str
) -> ssl.SSLContext:
    """A TLS client context: our certificate, only ``ca_pems`` trusted, hostname checked.

    ``ssl`` loads a key only from a file, so it is written 0600 into
    ``key_dir`` (the relay's private directory) and removed at once.
    """
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_verify_locations(cadata=ca_pems.decode("ascii", "replace"))
    fd, path = tempfile.mkstemp(dir=key_dir, prefix="tls-", suffix=".pem")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(key_pem + b"\n" + cert_pem)
        context.load_cert_chain(path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
    context.set_alpn_protocols(alpn)
    return context


def _peer_uid(sock: socket.socket) -> int | None:
    so_peercred = getattr(socket, "SO_PEERCRED", None)
    if so_peercred is None:
        return None
    raw = sock.getsockopt(socket.SOL_SOCKET, so_peercred, struct.calcsize("3i"))
    _pid, uid, _gid = struct.unpack("3i", raw)
    return int(uid)


class ProxyRelay:
    """A private Unix socket whose connections are carried to the Proxy over routed TLS.

    ``context`` is called for every new connection, so renewed credentials
    reach the next connection without restarting the relay.
    """

    def __init__(
        self,
        host: str,
        port: int,
        context: Callable[[], ssl.SSLContext],
        server_hostname: str = API_DOMAIN,
    ) -> None:
        self.host = host
        self.port = port
        self._context = context
        self._server_hostname = server_hostname
        # mkdtemp creates the directory 0700 for the current user only.
        self.directory = tempfile.mkdtemp(prefix="teleport-event-handler-")
        self.path = os.path.join(self.directory, "auth.sock")
        self.last_error: str | None = None
        # Told each connection's problem (None once one succeeds), for error messages.
        self.on_failure: Callable[[str | None], None] = lambda _problem: None
        self.connections = 0
        self._loop = asyncio.new_event_loop()
        self._server: asyncio.AbstractServer | None = None
        self._thread = threading.Thread(target=self._loop.run_forever, name="relay", daemon=True)
        self._closed = False

    @property
    def target(self) -> str:
        """What grpcio dials."""
        return "unix:" + self.path

    def start(self) -> ProxyRelay:
        self._thread.start()
        started: Future[asyncio.AbstractServer] = asyncio.run_coroutine_threadsafe(
            asyncio.start_unix_server(self._handle, path=self.path), self._loop
        )
        self._server = started.result(timeout=10)
        os.chmod(self.path, 0o600)
        return self

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._server is not None:
            server = self._server

            async def _shutdown() -> None:
                server.close()
                tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)

            with contextlib.suppress(Exception):
                asyncio.run_coroutine_threadsafe(_shutdown(), self._loop).result(timeout=5)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
        shutil.rmtree(self.directory, ignore_errors=True)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        sock = writer.get_extra_info("socket")
        uid = _peer_uid(sock) if sock is not None else None
        if uid is not None and uid != os.getuid():
            log.warning(
                "relay: refused a connection from uid %d (only %d may use it)", uid, os.getuid()
            )
            writer.close()
            return
        try:
            up_reader, up_writer = await asyncio.wait_for(
                asyncio.open_connection(
                    self.host,
                    self.port,
                    ssl=self._context(),
                    server_hostname=self._server_hostname,
                    ssl_handshake_timeout=CONNECT_TIMEOUT,
                ),
                CONNECT_TIMEOUT,
            )
        except (TimeoutError, OSError, ssl.SSLError, EOFError) as exc:
            self.last_error = describe_failure(exc, self.host, self.port)
            self.on_failure(self.last_error)
            log.warning("%s", self.last_error)
            writer.close()
            return
        self.connections += 1
        self.last_error = None
        self.on_failure(None)
        try:
            await asyncio.gather(_pump(reader, up_writer), _pump(up_reader, writer))
        except asyncio.CancelledError:  # the relay is closing
            for stream in (writer, up_writer):
                stream.close()


async def _pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (OSError, ssl.SSLError, asyncio.CancelledError):
        pass
    finally:
        with contextlib.suppress(Exception):
            writer.close()


def describe_failure(exc: BaseException, host: str, port: int, cluster_name: str = "") -> str:
    """What a failed routed handshake means, and what to check."""
    text = str(exc) or type(exc).__name__
    name = repr(cluster_name) if cluster_name else "<name>"
    if isinstance(exc, ssl.SSLCertVerificationError):
        return (
            f"TLS to {host}:{port} through the Proxy: the server's certificate is not from the "
            f"cluster's host CA in the identity ({exc.verify_message}); check that the identity "
            "was issued by the cluster behind this Proxy and that the Proxy has TLS routing "
            "(a Proxy in proxy_listener_mode 'separate' has none: set --teleport-addr to the "
            "Auth Service, port 3025)"
        )
    if isinstance(exc, (ssl.SSLEOFError, ConnectionResetError, EOFError)) or "EOF" in text:
        return (
            f"the Proxy at {host}:{port} closed the connection during the TLS handshake: it routes "
            f"by the cluster name in the identity's certificate ({name}) and closes connections "
            "for a cluster it does not serve (Teleport's Proxy logs 'cluster name ... not "
            "found'); check that --teleport-addr is the Proxy of the cluster that issued the "
            "identity, or sign an identity on that cluster (tctl auth sign / tbot)"
        )
    return f"TLS to the Proxy at {host}:{port} failed: {text}"


def probe_is_auth(host: str, port: int, context: ssl.SSLContext, timeout: float = 10.0) -> bool:
    """Does ``host:port`` present a certificate from the cluster's host CA to a plain ``h2`` hello?

    The Auth Service does; a Proxy answers a hello without the routing ALPN with
    its own web certificate, which that CA did not sign. Other failures
    (refused, timeout) are raised as ``OSError``.
    """
    with socket.create_connection((host, port), timeout=timeout) as raw:
        try:
            with context.wrap_socket(raw, server_hostname=API_DOMAIN):
                return True
        except ssl.SSLCertVerificationError:
            return False
