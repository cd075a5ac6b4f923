#!/usr/bin/python
# Copyright: the teleport-event-handler authors
# Apache License 2.0 (see LICENSE)
# Ansible wants the imports after DOCUMENTATION, EXAMPLES and RETURN:
# ruff: noqa: E402

from __future__ import annotations

DOCUMENTATION = r"""
module: tctl_grant_role
short_description: Grant Teleport roles to a user, a bot or an SSO mapping without clobbering
version_added: 0.1.0
description:
  - Adds roles to what a holder already has, keeping its other roles, or removes them with
    O(state=absent). The holder is one of
  - a local user (O(user)), updated with C(tctl users update --set-roles) and the user's
    current roles plus the new ones;
  - a Machine ID bot (O(bot)), updated with C(tctl bots update --add-roles), so that it can
    issue credentials for the role;
  - one mapping of an SSO connector (O(connector_kind) and O(connector_name)), that is GitHub
    C(teams_to_roles), SAML C(attributes_to_roles) or OIDC C(claims_to_roles), as Teleport's
    guide does by hand. The connector is read with C(tctl get --with-secrets) and written back
    with C(tctl create -f); it never appears in the result, the diff or a file.
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
    details: The diff shows the holder's (or the mapping's) roles before and after.
  platform:
    platforms: posix
options:
  roles:
    description:
      - The roles to grant (or, with O(state=absent), to take away).
    type: list
    elements: str
    required: true
    aliases: [role]
  user:
    description:
      - A local Teleport user.
    type: str
  bot:
    description:
      - A Machine ID bot.
    type: str
  connector_kind:
    description:
      - The kind of SSO connector whose mapping gets the roles.
    type: str
    choices: [github, saml, oidc]
  connector_name:
    description:
      - The name of the SSO connector.
    type: str
  mapping:
    description:
      - Selects the connector's mapping.
      - For V(github), C(organization) and C(team).
      - For V(saml), C(name) (the attribute) and C(value).
      - For V(oidc), C(claim) and C(value).
    type: dict
  create_mapping:
    description:
      - Add a mapping with the roles when the connector has none that matches O(mapping).
        When false, a missing mapping is an error.
    type: bool
    default: true
  state:
    description:
      - V(present) adds the roles; V(absent) removes them.
      - V(absent) fails rather than take away the last role of a user (Teleport refuses a user
        without roles) or of a bot (C(tctl bots update --set-roles) ignores an empty list, so
        the bot would keep it).
    type: str
    choices: [present, absent]
    default: present
notes:
  - Users of an SSO connector get the new role at their next login; a local user's existing
    certificates keep their roles until they expire (sign in again, or renew an identity with
    M(teleport.event_handler.tctl_identity)).
seealso:
  - module: teleport.event_handler.tctl_resource
"""

EXAMPLES = r"""
- name: Let my user impersonate the event handler
  teleport.event_handler.tctl_grant_role:
    user: alice
    roles: [teleport-event-handler-impersonator]

- name: Let the Machine ID bot issue the event handler's credentials
  teleport.event_handler.tctl_grant_role:
    bot: my-bot
    roles: [teleport-event-handler]

- name: Give the admins team of GitHub the impersonator role
  teleport.event_handler.tctl_grant_role:
    connector_kind: github
    connector_name: github
    mapping:
      organization: octocats
      team: admins
    roles: [teleport-event-handler-impersonator]

- name: Same for an OIDC group claim
  teleport.event_handler.tctl_grant_role:
    connector_kind: oidc
    connector_name: myoidc
    mapping:
      claim: groups
      value: my-group
    roles: [teleport-event-handler-impersonator]
"""

RETURN = r"""
roles:
  description: The holder's (or the mapping's) roles after the task.
  returned: success
  type: list
  elements: str
  sample: [access, teleport-event-handler-impersonator]
added:
  description: Roles this task added.
  returned: success
  type: list
  elements: str
  sample: [teleport-event-handler-impersonator]
removed:
  description: Roles this task removed.
  returned: success
  type: list
  elements: str
  sample: []
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.teleport.event_handler.plugins.module_utils._grants import (
    GrantError,
    ensure_grant,
)
from ansible_collections.teleport.event_handler.plugins.module_utils._tctl import (
    TCTL_ARGUMENT_SPEC,
    TctlError,
    runner_from_module,
)


def main():
    argument_spec = dict(
        roles=dict(type="list", elements="str", required=True, aliases=["role"]),
        user=dict(type="str"),
        bot=dict(type="str"),
        connector_kind=dict(type="str", choices=["github", "saml", "oidc"]),
        connector_name=dict(type="str"),
        mapping=dict(type="dict"),
        create_mapping=dict(type="bool", default=True),
        state=dict(type="str", default="present", choices=["present", "absent"]),
    )
    argument_spec.update(TCTL_ARGUMENT_SPEC)
    module = AnsibleModule(
        argument_spec=argument_spec,
        mutually_exclusive=[("user", "bot", "connector_kind")],
        required_one_of=[("user", "bot", "connector_kind")],
        required_together=[("connector_kind", "connector_name", "mapping")],
        supports_check_mode=True,
    )
    params = module.params
    try:
        result = ensure_grant(
            runner_from_module(module),
            params["roles"],
            state=params["state"],
            user=params["user"],
            bot=params["bot"],
            connector_kind=params["connector_kind"],
            connector_name=params["connector_name"],
            mapping=params["mapping"],
            create_mapping=params["create_mapping"],
            check_mode=module.check_mode,
        )
    except (TctlError, GrantError) as exc:
        module.fail_json(msg=str(exc))
    diff = result.pop("diff")
    if module._diff:
        result["diff"] = diff
    module.exit_json(**result)


if __name__ == "__main__":
    main()
