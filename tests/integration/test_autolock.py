"""End to end: failed logins at the sandbox Teleport lock the user through UpsertLock.

``sandbox-teleport append --failed-logins USER:LOGIN`` adds failed
``user.login`` events while the handler runs; the locks the handler makes are
read back with ``sandbox-tctl get locks``.
"""

from __future__ import annotations

import datetime
import json
import os
import signal
import subprocess
from collections.abc import Callable

import pytest

from teleport_sandbox.stack import HANDLER_ROLE_YAML, Stack

# The handler's role plus what auto-lock needs: lock create and update.
LOCK_RULE = "      - resources: ['lock']\n        verbs: ['create', 'update']\n"
LOCK_RULE_ROLE = HANDLER_ROLE_YAML.replace(
    "        verbs: ['list', 'read']\n", "        verbs: ['list', 'read']\n" + LOCK_RULE, 1
)


@pytest.fixture(scope="module")
def lock_template(tmp_path_factory: pytest.TempPathFactory) -> str:
    root = str(tmp_path_factory.mktemp("template-locks") / "stack")
    Stack(root=root, days=1, events_per_day=30).init()
    return root


@pytest.fixture
def stack(lock_template: str, make_stack: Callable[..., Stack]) -> Stack:
    # Legacy engine: it polls every `timeout` (1 s here), so appended events show soon.
    return make_stack(lock_template, "legacy")


def _start(stack: Stack, **extra: object) -> subprocess.Popen[bytes]:
    start = datetime.datetime.now(datetime.UTC) - datetime.timedelta(seconds=5)
    toml = stack.handler_toml(
        start_time=start,
        lock_enabled=True,
        lock_failed_attempts_count=3,
        lock_period="1m",
        **extra,
    )
    return stack.start_handler(toml)


def _fail_logins(stack: Stack, count: int, who: str) -> set[str]:
    out = stack.run_teleport_cli("append", "--count", str(count), "--failed-logins", who)
    return set(json.loads(out)["uids"])


def _arrived(stack: Stack, uids: set[str]) -> bool:
    return uids <= {str(r.get("uid")) for r in stack.received("audit")}


def _locks(stack: Stack) -> list[dict[str, object]]:
    try:
        text = stack.tctl("get", "locks", "--format", "json")
    except subprocess.CalledProcessError:
        return []
    data = json.loads(text) if text.strip() else []
    return data if isinstance(data, list) else [data]


def test_a_lock_appears_after_more_than_k_failed_logins_and_not_before(stack: Stack) -> None:
    role = os.path.join(stack.root, "handler", "role-with-lock.yaml")
    with open(role, "w") as handle:
        handle.write(LOCK_RULE_ROLE)
    stack.tctl("create", "-f", role)
    proc = _start(stack, lock_for="10m")
    try:
        first = _fail_logins(stack, 3, "alice:root")
        stack.wait_until(proc, lambda: _arrived(stack, first), "three failed logins at Fluentd")
        assert _locks(stack) == [], "locked after only lock-failed-attempts-count failures"
        fourth = _fail_logins(stack, 1, "alice:root")
        stack.wait_until(proc, lambda: bool(_locks(stack)), "the lock")
        assert _arrived(stack, fourth)
        (lock,) = _locks(stack)
        metadata, spec = lock["metadata"], lock["spec"]
        assert isinstance(metadata, dict) and isinstance(spec, dict)
        assert metadata["name"] == "event-handler-auto-lock-alice-root"
        assert spec["target"] == {"user": "alice", "login": "root"}
        assert spec["message"] == "User is locked due to too many failed login attempts"
        expires = datetime.datetime.fromisoformat(str(spec["expires"]).replace("Z", "+00:00"))
        left = expires - datetime.datetime.now(datetime.UTC)
        assert datetime.timedelta(minutes=9) < left <= datetime.timedelta(minutes=10)
        assert spec["created_by"] == "teleport-event-handler"
        assert "User login is locked: user 'alice', login 'root'" in stack.handler_log()
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0


def test_missing_lock_permission_is_one_clear_error_and_the_export_goes_on(stack: Stack) -> None:
    proc = _start(stack)
    try:
        burst = _fail_logins(stack, 4, "alice:root")
        stack.wait_until(
            proc, lambda: "could not lock user" in stack.handler_log(), "the permission error"
        )
        again = _fail_logins(stack, 4, "bob:ubuntu")
        later = set(json.loads(stack.run_teleport_cli("append", "--count", "20"))["uids"])
        stack.wait_until(
            proc, lambda: _arrived(stack, burst | again | later), "the events after the error"
        )
        log = stack.handler_log()
        errors = [line for line in log.splitlines() if "could not lock user" in line]
        assert len(errors) == 1, errors
        assert "add the rule {resources: ['lock'], verbs: ['create', 'update']}" in errors[0]
        assert 'access denied to perform action "create" on "lock"' in errors[0]
        assert _locks(stack) == []
        assert proc.poll() is None
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
