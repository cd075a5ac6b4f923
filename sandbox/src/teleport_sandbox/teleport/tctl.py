"""``sandbox-tctl``: Teleport's admin tool, for the sandbox cluster.

Mirrors the parts of ``tctl`` that operators and the Ansible collection use
(``get``, ``create``, ``rm``, ``users``, ``bots``, ``auth sign``/``export``,
``lock``, ``status``, ``version``) with tctl's output and error wording, so a
script written against this also runs against a real cluster.

Who acts:

* ``-c/--config teleport.yaml`` (or ``$TELEPORT_SANDBOX_DATA_DIR``) without
  ``--identity``: the cluster's built-in admin, like tctl on the Auth host.
* ``-i/--identity FILE``: that identity, verified against the cluster's user
  CA (not expired, not foreign, user not locked); every action is checked
  against its roles, so permission errors are real. The cluster is found
  from ``--config`` or ``$TELEPORT_SANDBOX_DATA_DIR``.
* Neither: "not logged in", as an unauthenticated tctl.

``--auth-server ADDR`` is not needed to find the cluster, but like tctl the
command fails when nothing listens there (tool/tctl/common/client/auth.go,
GetInitFunc: "Cannot connect to the auth server").

With ``$TELEPORT_SANDBOX_ADMIN_MFA`` set, the cluster requires MFA for admin
actions and a call naming neither ``--config`` nor ``--identity`` (the
cluster named by ``$TELEPORT_SANDBOX_DATA_DIR``) stands for tctl run from a
person's ``tsh`` profile: every change prints tctl's security-key prompt and
waits, as tctl waits for a key touch, until it is killed. The Auth host's
admin (``--config``) and identity files are not asked, as Teleport exempts
built-in roles and identities its admin signed (lib/authz/permissions.go,
isAdminActionAuthorizationRequired).

Failures print ``ERROR: <message>`` on stderr, the prefix coloured red as
tctl always colours it (lib/utils/cli.go, UserMessageFromError), and exit 1.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import os
import platform
import secrets
import socket
import sys
import time
import traceback
import uuid
from collections.abc import Callable, Sequence
from typing import Any, NoReturn, TextIO

import yaml

from teleport_event_handler import pki
from teleport_event_handler.durations import DurationError, format_duration, go_seconds
from teleport_sandbox.teleport import DATA_DIR_ENV, TELEPORT_VERSION, authority
from teleport_sandbox.teleport.resources import (
    DEFAULT_VERSIONS,
    AccessDenied,
    AlreadyExists,
    BadParameter,
    ResourceStore,
    SandboxError,
    active_lock,
    bot_user_name,
    check_access,
    check_impersonation,
    missing_roles,
    not_found,
    without_secrets,
)

__all__ = ["ADMIN_MFA_ENV", "ERROR_PREFIX", "main", "parse_go_duration"]

# Set (to anything but "" or "0") to make the cluster require MFA for admin actions.
ADMIN_MFA_ENV = "TELEPORT_SANDBOX_ADMIN_MFA"
# tctl writes Color(Red, "ERROR: ") even when stderr is not a terminal.
ERROR_PREFIX = "\x1b[31mERROR: \x1b[0m"
# What tctl's CLI MFA prompt says when a security key is the only way (lib/client/mfa).
MFA_PROMPT = "Tap any security key"
# tctl's default Auth Service address (defaults.AuthListenPort).
DEFAULT_AUTH_PORT = 3025

# Names tctl accepts for each kind (singular, plural, Teleport's aliases).
KIND_ALIASES: dict[str, str] = {
    "role": "role",
    "roles": "role",
    "user": "user",
    "users": "user",
    "bot": "bot",
    "bots": "bot",
    "lock": "lock",
    "locks": "lock",
    "github": "github",
    "saml": "saml",
    "oidc": "oidc",
    "token": "token",
    "tokens": "token",
}
# How tctl names a kind in "created/updated/deleted" messages.
CREATE_NOUN = {
    "github": "authentication connector",
    "saml": "authentication connector",
    "oidc": "authentication connector",
}
DELETE_NOUN = {
    "github": "GitHub connector",
    "saml": "SAML connector",
    "oidc": "OIDC connector",
    "bot": "Bot",
    "token": "Token",
}

DEFAULT_SIGN_TTL = "12h"  # tctl auth sign's default (apidefaults.CertDuration)
SIGNUP_TOKEN_TTL = "1h"
BOT_TOKEN_TTL = "1h"


class CommandError(SandboxError):
    """A usage problem found after parsing (tctl's BadParameter on the client side)."""


def parse_go_duration(text: str) -> datetime.timedelta:
    """A Go ``time.ParseDuration`` string (``12h``, ``1h30m``, ``8760h``) as a timedelta."""
    try:
        return datetime.timedelta(seconds=go_seconds(text))
    except DurationError as exc:
        raise CommandError(f'time: invalid duration "{text}": {exc.fix}') from exc


def _split(values: Sequence[str] | str | None) -> list[str]:
    """Comma lists, possibly repeated flags: ``["a,b", "c"]`` -> ``["a", "b", "c"]``."""
    if values is None:
        return []
    items = [values] if isinstance(values, str) else list(values)
    return [part.strip() for item in items for part in item.split(",") if part.strip()]


# --- who is acting ---------------------------------------------------------------


@dataclasses.dataclass
class Session:
    """The cluster and the caller; ``user is None`` means the local admin."""

    data_dir: str
    store: ResourceStore
    user: str | None
    roles: tuple[str, ...]
    out: TextIO
    # A person's tsh profile on a cluster that requires MFA for admin actions.
    needs_mfa: bool = False

    @property
    def actor(self) -> str:
        return self.user or "tctl"

    def admin_action(self) -> None:
        """A change: with admin MFA required, wait for a key touch that never comes."""
        if not self.needs_mfa:
            return
        print(MFA_PROMPT, file=sys.stderr, flush=True)
        while True:  # tctl waits for the key; only a signal ends this
            time.sleep(3600)

    def allow(self, resource: str, *verbs: str) -> None:
        if self.user is None:
            return
        for verb in verbs:
            check_access(self.store, self.roles, resource, verb)


def _not_logged_in() -> NoReturn:
    raise CommandError(
        "not logged in: log in with 'tsh login', or pass --identity FILE (with -c or "
        f"${DATA_DIR_ENV} naming the sandbox), or run as the cluster admin with "
        "-c/--config <data dir>/teleport.yaml"
    )


def _check_data_dir(data_dir: str, origin: str) -> str:
    if not os.path.isfile(os.path.join(data_dir, "teleport.yaml")):
        raise CommandError(
            f"{origin}: {data_dir} is not a sandbox data directory (no teleport.yaml); "
            "create one with 'sandbox-teleport init' or init_authority()"
        )
    return data_dir


def _split_address(address: str) -> tuple[str, int]:
    """``host:port`` (or a URL, or a bare host) as tctl reads --auth-server."""
    text = address.split("://", 1)[-1].rstrip("/")
    host, sep, port = text.rpartition(":")
    if not sep or "]" in port:
        host, port = text, str(DEFAULT_AUTH_PORT)
    host = host.strip("[]") or "127.0.0.1"
    try:
        return host, int(port)
    except ValueError as exc:
        raise CommandError(f'--auth-server "{address}": invalid port "{port}"') from exc


def _check_auth_server(address: str) -> None:
    """Fail as tctl fails when nothing answers at --auth-server.

    tctl prints this one line itself, uncoloured, and exits 1
    (tool/tctl/common/client/auth.go, GetInitFunc).
    """
    host, port = _split_address(address)
    try:
        with socket.create_connection((host, port), timeout=5):
            return
    except OSError:
        pass
    raise _CannotConnect(
        f'ERROR: Cannot connect to the auth server. Is the auth server running on "{address}"?'
    )


class _CannotConnect(SandboxError):
    """tctl's own connection failure line, printed as is."""


def _admin_mfa_required() -> bool:
    return os.environ.get(ADMIN_MFA_ENV, "") not in ("", "0")


def _open_session(args: argparse.Namespace, out: TextIO) -> Session:
    if args.auth_server:
        _check_auth_server(args.auth_server)
    env_dir = os.environ.get(DATA_DIR_ENV, "")
    if args.config:
        data_dir = _check_data_dir(
            authority.data_dir_from_config(args.config), f"--config {args.config}"
        )
    elif env_dir:
        data_dir = _check_data_dir(os.path.abspath(env_dir), DATA_DIR_ENV)
    elif args.identity:
        raise CommandError(
            f"--identity {args.identity}: cannot tell which sandbox cluster to use; pass "
            f"-c/--config <data dir>/teleport.yaml or set {DATA_DIR_ENV}"
        )
    else:
        _not_logged_in()
    store = ResourceStore(data_dir)
    if not args.identity:
        # Without --config, the sandbox reads the environment's cluster as a
        # person's tsh profile would reach it: the one caller admin MFA asks.
        needs_mfa = not args.config and _admin_mfa_required()
        return Session(data_dir, store, None, (), out, needs_mfa=needs_mfa)
    peer = authority.load_identity(data_dir, args.identity)
    lock = active_lock(store, peer.user)
    if lock is not None:
        message = (lock.get("spec") or {}).get("message") or ""
        raise AccessDenied(
            f'lock targeting User:"{peer.user}" is in force' + (f": {message}" if message else "")
        )
    return Session(data_dir, store, peer.user, peer.roles, out)


# --- output ------------------------------------------------------------------------


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """An asciitable like Teleport's: padded columns, a dashed rule under the header."""
    widths = [len(h) for h in headers]
    for row in rows:
        widths = [max(w, len(cell)) for w, cell in zip(widths, row, strict=True)]
    lines = [
        " ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip(),
        " ".join("-" * w for w in widths),
    ]
    lines.extend(
        " ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in rows
    )
    return "\n".join(lines) + "\n"


def _rules_text(rules: Any) -> str:
    parts: list[str] = []
    for rule in rules or []:
        if isinstance(rule, dict):
            verbs = ",".join(rule.get("verbs") or [])
            parts.extend(f"{res}:{verbs}" for res in rule.get("resources") or [])
    return ",".join(parts)


def _text_rows(kind: str, docs: list[dict[str, Any]]) -> tuple[list[str], list[list[str]]]:
    def name(doc: dict[str, Any]) -> str:
        return str((doc.get("metadata") or {}).get("name", ""))

    def spec(doc: dict[str, Any]) -> dict[str, Any]:
        value = doc.get("spec") or {}
        return value if isinstance(value, dict) else {}

    if kind == "role":
        headers = ["Role", "Allowed to login as", "Node Labels", "Access to resources"]
        rows = []
        for doc in docs:
            allow = spec(doc).get("allow") or {}
            labels = allow.get("node_labels") or {}
            rows.append(
                [
                    name(doc),
                    ",".join(allow.get("logins") or []),
                    ",".join(f"{k}={v}" for k, v in labels.items()),
                    _rules_text(allow.get("rules")),
                ]
            )
        return headers, rows
    if kind == "user":
        return ["User", "Roles"], [[name(d), ",".join(spec(d).get("roles") or [])] for d in docs]
    if kind == "bot":
        return ["Bot", "User", "Roles"], [
            [name(d), bot_user_name(name(d)), ",".join(spec(d).get("roles") or [])] for d in docs
        ]
    if kind == "lock":
        rows = []
        for doc in docs:
            target = spec(doc).get("target") or {}
            rows.append(
                [
                    name(doc),
                    ", ".join(f"{k}={v}" for k, v in target.items()),
                    str(spec(doc).get("message") or ""),
                    str(spec(doc).get("expires") or "never"),
                ]
            )
        return ["ID", "Target", "Message", "Expires"], rows
    if kind == "token":
        return ["Token", "Type", "Expiry Time (UTC)"], [
            [
                name(d),
                ",".join(spec(d).get("roles") or []),
                str((d.get("metadata") or {}).get("expires") or "never"),
            ]
            for d in docs
        ]
    return ["Name"], [[name(d)] for d in docs]


def _emit(session: Session, kind: str, docs: list[dict[str, Any]], fmt: str) -> None:
    out = session.out
    if fmt == "json":
        out.write(json.dumps(docs, indent=4) + "\n")
    elif fmt == "text":
        headers, rows = _text_rows(kind, docs)
        out.write(_table(headers, rows))
    else:
        out.write("---\n".join(yaml.safe_dump(doc, sort_keys=True) for doc in docs))


# --- resource references --------------------------------------------------------------


def _kind(word: str) -> str:
    kind = KIND_ALIASES.get(word.strip().lower())
    if kind is None:
        raise CommandError(
            f'unsupported resource: "{word}" - supported kinds: '
            f"{', '.join(sorted(set(KIND_ALIASES.values())))}"
        )
    return kind


def _ref(text: str, *, need_name: bool) -> tuple[str, str]:
    kind_text, _, name = text.partition("/")
    if need_name and not name:
        raise CommandError(f'expected format is type/name, got "{text}" (for example role/editor)')
    return _kind(kind_text), name


# --- commands --------------------------------------------------------------------------


def cmd_get(session: Session, args: argparse.Namespace) -> int:
    collected: list[tuple[str, list[dict[str, Any]]]] = []
    for part in args.ref.split(","):
        kind, name = _ref(part, need_name=False)
        if name:
            session.allow(kind, "read")
            collected.append((kind, [session.store.require(kind, name)]))
        else:
            session.allow(kind, "list", "read")
            collected.append((kind, session.store.list(kind)))
    if not args.with_secrets:
        collected = [(kind, [without_secrets(doc) for doc in docs]) for kind, docs in collected]
    if args.format == "text":
        for kind, docs in collected:
            _emit(session, kind, docs, "text")
    else:
        everything = [doc for _, docs in collected for doc in docs]
        _emit(session, collected[0][0] if collected else "", everything, args.format)
    return 0


def _read_documents(path: str) -> list[dict[str, Any]]:
    try:
        if path == "-":
            text = sys.stdin.read()
        else:
            with open(path, encoding="utf-8") as handle:
                text = handle.read()
    except OSError as exc:
        raise CommandError(f"open {path}: {exc.strerror.lower() if exc.strerror else exc}") from exc
    try:
        loaded = list(yaml.safe_load_all(text))
    except yaml.YAMLError as exc:
        raise CommandError(f"{path}: not valid YAML or JSON ({exc})") from exc
    docs: list[dict[str, Any]] = []
    for item in loaded:
        # A JSON array, as `tctl get --format=json` writes, is accepted too.
        for doc in item if isinstance(item, list) else [item]:
            if doc is None:
                continue
            if not isinstance(doc, dict):
                raise CommandError(f"{path}: every resource must be a mapping, got {doc!r}")
            docs.append(doc)
    if not docs:
        raise CommandError(f"{path}: no resources found, empty input?")
    return docs


def cmd_create(session: Session, args: argparse.Namespace) -> int:
    for doc in _read_documents(args.filename):
        kind = doc.get("kind")
        if not isinstance(kind, str) or kind not in DEFAULT_VERSIONS:
            raise BadParameter(f'creating resources of type "{kind}" is not supported')
        name = str((doc.get("metadata") or {}).get("name") or "")
        exists = bool(name) and session.store.get(kind, name) is not None
        session.allow(kind, "update" if exists else "create")
        noun = CREATE_NOUN.get(kind, kind)
        if exists and not args.force:
            raise AlreadyExists(f'{noun} "{name}" already exists')
        session.admin_action()
        if kind == "user":
            roles = (doc.get("spec") or {}).get("roles") or []
            for role in missing_roles(session.store, roles if isinstance(roles, list) else []):
                print(
                    f'WARN Error checking role "{role}" when upserting user "{name}": '
                    f"{not_found('role', role)}",
                    file=sys.stderr,
                )
        if kind == "bot":
            roles = _split((doc.get("spec") or {}).get("roles") or [])
            session.store.add_bot(name, roles, overwrite=args.force, actor=session.actor)
        else:
            session.store.create(doc, overwrite=args.force, actor=session.actor)
        session.out.write(f'{noun} "{name}" has been {"updated" if exists else "created"}\n')
    return 0


def cmd_rm(session: Session, args: argparse.Namespace) -> int:
    kind, name = _ref(args.ref, need_name=True)
    session.allow(kind, "delete")
    session.admin_action()
    session.store.delete(kind, name)
    session.out.write(f'{DELETE_NOUN.get(kind, kind)} "{name}" has been deleted\n')
    return 0


def _check_roles_exist(session: Session, roles: Sequence[str]) -> None:
    """tctl validates roles on the client side ("server does not do this yet")."""
    for role in missing_roles(session.store, roles):
        raise not_found("role", role)


def cmd_users_add(session: Session, args: argparse.Namespace) -> int:
    roles = _split(args.roles)
    if not roles:
        raise CommandError("please use --roles to assign a user to roles")
    session.allow("user", "create")
    _check_roles_exist(session, roles)
    ttl = parse_go_duration(args.ttl)
    session.admin_action()
    doc = {
        "kind": "user",
        "version": "v2",
        "metadata": {"name": args.account},
        "spec": {"roles": roles, "traits": {"logins": _split(args.logins)}},
    }
    try:
        session.store.create(doc, overwrite=False, actor=session.actor)
    except AlreadyExists:
        session.out.write(
            "NOTE: To update an existing local user:\n"
            f"> tctl users update {args.account} --set-roles {','.join(roles)} # replace roles\n\n"
        )
        raise
    name = authority.cluster_name(session.data_dir)
    token = secrets.token_hex(16)
    session.out.write(
        f'User "{args.account}" has been created but requires a password. Share this URL '
        f"with the user to complete user setup, link is valid for {format_duration(ttl)}:\n"
        f"https://{name}:443/web/invite/{token}\n\n"
        f"NOTE: Make sure {name}:443 points at a Teleport proxy which users can access.\n"
    )
    return 0


def cmd_users_update(session: Session, args: argparse.Namespace) -> int:
    user = session.store.require("user", args.account)
    session.allow("user", "update")
    messages: list[tuple[str, list[str]]] = []
    if args.set_roles is not None:
        roles = _split(args.set_roles)
        _check_roles_exist(session, roles)
        user["spec"]["roles"] = roles
        messages.append(("roles", roles))
    if args.set_logins is not None:
        logins = _split(args.set_logins)
        user["spec"].setdefault("traits", {})["logins"] = logins
        messages.append(("logins", logins))
    if not messages:
        raise CommandError("Nothing to update. Please provide at least one --set flag.")
    session.admin_action()
    session.store.create(user, overwrite=True, actor=session.actor)
    session.out.write(f"User {args.account} has been updated:\n")
    for field, values in messages:
        session.out.write(f"\tNew {field}: {','.join(values)}\n")
    return 0


def cmd_users_rm(session: Session, args: argparse.Namespace) -> int:
    session.allow("user", "delete")
    session.admin_action()
    for login in args.logins.split(","):
        session.store.delete("user", login)
        session.out.write(f'User "{login}" has been deleted\n')
    return 0


def _list(session: Session, kind: str, output_format: str, empty: str) -> int:
    """``users ls`` and ``bots ls``: JSON, or tctl's table, or its "none" line."""
    session.allow(kind, "list", "read")
    docs = session.store.list(kind)
    if output_format == "json":
        session.out.write(json.dumps(docs, indent=4) + "\n")
    elif not docs:
        session.out.write(empty + "\n")
    else:
        headers, rows = _text_rows(kind, docs)
        session.out.write(_table(headers, rows) + "\n")
    return 0


def cmd_users_ls(session: Session, args: argparse.Namespace) -> int:
    return _list(session, "user", args.format, "No users found")


def cmd_bots_add(session: Session, args: argparse.Namespace) -> int:
    roles = _split(args.roles)
    session.allow("bot", "create")
    if not roles:
        print(
            "WARN No roles specified - the bot will not be able to produce outputs until a "
            "role is added to the bot",
            file=sys.stderr,
        )
    ttl = parse_go_duration(args.ttl)
    # AddBot runs the admin MFA ceremony before anything else (bots_command.go).
    session.admin_action()
    bot = session.store.add_bot(args.name, roles, overwrite=False, actor=session.actor)
    if args.logins:
        bot["spec"]["traits"] = [{"name": "logins", "values": _split(args.logins)}]
        session.store.create(bot, overwrite=True, actor=session.actor)
    expires = pki.utcnow() + ttl
    token = secrets.token_hex(16)
    session.store.create(
        {
            "kind": "token",
            "version": "v2",
            "metadata": {"name": token, "expires": expires.strftime("%Y-%m-%dT%H:%M:%SZ")},
            "spec": {"roles": ["Bot"], "join_method": "token", "bot_name": args.name},
        },
        overwrite=False,
        actor=session.actor,
    )
    if args.format == "json":
        body = {
            "user_name": bot["status"]["user_name"],
            "role_name": bot["status"]["role_name"],
            "token_id": token,
            "token_ttl": int(ttl.total_seconds() * 1e9),
        }
        session.out.write(json.dumps(body, indent=2) + "\n")
        return 0
    addr = _auth_addr(session.data_dir)
    minutes = int(ttl.total_seconds() // 60)
    session.out.write(
        f"The bot token: {token}\nThis token will expire in {minutes} minutes.\n\n"
        "Run this as the bot user to begin continuously fetching certificates:\n\n"
        f"> tbot start \\\n   --destination-dir=./tbot-user \\\n   --token={token} \\\n"
        f"   --auth-server={addr} \\\n   --join-method=token\n\n"
        "Please note:\n\n"
        f"  - This invitation token will expire in {minutes} minutes\n"
        f"  - {addr} must be reachable from the new node\n"
    )
    return 0


def _auth_addr(data_dir: str) -> str:
    try:
        with open(os.path.join(data_dir, "teleport.yaml"), encoding="utf-8") as handle:
            data = yaml.safe_load(handle) or {}
        return str((data.get("auth_service") or {}).get("listen_addr") or "127.0.0.1:3025")
    except (OSError, yaml.YAMLError):
        return "127.0.0.1:3025"


def cmd_bots_update(session: Session, args: argparse.Namespace) -> int:
    bot = session.store.require("bot", args.name)
    session.allow("bot", "update")
    current = list(bot["spec"].get("roles") or [])
    # tctl reads an empty flag as no flag (bots_command.go, BotsCommand.UpdateBot
    # and updateBotRoles test the value against ""): "--set-roles ''" changes
    # nothing, while "--set-roles ," is not empty and clears the roles.
    if not args.set_roles and not args.add_roles:
        print("INFO No changes requested, nothing to do", file=sys.stderr)
        return 0
    desired = _split(args.set_roles) if args.set_roles else list(current)
    desired += [r for r in _split(args.add_roles) if r not in desired]
    if set(desired) == set(current):
        print(
            f"INFO Roles will be left unchanged roles:[{' '.join(sorted(current))}]",
            file=sys.stderr,
        )
        print("INFO No changes requested, nothing to do", file=sys.stderr)
        return 0
    _check_roles_exist(session, desired)
    session.admin_action()
    session.store.add_bot(args.name, sorted(desired), overwrite=True, actor=session.actor)
    print(
        f"INFO Bot has been updated, roles will take effect on its next renewal bot:{args.name}",
        file=sys.stderr,
    )
    return 0


def cmd_bots_rm(session: Session, args: argparse.Namespace) -> int:
    session.allow("bot", "delete")
    session.admin_action()
    session.store.delete("bot", args.name)
    session.out.write(f'Bot "{args.name}" deleted successfully.\n')
    return 0


def cmd_bots_ls(session: Session, args: argparse.Namespace) -> int:
    return _list(session, "bot", args.format, "No bots found")


def cmd_auth_sign(session: Session, args: argparse.Namespace) -> int:
    ttl = parse_go_duration(args.ttl)
    if ttl <= datetime.timedelta(0):
        raise CommandError(f"--ttl must be positive, got {args.ttl}")
    target_roles = authority.cert_roles(session.store, args.user)
    if session.user is not None and session.user != args.user:
        check_impersonation(session.store, session.roles, args.user, target_roles)
    if session.user is not None:
        ttl = _capped_ttl(session.store, target_roles, ttl)
    out = os.path.abspath(args.out)
    files = [out] if args.format == "file" else [out + ".key", out + ".crt", out + ".cas"]
    existing = [f for f in files if os.path.exists(f)]
    if existing and not args.overwrite:
        raise AlreadyExists(
            f"not overwriting destination files {', '.join(existing)}; pass --overwrite "
            "to replace them"
        )
    authority.issue_identity(session.data_dir, args.user, ttl, out, fmt=args.format)
    shown = (
        [args.out] if args.format == "file" else [args.out + s for s in (".key", ".crt", ".cas")]
    )
    session.out.write(f"\nThe credentials have been written to {', '.join(shown)}\n")
    return 0


def _capped_ttl(
    store: ResourceStore, roles: Sequence[str], ttl: datetime.timedelta
) -> datetime.timedelta:
    """The TTL Teleport grants a signer that is not the Auth host's built-in admin.

    lib/auth/auth_with_roles.go (ServerWithRoles.generateUserCerts) lets only
    the built-in Admin role override role TTLs; for anyone else
    lib/auth/auth.go (Server.generateUserCert) cuts the TTL to the smallest
    max_session_ttl of the roles the certificate carries
    (AccessChecker.AdjustSessionTTL). tctl prints no warning.
    """
    for name in roles:
        options = ((store.get("role", name) or {}).get("spec") or {}).get("options") or {}
        limit = options.get("max_session_ttl")
        if limit:
            ttl = min(ttl, parse_go_duration(str(limit)))
    return ttl


def cmd_auth_export(session: Session, args: argparse.Namespace) -> int:
    if args.type == "tls-host":
        session.out.write(authority.host_ca_pem(session.data_dir).decode())
    elif args.type == "tls-user":
        session.out.write(authority.user_ca_pem(session.data_dir).decode())
    elif args.type == "host":
        session.out.write(authority.ssh_host_ca_line(session.data_dir).decode() + "\n")
    else:
        session.out.write(authority.ssh_user_ca_line(session.data_dir).decode() + "\n")
    return 0


def cmd_lock(session: Session, args: argparse.Namespace) -> int:
    target = {k: v for k, v in (("user", args.user), ("login", args.login)) if v}
    if not target:
        raise CommandError("at least one lock target must be given, e.g. --user=alice")
    session.allow("lock", "create")
    session.admin_action()
    spec: dict[str, Any] = {"target": target, "message": args.message or ""}
    if args.ttl:
        expires = pki.utcnow() + parse_go_duration(args.ttl)
        spec["expires"] = expires.strftime("%Y-%m-%dT%H:%M:%SZ")
    name = str(uuid.uuid4())
    session.store.upsert_lock(
        {"kind": "lock", "version": "v2", "metadata": {"name": name}, "spec": spec},
        actor=session.actor,
    )
    session.out.write(f'Created a lock with name "{name}".\n')
    return 0


def cmd_status(session: Session, args: argparse.Namespace) -> int:
    session.out.write(
        f"Cluster: {authority.cluster_name(session.data_dir)}\n"
        f"Version: {TELEPORT_VERSION}\n"
        f"CA pin:  {authority.ca_pin(session.data_dir)}\n\n"
    )
    rows = [
        ["host", "standby (never rotated)", "SSH", "active", "Ed25519", "software"],
        ["", "", "TLS", "active", "ECDSA P-256", "software"],
        ["user", "standby (never rotated)", "SSH", "active", "Ed25519", "software"],
        ["", "", "TLS", "active", "ECDSA P-256", "software"],
    ]
    headers = ["authority", "rotation", "protocol", "status", "algorithm", "storage"]
    session.out.write(_table(headers, rows))
    return 0


def _version_text() -> str:
    return f"Teleport v{TELEPORT_VERSION} git:sandbox python{platform.python_version()}\n"


# --- command line ----------------------------------------------------------------------


class _Parser(argparse.ArgumentParser):
    """argparse that fails like tctl: ``ERROR: ...`` on stderr, exit status 1."""

    def error(self, message: str) -> NoReturn:
        self.exit(1, f"{ERROR_PREFIX}{message}\n")


def _global_flags(parser: argparse.ArgumentParser, suppress: bool) -> None:
    default: Any = argparse.SUPPRESS if suppress else None
    parser.add_argument("-c", "--config", default=default, help="teleport.yaml of the sandbox")
    parser.add_argument(
        "--auth-server", default=default, help="Auth Service address; must be listening"
    )
    parser.add_argument("-i", "--identity", default=default, help="identity file to act as")
    parser.add_argument(
        "-d", "--debug", action="store_true", default=argparse.SUPPRESS if suppress else False
    )


Handler = Callable[[Session, argparse.Namespace], int]


def _build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="tctl", description="Admin tool for the sandbox Teleport cluster.")
    _global_flags(parser, suppress=False)
    common = _Parser(add_help=False)
    _global_flags(common, suppress=True)
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    def command(
        group: Any, name: str, handler: Handler | None, help_text: str, **kw: Any
    ) -> argparse.ArgumentParser:
        cmd: argparse.ArgumentParser = group.add_parser(
            name, parents=[common], help=help_text, description=help_text, **kw
        )
        cmd.set_defaults(handler=handler)
        return cmd

    get = command(sub, "get", cmd_get, "Print a YAML declaration of various Teleport resources.")
    get.add_argument("ref", help="KIND[/NAME], e.g. role/editor or users")
    get.add_argument("--format", choices=("yaml", "json", "text"), default="yaml")
    get.add_argument("--with-secrets", action="store_true")

    create = command(
        sub, "create", cmd_create, "Create or update a Teleport resource from a YAML file."
    )
    create.add_argument("filename", help="YAML/JSON file with one or more resources, - for stdin")
    create.add_argument("-f", "--force", action="store_true", help="overwrite existing resources")

    rm = command(sub, "rm", cmd_rm, "Delete a resource.", aliases=["del"])
    rm.add_argument("ref", help="KIND/NAME, e.g. role/devops")

    users = command(sub, "users", None, "Manage user accounts.")
    users_sub = users.add_subparsers(dest="users_command", required=True, parser_class=_Parser)
    add = command(users_sub, "add", cmd_users_add, "Generate a user invitation token.")
    add.add_argument("account")
    add.add_argument("--roles", action="append", default=None)
    add.add_argument("--logins", action="append", default=None)
    add.add_argument("--ttl", default=SIGNUP_TOKEN_TTL)
    add.add_argument("--format", choices=("text", "json"), default="text")
    update = command(users_sub, "update", cmd_users_update, "Update user account.")
    update.add_argument("account")
    update.add_argument("--set-roles", default=None)
    update.add_argument("--set-logins", default=None)
    users_rm = command(users_sub, "rm", cmd_users_rm, "Deletes user accounts.", aliases=["del"])
    users_rm.add_argument("logins", help="comma-separated list of users")
    users_ls = command(users_sub, "ls", cmd_users_ls, "Lists all user accounts.")
    users_ls.add_argument("--format", choices=("text", "json"), default="text")

    bots = command(sub, "bots", None, "Manage Machine ID bots on the cluster.", aliases=["bot"])
    bots_sub = bots.add_subparsers(dest="bots_command", required=True, parser_class=_Parser)
    bots_add = command(bots_sub, "add", cmd_bots_add, "Add a new certificate renewal bot.")
    bots_add.add_argument("name")
    bots_add.add_argument("--roles", default="")
    bots_add.add_argument("--logins", action="append", default=None)
    bots_add.add_argument("--ttl", default=BOT_TOKEN_TTL)
    bots_add.add_argument("--format", choices=("text", "json"), default="text")
    bots_update = command(bots_sub, "update", cmd_bots_update, "Update an existing bot.")
    bots_update.add_argument("name")
    bots_update.add_argument("--set-roles", default=None)
    bots_update.add_argument("--add-roles", default=None)
    bots_rm = command(bots_sub, "rm", cmd_bots_rm, "Permanently remove a bot.")
    bots_rm.add_argument("name")
    bots_ls = command(bots_sub, "ls", cmd_bots_ls, "List all bots.")
    bots_ls.add_argument("--format", choices=("text", "json"), default="text")

    auth = command(sub, "auth", None, "Operations with user and host certificate authorities.")
    auth_sub = auth.add_subparsers(dest="auth_command", required=True, parser_class=_Parser)
    sign = command(auth_sub, "sign", cmd_auth_sign, "Create an identity file(s) for a given user.")
    sign.add_argument("--user", required=True)
    sign.add_argument("--format", choices=("file", "tls"), default="file")
    sign.add_argument("-o", "--out", required=True)
    sign.add_argument("--ttl", default=DEFAULT_SIGN_TTL)
    sign.add_argument("--overwrite", action="store_true")
    export = command(auth_sub, "export", cmd_auth_export, "Export public cluster CA certificates.")
    export.add_argument(
        "--type", choices=("tls-host", "tls-user", "host", "user"), default="tls-host"
    )

    lock = command(sub, "lock", cmd_lock, "Create a new lock.")
    lock.add_argument("--user", default=None)
    lock.add_argument("--login", default=None)
    lock.add_argument("--message", default=None)
    lock.add_argument("--ttl", default=None)

    command(sub, "status", cmd_status, "Report cluster status.")
    command(sub, "version", None, "Print the version of your tctl binary.")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one tctl command; returns the exit status (0 ok, 1 error)."""
    parser = _build_parser()
    args = parser.parse_args(argv)
    if args.command == "version":
        sys.stdout.write(_version_text())
        return 0
    handler: Handler = args.handler
    try:
        session = _open_session(args, sys.stdout)
        return handler(session, args)
    except _CannotConnect as exc:
        print(exc, file=sys.stderr)
        return 1
    except (SandboxError, pki.PkiError) as exc:
        if args.debug:
            traceback.print_exc()
        print(f"{ERROR_PREFIX}{exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
