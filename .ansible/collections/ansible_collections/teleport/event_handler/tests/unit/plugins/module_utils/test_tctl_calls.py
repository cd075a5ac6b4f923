# Copyright: the teleport-event-handler authors
# Apache License 2.0 (see LICENSE)
"""Replay recorded tctl calls through the runner and the modules' logic.

Each case of ``tctl_calls.yml`` lists the calls tctl must receive (full argv
and the JSON on stdin) with what tctl answered, and the result or the error
message the module must produce.
"""

from __future__ import annotations

import json
import os

import pytest
import yaml

from ansible_collections.teleport.event_handler.plugins.module_utils._grants import (
    GrantError,
    ensure_grant,
)
from ansible_collections.teleport.event_handler.plugins.module_utils._resources import (
    ResourceError,
    ensure_absent_by_name,
    ensure_resources,
    load_definitions,
)
from ansible_collections.teleport.event_handler.plugins.module_utils._tctl import (
    TctlError,
    TctlRunner,
    TctlTimeout,
)

with open(os.path.join(os.path.dirname(__file__), "tctl_calls.yml"), encoding="utf-8") as _handle:
    CASES = yaml.safe_load(_handle)


class Replay:
    """Plays tctl's side: checks each call against the record, answers with it."""

    def __init__(self, calls):
        self.calls = list(calls)
        self.made = 0

    def __call__(self, argv, stdin):
        assert self.made < len(self.calls), f"unexpected extra call {argv}"
        record = self.calls[self.made]
        self.made += 1
        assert argv == record["argv"]
        if "stdin" in record:
            assert stdin is not None, f"{argv} needs the document on stdin"
            assert json.loads(stdin) == record["stdin"]
        else:
            assert stdin is None
        if "timeout" in record:
            raise TctlTimeout(record["timeout"], record.get("err", ""))
        return record.get("rc", 0), record.get("out", ""), record.get("err", "")


def _run(case, runner):
    run = case["run"]
    data = dict(case["input"])
    check_mode = case.get("check_mode", False)
    if run == "resources":
        docs = load_definitions(data["definition"], None, "definition")
        return ensure_resources(runner, docs, data.get("state", "present"), check_mode)
    if run == "absent":
        return ensure_absent_by_name(runner, data["kind"], data["name"], check_mode)
    if run == "grant":
        return ensure_grant(runner, check_mode=check_mode, **data)
    if run == "get":
        return {"resource": runner.get(data["kind"], data["name"], data.get("with_secrets", False))}
    raise AssertionError(f"unknown run {run!r}")


@pytest.mark.parametrize("case", CASES, ids=[case["id"] for case in CASES])
def test_recorded_calls(case):
    replay = Replay(case["calls"])
    connection = case.get("connection", {"config": "/etc/teleport.yaml"})
    runner = TctlRunner(replay, binary="tctl", **connection)
    if "expect_error" in case:
        expected = case["expect_error"]
        with pytest.raises((TctlError, GrantError, ResourceError)) as caught:
            _run(case, runner)
        message = str(caught.value)
        for text in expected.get("contains", []):
            assert text in message
        for secret in expected.get("secrets_absent", []):
            assert secret not in message
        if "kind" in expected:
            assert isinstance(caught.value, TctlError)
            assert caught.value.kind == expected["kind"]
    else:
        result = _run(case, runner)
        expected = dict(case["expect"])
        shown = json.dumps(result)
        for secret in expected.pop("secrets_absent", []):
            assert secret not in shown
        for key, value in expected.items():
            assert result[key] == value, key
    assert replay.made == len(replay.calls), "a recorded call was not made"
