# Copyright: the teleport-event-handler authors
# Apache License 2.0 (see LICENSE)
"""Every tctl call has a deadline: a tctl that waits for ever is killed and explained.

On a cluster that requires MFA for admin actions, tctl run from a person's
tsh login waits for a security key touch (Teleport's lib/authz/permissions.go,
isAdminActionAuthorizationRequired; tctl's prompt comes from lib/client/mfa).
Under Ansible no one touches it, so the call must end, and the message must
name the fix.
"""

from __future__ import annotations

import os
import time

import pytest

from ansible_collections.teleport.event_handler.plugins.module_utils._tctl import (
    TctlError,
    TctlRunner,
    TctlTimeout,
    run_with_deadline,
)

ENV = dict(os.environ, LC_ALL="C", LANG="C")


def _script(tmp_path, name, body):
    path = tmp_path / name
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(0o755)
    return str(path)


def test_a_tctl_that_never_returns_is_killed_with_its_children(tmp_path):
    pid_file = tmp_path / "child.pid"
    # Like tctl at its prompt: says so on stderr, then waits; a child holds the pipes.
    tctl = _script(
        tmp_path,
        "tctl",
        f"echo 'Tap any security key' >&2\nsleep 600 &\necho $! > {pid_file}\nwait\n",
    )
    started = time.monotonic()
    with pytest.raises(TctlTimeout) as caught:
        run_with_deadline([tctl, "rm", "role/x"], None, 1, ENV)
    assert time.monotonic() - started < 30
    assert caught.value.seconds == 1
    assert "Tap any security key" in caught.value.stderr
    child = int(pid_file.read_text())
    for _attempt in range(50):
        try:
            os.kill(child, 0)
        except ProcessLookupError:
            break
        time.sleep(0.1)
    else:
        pytest.fail("the stand-in's child survived the deadline")


def test_a_quick_tctl_gets_its_stdin_and_environment(tmp_path):
    tctl = _script(tmp_path, "tctl", 'cat; echo "LC_ALL=$LC_ALL" >&2; exit 3\n')
    rc, out, err = run_with_deadline([tctl], '{"kind": "role"}', 30, ENV)
    assert (rc, out, err) == (3, '{"kind": "role"}', "LC_ALL=C\n")


def test_the_runner_turns_the_deadline_into_the_fix(tmp_path):
    tctl = _script(tmp_path, "tctl", "echo 'Tap any security key' >&2\nexec sleep 600\n")
    runner = TctlRunner(
        lambda argv, stdin: run_with_deadline(argv, stdin, 1, ENV), binary=tctl, timeout=1
    )
    with pytest.raises(TctlError) as caught:
        runner.delete("role", "old")
    assert caught.value.kind == "mfa"
    message = caught.value.message
    assert "tctl rm role/old: tctl did not finish within 1 seconds" in message
    assert "'Tap any security key'" in message
    assert "identity_file" in message and "tctl_config" in message


def test_a_wrapped_error_shows_its_whole_chain():
    # BotService.GetBot wraps the user's NOT_FOUND twice; trace prints a tree.
    def run(argv, stdin):
        err = (
            "\x1b[31mERROR: \x1b[0mfetching bot\n\tfetching bot user\n"
            '\t\tuser "bot-x" is not found\n'
        )
        return 1, "", err

    runner = TctlRunner(run, binary="tctl")
    with pytest.raises(TctlError) as caught:
        runner.bots_add_roles("x", ["access"])
    assert caught.value.kind == "missing"
    assert 'fetching bot: fetching bot user: user "bot-x" is not found' in caught.value.message


def test_a_tctl_that_cannot_start_names_tctl_path(tmp_path):
    broken = tmp_path / "tctl"
    broken.write_text("not a program\n")
    broken.chmod(0o755)
    with pytest.raises(TctlError) as caught:
        run_with_deadline([str(broken), "get", "roles"], None, 5, ENV)
    assert caught.value.kind == "binary"
    assert f"tctl_path: cannot run {broken}" in caught.value.message
