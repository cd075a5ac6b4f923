# Copyright: the teleport-event-handler authors
# Apache License 2.0 (see LICENSE)
"""Make Teleport resources match a definition, comparing only what it sets.

Teleport answers ``tctl get`` with more than was sent: a fresh
``metadata.revision`` on every write, ``created_by`` and ``status`` on users,
defaults on roles, durations normalised ("10h" comes back as "10h0m0s").
:func:`matches` therefore asks "does the resource already carry every value
the definition gives?", never "are the documents equal?", so server-set
fields cannot cause a change.
"""

from __future__ import annotations

import copy
import json
from typing import Any, Dict, List, Optional, Tuple

from ansible_collections.teleport.event_handler.plugins.module_utils._duration import (
    is_duration,
    parse_duration,
)
from ansible_collections.teleport.event_handler.plugins.module_utils._grants import (
    MAPPING_FIELDS,
)
from ansible_collections.teleport.event_handler.plugins.module_utils._tctl import TctlRunner

__all__ = [
    "CONNECTOR_KINDS",
    "REDACTED",
    "ResourceError",
    "ensure_absent_by_name",
    "ensure_resources",
    "keep_granted_roles",
    "load_definitions",
    "matches",
    "project",
    "redact",
    "resource_ref",
    "secret_values",
]

CONNECTOR_KINDS = ("github", "saml", "oidc")
REDACTED = "VALUE_REDACTED"

# Keys whose values are secrets in any Teleport resource: connector client
# secrets and signing keys, service account JSON, tokens. They are read with
# --with-secrets only to be written back, and never shown.
_SECRET_KEYS = frozenset(
    ("private_key", "client_secret", "google_service_account", "password", "token", "secret")
)


class ResourceError(Exception):
    """A definition that cannot be used as given."""


def load_definitions(definition: Any, src_text: Optional[str], source: str) -> List[Dict[str, Any]]:
    """Resource documents from ``definition`` (dict, list or YAML/JSON text) or a file's text."""
    raw: Any = definition
    if src_text is not None:
        raw = src_text
    if isinstance(raw, str):
        raw = _parse_text(raw, source)
    elif isinstance(raw, dict):
        raw = [raw]
    if not isinstance(raw, list):
        raise ResourceError(f"{source}: expected a resource mapping or a list of them")
    docs = [doc for doc in raw if doc is not None]
    if not docs:
        raise ResourceError(f"{source}: holds no resource; give at least one definition")
    for index, doc in enumerate(docs):
        if not isinstance(doc, dict):
            raise ResourceError(f"{source}: document {index + 1} is not a mapping")
        resource_ref(doc, f"{source}: document {index + 1}")
    return docs


def _parse_text(text: str, source: str) -> List[Any]:
    stripped = text.strip()
    if stripped.startswith(("{", "[")):
        try:
            data = json.loads(stripped)
        except ValueError:
            data = None
        else:
            return data if isinstance(data, list) else [data]
    try:
        from ansible.module_utils.common.yaml import HAS_YAML, yaml_load_all
    except ImportError:  # pragma: no cover - ansible-core always ships it
        HAS_YAML = False
    if not HAS_YAML:
        raise ResourceError(
            f"{source}: reading YAML needs PyYAML on the managed host; install it "
            "or give the definition as a mapping (Ansible parses it on the controller)"
        )
    try:
        return list(yaml_load_all(text))
    except Exception as exc:  # yaml.YAMLError without importing yaml here
        raise ResourceError(f"{source}: not valid YAML ({exc})") from None


def resource_ref(doc: Dict[str, Any], source: str = "definition") -> Tuple[str, str]:
    """``(kind, name)`` of a document, or a ResourceError saying which key is missing."""
    kind = doc.get("kind")
    name = (
        (doc.get("metadata") or {}).get("name") if isinstance(doc.get("metadata"), dict) else None
    )
    if not isinstance(kind, str) or not kind:
        raise ResourceError(f"{source}: set 'kind' (e.g. role, user, bot, github)")
    if not isinstance(name, str) or not name:
        raise ResourceError(f"{source}: set 'metadata.name'")
    return kind, name


def _empty(value: Any) -> bool:
    # Go's omitempty leaves out false and 0 as well as "", empty lists and maps.
    if isinstance(value, bool):
        return not value
    if isinstance(value, (int, float)):
        return value == 0
    return value is None or value == "" or value == [] or value == {}


def matches(wanted: Any, current: Any) -> bool:
    """True when ``current`` carries every value ``wanted`` sets.

    Mappings compare only the keys ``wanted`` has; an empty value (false and 0
    included) equals a missing one (Teleport omits empty fields); lists compare
    element by element with the same rule; Go durations compare by length of time.
    """
    if isinstance(wanted, dict):
        if current is None:
            return all(_empty(value) for value in wanted.values())
        if not isinstance(current, dict):
            return False
        for key, value in wanted.items():
            if key in current:
                if not matches(value, current[key]):
                    return False
            elif not _empty(value):
                return False
        return True
    if isinstance(wanted, list):
        if current is None:
            return not wanted
        if not isinstance(current, list) or len(current) != len(wanted):
            return False
        return all(matches(w, c) for w, c in zip(wanted, current))  # noqa: B905 - same length; Python 3.9
    if wanted is None:
        return _empty(current)
    if wanted == current and type(wanted) is type(current):
        return True
    if is_duration(wanted) and is_duration(current):
        return parse_duration(wanted) == parse_duration(current)
    return False


def project(current: Any, wanted: Any) -> Any:
    """The part of ``current`` that ``wanted`` talks about: what a diff should show."""
    if isinstance(wanted, dict) and isinstance(current, dict):
        return {key: project(current[key], wanted[key]) for key in wanted if key in current}
    if isinstance(wanted, list) and isinstance(current, list):
        shown = [project(c, w) for c, w in zip(current, wanted)]  # noqa: B905 - Python 3.9
        return shown + current[len(wanted) :]
    return current


def redact(value: Any) -> Any:
    """A deep copy with every secret value replaced by ``REDACTED``."""
    if isinstance(value, dict):
        return {
            key: (REDACTED if key in _SECRET_KEYS and not _empty(item) else redact(item))
            for key, item in value.items()
        }
    if isinstance(value, list):
        return [redact(item) for item in value]
    return copy.deepcopy(value)


def secret_values(value: Any) -> List[str]:
    """Every secret string in ``value`` (the values :func:`redact` hides), for ``no_log``."""
    found: List[str] = []
    if isinstance(value, dict):
        for key, item in value.items():
            if key in _SECRET_KEYS and isinstance(item, str) and item:
                found.append(item)
            else:
                found.extend(secret_values(item))
    elif isinstance(value, list):
        for item in value:
            found.extend(secret_values(item))
    return found


def _read(runner: TctlRunner, kind: str, name: str) -> Optional[Dict[str, Any]]:
    # Connectors hide their secrets unless asked; reading them lets a definition
    # that sets a secret compare equal, and they are redacted before any output.
    return runner.get(kind, name, with_secrets=kind in CONNECTOR_KINDS)


# Kinds whose spec.roles tctl_grant_role adds to: a definition lists the roles
# they must have, and roles granted elsewhere are kept, so that a user defined
# with tctl_resource and granted a role with tctl_grant_role stay as both say.
_GRANTABLE_KINDS = ("user", "bot")


def _merged_roles(wanted: List[Any], have: List[Any]) -> List[Any]:
    """``wanted`` plus the roles only ``have`` lists; ``have`` itself when it holds them all."""
    extra = [role for role in have if role not in wanted]
    if not extra:
        return wanted
    # Every wanted role there already: keep Teleport's order, so nothing changes.
    if all(role in have for role in wanted):
        return list(have)
    return list(wanted) + extra


def keep_granted_roles(
    doc: Dict[str, Any], kind: str, current: Optional[Dict[str, Any]]
) -> Dict[str, Any]:
    """``doc`` with what ``current`` was granted beyond it kept.

    Users and bots keep roles beyond their ``spec.roles``; SSO connectors keep
    roles added to a mapping and mappings added whole (tctl_grant_role's
    ``mapping``, ``create_mapping``), matched by the fields that select one.
    """
    if current is None:
        return doc
    spec = doc.get("spec") or {}
    have_spec = current.get("spec") or {}
    if kind in _GRANTABLE_KINDS:
        wanted, have = spec.get("roles"), have_spec.get("roles")
        if not isinstance(wanted, list) or not isinstance(have, list):
            return doc
        roles = _merged_roles(wanted, have)
        if roles is wanted:
            return doc
        merged = copy.deepcopy(doc)
        merged["spec"]["roles"] = roles
        return merged
    if kind not in MAPPING_FIELDS:
        return doc
    list_key, fields = MAPPING_FIELDS[kind]
    wanted_entries, have_entries = spec.get(list_key), have_spec.get(list_key)
    if not isinstance(wanted_entries, list) or not isinstance(have_entries, list):
        return doc

    def selector(entry: Any) -> Optional[Tuple[str, ...]]:
        if not isinstance(entry, dict):
            return None
        return tuple(str(entry.get(field)) for field in fields)

    entries = copy.deepcopy(wanted_entries)
    by_selector = {selector(e): e for e in entries if selector(e) is not None}
    changed = False
    for have in have_entries:
        key = selector(have)
        if key is None or not isinstance(have.get("roles"), list):
            continue
        entry = by_selector.get(key)
        if entry is None:
            entries.append(copy.deepcopy(have))
            by_selector[key] = entries[-1]
            changed = True
        elif isinstance(entry.get("roles"), list):
            roles = _merged_roles(entry["roles"], have["roles"])
            if roles is not entry["roles"]:
                entry["roles"] = roles
                changed = True
    if not changed:
        return doc
    merged = copy.deepcopy(doc)
    merged["spec"][list_key] = entries
    return merged


def ensure_resources(
    runner: TctlRunner,
    documents: List[Dict[str, Any]],
    state: str,
    check_mode: bool,
) -> Dict[str, Any]:
    """Decide per document what must change, then (outside check mode) change it.

    Returns ``changed``, ``resources`` (kind, name, action per document) and
    ``diff`` (before/after restricted to the fields the definitions set,
    secrets redacted).
    """
    plan = []
    for given in documents:
        kind, name = resource_ref(given)
        current = _read(runner, kind, name)
        doc = keep_granted_roles(given, kind, current)
        if state == "absent":
            action = "deleted" if current is not None else "unchanged"
        elif current is None:
            action = "created"
        elif matches(doc, current):
            action = "unchanged"
        else:
            action = "updated"
        plan.append((doc, kind, name, current, action))

    if not check_mode:
        ordered = reversed(plan) if state == "absent" else plan
        for doc, kind, name, _current, action in ordered:
            if action == "deleted":
                runner.delete(kind, name)
            elif action in ("created", "updated"):
                runner.create(doc, force=action == "updated")

    before: Dict[str, Any] = {}
    after: Dict[str, Any] = {}
    for doc, kind, name, current, action in plan:
        key = f"{kind}/{name}"
        shown_before = redact(project(current, doc)) if current is not None else None
        shown_after = None if state == "absent" else redact(doc)
        if action != "unchanged":
            before[key] = shown_before
            after[key] = shown_after
    return {
        "changed": any(item[4] != "unchanged" for item in plan),
        "resources": [{"kind": k, "name": n, "action": a} for _d, k, n, _c, a in plan],
        "diff": {"before": before, "after": after},
    }


def ensure_absent_by_name(
    runner: TctlRunner, kind: str, name: str, check_mode: bool
) -> Dict[str, Any]:
    """``state=absent`` given only ``kind`` and ``name``."""
    return ensure_resources(
        runner, [{"kind": kind, "metadata": {"name": name}}], "absent", check_mode
    )
