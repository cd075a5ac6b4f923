"""End to end: dialing through the sandbox Proxy front, and identities renewed on disk.

The Proxy front routes like Teleport's (lib/srv/alpnproxy): the first ALPN
value ``teleport-auth@<hex cluster name>.teleport.cluster.local`` picks the
cluster, the raw TLS goes to the Auth listener, and an unknown cluster is
refused. Identities are rewritten with ``sandbox-tctl auth sign`` while the
forwarder runs; the first one is short-lived, so events appended after it
expired can only be read with the renewed one.
"""

from __future__ import annotations

import collections
import contextlib
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from teleport_sandbox.stack import Stack

RUN_TIMEOUT = 120


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> str:
    root = str(tmp_path_factory.mktemp("template-proxy") / "stack")
    Stack(root=root, days=2, events_per_day=300).init()
    return root


@pytest.fixture
def stack(template: str, make_stack: Callable[..., Stack]) -> Stack:
    return make_stack(template, "legacy", proxy=True)


def _exactly_once(stack: Stack) -> None:
    counts = collections.Counter(str(r["uid"]) for r in stack.received("audit"))
    expected = stack.teleport_uids()
    missing = expected - set(counts)
    assert not missing, f"{len(missing)} of {len(expected)} events never reached Fluentd"
    assert set(counts) <= expected
    twice = [uid for uid, n in counts.items() if n != 1]
    assert not twice, f"{len(twice)} events arrived more than once, e.g. {twice[:3]}"


def _append(stack: Stack, count: int) -> None:
    stack.run_teleport_cli("append", "--count", str(count))


def _all_arrived(stack: Stack) -> bool:
    return stack.teleport_uids() <= {str(r["uid"]) for r in stack.received("audit")}


def _wait_for_log(stack: Stack, proc: subprocess.Popen[bytes], text: str) -> None:
    stack.wait_until(proc, lambda: text in stack.handler_log(), repr(text), timeout=60)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(30) == 0


def test_the_proxy_path_delivers_every_event_exactly_once(stack: Stack) -> None:
    toml = stack.handler_toml(start_time=stack.corpus_start(), teleport__addr=stack.proxy_addr)
    proc = stack.start_handler(toml, "--exit-on-last-event")
    assert proc.wait(RUN_TIMEOUT) == 0, f"see {stack.root}/handler.log"
    _exactly_once(stack)
    log = stack.handler_log()
    assert "through the Proxy's TLS routing" in log
    assert "presented a certificate of its own" in log  # chosen automatically, and said why


def test_a_wrong_cluster_name_is_refused_with_a_clear_error(stack: Stack, tmp_path: Path) -> None:
    other = Stack(root=str(tmp_path / "other"), days=1, events_per_day=5)
    other.init(["--cluster-name", "other.example.com"])
    toml = stack.handler_toml(
        start_time=stack.corpus_start(),
        teleport__addr=stack.proxy_addr,
        teleport__identity=other.identity,
        teleport__dial="proxy",
    )
    proc = stack.start_handler(toml, "--exit-on-last-event")
    assert proc.wait(RUN_TIMEOUT) == 1
    log = stack.handler_log()
    assert "closed the connection during the TLS handshake" in log
    assert "'other.example.com'" in log and "tctl auth sign" in log
    # Teleport's words for it (lib/srv/alpnproxy/auth/auth_proxy.go, dialRemoteAuthServer).
    assert 'cluster name "other.example.com" not found' in stack.proxy_log()
    assert not stack.received("audit")


def test_a_renewed_identity_is_picked_up_without_loss(stack: Stack) -> None:
    # 15 s left of a 75 s lifetime: less than a third, so the warning shows at start.
    stack.sign_identity(ttl="15s")
    toml = stack.handler_toml(
        start_time=stack.corpus_start(),
        teleport__addr=stack.proxy_addr,
        **{"teleport__refresh.enabled": True, "teleport__refresh.interval": "1s"},
    )
    proc = stack.start_handler(toml)
    try:
        _wait_for_log(stack, proc, "less than a third of its lifetime left")
        stack.wait_until(proc, lambda: len(stack.received("audit")) > 0, "first events")
        renewed_at = time.monotonic()
        stack.sign_identity(ttl="1h")  # as tbot does, mid-export
        _wait_for_log(stack, proc, "reloaded identity file")
        # The first identity has expired: what arrives now came over the new one.
        time.sleep(max(0.0, 16 - (time.monotonic() - renewed_at)))
        _append(stack, 40)
        stack.wait_until(proc, lambda: _all_arrived(stack), "the appended events", timeout=60)
    finally:
        _stop(proc)
    _exactly_once(stack)


def test_sighup_reloads_now(stack: Stack) -> None:
    stack.sign_identity(ttl="12s")
    toml = stack.handler_toml(start_time=stack.corpus_start())  # direct to Auth, no refresh
    proc = stack.start_handler(toml)
    try:
        stack.wait_until(proc, lambda: len(stack.received("audit")) > 0, "first events")
        assert "dialing the Auth Service directly" in stack.handler_log()
        renewed_at = time.monotonic()
        stack.sign_identity(ttl="1h")
        time.sleep(1.5)
        assert "reloaded identity file" not in stack.handler_log()  # refresh is off
        proc.send_signal(signal.SIGHUP)
        _wait_for_log(stack, proc, "reloaded identity file")
        time.sleep(max(0.0, 13 - (time.monotonic() - renewed_at)))
        _append(stack, 40)
        stack.wait_until(proc, lambda: _all_arrived(stack), "the appended events", timeout=60)
    finally:
        _stop(proc)
    _exactly_once(stack)


def test_an_identity_that_expires_while_running_stops_with_the_fix(stack: Stack) -> None:
    stack.sign_identity(ttl="4s")
    toml = stack.handler_toml(start_time=stack.corpus_start(), teleport__addr=stack.proxy_addr)
    proc = stack.start_handler(toml)
    assert proc.wait(RUN_TIMEOUT) == 1
    log = stack.handler_log()
    assert "expired at" in log and "tctl auth sign" in log and "tbot" in log


def test_an_expired_identity_is_refused_at_start(stack: Stack) -> None:
    stack.sign_identity(ttl="1s")
    time.sleep(1.5)
    toml = stack.handler_toml(start_time=stack.corpus_start(), teleport__addr=stack.proxy_addr)
    proc = stack.start_handler(toml, "--exit-on-last-event")
    assert proc.wait(RUN_TIMEOUT) == 1
    log = stack.handler_log()
    assert "expired at" in log and "tctl auth sign" in log


def test_an_identity_of_another_cluster_direct_to_auth_stops_with_the_fix(
    stack: Stack, tmp_path: Path
) -> None:
    """Auth's certificate does not verify against the identity's CA: name both clusters, stop."""
    other = Stack(root=str(tmp_path / "other"), days=1, events_per_day=5)
    other.init(["--cluster-name", "other.example.com"])
    toml = stack.handler_toml(
        start_time=stack.corpus_start(),
        teleport__identity=other.identity,
        teleport__dial="auth",
    )
    proc = stack.start_handler(toml, "--exit-on-last-event")
    assert proc.wait(RUN_TIMEOUT) == 1
    log = stack.handler_log()
    assert "belongs to cluster" in log and "'other.example.com'" in log, log[-3000:]
    assert "tctl auth sign" in log
    assert not stack.received("audit")


class _HeldRelay:
    """A TCP relay to ``target`` that holds the first connection until ``release()``.

    The handler's first connection to Teleport is its dial probe (``[teleport]
    dial = auto`` on a port other than 3025): it comes after ``app.run`` installed
    the early signal handlers and before ``_teleport_client`` installs the one
    that reloads. While it is held, the handler is known to be inside that window.
    """

    def __init__(self, target: str) -> None:
        host, port = target.rsplit(":", 1)
        self.target = (host, int(port))
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.addr = f"127.0.0.1:{self.listener.getsockname()[1]}"
        self.held = threading.Event()
        self._released = threading.Event()
        self._sockets: list[socket.socket] = [self.listener]
        threading.Thread(target=self._accept, daemon=True).start()

    def release(self) -> None:
        self._released.set()

    def close(self) -> None:
        self._released.set()
        for sock in self._sockets:
            sock.close()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return  # closed
            self._sockets.append(client)
            if not self.held.is_set():
                self.held.set()
                self._released.wait()
            upstream = socket.create_connection(self.target)
            self._sockets.append(upstream)
            for src, dst in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(src, dst), daemon=True).start()

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := src.recv(65536):
                dst.sendall(data)
            dst.shutdown(socket.SHUT_WR)


EARLY_HANGUPS = 5


def test_sighup_during_start_up_neither_kills_nor_blocks_a_later_reload(stack: Stack) -> None:
    """SIGHUPs after start-up began but before Teleport is dialed are logged and
    honoured once it is (the identity was read before it was renewed); a SIGHUP
    once running reloads.

    Without the early handler, the first SIGHUP ends the process (default action);
    without honouring it, the renewed identity is not used (refresh is off)."""
    relay = _HeldRelay(stack.teleport_addr)
    toml = stack.handler_toml(start_time=stack.corpus_start(), teleport__addr=relay.addr)
    proc = stack.start_handler(toml)
    try:
        assert relay.held.wait(60), "the handler never dialed Teleport"
        stack.sign_identity(ttl="2h")  # renewed after the handler read it
        for _ in range(EARLY_HANGUPS):
            proc.send_signal(signal.SIGHUP)
            time.sleep(0.05)
        early = "received SIGHUP before connecting to Teleport"
        stack.wait_until(
            proc,
            lambda: stack.handler_log().count(early) == EARLY_HANGUPS,
            "the early SIGHUPs logged",
            timeout=30,
        )
        assert "dialing the Auth Service" not in stack.handler_log()  # still in the window
        relay.release()
        _wait_for_log(stack, proc, "reloaded identity file")  # the early SIGHUPs, once
        stack.wait_until(proc, lambda: _all_arrived(stack), "the corpus", timeout=RUN_TIMEOUT)
        assert "dialing the Auth Service directly" in stack.handler_log()
        assert stack.handler_log().count("reloaded identity file") == 1
        stack.sign_identity(ttl="1h")
        proc.send_signal(signal.SIGHUP)
        stack.wait_until(
            proc,
            lambda: stack.handler_log().count("reloaded identity file") == 2,
            "the reload of a SIGHUP once running",
            timeout=60,
        )
        _append(stack, 40)
        stack.wait_until(proc, lambda: _all_arrived(stack), "the appended events", timeout=60)
    finally:
        relay.close()
        if proc.poll() is None:
            _stop(proc)
    assert proc.returncode == 0, f"the handler exited {proc.returncode}"
    _exactly_once(stack)
