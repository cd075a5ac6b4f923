# Copyright: the teleport-event-handler authors
# Apache License 2.0 (see LICENSE)
"""The Fluentd bundle's decisions: what is kept, what is renewed, and why."""

from __future__ import annotations

import datetime
import os
import stat

import pytest

from ansible_collections.teleport.event_handler.plugins.module_utils import _pki
from ansible_collections.teleport.event_handler.plugins.module_utils._mtls import (
    BundleSpec,
    apply_plan,
    bundle_paths,
    describe_bundle,
    load_bundle,
    plan_bundle,
)

HOUR = datetime.timedelta(hours=1)


def _spec(tmp_path, **kwargs):
    values = dict(
        directory=str(tmp_path),
        key_type="ecdsa-p256",
        ttl=1000 * HOUR,
        ca_ttl=2000 * HOUR,
        renew_before=100 * HOUR,
        dns_names=("localhost", "fluentd.example.com"),
        ip_addresses=("127.0.0.1",),
    )
    values.update(kwargs)
    return BundleSpec(**values)


def _converge(spec, now):
    loaded = load_bundle(spec)
    plan = plan_bundle(spec, loaded, now)
    if plan.changed:
        apply_plan(spec, loaded, plan, now)
    return plan


def _read(path):
    with open(path, "rb") as handle:
        return handle.read()


def _fingerprints(path):
    return [_pki.cert_info(c).sha256_fingerprint for c in _pki.load_certificates(_read(path))]


def test_first_run_builds_the_go_plugin_profile_then_nothing_changes(tmp_path):
    spec = _spec(tmp_path)
    now = _pki.utcnow()
    plan = _converge(spec, now)
    assert plan.changed and plan.ca and plan.server and plan.client and plan.passphrase
    paths = bundle_paths(spec)
    ca = _pki.load_certificate(_read(paths["ca_cert"]))
    server = _pki.load_certificate(_read(paths["server_cert"]))
    client = _pki.load_certificate(_read(paths["client_cert"]))
    assert _pki.cert_usage(ca) == "ca"
    assert _pki.cert_usage(server) == "server" and _pki.cert_usage(client) == "client"
    assert _pki.is_signed_by(server, ca) and _pki.is_signed_by(client, ca)
    assert _pki.subject_names(server) == ("Server", ())
    info = _pki.cert_info(server)
    assert set(info.dns_names) == {"localhost", "fluentd.example.com"}
    assert info.ip_addresses == ("127.0.0.1",)
    assert int(info.serial, 16) > 2**64  # random 128-bit serials
    # The server key is encrypted in the traditional form and opens with the stored passphrase.
    key_pem = _read(paths["server_key"])
    assert b"Proc-Type: 4,ENCRYPTED" in key_pem and b"AES-256-CBC" in key_pem
    passphrase = _read(paths["passphrase"]).decode().strip()
    assert len(passphrase) == 64
    key = _pki.load_private_key(key_pem, passphrase)
    assert _pki.key_matches_cert(key, server)
    for name in ("ca_key", "server_key", "client_key", "passphrase"):
        assert stat.S_IMODE(os.stat(paths[name]).st_mode) == 0o600
    assert _fingerprints(paths["trust_bundle"]) == [_pki.cert_info(ca).sha256_fingerprint]

    again = plan_bundle(spec, load_bundle(spec), now)
    assert not again.changed and again.reasons() == []


def test_a_leaf_inside_renew_before_is_renewed_alone_under_the_same_ca(tmp_path):
    spec = _spec(tmp_path)
    start = _pki.utcnow()
    _converge(spec, start)
    before = describe_bundle(spec)
    later = start + 950 * HOUR  # leaves (1000 h) are stale, the CA (2000 h) is not
    plan = _converge(spec, later)
    assert not plan.ca and not plan.passphrase and not plan.trust_bundle
    assert "within renew_before" in plan.server and "within renew_before" in plan.client
    after = describe_bundle(spec)
    assert after["ca"] == before["ca"]
    assert after["server"]["sha256_fingerprint"] != before["server"]["sha256_fingerprint"]
    assert after["server"]["issuer"] == before["ca"]["subject"]
    assert not plan_bundle(spec, load_bundle(spec), later).changed


def test_a_replaced_client_certificate_is_renewed_and_nothing_else(tmp_path):
    spec = _spec(tmp_path)
    now = _pki.utcnow()
    _converge(spec, now)
    paths = bundle_paths(spec)
    # A client certificate from another CA (e.g. copied from the wrong host).
    other_key = _pki.generate_private_key("ecdsa-p256")
    other_ca = _pki.issue_ca(other_key, "CA")
    client_key = _pki.load_private_key(_read(paths["client_key"]))
    foreign = _pki.issue_leaf(
        other_ca,
        other_key,
        client_key.public_key(),
        "Client",
        "client",
        dns_names=spec.dns_names,
        ip_addresses=spec.ip_addresses,
    )
    _pki.write_file_atomic(paths["client_cert"], _pki.cert_pem(foreign), 0o644)
    plan = plan_bundle(spec, load_bundle(spec), now)
    assert plan.reasons() == ["client: the certificate is not signed by the current CA"]


def test_new_sans_renew_the_leaves_only(tmp_path):
    spec = _spec(tmp_path)
    now = _pki.utcnow()
    _converge(spec, now)
    wider = spec._replace(dns_names=(*spec.dns_names, "fluentd.internal"))
    plan = plan_bundle(wider, load_bundle(wider), now)
    assert not plan.ca and plan.server.startswith("the DNS names are") and plan.client


def test_a_stale_ca_rotates_and_the_old_ca_stays_in_the_bundle(tmp_path):
    spec = _spec(tmp_path)
    start = _pki.utcnow()
    _converge(spec, start)
    paths = bundle_paths(spec)
    old_ca = _pki.cert_info(_pki.load_certificate(_read(paths["ca_cert"]))).sha256_fingerprint
    later = start + 1950 * HOUR  # the CA is inside renew_before but still valid
    plan = _converge(spec, later)
    assert "within renew_before" in plan.ca
    assert plan.server == plan.client == "the CA is being replaced"
    new_ca_cert = _pki.load_certificate(_read(paths["ca_cert"]))
    new_ca = _pki.cert_info(new_ca_cert).sha256_fingerprint
    assert new_ca != old_ca
    assert _fingerprints(paths["trust_bundle"]) == [new_ca, old_ca]
    assert _pki.is_signed_by(_pki.load_certificate(_read(paths["server_cert"])), new_ca_cert)
    assert not plan_bundle(spec, load_bundle(spec), later).changed
    # Once the old CA has expired, it leaves the bundle.
    expired = start + 2001 * HOUR
    plan = plan_bundle(spec, load_bundle(spec), expired)
    assert plan.reasons() == [
        "trust_bundle: the trust bundle differs from the CA and earlier CAs still valid"
    ]
    apply_plan(spec, load_bundle(spec), plan, expired)
    assert _fingerprints(paths["trust_bundle"]) == [new_ca]


def test_a_new_passphrase_re_encrypts_the_key_and_keeps_the_certificate(tmp_path):
    spec = _spec(tmp_path, passphrase="first passphrase")
    now = _pki.utcnow()
    _converge(spec, now)
    paths = bundle_paths(spec)
    cert_before = _read(paths["server_cert"])
    changed = spec._replace(passphrase="second passphrase")
    plan = _converge(changed, now)
    assert plan.reasons() == ["passphrase: the passphrase changed"]
    assert _read(paths["server_cert"]) == cert_before
    key = _pki.load_private_key(_read(paths["server_key"]), "second passphrase")
    assert _pki.key_matches_cert(key, _pki.load_certificate(cert_before))
    with pytest.raises(_pki.PkiError):
        _pki.load_private_key(_read(paths["server_key"]), "first passphrase")
    assert not plan_bundle(changed, load_bundle(changed), now).changed


def test_a_lost_passphrase_file_renews_the_server_part_only(tmp_path):
    spec = _spec(tmp_path)
    now = _pki.utcnow()
    _converge(spec, now)
    os.unlink(bundle_paths(spec)["passphrase"])
    plan = plan_bundle(spec, load_bundle(spec), now)
    assert not plan.ca and not plan.client
    assert plan.server and plan.passphrase == "a new passphrase is generated"


def test_another_key_type_renews_everything(tmp_path):
    spec = _spec(tmp_path)
    now = _pki.utcnow()
    _converge(spec, now)
    plan = plan_bundle(spec._replace(key_type="ecdsa-p384"), load_bundle(spec), now)
    assert plan.ca == "the CA key is ecdsa-p256, not ecdsa-p384"
    assert plan.server and plan.client


def test_force_renews_everything(tmp_path):
    spec = _spec(tmp_path)
    now = _pki.utcnow()
    _converge(spec, now)
    plan = plan_bundle(spec._replace(force=True), load_bundle(spec), now)
    assert plan.ca == "force is set" and plan.server and plan.client


def test_a_ca_rotated_for_a_lost_key_stays_trusted_without_a_bundle_file(tmp_path):
    # Material made before the trust bundle existed (the Go plugin's configure
    # writes none), then the CA key went missing: the CA must rotate, and the
    # old CA, still valid and trusted by every peer, stays in the new bundle.
    spec = _spec(tmp_path)
    now = _pki.utcnow()
    _converge(spec, now)
    paths = bundle_paths(spec)
    old_ca = _fingerprints(paths["ca_cert"])[0]
    os.unlink(paths["ca_key"])
    os.unlink(paths["trust_bundle"])
    plan = _converge(spec, now)
    assert plan.ca == f"{paths['ca_key']} does not exist"
    new_ca = _fingerprints(paths["ca_cert"])[0]
    assert _fingerprints(paths["trust_bundle"]) == [new_ca, old_ca]
