"""The sandbox's resource store and RBAC, against real files and real processes."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from teleport_sandbox.teleport import resources
from teleport_sandbox.teleport.resources import (
    AccessDenied,
    AlreadyExists,
    BadParameter,
    NotFound,
    ResourceStore,
    check_access,
    check_impersonation,
)


@pytest.fixture
def store(tmp_path: Path) -> ResourceStore:
    store = ResourceStore(str(tmp_path / "data"))
    store.ensure_presets()
    return store


def role(
    name: str, allow: list[dict[str, list[str]]], deny: list[dict[str, list[str]]] | None = None
) -> dict[str, object]:
    spec: dict[str, object] = {"allow": {"rules": allow}}
    if deny is not None:
        spec["deny"] = {"rules": deny}
    return {"kind": "role", "version": "v7", "metadata": {"name": name}, "spec": spec}


def test_presets_exist_once(store: ResourceStore) -> None:
    first = {r["metadata"]["name"]: r["metadata"]["revision"] for r in store.list("role")}
    before = os.stat(store.path).st_ino
    store.ensure_presets()
    assert os.stat(store.path).st_ino == before  # nothing missing: the file is not rewritten
    second = {r["metadata"]["name"]: r["metadata"]["revision"] for r in store.list("role")}
    assert first == second
    assert sorted(first) == ["access", "auditor", "editor"]


def test_create_fills_server_fields_and_revisions_change(store: ResourceStore) -> None:
    created = store.create(
        role("r", [{"resources": ["event"], "verbs": ["list"]}]), overwrite=False
    )
    assert created["spec"]["options"]["max_session_ttl"] == "30h0m0s"
    assert created["spec"]["deny"] == {}
    assert created["spec"]["allow"] == {"rules": [{"resources": ["event"], "verbs": ["list"]}]}
    assert store.get("role", "r") == created
    updated, new = store.upsert(role("r", [{"resources": ["event"], "verbs": ["read"]}]))
    assert new is False
    assert updated["metadata"]["revision"] != created["metadata"]["revision"]
    # Explicit options are kept; only missing ones get defaults.
    doc = role("s", [])
    doc["spec"]["options"] = {"max_session_ttl": "10h"}  # type: ignore[index]
    assert store.create(doc, overwrite=False)["spec"]["options"]["max_session_ttl"] == "10h"


def test_user_fields_and_role_references(store: ResourceStore) -> None:
    # Like Teleport's auth server, the store keeps a user naming an unknown role
    # (that user is denied everything); tctl checks and warns on the client side.
    ghost = store.create(
        {"kind": "user", "metadata": {"name": "g"}, "spec": {"roles": ["ghost", "access"]}},
        overwrite=False,
    )
    assert ghost["spec"]["roles"] == ["ghost", "access"]
    assert resources.missing_roles(store, ghost["spec"]["roles"]) == ["ghost"]
    user = store.create(
        {"kind": "user", "metadata": {"name": "u"}, "spec": {"roles": ["access"]}},
        overwrite=False,
        actor="admin",
    )
    assert user["version"] == "v2"
    assert user["spec"]["created_by"]["user"]["name"] == "admin"
    assert user["status"]["is_locked"] is False
    again = store.create(
        {"kind": "user", "metadata": {"name": "u"}, "spec": {"roles": ["editor"]}},
        overwrite=True,
        actor="someone-else",
    )
    assert again["spec"]["created_by"] == user["spec"]["created_by"]
    assert again["spec"]["roles"] == ["editor"]


def test_exists_notfound_and_in_use(store: ResourceStore) -> None:
    store.create(role("r", []), overwrite=False)
    with pytest.raises(AlreadyExists, match='role "r" already exists'):
        store.create(role("r", []), overwrite=False)
    store.create(
        {"kind": "user", "metadata": {"name": "u"}, "spec": {"roles": ["r"]}}, overwrite=False
    )
    with pytest.raises(BadParameter, match=r"failed to delete role that still in use.*held by u"):
        store.delete("role", "r")
    store.delete("user", "u")
    store.delete("role", "r")
    assert store.get("role", "r") is None
    with pytest.raises(NotFound, match="role r is not found"):
        store.delete("role", "r")
    with pytest.raises(NotFound, match='user "x" is not found'):
        store.require("user", "x")


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ({"metadata": {"name": "x"}}, "missing resource kind"),
        ({"kind": "node", "metadata": {"name": "x"}}, 'resources of type "node" is not supported'),
        ({"kind": "role", "metadata": {}}, 'missing "metadata.name"'),
        ({"kind": "role", "metadata": {"name": "a/b"}}, 'role name "a/b" is invalid'),
        ({"kind": "role", "version": 7, "metadata": {"name": "a"}}, "version must look like"),
        (
            {
                "kind": "role",
                "metadata": {"name": "a"},
                "spec": {"allow": {"rules": [{"verbs": "x"}]}},
            },
            r"spec.allow.rules\[0\].verbs must be a list",
        ),
        ({"kind": "user", "metadata": {"name": "a"}, "spec": {"roles": "x"}}, "spec.roles must"),
        ({"kind": "lock", "metadata": {"name": "a"}, "spec": {}}, "spec.target must name"),
    ],
)
def test_bad_documents(store: ResourceStore, doc: dict[str, object], message: str) -> None:
    with pytest.raises(BadParameter, match=message):
        store.create(doc, overwrite=True)


def test_state_file_is_private_and_shared_between_stores(store: ResourceStore) -> None:
    other = ResourceStore(store.data_dir)
    assert other.get("role", "late") is None
    store.create(role("late", []), overwrite=False)
    assert other.get("role", "late") is not None  # re-read after the file changed
    assert stat.S_IMODE(os.stat(store.path).st_mode) == 0o600
    on_disk = json.loads(Path(store.path).read_text())
    assert "late" in on_disk["resources"]["role"]
    # Returned documents are copies: mutating them does not change the store.
    got = other.get("role", "late")
    assert got is not None
    got["spec"]["allow"] = {"rules": [{"resources": ["*"], "verbs": ["*"]}]}
    assert other.get("role", "late")["spec"]["allow"] == {"rules": []}  # type: ignore[index]


def test_concurrent_writers_from_processes_lose_nothing(store: ResourceStore) -> None:
    script = textwrap.dedent(
        """
        import sys
        from teleport_sandbox.teleport.resources import ResourceStore
        store = ResourceStore(sys.argv[1])
        for i in range(15):
            store.create({"kind": "lock", "metadata": {"name": f"{sys.argv[2]}-{i}"},
                          "spec": {"target": {"user": "u"}}}, overwrite=False)
        """
    )
    procs = [
        subprocess.Popen([sys.executable, "-c", script, store.data_dir, tag]) for tag in ("a", "b")
    ]
    for proc in procs:
        assert proc.wait(timeout=60) == 0
    names = {doc["metadata"]["name"] for doc in store.list("lock")}
    assert names == {f"{tag}-{i}" for tag in ("a", "b") for i in range(15)}


def test_secrets_are_omitted_on_request(store: ResourceStore) -> None:
    saml = store.create(
        {
            "kind": "saml",
            "metadata": {"name": "okta"},
            "spec": {"signing_key_pair": {"private_key": "PRIV", "cert": "CERT"}},
        },
        overwrite=False,
    )
    assert saml["spec"]["signing_key_pair"]["private_key"] == "PRIV"
    shown = resources.without_secrets(saml)
    assert shown["spec"]["signing_key_pair"] == {"cert": "CERT"}
    github = {
        "kind": "github",
        "metadata": {"name": "gh"},
        "spec": {"client_secret": "S", "client_id": "I"},
    }
    assert resources.without_secrets(github)["spec"] == {"client_id": "I"}
    assert github["spec"]["client_secret"] == "S"  # type: ignore[index]


def test_bots_bring_their_user_and_role(store: ResourceStore) -> None:
    store.create(role("reader", [{"resources": ["event"], "verbs": ["list"]}]), overwrite=False)
    bot = store.add_bot("b1", ["reader"])
    assert bot["status"] == {"user_name": "bot-b1", "role_name": "bot-b1"}
    user = store.require("user", "bot-b1")
    assert user["spec"]["roles"] == ["bot-b1"]
    impersonate = store.require("role", "bot-b1")["spec"]["allow"]["impersonate"]
    assert impersonate["roles"] == ["reader"]
    with pytest.raises(AlreadyExists, match='bot "b1" already exists'):
        store.add_bot("b1", ["reader"])
    assert store.add_bot("b2", ["nope"])["spec"]["roles"] == ["nope"]  # stored, as Teleport does
    store.delete("bot", "b1")
    assert store.get("user", "bot-b1") is None
    assert store.get("role", "bot-b1") is None


def test_check_access_allow_deny_and_wildcards(store: ResourceStore) -> None:
    check_access(store, ["editor"], "role", "create")
    check_access(store, ["auditor"], "event", "list")
    check_access(store, ["auditor"], "session", "read")
    with pytest.raises(AccessDenied) as info:
        check_access(store, ["auditor"], "role", "create")
    assert str(info.value) == 'access denied to perform action "create" on "role"'
    store.create(
        role("no-sessions", [], deny=[{"resources": ["session"], "verbs": ["*"]}]), overwrite=False
    )
    with pytest.raises(AccessDenied, match='"read" on "session"'):
        check_access(store, ["editor", "no-sessions"], "session", "read")
    check_access(store, ["editor", "no-sessions"], "event", "read")
    # The access preset's session rule has a `where` clause: never a blanket grant.
    check_access(store, ["access"], "event", "list")
    with pytest.raises(AccessDenied):
        check_access(store, ["access"], "session", "list")
    with pytest.raises(AccessDenied):
        check_access(store, [], "event", "list")


def test_deleted_role_denies_everything(store: ResourceStore) -> None:
    with pytest.raises(AccessDenied, match="role gone is not found"):
        check_access(store, ["editor", "gone"], "event", "list")


def test_impersonation(store: ResourceStore) -> None:
    doc = role("imp", [])
    doc["spec"]["allow"]["impersonate"] = {"users": ["svc"], "roles": ["auditor"]}  # type: ignore[index]
    store.create(doc, overwrite=False)
    check_impersonation(store, ["imp"], "svc", ["auditor"])
    with pytest.raises(AccessDenied, match='impersonation of user "svc"'):
        check_impersonation(store, ["imp"], "svc", ["auditor", "editor"])
    with pytest.raises(AccessDenied, match='impersonation of user "other"'):
        check_impersonation(store, ["imp"], "other", ["auditor"])
    with pytest.raises(AccessDenied):
        check_impersonation(store, ["editor"], "svc", ["auditor"])


def test_locks(store: ResourceStore) -> None:
    assert resources.active_lock(store, "mallory") is None
    lock = store.upsert_lock(
        {
            "kind": "lock",
            "version": "v2",
            "metadata": {"name": "event-handler-auto-lock-mallory-root"},
            "spec": {"target": {"user": "mallory", "login": "root"}, "message": "too many"},
        }
    )
    assert lock["spec"]["created_at"]
    assert resources.active_lock(store, "mallory") == store.get("lock", lock["metadata"]["name"])
    store.upsert_lock(
        {
            "metadata": {"name": "old"},
            "spec": {"target": {"user": "eve"}, "expires": "2001-01-01T00:00:00.123456789Z"},
        }
    )
    assert resources.active_lock(store, "eve") is None
    with pytest.raises(BadParameter, match='expected kind "lock"'):
        store.upsert_lock({"kind": "role", "metadata": {"name": "x"}})
