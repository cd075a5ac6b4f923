"""Fault injection, the legacy backend and live appends, over real mTLS sockets."""

from __future__ import annotations

import datetime
import os
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
    corpus_days,
    make_cluster,
    wait_for,
)

from teleport_event_handler.protos.teleport.legacy.client.proto import authservice_pb2
from teleport_sandbox.teleport import corpus, faults, server


def _code(call: object) -> grpc.StatusCode:
    with pytest.raises(grpc.RpcError) as info:
        call()  # type: ignore[operator]
    return info.value.code()


def _set(cluster: Cluster, **values: object) -> None:
    """Change faults as a test would while the server runs, and make sure mtime moves."""
    before = os.stat(os.path.join(cluster.data_dir, faults.FAULTS_FILE)).st_mtime_ns
    faults.write_faults(cluster.data_dir, values)
    path = os.path.join(cluster.data_dir, faults.FAULTS_FILE)
    if os.stat(path).st_mtime_ns == before:  # coarse clocks: force a visible change
        os.utime(path, ns=(before + 1_000_000, before + 1_000_000))


# --- faults --------------------------------------------------------------------------


def test_a_cluster_that_rejects_old_clients_reads_the_version_metadata(
    tp_cluster: Cluster, tp_reader: Client
) -> None:
    """lib/auth/middleware.go, Middleware.ValidateClientVersion: the ``version``
    metadata is the client's Teleport API version; none passes, an older one or
    one that is not a semantic version is refused (AccessDenied, "client version
    is unsupported")."""
    ping = authservice_pb2.PingRequest()
    _set(tp_cluster, oldest_client_version="17.0.0")

    def ping_as(version: str | None) -> grpc.StatusCode:
        metadata = () if version is None else (("version", version),)
        try:
            tp_reader.auth.Ping(ping, timeout=TIMEOUT, metadata=metadata)
        except grpc.RpcError as exc:
            assert "client version is unsupported" in exc.details()
            return exc.code()  # type: ignore[no-any-return]
        return grpc.StatusCode.OK

    assert ping_as(None) == grpc.StatusCode.OK
    assert ping_as("17.4.8") == grpc.StatusCode.OK
    assert ping_as("17.0.0") == grpc.StatusCode.OK
    assert ping_as("16.4.2") == grpc.StatusCode.PERMISSION_DENIED
    assert ping_as("17.0.0-dev") == grpc.StatusCode.PERMISSION_DENIED
    assert ping_as("0.1.0") == grpc.StatusCode.PERMISSION_DENIED
    assert ping_as("not-a-version") == grpc.StatusCode.PERMISSION_DENIED
    _set(tp_cluster)
    assert ping_as("0.1.0") == grpc.StatusCode.OK
    with pytest.raises(faults.FaultError, match="oldest_client_version"):
        faults.parse_assignments(["oldest_client_version=seventeen"])


def test_not_found_fault_makes_a_listed_chunk_vanish(
    tp_cluster: Cluster, tp_reader: Client
) -> None:
    """A chunk listed by GetEventExportChunks can be gone when it is exported
    (its object removed from the bucket): NOT_FOUND, with the wording of a
    missing chunk."""
    day = corpus_days(tp_cluster)[0]
    chunk = tp_reader.chunks(day)[0]
    _set(tp_cluster, not_found=1, methods="ExportUnstructuredEvents")
    assert tp_reader.chunks(day)[0] == chunk  # still listed
    with pytest.raises(grpc.RpcError) as info:
        tp_reader.export(day, chunk)
    assert info.value.code() == grpc.StatusCode.NOT_FOUND
    assert f'export chunk "{chunk}" not found' in info.value.details()
    _set(tp_cluster)
    assert tp_reader.export(day, chunk)
    with pytest.raises(faults.FaultError, match="must not exceed 1"):
        faults.parse_assignments(["not_found=0.6", "unavailable=0.6"])


def test_unavailable_and_deadline_faults_follow_the_file(
    tp_cluster: Cluster, tp_reader: Client
) -> None:
    ping = authservice_pb2.PingRequest()
    assert tp_reader.auth.Ping(ping, timeout=TIMEOUT).ClusterName
    _set(tp_cluster, unavailable=1)
    assert _code(lambda: tp_reader.auth.Ping(ping, timeout=TIMEOUT)) == (
        grpc.StatusCode.UNAVAILABLE
    )
    assert _code(lambda: tp_reader.page(WIDE_START, WIDE_END)) == grpc.StatusCode.UNAVAILABLE
    _set(tp_cluster, deadline=1)
    assert _code(lambda: tp_reader.page(WIDE_START, WIDE_END)) == (
        grpc.StatusCode.DEADLINE_EXCEEDED
    )
    _set(tp_cluster)
    assert tp_reader.page(WIDE_START, WIDE_END, limit=3).items


def test_fractional_faults_are_repeatable_for_a_seed(
    tp_cluster: Cluster, tp_reader: Client
) -> None:
    def outcomes() -> list[str]:
        out = []
        for _ in range(40):
            try:
                tp_reader.page(WIDE_START, WIDE_END, limit=1)
                out.append("ok")
            except grpc.RpcError as exc:
                out.append(exc.code().name)
        return out

    _set(tp_cluster, unavailable=0.3, deadline=0.2, seed=11)
    first = outcomes()
    _set(tp_cluster, unavailable=0.3, deadline=0.2, seed=11, latency_ms=0)  # re-read: reseeds
    second = outcomes()
    assert first == second
    assert {"ok", "UNAVAILABLE", "DEADLINE_EXCEEDED"} == set(first)


def test_faults_can_target_methods(tp_cluster: Cluster, tp_reader: Client) -> None:
    _set(tp_cluster, unavailable=1, methods=["GetUnstructuredEvents"])
    assert tp_reader.auth.Ping(authservice_pb2.PingRequest(), timeout=TIMEOUT).ClusterName
    assert _code(lambda: tp_reader.page(WIDE_START, WIDE_END)) == grpc.StatusCode.UNAVAILABLE


def test_latency_fault_slows_replies(tp_cluster: Cluster, tp_reader: Client) -> None:
    _set(tp_cluster, latency_ms=300)
    started = time.monotonic()
    tp_reader.page(WIDE_START, WIDE_END, limit=1)
    assert time.monotonic() - started >= 0.3
    _set(tp_cluster)
    started = time.monotonic()
    tp_reader.page(WIDE_START, WIDE_END, limit=1)
    assert time.monotonic() - started < 0.3


def test_dropped_stream_delivers_n_messages_then_unavailable_and_resumes(
    tp_cluster: Cluster, tp_reader: Client
) -> None:
    day = corpus_days(tp_cluster)[0]
    chunk = max(tp_reader.chunks(day), key=lambda c: len(tp_reader.export(day, c)))
    full = tp_reader.export(day, chunk)
    assert len(full) > 10
    _set(tp_cluster, drop_stream_after=4)
    got = []
    cursor = ""
    for _ in range(len(full)):  # bounded: each attempt makes progress
        stream = tp_reader.audit.ExportUnstructuredEvents(
            _export_request(day, chunk, cursor), timeout=TIMEOUT
        )
        batch = []
        try:
            for message in stream:
                batch.append(message)
            got.extend(batch)
            break
        except grpc.RpcError as exc:
            assert exc.code() == grpc.StatusCode.UNAVAILABLE
            assert len(batch) == 4
            got.extend(batch)
            cursor = batch[-1].cursor
    assert [m.event.id for m in got] == [m.event.id for m in full]


def _export_request(day: datetime.date, chunk: str, cursor: str) -> object:
    from teleport_event_handler.protos.teleport.auditlog.v1 import auditlog_pb2

    req = auditlog_pb2.ExportUnstructuredEventsRequest(chunk=chunk, cursor=cursor)
    req.date.FromDatetime(datetime.datetime(day.year, day.month, day.day))
    return req


def test_oversized_and_unknown_events_can_be_hidden(tp_cluster: Cluster, tp_reader: Client) -> None:
    everything = corpus.event_uids(tp_cluster.data_dir)
    plain = corpus.event_uids(tp_cluster.data_dir, oversized=False, unknown=False)
    assert len(everything) - len(plain) == 3  # 1 oversized + 2 unknown in the cluster
    events, _ = tp_reader.all_pages(WIDE_START, WIDE_END, limit=10000)
    assert {e.id for e in events} == everything
    assert {e.type for e in events} & set(corpus.UNKNOWN_TYPES)
    _set(tp_cluster, oversized_events=False, unknown_types=False)
    for ascending in (True, False):
        events, _ = tp_reader.all_pages(WIDE_START, WIDE_END, limit=100, ascending=ascending)
        assert {e.id for e in events} == plain
    exported = set()
    for day in corpus_days(tp_cluster):
        for chunk in tp_reader.chunks(day):
            exported |= {m.event.id for m in tp_reader.export(day, chunk)}
    assert exported == plain


def test_bad_faults_file_keeps_previous_faults(tp_cluster: Cluster, tp_reader: Client) -> None:
    _set(tp_cluster, unavailable=1)
    assert _code(lambda: tp_reader.page(WIDE_START, WIDE_END)) == grpc.StatusCode.UNAVAILABLE
    path = os.path.join(tp_cluster.data_dir, faults.FAULTS_FILE)
    with open(path, "w") as f:
        f.write("{not json")
    assert _code(lambda: tp_reader.page(WIDE_START, WIDE_END)) == grpc.StatusCode.UNAVAILABLE


def test_fault_settings_are_validated() -> None:
    assert faults.parse_assignments(["unavailable=0.5", "latency_ms=20"]) == {
        "unavailable": 0.5,
        "latency_ms": 20.0,
    }
    for bad, words in (
        (["unavailable=2"], "fraction"),
        (["latency_ms=-1"], ">= 0"),
        (["drop_stream_after=1.5"], "whole number"),
        (["oversized_events=maybe"], "true or false"),
        (["methods=Nope"], "unknown method"),
        (["typo=1"], "unknown fault"),
        (["novalue"], "KEY=VALUE"),
        (["unavailable=0.7", "deadline=0.7"], "must not exceed 1"),
    ):
        with pytest.raises(faults.FaultError, match=words):
            faults.parse_assignments(bad)


# --- legacy backend ------------------------------------------------------------------


def test_legacy_mode_refuses_bulk_calls_but_pages(tp_cluster: Cluster) -> None:
    running = server.start_server(tp_cluster.data_dir, mode="legacy")
    client = Client(running.port, tp_cluster.identities["reader"])
    try:
        faults.clear_faults(tp_cluster.data_dir)
        day = corpus_days(tp_cluster)[0]
        for call in (lambda: client.chunks(day), lambda: client.export(day, "any")):
            with pytest.raises(grpc.RpcError) as info:
                call()
            assert info.value.code() == grpc.StatusCode.UNIMPLEMENTED
            assert "does not support streaming export" in info.value.details()
        events, _ = client.all_pages(WIDE_START, WIDE_END, limit=500)
        assert {e.id for e in events} == corpus.event_uids(tp_cluster.data_dir)
        sid = next(e for e in events if e.type == "session.upload").unstructured["sid"]
        assert client.session(sid)
    finally:
        client.close()
        running.stop(grace=None)


# --- live appends --------------------------------------------------------------------


@pytest.fixture
def live_cluster(tmp_path: Path) -> Cluster:
    return make_cluster(tmp_path, events_per_day=60, sessions_per_day=1, oversized=0, unknown=0)


@pytest.fixture(params=["bulk", "legacy"])
def live_server(request: pytest.FixtureRequest, live_cluster: Cluster) -> Iterator[Client]:
    running = server.start_server(live_cluster.data_dir, mode=request.param)
    client = Client(running.port, live_cluster.identities["reader"])
    client.mode = request.param  # type: ignore[attr-defined]
    yield client
    client.close()
    running.stop(grace=None)


def test_live_appends_are_served_and_persisted(live_cluster: Cluster, live_server: Client) -> None:
    before = corpus.event_uids(live_cluster.data_dir)
    now = datetime.datetime.now(datetime.UTC).replace(tzinfo=None)
    window = (now - datetime.timedelta(minutes=5), now + datetime.timedelta(minutes=5))
    assert live_server.page(*window).items == []

    added = corpus.append_events(live_cluster.data_dir, 7)
    added += corpus.append_events(live_cluster.data_dir, 3, failed_logins=[("bob", "root")])
    added += corpus.append_events(live_cluster.data_dir, 1, event_type="session.upload")
    added_uids = {e["uid"] for e in added}
    assert len(added_uids) == 11

    events, _ = live_server.all_pages(*window, limit=4)
    assert [e.id for e in events] == [e["uid"] for e in added]  # in time order
    failed = [e for e in events if e.type == "user.login" and not e.unstructured["success"]]
    assert {(e.unstructured["user"], e.unstructured["login"]) for e in failed} >= {("bob", "root")}
    assert all(e.unstructured["code"] == "T1000W" for e in failed)

    # Paging resumes past a key even when events arrive after it.
    last_key = live_server.page(*window, limit=10).last_key
    assert last_key
    more = corpus.append_events(live_cluster.data_dir, 2)
    rest, _ = live_server.all_pages(*window, limit=100, key=last_key)
    assert [e.id for e in rest] == [added[-1]["uid"]] + [e["uid"] for e in more]

    sid = next(e for e in added if e["event"] == "session.upload")["sid"]
    assert live_server.session(sid)[-1].type == "session.end"

    if live_server.mode == "bulk":  # type: ignore[attr-defined]
        today = datetime.datetime.now(datetime.UTC).date()
        chunks = live_server.chunks(today)
        assert len(chunks) == 4  # one sealed chunk per append call
        exported = {m.event.id for c in chunks for m in live_server.export(today, c)}
        assert exported == added_uids | {e["uid"] for e in more}

    # Persisted: the data dir (what a restarted server loads) has them too.
    assert corpus.event_uids(live_cluster.data_dir) == before | added_uids | {
        e["uid"] for e in more
    }
    reloaded = corpus.Corpus(live_cluster.data_dir)
    assert reloaded.count == len(before) + 13


def test_live_rate_writer_seals_new_chunks(live_cluster: Cluster) -> None:
    running = server.start_server(live_cluster.data_dir, live_rate=40)
    client = Client(running.port, live_cluster.identities["reader"])
    try:
        today = datetime.datetime.now(datetime.UTC).date()
        first = wait_for(lambda: client.chunks(today), timeout=5)
        more = wait_for(lambda: len(client.chunks(today)) > len(first), timeout=5)
        assert more
        assert set(first) <= set(client.chunks(today))  # listed chunks never vanish
        for chunk in first:
            assert 1 <= len(client.export(today, chunk)) <= corpus.LIVE_CHUNK_EVENTS
    finally:
        client.close()
        running.stop(grace=None)
    assert corpus.Corpus(live_cluster.data_dir).count > 180


def test_append_recovers_from_a_writer_that_died(live_cluster: Cluster) -> None:
    cdir = os.path.join(live_cluster.data_dir, corpus.CORPUS_DIR)
    state_path = os.path.join(cdir, "live.state.json")
    first = corpus.append_events(live_cluster.data_dir, 2)
    with open(state_path, "rb") as f:
        after_first = f.read()
    second = corpus.append_events(live_cluster.data_dir, 2)
    # Died after writing a whole frame but before recording it: the frame stays.
    with open(state_path, "wb") as f:
        f.write(after_first)
    # ...and another died mid-frame: a header promising bytes that never came.
    with open(os.path.join(cdir, "live.log"), "ab") as f:
        f.write(b"TEHF" + (50).to_bytes(4, "little") + (999).to_bytes(4, "little") + b"{")
    running = server.start_server(live_cluster.data_dir)
    client = Client(running.port, live_cluster.identities["reader"])
    try:
        now = datetime.datetime.now(datetime.UTC).replace(tzinfo=None)
        window = (now - datetime.timedelta(minutes=5), now + datetime.timedelta(minutes=5))
        assert len(client.page(*window).items) == 4  # the torn frame is not served
        third = corpus.append_events(live_cluster.data_dir, 2)
        ids = [e.id for e in client.all_pages(*window, limit=3)[0]]
        assert ids == [e["uid"] for e in first + second + third]
    finally:
        client.close()
        running.stop(grace=None)
