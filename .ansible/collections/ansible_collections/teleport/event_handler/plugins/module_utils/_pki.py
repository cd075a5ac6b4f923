# Copyright: the teleport-event-handler authors
# Apache License 2.0 (see LICENSE)
"""X.509 and identity-file logic: the one implementation in the project.

Used by the forwarder (reading identities), the sandbox peers (issuing
identities and TLS certificates) and the Ansible collection, where
``src/teleport_event_handler/pki.py`` is a symlink to this very file
(``plugins/module_utils/_pki.py``). It therefore imports
nothing from the rest of the package and nothing from Ansible, and it keeps
the ``cryptography`` import guarded so that Ansible's sanity import test (and a
host without the library) gets a clear message instead of a traceback.
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import ipaddress
import os
import secrets
import tempfile
from typing import Any, NamedTuple

try:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec, rsa
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    HAS_CRYPTOGRAPHY = True
    CRYPTOGRAPHY_IMPORT_ERROR = ""
except ImportError as _exc:  # pragma: no cover - exercised by ansible-test's import test
    HAS_CRYPTOGRAPHY = False
    CRYPTOGRAPHY_IMPORT_ERROR = str(_exc)

__all__ = [
    "CRYPTOGRAPHY_IMPORT_ERROR",
    "HAS_CRYPTOGRAPHY",
    "KEY_TYPES",
    "CertInfo",
    "IdentityParts",
    "PkiError",
    "build_identity_file",
    "cert_info",
    "cert_pem",
    "cert_usage",
    "generate_private_key",
    "is_signed_by",
    "iso_utc",
    "issue_ca",
    "issue_leaf",
    "key_matches_cert",
    "key_type_of",
    "load_certificate",
    "load_certificates",
    "load_private_key",
    "parse_identity_file",
    "private_key_pem",
    "public_key_fingerprint",
    "random_passphrase",
    "subject_names",
    "utcnow",
    "write_file_atomic",
]

# Key types offered everywhere a key is generated. RSA 4096 is the Go
# plugin's default; ECDSA keys are smaller and faster for Fluentd handshakes.
KEY_TYPES = ("rsa2048", "rsa3072", "rsa4096", "ecdsa-p256", "ecdsa-p384")

SERVER_AUTH = "server"
CLIENT_AUTH = "client"


class PkiError(Exception):
    """A certificate, key or identity file that cannot be used as given."""


class CertInfo(NamedTuple):
    """What an operator needs to see about a certificate; never key material."""

    subject: str
    issuer: str
    serial: str
    not_before: datetime.datetime
    not_after: datetime.datetime
    dns_names: tuple[str, ...]
    ip_addresses: tuple[str, ...]
    usage: str
    is_ca: bool
    sha256_fingerprint: str

    def as_dict(self) -> dict[str, Any]:
        out = self._asdict()
        out["not_before"] = iso_utc(self.not_before)
        out["not_after"] = iso_utc(self.not_after)
        out["dns_names"] = list(self.dns_names)
        out["ip_addresses"] = list(self.ip_addresses)
        return out


class IdentityParts(NamedTuple):
    """The parts of a Teleport identity file, in the order Teleport writes them."""

    private_key_pem: bytes
    ssh_cert: bytes
    tls_cert_pem: bytes
    ssh_ca_lines: tuple[bytes, ...]
    tls_ca_pems: tuple[bytes, ...]


def _require() -> None:
    if not HAS_CRYPTOGRAPHY:
        raise PkiError(
            "the Python library 'cryptography' is required: install it with "
            "'pip install cryptography' (" + CRYPTOGRAPHY_IMPORT_ERROR + ")"
        )


def utcnow() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc)


def iso_utc(value: datetime.datetime) -> str:
    """RFC 3339 in UTC, to the second: how the modules report expiry."""
    return value.astimezone(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def random_passphrase() -> str:
    """32 random bytes, hex encoded: what the Go plugin's configure uses."""
    return secrets.token_hex(32)


def generate_private_key(key_type: str = "rsa4096") -> Any:
    """Return a new private key of one of ``KEY_TYPES``."""
    _require()
    if key_type.startswith("rsa") and key_type[3:] in ("2048", "3072", "4096"):
        return rsa.generate_private_key(public_exponent=65537, key_size=int(key_type[3:]))
    if key_type == "ecdsa-p256":
        return ec.generate_private_key(ec.SECP256R1())
    if key_type == "ecdsa-p384":
        return ec.generate_private_key(ec.SECP384R1())
    raise PkiError(f"unknown key type {key_type!r}: use one of {', '.join(KEY_TYPES)}")


def key_type_of(key: Any) -> str:
    """The ``KEY_TYPES`` name of a private or public key."""
    _require()
    if isinstance(key, (rsa.RSAPrivateKey, rsa.RSAPublicKey)):
        return f"rsa{key.key_size}"
    if isinstance(key, (ec.EllipticCurvePrivateKey, ec.EllipticCurvePublicKey)):
        return {"secp256r1": "ecdsa-p256", "secp384r1": "ecdsa-p384"}.get(key.curve.name, "ecdsa")
    return "unknown"


def private_key_pem(key: Any, passphrase: str | bytes | None = None) -> bytes:
    """Serialise a key in the traditional OpenSSL PEM form.

    RSA keys become ``RSA PRIVATE KEY`` (PKCS#1) and EC keys ``EC PRIVATE KEY``,
    as the Go plugin writes. With a passphrase the PEM is encrypted with
    AES-256-CBC (``Proc-Type: 4,ENCRYPTED``), the form Fluentd's
    ``private_key_passphrase`` reads.
    """
    _require()
    encryption: Any = serialization.NoEncryption()
    if passphrase:
        secret = passphrase.encode() if isinstance(passphrase, str) else passphrase
        encryption = serialization.BestAvailableEncryption(secret)
    data: bytes = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, encryption
    )
    return data


def load_private_key(
    data: bytes, passphrase: str | bytes | None = None, source: str = "key"
) -> Any:
    _require()
    secret = passphrase.encode() if isinstance(passphrase, str) else passphrase
    try:
        return serialization.load_pem_private_key(data, password=secret or None)
    except TypeError as exc:
        raise PkiError(f"{source}: {exc}; give the key's passphrase") from exc
    except ValueError as exc:
        raise PkiError(f"{source}: not a usable PEM private key ({exc})") from exc


def cert_pem(cert: Any) -> bytes:
    _require()
    data: bytes = cert.public_bytes(serialization.Encoding.PEM)
    return data


def load_certificates(data: bytes, source: str = "certificate") -> list[Any]:
    """Every certificate in a PEM bundle; an error if there is none."""
    _require()
    try:
        certs = x509.load_pem_x509_certificates(data)
    except ValueError as exc:
        raise PkiError(f"{source}: no PEM certificate could be read ({exc})") from exc
    return list(certs)


def load_certificate(data: bytes, source: str = "certificate") -> Any:
    return load_certificates(data, source)[0]


def _name(common_name: str, organizations: tuple[str, ...] = ()) -> Any:
    attrs = [x509.NameAttribute(NameOID.COMMON_NAME, common_name)]
    attrs.extend(x509.NameAttribute(NameOID.ORGANIZATION_NAME, org) for org in organizations)
    return x509.Name(attrs)


def _serial() -> int:
    # Random, below 2**128 like the Go plugin, and never zero.
    return secrets.randbelow(2**128 - 1) + 1


def _hash_for(key: Any) -> Any:
    if isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.key_size > 256:
        return hashes.SHA384()
    return hashes.SHA256()


def issue_ca(
    key: Any,
    common_name: str = "CA",
    ttl: datetime.timedelta = datetime.timedelta(days=3650),
    organizations: tuple[str, ...] = (),
    not_before: datetime.datetime | None = None,
) -> Any:
    """A self-signed CA: certSign and cRLSign, path length 0."""
    _require()
    start = not_before or utcnow()
    name = _name(common_name, organizations)
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(_serial())
        .not_valid_before(start)
        .not_valid_after(start + ttl)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    )
    return builder.sign(key, _hash_for(key))


def issue_leaf(
    ca_cert: Any,
    ca_key: Any,
    public_key: Any,
    common_name: str,
    usage: str,
    dns_names: tuple[str, ...] = (),
    ip_addresses: tuple[str, ...] = (),
    ttl: datetime.timedelta = datetime.timedelta(days=365),
    organizations: tuple[str, ...] = (),
    not_before: datetime.datetime | None = None,
) -> Any:
    """A leaf certificate for ``usage`` "server", "client" or "server,client"."""
    _require()
    wanted = {u.strip() for u in usage.split(",") if u.strip()}
    if not wanted or wanted - {SERVER_AUTH, CLIENT_AUTH}:
        raise PkiError(f"usage {usage!r}: use 'server', 'client' or 'server,client'")
    start = not_before or utcnow()
    ekus = []
    if SERVER_AUTH in wanted:
        ekus.append(ExtendedKeyUsageOID.SERVER_AUTH)
    if CLIENT_AUTH in wanted:
        ekus.append(ExtendedKeyUsageOID.CLIENT_AUTH)
    rsa_key = isinstance(public_key, rsa.RSAPublicKey)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name, organizations))
        .issuer_name(ca_cert.subject)
        .public_key(public_key)
        .serial_number(_serial())
        .not_valid_before(start)
        .not_valid_after(start + ttl)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=rsa_key,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage(ekus), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_cert.public_key()),
            critical=False,
        )
    )
    sans: list[Any] = [x509.DNSName(name) for name in dns_names]
    try:
        sans.extend(x509.IPAddress(ipaddress.ip_address(ip)) for ip in ip_addresses)
    except ValueError as exc:
        raise PkiError(f"ip_addresses: {exc}") from exc
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    return builder.sign(ca_key, _hash_for(ca_key))


def cert_usage(cert: Any) -> str:
    """ "server", "client", "server,client", "ca" or "" from the certificate's extensions."""
    _require()
    try:
        if cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca:
            return "ca"
    except x509.ExtensionNotFound:
        pass
    try:
        ekus = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        return ""
    found = []
    if ExtendedKeyUsageOID.SERVER_AUTH in ekus:
        found.append(SERVER_AUTH)
    if ExtendedKeyUsageOID.CLIENT_AUTH in ekus:
        found.append(CLIENT_AUTH)
    return ",".join(found)


def cert_info(cert: Any) -> CertInfo:
    _require()
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        dns = tuple(san.get_values_for_type(x509.DNSName))
        ips = tuple(str(ip) for ip in san.get_values_for_type(x509.IPAddress))
    except x509.ExtensionNotFound:
        dns, ips = (), ()
    usage = cert_usage(cert)
    return CertInfo(
        subject=cert.subject.rfc4514_string(),
        issuer=cert.issuer.rfc4514_string(),
        serial=format(cert.serial_number, "x"),
        not_before=cert.not_valid_before_utc,
        not_after=cert.not_valid_after_utc,
        dns_names=dns,
        ip_addresses=ips,
        usage=usage,
        is_ca=usage == "ca",
        sha256_fingerprint=cert.fingerprint(hashes.SHA256()).hex(":"),
    )


def subject_names(cert: Any) -> tuple[str, tuple[str, ...]]:
    """The subject's common name and organizations, in order.

    Teleport puts the username in CN and the user's roles at signing time in
    the repeated O attribute, so this is "who and with which roles".
    """
    _require()
    common = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    orgs = cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)
    return (str(common[0].value) if common else "", tuple(str(org.value) for org in orgs))


def is_signed_by(cert: Any, ca_cert: Any) -> bool:
    """True when ``ca_cert`` issued ``cert`` (name and signature both check)."""
    _require()
    if cert.issuer != ca_cert.subject:
        return False
    try:
        cert.verify_directly_issued_by(ca_cert)
    except (ValueError, TypeError, Exception):  # InvalidSignature has no common base
        return False
    return True


def _public_der(key: Any) -> bytes:
    data: bytes = key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return data


def key_matches_cert(key: Any, cert: Any) -> bool:
    _require()
    return _public_der(key.public_key()) == _public_der(cert.public_key())


def public_key_fingerprint(key: Any) -> str:
    """SHA-256 of the public half: safe to show in a diff."""
    _require()
    public = key.public_key() if hasattr(key, "private_bytes") else key
    return hashlib.sha256(_public_der(public)).hexdigest()


# --- Teleport identity files -------------------------------------------------

_PEM_BEGIN = b"-----BEGIN "
_PEM_END = b"-----END "
_SSH_CERT_PREFIXES = (b"ssh-", b"ecdsa-sha2-", b"sk-")


def _pem_blocks(data: bytes) -> list[bytes]:
    blocks: list[bytes] = []
    current: list[bytes] | None = None
    for line in data.splitlines():
        stripped = line.strip()
        if stripped.startswith(_PEM_BEGIN):
            current = [stripped]
        elif current is not None:
            current.append(stripped)
            if stripped.startswith(_PEM_END):
                blocks.append(b"\n".join(current) + b"\n")
                current = None
    return blocks


def parse_identity_file(data: bytes, source: str = "identity file") -> IdentityParts:
    """Split an identity file the way Teleport's own parser does.

    The first PEM block is the private key, the second the TLS certificate,
    every later one a TLS CA; a line starting with an SSH certificate type is
    the SSH certificate and ``@cert-authority`` lines are SSH CAs.
    """
    blocks = _pem_blocks(data)
    if len(blocks) < 2:
        raise PkiError(
            f"{source}: not a Teleport identity file (expected a private key and a TLS "
            "certificate); write one with 'tctl auth sign --format=file' or tbot's identity output"
        )
    if b"PRIVATE KEY" not in blocks[0].split(b"\n", 1)[0]:
        raise PkiError(f"{source}: the first PEM block must be the private key")
    ssh_cert = b""
    ssh_cas: list[bytes] = []
    for line in data.splitlines():
        stripped = line.strip()
        if stripped.startswith(b"@cert-authority"):
            ssh_cas.append(stripped)
        elif stripped.startswith(_SSH_CERT_PREFIXES) and b"-cert-v01@openssh.com" in stripped:
            ssh_cert = stripped
    return IdentityParts(
        private_key_pem=blocks[0],
        ssh_cert=ssh_cert,
        tls_cert_pem=blocks[1],
        ssh_ca_lines=tuple(ssh_cas),
        tls_ca_pems=tuple(blocks[2:]),
    )


def build_identity_file(parts: IdentityParts) -> bytes:
    """Write the parts in Teleport's order: key, SSH cert, TLS cert, SSH CAs, TLS CAs."""
    out = [parts.private_key_pem.rstrip(b"\n") + b"\n"]
    if parts.ssh_cert:
        out.append(parts.ssh_cert.rstrip(b"\n") + b"\n")
    out.append(parts.tls_cert_pem.rstrip(b"\n") + b"\n")
    out.extend(line.rstrip(b"\n") + b"\n" for line in parts.ssh_ca_lines)
    out.extend(pem.rstrip(b"\n") + b"\n" for pem in parts.tls_ca_pems)
    return b"".join(out)


# --- files ---------------------------------------------------------------------


def write_file_atomic(path: str, data: bytes, mode: int = 0o600) -> None:
    """Write ``data`` to ``path`` through a temp file born with ``mode``.

    The temp file lives in the same directory and is renamed over the target,
    so readers see the old file or the new one and a secret is never readable
    by others, not even for an instant.
    """
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", dir=directory)
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
