#!/usr/bin/python
# Copyright: the teleport-event-handler authors
# Apache License 2.0 (see LICENSE)
# Ansible wants the imports after DOCUMENTATION, EXAMPLES and RETURN:
# ruff: noqa: E402

from __future__ import annotations

DOCUMENTATION = r"""
module: tctl_resource
short_description: Make Teleport resources match a definition with tctl
version_added: 0.1.0
description:
  - Makes one or more Teleport resources (a role, a user, or any kind that C(tctl get) and
    C(tctl create) handle) match a definition, or removes them.
  - Compares only what the definition sets with C(tctl get KIND/NAME --format=json), so
    fields the server adds (C(metadata.revision), a user's C(created_by) and C(status), role
    defaults, normalised durations such as C(10h0m0s)) never cause a change.
  - Creates a missing resource with C(tctl create) and updates a differing one with
    C(tctl create -f), which replaces the whole resource with the definition.
  - SSO connectors (C(github), C(saml), C(oidc)) are read with C(--with-secrets) so that a
    definition carrying a secret compares equal; secret values are redacted from the result
    and the diff.
  - For users and bots, C(spec.roles) lists the roles they must have; roles granted elsewhere
    (with M(teleport.event_handler.tctl_grant_role), for example) are kept, so the two modules
    never undo each other. The same holds for the role mappings of SSO connectors
    (C(teams_to_roles), C(attributes_to_roles), C(claims_to_roles)); roles added to a mapping and
    mappings added whole elsewhere are kept. Remove a role with
    M(teleport.event_handler.tctl_grant_role) and
    O(teleport.event_handler.tctl_grant_role#module:state=absent).
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
    details: The diff shows only the fields the definition sets, with secrets redacted.
  platform:
    platforms: posix
options:
  definition:
    description:
      - The resource, as a mapping, a list of mappings, or YAML/JSON text (several YAML
        documents allowed), each with C(kind), C(version), C(metadata.name) and C(spec).
      - Resources are created in the order given and removed in reverse order.
      - Mutually exclusive with O(src) and O(kind).
    type: raw
  src:
    description:
      - A YAML or JSON file on the managed host holding the resources, such as the
        C(teleport-event-handler-role.yaml) of Teleport's guide.
    type: path
  kind:
    description:
      - With O(name) and O(state=absent), the kind of the resource to remove.
    type: str
  name:
    description:
      - With O(kind) and O(state=absent), the name of the resource to remove.
    type: str
  state:
    description:
      - V(present) creates or updates the resources; V(absent) removes them.
    type: str
    choices: [present, absent]
    default: present
seealso:
  - module: teleport.event_handler.tctl_grant_role
  - module: teleport.event_handler.tctl_identity
"""

EXAMPLES = r"""
- name: Let the event handler read the audit log
  teleport.event_handler.tctl_resource:
    definition:
      kind: role
      version: v5
      metadata:
        name: teleport-event-handler
      spec:
        allow:
          rules:
            - resources: [event, session]
              verbs: [list, read]

- name: Create the role and user from the file written by configure
  teleport.event_handler.tctl_resource:
    src: /etc/teleport-event-handler/teleport-event-handler-role.yaml
    tctl_config: /etc/teleport.yaml

- name: Remove the impersonator role
  teleport.event_handler.tctl_resource:
    kind: role
    name: teleport-event-handler-impersonator
    state: absent
"""

RETURN = r"""
resources:
  description: What happened to each resource, in the order given.
  returned: always
  type: list
  elements: dict
  contains:
    kind:
      description: The resource kind.
      type: str
      returned: always
      sample: role
    name:
      description: The resource name.
      type: str
      returned: always
      sample: teleport-event-handler
    action:
      description: V(created), V(updated), V(deleted) or V(unchanged).
      type: str
      returned: always
      sample: created
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.teleport.event_handler.plugins.module_utils._resources import (
    ResourceError,
    ensure_absent_by_name,
    ensure_resources,
    load_definitions,
    secret_values,
)
from ansible_collections.teleport.event_handler.plugins.module_utils._tctl import (
    TCTL_ARGUMENT_SPEC,
    TctlError,
    runner_from_module,
)


def main():
    argument_spec = dict(
        definition=dict(type="raw"),
        src=dict(type="path"),
        kind=dict(type="str"),
        name=dict(type="str"),
        state=dict(type="str", default="present", choices=["present", "absent"]),
    )
    argument_spec.update(TCTL_ARGUMENT_SPEC)
    module = AnsibleModule(
        argument_spec=argument_spec,
        mutually_exclusive=[("definition", "src", "kind"), ("definition", "src", "name")],
        required_together=[("kind", "name")],
        required_one_of=[("definition", "src", "kind")],
        supports_check_mode=True,
    )
    params = module.params
    if params["kind"] and params["state"] != "absent":
        module.fail_json(
            msg="kind and name: they only select a resource to remove; with state=present give "
            "definition or src"
        )
    try:
        documents = None
        if not params["kind"]:
            src_text = None
            source = "definition"
            if params["src"]:
                source = "src " + params["src"]
                try:
                    with open(params["src"], encoding="utf-8") as handle:
                        src_text = handle.read()
                except OSError as exc:
                    module.fail_json(msg=f"src: cannot read {params['src']} ({exc.strerror})")
            documents = load_definitions(params["definition"], src_text, source)
            # A definition may carry a connector's secrets: keep them out of every
            # output, the echo of the module's arguments at -vvv included.
            module.no_log_values.update(secret_values(documents))
        runner = runner_from_module(module)
        if documents is None:
            result = ensure_absent_by_name(
                runner, params["kind"], params["name"], module.check_mode
            )
        else:
            result = ensure_resources(runner, documents, params["state"], module.check_mode)
    except (TctlError, ResourceError) as exc:
        module.fail_json(msg=str(exc))
    diff = result.pop("diff")
    if module._diff:
        result["diff"] = diff
    module.exit_json(**result)


if __name__ == "__main__":
    main()
