"""Certificates for talking to the sandbox Fluentd over mutual TLS, made with our pki.

``make_fluentd_certs(tmp_path)`` writes, like the Go plugin's ``configure``:
a CA, a server certificate for localhost/127.0.0.1 whose key is encrypted
with a passphrase (traditional ``Proc-Type: 4,ENCRYPTED`` PEM), and a client
certificate with an unencrypted key; plus a foreign CA with its own client
certificate, for "wrong CA" tests. ECDSA keys keep generation fast.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from teleport_event_handler import pki
from teleport_sandbox.stack import make_fluentd_material

PASSPHRASE = "sandbox-passphrase-0123456789abcdef"


@dataclasses.dataclass(frozen=True)
class FluentdCerts:
    directory: Path
    ca: Path
    ca_key: Path
    server_cert: Path
    server_key: Path
    passphrase: str
    client_cert: Path
    client_key: Path
    foreign_ca: Path
    foreign_client_cert: Path
    foreign_client_key: Path

    def transport_tls(self, *, client_cert_auth: bool = True, extra: str = "") -> str:
        """The ``<transport tls>`` block of a fluent.conf using these files."""
        return (
            "  <transport tls>\n"
            f"{extra}"
            f"    client_cert_auth {'true' if client_cert_auth else 'false'}\n"
            f"    ca_path {self.ca}\n"
            f"    cert_path {self.server_cert}\n"
            f"    private_key_path {self.server_key}\n"
            f'    private_key_passphrase "{self.passphrase}"\n'
            "  </transport>\n"
        )


def _write(path: Path, data: bytes) -> Path:
    pki.write_file_atomic(str(path), data)
    return path


def make_fluentd_certs(
    directory: Path,
    *,
    key_type: str = "ecdsa-p256",
    passphrase: str = PASSPHRASE,
    dns_names: tuple[str, ...] = ("localhost",),
    ip_addresses: tuple[str, ...] = ("127.0.0.1",),
) -> FluentdCerts:
    """The sandbox stack's Fluentd material, plus a foreign CA and its client."""
    made = make_fluentd_material(str(directory), key_type, passphrase, dns_names, ip_addresses)
    foreign_key = pki.generate_private_key(key_type)
    foreign = pki.issue_ca(foreign_key, "Someone else's CA")
    intruder_key = pki.generate_private_key(key_type)
    intruder = pki.issue_leaf(foreign, foreign_key, intruder_key.public_key(), "intruder", "client")
    return FluentdCerts(
        directory=directory,
        ca=Path(made.ca),
        ca_key=Path(made.ca_key),
        server_cert=Path(made.server_cert),
        server_key=Path(made.server_key),
        passphrase=made.passphrase,
        client_cert=Path(made.client_cert),
        client_key=Path(made.client_key),
        foreign_ca=_write(directory / "foreign-ca.crt", pki.cert_pem(foreign)),
        foreign_client_cert=_write(directory / "foreign-client.crt", pki.cert_pem(intruder)),
        foreign_client_key=_write(
            directory / "foreign-client.key", pki.private_key_pem(intruder_key)
        ),
    )


def fluent_conf(
    certs: FluentdCerts | None,
    output_path: Path,
    *,
    extra_source: str = "",
    match: str = "test.log session.*.log",
    parse: str = "  <parse>\n    @type json\n    time_type string\n"
    "    time_format %Y-%m-%dT%H:%M:%S\n  </parse>\n",
    fmt: str = "json",
) -> str:
    """A fluent.conf like the one the event handler's ``configure`` writes.

    Port 0 and bind 127.0.0.1: the test passes the real port around.
    """
    transport = certs.transport_tls() if certs else ""
    return (
        "<source>\n  @type http\n  port 0\n  bind 127.0.0.1\n"
        f"{extra_source}{transport}{parse}</source>\n"
        f"<match {match}>\n  @type file\n  path {output_path}\n  append true\n"
        f"  <format>\n    @type {fmt}\n  </format>\n</match>\n"
    )
