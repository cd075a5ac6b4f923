# Copyright: the teleport-event-handler authors
# Apache License 2.0 (see LICENSE)
"""Grant (or revoke) Teleport roles without clobbering the roles already held.

Three holders, as Teleport's guide describes them:

* a local user: read ``user/NAME``, then ``tctl users update --set-roles``
  with the user's roles plus the new ones;
* a Machine ID bot: ``tctl bots update --add-roles`` (which keeps the bot's
  other roles), ``--set-roles`` to take roles away; tctl ignores an empty
  ``--set-roles``, so a bot's last role cannot be taken away here;
* an SSO connector mapping (GitHub ``teams_to_roles``, SAML
  ``attributes_to_roles``, OIDC ``claims_to_roles``): read the connector with
  ``--with-secrets`` (so that writing it back keeps its secrets), change only
  the roles of the one mapping, write it back with ``tctl create -f``. The
  connector document never leaves this module: results and diffs show only
  the mapping.
"""

from __future__ import annotations

import copy
from typing import Any, Dict, List, Optional, Sequence, Tuple

from ansible_collections.teleport.event_handler.plugins.module_utils._tctl import TctlRunner

__all__ = ["MAPPING_FIELDS", "GrantError", "ensure_grant", "merge_roles", "roles_of"]

# Connector kind -> (spec key of its role mappings, the fields that select one mapping).
MAPPING_FIELDS: Dict[str, Tuple[str, Tuple[str, ...]]] = {
    "github": ("teams_to_roles", ("organization", "team")),
    "saml": ("attributes_to_roles", ("name", "value")),
    "oidc": ("claims_to_roles", ("claim", "value")),
}


class GrantError(Exception):
    """A grant that cannot be made as asked; the message says what to fix."""


def merge_roles(current: Sequence[str], roles: Sequence[str], state: str) -> List[str]:
    """The holder's roles after the grant: order kept, nothing duplicated."""
    if state == "absent":
        return [role for role in current if role not in roles]
    merged = list(current)
    for role in roles:
        if role not in merged:
            merged.append(role)
    return merged


def roles_of(doc: Dict[str, Any]) -> List[str]:
    """The ``spec.roles`` of a user or bot document."""
    roles = (doc.get("spec") or {}).get("roles") or []
    return [str(role) for role in roles]


def _result(changed: bool, before: List[str], after: List[str], label: str) -> Dict[str, Any]:
    return {
        "changed": changed,
        "roles": after,
        "added": [role for role in after if role not in before],
        "removed": [role for role in before if role not in after],
        "diff": {
            "before": {label: {"roles": before}},
            "after": {label: {"roles": after}},
        },
    }


def _grant_user(
    runner: TctlRunner, name: str, roles: Sequence[str], state: str, check_mode: bool
) -> Dict[str, Any]:
    doc = runner.get("user", name)
    if doc is None:
        raise GrantError(
            f"user: the Teleport user {name!r} does not exist; create it first "
            "(teleport.event_handler.tctl_resource with kind: user) or fix the name"
        )
    before = roles_of(doc)
    after = merge_roles(before, roles, state)
    if not after:
        raise GrantError(
            f"roles: removing {', '.join(roles)} would leave user {name!r} without roles, "
            "which Teleport refuses; grant another role first or delete the user"
        )
    changed = after != before
    if changed and not check_mode:
        runner.users_set_roles(name, after)
    return _result(changed, before, after, f"user/{name}")


def _grant_bot(
    runner: TctlRunner, name: str, roles: Sequence[str], state: str, check_mode: bool
) -> Dict[str, Any]:
    doc = runner.get("bot", name)
    if doc is None:
        raise GrantError(
            f"bot: the Machine ID bot {name!r} does not exist; create it first "
            "with 'tctl bots add' or fix the name"
        )
    before = roles_of(doc)
    after = merge_roles(before, roles, state)
    if before and not after:
        # tctl ignores an empty --set-roles (tool/tctl/common/bots_command.go,
        # BotsCommand.UpdateBot updates roles only when the flag is not ""), so
        # "revoke the last role" would report changed while the bot keeps it.
        raise GrantError(
            f"roles: removing {', '.join(roles)} would leave bot {name!r} without roles, and "
            "'tctl bots update --set-roles' ignores an empty list, so the bot would keep "
            f"them; grant the bot another role first, or remove the bot ('tctl bots rm {name}')"
        )
    changed = after != before
    if changed and not check_mode:
        if state == "present":
            runner.bots_add_roles(name, [role for role in after if role not in before])
        else:
            runner.bots_set_roles(name, after)
    return _result(changed, before, after, f"bot/{name}")


def _find_mapping(
    entries: List[Dict[str, Any]], selector: Dict[str, str], fields: Sequence[str]
) -> Optional[Dict[str, Any]]:
    for entry in entries:
        if isinstance(entry, dict) and all(
            str(entry.get(field)) == selector[field] for field in fields
        ):
            return entry
    return None


def _grant_connector(
    runner: TctlRunner,
    kind: str,
    name: str,
    selector: Dict[str, str],
    roles: Sequence[str],
    state: str,
    create_mapping: bool,
    check_mode: bool,
) -> Dict[str, Any]:
    list_key, fields = MAPPING_FIELDS[kind]
    missing = [field for field in fields if not selector.get(field)]
    unknown = sorted(set(selector) - set(fields))
    if missing or unknown:
        raise GrantError(
            f"mapping: a {kind} connector's {list_key} entry is selected by "
            f"{' and '.join(fields)}; "
            + (f"set {', '.join(missing)}" if missing else f"remove {', '.join(unknown)}")
        )
    doc = runner.get(kind, name, with_secrets=True)
    if doc is None:
        raise GrantError(
            f"connector: the {kind} connector {name!r} does not exist; fix connector_name "
            f"('tctl get {kind}' lists them)"
        )
    updated = copy.deepcopy(doc)
    spec = updated.setdefault("spec", {})
    entries = spec.get(list_key) or []
    if not isinstance(entries, list):
        raise GrantError(
            f"connector {kind}/{name}: spec.{list_key} is not a list; fix the connector"
        )
    entry = _find_mapping(entries, selector, fields)
    label = f"{kind}/{name} {list_key}[" + ",".join(f"{f}={selector[f]}" for f in fields) + "]"
    if entry is None:
        if state == "absent":
            return _result(False, [], [], label)
        if not create_mapping:
            raise GrantError(
                f"mapping: {kind}/{name} has no {list_key} entry with "
                + ", ".join(f"{f}={selector[f]!r}" for f in fields)
                + "; fix the mapping or set create_mapping: true to add one"
            )
        entry = {field: selector[field] for field in fields}
        entry["roles"] = []
        entries.append(entry)
        spec[list_key] = entries
    before = [str(role) for role in entry.get("roles") or []]
    after = merge_roles(before, roles, state)
    changed = after != before
    if changed and not check_mode:
        entry["roles"] = after
        runner.create(updated, force=True)
    return _result(changed, before, after, label)


def ensure_grant(
    runner: TctlRunner,
    roles: Sequence[str],
    state: str = "present",
    user: Optional[str] = None,
    bot: Optional[str] = None,
    connector_kind: Optional[str] = None,
    connector_name: Optional[str] = None,
    mapping: Optional[Dict[str, Any]] = None,
    create_mapping: bool = True,
    check_mode: bool = False,
) -> Dict[str, Any]:
    """Decide whether the holder lacks (absent: has) ``roles``; change it unless checking."""
    wanted = [str(role) for role in roles if str(role)]
    if not wanted:
        raise GrantError("roles: give at least one role name")
    if user:
        return _grant_user(runner, user, wanted, state, check_mode)
    if bot:
        return _grant_bot(runner, bot, wanted, state, check_mode)
    if connector_kind and connector_name:
        if connector_kind not in MAPPING_FIELDS:
            raise GrantError(f"connector_kind: use one of {', '.join(MAPPING_FIELDS)}")
        selector = {str(k): str(v) for k, v in (mapping or {}).items() if v is not None}
        return _grant_connector(
            runner,
            connector_kind,
            connector_name,
            selector,
            wanted,
            state,
            create_mapping,
            check_mode,
        )
    raise GrantError("set one of user, bot, or connector_kind with connector_name")
