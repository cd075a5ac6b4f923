"""``sandbox-tctl`` run as a real subprocess against a real sandbox data directory."""

from __future__ import annotations

import datetime
import json
import os
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from teleport_event_handler import pki
from teleport_sandbox.teleport import DATA_DIR_ENV, TELEPORT_VERSION, authority
from teleport_sandbox.teleport.tctl import ADMIN_MFA_ENV, ERROR_PREFIX

TCTL = str(Path(sys.executable).with_name("sandbox-tctl"))

GUIDE_ROLE_AND_USER = """\
kind: role
metadata:
  name: teleport-event-handler
spec:
  allow:
    rules:
      - resources: ['event', 'session']
        verbs: ['list','read']
version: v5
---
kind: user
metadata:
  name: teleport-event-handler
spec:
  roles: ['teleport-event-handler']
version: v2
"""


class Tctl:
    """Runs sandbox-tctl with a clean environment (no inherited sandbox variable)."""

    def __init__(self, data_dir: str) -> None:
        self.data_dir = data_dir
        self.config = os.path.join(data_dir, "teleport.yaml")

    def raw(
        self, *args: str, stdin: str | None = None, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        clean = {k: v for k, v in os.environ.items() if k not in (DATA_DIR_ENV, ADMIN_MFA_ENV)}
        clean.update(env or {})
        result = subprocess.run(
            [TCTL, *args], input=stdin, capture_output=True, text=True, env=clean, timeout=60
        )
        # tctl colours its prefix red (test_errors_are_red_like_tctl); compare plain text.
        result.stderr = result.stderr.replace(ERROR_PREFIX, "ERROR: ")
        return result

    def admin(self, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        return self.raw("-c", self.config, *args, stdin=stdin)

    def ok(self, *args: str, stdin: str | None = None) -> str:
        result = self.admin(*args, stdin=stdin)
        assert result.returncode == 0, result.stderr
        return result.stdout

    def fails(self, *args: str, stdin: str | None = None) -> str:
        result = self.admin(*args, stdin=stdin)
        assert result.returncode == 1, (result.stdout, result.stderr)
        assert result.stderr.startswith("ERROR: "), result.stderr
        return result.stderr

    def as_identity(
        self, identity: str, *args: str, stdin: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        return self.raw("-c", self.config, "-i", identity, *args, stdin=stdin)


@pytest.fixture(scope="module")
def tctl(tmp_path_factory: pytest.TempPathFactory) -> Tctl:
    data_dir = str(tmp_path_factory.mktemp("tctl") / "cluster")
    authority.init_authority(data_dir, "tctl.example.com")
    return Tctl(data_dir)


def test_console_script_exists() -> None:
    assert os.access(TCTL, os.X_OK), f"{TCTL} missing: run .venv/bin/pip install -e ."


def test_version_and_status(tctl: Tctl) -> None:
    version = tctl.raw("version")
    assert version.returncode == 0
    assert version.stdout.startswith(f"Teleport v{TELEPORT_VERSION} ")
    status = tctl.ok("status")
    assert "Cluster: tctl.example.com\n" in status
    assert f"Version: {TELEPORT_VERSION}\n" in status
    assert f"CA pin:  {authority.ca_pin(tctl.data_dir)}\n" in status
    assert authority.ca_pin(tctl.data_dir).startswith("sha256:")


def test_not_logged_in(tctl: Tctl, tmp_path: Path) -> None:
    result = tctl.raw("get", "roles")
    assert result.returncode == 1
    assert result.stderr.startswith("ERROR: not logged in")
    assert "--identity" in result.stderr and "-c/--config" in result.stderr
    assert result.stdout == ""
    lost = tctl.raw("-i", str(tmp_path / "identity"), "get", "roles")
    assert lost.returncode == 1
    assert f"set {DATA_DIR_ENV}" in lost.stderr
    missing = tctl.raw("-c", str(tmp_path / "nope.yaml"), "get", "roles")
    assert missing.returncode == 1
    assert "nope.yaml" in missing.stderr
    # The environment variable names the cluster like -c does (local admin).
    via_env = tctl.raw("get", "role/editor", env={DATA_DIR_ENV: tctl.data_dir})
    assert via_env.returncode == 0, via_env.stderr


def test_usage_errors_exit_1(tctl: Tctl) -> None:
    assert tctl.fails("frobnicate")
    assert "expected format is type/name" in tctl.fails("rm", "role")
    assert 'unsupported resource: "widgets"' in tctl.fails("get", "widgets")
    assert "please use --roles" in tctl.fails("users", "add", "nobody-roles")


def test_role_lifecycle(tctl: Tctl, tmp_path: Path) -> None:
    path = tmp_path / "role.yaml"
    path.write_text(
        "kind: role\nversion: v7\nmetadata:\n  name: lifecycle\nspec:\n  allow:\n"
        "    rules:\n    - resources: [event]\n      verbs: [list]\n"
    )
    assert tctl.ok("create", str(path)) == 'role "lifecycle" has been created\n'
    assert tctl.fails("create", str(path)) == 'ERROR: role "lifecycle" already exists\n'
    assert tctl.ok("create", "-f", str(path)) == 'role "lifecycle" has been updated\n'

    docs = json.loads(tctl.ok("get", "role/lifecycle", "--format=json"))
    assert isinstance(docs, list) and len(docs) == 1
    role = docs[0]
    assert role["kind"] == "role" and role["version"] == "v7"
    assert role["spec"]["allow"]["rules"] == [{"resources": ["event"], "verbs": ["list"]}]
    assert role["spec"]["options"]["max_session_ttl"] == "30h0m0s"
    assert role["spec"]["deny"] == {}
    assert role["metadata"]["revision"]

    from_yaml = list(yaml.safe_load_all(tctl.ok("get", "role/lifecycle")))
    assert from_yaml == docs
    every = list(yaml.safe_load_all(tctl.ok("get", "roles")))
    assert {"access", "editor", "auditor", "lifecycle"} <= {d["metadata"]["name"] for d in every}
    text = tctl.ok("get", "roles", "--format=text")
    assert text.splitlines()[0].split()[0] == "Role"
    assert any(line.startswith("lifecycle") and "event:list" in line for line in text.splitlines())

    assert tctl.ok("rm", "role/lifecycle") == 'role "lifecycle" has been deleted\n'
    assert tctl.fails("get", "role/lifecycle") == "ERROR: role lifecycle is not found\n"
    assert tctl.fails("rm", "role/lifecycle") == "ERROR: role lifecycle is not found\n"
    assert json.loads(tctl.ok("get", "locks", "--format=json")) == []


def test_create_from_stdin_multi_document_and_json_round_trip(tctl: Tctl, tmp_path: Path) -> None:
    out = tctl.ok("create", "-f", "-", stdin=GUIDE_ROLE_AND_USER)
    assert out.splitlines() == [
        'role "teleport-event-handler" has been created',
        'user "teleport-event-handler" has been created',
    ]
    user = json.loads(tctl.ok("get", "user/teleport-event-handler", "--format=json"))[0]
    assert user["spec"]["roles"] == ["teleport-event-handler"]
    assert user["spec"]["created_by"]["user"]["name"]
    # What `get --format=json` prints can be fed back to `create -f`.
    dump = tmp_path / "dump.json"
    dump.write_text(tctl.ok("get", "role/teleport-event-handler", "--format=json"))
    assert tctl.ok("create", "-f", str(dump)) == 'role "teleport-event-handler" has been updated\n'
    warned = tctl.admin(
        "create", "-", stdin="kind: user\nmetadata: {name: early}\nspec: {roles: [later]}\n"
    )
    assert warned.returncode == 0, warned.stderr
    assert warned.stdout == 'user "early" has been created\n'
    assert 'Error checking role "later" when upserting user "early"' in warned.stderr
    assert "no resources found" in tctl.fails("create", "-", stdin="")
    assert 'creating resources of type "node"' in tctl.fails(
        "create", "-", stdin="kind: node\nmetadata: {name: n}\n"
    )


def test_connector_secrets(tctl: Tctl) -> None:
    docs = (
        "kind: saml\nversion: v2\nmetadata: {name: okta}\nspec:\n"
        "  signing_key_pair: {private_key: SECRET-KEY, cert: PUBLIC-CERT}\n"
        "---\nkind: github\nversion: v3\nmetadata: {name: gh}\n"
        "spec: {client_id: ID, client_secret: SECRET-GH}\n"
    )
    assert tctl.ok("create", "-", stdin=docs).splitlines() == [
        'authentication connector "okta" has been created',
        'authentication connector "gh" has been created',
    ]
    shown = tctl.ok("get", "saml/okta")
    assert "SECRET-KEY" not in shown and "PUBLIC-CERT" in shown
    assert "SECRET-KEY" in tctl.ok("get", "saml/okta", "--with-secrets")
    github = json.loads(tctl.ok("get", "github", "--format=json"))
    assert github[0]["spec"] == {"client_id": "ID"}
    assert "SECRET-GH" in tctl.ok("get", "github/gh", "--with-secrets", "--format=json")
    assert tctl.ok("rm", "saml/okta") == 'SAML connector "okta" has been deleted\n'


def test_users_commands(tctl: Tctl) -> None:
    assert tctl.fails("users", "add", "bob", "--roles=nope") == "ERROR: role nope is not found\n"
    out = tctl.ok("users", "add", "bob", "--roles=access,auditor", "--logins=root")
    assert out.startswith('User "bob" has been created but requires a password.')
    assert "link is valid for 1h:" in out
    dup = tctl.admin("users", "add", "bob", "--roles=access")
    assert dup.returncode == 1
    assert dup.stderr == 'ERROR: user "bob" already exists\n'
    assert "tctl users update bob --set-roles access" in dup.stdout

    listing = tctl.ok("users", "ls").splitlines()
    assert listing[0].split() == ["User", "Roles"]
    assert any(line.split() == ["bob", "access,auditor"] for line in listing)
    users = json.loads(tctl.ok("users", "ls", "--format=json"))
    bob = next(u for u in users if u["metadata"]["name"] == "bob")
    assert bob["spec"]["traits"]["logins"] == ["root"]

    out = tctl.ok("users", "update", "bob", "--set-roles", "editor,auditor")
    assert out == "User bob has been updated:\n\tNew roles: editor,auditor\n"
    bob = json.loads(tctl.ok("get", "user/bob", "--format=json"))[0]
    assert bob["spec"]["roles"] == ["editor", "auditor"]
    assert "Nothing to update" in tctl.fails("users", "update", "bob")
    assert tctl.fails("users", "update", "ghost", "--set-roles", "access") == (
        'ERROR: user "ghost" is not found\n'
    )
    assert tctl.ok("users", "rm", "bob") == 'User "bob" has been deleted\n'
    assert tctl.fails("users", "rm", "bob") == 'ERROR: user "bob" is not found\n'


def test_bots_commands(tctl: Tctl) -> None:
    out = tctl.ok("bots", "add", "exporter", "--roles=auditor")
    assert out.startswith("The bot token: ")
    token = out.split()[3]
    tokens = json.loads(tctl.ok("get", f"token/{token}", "--format=json"))
    assert tokens[0]["spec"]["bot_name"] == "exporter"
    assert 'bot "exporter" already exists' in tctl.fails(
        "bots", "add", "exporter", "--roles=auditor"
    )

    update = tctl.admin("bots", "update", "exporter", "--add-roles", "access")
    assert update.returncode == 0, update.stderr
    assert "Bot has been updated" in update.stderr
    bot = json.loads(tctl.ok("get", "bot/exporter", "--format=json"))[0]
    assert sorted(bot["spec"]["roles"]) == ["access", "auditor"]  # existing roles kept
    again = tctl.admin("bots", "update", "exporter", "--add-roles", "access")
    assert again.returncode == 0 and "nothing to do" in again.stderr
    assert "role nope is not found" in tctl.fails(
        "bots", "update", "exporter", "--add-roles", "nope"
    )

    listing = tctl.ok("bots", "ls").splitlines()
    assert listing[0].split() == ["Bot", "User", "Roles"]
    assert any(line.split() == ["exporter", "bot-exporter", "access,auditor"] for line in listing)
    assert json.loads(tctl.ok("bots", "ls", "--format=json"))[0]["metadata"]["name"] == "exporter"
    assert tctl.ok("bots", "rm", "exporter") == 'Bot "exporter" deleted successfully.\n'
    assert tctl.ok("bots", "ls") == "No bots found\n"


def test_auth_sign_writes_a_cluster_identity(tctl: Tctl, tmp_path: Path) -> None:
    tctl.ok("create", "-f", "-", stdin=GUIDE_ROLE_AND_USER)
    out = str(tmp_path / "identity")
    args = ("auth", "sign", "--user=teleport-event-handler", f"--out={out}", "--ttl=8760h")
    assert tctl.ok(*args) == f"\nThe credentials have been written to {out}\n"
    assert stat.S_IMODE(os.stat(out).st_mode) == 0o600

    parts = pki.parse_identity_file(Path(out).read_bytes(), out)
    tls = pki.load_certificate(parts.tls_cert_pem)
    user_ca = pki.load_certificate(authority.user_ca_pem(tctl.data_dir))
    assert pki.is_signed_by(tls, user_ca)
    lifetime = tls.not_valid_after_utc - pki.utcnow()
    assert datetime.timedelta(hours=8759) < lifetime <= datetime.timedelta(hours=8760)
    assert parts.ssh_cert and parts.ssh_ca_lines
    server = pki.load_certificate(authority.server_credentials(tctl.data_dir)[1])
    assert [pki.is_signed_by(server, pki.load_certificate(ca)) for ca in parts.tls_ca_pems] == [
        True
    ]
    exported = tctl.ok("auth", "export", "--type=tls-host")
    assert exported.encode() == parts.tls_ca_pems[0] == authority.host_ca_pem(tctl.data_dir)

    before = Path(out).read_bytes()
    refused = tctl.fails(*args)
    assert refused.startswith(f"ERROR: not overwriting destination files {out}")
    assert Path(out).read_bytes() == before
    tctl.ok(*args, "--overwrite")
    assert Path(out).read_bytes() != before

    tls_out = str(tmp_path / "tls")
    written = tctl.ok(
        "auth", "sign", "--user=teleport-event-handler", "--format=tls", "-o", tls_out
    )
    assert written.strip().endswith(f"{tls_out}.key, {tls_out}.crt, {tls_out}.cas")
    cert = pki.load_certificate(Path(tls_out + ".crt").read_bytes())
    lifetime = cert.not_valid_after_utc - pki.utcnow()
    assert datetime.timedelta(hours=11, minutes=59) < lifetime <= datetime.timedelta(hours=12)

    assert tctl.fails("auth", "sign", "--user=ghost", f"--out={tmp_path / 'g'}") == (
        'ERROR: user "ghost" is not found\n'
    )
    assert "invalid duration" in tctl.fails(*args[:-1], "--ttl=12 hours", "--overwrite")


def _identity(tctl: Tctl, tmp_path: Path, user: str, roles: str) -> str:
    tctl.admin("users", "rm", user)
    tctl.ok("users", "add", user, f"--roles={roles}")
    cluster = os.path.basename(os.path.dirname(tctl.data_dir))
    path = str(tmp_path / f"{cluster}-{user}.identity")
    tctl.ok("auth", "sign", f"--user={user}", f"--out={path}", "--ttl=1h")
    return path


def test_identity_rbac(tctl: Tctl, tmp_path: Path) -> None:
    tctl.ok("create", "-f", "-", stdin=GUIDE_ROLE_AND_USER)
    reader = _identity(tctl, tmp_path, "reader", "teleport-event-handler")
    denied = tctl.as_identity(reader, "get", "roles")
    assert denied.returncode == 1
    assert denied.stderr == 'ERROR: access denied to perform action "list" on "role"\n'
    role = "kind: role\nmetadata: {name: made-by-identity}\nspec: {}\n"
    denied = tctl.as_identity(reader, "create", "-", stdin=role)
    assert denied.stderr == 'ERROR: access denied to perform action "create" on "role"\n'
    denied = tctl.as_identity(reader, "users", "ls")
    assert denied.stderr == 'ERROR: access denied to perform action "list" on "user"\n'
    # The same identity, with the cluster named by the environment variable.
    via_env = tctl.raw("-i", reader, "get", "roles", env={DATA_DIR_ENV: tctl.data_dir})
    assert via_env.stderr == 'ERROR: access denied to perform action "list" on "role"\n'

    editor = _identity(tctl, tmp_path, "ed", "editor")
    made = tctl.as_identity(editor, "create", "-", stdin=role)
    assert made.returncode == 0, made.stderr
    assert made.stdout == 'role "made-by-identity" has been created\n'
    created = json.loads(tctl.ok("get", "role/made-by-identity", "--format=json"))[0]
    assert created["metadata"]["name"] == "made-by-identity"
    assert tctl.as_identity(editor, "rm", "role/made-by-identity").returncode == 0

    # create-only role: a new resource works, overwriting one needs "update".
    tctl.ok(
        "create", "-f", "-",
        stdin="kind: role\nmetadata: {name: creator}\nspec:\n  allow:\n    rules:\n"
        "    - resources: [role]\n      verbs: [create]\n",
    )  # fmt: skip
    creator = _identity(tctl, tmp_path, "creator-user", "creator")
    assert tctl.as_identity(creator, "create", "-", stdin=role).returncode == 0
    again = tctl.as_identity(creator, "create", "-f", "-", stdin=role)
    assert again.stderr == 'ERROR: access denied to perform action "update" on "role"\n'


def test_identity_auth_sign_needs_impersonation(tctl: Tctl, tmp_path: Path) -> None:
    tctl.ok("create", "-f", "-", stdin=GUIDE_ROLE_AND_USER)
    editor = _identity(tctl, tmp_path, "signer", "editor")
    target = str(tmp_path / "fwd-identity")
    args = ("auth", "sign", "--user=teleport-event-handler", f"--out={target}")
    denied = tctl.as_identity(editor, *args)
    assert denied.returncode == 1
    assert 'impersonation of user "teleport-event-handler" is not allowed' in denied.stderr
    assert not os.path.exists(target)
    # The guide's impersonator role makes it work.
    tctl.ok(
        "create", "-f", "-",
        stdin="kind: role\nversion: v5\nmetadata: {name: teleport-event-handler-impersonator}\n"
        "spec:\n  options: {max_session_ttl: 10h}\n  allow:\n    impersonate:\n"
        "      users: [teleport-event-handler]\n      roles: [teleport-event-handler]\n",
    )  # fmt: skip
    tctl.ok(
        "users", "update", "signer", "--set-roles", "editor,teleport-event-handler-impersonator"
    )
    editor = str(tmp_path / "signer2.identity")
    tctl.ok("auth", "sign", "--user=signer", f"--out={editor}")
    allowed = tctl.as_identity(editor, *args)
    assert allowed.returncode == 0, allowed.stderr
    peer = authority.load_identity(tctl.data_dir, target)
    assert peer.user == "teleport-event-handler"


def test_expired_foreign_deleted_role_and_locked_identities(
    tctl: Tctl, tmp_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    good = _identity(tctl, tmp_path, "victim", "editor")
    assert tctl.as_identity(good, "get", "roles").returncode == 0

    # Expired: same key material layout, certificate from the user CA but in the past.
    parts = pki.parse_identity_file(Path(good).read_bytes())
    user_ca = pki.load_certificate(authority.user_ca_pem(tctl.data_dir))
    user_ca_key = pki.load_private_key(Path(tctl.data_dir, "ca", "user_ca.key").read_bytes())
    key = pki.load_private_key(parts.private_key_pem)
    old = pki.issue_leaf(
        user_ca,
        user_ca_key,
        key.public_key(),
        "victim",
        "client",
        ttl=datetime.timedelta(hours=1),
        organizations=("editor",),
        not_before=pki.utcnow() - datetime.timedelta(hours=3),
    )
    expired = tmp_path / "expired.identity"
    expired.write_bytes(pki.build_identity_file(parts._replace(tls_cert_pem=pki.cert_pem(old))))
    result = tctl.as_identity(str(expired), "get", "roles")
    assert result.returncode == 1
    assert f"identity file {expired} is not accepted" in result.stderr
    assert "expired" in result.stderr

    # Foreign: an identity issued by another sandbox cluster.
    other = str(tmp_path_factory.mktemp("other") / "cluster")
    authority.init_authority(other, "other.example.com")
    other_tctl = Tctl(other)
    foreign = _identity(other_tctl, tmp_path, "victim", "editor")
    result = tctl.as_identity(foreign, "get", "roles")
    assert result.returncode == 1
    assert "not signed by the user CA" in result.stderr

    # A role that no longer exists denies everything, even with editor alongside.
    tctl.ok("create", "-", stdin="kind: role\nmetadata: {name: ephemeral}\nspec: {}\n")
    both = _identity(tctl, tmp_path, "holder", "editor,ephemeral")
    tctl.ok("users", "update", "holder", "--set-roles", "editor")
    tctl.ok("rm", "role/ephemeral")
    result = tctl.as_identity(both, "get", "roles")
    assert result.returncode == 1
    assert "role ephemeral is not found" in result.stderr

    # A lock on the user refuses its identity.
    out = tctl.ok("lock", "--user=victim", "--message=Too many failed logins", "--ttl=1h")
    assert out.startswith('Created a lock with name "')
    result = tctl.as_identity(good, "get", "roles")
    assert result.stderr == (
        'ERROR: lock targeting User:"victim" is in force: Too many failed logins\n'
    )


# --- facts checked against Teleport's source (issue #6, facts 7-9) ---------------------


def test_not_found_is_worded_per_kind_as_teleport_words_it(tctl: Tctl) -> None:
    # lib/services/local/access.go GetRole: unquoted; users.go GetUser and
    # access.go GetLock: quoted; bot_service.go GetBot wraps the user's error
    # twice and trace prints the chain as a tree; DeleteBot reads the user.
    assert tctl.fails("get", "role/absent") == "ERROR: role absent is not found\n"
    assert tctl.fails("get", "user/absent") == 'ERROR: user "absent" is not found\n'
    assert tctl.fails("get", "lock/absent") == 'ERROR: lock "absent" is not found\n'
    assert tctl.fails("get", "bot/absent") == (
        'ERROR: fetching bot\n\tfetching bot user\n\t\tuser "bot-absent" is not found\n'
    )
    assert tctl.fails("rm", "bot/absent") == 'ERROR: user "bot-absent" is not found\n'
    # users.go GetGithubConnector, GetSAMLConnector, GetOIDCConnector.
    assert tctl.fails("get", "github/absent") == (
        'ERROR: github connector "absent" is not configured\n'
    )
    assert tctl.fails("get", "saml/absent") == 'ERROR: SAML connector "absent" is not configured\n'
    assert tctl.fails("get", "oidc/absent") == (
        "ERROR: OpenID connector 'absent' is not configured\n"
    )


def test_errors_are_red_like_tctl(tctl: Tctl) -> None:
    # lib/utils/cli.go UserMessageFromError: Color(Red, "ERROR: "), tty or not.
    result = subprocess.run(
        [TCTL, "-c", tctl.config, "get", "role/absent"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.stderr == "\x1b[31mERROR: \x1b[0mrole absent is not found\n"


def test_bots_update_ignores_an_empty_set_roles(tctl: Tctl) -> None:
    # bots_command.go UpdateBot: roles change only when --set-roles/--add-roles
    # is not "", so an empty value is no flag at all; "," is a value, and empty.
    tctl.ok("bots", "add", "keeper", "--roles=access")
    kept = tctl.admin("bots", "update", "keeper", "--set-roles", "")
    assert kept.returncode == 0 and "No changes requested, nothing to do" in kept.stderr
    assert json.loads(tctl.ok("get", "bot/keeper", "--format=json"))[0]["spec"]["roles"] == [
        "access"
    ]
    cleared = tctl.admin("bots", "update", "keeper", "--set-roles", ",")
    assert cleared.returncode == 0 and "Bot has been updated" in cleared.stderr
    assert json.loads(tctl.ok("get", "bot/keeper", "--format=json"))[0]["spec"]["roles"] == []
    tctl.ok("bots", "rm", "keeper")


def test_auth_server_with_nothing_listening_fails_as_tctl_does(tctl: Tctl) -> None:
    # tool/tctl/common/client/auth.go GetInitFunc prints this line and exits 1.
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    result = tctl.raw("-c", tctl.config, f"--auth-server=127.0.0.1:{port}", "get", "roles")
    assert result.returncode == 1
    assert result.stderr == (
        "ERROR: Cannot connect to the auth server. "
        f'Is the auth server running on "127.0.0.1:{port}"?\n'
    )
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        address = f"127.0.0.1:{listener.getsockname()[1]}"
        listed = tctl.raw("-c", tctl.config, f"--auth-server={address}", "get", "roles")
    assert listed.returncode == 0, listed.stderr


def _not_after(path: str) -> datetime.datetime:
    parts = pki.parse_identity_file(Path(path).read_bytes())
    cert = pki.load_certificate(parts.tls_cert_pem, path)
    return cert.not_valid_after_utc


def test_auth_sign_ttl_is_capped_unless_the_auth_hosts_admin_signs(
    tctl: Tctl, tmp_path: Path
) -> None:
    # auth_with_roles.go generateUserCerts: only the built-in Admin overrides
    # role TTLs; auth.go generateUserCert caps everyone else at the smallest
    # max_session_ttl of the certificate's roles (AdjustSessionTTL).
    tctl.ok(
        "create", "-f", "-",
        stdin="kind: role\nmetadata: {name: short}\nspec: {options: {max_session_ttl: 2h}}\n"
        "---\nkind: role\nmetadata: {name: signs-short}\nspec:\n  allow:\n"
        "    impersonate: {users: [capped], roles: [short]}\n",
    )  # fmt: skip
    tctl.admin("users", "rm", "capped")
    tctl.ok("users", "add", "capped", "--roles=short")
    signer = _identity(tctl, tmp_path, "signer", "signs-short")
    now = datetime.datetime.now(datetime.UTC)

    by_admin = str(tmp_path / "by-admin")
    tctl.ok("auth", "sign", "--user=capped", f"--out={by_admin}", "--ttl=100h")
    assert _not_after(by_admin) - now > datetime.timedelta(hours=99)

    by_signer = str(tmp_path / "by-signer")
    signed = tctl.as_identity(
        signer, "auth", "sign", "--user=capped", f"--out={by_signer}", "--ttl=100h"
    )
    assert signed.returncode == 0, signed.stderr
    assert signed.stderr == ""  # tctl says nothing about the cap
    lifetime = _not_after(by_signer) - now
    assert (
        datetime.timedelta(hours=1, minutes=55) < lifetime <= datetime.timedelta(hours=2, minutes=2)
    )


def test_admin_mfa_makes_a_tsh_login_wait_for_a_security_key(tctl: Tctl, tmp_path: Path) -> None:
    # lib/authz/permissions.go isAdminActionAuthorizationRequired: a person's
    # login must pass MFA for each change; built-in roles and identities the
    # admin signed are exempt. tctl waits at its prompt for a key touch.
    env = {k: v for k, v in os.environ.items() if k not in (DATA_DIR_ENV, ADMIN_MFA_ENV)}
    env.update({DATA_DIR_ENV: tctl.data_dir, ADMIN_MFA_ENV: "1"})
    read = subprocess.run(
        [TCTL, "get", "roles", "--format=json"], capture_output=True, env=env, timeout=60
    )
    assert read.returncode == 0, read.stderr  # reading is no admin action
    role = "kind: role\nmetadata: {name: needs-a-key}\nspec: {}\n"
    waiting = subprocess.Popen(
        [TCTL, "create", "-"],
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=env,
        text=True,
    )
    assert waiting.stdin is not None and waiting.stderr is not None
    waiting.stdin.write(role)
    waiting.stdin.close()
    time.sleep(2)
    still_waiting = waiting.poll() is None
    waiting.kill()
    waiting.wait(timeout=30)
    stderr = waiting.stderr.read()
    assert still_waiting, stderr
    assert stderr == "Tap any security key\n"
    assert tctl.admin("get", "role/needs-a-key").returncode == 1
    # The Auth host's admin and an identity file are not asked.
    made = tctl.raw("-c", tctl.config, "create", "-", stdin=role, env={ADMIN_MFA_ENV: "1"})
    assert made.returncode == 0, made.stderr
    editor = _identity(tctl, tmp_path, "mfa-editor", "editor")
    gone = tctl.raw(
        "-i",
        editor,
        "rm",
        "role/needs-a-key",
        env={DATA_DIR_ENV: tctl.data_dir, ADMIN_MFA_ENV: "1"},
    )
    assert gone.returncode == 0, gone.stderr
