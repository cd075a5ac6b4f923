"""Helpers for the sandbox Teleport server tests (fixtures are in conftest.py).

A cluster is a real data directory (CAs, resources, corpus); servers are the
real gRPC server on 127.0.0.1 with an ephemeral port, in this process or as a
``sandbox-teleport serve`` subprocess; clients dial it the way the forwarder
does (identity file, SNI ``teleport.cluster.local``).
"""

from __future__ import annotations

import datetime
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc

from teleport_event_handler import pki
from teleport_event_handler.protos.teleport.auditlog.v1 import auditlog_pb2, auditlog_pb2_grpc
from teleport_event_handler.protos.teleport.legacy.client.proto import authservice_pb2_grpc
from teleport_sandbox.teleport import authority, corpus, resources, server

# Users made in every test cluster, with the roles their identities carry.
USERS: dict[str, tuple[str, ...]] = {
    "reader": ("auditor",),  # event + session list/read: what the event handler needs
    "events-only": ("events-only",),  # event list/read, no session
    "nodes-only": ("nodes-only",),  # nothing the audit API needs
    "locksmith": ("editor",),  # everything, incl. lock create/update
}
EXTRA_ROLES = (
    {
        "kind": "role",
        "version": "v7",
        "metadata": {"name": "events-only"},
        "spec": {"allow": {"rules": [{"resources": ["event"], "verbs": ["list", "read"]}]}},
    },
    {
        "kind": "role",
        "version": "v7",
        "metadata": {"name": "nodes-only"},
        "spec": {"allow": {"rules": [{"resources": ["node"], "verbs": ["list", "read"]}]}},
    },
)
SNI = "teleport.cluster.local"
TIMEOUT = 15.0


@dataclass
class Cluster:
    data_dir: str
    identities: dict[str, str] = field(default_factory=dict)

    @property
    def store(self) -> resources.ResourceStore:
        return resources.ResourceStore(self.data_dir)

    @property
    def host_ca(self) -> bytes:
        return authority.host_ca_pem(self.data_dir)


def make_cluster(root: Path, **options: Any) -> Cluster:
    """A sandbox data dir with a corpus of past days (deterministic) and test users."""
    data_dir = str(root / "teleport")
    authority.init_authority(data_dir, "sandbox.test")
    defaults: dict[str, Any] = {
        "cluster_name": "sandbox.test",
        "days": 3,
        "events_per_day": 300,
        "start_date": datetime.date.today() - datetime.timedelta(days=10),
        "seed": 7,
        "oversized": 1,
        "unknown": 2,
        "sessions_per_day": 4,
    }
    defaults.update(options)
    corpus.generate_corpus(data_dir, corpus.GenerateOptions(**defaults))
    store = resources.ResourceStore(data_dir)
    for role in EXTRA_ROLES:
        store.create(role, overwrite=True)
    cluster = Cluster(data_dir)
    for user, roles in USERS.items():
        store.create(
            {
                "kind": "user",
                "version": "v2",
                "metadata": {"name": user},
                "spec": {"roles": list(roles)},
            },
            overwrite=True,
        )
        path = str(root / f"{user}.identity")
        authority.issue_identity(data_dir, user, datetime.timedelta(hours=2), path)
        cluster.identities[user] = path
    return cluster


def credentials_from_identity(path: str) -> grpc.ChannelCredentials:
    with open(path, "rb") as f:
        parts = pki.parse_identity_file(f.read())
    return grpc.ssl_channel_credentials(
        root_certificates=b"".join(parts.tls_ca_pems),
        private_key=parts.private_key_pem,
        certificate_chain=parts.tls_cert_pem,
    )


def dial(port: int, credentials: grpc.ChannelCredentials) -> grpc.Channel:
    return grpc.secure_channel(
        f"127.0.0.1:{port}",
        credentials,
        options=[
            ("grpc.ssl_target_name_override", SNI),
            ("grpc.max_receive_message_length", 64 * 1024 * 1024),
            ("grpc.max_send_message_length", 64 * 1024 * 1024),
        ],
    )


class Client:
    """Stubs of one identity against one server."""

    def __init__(self, port: int, identity: str) -> None:
        self.channel = dial(port, credentials_from_identity(identity))
        self.audit = auditlog_pb2_grpc.AuditLogServiceStub(self.channel)
        self.auth = authservice_pb2_grpc.AuthServiceStub(self.channel)

    def close(self) -> None:
        self.channel.close()

    def page(
        self,
        start: datetime.datetime,
        end: datetime.datetime,
        *,
        limit: int = 0,
        key: str = "",
        ascending: bool = True,
        types: tuple[str, ...] = (),
    ) -> auditlog_pb2.EventsUnstructured:
        req = auditlog_pb2.GetUnstructuredEventsRequest(
            namespace="default",
            limit=limit,
            start_key=key,
            event_types=list(types),
            # Teleport reads 0 as ascending and 1 as descending (server.EVENT_ORDER_*).
            order=server.EVENT_ORDER_ASCENDING if ascending else server.EVENT_ORDER_DESCENDING,
        )
        req.start_date.FromDatetime(start)
        req.end_date.FromDatetime(end)
        return self.audit.GetUnstructuredEvents(req, timeout=TIMEOUT)

    def all_pages(
        self,
        start: datetime.datetime,
        end: datetime.datetime,
        key: str = "",
        **kwargs: Any,
    ) -> tuple[list[auditlog_pb2.EventUnstructured], list[auditlog_pb2.EventsUnstructured]]:
        """Follow ``last_key`` from ``key`` until the window is exhausted."""
        events: list[auditlog_pb2.EventUnstructured] = []
        pages: list[auditlog_pb2.EventsUnstructured] = []
        for _ in range(10_000):  # bounded: a server bug must not hang the test
            page = self.page(start, end, key=key, **kwargs)
            pages.append(page)
            events.extend(page.items)
            if not page.last_key:
                return events, pages
            key = page.last_key
        raise AssertionError("paging did not end")

    def chunks(self, day: datetime.date) -> list[str]:
        req = auditlog_pb2.GetEventExportChunksRequest()
        req.date.FromDatetime(datetime.datetime(day.year, day.month, day.day))
        return [c.chunk for c in self.audit.GetEventExportChunks(req, timeout=TIMEOUT)]

    def export(
        self, day: datetime.date, chunk: str, cursor: str = ""
    ) -> list[auditlog_pb2.ExportEventUnstructured]:
        req = auditlog_pb2.ExportUnstructuredEventsRequest(chunk=chunk, cursor=cursor)
        req.date.FromDatetime(datetime.datetime(day.year, day.month, day.day))
        return list(self.audit.ExportUnstructuredEvents(req, timeout=TIMEOUT))

    def session(self, sid: str, start_index: int = 0) -> list[auditlog_pb2.EventUnstructured]:
        req = auditlog_pb2.StreamUnstructuredSessionEventsRequest(
            session_id=sid, start_index=start_index
        )
        return list(self.audit.StreamUnstructuredSessionEvents(req, timeout=TIMEOUT))


def corpus_days(cluster: Cluster) -> list[datetime.date]:
    meta = corpus.Corpus(cluster.data_dir).meta
    first = datetime.date.fromisoformat(meta["start_date"])
    return [first + datetime.timedelta(days=i) for i in range(int(meta["days"]))]


WIDE_START = datetime.datetime(2000, 1, 1)
WIDE_END = datetime.datetime(2100, 1, 1)


def wait_for(predicate: Any, timeout: float = 10.0, interval: float = 0.05) -> Any:
    """Poll ``predicate`` until it returns a truthy value (bounded)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        time.sleep(interval)


def read_port(path: str, timeout: float = 15.0) -> int:
    return int(wait_for(lambda: os.path.exists(path) and open(path).read().strip(), timeout))
