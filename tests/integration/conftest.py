"""Fixtures for end-to-end tests: real sandbox processes and the real forwarder.

Initialising a sandbox cluster with 100,000+ events takes a few seconds, so it
happens once per session into a template; each test gets a private copy with
its own Teleport and Fluentd processes, storage and Fluentd output.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Protocol

import pytest

from teleport_sandbox.stack import Stack

# At least 100,000 events over at least 3 days (issue #2's bar).
DAYS = 3
EVENTS_PER_DAY = 34_000


@pytest.fixture(scope="session")
def big_template(tmp_path_factory: pytest.TempPathFactory) -> str:
    root = str(tmp_path_factory.mktemp("template-big") / "stack")
    stack = Stack(root=root, days=DAYS, events_per_day=EVENTS_PER_DAY)
    stack.init()
    return root


@pytest.fixture(scope="session")
def small_template(tmp_path_factory: pytest.TempPathFactory) -> str:
    root = str(tmp_path_factory.mktemp("template-small") / "stack")
    stack = Stack(root=root, days=3, events_per_day=400)
    stack.init()
    return root


class MakeStack(Protocol):
    def __call__(
        self,
        template: str,
        mode: str = "bulk",
        *,
        teleport_args: Sequence[str] = (),
        proxy: bool = False,
    ) -> Stack: ...


# Printed after each test; pytest shows them when the test failed.
LOGS = ("handler.log", "teleport.log", "proxy.log", "fluentd.log")
LOG_TAIL = 4000


@pytest.fixture
def make_stack(tmp_path: Path) -> Iterator[MakeStack]:
    """Starts a copy of ``template``: Teleport (with ``teleport_args``), the Proxy
    if asked, and Fluentd. Every stack it started is stopped after the test, and
    the tails of its logs are printed."""
    started: list[Stack] = []

    def make(
        template: str,
        mode: str = "bulk",
        *,
        teleport_args: Sequence[str] = (),
        proxy: bool = False,
    ) -> Stack:
        name = f"stack-{len(started)}" if started else "stack"
        stack = Stack.copy_of(template, str(tmp_path / name), mode=mode)
        started.append(stack)  # stopped even if a later start fails
        stack.start_teleport(extra=list(teleport_args))
        if proxy:
            stack.start_proxy()
        stack.start_fluentd()
        return stack

    try:
        yield make
    finally:
        for stack in started:
            try:
                stack.stop()
            finally:
                _print_log_tails(stack)


def _print_log_tails(stack: Stack) -> None:
    for name in LOGS:
        path = os.path.join(stack.root, name)
        if os.path.exists(path):
            with open(path, errors="replace") as handle:
                tail = handle.read()[-LOG_TAIL:]
            print(f"--- {path} (tail)\n{tail}")


@pytest.fixture(params=["bulk", "legacy"])
def big_stack(request: pytest.FixtureRequest, big_template: str, make_stack: MakeStack) -> Stack:
    return make_stack(big_template, request.param)


@pytest.fixture(params=["bulk", "legacy"])
def small_stack(
    request: pytest.FixtureRequest, small_template: str, make_stack: MakeStack
) -> Stack:
    return make_stack(small_template, request.param)
