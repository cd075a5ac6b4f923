#!/usr/bin/python
# Copyright: the teleport-event-handler authors
# Apache License 2.0 (see LICENSE)
# Ansible wants the imports after DOCUMENTATION, EXAMPLES and RETURN:
# ruff: noqa: E402

from __future__ import annotations

DOCUMENTATION = r"""
module: tctl_identity
short_description: Keep a Teleport identity file current with tctl auth sign
version_added: 0.1.0
description:
  - Keeps an identity file for a Teleport user (such as C(teleport-event-handler)) current with
    C(tctl auth sign --user=USER --format=file --out=PATH --ttl=TTL).
  - The file stays as it is while the TLS certificate inside it is for O(user), matches the
    file's private key, carries the user's current roles (see O(check_roles)) and has more than
    O(renew_before) left. Otherwise a new identity is signed and moved into place atomically,
    mode O(mode), so the forwarder never reads a partial file.
  - B(When to prefer tbot.) C(tctl auth sign) needs an identity allowed to impersonate the user
    and issues a certificate for a fixed TTL; a host that renews it must hold those admin
    credentials. For production, Teleport recommends Machine ID (C(tbot)) with an
    C(identity) output, which renews short-lived credentials continuously without admin rights
    on the host; grant the bot the role with M(teleport.event_handler.tctl_grant_role) and point
    the forwarder at tbot's identity file. Use this module where tbot cannot run, for demos,
    or to renew from a central admin host.
author:
  - Teleport event handler maintainers (@teleport-event-handler)
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
  - teleport.event_handler.tctl
attributes:
  check_mode:
    support: full
  diff_mode:
    support: full
    details: The diff shows the user, roles and expiry of the certificate, never the key.
  platform:
    platforms: posix
options:
  user:
    description:
      - The Teleport user the identity is for.
    type: str
    required: true
  path:
    description:
      - Where the identity file is kept. Its directory must exist.
    type: path
    required: true
    aliases: [dest, out]
  ttl:
    description:
      - Lifetime of a new identity, a Go duration such as V(12h) or V(8760h). Unless C(tctl)
        acts as the Auth Service's built-in admin (O(tctl_config) on the Auth Service host),
        Teleport caps it at the smallest C(max_session_ttl) of the roles the identity carries,
        without an error; the task warns when the capped identity is already within
        O(renew_before), as every run would then sign a new one.
    type: str
    default: 12h
  renew_before:
    description:
      - Renew when the identity has this little time left, a Go duration.
      - Defaults to a third of O(ttl).
    type: str
  check_roles:
    description:
      - Also renew when the roles in the certificate differ from the user's current roles (read
        with C(tctl get user/USER)), so that a role granted later takes effect.
    type: bool
    default: true
  force:
    description:
      - Sign a new identity even if the current one is fine.
    type: bool
    default: false
  owner:
    description:
      - Owner of the identity file (the user the forwarder runs as).
    type: str
  group:
    description:
      - Group of the identity file.
    type: str
  mode:
    description:
      - Mode of the identity file; it holds a private key.
      - A mode that gives other users (not the owner, not the group) read or write access is
        refused.
    type: raw
    default: '0600'
seealso:
  - module: teleport.event_handler.tctl_grant_role
  - module: teleport.event_handler.tctl_resource
"""

EXAMPLES = r"""
- name: Keep the event handler's identity valid for a year, renewed a month ahead
  teleport.event_handler.tctl_identity:
    user: teleport-event-handler
    path: /var/lib/teleport/plugins/event-handler/identity
    ttl: 8760h
    renew_before: 720h
    owner: teleport-event-handler
    tctl_config: /etc/teleport.yaml
"""

RETURN = r"""
path:
  description: The identity file.
  returned: success
  type: str
  sample: /var/lib/teleport/plugins/event-handler/identity
user:
  description: The user of the certificate in the file (after the task).
  returned: success
  type: str
  sample: teleport-event-handler
roles:
  description: The roles the certificate carries. Not known before signing in check mode.
  returned: success
  type: list
  elements: str
  sample: [teleport-event-handler]
not_after:
  description: When the identity's TLS certificate expires (UTC, RFC 3339). In check mode, when a
    new identity would be signed, the expected time.
  returned: success
  type: str
  sample: '2027-11-27T10:00:00Z'
reason:
  description: Why a new identity was signed; empty when the file was kept.
  returned: success
  type: str
  sample: the identity expires at 2026-11-28T10:00:00Z, within renew_before (4h)
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.teleport.event_handler.plugins.module_utils import _pki
from ansible_collections.teleport.event_handler.plugins.module_utils._duration import (
    DurationError,
    format_duration,
    parse_duration,
)
from ansible_collections.teleport.event_handler.plugins.module_utils._files import (
    secret_mode_problem,
    set_attributes,
)
from ansible_collections.teleport.event_handler.plugins.module_utils._grants import roles_of
from ansible_collections.teleport.event_handler.plugins.module_utils._identity import (
    IdentityError,
    describe,
    inspect_identity,
    sign_identity,
)
from ansible_collections.teleport.event_handler.plugins.module_utils._tctl import (
    TCTL_ARGUMENT_SPEC,
    TctlError,
    runner_from_module,
)


def main():
    argument_spec = dict(
        user=dict(type="str", required=True),
        path=dict(type="path", required=True, aliases=["dest", "out"]),
        ttl=dict(type="str", default="12h"),
        renew_before=dict(type="str"),
        check_roles=dict(type="bool", default=True),
        force=dict(type="bool", default=False),
        owner=dict(type="str"),
        group=dict(type="str"),
        mode=dict(type="raw", default="0600"),
    )
    argument_spec.update(TCTL_ARGUMENT_SPEC)
    module = AnsibleModule(argument_spec=argument_spec, supports_check_mode=True)
    params = module.params
    problem = secret_mode_problem(params["mode"], "mode", "the identity's private key")
    if problem:
        module.fail_json(msg=problem)
    if not _pki.HAS_CRYPTOGRAPHY:
        module.fail_json(
            msg="this module needs the Python library cryptography on the managed host",
            exception=_pki.CRYPTOGRAPHY_IMPORT_ERROR,
        )
    try:
        ttl = parse_duration(params["ttl"], "ttl")
        renew_before = (
            parse_duration(params["renew_before"], "renew_before")
            if params["renew_before"]
            else ttl / 3
        )
    except DurationError as exc:
        module.fail_json(msg=str(exc))
    if renew_before >= ttl:
        module.fail_json(
            msg=f"renew_before ({params['renew_before']}) must be shorter than "
            f"ttl ({params['ttl']}), "
            "or every run would sign a new identity"
        )
    path, user = params["path"], params["user"]
    now = _pki.utcnow()
    try:
        runner = runner_from_module(module)
        wanted_roles = None
        if params["check_roles"]:
            doc = runner.get("user", user)
            if doc is None:
                module.fail_json(
                    msg=f"user: the Teleport user {user!r} does not exist; create it first "
                    "(teleport.event_handler.tctl_resource) or fix the name"
                )
            wanted_roles = roles_of(doc)
        before = inspect_identity(path, user, renew_before, now, wanted_roles)
        reason = "force is set" if params["force"] else before.renew_reason
        after = before
        if reason and module.check_mode:
            after = before._replace(user=user, roles=wanted_roles or [], not_after=now + ttl)
        elif reason:
            after = sign_identity(runner, user, path, format_duration(ttl), 0o600)
            if after.not_after is not None and after.not_after - now <= renew_before:
                module.warn(
                    f"Teleport issued the identity for {user} until "
                    f"{_pki.iso_utc(after.not_after)}, shorter than ttl ({params['ttl']}) and "
                    f"within renew_before ({format_duration(renew_before)}), so every run will "
                    "sign a new one. Unless tctl runs as the Auth Service's admin (tctl_config "
                    "on the Auth host), Teleport caps the ttl at the smallest max_session_ttl of "
                    f"{user}'s roles: set ttl to at most that and renew_before shorter than ttl, "
                    "or raise max_session_ttl"
                )
    except (TctlError, IdentityError) as exc:
        module.fail_json(msg=str(exc))

    changed = bool(reason)
    if after.exists or not module.check_mode:
        changed = set_attributes(
            module, path, params["owner"], params["group"], params["mode"], changed
        )
    result = dict(changed=changed, path=path, reason=reason, **describe(after))
    if module._diff:
        result["diff"] = {
            "before": describe(before) if before.exists else {},
            "after": describe(after),
            "before_header": path,
            "after_header": path,
        }
    module.exit_json(**result)


if __name__ == "__main__":
    main()
