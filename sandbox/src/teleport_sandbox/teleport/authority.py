"""The sandbox cluster's certificate authorities and the identities they issue.

Like Teleport, the cluster has separate host and user authorities: the host
CA signs the auth server's certificate (and is the TLS CA inside identity
files, so clients can verify the server), the user CA signs user
certificates (and is the only CA the server trusts for clients). Each also
has an SSH half used for the identity file's SSH certificate and its
``@cert-authority`` line.

Layout of a data directory ``D`` (created by ``init_authority``)::

    D/teleport.yaml            Teleport-style config naming the cluster
    D/ca/host_ca.{crt,key}     TLS host CA
    D/ca/user_ca.{crt,key}     TLS user CA
    D/ca/ssh_host_ca.key       SSH host CA (OpenSSH private key)
    D/ca/ssh_user_ca.key       SSH user CA (OpenSSH private key)
    D/ca/server.{crt,key}      the auth server's certificate, from the host CA
    D/state.json, state.lock   resources (see ``resources``)

All X.509 work goes through ``teleport_event_handler.pki``.
"""

from __future__ import annotations

import datetime
import json
import os
import secrets
from typing import Any, NamedTuple

import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from cryptography.x509.oid import NameOID

from teleport_event_handler import pki
from teleport_sandbox.teleport.resources import (
    BOT_LABEL,
    AccessDenied,
    BadParameter,
    ResourceStore,
    not_found,
    state_lock,
)

__all__ = [
    "API_DOMAIN",
    "DEFAULT_CLUSTER_NAME",
    "PeerIdentity",
    "ca_pin",
    "cert_roles",
    "cluster_name",
    "cluster_name_from_config",
    "data_dir_from_config",
    "host_ca_pem",
    "init_authority",
    "issue_identity",
    "load_identity",
    "peer_identity",
    "proxy_credentials",
    "server_credentials",
    "ssh_host_ca_line",
    "ssh_user_ca_line",
    "user_ca_pem",
]

DEFAULT_CLUSTER_NAME = "sandbox.teleport.local"
# The name every Teleport server certificate carries and clients use as SNI.
API_DOMAIN = "teleport.cluster.local"
SERVER_DNS_NAMES = (API_DOMAIN, "*." + API_DOMAIN, "localhost")
SERVER_IPS = ("127.0.0.1",)

# Teleport's "balanced" algorithm suite: ECDSA P-256 for TLS, Ed25519 for SSH CAs.
TLS_KEY_TYPE = "ecdsa-p256"
CA_TTL = datetime.timedelta(days=3650)
SERVER_TTL = datetime.timedelta(days=365)
# Reissue the server certificate at init when less than this is left.
SERVER_RENEW_BEFORE = datetime.timedelta(days=1)
# Teleport backdates certificates so that small clock skews do not reject them.
CLOCK_SKEW = datetime.timedelta(minutes=1)


class PeerIdentity(NamedTuple):
    """Who a client certificate says its holder is (Teleport's TLS identity encoding)."""

    user: str
    roles: tuple[str, ...]
    not_after: datetime.datetime


class _Paths:
    def __init__(self, data_dir: str) -> None:
        self.data_dir = os.path.abspath(data_dir)
        ca = os.path.join(self.data_dir, "ca")
        self.ca_dir = ca
        self.config = os.path.join(self.data_dir, "teleport.yaml")
        self.host_ca_crt = os.path.join(ca, "host_ca.crt")
        self.host_ca_key = os.path.join(ca, "host_ca.key")
        self.user_ca_crt = os.path.join(ca, "user_ca.crt")
        self.user_ca_key = os.path.join(ca, "user_ca.key")
        self.ssh_host_ca_key = os.path.join(ca, "ssh_host_ca.key")
        self.ssh_user_ca_key = os.path.join(ca, "ssh_user_ca.key")
        self.server_crt = os.path.join(ca, "server.crt")
        self.server_key = os.path.join(ca, "server.key")


def _read(path: str) -> bytes:
    try:
        with open(path, "rb") as handle:
            return handle.read()
    except FileNotFoundError as exc:
        raise BadParameter(
            f"{path}: missing; is this a sandbox data directory? Create one with "
            "init_authority(data_dir) or 'sandbox-teleport init'"
        ) from exc


# --- initialisation -------------------------------------------------------------


def init_authority(data_dir: str, cluster_name: str = DEFAULT_CLUSTER_NAME) -> None:
    """Create the cluster in ``data_dir``: config, CAs, server certificate, preset roles.

    Idempotent: existing CAs, config and resources are kept, so a restarted
    sandbox still trusts the identities it issued. Safe to run concurrently.
    """
    paths = _Paths(data_dir)
    os.makedirs(paths.data_dir, mode=0o700, exist_ok=True)
    with state_lock(paths.data_dir):
        os.makedirs(paths.ca_dir, mode=0o700, exist_ok=True)
        if not os.path.exists(paths.config):
            config = {
                "version": "v3",
                "teleport": {"data_dir": paths.data_dir, "nodename": "sandbox"},
                "auth_service": {
                    "enabled": True,
                    "cluster_name": cluster_name,
                    "listen_addr": "127.0.0.1:3025",
                },
            }
            text = yaml.safe_dump(config, sort_keys=False)
            pki.write_file_atomic(paths.config, text.encode(), mode=0o600)
        name = cluster_name_from_config(paths.config)
        for crt, key in (
            (paths.host_ca_crt, paths.host_ca_key),
            (paths.user_ca_crt, paths.user_ca_key),
        ):
            if not (os.path.exists(crt) and os.path.exists(key)):
                ca_key = pki.generate_private_key(TLS_KEY_TYPE)
                # Teleport names both CAs after the cluster; only keys tell them apart.
                ca_cert = pki.issue_ca(ca_key, name, CA_TTL, organizations=(name,))
                pki.write_file_atomic(key, pki.private_key_pem(ca_key), mode=0o600)
                pki.write_file_atomic(crt, pki.cert_pem(ca_cert), mode=0o644)
        for ssh_key in (paths.ssh_host_ca_key, paths.ssh_user_ca_key):
            if not os.path.exists(ssh_key):
                raw = ed25519.Ed25519PrivateKey.generate().private_bytes(
                    serialization.Encoding.PEM,
                    serialization.PrivateFormat.OpenSSH,
                    serialization.NoEncryption(),
                )
                pki.write_file_atomic(ssh_key, raw, mode=0o600)
        if _server_cert_needs_issuing(paths):
            _issue_server_cert(paths, name)
    ResourceStore(paths.data_dir).ensure_presets()


def _server_cert_needs_issuing(paths: _Paths) -> bool:
    if not (os.path.exists(paths.server_crt) and os.path.exists(paths.server_key)):
        return True
    cert = pki.load_certificate(_read(paths.server_crt), paths.server_crt)
    host_ca = pki.load_certificate(_read(paths.host_ca_crt), paths.host_ca_crt)
    fresh: bool = cert.not_valid_after_utc - pki.utcnow() > SERVER_RENEW_BEFORE
    return not (fresh and pki.is_signed_by(cert, host_ca))


def _issue_server_cert(paths: _Paths, name: str) -> None:
    host_ca = pki.load_certificate(_read(paths.host_ca_crt), paths.host_ca_crt)
    host_ca_key = pki.load_private_key(_read(paths.host_ca_key), source=paths.host_ca_key)
    key = pki.generate_private_key(TLS_KEY_TYPE)
    start = pki.utcnow() - CLOCK_SKEW
    # Auth server certificates serve TLS and also dial other Teleport services.
    cert = pki.issue_leaf(
        host_ca,
        host_ca_key,
        key.public_key(),
        f"sandbox.{name}",
        "server,client",
        dns_names=SERVER_DNS_NAMES,
        ip_addresses=SERVER_IPS,
        ttl=SERVER_TTL,
        organizations=("Admin",),
        not_before=start,
    )
    pki.write_file_atomic(paths.server_key, pki.private_key_pem(key), mode=0o600)
    pki.write_file_atomic(paths.server_crt, pki.cert_pem(cert), mode=0o644)


# --- reading the cluster -----------------------------------------------------


def cluster_name_from_config(config_path: str) -> str:
    """``auth_service.cluster_name`` of a sandbox ``teleport.yaml``."""
    try:
        data = yaml.safe_load(_read(config_path))
    except yaml.YAMLError as exc:
        raise BadParameter(f"{config_path}: not valid YAML ({exc})") from exc
    name = ((data or {}).get("auth_service") or {}).get("cluster_name")
    if not isinstance(name, str) or not name:
        raise BadParameter(f"{config_path}: set auth_service.cluster_name")
    return name


def data_dir_from_config(config_path: str) -> str:
    """``teleport.data_dir`` of a ``teleport.yaml`` (default: the file's directory)."""
    try:
        data = yaml.safe_load(_read(config_path))
    except yaml.YAMLError as exc:
        raise BadParameter(f"{config_path}: not valid YAML ({exc})") from exc
    value = ((data or {}).get("teleport") or {}).get("data_dir")
    if isinstance(value, str) and value:
        return os.path.join(os.path.dirname(os.path.abspath(config_path)), value)
    return os.path.dirname(os.path.abspath(config_path))


def cluster_name(data_dir: str) -> str:
    return cluster_name_from_config(_Paths(data_dir).config)


def host_ca_pem(data_dir: str) -> bytes:
    """The TLS host CA: what clients trust to verify the auth server."""
    return _read(_Paths(data_dir).host_ca_crt)


def user_ca_pem(data_dir: str) -> bytes:
    """The TLS user CA: what the server trusts to verify clients."""
    return _read(_Paths(data_dir).user_ca_crt)


def ca_pin(data_dir: str) -> str:
    """Teleport's CA pin: ``sha256:`` + hex SHA-256 of the host CA's public key (SPKI)."""
    cert = pki.load_certificate(host_ca_pem(data_dir), "host CA")
    return "sha256:" + pki.public_key_fingerprint(cert.public_key())


def server_credentials(data_dir: str) -> tuple[bytes, bytes, bytes]:
    """(server key PEM, server cert PEM, user CA PEM to verify clients) for the gRPC server."""
    paths = _Paths(data_dir)
    return _read(paths.server_key), _read(paths.server_crt), _read(paths.user_ca_crt)


def proxy_credentials(data_dir: str) -> tuple[bytes, bytes, bytes]:
    """(key PEM, certificate PEM, web CA PEM) the Proxy front serves its own TLS with.

    A Proxy's web listener presents a certificate of its own (often from a
    public CA), not one from the cluster's host CA: that is how a client tells
    it apart from the Auth Service. The sandbox's comes from a separate "web"
    CA kept in ``D/proxy/``; made on first use, kept afterwards.
    """
    directory = os.path.join(_Paths(data_dir).data_dir, "proxy")
    key_path = os.path.join(directory, "web.key")
    crt_path = os.path.join(directory, "web.crt")
    ca_path = os.path.join(directory, "web_ca.crt")
    with state_lock(_Paths(data_dir).data_dir):
        if not all(os.path.exists(p) for p in (key_path, crt_path, ca_path)):
            os.makedirs(directory, mode=0o700, exist_ok=True)
            ca_key = pki.generate_private_key(TLS_KEY_TYPE)
            ca = pki.issue_ca(ca_key, "sandbox web CA", CA_TTL, organizations=("sandbox web",))
            key = pki.generate_private_key(TLS_KEY_TYPE)
            cert = pki.issue_leaf(
                ca,
                ca_key,
                key.public_key(),
                "localhost",
                "server",
                dns_names=("localhost",),
                ip_addresses=SERVER_IPS,
                ttl=SERVER_TTL,
                not_before=pki.utcnow() - CLOCK_SKEW,
            )
            pki.write_file_atomic(ca_path, pki.cert_pem(ca), mode=0o644)
            pki.write_file_atomic(key_path, pki.private_key_pem(key), mode=0o600)
            pki.write_file_atomic(crt_path, pki.cert_pem(cert), mode=0o644)
    return _read(key_path), _read(crt_path), _read(ca_path)


def _ssh_ca_key(path: str) -> Any:
    return serialization.load_ssh_private_key(_read(path), password=None)


def _ssh_public_line(key: Any) -> bytes:
    data: bytes = key.public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    )
    return data


def ssh_host_ca_line(data_dir: str) -> bytes:
    """The known_hosts line trusting the SSH host CA, as Teleport writes it."""
    paths = _Paths(data_dir)
    name = cluster_name(paths.data_dir)
    key = _ssh_public_line(_ssh_ca_key(paths.ssh_host_ca_key))
    return b"@cert-authority " + f"{name},*.{name} ".encode() + key + b" type=host"


def ssh_user_ca_line(data_dir: str) -> bytes:
    """The authorized_keys line trusting the SSH user CA (``tctl auth export --type=user``)."""
    paths = _Paths(data_dir)
    name = cluster_name(paths.data_dir)
    key = _ssh_public_line(_ssh_ca_key(paths.ssh_user_ca_key))
    return b"cert-authority " + key + f" clustername={name}&type=user".encode()


# --- identities -----------------------------------------------------------------


def cert_roles(store: ResourceStore, user: str) -> tuple[str, ...]:
    """The roles a certificate issued for ``user`` now carries; ``NotFound`` if no such user."""
    doc = store.get("user", user)
    if doc is None:
        raise not_found("user", user)
    bot = ((doc.get("metadata") or {}).get("labels") or {}).get(BOT_LABEL)
    if bot:
        # A bot's own user only holds its impersonator role; what tbot writes
        # (and what the bot is for) carries the roles the bot may impersonate.
        bot_doc = store.get("bot", bot)
        if bot_doc is not None:
            return tuple((bot_doc.get("spec") or {}).get("roles") or ())
    return tuple((doc.get("spec") or {}).get("roles") or ())


def _ssh_certificate(
    paths: _Paths,
    public_key: Any,
    user: str,
    roles: tuple[str, ...],
    start: datetime.datetime,
    not_after: datetime.datetime,
) -> bytes:
    ca_key = _ssh_ca_key(paths.ssh_user_ca_key)
    # Teleport puts the roles in an extension so SSH servers can do RBAC too.
    roles_ext = json.dumps({"version": "v1", "roles": list(roles)}).encode()
    builder = (
        serialization.SSHCertificateBuilder()
        .public_key(public_key)
        .serial(secrets.randbits(64))
        .type(serialization.SSHCertificateType.USER)
        .key_id(user.encode())
        .valid_principals([user.encode()])
        .valid_after(int(start.timestamp()))
        .valid_before(int(not_after.timestamp()))
        .add_extension(b"permit-agent-forwarding", b"")
        .add_extension(b"permit-port-forwarding", b"")
        .add_extension(b"permit-pty", b"")
        .add_extension(b"teleport-roles", roles_ext)
    )
    cert = builder.sign(ca_key)
    data: bytes = cert.public_bytes()
    return data


def issue_identity(
    data_dir: str,
    user: str,
    ttl: datetime.timedelta,
    out: str,
    fmt: str = "file",
    key_type: str = TLS_KEY_TYPE,
) -> datetime.datetime:
    """Issue credentials for ``user`` like ``tctl auth sign``; returns their NotAfter.

    ``fmt="file"`` writes one identity file at ``out`` in Teleport's order (key,
    SSH cert, TLS cert, ``@cert-authority`` line, host CA); ``fmt="tls"`` writes
    ``out.crt``, ``out.key`` and ``out.cas``. Everything is written 0600,
    atomically, replacing existing files. The TLS certificate is signed by the
    user CA with CN = user and one O per role the user holds now.
    """
    if fmt not in ("file", "tls"):
        raise BadParameter(f'unsupported identity format "{fmt}": use "file" or "tls"')
    if ttl <= datetime.timedelta(0):
        raise BadParameter(f"ttl must be positive, got {ttl}")
    paths = _Paths(data_dir)
    store = ResourceStore(paths.data_dir)
    roles = cert_roles(store, user)
    user_ca = pki.load_certificate(_read(paths.user_ca_crt), paths.user_ca_crt)
    user_ca_key = pki.load_private_key(_read(paths.user_ca_key), source=paths.user_ca_key)
    host_ca = _read(paths.host_ca_crt)

    key = pki.generate_private_key(key_type)
    now = pki.utcnow().replace(microsecond=0)
    start = now - CLOCK_SKEW
    cert = pki.issue_leaf(
        user_ca,
        user_ca_key,
        key.public_key(),
        user,
        "client",
        ttl=ttl + CLOCK_SKEW,
        organizations=roles,
        not_before=start,
    )
    not_after: datetime.datetime = cert.not_valid_after_utc
    key_pem = pki.private_key_pem(key)
    tls_pem = pki.cert_pem(cert)
    out = os.path.abspath(out)
    if fmt == "tls":
        pki.write_file_atomic(out + ".key", key_pem, mode=0o600)
        pki.write_file_atomic(out + ".crt", tls_pem, mode=0o600)
        pki.write_file_atomic(out + ".cas", host_ca, mode=0o600)
        return not_after
    ssh_cert = _ssh_certificate(paths, key.public_key(), user, roles, start, not_after)
    host_line = ssh_host_ca_line(paths.data_dir)
    parts = pki.IdentityParts(
        private_key_pem=key_pem,
        ssh_cert=ssh_cert,
        tls_cert_pem=tls_pem,
        ssh_ca_lines=(host_line,),
        tls_ca_pems=(host_ca,),
    )
    pki.write_file_atomic(out, pki.build_identity_file(parts), mode=0o600)
    return not_after


def peer_identity(
    data_dir: str, cert_pem: bytes, now: datetime.datetime | None = None
) -> PeerIdentity:
    """Decode a client certificate into (user, roles, not_after).

    The certificate is checked again here (signed by this cluster's user CA,
    inside its validity period) so that a caller that skipped the TLS
    handshake's verification still cannot be fooled; ``AccessDenied`` if not.
    """
    try:
        cert = pki.load_certificate(cert_pem, "client certificate")
    except pki.PkiError as exc:
        raise AccessDenied(f"access denied: {exc}") from exc
    user_ca = pki.load_certificate(user_ca_pem(data_dir), "user CA")
    if not pki.is_signed_by(cert, user_ca):
        raise AccessDenied(
            "access denied: the certificate is not signed by the user CA of cluster "
            f'"{cluster_name(data_dir)}"'
        )
    when = now or pki.utcnow()
    not_after: datetime.datetime = cert.not_valid_after_utc
    if when >= not_after:
        raise AccessDenied(
            f"access denied: the certificate expired at {not_after:%Y-%m-%dT%H:%M:%SZ}"
        )
    if when < cert.not_valid_before_utc:
        raise AccessDenied("access denied: the certificate is not valid yet")
    cns = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    if not cns:
        raise AccessDenied("access denied: the certificate has no subject common name (user)")
    roles = tuple(
        str(attr.value) for attr in cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)
    )
    return PeerIdentity(user=str(cns[0].value), roles=roles, not_after=not_after)


def load_identity(data_dir: str, path: str) -> PeerIdentity:
    """Read an identity file and check it belongs to this cluster and is usable.

    What ``tctl --identity`` does before talking to the cluster: the key must
    match the certificate, which must be signed by the user CA and unexpired.
    Raises ``AccessDenied`` naming the file and what to do.
    """
    try:
        with open(path, "rb") as handle:
            data = handle.read()
    except OSError as exc:
        raise BadParameter(f"identity file {path}: {exc.strerror}") from exc
    try:
        parts = pki.parse_identity_file(data, source=f"identity file {path}")
        key = pki.load_private_key(parts.private_key_pem, source=f"identity file {path}")
        cert = pki.load_certificate(parts.tls_cert_pem, f"identity file {path}")
    except pki.PkiError as exc:
        raise BadParameter(str(exc)) from exc
    if not pki.key_matches_cert(key, cert):
        raise BadParameter(
            f"identity file {path}: the private key does not match the TLS certificate; "
            "issue a new identity with 'tctl auth sign'"
        )
    try:
        return peer_identity(data_dir, parts.tls_cert_pem)
    except AccessDenied as exc:
        reason = str(exc).removeprefix("access denied: ")
        raise AccessDenied(
            f'identity file {path} is not accepted by cluster "{cluster_name(data_dir)}": '
            f"{reason}; issue a new one with 'tctl auth sign --user=<name> --out={path}'"
        ) from exc
