# Copyright: the teleport-event-handler authors
# Apache License 2.0 (see LICENSE)
"""The Fluentd mutual-TLS bundle: a CA, a server and a client certificate.

The certificate profile is the one of the Go plugin's ``configure``: a CA
with certSign/cRLSign and path length 0, a server certificate (serverAuth)
and a client certificate (clientAuth) with the same DNS/IP SANs, random
128-bit serials, and the server key encrypted in the traditional OpenSSL PEM
form (AES-256-CBC) that Fluentd's ``private_key_passphrase`` reads.

Idempotency is semantic (:func:`plan_bundle`): a part is kept while its
certificate is signed by the CA, matches its key, has the wanted subject,
SANs, usage and key type, and has more than ``renew_before`` left. Only what
must change is renewed: a stale leaf is re-issued under the same CA; a stale
CA is rotated, which re-issues both leaves, and the old CA stays in the trust
bundle (until it expires) so that peers given the bundle accept old and new
certificates during a rollout.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import socket
from typing import TYPE_CHECKING, Any, NamedTuple

# This file is also the forwarder's ``teleport_event_handler.mtls`` (a symlink,
# like ``_pki.py``), so it takes ``_pki`` from whichever package it lives in.
if TYPE_CHECKING or not __name__.startswith("ansible_collections."):
    from teleport_event_handler import pki as _pki
else:
    from ansible_collections.teleport.event_handler.plugins.module_utils import _pki

__all__ = [
    "PARTS",
    "SECRET_FILES",
    "BundleError",
    "BundleSpec",
    "apply_plan",
    "bundle_paths",
    "describe_bundle",
    "load_bundle",
    "plan_bundle",
    "predicted_view",
    "remove_bundle",
    "resolve_ip_addresses",
]

PARTS = ("ca", "server", "client")


class BundleError(Exception):
    """A bundle that cannot be built as asked; the message says what to fix."""


class BundleSpec(NamedTuple):
    """What the bundle should look like (the module's options, parsed)."""

    directory: str
    key_type: str = "rsa4096"
    ttl: datetime.timedelta = datetime.timedelta(hours=87600)
    ca_ttl: datetime.timedelta = datetime.timedelta(hours=87600)
    renew_before: datetime.timedelta = datetime.timedelta(days=30)
    dns_names: tuple[str, ...] = ("localhost",)
    ip_addresses: tuple[str, ...] = ()
    ca_name: str = "ca"
    server_name: str = "server"
    client_name: str = "client"
    ca_common_name: str = "CA"
    server_common_name: str = "Server"
    client_common_name: str = "Client"
    passphrase: str | None = None
    trust_bundle_name: str = "ca-bundle"
    force: bool = False
    force_leaves: bool = False
    retire_old_cas: bool = False


def bundle_paths(spec: BundleSpec) -> dict[str, str]:
    """Every file of the bundle, by role; the stems follow the Go plugin's names."""
    join = os.path.join
    return {
        "ca_cert": join(spec.directory, spec.ca_name + ".crt"),
        "ca_key": join(spec.directory, spec.ca_name + ".key"),
        "server_cert": join(spec.directory, spec.server_name + ".crt"),
        "server_key": join(spec.directory, spec.server_name + ".key"),
        "client_cert": join(spec.directory, spec.client_name + ".crt"),
        "client_key": join(spec.directory, spec.client_name + ".key"),
        "passphrase": join(spec.directory, spec.server_name + ".pass"),
        "trust_bundle": join(spec.directory, spec.trust_bundle_name + ".crt"),
    }


# Files that hold secrets (written 0600 by default) versus public certificates.
SECRET_FILES = ("ca_key", "server_key", "client_key", "passphrase")


def resolve_ip_addresses(dns_names: tuple[str, ...]) -> tuple[str, ...]:
    """The addresses the names resolve to, like the Go plugin does when no IP is given."""
    found: list[str] = []
    for name in dns_names:
        if name.startswith("*."):
            continue
        try:
            infos = socket.getaddrinfo(name, None)
        except OSError as exc:
            raise BundleError(
                f"dns_names: {name!r} does not resolve ({exc}); fix the name, give "
                "ip_addresses, or set resolve_dns_names: false"
            ) from None
        for info in infos:
            address = str(info[4][0])
            if address not in found:
                found.append(address)
    return tuple(found)


class Loaded(NamedTuple):
    """The bundle as found on disk: parsed objects, or None with a reason."""

    certs: dict[str, Any]
    keys: dict[str, Any]
    problems: dict[str, str]
    stored_passphrase: str | None
    server_key_passphrase: str | None  # the passphrase that decrypted the server key
    trusted: list[Any]


def _read(path: str) -> bytes | None:
    try:
        with open(path, "rb") as handle:
            return handle.read()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise BundleError(f"cannot read {path} ({exc.strerror}); fix its permissions") from None


def load_bundle(spec: BundleSpec) -> Loaded:
    """Read every file of the bundle; a missing or unreadable part is a problem, not an error."""
    paths = bundle_paths(spec)
    certs: dict[str, Any] = {}
    keys: dict[str, Any] = {}
    problems: dict[str, str] = {}

    raw_pass = _read(paths["passphrase"])
    stored = raw_pass.decode("utf-8", "replace").strip() if raw_pass is not None else None
    server_pass: str | None = None

    for part in PARTS:
        cert_data = _read(paths[part + "_cert"])
        key_data = _read(paths[part + "_key"])
        if cert_data is None:
            problems[part] = f"{paths[part + '_cert']} does not exist"
            continue
        try:
            certs[part] = _pki.load_certificate(cert_data, source=paths[part + "_cert"])
        except _pki.PkiError as exc:
            problems[part] = str(exc)
            continue
        if key_data is None:
            # The certificate stays loaded: a CA rotated for a lost key stays trusted.
            problems[part] = f"{paths[part + '_key']} does not exist"
            continue
        if part != "server":
            try:
                keys[part] = _pki.load_private_key(key_data, source=paths[part + "_key"])
            except _pki.PkiError as exc:
                problems[part] = str(exc)
            continue
        # The server key is encrypted: try the wanted passphrase, then the stored one
        # (a changed passphrase only needs the key re-encrypted, not a new certificate).
        candidates = [p for p in (spec.passphrase, stored) if p]
        for candidate in dict.fromkeys(candidates):
            try:
                keys[part] = _pki.load_private_key(key_data, candidate, source=paths["server_key"])
            except _pki.PkiError:
                continue
            server_pass = candidate
            break
        else:
            problems[part] = f"{paths['server_key']} cannot be decrypted with " + (
                "the given passphrase"
                if candidates
                else f"a passphrase ({paths['passphrase']} does not exist)"
            )

    trusted: list[Any] = []
    bundle_data = _read(paths["trust_bundle"])
    if bundle_data:
        try:
            trusted = _pki.load_certificates(bundle_data, source=paths["trust_bundle"])
        except _pki.PkiError:
            trusted = []
    return Loaded(certs, keys, problems, stored, server_pass, trusted)


def _names(spec: BundleSpec) -> dict[str, str]:
    return {
        "ca": spec.ca_common_name,
        "server": spec.server_common_name,
        "client": spec.client_common_name,
    }


def _stale(cert: Any, now: datetime.datetime, renew_before: datetime.timedelta) -> str:
    not_after = cert.not_valid_after_utc
    if not_after <= now:
        return f"expired at {_pki.iso_utc(not_after)}"
    if not_after - now <= renew_before:
        return f"expires at {_pki.iso_utc(not_after)}, within renew_before"
    return ""


def _check_ca(spec: BundleSpec, loaded: Loaded, now: datetime.datetime) -> str:
    if "ca" in loaded.problems:
        return loaded.problems["ca"]
    cert, key = loaded.certs["ca"], loaded.keys["ca"]
    if not _pki.key_matches_cert(key, cert):
        return "the CA key does not match the CA certificate"
    if _pki.cert_usage(cert) != "ca":
        return "the CA certificate is not a CA"
    common, _orgs = _pki.subject_names(cert)
    if common != spec.ca_common_name:
        return f"the CA's common name is {common!r}, not {spec.ca_common_name!r}"
    if _pki.key_type_of(key) != spec.key_type:
        return f"the CA key is {_pki.key_type_of(key)}, not {spec.key_type}"
    return _stale(cert, now, spec.renew_before)


def _check_leaf(part: str, spec: BundleSpec, loaded: Loaded, now: datetime.datetime) -> str:
    if part in loaded.problems:
        return loaded.problems[part]
    cert, key = loaded.certs[part], loaded.keys[part]
    if not _pki.key_matches_cert(key, cert):
        return "the key does not match the certificate"
    if not _pki.is_signed_by(cert, loaded.certs["ca"]):
        return "the certificate is not signed by the current CA"
    if _pki.cert_usage(cert) != part:
        return f"the certificate's usage is {_pki.cert_usage(cert) or 'none'!r}, not {part!r}"
    common, _orgs = _pki.subject_names(cert)
    if common != _names(spec)[part]:
        return f"the common name is {common!r}, not {_names(spec)[part]!r}"
    info = _pki.cert_info(cert)
    if set(info.dns_names) != set(spec.dns_names):
        return f"the DNS names are {sorted(info.dns_names)}, not {sorted(spec.dns_names)}"
    if {_ip(a) for a in info.ip_addresses} != {_ip(a) for a in spec.ip_addresses}:
        return f"the IP addresses are {sorted(info.ip_addresses)}, not {sorted(spec.ip_addresses)}"
    if _pki.key_type_of(key) != spec.key_type:
        return f"the key is {_pki.key_type_of(key)}, not {spec.key_type}"
    return _stale(cert, now, spec.renew_before)


def _ip(text: str) -> str:
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        return text


class Plan(NamedTuple):
    """What must change, each as a reason ("" means keep)."""

    ca: str
    server: str
    client: str
    passphrase: str  # (re)write the passphrase file and re-encrypt the server key
    trust_bundle: str
    new_passphrase: str  # the passphrase the server key will carry

    @property
    def changed(self) -> bool:
        return any((self.ca, self.server, self.client, self.passphrase, self.trust_bundle))

    def reasons(self) -> list[str]:
        labels = (
            ("ca", self.ca),
            ("server", self.server),
            ("client", self.client),
            ("passphrase", self.passphrase),
            ("trust_bundle", self.trust_bundle),
        )
        return [f"{label}: {reason}" for label, reason in labels if reason]


def _fingerprint(cert: Any) -> str:
    return str(_pki.cert_info(cert).sha256_fingerprint)


def _kept_old_cas(loaded: Loaded, current_ca: Any, now: datetime.datetime) -> list[Any]:
    """CAs to keep trusting beside the current one: earlier CAs that are still valid."""
    seen = {_fingerprint(current_ca)} if current_ca is not None else set()
    kept = []
    candidates = list(loaded.trusted)
    if "ca" in loaded.certs:
        candidates.append(loaded.certs["ca"])
    for cert in candidates:
        fingerprint = _fingerprint(cert)
        if fingerprint in seen or _pki.cert_usage(cert) != "ca":
            continue
        if cert.not_valid_after_utc <= now:
            continue
        seen.add(fingerprint)
        kept.append(cert)
    return kept


def plan_bundle(spec: BundleSpec, loaded: Loaded, now: datetime.datetime) -> Plan:
    """Decide, from what is on disk, what must be regenerated and why."""
    # What would make apply_plan fail is found here, so check mode fails alike.
    if spec.key_type not in _pki.KEY_TYPES:
        raise BundleError(f"key_type: use one of {', '.join(_pki.KEY_TYPES)}")
    if not os.path.isdir(spec.directory):
        raise BundleError(f"path: the directory {spec.directory} does not exist; create it first")
    for address in spec.ip_addresses:
        try:
            ipaddress.ip_address(address)
        except ValueError:
            raise BundleError(
                f"ip_addresses: {address!r} is not an IPv4 or IPv6 address; fix it, or put "
                "a name in dns_names"
            ) from None
    force = "force is set" if spec.force else ""
    ca = force or _check_ca(spec, loaded, now)
    if ca:
        server = client = "the CA is being replaced"
    else:
        leaves = "force_leaves is set" if spec.force_leaves else ""
        server = leaves or _check_leaf("server", spec, loaded, now)
        client = leaves or _check_leaf("client", spec, loaded, now)
    if spec.retire_old_cas and (ca or server or client):
        raise BundleError(
            "retire_old_cas: the CA or a leaf is renewed in this run "
            f"({ca or server or client}), so hosts still hold leaves the old CA signed; "
            "retire old CAs in a later run, once every host has the new leaves (the "
            "event_handler role does this at the end of site.yml)"
        )

    wanted_pass = spec.passphrase or loaded.stored_passphrase or ""
    passphrase = ""
    if not wanted_pass:
        passphrase = "a new passphrase is generated"
        wanted_pass = _pki.random_passphrase()
        if not server:
            server = "no passphrase is stored for the server key"
    elif loaded.stored_passphrase != wanted_pass:
        passphrase = "the passphrase changed"
    elif not server and loaded.server_key_passphrase != wanted_pass:
        passphrase = "the server key is encrypted with another passphrase"

    if ca:
        bundle = "the CA is being replaced"
    else:
        old = [] if spec.retire_old_cas else _kept_old_cas(loaded, loaded.certs["ca"], now)
        wanted = {_fingerprint(c) for c in [loaded.certs["ca"], *old]}
        have = {_fingerprint(c) for c in loaded.trusted}
        if wanted == have:
            bundle = ""
        elif spec.retire_old_cas:
            bundle = "old CAs are retired: no leaf depends on them any more"
        else:
            bundle = "the trust bundle differs from the CA and earlier CAs still valid"
    return Plan(ca, server, client, passphrase, bundle, wanted_pass)


def apply_plan(spec: BundleSpec, loaded: Loaded, plan: Plan, now: datetime.datetime) -> None:
    """Write what the plan says must change; keys first, each file atomically and private."""
    paths = bundle_paths(spec)
    if not os.path.isdir(spec.directory):
        raise BundleError(f"path: the directory {spec.directory} does not exist; create it first")
    ca_cert, ca_key = loaded.certs.get("ca"), loaded.keys.get("ca")
    if plan.ca:
        ca_key = _pki.generate_private_key(spec.key_type)
        ca_cert = _pki.issue_ca(ca_key, spec.ca_common_name, spec.ca_ttl, not_before=now)
        _pki.write_file_atomic(paths["ca_key"], _pki.private_key_pem(ca_key), 0o600)
        _pki.write_file_atomic(paths["ca_cert"], _pki.cert_pem(ca_cert), 0o644)
    if plan.passphrase:
        _pki.write_file_atomic(paths["passphrase"], plan.new_passphrase.encode() + b"\n", 0o600)
    for part, reason in (("server", plan.server), ("client", plan.client)):
        secret = plan.new_passphrase if part == "server" else None
        if not reason:
            if part == "server" and plan.passphrase:
                # Same key and certificate; only the encryption of the key changes.
                data = _pki.private_key_pem(loaded.keys["server"], secret)
                _pki.write_file_atomic(paths["server_key"], data, 0o600)
            continue
        key = _pki.generate_private_key(spec.key_type)
        cert = _pki.issue_leaf(
            ca_cert,
            ca_key,
            key.public_key(),
            _names(spec)[part],
            part,
            dns_names=spec.dns_names,
            ip_addresses=spec.ip_addresses,
            ttl=spec.ttl,
            not_before=now,
        )
        _pki.write_file_atomic(paths[part + "_key"], _pki.private_key_pem(key, secret), 0o600)
        _pki.write_file_atomic(paths[part + "_cert"], _pki.cert_pem(cert), 0o644)
    if plan.trust_bundle:
        kept = [] if spec.retire_old_cas else _kept_old_cas(loaded, ca_cert, now)
        data = b"".join(_pki.cert_pem(cert) for cert in [ca_cert, *kept])
        _pki.write_file_atomic(paths["trust_bundle"], data, 0o644)


def remove_bundle(spec: BundleSpec, check_mode: bool) -> list[str]:
    """Remove every file of the bundle; return the paths that existed."""
    removed = []
    for path in bundle_paths(spec).values():
        if os.path.lexists(path):
            removed.append(path)
            if not check_mode:
                os.unlink(path)
    return removed


def describe_bundle(spec: BundleSpec) -> dict[str, Any]:
    """Subjects, SANs, expiry and fingerprints of what is on disk: the diff and return view."""
    paths = bundle_paths(spec)
    view: dict[str, Any] = {}
    for part in PARTS:
        data = _read(paths[part + "_cert"])
        if data is None:
            view[part] = None
            continue
        try:
            cert = _pki.load_certificate(data, source=paths[part + "_cert"])
        except _pki.PkiError:
            view[part] = {"error": "not a readable certificate"}
            continue
        info = _pki.cert_info(cert)
        view[part] = {
            "subject": info.subject,
            "issuer": info.issuer,
            "serial": info.serial,
            "dns_names": list(info.dns_names),
            "ip_addresses": list(info.ip_addresses),
            "not_after": _pki.iso_utc(info.not_after),
            "sha256_fingerprint": info.sha256_fingerprint,
            "public_key_sha256": _pki.public_key_fingerprint(cert.public_key()),
        }
    bundle = _read(paths["trust_bundle"])
    fingerprints: list[str] = []
    if bundle:
        try:
            fingerprints = [_fingerprint(c) for c in _pki.load_certificates(bundle)]
        except _pki.PkiError:
            fingerprints = []
    view["trust_bundle"] = fingerprints
    return view


def predicted_view(
    spec: BundleSpec, plan: Plan, before: dict[str, Any], now: datetime.datetime
) -> dict[str, Any]:
    """What check mode can tell about the result: new parts show their wanted subject and expiry."""
    after = dict(before)
    names = _names(spec)
    for part in PARTS:
        if not getattr(plan, part):
            continue
        ttl = spec.ca_ttl if part == "ca" else spec.ttl
        after[part] = {
            "subject": "CN=" + names[part],
            "issuer": "CN=" + spec.ca_common_name,
            "serial": "(new)",
            "dns_names": [] if part == "ca" else list(spec.dns_names),
            "ip_addresses": [] if part == "ca" else list(spec.ip_addresses),
            "not_after": _pki.iso_utc(now + ttl),
            "sha256_fingerprint": "(new)",
            "public_key_sha256": "(new)",
        }
    if plan.trust_bundle:
        after["trust_bundle"] = ["(new)"] + [f for f in before.get("trust_bundle", []) if f]
    return after
