#!/usr/bin/python
# Copyright: the teleport-event-handler authors
# Apache License 2.0 (see LICENSE)
# Ansible wants the imports after DOCUMENTATION, EXAMPLES and RETURN:
# ruff: noqa: E402

from __future__ import annotations

DOCUMENTATION = r"""
module: fluentd_mtls
short_description: Maintain the mutual-TLS bundle between the event handler and Fluentd
version_added: 0.1.0
description:
  - Keeps, in one directory, what Fluentd's C(in_http) and the event handler need for mutual
    TLS, with the certificate profile of the Go plugin's C(configure) command
  - a CA (certificate and key; certSign and cRLSign, path length 0);
  - a server certificate (serverAuth) and its key, encrypted in the traditional OpenSSL PEM form
    with AES-256-CBC, which Fluentd's C(private_key_passphrase) reads, and the passphrase;
  - a client certificate (clientAuth) and key for the forwarder;
  - a trust bundle holding the current CA and earlier CAs that are still valid.
  - File names follow the Go plugin (C(ca.crt), C(ca.key), C(server.crt), C(server.key),
    C(client.crt), C(client.key)), plus C(server.pass) and C(ca-bundle.crt).
  - Safe to run every day. Nothing changes while each certificate is signed by the CA, matches
    its key, has the wanted subject, SANs, usage and key type, and has more than
    O(renew_before) left. Otherwise only what must change is renewed. A stale leaf is
    re-issued under the same CA. A stale CA is rotated, which re-issues both leaves; the old
    CA stays in the trust bundle so that peers configured with the bundle accept both during a
    rollout.
author:
  - Teleport event handler maintainers (@teleport-event-handler)
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
attributes:
  check_mode:
    support: full
  diff_mode:
    support: full
    details: The diff shows subjects, SANs, expiry and fingerprints; never key material.
  platform:
    platforms: posix
requirements:
  - cryptography >= 42 (Python library, on the managed host)
options:
  path:
    description:
      - The directory of the bundle. It must exist.
    type: path
    required: true
  state:
    description:
      - V(present) keeps the bundle current; V(absent) removes its files.
    type: str
    choices: [present, absent]
    default: present
  key_type:
    description:
      - Type of every key. RSA 4096 is the Go plugin's default; ECDSA keys make faster
        handshakes.
      - Changing it renews the whole bundle.
    type: str
    choices: [rsa2048, rsa3072, rsa4096, ecdsa-p256, ecdsa-p384]
    default: rsa4096
  ttl:
    description:
      - Lifetime of new server and client certificates, a Go duration.
    type: str
    default: 87600h
  ca_ttl:
    description:
      - Lifetime of a new CA, a Go duration. Defaults to O(ttl).
    type: str
  renew_before:
    description:
      - Renew a certificate that has this little time left, a Go duration.
    type: str
    default: 720h
  dns_names:
    description:
      - DNS names in the server and client certificates (the Go plugin puts the same SANs in
        both). The forwarder's Fluentd URL must use one of them.
    type: list
    elements: str
    default: [localhost]
  ip_addresses:
    description:
      - IP addresses in the server and client certificates.
    type: list
    elements: str
    default: []
  resolve_dns_names:
    description:
      - When O(ip_addresses) is empty, add the addresses O(dns_names) resolve to, as the Go
        plugin does. Off by default so that a run never depends on DNS.
    type: bool
    default: false
  ca_name:
    description:
      - File name stem of the CA.
    type: str
    default: ca
  server_name:
    description:
      - File name stem of the server certificate, key and passphrase.
    type: str
    default: server
  client_name:
    description:
      - File name stem of the client certificate and key.
    type: str
    default: client
  trust_bundle_name:
    description:
      - File name stem of the trust bundle.
    type: str
    default: ca-bundle
  ca_common_name:
    description:
      - Subject common name of the CA.
    type: str
    default: CA
  server_common_name:
    description:
      - Subject common name of the server certificate.
    type: str
    default: Server
  client_common_name:
    description:
      - Subject common name of the client certificate.
    type: str
    default: Client
  passphrase:
    description:
      - The passphrase of the server key. When unset, the stored passphrase is kept, or a random
        one (32 bytes, hex) is generated and stored in C(server.pass).
      - Changing it re-encrypts the server key; the certificate stays.
    type: str
  force:
    description:
      - Renew everything, the CA included. The old CA stays in the trust bundle (until it expires
        or O(retire_old_cas)), so hosts that still hold leaves it signed keep working.
    type: bool
    default: false
  force_leaves:
    description:
      - Re-issue the server and client certificates and keys from the current CA (a leaf-only
        rotation); the CA and the trust bundle stay.
    type: bool
    default: false
  retire_old_cas:
    description:
      - Keep only the current CA in the trust bundle (stage 3 of a CA rotation), dropping earlier
        CAs that are still valid.
      - Use it once every host holds leaves the current CA signed. It fails when the CA or a leaf
        would be renewed in the same run, since hosts would still hold leaves of the old CA.
    type: bool
    default: false
  owner:
    description:
      - Owner of every file of the bundle.
    type: str
  group:
    description:
      - Group of every file of the bundle (for example Fluentd's group).
    type: str
  key_mode:
    description:
      - Mode of the key files and the passphrase file.
      - A mode that gives other users (not the owner, not the group) read or write access is
        refused, since the files hold private keys.
    type: raw
    default: '0600'
  cert_mode:
    description:
      - Mode of the certificate files and the trust bundle.
    type: raw
    default: '0644'
notes:
  - Point Fluentd's C(ca_path) and the forwarder's C(ca) at the trust bundle so that a CA
    rotation does not break either side while the other still has the old material.
seealso:
  - name: Teleport's guide to forwarding audit events with Fluentd
    description: The manual steps this module replaces.
    link: https://goteleport.com/docs/management/export-audit-events/fluentd/
"""

EXAMPLES = r"""
- name: Keep the Fluentd mTLS bundle current
  teleport.event_handler.fluentd_mtls:
    path: /etc/fluentd/certs
    dns_names: [fluentd.example.com]
    key_type: ecdsa-p256
    ttl: 8760h
    ca_ttl: 87600h
    group: fluent
    key_mode: '0640'
  register: fluentd_tls

- name: Show when the server certificate expires
  ansible.builtin.debug:
    msg: "{{ fluentd_tls.not_after.server }}"
"""

RETURN = r"""
files:
  description: The path of every file of the bundle.
  returned: always
  type: dict
  contains:
    ca_cert:
      description: The CA certificate.
      type: str
      returned: always
      sample: /etc/fluentd/certs/ca.crt
    ca_key:
      description: The CA key.
      type: str
      returned: always
      sample: /etc/fluentd/certs/ca.key
    server_cert:
      description: The server certificate.
      type: str
      returned: always
      sample: /etc/fluentd/certs/server.crt
    server_key:
      description: The encrypted server key.
      type: str
      returned: always
      sample: /etc/fluentd/certs/server.key
    client_cert:
      description: The client certificate.
      type: str
      returned: always
      sample: /etc/fluentd/certs/client.crt
    client_key:
      description: The client key.
      type: str
      returned: always
      sample: /etc/fluentd/certs/client.key
    passphrase:
      description: The file holding the server key's passphrase.
      type: str
      returned: always
      sample: /etc/fluentd/certs/server.pass
    trust_bundle:
      description: The current CA and earlier CAs still valid.
      type: str
      returned: always
      sample: /etc/fluentd/certs/ca-bundle.crt
not_after:
  description: Expiry (UTC, RFC 3339) of each certificate after the task; in check mode, the
    expected expiry of a certificate that would be renewed.
  returned: when O(state=present)
  type: dict
  contains:
    ca:
      description: Expiry of the CA.
      type: str
      returned: always
      sample: '2036-11-25T10:00:00Z'
    server:
      description: Expiry of the server certificate.
      type: str
      returned: always
      sample: '2036-11-25T10:00:00Z'
    client:
      description: Expiry of the client certificate.
      type: str
      returned: always
      sample: '2036-11-25T10:00:00Z'
reasons:
  description: Why each part changed; empty when nothing did.
  returned: always
  type: list
  elements: str
  sample: ['client: expires at 2026-12-01T00:00:00Z, within renew_before']
renewed:
  description: The parts that were (or in check mode would be) renewed, among V(ca),
    V(server), V(client), V(passphrase) and V(trust_bundle).
  returned: always
  type: list
  elements: str
  sample: [client]
"""

import os

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.teleport.event_handler.plugins.module_utils import _pki
from ansible_collections.teleport.event_handler.plugins.module_utils._duration import (
    DurationError,
    parse_duration,
)
from ansible_collections.teleport.event_handler.plugins.module_utils._files import (
    secret_mode_problem,
    set_attributes,
)
from ansible_collections.teleport.event_handler.plugins.module_utils._mtls import (
    SECRET_FILES,
    BundleError,
    BundleSpec,
    apply_plan,
    bundle_paths,
    describe_bundle,
    load_bundle,
    plan_bundle,
    predicted_view,
    remove_bundle,
    resolve_ip_addresses,
)


def _spec(module):
    params = module.params
    try:
        ttl = parse_duration(params["ttl"], "ttl")
        ca_ttl = parse_duration(params["ca_ttl"], "ca_ttl") if params["ca_ttl"] else ttl
        renew_before = parse_duration(params["renew_before"], "renew_before")
    except DurationError as exc:
        module.fail_json(msg=str(exc))
    if renew_before >= ttl or renew_before >= ca_ttl:
        module.fail_json(
            msg="renew_before must be shorter than ttl and ca_ttl, or every run would renew"
        )
    dns_names = tuple(params["dns_names"])
    ip_addresses = tuple(params["ip_addresses"])
    if params["resolve_dns_names"] and not ip_addresses:
        ip_addresses = resolve_ip_addresses(dns_names)
    return BundleSpec(
        directory=params["path"],
        key_type=params["key_type"],
        ttl=ttl,
        ca_ttl=ca_ttl,
        renew_before=renew_before,
        dns_names=dns_names,
        ip_addresses=ip_addresses,
        ca_name=params["ca_name"],
        server_name=params["server_name"],
        client_name=params["client_name"],
        ca_common_name=params["ca_common_name"],
        server_common_name=params["server_common_name"],
        client_common_name=params["client_common_name"],
        passphrase=params["passphrase"],
        trust_bundle_name=params["trust_bundle_name"],
        force=params["force"],
        force_leaves=params["force_leaves"],
        retire_old_cas=params["retire_old_cas"],
    )


def main():
    module = AnsibleModule(
        argument_spec=dict(
            path=dict(type="path", required=True),
            state=dict(type="str", default="present", choices=["present", "absent"]),
            key_type=dict(type="str", default="rsa4096", choices=list(_pki.KEY_TYPES)),
            ttl=dict(type="str", default="87600h"),
            ca_ttl=dict(type="str"),
            renew_before=dict(type="str", default="720h"),
            dns_names=dict(type="list", elements="str", default=["localhost"]),
            ip_addresses=dict(type="list", elements="str", default=[]),
            resolve_dns_names=dict(type="bool", default=False),
            ca_name=dict(type="str", default="ca"),
            server_name=dict(type="str", default="server"),
            client_name=dict(type="str", default="client"),
            trust_bundle_name=dict(type="str", default="ca-bundle"),
            ca_common_name=dict(type="str", default="CA"),
            server_common_name=dict(type="str", default="Server"),
            client_common_name=dict(type="str", default="Client"),
            passphrase=dict(type="str", no_log=True),
            force=dict(type="bool", default=False),
            force_leaves=dict(type="bool", default=False),
            retire_old_cas=dict(type="bool", default=False),
            owner=dict(type="str"),
            group=dict(type="str"),
            key_mode=dict(type="raw", default="0600", no_log=False),
            cert_mode=dict(type="raw", default="0644"),
        ),
        supports_check_mode=True,
    )
    params = module.params
    problem = secret_mode_problem(
        params["key_mode"], "key_mode", "the private keys and the key passphrase"
    )
    if problem:
        module.fail_json(msg=problem)
    if not _pki.HAS_CRYPTOGRAPHY:
        module.fail_json(
            msg="this module needs the Python library cryptography on the managed host",
            exception=_pki.CRYPTOGRAPHY_IMPORT_ERROR,
        )
    try:
        spec = _spec(module)
        paths = bundle_paths(spec)
        before = describe_bundle(spec)
        if params["state"] == "absent":
            removed = remove_bundle(spec, module.check_mode)
            result = dict(
                changed=bool(removed),
                files=paths,
                reasons=[f"removed {path}" for path in removed],
                renewed=[],
            )
            if module._diff:
                result["diff"] = {"before": before, "after": {}}
            module.exit_json(**result)

        now = _pki.utcnow()
        loaded = load_bundle(spec)
        plan = plan_bundle(spec, loaded, now)
        if plan.changed and not module.check_mode:
            apply_plan(spec, loaded, plan, now)
            after = describe_bundle(spec)
        else:
            after = predicted_view(spec, plan, before, now)
    except (BundleError, _pki.PkiError) as exc:
        module.fail_json(msg=str(exc))

    changed = plan.changed
    for name, path in paths.items():
        # In check mode a file that would be created has no attributes to compare yet.
        if os.path.exists(path):
            mode = params["key_mode"] if name in SECRET_FILES else params["cert_mode"]
            changed = set_attributes(module, path, params["owner"], params["group"], mode, changed)
    renewed = [
        part
        for part in ("ca", "server", "client", "passphrase", "trust_bundle")
        if getattr(plan, part)
    ]
    result = dict(
        changed=changed,
        files=paths,
        not_after={
            part: (after.get(part) or {}).get("not_after") for part in ("ca", "server", "client")
        },
        reasons=plan.reasons(),
        renewed=renewed,
    )
    if module._diff:
        result["diff"] = {"before": before, "after": after}
    module.exit_json(**result)


if __name__ == "__main__":
    main()
