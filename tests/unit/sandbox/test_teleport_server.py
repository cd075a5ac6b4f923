"""The sandbox Auth Service over real mTLS sockets: paging, bulk export, sessions, RBAC."""

from __future__ import annotations

import datetime
import json
import os

import grpc
import orjson
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from google.protobuf import json_format
from teleport_server_support import (
    TIMEOUT,
    WIDE_END,
    WIDE_START,
    Client,
    Cluster,
    corpus_days,
    credentials_from_identity,
    dial,
)

from teleport_event_handler import pki
from teleport_event_handler.protos.teleport.auditlog.v1 import auditlog_pb2
from teleport_event_handler.protos.teleport.legacy.client.proto import (
    authservice_pb2,
    authservice_pb2_grpc,
)
from teleport_event_handler.protos.teleport.legacy.types import types_pb2
from teleport_sandbox.teleport import authority, corpus, faults, server


def _times(events: list) -> list[int]:
    return [e.time.seconds * 1_000_000_000 + e.time.nanos for e in events]


def _code(call: object) -> grpc.StatusCode:
    with pytest.raises(grpc.RpcError) as info:
        call()  # type: ignore[operator]
    return info.value.code()


# --- Ping and identity ---------------------------------------------------------------


def test_ping_reports_cluster_and_version(tp_reader: Client) -> None:
    reply = tp_reader.auth.Ping(authservice_pb2.PingRequest(), timeout=TIMEOUT)
    assert reply.ClusterName == "sandbox.test"
    assert reply.ServerVersion == server.SERVER_VERSION
    assert reply.ServerVersion.endswith("-sandbox")


# --- GetUnstructuredEvents -----------------------------------------------------------


@pytest.mark.parametrize("ascending", [True, False])
def test_paging_covers_every_event_once_in_order(
    tp_cluster: Cluster, tp_reader: Client, ascending: bool
) -> None:
    events, pages = tp_reader.all_pages(WIDE_START, WIDE_END, limit=97, ascending=ascending)
    uids = [e.id for e in events]
    assert len(uids) == len(set(uids))
    assert set(uids) == corpus.event_uids(tp_cluster.data_dir)
    times = _times(events)
    assert times == sorted(times, reverse=not ascending)
    # last_key is set on every page but the last, and only there.
    assert all(p.last_key for p in pages[:-1]) and not pages[-1].last_key
    assert all(1 <= len(p.items) <= 97 for p in pages)


def test_event_payload_matches_the_stored_json(tp_cluster: Cluster, tp_reader: Client) -> None:
    stored = {e["uid"]: e for e in corpus.all_events(tp_cluster.data_dir)}
    page = tp_reader.page(WIDE_START, WIDE_END, limit=50)
    for item in page.items:
        body = json.loads(json_format.MessageToJson(item.unstructured))
        expected = stored[item.id]
        assert item.type == expected["event"]
        assert body["time"] == expected["time"] and body["uid"] == item.id
        assert body["code"] == expected["code"] and body["cluster_name"] == "sandbox.test"
        assert len(json.dumps(expected)) > 250


def _page_ns(client: Client, start_ns: int, end_ns: int) -> list[str]:
    req = auditlog_pb2.GetUnstructuredEventsRequest(order=server.EVENT_ORDER_ASCENDING)
    req.start_date.seconds, req.start_date.nanos = divmod(start_ns, 1_000_000_000)
    req.end_date.seconds, req.end_date.nanos = divmod(end_ns, 1_000_000_000)
    return [e.id for e in client.audit.GetUnstructuredEvents(req, timeout=TIMEOUT).items]


def test_window_is_inclusive_at_both_ends(tp_reader: Client) -> None:
    """Teleport's backends select ``BETWEEN start AND end`` (lib/events/dynamoevents
    Log.searchEventsRaw "CreatedAt BETWEEN :start and :end"; lib/events/filelog,
    lib/events/pgevents, lib/events/firestoreevents likewise): an event exactly on
    either bound is served."""
    events, _ = tp_reader.all_pages(WIDE_START, WIDE_END, limit=10000)
    middle = events[len(events) // 2]
    at = _times([middle])[0]
    assert _page_ns(tp_reader, at, at + 1) == [middle.id]
    assert _page_ns(tp_reader, at, at) == [middle.id]
    assert middle.id in _page_ns(tp_reader, at - 10**9, at)
    assert middle.id not in _page_ns(tp_reader, at - 10**9, at - 1)
    assert middle.id not in _page_ns(tp_reader, at + 1, at + 10**9)


def test_whole_seconds_fault_compares_windows_as_dynamodb_does(
    tp_cluster: Cluster, tp_reader: Client
) -> None:
    """DynamoDB stores CreatedAt as Unix seconds and compares the window's Unix
    seconds (lib/events/dynamoevents Log.searchEventsRaw): every event of both
    boundary seconds matches."""
    events, _ = tp_reader.all_pages(WIDE_START, WIDE_END, limit=10000)
    middle = events[len(events) // 2]
    at = _times([middle])[0]
    second = at // 10**9 * 10**9
    assert middle.id not in _page_ns(tp_reader, second + 10**9 - 1, second + 2 * 10**9)
    path = os.path.join(tp_cluster.data_dir, faults.FAULTS_FILE)
    before = os.stat(path).st_mtime_ns
    faults.write_faults(tp_cluster.data_dir, {"whole_seconds": True})
    if os.stat(path).st_mtime_ns == before:  # coarse clocks: make the change visible
        os.utime(path, ns=(before + 1_000_000, before + 1_000_000))
    try:
        assert middle.id in _page_ns(tp_reader, second + 10**9 - 1, second + 2 * 10**9)
        assert middle.id in _page_ns(tp_reader, second - 10**9, second)
        assert middle.id not in _page_ns(tp_reader, second - 10**9, second - 1)
    finally:
        faults.clear_faults(tp_cluster.data_dir)


def _first_page(client: Client, order: int) -> list[int]:
    req = auditlog_pb2.GetUnstructuredEventsRequest(order=order, limit=50)
    req.start_date.FromDatetime(WIDE_START)
    req.end_date.FromDatetime(WIDE_END)
    return _times(list(client.audit.GetUnstructuredEvents(req, timeout=TIMEOUT).items))


def test_order_is_read_as_teleport_casts_it(tp_reader: Client) -> None:
    """Teleport casts ``order`` straight to types.EventOrder (lib/auth/grpcserver.go,
    the GRPCServer audit handlers; api/client/client.go Client.SearchUnstructuredEvents
    sends types.EventOrderAscending as 0): 0 pages oldest first, 1 newest first,
    whatever the proto names say; backends refuse other values
    (lib/events/dynamoevents Log.searchEventsRaw, "invalid event order")."""
    every = _times(tp_reader.all_pages(WIDE_START, WIDE_END, limit=10000)[0])
    oldest_first = _first_page(tp_reader, 0)
    newest_first = _first_page(tp_reader, 1)
    assert oldest_first == sorted(every)[:50]
    assert newest_first == sorted(every, reverse=True)[:50]
    assert auditlog_pb2.ORDER_ASCENDING == server.EVENT_ORDER_DESCENDING  # the misleading name
    with pytest.raises(grpc.RpcError) as info:
        _first_page(tp_reader, 2)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "invalid event order: 2" in info.value.details()


def test_limit_defaults_and_maximum(tp_reader: Client) -> None:
    assert len(tp_reader.page(WIDE_START, WIDE_END, limit=0).items) == corpus.DEFAULT_LIMIT
    assert len(tp_reader.page(WIDE_START, WIDE_END, limit=-5).items) == corpus.DEFAULT_LIMIT
    with pytest.raises(grpc.RpcError) as info:
        tp_reader.page(WIDE_START, WIDE_END, limit=10001)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "limit 10001 exceeds 10000" in info.value.details()


def test_last_key_empty_when_a_page_ends_exactly_at_the_window_end(tp_reader: Client) -> None:
    events, _ = tp_reader.all_pages(WIDE_START, WIDE_END, limit=10000, types=("session.upload",))
    page = tp_reader.page(WIDE_START, WIDE_END, limit=len(events), types=("session.upload",))
    assert len(page.items) == len(events) and page.last_key == ""
    page = tp_reader.page(WIDE_START, WIDE_END, limit=len(events) - 1, types=("session.upload",))
    assert page.last_key != ""


def test_event_types_filter(tp_cluster: Cluster, tp_reader: Client) -> None:
    wanted = ("user.login", "session.upload")
    events, _ = tp_reader.all_pages(WIDE_START, WIDE_END, limit=50, types=wanted)
    expected = {e["uid"] for e in corpus.all_events(tp_cluster.data_dir) if e["event"] in wanted}
    assert {e.id for e in events} == expected and len(events) == len(expected)
    assert tp_reader.page(WIDE_START, WIDE_END, types=("no.such.type",)).items == []


def test_bad_start_key_is_invalid_argument(tp_reader: Client) -> None:
    with pytest.raises(grpc.RpcError) as info:
        tp_reader.page(WIDE_START, WIDE_END, key="garbage")
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_oversized_event_is_served_alone_in_its_page(tp_reader: Client) -> None:
    _, pages = tp_reader.all_pages(WIDE_START, WIDE_END, limit=10000)
    big = [n for n, p in enumerate(pages) if any(i.ByteSize() > 2**20 for i in p.items)]
    assert len(big) == 1 and len(pages[big[0]].items) == 1
    if big[0] > 0:  # the page before stopped short of it, with a key to go on
        assert pages[big[0] - 1].last_key and len(pages[big[0] - 1].items) < 10000


def test_pages_stop_before_the_byte_budget(tp_cluster: Cluster) -> None:
    budget = 50_000
    sizes = {e["uid"]: len(orjson.dumps(e)) for e in corpus.all_events(tp_cluster.data_dir)}
    running = server.start_server(tp_cluster.data_dir, max_page_bytes=budget)
    client = Client(running.port, tp_cluster.identities["reader"])
    try:
        for ascending in (True, False):
            events, pages = client.all_pages(WIDE_START, WIDE_END, limit=10000, ascending=ascending)
            assert len(events) == len(sizes) and len(pages) > 10
            order = [e.id for e in events]
            done = 0
            for page in pages:
                total = sum(sizes[i.id] for i in page.items)
                done += len(page.items)
                if len(page.items) > 1:
                    assert total < budget
                if done < len(order):  # the next event would not have fitted
                    assert total + sizes[order[done]] >= budget
    finally:
        client.close()
        running.stop(grace=None)


# --- bulk export ---------------------------------------------------------------------


def test_chunks_and_cursors_cover_every_event_once(tp_cluster: Cluster, tp_reader: Client) -> None:
    seen: list[str] = []
    chunk_count = 0
    for day in corpus_days(tp_cluster):
        chunks = tp_reader.chunks(day)
        assert len(chunks) == len(set(chunks)) >= 2
        chunk_count += len(chunks)
        for chunk in chunks:
            messages = tp_reader.export(day, chunk)
            assert all(m.cursor for m in messages)
            assert len({m.cursor for m in messages}) == len(messages)
            for m in messages:
                assert m.event.time.ToDatetime().date() == day
            seen.extend(m.event.id for m in messages)
    assert len(seen) == len(set(seen))
    assert set(seen) == corpus.event_uids(tp_cluster.data_dir)
    assert chunk_count >= 6


def test_export_order_is_not_time_order_and_resumes_mid_chunk(
    tp_cluster: Cluster, tp_reader: Client
) -> None:
    day = corpus_days(tp_cluster)[1]
    chunk = max(tp_reader.chunks(day), key=lambda c: len(tp_reader.export(day, c)))
    full = tp_reader.export(day, chunk)
    assert len(full) > 20
    times = _times([m.event for m in full])
    assert times != sorted(times)
    assert [m.event.id for m in tp_reader.export(day, chunk)] == [m.event.id for m in full]
    for cut in (0, 7, len(full) - 1):
        rest = tp_reader.export(day, chunk, cursor=full[cut].cursor)
        assert [m.event.id for m in rest] == [m.event.id for m in full[cut + 1 :]]


def test_export_errors(tp_cluster: Cluster, tp_reader: Client) -> None:
    first, second = corpus_days(tp_cluster)[:2]
    chunk = tp_reader.chunks(first)[0]
    other = tp_reader.chunks(second)[0]
    full = tp_reader.export(first, chunk)
    assert _code(lambda: tp_reader.export(first, "no-such-chunk")) == grpc.StatusCode.NOT_FOUND
    assert _code(lambda: tp_reader.export(second, chunk)) == grpc.StatusCode.NOT_FOUND
    assert _code(lambda: tp_reader.export(first, chunk, "junk")) == grpc.StatusCode.INVALID_ARGUMENT
    foreign = tp_reader.export(second, other)[0].cursor
    code = _code(lambda: tp_reader.export(first, chunk, foreign))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert full  # the valid request works


def test_a_cursor_past_the_end_of_a_chunk_is_an_empty_stream(
    tp_cluster: Cluster, tp_reader: Client
) -> None:
    """Teleport skips a chunk's events up to the cursor's position
    (lib/events/athena/querier.go, querier.ExportUnstructuredEvents): at or past
    the end nothing is left, and the stream ends cleanly."""
    day = corpus_days(tp_cluster)[0]
    chunk = tp_reader.chunks(day)[0]
    full = tp_reader.export(day, chunk)
    assert tp_reader.export(day, chunk, full[-1].cursor) == []
    beyond = corpus.encode_chunk_cursor(chunk, len(full) + 5)
    assert tp_reader.export(day, chunk, beyond) == []


def test_chunks_of_a_day_without_events_is_an_empty_stream(tp_reader: Client) -> None:
    future = datetime.date.today() + datetime.timedelta(days=2)
    assert tp_reader.chunks(future) == []


# --- session recordings --------------------------------------------------------------


def _uploads(client: Client) -> list:
    events, _ = client.all_pages(WIDE_START, WIDE_END, limit=500, types=("session.upload",))
    return events


def test_session_stream_and_resume(tp_reader: Client) -> None:
    uploads = _uploads(tp_reader)
    assert len(uploads) == 12
    sid = uploads[0].unstructured["sid"]
    events = tp_reader.session(sid)
    assert [e.index for e in events] == list(range(len(events)))
    assert events[0].type == "session.start" and events[-1].type == "session.end"
    kinds = {e.type for e in events[1:-1]}
    assert kinds == {"print", "resize"}
    prints = [json_format.MessageToDict(e.unstructured) for e in events if e.type == "print"]
    assert all({"data", "bytes", "ms", "offset"} <= p.keys() for p in prints)
    # The recording's session.start is the audit log's session.start.
    starts, _ = tp_reader.all_pages(WIDE_START, WIDE_END, limit=500, types=("session.start",))
    assert events[0].id in {e.id for e in starts}
    # start_index: the events from that index on (lib/events/auditlog.go,
    # AuditLog.StreamSessionEvents keeps GetIndex() >= startIndex).
    assert [e.index for e in tp_reader.session(sid, 0)] == [e.index for e in events]
    assert [e.index for e in tp_reader.session(sid, 3)] == list(range(3, len(events)))
    assert [e.index for e in tp_reader.session(sid, len(events) - 1)] == [len(events) - 1]
    assert tp_reader.session(sid, len(events)) == []


def test_unknown_session_is_not_found(tp_reader: Client) -> None:
    code = _code(lambda: tp_reader.session("00000000-0000-4000-8000-000000000000"))
    assert code == grpc.StatusCode.NOT_FOUND


# --- RBAC and locks ------------------------------------------------------------------


def test_role_without_event_read_is_denied_with_teleport_wording(
    tp_cluster: Cluster, tp_server: server.RunningServer
) -> None:
    client = Client(tp_server.port, tp_cluster.identities["nodes-only"])
    try:
        with pytest.raises(grpc.RpcError) as info:
            client.page(WIDE_START, WIDE_END)
        assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert info.value.details() == 'access denied to perform action "list" on "event"'
        day = corpus_days(tp_cluster)[0]
        assert _code(lambda: client.chunks(day)) == grpc.StatusCode.PERMISSION_DENIED
        # Ping needs only a valid certificate.
        assert client.auth.Ping(authservice_pb2.PingRequest(), timeout=TIMEOUT).ClusterName
    finally:
        client.close()


def test_events_without_session_role_cannot_stream_recordings(
    tp_cluster: Cluster, tp_server: server.RunningServer, tp_reader: Client
) -> None:
    sid = _uploads(tp_reader)[0].unstructured["sid"]
    client = Client(tp_server.port, tp_cluster.identities["events-only"])
    try:
        assert client.page(WIDE_START, WIDE_END, limit=5).items
        with pytest.raises(grpc.RpcError) as info:
            client.session(sid)
        assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert info.value.details() == 'access denied to perform action "list" on "session"'
    finally:
        client.close()


def _lock(name: str, user: str, login: str = "", minutes: int = 0) -> types_pb2.LockV2:
    lock = types_pb2.LockV2(Kind="lock", Version="v2")
    lock.Metadata.Name = name
    lock.Spec.Target.User = user
    lock.Spec.Target.Login = login
    lock.Spec.Message = "User is locked due to too many failed login attempts"
    if minutes:
        lock.Spec.Expires.FromDatetime(
            datetime.datetime.now(datetime.UTC).replace(tzinfo=None)
            + datetime.timedelta(minutes=minutes)
        )
    return lock


def test_upsert_lock_needs_lock_rights_and_stores_the_lock(
    tp_server: server.RunningServer, tp_cluster: Cluster
) -> None:
    reader = Client(tp_server.port, tp_cluster.identities["reader"])
    smith = Client(tp_server.port, tp_cluster.identities["locksmith"])
    try:
        with pytest.raises(grpc.RpcError) as info:
            reader.auth.UpsertLock(_lock("l1", "mallory", "root"), timeout=TIMEOUT)
        assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert info.value.details() == 'access denied to perform action "create" on "lock"'
        name = "event-handler-auto-lock-mallory-root"
        smith.auth.UpsertLock(_lock(name, "mallory", "root", minutes=60), timeout=TIMEOUT)
        stored = tp_cluster.store.get("lock", name)
        assert stored is not None
        assert stored["spec"]["target"] == {"user": "mallory", "login": "root"}
        assert stored["spec"]["message"].startswith("User is locked")
        assert stored["spec"]["expires"].endswith("Z")
        assert stored["spec"]["created_by"] == "locksmith"
        # Upsert again: replaced, not refused.
        smith.auth.UpsertLock(_lock(name, "mallory", "root"), timeout=TIMEOUT)
        assert "expires" not in tp_cluster.store.get("lock", name)["spec"]  # type: ignore[index]
        empty = types_pb2.LockV2(Kind="lock", Version="v2")
        empty.Metadata.Name = "no-target"
        code = _code(lambda: smith.auth.UpsertLock(empty, timeout=TIMEOUT))
        assert code == grpc.StatusCode.INVALID_ARGUMENT
    finally:
        reader.close()
        smith.close()


def test_locked_user_is_denied(tp_cluster: Cluster, tp_server: server.RunningServer) -> None:
    client = Client(tp_server.port, tp_cluster.identities["events-only"])
    smith = Client(tp_server.port, tp_cluster.identities["locksmith"])
    try:
        assert client.page(WIDE_START, WIDE_END, limit=1).items
        smith.auth.UpsertLock(_lock("lock-events-only", "events-only"), timeout=TIMEOUT)
        with pytest.raises(grpc.RpcError) as info:
            client.page(WIDE_START, WIDE_END, limit=1)
        assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert 'lock targeting User:"events-only" is in force' in info.value.details()
        tp_cluster.store.delete("lock", "lock-events-only")
        assert client.page(WIDE_START, WIDE_END, limit=1).items
    finally:
        client.close()
        smith.close()


# --- mutual TLS ----------------------------------------------------------------------


def _ping_code(port: int, credentials: grpc.ChannelCredentials) -> grpc.StatusCode | None:
    channel = dial(port, credentials)
    try:
        stub = authservice_pb2_grpc.AuthServiceStub(channel)
        stub.Ping(authservice_pb2.PingRequest(), timeout=5)
        return None
    except grpc.RpcError as exc:
        return exc.code()  # type: ignore[no-any-return]
    finally:
        channel.close()


def _signed_client(ca_cert: object, ca_key: object, host_ca: bytes, **kwargs: object) -> object:
    key = ec.generate_private_key(ec.SECP256R1())
    cert = pki.issue_leaf(
        ca_cert, ca_key, key.public_key(), "reader", "client", organizations=("auditor",), **kwargs
    )
    return grpc.ssl_channel_credentials(
        root_certificates=host_ca,
        private_key=pki.private_key_pem(key),
        certificate_chain=pki.cert_pem(cert),
    )


def test_mtls_refuses_missing_foreign_and_expired_client_certificates(
    tp_cluster: Cluster, tp_server: server.RunningServer
) -> None:
    port = tp_server.port
    host_ca = tp_cluster.host_ca
    good = credentials_from_identity(tp_cluster.identities["reader"])
    assert _ping_code(port, good) is None

    no_cert = grpc.ssl_channel_credentials(root_certificates=host_ca)
    assert _ping_code(port, no_cert) == grpc.StatusCode.UNAVAILABLE

    foreign_key = ec.generate_private_key(ec.SECP256R1())
    foreign_ca = pki.issue_ca(foreign_key, "Foreign CA")
    assert _ping_code(port, _signed_client(foreign_ca, foreign_key, host_ca)) == (
        grpc.StatusCode.UNAVAILABLE
    )

    # Signed by the real user CA, but its validity ended an hour ago.
    user_ca = pki.load_certificate(authority.user_ca_pem(tp_cluster.data_dir))
    with open(f"{tp_cluster.data_dir}/ca/user_ca.key", "rb") as f:
        user_ca_key = pki.load_private_key(f.read())
    past = datetime.datetime.now(datetime.UTC) - datetime.timedelta(hours=2)
    expired = _signed_client(
        user_ca, user_ca_key, host_ca, not_before=past, ttl=datetime.timedelta(hours=1)
    )
    assert _ping_code(port, expired) == grpc.StatusCode.UNAVAILABLE
    # The same CA with a current validity is accepted: the refusal was the expiry.
    fresh = _signed_client(user_ca, user_ca_key, host_ca)
    assert _ping_code(port, fresh) is None


def test_server_certificate_verifies_for_the_api_domain_only(
    tp_cluster: Cluster, tp_server: server.RunningServer
) -> None:
    good = credentials_from_identity(tp_cluster.identities["reader"])
    channel = grpc.secure_channel(
        f"127.0.0.1:{tp_server.port}",
        good,
        options=[("grpc.ssl_target_name_override", "not-teleport.example.com")],
    )
    try:
        auth = authservice_pb2_grpc.AuthServiceStub(channel)
        with pytest.raises(grpc.RpcError) as info:
            auth.Ping(authservice_pb2.PingRequest(), timeout=5)
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE
    finally:
        channel.close()
