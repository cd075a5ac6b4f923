"""The tctl modules run by ansible-playbook against the sandbox Teleport.

tctl_resource, tctl_grant_role and tctl_identity each run four times (check,
apply, check, apply); then the guide's whole flow: an identity signed by the
module is refused by the sandbox Teleport's gRPC API (PERMISSION_DENIED)
until the role the modules create and grant exists in the certificate.
"""

from __future__ import annotations

import datetime
import json
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import timestamp_pb2
from test_modules_support import BIN, changes, four_times, mode_of, run_playbook

from teleport_event_handler import pki
from teleport_event_handler.protos.teleport.auditlog.v1 import auditlog_pb2, auditlog_pb2_grpc

pytestmark = pytest.mark.timeout(300)

HANDLER = "teleport-event-handler"
HANDLER_ROLE = {
    "kind": "role",
    "version": "v7",
    "metadata": {"name": HANDLER},
    "spec": {
        "allow": {"rules": [{"resources": ["event", "session"], "verbs": ["list", "read"]}]},
        "options": {"max_session_ttl": "10h"},
    },
}
IMPERSONATOR_ROLE = {
    "kind": "role",
    "version": "v5",
    "metadata": {"name": "teleport-event-handler-impersonator"},
    "spec": {
        "options": {"max_session_ttl": "10h"},
        "allow": {"impersonate": {"users": [HANDLER], "roles": [HANDLER]}},
    },
}
GITHUB_SECRET = "gh-client-secret-0123456789"


class Cluster:
    """One sandbox Teleport: its data dir, its tctl, and (when served) its gRPC address."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.data_dir = root / "teleport"
        self.config = self.data_dir / "teleport.yaml"
        self.addr = ""

    def tctl(self, *args: str, stdin: str | None = None) -> str:
        proc = subprocess.run(
            [str(BIN / "sandbox-tctl"), "-c", str(self.config), *args],
            input=stdin,
            capture_output=True,
            text=True,
            check=True,
            timeout=60,
        )
        return proc.stdout

    def get(self, ref: str) -> dict[str, Any]:
        docs = json.loads(self.tctl("get", ref, "--format=json"))
        assert len(docs) == 1
        return dict(docs[0])

    def connection(self) -> dict[str, str]:
        """The tctl options of every task: sandbox-tctl as the Auth host's admin."""
        return {"tctl_path": str(BIN / "sandbox-tctl"), "tctl_config": str(self.config)}


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    cluster = Cluster(tmp_path / "cluster")
    subprocess.run(
        [
            str(BIN / "sandbox-teleport"),
            "init",
            "--data-dir",
            str(cluster.data_dir),
            "--days",
            "1",
            "--events-per-day",
            "20",
            "--sessions-per-day",
            "1",
        ],
        check=True,
        capture_output=True,
        timeout=120,
    )
    port_file = cluster.root / "teleport.port"
    log = open(cluster.root / "teleport.log", "wb")  # noqa: SIM115 - owned by the process
    proc = subprocess.Popen(
        [
            str(BIN / "sandbox-teleport"),
            "serve",
            "--data-dir",
            str(cluster.data_dir),
            "--listen",
            "127.0.0.1:0",
            "--port-file",
            str(port_file),
            "--mode",
            "legacy",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    log.close()
    try:
        cluster.addr = "127.0.0.1:" + _wait_for(port_file, proc)
        yield cluster
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _wait_for(path: Path, proc: subprocess.Popen[bytes], timeout: float = 60) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and path.read_text().strip():
            return path.read_text().strip()
        assert proc.poll() is None, "sandbox-teleport serve exited"
        time.sleep(0.05)
    raise AssertionError(f"sandbox-teleport serve did not write {path}")


def _read_events(addr: str, identity: Path) -> grpc.StatusCode | None:
    """GetUnstructuredEvents with the identity; None when allowed, else the status code."""
    parts = pki.parse_identity_file(identity.read_bytes())
    credentials = grpc.ssl_channel_credentials(
        root_certificates=b"".join(parts.tls_ca_pems),
        private_key=parts.private_key_pem,
        certificate_chain=parts.tls_cert_pem,
    )
    now = datetime.datetime.now(datetime.UTC)
    start, end = timestamp_pb2.Timestamp(), timestamp_pb2.Timestamp()
    start.FromDatetime(now - datetime.timedelta(days=2))
    end.FromDatetime(now)
    request = auditlog_pb2.GetUnstructuredEventsRequest(
        namespace="default", start_date=start, end_date=end, limit=5
    )
    options = [("grpc.ssl_target_name_override", "teleport.cluster.local")]
    with grpc.secure_channel(addr, credentials, options=options) as channel:
        stub = auditlog_pb2_grpc.AuditLogServiceStub(channel)
        try:
            stub.GetUnstructuredEvents(request, timeout=20)
        except grpc.RpcError as exc:
            return exc.code()  # type: ignore[no-any-return]
    return None


def test_tctl_resource_four_times_then_absent(cluster: Cluster, tmp_path: Path) -> None:
    present = dict(cluster.connection(), definition=[HANDLER_ROLE])
    absent = dict(cluster.connection(), kind="role", name=HANDLER, state="absent")
    results, output = run_playbook(
        tmp_path, four_times("tctl_resource", present) + four_times("tctl_resource", absent)
    )
    assert changes(results[:4]) == [True, True, False, False]
    assert [r["resources"][0]["action"] for r in results[:4]] == [
        "created",
        "created",
        "unchanged",
        "unchanged",
    ]
    assert changes(results[4:]) == [True, True, False, False]
    assert "role/teleport-event-handler" in output  # the diff names the resource
    with pytest.raises(subprocess.CalledProcessError):
        cluster.get(f"role/{HANDLER}")


def test_tctl_resource_from_the_guides_file(cluster: Cluster, tmp_path: Path) -> None:
    role_file = tmp_path / "teleport-event-handler-role.yaml"
    role_file.write_text(
        "kind: role\nmetadata:\n  name: teleport-event-handler\nspec:\n  allow:\n    rules:\n"
        "      - resources: ['event', 'session']\n        verbs: ['list','read']\nversion: v5\n"
        "---\nkind: user\nmetadata:\n  name: teleport-event-handler\nspec:\n"
        "  roles: ['teleport-event-handler']\nversion: v2\n"
    )
    results, _ = run_playbook(
        tmp_path, four_times("tctl_resource", dict(cluster.connection(), src=str(role_file)))
    )
    assert changes(results) == [True, True, False, False]
    assert cluster.get(f"user/{HANDLER}")["spec"]["roles"] == [HANDLER]
    # A change made behind Ansible's back is put right, and only that resource;
    # the connection comes from module_defaults of the collection's tctl group.
    cluster.tctl("users", "update", HANDLER, "--set-roles", "access")
    results, _ = run_playbook(
        tmp_path,
        [{"teleport.event_handler.tctl_resource": {"src": str(role_file)}}],
        module_defaults={"group/teleport.event_handler.tctl": cluster.connection()},
    )
    assert [r["action"] for r in results[0]["resources"]] == ["unchanged", "updated"]
    # The role the definition lists is back; the one added meanwhile is kept, as a
    # grant would be (tctl_grant_role state=absent removes roles).
    assert cluster.get(f"user/{HANDLER}")["spec"]["roles"] == [HANDLER, "access"]


def _github_connector() -> dict[str, Any]:
    """A GitHub connector with a secret and one mapping: octocats/admins -> access."""
    return {
        "kind": "github",
        "version": "v3",
        "metadata": {"name": "github"},
        "spec": {
            "client_id": "abc",
            "client_secret": GITHUB_SECRET,
            "display": "GitHub",
            "teams_to_roles": [{"organization": "octocats", "team": "admins", "roles": ["access"]}],
        },
    }


def test_tctl_resource_keeps_a_connector_secret_out_of_results(
    cluster: Cluster, tmp_path: Path
) -> None:
    # The definition itself carries the secret: neither the diff nor the
    # output at -vvv (which echoes the module's arguments) may show it.
    connector = _github_connector()
    args = dict(cluster.connection(), definition=connector)
    results, output = run_playbook(
        tmp_path, four_times("tctl_resource", args), env={"ANSIBLE_VERBOSITY": "3"}
    )
    assert changes(results) == [True, True, False, False]
    stored = json.loads(cluster.tctl("get", "github/github", "--format=json", "--with-secrets"))
    assert stored[0]["spec"]["client_secret"] == GITHUB_SECRET
    assert "github/github" in output  # the diff is there, redacted
    assert GITHUB_SECRET not in output and GITHUB_SECRET not in json.dumps(results)


def test_tctl_grant_role_to_user_bot_and_connector(cluster: Cluster, tmp_path: Path) -> None:
    connection = cluster.connection()
    cluster.tctl("create", "-", stdin=json.dumps(IMPERSONATOR_ROLE))
    cluster.tctl("create", "-", stdin=json.dumps(HANDLER_ROLE))
    cluster.tctl("users", "add", "alice", "--roles=access,editor")
    cluster.tctl("bots", "add", "my-bot", "--roles=access")
    cluster.tctl(
        "create",
        "-",
        stdin=json.dumps(_github_connector()),
    )
    user = dict(connection, user="alice", roles=["teleport-event-handler-impersonator"])
    bot = dict(connection, bot="my-bot", roles=[HANDLER])
    github = dict(
        connection,
        connector_kind="github",
        connector_name="github",
        mapping={"organization": "octocats", "team": "admins"},
        roles=["teleport-event-handler-impersonator"],
    )
    results, output = run_playbook(
        tmp_path,
        four_times("tctl_grant_role", user)
        + four_times("tctl_grant_role", bot)
        + four_times("tctl_grant_role", github),
    )
    for index in (0, 4, 8):
        assert changes(results[index : index + 4]) == [True, True, False, False]
    assert cluster.get("user/alice")["spec"]["roles"] == [
        "access",
        "editor",
        "teleport-event-handler-impersonator",
    ]
    assert sorted(cluster.get("bot/my-bot")["spec"]["roles"]) == ["access", HANDLER]
    connector = json.loads(cluster.tctl("get", "github/github", "--format=json", "--with-secrets"))[
        0
    ]
    assert connector["spec"]["teams_to_roles"][0]["roles"] == [
        "access",
        "teleport-event-handler-impersonator",
    ]
    assert connector["spec"]["client_secret"] == GITHUB_SECRET  # written back intact
    assert GITHUB_SECRET not in output and GITHUB_SECRET not in json.dumps(results)


def test_the_identity_is_accepted_only_once_the_role_exists(
    cluster: Cluster, tmp_path: Path
) -> None:
    connection = cluster.connection()
    identity = tmp_path / "handler" / "identity"
    identity.parent.mkdir()
    # The user starts with a role that grants nothing (Teleport's presets all
    # read events, so none of them will do).
    base = {"kind": "role", "version": "v7", "metadata": {"name": "handler-base"}, "spec": {}}
    user = {
        "kind": "user",
        "version": "v2",
        "metadata": {"name": HANDLER},
        "spec": {"roles": ["handler-base"]},
    }
    sign = dict(connection, user=HANDLER, path=str(identity), ttl="2h", renew_before="30m")
    results, output = run_playbook(
        tmp_path,
        [
            {"teleport.event_handler.tctl_resource": dict(connection, definition=[base, user])},
            *four_times("tctl_identity", sign),
        ],
    )
    assert changes(results[1:]) == [True, True, False, False]
    assert mode_of(identity) == 0o600
    signed = results[2]
    assert signed["user"] == HANDLER and signed["roles"] == ["handler-base"]
    not_after = datetime.datetime.fromisoformat(signed["not_after"].replace("Z", "+00:00"))
    left = not_after - datetime.datetime.now(datetime.UTC)
    assert datetime.timedelta(hours=1, minutes=55) < left <= datetime.timedelta(hours=2)
    assert "PRIVATE KEY" not in output

    # The user has no role that may read events yet: the API refuses the identity.
    assert _read_events(cluster.addr, identity) == grpc.StatusCode.PERMISSION_DENIED

    # Create the role, grant it, and let the identity module notice the new role.
    results, _ = run_playbook(
        tmp_path,
        [
            {"teleport.event_handler.tctl_resource": dict(connection, definition=HANDLER_ROLE)},
            {
                "teleport.event_handler.tctl_grant_role": dict(
                    connection, user=HANDLER, roles=[HANDLER]
                )
            },
            {"teleport.event_handler.tctl_identity": sign},
            {"teleport.event_handler.tctl_identity": sign},
        ],
    )
    assert changes(results) == [True, True, True, False]
    assert "now has ['handler-base', 'teleport-event-handler']" in results[2]["reason"]
    assert sorted(results[2]["roles"]) == ["handler-base", HANDLER]
    assert _read_events(cluster.addr, identity) is None


def test_identity_renews_inside_renew_before(cluster: Cluster, tmp_path: Path) -> None:
    connection = cluster.connection()
    cluster.tctl("create", "-", stdin=json.dumps(HANDLER_ROLE))
    cluster.tctl("users", "add", HANDLER, f"--roles={HANDLER}")
    identity = tmp_path / "identity"
    keep = dict(connection, user=HANDLER, path=str(identity), ttl="1h", renew_before="20m")
    renew = dict(keep, ttl="3h", renew_before="2h")
    results, _ = run_playbook(
        tmp_path,
        [{"teleport.event_handler.tctl_identity": keep}] * 2 + four_times("tctl_identity", renew),
    )
    assert changes(results) == [True, False, True, True, False, False]
    assert "within renew_before (2h)" in results[3]["reason"]
    assert results[5]["not_after"] > results[1]["not_after"]


def test_check_mode_changes_nothing(cluster: Cluster, tmp_path: Path) -> None:
    connection = cluster.connection()
    cluster.tctl("users", "add", "alice", "--roles=access")
    identity = tmp_path / "identity"
    tasks = [
        {"teleport.event_handler.tctl_resource": dict(connection, definition=HANDLER_ROLE)},
        {
            "teleport.event_handler.tctl_grant_role": dict(
                connection, user="alice", roles=["editor"]
            )
        },
        {
            "teleport.event_handler.tctl_identity": dict(
                connection, user="alice", path=str(identity)
            )
        },
    ]
    results, _ = run_playbook(tmp_path, [dict(task, check_mode=True) for task in tasks])
    assert changes(results) == [True, True, True]
    with pytest.raises(subprocess.CalledProcessError):
        cluster.get(f"role/{HANDLER}")
    assert cluster.get("user/alice")["spec"]["roles"] == ["access"]
    assert not identity.exists() and list(tmp_path.glob(".tctl-sign-*")) == []


def test_identity_capped_below_renew_before_says_so(cluster: Cluster, tmp_path: Path) -> None:
    # The guide's flow: alice, holding the impersonator role, signs the
    # handler's identity with her own identity file. Teleport lets only the
    # Auth host's built-in admin override role TTLs (lib/auth/auth_with_roles.go,
    # ServerWithRoles.generateUserCerts) and caps anyone else's request at the
    # smallest max_session_ttl of the identity's roles (lib/auth/auth.go,
    # Server.generateUserCert, AdjustSessionTTL), silently: the handler's role
    # allows 10h, so a year's ttl becomes 10h, inside renew_before. Say so.
    cluster.tctl("create", "-", stdin=json.dumps(HANDLER_ROLE))
    cluster.tctl("create", "-", stdin=json.dumps(IMPERSONATOR_ROLE))
    cluster.tctl("users", "add", HANDLER, f"--roles={HANDLER}")
    cluster.tctl("users", "add", "alice", "--roles=teleport-event-handler-impersonator")
    alice = tmp_path / "alice.identity"
    cluster.tctl("auth", "sign", "--user=alice", f"--out={alice}", "--ttl=1h")
    sign = dict(
        cluster.connection(),
        identity_file=str(alice),
        auth_server=cluster.addr,
        user=HANDLER,
        path=str(tmp_path / "identity"),
        ttl="8760h",
        renew_before="720h",
        check_roles=False,  # alice may sign, not read users
    )
    results, _ = run_playbook(tmp_path, [{"teleport.event_handler.tctl_identity": sign}])
    assert results[0]["changed"]
    not_after = datetime.datetime.fromisoformat(results[0]["not_after"].replace("Z", "+00:00"))
    lifetime = not_after - datetime.datetime.now(datetime.UTC)
    assert datetime.timedelta(hours=9) < lifetime <= datetime.timedelta(hours=10, minutes=2)
    warnings = " ".join(results[0].get("warnings", []))
    assert "max_session_ttl" in warnings and "renew_before" in warnings
    assert "every run" in warnings and "tctl_config" in warnings


def test_identity_check_mode_fails_where_the_real_run_fails(
    cluster: Cluster, tmp_path: Path
) -> None:
    cluster.tctl("create", "-", stdin=json.dumps(HANDLER_ROLE))
    cluster.tctl("users", "add", HANDLER, f"--roles={HANDLER}")
    sign = dict(cluster.connection(), user=HANDLER, path=str(tmp_path / "missing" / "identity"))
    tasks = [
        {"teleport.event_handler.tctl_identity": sign, "check_mode": check, "ignore_errors": True}
        for check in (True, False)
    ]
    results, _ = run_playbook(tmp_path, tasks)
    assert [bool(r.get("failed")) for r in results] == [True, True]
    assert results[0]["msg"] == results[1]["msg"]
    assert "does not exist; create it first" in results[0]["msg"]


def test_failures_say_what_to_fix(cluster: Cluster, tmp_path: Path) -> None:
    cluster.tctl("create", "-", stdin=json.dumps(HANDLER_ROLE))
    cluster.tctl("users", "add", HANDLER, f"--roles={HANDLER}")
    identity = tmp_path / "identity"
    cluster.tctl(
        "auth", "sign", f"--user={HANDLER}", "--format=file", f"--out={identity}", "--ttl=1h"
    )
    tctl = str(BIN / "sandbox-tctl")
    # tctl acting as the handler: its identity, the cluster named by the config.
    as_handler = dict(cluster.connection(), identity_file=str(identity), auth_server=cluster.addr)
    tasks = [
        {"teleport.event_handler.tctl_resource": dict(as_handler, definition=IMPERSONATOR_ROLE)},
        {
            "teleport.event_handler.tctl_resource": {
                "tctl_path": tctl,
                "definition": IMPERSONATOR_ROLE,
            }
        },
        {
            "teleport.event_handler.tctl_resource": dict(
                cluster.connection(), definition={"kind": "frobnicator", "metadata": {"name": "x"}}
            )
        },
        {
            "teleport.event_handler.tctl_grant_role": dict(
                cluster.connection(), user="nobody", roles=[HANDLER]
            )
        },
        {
            "teleport.event_handler.tctl_identity": {
                "tctl_path": "/nonexistent/tctl",
                "user": HANDLER,
                "path": str(identity),
            }
        },
    ]
    results, _ = run_playbook(tmp_path, [dict(task, ignore_errors=True) for task in tasks])
    assert all(result.get("failed") for result in results)
    denied, unauthenticated, kind, nobody, binary = (r["msg"] for r in results)
    assert 'access denied to perform action "read" on "role"' in denied
    assert "give its user a role that allows it" in denied
    assert "tsh login" in unauthenticated and "tctl_config" in unauthenticated
    assert "frobnicator" in kind and "Check the resource kind" in kind
    assert "'nobody' does not exist" in nobody
    assert "tctl_path" in binary and "/nonexistent/tctl" in binary


def test_revoking_a_bots_last_role_fails_instead_of_pretending(
    cluster: Cluster, tmp_path: Path
) -> None:
    # tool/tctl/common/bots_command.go, BotsCommand.UpdateBot: an empty
    # --set-roles is ignored, so "revoke the last role" would report changed
    # while the bot keeps it.
    cluster.tctl("create", "-", stdin=json.dumps(HANDLER_ROLE))
    cluster.tctl("bots", "add", "my-bot", f"--roles={HANDLER}")
    revoke = dict(cluster.connection(), bot="my-bot", roles=[HANDLER], state="absent")
    tasks = [
        {
            "teleport.event_handler.tctl_grant_role": revoke,
            "check_mode": check,
            "ignore_errors": True,
        }
        for check in (True, False)
    ]
    results, _ = run_playbook(tmp_path, tasks)
    assert [bool(r.get("failed")) for r in results] == [True, True]
    assert results[0]["msg"] == results[1]["msg"]
    assert "would leave bot 'my-bot' without roles" in results[1]["msg"]
    assert "tctl bots rm my-bot" in results[1]["msg"]
    assert cluster.get("bot/my-bot")["spec"]["roles"] == [HANDLER]


def test_an_auth_server_that_does_not_answer_is_named(cluster: Cluster, tmp_path: Path) -> None:
    # tool/tctl/common/client/auth.go, GetInitFunc: "Cannot connect to the auth server".
    cluster.tctl("create", "-", stdin=json.dumps(HANDLER_ROLE))
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed = f"127.0.0.1:{probe.getsockname()[1]}"
    task = dict(cluster.connection(), auth_server=closed, definition=HANDLER_ROLE)
    results, _ = run_playbook(
        tmp_path, [{"teleport.event_handler.tctl_resource": task, "ignore_errors": True}]
    )
    assert results[0]["failed"]
    assert "Cannot connect to the auth server" in results[0]["msg"]
    assert f"cannot reach the Auth Service at {closed}" in results[0]["msg"]


def test_a_tctl_that_never_answers_is_stopped_by_the_timeout(
    cluster: Cluster, tmp_path: Path
) -> None:
    # A stand-in for tctl stuck at a prompt (and a child holding its pipes).
    stuck = tmp_path / "stuck-tctl"
    stuck.write_text("#!/bin/sh\necho 'Tap any security key' >&2\nsleep 600 &\nwait\n")
    stuck.chmod(0o755)
    task = {"tctl_path": str(stuck), "timeout": 2, "definition": HANDLER_ROLE}
    started = time.monotonic()
    results, _ = run_playbook(
        tmp_path, [{"teleport.event_handler.tctl_resource": task, "ignore_errors": True}]
    )
    assert time.monotonic() - started < 120
    message = results[0]["msg"]
    assert results[0]["failed"]
    assert "did not finish within 2 seconds" in message
    assert "'Tap any security key'" in message
    assert "identity_file" in message and "tctl_config" in message


def test_admin_mfa_from_a_tsh_login_times_out_and_names_the_fix(
    cluster: Cluster, tmp_path: Path
) -> None:
    # lib/authz/permissions.go, isAdminActionAuthorizationRequired: on a
    # cluster that requires MFA for admin actions a person's login must touch a
    # security key for every change; identities the Auth host's admin signed
    # (and the Auth host itself) are exempt. The sandbox's tctl, with
    # TELEPORT_SANDBOX_ADMIN_MFA, waits at tctl's prompt as tctl does.
    cluster.tctl("create", "-", stdin=json.dumps(HANDLER_ROLE))
    cluster.tctl("users", "add", "ops", "--roles=editor")
    ops = tmp_path / "ops.identity"
    cluster.tctl("auth", "sign", "--user=ops", f"--out={ops}", "--ttl=1h")
    as_person = {"tctl_path": str(BIN / "sandbox-tctl"), "timeout": 3}
    as_signed = dict(as_person, identity_file=str(ops), auth_server=cluster.addr)
    tasks = [
        {"teleport.event_handler.tctl_resource": dict(as_person, definition=IMPERSONATOR_ROLE)},
        {"teleport.event_handler.tctl_resource": dict(as_signed, definition=IMPERSONATOR_ROLE)},
    ]
    env = {"TELEPORT_SANDBOX_DATA_DIR": str(cluster.data_dir), "TELEPORT_SANDBOX_ADMIN_MFA": "1"}
    results, _ = run_playbook(tmp_path, [dict(t, ignore_errors=True) for t in tasks], env=env)
    waited, signed = results
    assert waited["failed"]
    assert "tctl create /dev/stdin: tctl did not finish within 3 seconds" in waited["msg"]
    assert "'Tap any security key'" in waited["msg"]
    assert "identity_file" in waited["msg"] and "tctl_config" in waited["msg"]
    assert not signed.get("failed"), signed.get("msg")
    assert signed["changed"]
    assert cluster.get("role/teleport-event-handler-impersonator")["kind"] == "role"


def test_an_identity_mode_readable_by_others_is_refused(cluster: Cluster, tmp_path: Path) -> None:
    identity = tmp_path / "identity"
    sign = dict(cluster.connection(), user=HANDLER, path=str(identity), ttl="1h", mode="0644")
    results, _ = run_playbook(
        tmp_path, [{"teleport.event_handler.tctl_identity": sign, "ignore_errors": True}]
    )
    assert results[0]["failed"]
    assert "mode=0644 would let every user of the host read" in results[0]["msg"]
    assert not identity.exists()  # refused before anything was signed or written


def test_a_user_defined_and_granted_a_role_elsewhere_stays_as_both_say(
    cluster: Cluster, tmp_path: Path
) -> None:
    """tctl_resource lists the roles a user must have; tctl_grant_role's grants are kept."""
    connection = cluster.connection()
    user = {
        "kind": "user",
        "version": "v2",
        "metadata": {"name": "alice"},
        "spec": {"roles": ["access"]},
    }
    define = {"teleport.event_handler.tctl_resource": dict(connection, definition=user)}
    grant = {
        "teleport.event_handler.tctl_grant_role": dict(connection, user="alice", roles=["editor"])
    }
    results, _ = run_playbook(tmp_path, [define, grant, define, grant, define, grant])
    assert changes(results) == [True, True, False, False, False, False]
    assert sorted(cluster.get("user/alice")["spec"]["roles"]) == ["access", "editor"]
    # A role the definition adds is added; the granted one stays.
    more = {
        "teleport.event_handler.tctl_resource": dict(
            connection, definition={**user, "spec": {"roles": ["access", "auditor"]}}
        )
    }
    results, _ = run_playbook(tmp_path, [more, grant, more])
    assert changes(results) == [True, False, False]
    assert sorted(cluster.get("user/alice")["spec"]["roles"]) == ["access", "auditor", "editor"]


def test_a_connector_defined_and_granted_a_role_elsewhere_stays_as_both_say(
    cluster: Cluster, tmp_path: Path
) -> None:
    """An SSO connector's mappings: grants to a mapping, and mappings added whole, are kept."""
    connection = cluster.connection()
    connector = _github_connector()
    define = {"teleport.event_handler.tctl_resource": dict(connection, definition=connector)}
    grant = {
        "teleport.event_handler.tctl_grant_role": dict(
            connection,
            connector_kind="github",
            connector_name="github",
            mapping={"organization": "octocats", "team": "admins"},
            roles=["editor"],
        )
    }
    grant_new_mapping = {
        "teleport.event_handler.tctl_grant_role": dict(
            connection,
            connector_kind="github",
            connector_name="github",
            mapping={"organization": "octocats", "team": "auditors"},
            roles=["auditor"],
        )
    }
    results, output = run_playbook(
        tmp_path, [define, grant, grant_new_mapping, define, grant, grant_new_mapping, define]
    )
    assert changes(results) == [True, True, True, False, False, False, False]
    stored = json.loads(cluster.tctl("get", "github/github", "--format=json", "--with-secrets"))
    assert stored[0]["spec"]["teams_to_roles"] == [
        {"organization": "octocats", "team": "admins", "roles": ["access", "editor"]},
        {"organization": "octocats", "team": "auditors", "roles": ["auditor"]},
    ]
    assert GITHUB_SECRET not in output
