"""End to end: sandbox Teleport -> teleport-event-handler -> a real Fluentd 1.16.

Every test runs the real processes over real mutual TLS, Fluentd with the
project's ``fluent.conf`` template, and counts what reached Fluentd's file
outputs by ``uid`` against what Teleport holds.
"""

from __future__ import annotations

import collections
import os
import random
import signal
import subprocess
import time
from typing import Any

from teleport_sandbox.stack import Stack
from teleport_sandbox.teleport.corpus import all_events

RUN_TIMEOUT = 600


def _uids(records: list[dict[str, Any]]) -> set[str]:
    return {str(r["uid"]) for r in records}


def _run_to_end(stack: Stack, toml: str, *flags: str) -> None:
    proc = stack.start_handler(toml, "--exit-on-last-event", *flags)
    assert proc.wait(RUN_TIMEOUT) == 0, f"handler failed, see {stack.root}/handler.log"


def _assert_complete(stack: Stack, *, exactly_once: bool = False) -> list[dict[str, Any]]:
    records = stack.received("audit")
    expected = stack.teleport_uids()
    counts = collections.Counter(str(r["uid"]) for r in records)
    got = set(counts)
    missing = expected - got
    assert not missing, f"{len(missing)} of {len(expected)} events never reached Fluentd"
    assert got <= expected, f"unknown events at Fluentd: {sorted(got - expected)[:5]}"
    if exactly_once:
        twice = [uid for uid, n in counts.items() if n != 1]
        assert not twice, f"{len(twice)} events arrived more than once, e.g. {twice[:3]}"
    return records


def test_exports_every_event_over_days(big_stack: Stack) -> None:
    toml = big_stack.handler_toml(start_time=big_stack.corpus_start())
    _run_to_end(big_stack, toml)
    records = _assert_complete(big_stack, exactly_once=True)
    assert len(records) >= 100_000
    # Bodies are Teleport's JSON: compare a sample with the events Teleport holds.
    by_uid = {str(e["uid"]): e for e in all_events(big_stack.teleport_dir)}
    for record in random.Random(7).sample(records, 200):
        assert record == by_uid[str(record["uid"])]
    days = {str(r["time"])[:10] for r in records}
    assert len(days) >= 3


def test_kill_9_at_random_points_loses_nothing(big_stack: Stack) -> None:
    toml = big_stack.handler_toml(start_time=big_stack.corpus_start())
    rng = random.Random()
    approx_total = 102_000 * 600
    for round_ in range(4):
        threshold = big_stack.output_bytes() + rng.uniform(0.05, 0.2) * approx_total
        proc = big_stack.start_handler(toml)
        deadline = time.monotonic() + 120
        while big_stack.output_bytes() < threshold and proc.poll() is None:
            assert time.monotonic() < deadline, "no progress before the kill"
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
        print(f"round {round_}: killed at {big_stack.output_bytes()} bytes")
    _run_to_end(big_stack, toml)
    records = _assert_complete(big_stack)
    duplicates = len(records) - len(_uids(records))
    print(f"{duplicates} events re-sent after 4 kills")


def test_sigterm_finishes_in_flight_and_resumes(big_stack: Stack) -> None:
    toml = big_stack.handler_toml(start_time=big_stack.corpus_start())
    proc = big_stack.start_handler(toml)
    big_stack.wait_until(
        proc, lambda: big_stack.output_bytes() >= 5_000_000, "output at Fluentd", 120
    )
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(30) == 0
    partial = len(big_stack.received("audit"))
    _run_to_end(big_stack, toml)
    records = _assert_complete(big_stack)
    # A graceful stop commits everything acknowledged: little or nothing is re-sent.
    assert len(records) - len(_uids(records)) <= 5_000, (partial, len(records))


def test_fluentd_restart_mid_export_loses_nothing(big_stack: Stack) -> None:
    """Fluentd stops (flushing its buffers) and comes back on the same port."""
    toml = big_stack.handler_toml(start_time=big_stack.corpus_start())
    proc = big_stack.start_handler(toml, "--exit-on-last-event")
    big_stack.wait_until(
        proc, lambda: big_stack.output_bytes() >= 3_000_000, "output at Fluentd", 120
    )
    big_stack.stop_fluentd()
    time.sleep(2)
    assert proc.poll() is None, "the handler gave up while Fluentd was down"
    big_stack.start_fluentd()
    assert proc.wait(RUN_TIMEOUT) == 0
    _assert_complete(big_stack)


def test_filters_hold(small_stack: Stack) -> None:
    wanted = ["user.login", "session.start", "exec"]
    toml = small_stack.handler_toml(
        start_time=small_stack.corpus_start(),
        types=",".join(wanted),
        skip_event_types="exec",
    )
    _run_to_end(small_stack, toml)
    records = small_stack.received("audit")
    expected = collections.Counter(
        e["event"] for e in all_events(small_stack.teleport_dir) if e["event"] in wanted[:2]
    )
    got = collections.Counter(r["event"] for r in records)
    assert got == expected and sum(got.values()) > 0


def test_changed_start_time_is_refused(small_stack: Stack) -> None:
    start = small_stack.corpus_start()
    _run_to_end(small_stack, small_stack.handler_toml(start_time=start))
    moved = start.replace(hour=(start.hour + 1) % 24)
    toml = small_stack.handler_toml(start_time=moved)
    result = subprocess.run(
        small_stack.handler_command(toml, "--exit-on-last-event"),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    assert "can not change start time" in result.stderr
    assert small_stack.storage in result.stderr


def test_bad_toml_names_the_problem(small_stack: Stack, tmp_path: Any) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('storage = "./s"\n[forward.fluentd\nurl = "x"\n')
    result = subprocess.run(
        small_stack.handler_command(str(bad)), capture_output=True, text=True, timeout=60
    )
    assert result.returncode != 0
    assert str(bad) in result.stderr and "line" in result.stderr.lower()


def test_expired_identity_names_the_fix(small_stack: Stack) -> None:
    identity = small_stack.sign_identity(ttl="1s", out=os.path.join(small_stack.root, "short"))
    time.sleep(2.1)
    toml = small_stack.handler_toml(teleport__identity=identity)
    result = subprocess.run(
        small_stack.handler_command(toml), capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 1
    assert "expired" in result.stderr and "tctl auth sign" in result.stderr


def test_role_without_event_read_names_the_fix(small_stack: Stack) -> None:
    role = os.path.join(small_stack.root, "weak.yaml")
    with open(role, "w") as handle:
        handle.write(
            "kind: role\nversion: v7\nmetadata:\n  name: sessions-only\nspec:\n  allow:\n"
            "    rules:\n      - resources: ['session']\n        verbs: ['list', 'read']\n"
            "---\nkind: user\nversion: v2\nmetadata:\n  name: weak-handler\nspec:\n"
            "  roles: ['sessions-only']\n"
        )
    small_stack.tctl("create", "-f", role)
    identity = small_stack.sign_identity(
        out=os.path.join(small_stack.root, "weak-identity"), user="weak-handler"
    )
    toml = small_stack.handler_toml(teleport__identity=identity)
    result = subprocess.run(
        small_stack.handler_command(toml), capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 1, result.stderr
    assert "denied" in result.stderr and "'event'" in result.stderr


def test_untrusted_fluentd_certificate_names_the_fix(small_stack: Stack) -> None:
    wrong_ca = os.path.join(small_stack.teleport_dir, "ca", "host_ca.crt")
    toml = small_stack.handler_toml(fluentd__ca=wrong_ca)
    result = subprocess.run(
        small_stack.handler_command(toml), capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert "certificate" in result.stderr and wrong_ca in result.stderr, result.stderr


def test_certificate_key_and_ca_instead_of_an_identity_file(small_stack: Stack) -> None:
    out = os.path.join(small_stack.root, "handler", "tls")
    small_stack.tctl(
        "auth", "sign", "--user=teleport-event-handler", "--format=tls", f"--out={out}", "--ttl=1h"
    )
    toml = small_stack.handler_toml(
        start_time=small_stack.corpus_start(),
        teleport__identity=None,
        teleport__cert=f"{out}.crt",
        teleport__key=f"{out}.key",
        teleport__ca=f"{out}.cas",
    )
    _run_to_end(small_stack, toml)
    _assert_complete(small_stack)


def test_a_cluster_that_gains_bulk_export_continues_the_legacy_export(
    small_template: str, tmp_path: Any
) -> None:
    stack = Stack.copy_of(small_template, str(tmp_path / "stack"), mode="legacy")
    try:
        addr = stack.start_teleport(extra=["--fault=latency_ms=400"])
        stack.start_fluentd()
        toml = stack.handler_toml(start_time=stack.corpus_start(), batch=100)
        proc = stack.start_handler(toml)
        stack.wait_until(proc, lambda: stack.output_bytes() > 0, "output at Fluentd", 60)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
        assert len(stack.received("audit")) < len(stack.teleport_uids())
        # The backend is upgraded (say, to Athena): the same address now bulk-exports.
        stack.stop_teleport()
        stack.start_teleport(mode="bulk", port=int(addr.rsplit(":", 1)[1]))
        _run_to_end(stack, toml)
        _assert_complete(stack)
        assert "continuing the legacy export with bulk export" in stack.handler_log()
    finally:
        stack.stop()


def test_fluentd_refusing_a_missing_client_certificate_names_the_fix(small_stack: Stack) -> None:
    """Fluentd 1.16 (TLS 1.2 only) refuses it with handshake_failure: a stop, not retries."""
    toml = small_stack.handler_toml(fluentd__cert=None, fluentd__key=None)
    result = subprocess.run(
        small_stack.handler_command(toml), capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert "HANDSHAKE_FAILURE" in result.stderr and "--fluentd-cert" in result.stderr, result.stderr


def test_a_clean_exit_leaves_fluentd_no_unexpected_eof(small_stack: Stack) -> None:
    """Pooled connections end with TLS close_notify: Fluentd logs "SSL_read:
    unexpected eof" for each one that does not (lib/fluent/plugin_helper/server.rb
    TLSCallbackSocket#on_readable)."""
    toml = small_stack.handler_toml(start_time=small_stack.corpus_start())
    _run_to_end(small_stack, toml, "--fluentd-max-connections=4")
    _assert_complete(small_stack, exactly_once=True)
    seen = len(small_stack.handler_log())
    proc = small_stack.start_handler(toml)
    small_stack.wait_until(
        proc, lambda: ": using " in small_stack.handler_log()[seen:], "engine chosen"
    )
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(30) == 0
    time.sleep(1.0)
    assert "unexpected eof" not in small_stack.fluentd_log().lower()


def test_an_http_url_to_a_tls_fluentd_names_the_fix(small_stack: Stack) -> None:
    """The real Fluentd hangs up on plain HTTP: the handler stops, naming https://."""
    url = f"http://localhost:{small_stack.fluentd_port}/test.log"
    toml = small_stack.handler_toml(fluentd__url=url)
    result = subprocess.run(
        small_stack.handler_command(toml), capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert f"Fluentd at {url} speaks TLS" in result.stderr, result.stderr
    assert f"use https://localhost:{small_stack.fluentd_port}/test.log" in result.stderr
