"""The sandbox cluster's resources (roles, users, bots, locks, connectors) and its RBAC.

State lives in ``<data_dir>/state.json``: every write happens under an
exclusive ``fcntl`` lock on ``<data_dir>/state.lock`` and replaces the file
atomically, so the gRPC server, ``sandbox-tctl`` and tests can share one
cluster from several processes. Readers never lock: a rename is atomic, and a
store re-reads the file only when its inode/mtime/size changed, so calling
``get``/``check_access`` on every RPC is cheap.

Documents follow Teleport's JSON shape
``{"kind", "version", "metadata": {"name", "revision", ...}, "spec": {...}}``;
the store adds server-set fields (revision, role option defaults, user
``created_by``/``status``) the way Teleport's auth server does, so clients must
compare only the fields they set.
"""

from __future__ import annotations

import contextlib
import copy
import datetime
import fcntl
import json
import os
import re
import threading
import uuid
from collections.abc import Iterator, Sequence
from typing import Any, NamedTuple

from teleport_event_handler import pki

__all__ = [
    "DEFAULT_VERSIONS",
    "KINDS",
    "AccessDenied",
    "AlreadyExists",
    "BadParameter",
    "NotFound",
    "ResourceStore",
    "SandboxError",
    "active_lock",
    "bot_role_name",
    "bot_user_name",
    "check_access",
    "check_impersonation",
    "missing_roles",
    "not_found",
    "preset_roles",
    "state_lock",
    "without_secrets",
]

STATE_FILE = "state.json"
LOCK_FILE = "state.lock"

# Kinds the sandbox stores, with the resource version Teleport 17 writes by default.
DEFAULT_VERSIONS: dict[str, str] = {
    "role": "v7",
    "user": "v2",
    "bot": "v1",
    "lock": "v2",
    "github": "v3",
    "saml": "v2",
    "oidc": "v3",
    "token": "v2",
}
KINDS = tuple(DEFAULT_VERSIONS)

# Where connectors keep secrets: omitted from ``tctl get`` unless --with-secrets.
SECRET_PATHS: dict[str, tuple[tuple[str, ...], ...]] = {
    "github": (("spec", "client_secret"),),
    "oidc": (("spec", "client_secret"), ("spec", "google_service_account")),
    "saml": (
        ("spec", "signing_key_pair", "private_key"),
        ("spec", "assertion_key_pair", "private_key"),
    ),
}

# Options Teleport's auth server fills in on every role it stores (v7 defaults).
ROLE_OPTION_DEFAULTS: dict[str, Any] = {
    "cert_format": "standard",
    "create_host_user": False,
    "desktop_clipboard": True,
    "desktop_directory_sharing": True,
    "enhanced_recording": ["command", "network"],
    "forward_agent": False,
    "max_session_ttl": "30h0m0s",
    "pin_source_ip": False,
    "port_forwarding": True,
    "record_session": {"default": "best_effort", "desktop": True},
    "ssh_file_copy": True,
}

# Go's zero time, which Teleport prints for unset timestamps in user status.
_ZERO_TIME = "0001-01-01T00:00:00Z"
_NAME_RE = re.compile(r"^[A-Za-z0-9@_.:+=-]+$")
BOT_LABEL = "teleport.internal/bot"


class SandboxError(Exception):
    """Base of the sandbox's errors; the message is what tctl prints after ``ERROR:``."""


class AccessDenied(SandboxError):
    """The caller's roles do not allow the action (gRPC PERMISSION_DENIED)."""


class NotFound(SandboxError):
    """The named resource does not exist (gRPC NOT_FOUND)."""


class AlreadyExists(SandboxError):
    """Creating a resource that exists without overwrite (gRPC ALREADY_EXISTS)."""


class BadParameter(SandboxError):
    """A malformed request or resource document (gRPC INVALID_ARGUMENT)."""


_CONNECTOR_NOT_FOUND = {
    "github": 'github connector "{name}" is not configured',
    "saml": 'SAML connector "{name}" is not configured',
    "oidc": "OpenID connector '{name}' is not configured",
}


def not_found(kind: str, name: str) -> NotFound:
    """Teleport's NOT_FOUND for ``kind/name``, worded as its server words it.

    * role: ``role NAME is not found``, unquoted (lib/services/local/access.go,
      AccessService.GetRole);
    * user: ``user "NAME" is not found`` (lib/services/local/users.go,
      IdentityService.GetUser); lock likewise (access.go, GetLock);
    * bot: BotService.GetBot reads the bot's user and wraps the error twice
      (lib/auth/machineid/machineidv1/bot_service.go, GetBot and getBot), and
      trace prints the wrapping messages as an indented tree
      (gravitational/trace, TraceErr.UserMessage);
    * connectors say "not configured", not "not found", each in its own way
      (lib/services/local/users.go, IdentityService.GetGithubConnector,
      GetSAMLConnector, GetOIDCConnector).
    """
    if kind in _CONNECTOR_NOT_FOUND:
        return NotFound(_CONNECTOR_NOT_FOUND[kind].format(name=name))
    if kind == "role":
        return NotFound(f"role {name} is not found")
    if kind == "bot":
        return NotFound(
            f'fetching bot\n\tfetching bot user\n\t\tuser "{bot_user_name(name)}" is not found'
        )
    return NotFound(f'{kind} "{name}" is not found')


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def _rfc3339(value: datetime.datetime) -> str:
    return value.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def bot_user_name(bot: str) -> str:
    """The user Teleport creates for a bot."""
    return "bot-" + bot


def bot_role_name(bot: str) -> str:
    """The role Teleport creates for a bot (impersonating the bot's roles)."""
    return "bot-" + bot


@contextlib.contextmanager
def state_lock(data_dir: str) -> Iterator[None]:
    """Hold the cluster's exclusive write lock (also used by ``init_authority``)."""
    os.makedirs(data_dir, mode=0o700, exist_ok=True)
    fd = os.open(os.path.join(data_dir, LOCK_FILE), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def preset_roles() -> list[dict[str, Any]]:
    """The roles Teleport creates at first start: ``access``, ``editor``, ``auditor``."""
    return [
        {
            "kind": "role",
            "version": "v7",
            "metadata": {
                "name": "access",
                "description": "Access cluster resources",
                "labels": {"teleport.internal/resource-type": "preset"},
            },
            "spec": {
                "allow": {
                    "logins": ["{{internal.logins}}"],
                    "node_labels": {"*": "*"},
                    "rules": [
                        {"resources": ["event"], "verbs": ["list", "read"]},
                        {
                            "resources": ["session"],
                            "verbs": ["read", "list"],
                            "where": "contains(session.participants, user.metadata.name)",
                        },
                    ],
                },
            },
        },
        {
            "kind": "role",
            "version": "v7",
            "metadata": {
                "name": "editor",
                "description": "Edit cluster configuration",
                "labels": {"teleport.internal/resource-type": "preset"},
            },
            "spec": {"allow": {"rules": [{"resources": ["*"], "verbs": ["*"]}]}},
        },
        {
            "kind": "role",
            "version": "v7",
            "metadata": {
                "name": "auditor",
                "description": "Review cluster events and replay sessions",
                "labels": {"teleport.internal/resource-type": "preset"},
            },
            "spec": {
                "allow": {
                    "rules": [
                        {"resources": ["session"], "verbs": ["list", "read"]},
                        {"resources": ["event"], "verbs": ["list", "read"]},
                        {"resources": ["session_tracker"], "verbs": ["list", "read"]},
                    ],
                },
                "options": {"max_session_ttl": "30h0m0s"},
            },
        },
    ]


def without_secrets(doc: dict[str, Any]) -> dict[str, Any]:
    """A copy of ``doc`` with connector secrets removed, as ``tctl get`` shows it."""
    out = copy.deepcopy(doc)
    for path in SECRET_PATHS.get(str(out.get("kind")), ()):
        node: Any = out
        for key in path[:-1]:
            node = node.get(key) if isinstance(node, dict) else None
        if isinstance(node, dict):
            node.pop(path[-1], None)
    return out


class _Snapshot(NamedTuple):
    key: tuple[int, int, int]
    resources: dict[str, dict[str, dict[str, Any]]]


class ResourceStore:
    """The resources of one sandbox cluster, shared through ``state.json``.

    Thread-safe; several processes may use the same data directory. Every
    method returns copies, so callers may mutate what they get.
    """

    def __init__(self, data_dir: str) -> None:
        self.data_dir = os.path.abspath(data_dir)
        self.path = os.path.join(self.data_dir, STATE_FILE)
        self._mutex = threading.Lock()
        self._snapshot: _Snapshot | None = None

    # --- reading ---------------------------------------------------------------

    def _load(self) -> dict[str, dict[str, dict[str, Any]]]:
        """The current resources, re-read only when the file changed on disk."""
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return {}
        key = (st.st_ino, st.st_mtime_ns, st.st_size)
        with self._mutex:
            if self._snapshot is not None and self._snapshot.key == key:
                return self._snapshot.resources
            try:
                with open(self.path, "rb") as handle:
                    data = json.loads(handle.read())
            except (OSError, ValueError) as exc:
                raise BadParameter(
                    f"{self.path}: unreadable sandbox state ({exc}); "
                    "re-create the sandbox with init_authority in an empty directory"
                ) from exc
            resources = data.get("resources", {}) if isinstance(data, dict) else {}
            self._snapshot = _Snapshot(key, resources)
            return resources

    def get(self, kind: str, name: str) -> dict[str, Any] | None:
        doc = self._load().get(kind, {}).get(name)
        return copy.deepcopy(doc) if doc is not None else None

    def list(self, kind: str) -> list[dict[str, Any]]:
        docs = self._load().get(kind, {})
        return [copy.deepcopy(docs[name]) for name in sorted(docs)]

    def require(self, kind: str, name: str) -> dict[str, Any]:
        """``get`` that raises Teleport's NOT_FOUND, worded per kind (``not_found``)."""
        doc = self.get(kind, name)
        if doc is None:
            raise not_found(kind, name)
        return doc

    # --- writing ---------------------------------------------------------------

    @contextlib.contextmanager
    def _writing(self) -> Iterator[dict[str, dict[str, dict[str, Any]]]]:
        """Lock, hand out a fresh copy of the state, write it back atomically."""
        with state_lock(self.data_dir):
            self._snapshot = None  # another process may have written since
            resources = copy.deepcopy(self._load())
            yield resources
            body = json.dumps({"resources": resources}, indent=1, sort_keys=True).encode()
            pki.write_file_atomic(self.path, body + b"\n", mode=0o600)

    def create(
        self, doc: dict[str, Any], *, overwrite: bool, actor: str = "tctl"
    ) -> dict[str, Any]:
        """Store ``doc``; ``AlreadyExists`` when present and not ``overwrite``.

        Returns the stored document with the server-set fields. ``actor``
        names who is recorded in a new user's ``spec.created_by``.
        """
        return self.upsert(doc, overwrite=overwrite, actor=actor)[0]

    def upsert(
        self, doc: dict[str, Any], *, overwrite: bool = True, actor: str = "tctl"
    ) -> tuple[dict[str, Any], bool]:
        """Like ``create``; also says whether the resource is new (True) or updated."""
        new = _normalise(doc)
        kind, name = new["kind"], new["metadata"]["name"]
        with self._writing() as resources:
            existing = resources.get(kind, {}).get(name)
            if existing is not None and not overwrite:
                raise AlreadyExists(f'{kind} "{name}" already exists')
            _fill_server_fields(new, existing, actor)
            resources.setdefault(kind, {})[name] = new
        return copy.deepcopy(new), existing is None

    def upsert_lock(self, doc: dict[str, Any], actor: str = "tctl") -> dict[str, Any]:
        """Create or replace a lock (what ``AuthService/UpsertLock`` does)."""
        lock = copy.deepcopy(doc)
        lock.setdefault("kind", "lock")
        if lock["kind"] != "lock":
            raise BadParameter(f'upsert_lock: expected kind "lock", got "{lock["kind"]}"')
        return self.upsert(lock, overwrite=True, actor=actor)[0]

    def delete(self, kind: str, name: str) -> None:
        """Remove a resource; ``NotFound`` when absent.

        Like Teleport, a role still held by a user cannot be deleted, and a
        bot takes its user and role with it.
        """
        _check_kind(kind)
        with self._writing() as resources:
            if name not in resources.get(kind, {}):
                # DeleteBot reads the bot's user first (bot_service.go, DeleteBot).
                raise (
                    not_found("user", bot_user_name(name))
                    if kind == "bot"
                    else not_found(kind, name)
                )
            if kind == "role":
                holders = [
                    user
                    for user, doc in sorted(resources.get("user", {}).items())
                    if name in (doc.get("spec") or {}).get("roles", [])
                ]
                if holders:
                    # Teleport masks the holders; the sandbox names them to help.
                    raise BadParameter(
                        "failed to delete role that still in use by a user. Check system "
                        f'server logs for more details. (sandbox: role "{name}" is held by '
                        f"{', '.join(holders)}; change their roles with 'tctl users update')"
                    )
            del resources[kind][name]
            if kind == "bot":
                resources.get("user", {}).pop(bot_user_name(name), None)
                resources.get("role", {}).pop(bot_role_name(name), None)

    def ensure_presets(self) -> None:
        """Create the preset roles that are missing (idempotent)."""
        wanted = {role["metadata"]["name"] for role in preset_roles()}
        if wanted <= set(self._load().get("role", {})):
            return  # nothing to write: keep the file (and every reader's cache) as is
        with self._writing() as resources:
            for role in preset_roles():
                name = role["metadata"]["name"]
                if name not in resources.get("role", {}):
                    new = _normalise(role)
                    _fill_server_fields(new, None, "system")
                    resources.setdefault("role", {})[name] = new

    def add_bot(
        self, name: str, roles: Sequence[str], *, overwrite: bool = False, actor: str = "tctl"
    ) -> dict[str, Any]:
        """Create or replace a bot with its user ``bot-<name>`` and role ``bot-<name>``.

        As in Teleport the bot's user holds only the bot role, which may
        impersonate the bot's roles; identities issued for the bot user carry
        the bot's roles, like a tbot output.
        """
        bot = {
            "kind": "bot",
            "version": DEFAULT_VERSIONS["bot"],
            "metadata": {"name": name},
            "spec": {"roles": list(roles), "traits": []},
        }
        new = _normalise(bot)
        with self._writing() as resources:
            existing = resources.get("bot", {}).get(name)
            if existing is not None and not overwrite:
                raise AlreadyExists(f'bot "{name}" already exists')
            _fill_server_fields(new, existing, actor)
            resources.setdefault("bot", {})[name] = new
            for extra in _bot_companions(new, resources, actor):
                resources.setdefault(extra["kind"], {})[extra["metadata"]["name"]] = extra
        return copy.deepcopy(new)


def _check_kind(kind: str) -> None:
    if kind not in DEFAULT_VERSIONS:
        raise BadParameter(
            f'creating resources of type "{kind}" is not supported by the sandbox; '
            f"supported kinds: {', '.join(KINDS)}"
        )


def _normalise(doc: Any) -> dict[str, Any]:
    """Validate a client's document and return a deep copy in canonical shape."""
    if not isinstance(doc, dict):
        raise BadParameter(f"a resource must be a mapping, got {type(doc).__name__}")
    new = copy.deepcopy(doc)
    kind = new.get("kind")
    if not isinstance(kind, str) or not kind:
        raise BadParameter('missing resource kind: set "kind" (for example "kind: role")')
    _check_kind(kind)
    meta = new.get("metadata")
    if not isinstance(meta, dict):
        raise BadParameter(f'{kind}: missing "metadata" (set metadata.name)')
    name = meta.get("name")
    if not isinstance(name, str) or not name:
        raise BadParameter(f'{kind}: missing "metadata.name"')
    if not _NAME_RE.match(name):
        raise BadParameter(
            f'{kind} name "{name}" is invalid: use letters, digits and "@_.:+=-" only'
        )
    version = new.setdefault("version", DEFAULT_VERSIONS[kind])
    if not isinstance(version, str) or not re.fullmatch(r"v\d+", version):
        raise BadParameter(f'{kind} "{name}": version must look like "v7", got {version!r}')
    spec = new.setdefault("spec", {})
    if spec is None:
        spec = new["spec"] = {}
    if not isinstance(spec, dict):
        raise BadParameter(f'{kind} "{name}": "spec" must be a mapping')
    if kind == "role":
        _validate_role(name, spec)
    elif kind in ("user", "bot"):
        roles = spec.setdefault("roles", [])
        if not isinstance(roles, list) or not all(isinstance(r, str) for r in roles):
            raise BadParameter(f'{kind} "{name}": spec.roles must be a list of role names')
    return new


def _validate_role(name: str, spec: dict[str, Any]) -> None:
    for side in ("allow", "deny"):
        part = spec.get(side)
        if part is None:
            continue
        if not isinstance(part, dict):
            raise BadParameter(f'role "{name}": spec.{side} must be a mapping')
        rules = part.get("rules", [])
        if not isinstance(rules, list):
            raise BadParameter(f'role "{name}": spec.{side}.rules must be a list')
        for index, rule in enumerate(rules):
            if not isinstance(rule, dict):
                raise BadParameter(f'role "{name}": spec.{side}.rules[{index}] must be a mapping')
            for key in ("resources", "verbs"):
                value = rule.get(key, [])
                if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                    raise BadParameter(
                        f'role "{name}": spec.{side}.rules[{index}].{key} must be a list of strings'
                    )
    options = spec.get("options")
    if options is not None and not isinstance(options, dict):
        raise BadParameter(f'role "{name}": spec.options must be a mapping')


def missing_roles(store: ResourceStore, roles: Sequence[str]) -> list[str]:
    """The names in ``roles`` that are not roles of the cluster.

    Teleport's auth server stores users and bots naming unknown roles (such a
    user is denied everything); tctl checks on the client side and warns or
    fails, so the check lives here for callers that want it.
    """
    known = store._load().get("role", {})
    return [role for role in roles if role not in known]


def _fill_server_fields(doc: dict[str, Any], existing: dict[str, Any] | None, actor: str) -> None:
    """Add what Teleport's auth server sets on every write."""
    now = _rfc3339(_now())
    doc["metadata"]["revision"] = str(uuid.uuid4())
    spec = doc["spec"]
    kind = doc["kind"]
    if kind == "role":
        options = spec.setdefault("options", {}) or {}
        spec["options"] = options
        for key, value in ROLE_OPTION_DEFAULTS.items():
            options.setdefault(key, copy.deepcopy(value))
        spec.setdefault("allow", {})
        if spec.get("deny") is None:
            spec["deny"] = {}
    elif kind == "user":
        old_spec = (existing or {}).get("spec") or {}
        spec.setdefault(
            "created_by",
            old_spec.get("created_by") or {"time": now, "user": {"name": actor}},
        )
        spec.setdefault("expires", _ZERO_TIME)
        doc.setdefault(
            "status",
            {
                "is_locked": False,
                "locked_message": "",
                "locked_time": _ZERO_TIME,
                "lock_expires": _ZERO_TIME,
                "recovery_attempt_lock_expires": _ZERO_TIME,
            },
        )
    elif kind == "bot":
        doc["status"] = {
            "user_name": bot_user_name(doc["metadata"]["name"]),
            "role_name": bot_role_name(doc["metadata"]["name"]),
        }
    elif kind == "lock":
        spec.setdefault("created_at", now)
        spec.setdefault("created_by", actor)
        if not isinstance(spec.get("target"), dict) or not spec["target"]:
            raise BadParameter(
                f'lock "{doc["metadata"]["name"]}": spec.target must name a user or login'
            )


def _bot_companions(
    bot: dict[str, Any], resources: dict[str, dict[str, dict[str, Any]]], actor: str
) -> list[dict[str, Any]]:
    """The role and user Teleport keeps alongside a bot."""
    name = bot["metadata"]["name"]
    labels = {BOT_LABEL: name}
    role = _normalise(
        {
            "kind": "role",
            "version": "v7",
            "metadata": {
                "name": bot_role_name(name),
                "description": f"Automatically generated role for bot {name}",
                "labels": labels,
            },
            "spec": {
                "allow": {
                    "impersonate": {"roles": list(bot["spec"]["roles"]), "users": []},
                    "rules": [
                        {"resources": ["cert_authority"], "verbs": ["readnosecrets"]},
                    ],
                },
                "options": {"max_session_ttl": "12h0m0s"},
            },
        }
    )
    _fill_server_fields(role, resources.get("role", {}).get(role["metadata"]["name"]), actor)
    user = _normalise(
        {
            "kind": "user",
            "version": "v2",
            "metadata": {"name": bot_user_name(name), "labels": labels},
            "spec": {"roles": [bot_role_name(name)]},
        }
    )
    _fill_server_fields(user, resources.get("user", {}).get(user["metadata"]["name"]), actor)
    return [role, user]


# --- RBAC ----------------------------------------------------------------------


def _rule_matches(rule: Any, resource: str, verb: str) -> bool:
    if not isinstance(rule, dict):
        return False
    # A ``where`` clause is a predicate over the resource that the sandbox does
    # not evaluate; such a rule neither grants nor denies (the safe reading).
    if rule.get("where"):
        return False
    resources = rule.get("resources") or []
    verbs = rule.get("verbs") or []
    return (resource in resources or "*" in resources) and (verb in verbs or "*" in verbs)


def _role_docs(store: ResourceStore, roles: Sequence[str], resource: str, verb: str) -> list[Any]:
    docs = []
    for name in roles:
        doc = store.get("role", name)
        if doc is None:
            raise AccessDenied(
                f'access denied to perform action "{verb}" on "{resource}": '
                f"role {name} is not found"
            )
        docs.append(doc)
    return docs


def check_access(store: ResourceStore, roles: Sequence[str], resource: str, verb: str) -> None:
    """Raise ``AccessDenied`` unless ``roles`` allow ``verb`` on ``resource``.

    Deny rules of any role win over allow rules; ``"*"`` matches any resource
    or verb. A role that no longer exists denies everything, as Teleport
    refuses a certificate naming an unknown role.
    """
    docs = _role_docs(store, roles, resource, verb)
    denied = AccessDenied(f'access denied to perform action "{verb}" on "{resource}"')
    for doc in docs:
        deny = (doc.get("spec") or {}).get("deny") or {}
        if any(_rule_matches(rule, resource, verb) for rule in deny.get("rules") or []):
            raise denied
    for doc in docs:
        allow = (doc.get("spec") or {}).get("allow") or {}
        if any(_rule_matches(rule, resource, verb) for rule in allow.get("rules") or []):
            return
    raise denied


def check_impersonation(
    store: ResourceStore, roles: Sequence[str], user: str, user_roles: Sequence[str]
) -> None:
    """Raise ``AccessDenied`` unless ``roles`` may impersonate ``user`` with ``user_roles``.

    Mirrors ``allow.impersonate``/``deny.impersonate``: the user must be
    listed (or ``"*"``) and so must every role the new certificate carries.
    """
    docs = _role_docs(store, roles, "user", "impersonate")
    denied = AccessDenied(f'access denied: impersonation of user "{user}" is not allowed')

    def covers(part: Any) -> tuple[bool, set[str]]:
        imp = (part or {}).get("impersonate") or {}
        users = imp.get("users") or []
        return user in users or "*" in users, set(imp.get("roles") or [])

    allowed_roles: set[str] = set()
    user_allowed = False
    for doc in docs:
        spec = doc.get("spec") or {}
        deny_user, deny_roles = covers(spec.get("deny"))
        if deny_user or "*" in deny_roles or deny_roles & set(user_roles):
            raise denied
        ok, granted = covers(spec.get("allow"))
        user_allowed = user_allowed or ok
        allowed_roles |= granted
    if not user_allowed:
        raise denied
    if "*" not in allowed_roles and not set(user_roles) <= allowed_roles:
        raise denied


def active_lock(
    store: ResourceStore, user: str, now: datetime.datetime | None = None
) -> dict[str, Any] | None:
    """The first unexpired lock targeting ``user`` (Teleport refuses such a user)."""
    when = now or _now()
    for lock in store.list("lock"):
        spec = lock.get("spec") or {}
        if (spec.get("target") or {}).get("user") != user:
            continue
        expires = spec.get("expires") or (lock.get("metadata") or {}).get("expires")
        if expires and _parse_time(expires) <= when:
            continue
        return lock
    return None


def _parse_time(value: str) -> datetime.datetime:
    text = value.strip().replace("Z", "+00:00")
    # Go writes nanoseconds; Python reads at most microseconds.
    text = re.sub(r"(\.\d{6})\d+", r"\1", text)
    parsed = datetime.datetime.fromisoformat(text)
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=datetime.UTC)
    return parsed
