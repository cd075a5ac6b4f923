"""``sandbox-teleport`` as real subprocesses: init, serve, append, faults, info."""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from teleport_server_support import (
    TIMEOUT,
    WIDE_END,
    WIDE_START,
    Client,
    Cluster,
    make_cluster,
    read_port,
    wait_for,
)

from teleport_event_handler.protos.teleport.legacy.client.proto import authservice_pb2
from teleport_sandbox.teleport import corpus

CLI = str(Path(sys.executable).with_name("sandbox-teleport"))


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([CLI, *args], capture_output=True, text=True, timeout=120, check=False)


@contextlib.contextmanager
def serving(
    data_dir: str, tmp_path: Path, *extra: str
) -> Iterator[tuple[subprocess.Popen[bytes], int]]:
    port_file = str(tmp_path / f"port-{time.monotonic_ns()}")
    log = open(tmp_path / "serve.log", "ab")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        [
            CLI,
            "serve",
            "--data-dir",
            data_dir,
            "--listen",
            "127.0.0.1:0",
            "--port-file",
            port_file,
            *extra,
        ],
        stdout=log,
        stderr=log,
    )
    try:
        yield proc, read_port(port_file)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        log.close()


@pytest.fixture
def cli_cluster(tmp_path: Path) -> Cluster:
    return make_cluster(tmp_path, events_per_day=120, sessions_per_day=2, oversized=0, unknown=1)


def test_init_is_deterministic_idempotent_and_forceable(tmp_path: Path) -> None:
    common = ["--days", "2", "--events-per-day", "150", "--start-date", "2026-01-10", "--seed", "5"]
    a, b = str(tmp_path / "a"), str(tmp_path / "b")
    for d in (a, b):
        result = run("init", "--data-dir", d, "--cluster-name", "c.example", *common)
        assert result.returncode == 0, result.stderr
        assert "generated corpus of 300 events over 2 days from 2026-01-10" in result.stdout
    assert corpus.event_uids(a) == corpus.event_uids(b)
    with (
        open(os.path.join(a, "corpus", "events.bin"), "rb") as fa,
        open(os.path.join(b, "corpus", "events.bin"), "rb") as fb,
    ):
        assert fa.read() == fb.read()
    assert os.path.exists(os.path.join(a, "teleport.yaml"))

    stamp = os.stat(os.path.join(a, "corpus", "events.bin")).st_mtime_ns
    again = run("init", "--data-dir", a, *common, "--seed", "6")
    assert again.returncode == 0 and "kept existing corpus" in again.stdout
    assert os.stat(os.path.join(a, "corpus", "events.bin")).st_mtime_ns == stamp

    forced = run("init", "--data-dir", a, *common, "--seed", "6", "--force")
    assert forced.returncode == 0 and "generated" in forced.stdout
    assert "cluster c.example" in forced.stdout  # the name the cluster was created with
    renamed = run("init", "--data-dir", a, "--cluster-name", "other.example")
    assert renamed.returncode == 0 and "--cluster-name 'other.example' ignored" in renamed.stderr
    assert corpus.event_uids(a).isdisjoint(corpus.event_uids(b))

    info = json.loads(run("info", "--data-dir", a).stdout)
    assert info["events"] == 300 and info["cluster_name"] == "c.example"
    assert sorted(info["days"]) == ["2026-01-10", "2026-01-11"]
    assert all(day["events"] == 150 and day["chunks"] >= 2 for day in info["days"].values())
    assert info["days"]["2026-01-10"]["types"]["session.upload"] == 20


def test_init_default_days_end_now(tmp_path: Path) -> None:
    d = str(tmp_path / "now")
    assert run("init", "--data-dir", d, "--events-per-day", "50").returncode == 0
    events = list(corpus.all_events(d))
    last = max(e["time"] for e in events)
    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    today = now[:10]
    assert last <= now and last.startswith(today)
    first_day = (
        datetime.datetime.now(datetime.UTC).date() - datetime.timedelta(days=2)
    ).isoformat()
    assert min(e["time"] for e in events).startswith(first_day)
    assert len(events) == 150 and len({e["uid"] for e in events}) == 150
    for e in events:
        assert e["time"].endswith("Z") and e["code"].startswith("T")


def test_serve_append_faults_and_sigterm(cli_cluster: Cluster, tmp_path: Path) -> None:
    d = cli_cluster.data_dir
    with serving(d, tmp_path, "--fault", "latency_ms=1") as (proc, port):
        client = Client(port, cli_cluster.identities["reader"])
        try:
            events, _ = client.all_pages(WIDE_START, WIDE_END, limit=1000)
            assert len(events) == 361

            shown = json.loads(run("faults", "--data-dir", d, "show").stdout)
            assert shown == {"latency_ms": 1.0}
            result = run("faults", "--data-dir", d, "set", "unavailable=1")
            assert result.returncode == 0, result.stderr
            with pytest.raises(grpc.RpcError) as info:
                wait_for_failure(client)
            assert info.value.code() == grpc.StatusCode.UNAVAILABLE
            assert run("faults", "--data-dir", d, "clear").returncode == 0
            wait_for(lambda: _pings(client))

            result = run(
                "append",
                "--data-dir",
                d,
                "--count",
                "4",
                "--failed-logins",
                "bob:root",
                "eve:admin",
            )
            assert result.returncode == 0, result.stderr
            appended = json.loads(result.stdout)
            assert appended["appended"] == 4 and len(appended["uids"]) == 4
            now = datetime.datetime.now(datetime.UTC).replace(tzinfo=None)
            fresh = client.page(
                now - datetime.timedelta(minutes=5), now + datetime.timedelta(minutes=5)
            )
            assert [e.id for e in fresh.items] == appended["uids"]
            assert [e.unstructured["user"] for e in fresh.items] == ["bob", "eve", "bob", "eve"]
        finally:
            client.close()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0


def _pings(client: Client) -> bool:
    try:
        client.auth.Ping(authservice_pb2.PingRequest(), timeout=TIMEOUT)
        return True
    except grpc.RpcError:
        return False


def wait_for_failure(client: Client) -> None:
    """Raise the first RPC error a call meets (the server re-reads faults per call)."""
    for _ in range(100):
        client.auth.Ping(authservice_pb2.PingRequest(), timeout=TIMEOUT)
        time.sleep(0.05)


def test_serve_legacy_mode_flag(cli_cluster: Cluster, tmp_path: Path) -> None:
    with serving(cli_cluster.data_dir, tmp_path, "--mode", "legacy") as (_, port):
        client = Client(port, cli_cluster.identities["reader"])
        try:
            with pytest.raises(grpc.RpcError) as info:
                client.chunks(datetime.date.today())
            assert info.value.code() == grpc.StatusCode.UNIMPLEMENTED
        finally:
            client.close()


def test_append_at_times_events_to_the_nanosecond(cli_cluster: Cluster) -> None:
    at = (time.time_ns() // 1_000_000_000 + 5) * 1_000_000_000 + 7
    first = run(
        "append", "--data-dir", cli_cluster.data_dir, "--count", "2", "--at", corpus.format_time(at)
    )
    assert first.returncode == 0, first.stderr
    assert json.loads(first.stdout)["first_time"] == corpus.format_time(at)
    stored = corpus.Corpus(cli_cluster.data_dir)
    assert stored.times[-2] == at
    again = run(
        "append", "--data-dir", cli_cluster.data_dir, "--count", "1", "--at", corpus.format_time(at)
    )
    assert again.returncode == 1 and "give a later --at" in again.stderr
    assert corpus.Corpus(cli_cluster.data_dir).count == stored.count  # nothing was written
    bad = run("append", "--data-dir", cli_cluster.data_dir, "--count", "1", "--at", "yesterday")
    assert bad.returncode == 2 and "is not a UTC time" in bad.stderr


def test_cli_errors_name_the_problem(tmp_path: Path, cli_cluster: Cluster) -> None:
    missing = str(tmp_path / "nothing")
    os.makedirs(missing)
    result = run("append", "--data-dir", missing, "--count", "1")
    assert result.returncode == 1
    assert "corpus/meta.json: no corpus here; run `sandbox-teleport init" in result.stderr
    bad = run("faults", "--data-dir", cli_cluster.data_dir, "set", "unavailable=7")
    assert bad.returncode == 1 and "unavailable='7'" in bad.stderr and "fraction" in bad.stderr
    kind = run("append", "--data-dir", cli_cluster.data_dir, "--count", "1", "--type", "nope")
    assert kind.returncode == 1 and "cannot append events of type 'nope'" in kind.stderr

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(
            [CLI, "serve", "--data-dir", cli_cluster.data_dir, "--listen", f"127.0.0.1:{port}"],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    assert result.returncode == 1 and f"cannot listen on 127.0.0.1:{port}" in result.stderr


def test_serve_starts_quickly_with_120k_events(tmp_path: Path) -> None:
    cluster = make_cluster(
        tmp_path, days=3, events_per_day=40_000, sessions_per_day=20, oversized=0, unknown=0
    )
    started = time.monotonic()
    with serving(cluster.data_dir, tmp_path) as (_, port):
        elapsed = time.monotonic() - started
        client = Client(port, cluster.identities["reader"])
        try:
            page = client.page(WIDE_START, WIDE_END, limit=10000, ascending=False)
            assert len(page.items) > 1000 and page.last_key
        finally:
            client.close()
    assert elapsed < 10, f"serve took {elapsed:.1f}s to listen with 120k events"
