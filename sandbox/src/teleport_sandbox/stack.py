"""A whole sandbox deployment on this machine: Teleport, Fluentd, the forwarder.

The one place where the demo, the integration tests and the benchmark set up
the peers the way an operator following the guide would: a Teleport cluster
with the event handler's role and user, a signed identity, Fluentd mTLS
material, a ``fluent.conf`` and the handler's TOML. Every peer runs as its own
process on 127.0.0.1 with an ephemeral port.
"""

from __future__ import annotations

import collections
import datetime
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from teleport_event_handler import pki
from teleport_event_handler.fluentconf import render_fluent_conf

HANDLER_USER = "teleport-event-handler"
# The sandbox Fluentd writes its file outputs this often; readers wait one more.
FLUSH_INTERVAL = 0.2
# The real Fluentd's buffers flush this often (the template's default).
REAL_FLUSH_INTERVAL = "1s"
HANDLER_ROLE_YAML = """\
kind: role
version: v7
metadata:
  name: teleport-event-handler
spec:
  allow:
    rules:
      - resources: ['event', 'session']
        verbs: ['list', 'read']
---
kind: user
version: v2
metadata:
  name: teleport-event-handler
spec:
  roles: ['teleport-event-handler']
"""

FLUENTD_KINDS = ("real", "sandbox")
# Where a real Fluentd is looked for (see find_fluentd).
FLUENTD_ENV = "TELEPORT_SANDBOX_FLUENTD"
_REPO = os.path.dirname(
    os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
)
VENDORED_FLUENTD = os.path.join(os.path.dirname(_REPO), "shared", "vendor", "fluentd", "fluentd")


def fluent_conf_values(
    port: int | str,
    material: FluentdMaterial,
    out_dir: str,
    buffer_dir: str | None = None,
    flush_interval: str | None = None,
    forward_port: int | None = None,
) -> dict[str, object]:
    """The template's ``fluent_conf`` dict for a local stack (loopback only)."""
    values: dict[str, object] = {
        "bind": "127.0.0.1",
        "port": port,
        "ca_path": material.ca,
        "cert_path": material.server_cert,
        "private_key_path": material.server_key,
        "private_key_passphrase": material.passphrase,
        "output_dir": out_dir,
        "audit_tag": "test.log",
        "session_tag_prefix": "session",
    }
    if buffer_dir:
        values["buffer_dir"] = buffer_dir
    if flush_interval:
        values["flush_interval"] = flush_interval
    if forward_port:
        values["forward_port"] = forward_port
    return values


def find_fluentd() -> list[str]:
    """The command of a real Fluentd: $TELEPORT_SANDBOX_FLUENTD, ../shared's, or PATH's."""
    for candidate in (os.environ.get(FLUENTD_ENV), VENDORED_FLUENTD, shutil.which("fluentd")):
        if candidate and os.access(candidate, os.X_OK):
            return [candidate]
    raise RuntimeError(
        f"no real Fluentd: set {FLUENTD_ENV}, put ../shared/vendor/fluentd next to the "
        f"repository ({VENDORED_FLUENTD}) or install fluentd on PATH; or use "
        "Stack(fluentd='sandbox')"
    )


class _PortTaken(RuntimeError):
    """The port chosen for a real Fluentd was taken before it could bind."""


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _bin(name: str) -> str:
    """A console script of this package, next to the running interpreter."""
    candidate = os.path.join(os.path.dirname(sys.executable), name)
    return candidate if os.path.exists(candidate) else name


def _wait_for_file(path: str, proc: subprocess.Popen[bytes], timeout: float) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if os.path.exists(path):
            with open(path) as handle:
                text = handle.read().strip()
            if text:
                return text
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args!r} exited with {proc.returncode} before it was ready")
        time.sleep(0.05)
    raise TimeoutError(f"{proc.args!r} did not write {path} within {timeout}s")


def _stop(proc: subprocess.Popen[bytes] | None, timeout: float = 15.0) -> int | None:
    if proc is None or proc.poll() is not None:
        return None if proc is None else proc.returncode
    proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.wait()


@dataclass
class FluentdMaterial:
    ca: str
    ca_key: str
    server_cert: str
    server_key: str
    passphrase: str
    client_cert: str
    client_key: str

    @classmethod
    def load(cls, directory: str) -> FluentdMaterial:
        """The material ``make_fluentd_material`` wrote to ``directory``."""
        with open(os.path.join(directory, "passphrase")) as handle:
            passphrase = handle.read().strip()
        return cls(
            ca=os.path.join(directory, "ca.crt"),
            ca_key=os.path.join(directory, "ca.key"),
            server_cert=os.path.join(directory, "server.crt"),
            server_key=os.path.join(directory, "server.key"),
            passphrase=passphrase,
            client_cert=os.path.join(directory, "client.crt"),
            client_key=os.path.join(directory, "client.key"),
        )


def make_fluentd_material(
    directory: str,
    key_type: str = "ecdsa-p256",
    passphrase: str | None = None,
    dns_names: tuple[str, ...] = ("localhost",),
    ip_addresses: tuple[str, ...] = ("127.0.0.1",),
) -> FluentdMaterial:
    """CA, server (passphrase-encrypted key) and client certificates, as the guide's step 2.

    ECDSA keys by default: generation takes milliseconds, which tests need.
    """
    os.makedirs(directory, exist_ok=True)
    ca_key = pki.generate_private_key(key_type)
    ca = pki.issue_ca(ca_key)
    server_key = pki.generate_private_key(key_type)
    server = pki.issue_leaf(
        ca, ca_key, server_key.public_key(), "Server", "server", dns_names, ip_addresses
    )
    client_key = pki.generate_private_key(key_type)
    client = pki.issue_leaf(ca, ca_key, client_key.public_key(), "Client", "client", dns_names)
    secret = passphrase or pki.random_passphrase()
    pki.write_file_atomic(os.path.join(directory, "passphrase"), secret.encode() + b"\n")
    paths = FluentdMaterial.load(directory)
    pki.write_file_atomic(paths.ca, pki.cert_pem(ca))
    pki.write_file_atomic(paths.ca_key, pki.private_key_pem(ca_key))
    pki.write_file_atomic(paths.server_cert, pki.cert_pem(server))
    pki.write_file_atomic(paths.server_key, pki.private_key_pem(server_key, secret))
    pki.write_file_atomic(paths.client_cert, pki.cert_pem(client))
    pki.write_file_atomic(paths.client_key, pki.private_key_pem(client_key))
    return paths


@dataclass
class Stack:
    """The peers of one test, demo or benchmark run, under ``root``.

    ``fluentd`` chooses the receiver: "real" runs Fluentd 1.16 itself
    (``find_fluentd``) with the project's ``fluent.conf`` template; "sandbox"
    runs ``sandbox-fluentd`` with the same file, for faults on cue
    (``fluentd_faults``: refusals, 5xx, latency, refusing arrays).
    """

    root: str
    days: int = 3
    events_per_day: int = 1000
    mode: str = "bulk"
    teleport_args: Sequence[str] = ()
    fluentd_args: Sequence[str] = ()
    fluentd: str = "real"
    teleport_addr: str = ""
    fluentd_port: int = 0
    material: FluentdMaterial | None = None
    # forward: Fluentd also serves in_forward (on forward_port, picked when 0) and
    # handler_toml points the handler at it with tls:// URLs.
    forward: bool = False
    forward_port: int = 0
    _teleport: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    _fluentd: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    proxy_addr: str = ""
    _proxy: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def teleport_dir(self) -> str:
        return os.path.join(self.root, "teleport")

    @property
    def fluentd_dir(self) -> str:
        return os.path.join(self.root, "fluentd")

    @property
    def out_dir(self) -> str:
        return os.path.join(self.root, "fluentd", "out")

    @property
    def buffer_dir(self) -> str:
        return os.path.join(self.root, "fluentd", "buffer")

    @property
    def fluentd_log_path(self) -> str:
        return os.path.join(self.root, "fluentd.log")

    @property
    def identity(self) -> str:
        return os.path.join(self.root, "handler", "identity")

    @property
    def storage(self) -> str:
        return os.path.join(self.root, "handler", "storage")

    @property
    def tctl_config(self) -> str:
        return os.path.join(self.teleport_dir, "teleport.yaml")

    # -- setup ------------------------------------------------------------------

    def init(self, extra_init_args: Sequence[str] = ()) -> None:
        os.makedirs(os.path.join(self.root, "handler"), exist_ok=True)
        os.makedirs(self.out_dir, exist_ok=True)
        self.run_teleport_cli(
            "init",
            "--days",
            str(self.days),
            "--events-per-day",
            str(self.events_per_day),
            *extra_init_args,
        )
        role_file = os.path.join(self.root, "handler", "teleport-event-handler-role.yaml")
        with open(role_file, "w") as handle:
            handle.write(HANDLER_ROLE_YAML)
        self.tctl("create", "-f", role_file)
        self.sign_identity()
        self.material = make_fluentd_material(os.path.join(self.fluentd_dir, "certs"))

    def sign_identity(
        self, ttl: str = "8h", out: str | None = None, user: str = HANDLER_USER
    ) -> str:
        target = out or self.identity
        if os.path.exists(target):
            os.unlink(target)
        self.tctl(
            "auth", "sign", f"--user={user}", "--format=file", f"--out={target}", f"--ttl={ttl}"
        )
        return target

    def tctl(self, *args: str) -> str:
        result = subprocess.run(
            [_bin("sandbox-tctl"), "-c", self.tctl_config, *args],
            check=True,
            capture_output=True,
            text=True,
        )
        return result.stdout

    def run_teleport_cli(self, command: str, *args: str) -> str:
        result = subprocess.run(
            [_bin("sandbox-teleport"), command, "--data-dir", self.teleport_dir, *args],
            check=True,
            capture_output=True,
            text=True,
        )
        return result.stdout

    # -- processes ------------------------------------------------------------------

    def start_teleport(
        self, mode: str | None = None, extra: Sequence[str] = (), port: int = 0
    ) -> str:
        port_file = os.path.join(self.teleport_dir, "port")
        if os.path.exists(port_file):
            os.unlink(port_file)
        log = open(os.path.join(self.root, "teleport.log"), "ab")  # noqa: SIM115
        self._teleport = subprocess.Popen(
            [
                _bin("sandbox-teleport"),
                "serve",
                "--data-dir",
                self.teleport_dir,
                "--listen",
                f"127.0.0.1:{port}",
                "--port-file",
                port_file,
                "--mode",
                mode or self.mode,
                *self.teleport_args,
                *extra,
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        bound = _wait_for_file(port_file, self._teleport, 60)
        self.teleport_addr = f"127.0.0.1:{bound}"
        return self.teleport_addr

    def stop_teleport(self) -> None:
        _stop(self._teleport)

    def start_proxy(self, port: int = 0) -> str:
        """A Proxy front routing to the running Auth listener; its ``host:port``."""
        assert self.teleport_addr, "call start_teleport() first"
        port_file = os.path.join(self.teleport_dir, "proxy-port")
        if os.path.exists(port_file):
            os.unlink(port_file)
        log = open(os.path.join(self.root, "proxy.log"), "ab")  # noqa: SIM115
        self._proxy = subprocess.Popen(
            [
                _bin("sandbox-teleport"),
                "proxy",
                "--data-dir",
                self.teleport_dir,
                "--auth-addr",
                self.teleport_addr,
                "--listen",
                f"127.0.0.1:{port}",
                "--port-file",
                port_file,
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        bound = _wait_for_file(port_file, self._proxy, 60)
        self.proxy_addr = f"127.0.0.1:{bound}"
        return self.proxy_addr

    def stop_proxy(self) -> None:
        _stop(self._proxy)

    def proxy_log(self) -> str:
        path = os.path.join(self.root, "proxy.log")
        if not os.path.exists(path):
            return ""
        with open(path, errors="replace") as handle:
            return handle.read()

    def fluent_conf(self) -> str:
        """Write ``fluent.conf`` from the project's template; returns its path."""
        assert self.material is not None, "call init() first"
        path = os.path.join(self.fluentd_dir, "fluent.conf")
        values = fluent_conf_values(
            self.fluentd_port,
            self.material,
            self.out_dir,
            buffer_dir=self.buffer_dir,
            flush_interval=REAL_FLUSH_INTERVAL if self.fluentd == "real" else None,
            forward_port=self._forward_port(),
        )
        with open(path, "w") as handle:
            handle.write(render_fluent_conf(values))
        return path

    def _forward_port(self) -> int | None:
        if not self.forward:
            return None
        if not self.forward_port:
            self.forward_port = _free_port()
        return self.forward_port

    @property
    def fluentd_pid(self) -> int | None:
        """The running Fluentd's process id (benchmarks read its CPU time)."""
        if self._fluentd is None or self._fluentd.poll() is not None:
            return None
        return self._fluentd.pid

    def start_fluentd(self, extra: Sequence[str] = ()) -> int:
        if self.fluentd not in FLUENTD_KINDS:
            raise ValueError(f"Stack(fluentd={self.fluentd!r}): give one of {FLUENTD_KINDS}")
        if self.fluentd == "real":
            return self._start_real_fluentd(extra)
        conf = self.fluent_conf()
        port_file = os.path.join(self.fluentd_dir, "port")
        if os.path.exists(port_file):
            os.unlink(port_file)
        log = open(self.fluentd_log_path, "ab")  # noqa: SIM115
        args = [_bin("sandbox-fluentd"), "--config", conf, "--port-file", port_file]
        args += ["--flush-interval", str(FLUSH_INTERVAL)]
        if self.fluentd_port:
            args += ["--port", str(self.fluentd_port)]
        args += ["--control-file", self.fluentd_control_file, *self.fluentd_args, *extra]
        self._fluentd = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
        self.fluentd_port = int(_wait_for_file(port_file, self._fluentd, 30))
        return self.fluentd_port

    def _start_real_fluentd(self, extra: Sequence[str]) -> int:
        """Fluentd 1.16 in the foreground (one process); ready once it listens."""
        if self.fluentd_args:
            raise ValueError(
                f"fluentd_args {list(self.fluentd_args)!r} are sandbox faults: a real Fluentd "
                "takes none; use Stack(fluentd='sandbox')"
            )
        chosen = not self.fluentd_port
        for attempt in range(3):
            if chosen:
                # Fluentd cannot report a port it picked: pick one for it.
                self.fluentd_port = _free_port()
            try:
                return self._run_real_fluentd(extra)
            except _PortTaken:
                if not chosen or attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def _run_real_fluentd(self, extra: Sequence[str]) -> int:
        conf = self.fluent_conf()
        log_start = (
            os.path.getsize(self.fluentd_log_path) if os.path.exists(self.fluentd_log_path) else 0
        )
        log = open(self.fluentd_log_path, "ab")  # noqa: SIM115
        self._fluentd = subprocess.Popen(
            [*find_fluentd(), "-c", conf, "--no-supervisor", *extra],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 60
        while "fluentd worker is now running" not in self.fluentd_log()[log_start:]:
            if self._fluentd.poll() is not None:
                text = self.fluentd_log()[log_start:]
                error = _PortTaken if "Address already in use" in text else RuntimeError
                raise error(
                    f"Fluentd exited {self._fluentd.returncode} before it was ready: {text[-2000:]}"
                )
            if time.monotonic() > deadline:
                _stop(self._fluentd)
                raise TimeoutError(f"Fluentd was not ready within 60s; see {self.fluentd_log_path}")
            time.sleep(0.05)
        return self.fluentd_port

    def fluentd_log(self) -> str:
        if not os.path.exists(self.fluentd_log_path):
            return ""
        with open(self.fluentd_log_path, errors="replace") as handle:
            return handle.read()

    def stop_fluentd(self) -> None:
        _stop(self._fluentd, timeout=30.0)

    @property
    def fluentd_control_file(self) -> str:
        return os.path.join(self.fluentd_dir, "control.json")

    def fluentd_faults(self, **faults: Any) -> None:
        """Change the running sandbox Fluentd's faults (empty = none)."""
        if self.fluentd != "sandbox":
            raise RuntimeError("a real Fluentd has no faults on cue: use Stack(fluentd='sandbox')")
        tmp = self.fluentd_control_file + ".tmp"
        with open(tmp, "w") as handle:
            json.dump(faults, handle)
        os.replace(tmp, self.fluentd_control_file)

    def stop(self) -> None:
        self.stop_fluentd()
        self.stop_proxy()
        self.stop_teleport()

    # -- the forwarder --------------------------------------------------------------

    def handler_toml(self, path: str | None = None, **overrides: Any) -> str:
        """The handler's TOML, with the Go plugin's keys, for this stack."""
        assert self.material is not None, "call init() first"
        top: dict[str, Any] = {
            "storage": self.storage,
            "timeout": "1s",
            "batch": 500,
        }
        fluentd: dict[str, Any] = {
            "ca": self.material.ca,
            "cert": self.material.client_cert,
            "key": self.material.client_key,
            "url": f"https://localhost:{self.fluentd_port}/test.log",
            "session-url": f"https://localhost:{self.fluentd_port}/session",
        }
        if self.forward:
            fluentd["url"] = f"tls://localhost:{self.forward_port}/test.log"
            fluentd["session-url"] = f"tls://localhost:{self.forward_port}/session"
        teleport: dict[str, Any] = {"addr": self.teleport_addr, "identity": self.identity}
        for key, value in overrides.items():
            section, _, name = key.rpartition("__")
            name = name.replace("_", "-")
            target = {"fluentd": fluentd, "teleport": teleport}.get(section, top)
            if value is None:
                target.pop(name, None)
            else:
                target[name] = value
        lines = [f"{k} = {_toml(v)}" for k, v in top.items()]
        lines += ["", "[forward.fluentd]"] + [f"{k} = {_toml(v)}" for k, v in fluentd.items()]
        lines += ["", "[teleport]"] + [f"{k} = {_toml(v)}" for k, v in teleport.items()]
        target_path = path or os.path.join(self.root, "handler", "teleport-event-handler.toml")
        with open(target_path, "w") as handle:
            handle.write("\n".join(lines) + "\n")
        return target_path

    def handler_command(self, toml: str, *flags: str) -> list[str]:
        return [_bin("teleport-event-handler"), "start", "--config", toml, *flags]

    def start_handler(
        self, toml: str, *flags: str, env: dict[str, str] | None = None
    ) -> subprocess.Popen[bytes]:
        log = open(os.path.join(self.root, "handler.log"), "ab")  # noqa: SIM115
        return subprocess.Popen(
            self.handler_command(toml, *flags),
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
        )

    def handler_log(self) -> str:
        path = os.path.join(self.root, "handler.log")
        if not os.path.exists(path):
            return ""
        with open(path, errors="replace") as handle:
            return handle.read()

    def wait_until(
        self,
        proc: subprocess.Popen[bytes],
        ready: Callable[[], bool],
        what: str,
        timeout: float = 60.0,
    ) -> None:
        """Poll ``ready`` while the handler ``proc`` runs; fail if it exits or time runs out."""
        deadline = time.monotonic() + timeout
        while not ready():
            if proc.poll() is not None:
                raise RuntimeError(
                    f"the handler exited {proc.returncode} before {what}; "
                    f"see {self.root}/handler.log"
                )
            if time.monotonic() > deadline:
                raise TimeoutError(f"no {what} within {timeout}s; see {self.root}/handler.log")
            time.sleep(0.05)

    # -- what arrived ----------------------------------------------------------------

    def received(self, prefix: str = "audit") -> list[dict[str, Any]]:
        """Every record Fluentd wrote for ``prefix`` (audit or session), once flushed."""
        records: list[dict[str, Any]] = []
        # First the flush: a real Fluentd creates the output directory only when it
        # first writes a chunk out, so a missing directory may just mean "not yet".
        self._wait_for_flush()
        if not os.path.isdir(self.out_dir):
            return records
        for name in sorted(os.listdir(self.out_dir)):
            if name.startswith(prefix) and name.endswith(".log"):
                with open(os.path.join(self.out_dir, name), "rb") as handle:
                    records.extend(json.loads(line) for line in handle if line.strip())
        return records

    def received_by_uid(self, prefix: str = "audit") -> collections.Counter[str]:
        """How often each event ``uid`` arrived."""
        return collections.Counter(str(r.get("uid")) for r in self.received(prefix))

    def output_bytes(self, prefix: str = "audit") -> int:
        if not os.path.isdir(self.out_dir):
            return 0
        total = 0
        for name in os.listdir(self.out_dir):
            path = os.path.join(self.out_dir, name)
            if name.startswith(prefix) and os.path.isfile(path):
                total += os.path.getsize(path)
        return total

    def buffered_chunks(self) -> list[str]:
        """The real Fluentd's file-buffer chunks not yet written to the outputs."""
        chunks: list[str] = []
        for directory, _, names in os.walk(self.buffer_dir):
            chunks += [os.path.join(directory, n) for n in names if n.endswith(".log")]
        return chunks

    def wait_for_flush(self, timeout: float = 60.0) -> None:
        """Wait until the running Fluentd wrote out what it acknowledged."""
        self._wait_for_flush(timeout)

    def _wait_for_flush(self, timeout: float = 60.0) -> None:
        """Wait until the running Fluentd has written what it acknowledged."""
        if self._fluentd is None or self._fluentd.poll() is not None:
            return
        if self.fluentd == "real":
            # in_http answers after the event is in a file-buffer chunk, and a
            # chunk's file goes once it is written out: none left, all written.
            deadline = time.monotonic() + timeout
            while self.buffered_chunks():
                if time.monotonic() > deadline:
                    raise TimeoutError(f"Fluentd kept {self.buffered_chunks()} for {timeout}s")
                time.sleep(0.1)
            return
        size, stable_since = -1, time.monotonic()
        while time.monotonic() - stable_since < 3 * FLUSH_INTERVAL:
            current = self.output_bytes("")
            if current != size:
                size, stable_since = current, time.monotonic()
            time.sleep(FLUSH_INTERVAL / 2)

    def corpus_start(self) -> datetime.datetime:
        """Midnight UTC of the day of Teleport's oldest event (a start-time for all)."""
        from teleport_sandbox.teleport.corpus import all_events

        first = next(iter(all_events(self.teleport_dir)))
        day = datetime.date.fromisoformat(str(first["time"])[:10])
        return datetime.datetime(day.year, day.month, day.day, tzinfo=datetime.UTC)

    def teleport_uids(self) -> set[str]:
        from teleport_sandbox.teleport.corpus import event_uids

        return set(event_uids(self.teleport_dir))

    @classmethod
    def copy_of(cls, template: str, root: str, **kwargs: Any) -> Stack:
        """A stack in ``root`` from an initialised one (cheaper than ``init``)."""
        shutil.copytree(template, root, symlinks=True)
        config = os.path.join(root, "teleport", "teleport.yaml")
        with open(config) as handle:
            text = handle.read()
        with open(config, "w") as handle:
            handle.write(
                text.replace(os.path.join(template, "teleport"), os.path.join(root, "teleport"))
            )
        for name in ("port",):
            for sub in ("teleport", "fluentd"):
                path = os.path.join(root, sub, name)
                if os.path.exists(path):
                    os.unlink(path)
        stack = cls(root=root, **kwargs)
        stack.material = FluentdMaterial.load(os.path.join(stack.fluentd_dir, "certs"))
        return stack

    def clean(self) -> None:
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    if isinstance(value, datetime.datetime):
        return json.dumps(value.strftime("%Y-%m-%dT%H:%M:%SZ"))
    return json.dumps(str(value))
