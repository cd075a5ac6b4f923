"""The sandbox cluster's audit log: a deterministic event corpus plus live appends.

``init`` generates days of realistic Teleport audit events from a seed and
stores each one *pre-serialised*: the bytes on disk are already the protobuf
wire form of ``EventsUnstructured.items`` entries (tag ``0x0a``, a length
varint, an ``EventUnstructured`` message). The server therefore never builds a
protobuf message per event: a page of ``GetUnstructuredEvents`` is a slice of
the file, and an ``ExportEventUnstructured`` is the same bytes plus a cursor
field (its ``event`` is field 1 too, so the framing is identical). That is
what keeps the sandbox faster than the forwarder it benchmarks.

Layout of ``D/corpus/``:

``meta.json``
    generation parameters, the event-type table, the chunks and sessions.
``events.bin``
    framed records of the generated events, in time order.
``index.bin``
    per-event columns (time, offset, length, JSON size, type, chunk, flags)
    and each chunk's export order, as raw machine arrays that load with one
    ``frombytes`` each, so ``serve`` starts in about a second at 150k events.
``live.log``
    events appended later (``serve --live-rate``, ``sandbox-teleport append``).
    Each write is one self-describing frame holding one sealed chunk of one
    UTC day; writers hold ``live.lock`` and keep event times strictly
    increasing, readers pick up complete frames only.

Every event time is unique (nanoseconds), which makes a time an exact paging
key. Events hidden by the ``oversized_events`` / ``unknown_types`` faults are
flagged so the server can leave them out.
"""

from __future__ import annotations

import array
import base64
import bisect
import contextlib
import datetime
import fcntl
import hashlib
import heapq
import mmap
import os
import random
import shutil
import struct
import threading
import time
import uuid
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import orjson
from google.protobuf import json_format

from teleport_event_handler.protos.teleport.auditlog.v1 import auditlog_pb2

__all__ = [
    "CODES",
    "CORPUS_DIR",
    "DEFAULT_LIMIT",
    "FLAG_OVERSIZED",
    "FLAG_UNKNOWN",
    "MAX_EVENT_BYTES_IN_RESPONSE",
    "MAX_LIMIT",
    "SESSION_UPLOAD_INDEX",
    "UNKNOWN_TYPES",
    "Chunk",
    "Corpus",
    "CorpusError",
    "GenerateOptions",
    "Page",
    "Session",
    "all_events",
    "append_events",
    "corpus_exists",
    "decode_chunk_cursor",
    "decode_key",
    "encode_chunk_cursor",
    "encode_key",
    "event_uids",
    "format_time",
    "generate_corpus",
    "info",
    "parse_time_ns",
    "varint",
]

CORPUS_DIR = "corpus"
_META = "meta.json"
_EVENTS = "events.bin"
_JSONL = "events.jsonl"
_INDEX = "index.bin"
_LIVE = "live.log"
_LIVE_LOCK = "live.lock"
_LIVE_STATE = "live.state.json"
_FORMAT = 1

# Teleport's search limits (lib/defaults): a request without a limit gets
# 500 events, one above 10000 is refused, and a page stops growing at 1 MiB of
# event JSON (lib/events MaxEventBytesInResponse).
DEFAULT_LIMIT = 500
MAX_LIMIT = 10000
MAX_EVENT_BYTES_IN_RESPONSE = 1024 * 1024
# Teleport gives session.upload the largest event index (lib/events).
SESSION_UPLOAD_INDEX = 2**31 - 1
# A live chunk is sealed after this many events (or when the writer's tick ends).
LIVE_CHUNK_EVENTS = 500

FLAG_OVERSIZED = 1
FLAG_UNKNOWN = 2

_NS = 1_000_000_000
_DAY_NS = 86400 * _NS
_FRAME_MAGIC = b"TEHF"
_FRAME_HEAD = struct.Struct("<4sII")  # magic, meta length, blob length
_DOUBLE = struct.Struct("<d")
_KEY_PREFIX = "k1."
_CURSOR_PREFIX = "c1."

# Column order in index.bin; every column holds one value per event.
_COLUMNS: tuple[tuple[str, str], ...] = (
    ("time", "q"),
    ("offset", "Q"),
    ("length", "I"),
    ("json", "I"),
    ("type", "H"),
    ("chunk", "I"),
    ("flags", "B"),
)

# Event codes as Teleport defines them (lib/events/codes.go).
CODES: dict[str, str] = {
    "user.login": "T1000I",
    "user.login.failed": "T1000W",
    "session.start": "T2000I",
    "session.end": "T2004I",
    "session.upload": "T2005I",
    "resize": "T2002I",
    "print": "",
    "cert.create": "TC000I",
    "exec": "T3002I",
    "db.session.query": "TDB02I",
    "kube.request": "T3009I",
    "app.session.start": "T2007I",
    "access_request.create": "T5000I",
}
UNKNOWN_TYPES = ("future.event.v9", "quantum.link.established")

_USERS = (
    "alice",
    "bob",
    "carol",
    "dave",
    "erin",
    "frank",
    "grace",
    "heidi",
    "ivan",
    "judy",
    "mallory",
    "oscar",
)
_LOGINS = ("root", "ubuntu", "ec2-user", "admin", "deploy", "postgres")
_ROLES = ("access", "editor", "auditor", "dev", "sre", "dba")
_METHODS = ("local", "local", "local", "github", "saml", "oidc")
_AGENTS = (
    "tsh/17.4.8 (linux; amd64)",
    "tsh/17.4.8 (darwin; arm64)",
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_6) AppleWebKit/605.1.15 Safari/605.1.15",
)
_LOGIN_ERRORS = (
    "invalid username, password or second factor",
    "access denied",
    "invalid credentials",
)
_COMMANDS = (
    "sudo systemctl restart nginx",
    "journalctl -u teleport --since '10 min ago'",
    "kubectl get pods -n payments",
    "df -h /var/lib/postgresql",
    "tail -n 200 /var/log/syslog",
    "docker ps --format '{{.Names}}'",
    "cat /etc/os-release",
    "uptime",
    "ls -la /srv/app/releases",
    "psql -c 'select count(*) from orders'",
)
_QUERIES = (
    "SELECT id, status, total FROM orders WHERE created_at > $1 ORDER BY created_at DESC LIMIT 50",
    "UPDATE accounts SET last_seen = now() WHERE id = $1",
    "SELECT count(*) FROM sessions WHERE expires_at < now()",
    "INSERT INTO audit_trail (actor, action, target) VALUES ($1, $2, $3)",
    "SELECT u.email, r.name FROM users u JOIN roles r ON r.id = u.role_id WHERE u.active",
    "DELETE FROM carts WHERE updated_at < now() - interval '30 days'",
)
_KUBE_PATHS = (
    ("GET", "/api/v1/namespaces/default/pods", "pods", "default"),
    ("GET", "/api/v1/namespaces/payments/pods/api-7c9d8-x2k4q/log", "pods", "payments"),
    ("LIST", "/apis/apps/v1/namespaces/payments/deployments", "deployments", "payments"),
    ("PATCH", "/apis/apps/v1/namespaces/web/deployments/frontend", "deployments", "web"),
    ("GET", "/api/v1/nodes", "nodes", ""),
    ("DELETE", "/api/v1/namespaces/batch/pods/report-28471-abcde", "pods", "batch"),
)
_APPS = (
    ("grafana", "http://grafana.internal:3000"),
    ("jenkins", "http://jenkins.internal:8080"),
    ("argocd", "https://argocd.internal"),
    ("awsconsole", "https://console.aws.amazon.com"),
)
_SHELL_LINES = (
    "total 48\r\ndrwxr-xr-x 12 root root 4096 Nov 25 10:02 .\r\n",
    "Filesystem      Size  Used Avail Use% Mounted on\r\n"
    "/dev/nvme0n1p1  100G   61G   39G  62% /\r\n",
    " 13:04:05 up 41 days,  3:12,  2 users,  load average: 0.42, 0.38, 0.35\r\n",
    "NAME                READY   STATUS    RESTARTS   AGE\r\n"
    "api-7c9d8-x2k4q     1/1     Running   0          3d\r\n",
    "\x1b[01;32mubuntu@node\x1b[00m:\x1b[01;34m~\x1b[00m$ ",
    "Nov 25 13:04:01 node systemd[1]: Started Session 4211 of User ubuntu.\r\n",
    'PRETTY_NAME="Ubuntu 24.04.1 LTS"\r\nVERSION_ID="24.04"\r\n',
)


class CorpusError(Exception):
    """A corpus problem with a message that names the file and the fix."""


@dataclass(frozen=True)
class GenerateOptions:
    """What ``sandbox-teleport init`` generates."""

    cluster_name: str = "sandbox.teleport.local"
    days: int = 3
    events_per_day: int = 1000
    start_date: datetime.date | None = None  # default: the last day is today
    seed: int = 1
    oversized: int = 0
    unknown: int = 0
    sessions_per_day: int = 20
    session_prints: int = 0  # print events per recording; 0: between 6 and 40


def varint(value: int) -> bytes:
    """Protobuf base-128 varint of a non-negative int."""
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def format_time(ns: int) -> str:
    """RFC 3339 in UTC with Go's RFC3339Nano trimming of trailing zeros."""
    seconds, nanos = divmod(ns, _NS)
    base = datetime.datetime.fromtimestamp(seconds, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S")
    if nanos:
        base += "." + f"{nanos:09d}".rstrip("0")
    return base + "Z"


def _day_of(ns: int) -> str:
    return datetime.datetime.fromtimestamp(ns // _NS, datetime.UTC).strftime("%Y-%m-%d")


def _day_start_ns(day: datetime.date) -> int:
    start = datetime.datetime(day.year, day.month, day.day, tzinfo=datetime.UTC)
    return int(start.timestamp()) * _NS


def _now_ns() -> int:
    return time.time_ns()


def _uuid(rng: random.Random) -> str:
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


def _stable_uuid(*parts: object) -> str:
    digest = hashlib.sha256("\x00".join(str(p) for p in parts).encode()).digest()
    return str(uuid.UUID(bytes=digest[:16], version=4))


def _ip(rng: random.Random, prefix: str = "203.0.113") -> str:
    return f"{prefix}.{rng.randint(2, 254)}"


# --------------------------------------------------------------------------
# Event generation
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class _Node:
    hostname: str
    server_id: str
    addr: str
    labels: dict[str, str]


def _nodes(seed: int) -> tuple[_Node, ...]:
    rng = random.Random(f"nodes-{seed}")
    envs = ("prod", "staging", "dev")
    out = []
    for i in range(1, 13):
        env = envs[i % 3]
        out.append(
            _Node(
                hostname=f"{env}-node-{i:02d}",
                server_id=_uuid(rng),
                addr=f"10.0.{i}.{rng.randint(2, 250)}:3022",
                labels={"env": env, "region": rng.choice(("eu-west-1", "us-east-1"))},
            )
        )
    return tuple(out)


@dataclass(frozen=True)
class Session:
    """Everything needed to regenerate one session's audit events and recording."""

    sid: str
    user: str
    login: str
    node: int
    start_ns: int
    end_ns: int
    upload_ns: int
    prints: int
    seed: int

    def to_json(self) -> list[Any]:
        return [
            self.sid,
            self.user,
            self.login,
            self.node,
            self.start_ns,
            self.end_ns,
            self.upload_ns,
            self.prints,
            self.seed,
        ]

    @classmethod
    def from_json(cls, row: Sequence[Any]) -> Session:
        return cls(
            str(row[0]),
            str(row[1]),
            str(row[2]),
            int(row[3]),
            int(row[4]),
            int(row[5]),
            int(row[6]),
            int(row[7]),
            int(row[8]),
        )


class _Generator:
    """Builds event dicts; all randomness comes from the given RNG."""

    def __init__(self, cluster: str, seed: int) -> None:
        self.cluster = cluster
        self.seed = seed
        self.nodes = _nodes(seed)

    def _base(
        self, rng: random.Random, kind: str, ns: int, code: str | None = None
    ) -> dict[str, Any]:
        return {
            "event": kind,
            "code": CODES[kind] if code is None else code,
            "time": format_time(ns),
            "uid": _uuid(rng),
            "ei": 0,
            "cluster_name": self.cluster,
        }

    def _node(self, rng: random.Random) -> tuple[int, _Node]:
        i = rng.randrange(len(self.nodes))
        return i, self.nodes[i]

    def user_login(
        self,
        rng: random.Random,
        ns: int,
        *,
        success: bool | None = None,
        user: str | None = None,
        login: str | None = None,
    ) -> dict[str, Any]:
        ok = rng.random() < 0.85 if success is None else success
        method = rng.choice(_METHODS)
        ev = self._base(rng, "user.login", ns, CODES["user.login" if ok else "user.login.failed"])
        ev.update(
            {
                "user": user or rng.choice(_USERS),
                "login": login or rng.choice(_LOGINS),
                "method": method,
                "success": ok,
                "addr.remote": f"{_ip(rng)}:{rng.randint(30000, 65000)}",
                "user_agent": rng.choice(_AGENTS),
                "required_private_key_policy": "none",
                "user_kind": 1,
            }
        )
        if method == "local":
            ev["mfa_device"] = {
                "mfa_device_name": "otp-device",
                "mfa_device_uuid": _uuid(rng),
                "mfa_device_type": "TOTP",
            }
        else:
            ev["connector"] = f"{method}-corp"
            ev["attributes"] = {"groups": ["engineering", rng.choice(("sre", "dev", "data"))]}
        if not ok:
            ev["error"] = rng.choice(_LOGIN_ERRORS)
            ev["message"] = "login attempt failed"
        return ev

    def cert_create(self, rng: random.Random, ns: int) -> dict[str, Any]:
        user = rng.choice(_USERS)
        roles = sorted(rng.sample(_ROLES, 2))
        ev = self._base(rng, "cert.create", ns)
        ev.update(
            {
                "cert_type": "user",
                "identity": {
                    "user": user,
                    "roles": roles,
                    "logins": [*sorted(rng.sample(_LOGINS, 3)), "-teleport-internal-join"],
                    "expires": format_time(ns + 12 * 3600 * _NS),
                    "route_to_cluster": self.cluster,
                    "teleport_cluster": self.cluster,
                    "client_ip": _ip(rng),
                    "traits": {"logins": sorted(rng.sample(_LOGINS, 2)), "kubernetes_groups": []},
                    "private_key_policy": "none",
                    "prev_identity_expires": "0001-01-01T00:00:00Z",
                    "bot_name": "",
                },
                "user_agent": rng.choice(_AGENTS),
            }
        )
        return ev

    def exec_(self, rng: random.Random, ns: int) -> dict[str, Any]:
        _, node = self._node(rng)
        ev = self._base(rng, "exec", ns)
        ev.update(
            {
                "user": rng.choice(_USERS),
                "login": rng.choice(_LOGINS),
                "namespace": "default",
                "server_id": node.server_id,
                "server_hostname": node.hostname,
                "server_addr": node.addr,
                "server_labels": node.labels,
                "sid": _uuid(rng),
                "command": rng.choice(_COMMANDS),
                "exitCode": "0" if rng.random() < 0.9 else "1",
                "addr.remote": f"{_ip(rng)}:{rng.randint(30000, 65000)}",
                "addr.local": node.addr,
                "proto": "ssh",
                "user_kind": 1,
            }
        )
        return ev

    def db_query(self, rng: random.Random, ns: int, query: str | None = None) -> dict[str, Any]:
        ev = self._base(rng, "db.session.query", ns)
        name = rng.choice(("orders", "billing", "inventory"))
        ev.update(
            {
                "user": rng.choice(_USERS),
                "sid": _uuid(rng),
                "db_service": f"postgres-{name}",
                "db_protocol": "postgres",
                "db_uri": f"{name}.cluster-abc123.eu-west-1.rds.amazonaws.com:5432",
                "db_name": name,
                "db_user": rng.choice(("readonly", "app", "postgres")),
                "db_type": "rds",
                "db_origin": "cloud",
                "db_labels": {"env": "prod", "engine": "postgres"},
                "db_query": query if query is not None else rng.choice(_QUERIES),
                "db_query_parameters": [str(rng.randint(1, 99999))],
                "success": True,
                "user_kind": 1,
            }
        )
        return ev

    def kube_request(self, rng: random.Random, ns: int) -> dict[str, Any]:
        verb, path, kind, namespace = rng.choice(_KUBE_PATHS)
        ev = self._base(rng, "kube.request", ns)
        ev.update(
            {
                "user": rng.choice(_USERS),
                "login": rng.choice(_USERS),
                "kubernetes_cluster": rng.choice(("prod-eks", "staging-gke")),
                "kubernetes_users": ["teleport-user"],
                "kubernetes_groups": ["system:authenticated", "developers"],
                "kubernetes_labels": {"env": "prod"},
                "verb": verb,
                "request_path": path,
                "resource_api_group": "apps/v1" if "apps" in path else "core/v1",
                "resource_kind": kind,
                "resource_namespace": namespace,
                "response_code": 200 if rng.random() < 0.93 else 403,
                "server_id": rng.choice(self.nodes).server_id,
                "proto": "kube",
                "addr.remote": f"{_ip(rng)}:{rng.randint(30000, 65000)}",
                "user_kind": 1,
            }
        )
        return ev

    def app_session_start(self, rng: random.Random, ns: int) -> dict[str, Any]:
        name, uri = rng.choice(_APPS)
        ev = self._base(rng, "app.session.start", ns)
        ev.update(
            {
                "user": rng.choice(_USERS),
                "sid": _uuid(rng),
                "app_name": name,
                "app_uri": uri,
                "app_public_addr": f"{name}.{self.cluster}",
                "app_labels": {"team": rng.choice(("platform", "data", "web"))},
                "public_addr": f"{name}.{self.cluster}",
                "server_id": rng.choice(self.nodes).server_id,
                "addr.remote": f"{_ip(rng)}:{rng.randint(30000, 65000)}",
                "user_kind": 1,
                "private_key_policy": "none",
            }
        )
        return ev

    def access_request_create(self, rng: random.Random, ns: int) -> dict[str, Any]:
        ev = self._base(rng, "access_request.create", ns)
        ev.update(
            {
                "id": _uuid(rng),
                "user": rng.choice(_USERS),
                "roles": [rng.choice(("dba", "sre", "prod-access"))],
                "state": "PENDING",
                "reason": rng.choice(
                    (
                        "Investigating INC-4211: elevated 5xx on checkout",
                        "Monthly billing reconciliation",
                        "Rotate database credentials per runbook DB-17",
                    )
                ),
                "expires": format_time(ns + 3600 * _NS),
                "max_duration": format_time(ns + 8 * 3600 * _NS),
                "annotations": {"ticket": [f"OPS-{rng.randint(1000, 9999)}"]},
                "resource_ids": [],
                "user_kind": 1,
            }
        )
        return ev

    def unknown(self, rng: random.Random, ns: int) -> dict[str, Any]:
        kind = rng.choice(UNKNOWN_TYPES)
        ev = self._base(rng, "exec", ns, code="TFX99I")
        ev["event"] = kind
        ev.update(
            {
                "user": rng.choice(_USERS),
                "future_field": {"nested": {"depth": 3, "flag": True}, "list": [1, 2, 3]},
                "note": "an event type this Teleport version does not define yet",
            }
        )
        return ev

    def oversized(self, rng: random.Random, ns: int) -> dict[str, Any]:
        # Like issue #46352: a huge prepared statement makes one event > 1 MiB.
        chunk = "SELECT col_%d FROM wide_table WHERE id IN (%s);\n"
        ids = ",".join(str(i) for i in range(400))
        parts: list[str] = []
        size = 0
        target = MAX_EVENT_BYTES_IN_RESPONSE + 64 * 1024 + rng.randint(0, 4096)
        i = 0
        while size < target:
            line = chunk % (i, ids)
            parts.append(line)
            size += len(line)
            i += 1
        return self.db_query(rng, ns, query="".join(parts))

    def random_event(self, rng: random.Random, ns: int) -> dict[str, Any]:
        roll = rng.random()
        if roll < 0.22:
            return self.user_login(rng, ns)
        if roll < 0.37:
            return self.cert_create(rng, ns)
        if roll < 0.55:
            return self.exec_(rng, ns)
        if roll < 0.68:
            return self.db_query(rng, ns)
        if roll < 0.86:
            return self.kube_request(rng, ns)
        if roll < 0.96:
            return self.app_session_start(rng, ns)
        return self.access_request_create(rng, ns)

    def by_type(self, rng: random.Random, ns: int, kind: str) -> dict[str, Any]:
        makers = {
            "user.login": self.user_login,
            "cert.create": self.cert_create,
            "exec": self.exec_,
            "db.session.query": self.db_query,
            "kube.request": self.kube_request,
            "app.session.start": self.app_session_start,
            "access_request.create": self.access_request_create,
        }
        if kind in UNKNOWN_TYPES:
            ev = self.unknown(rng, ns)
            ev["event"] = kind
            return ev
        if kind not in makers:
            raise CorpusError(
                f"cannot append events of type {kind!r}: choose one of "
                f"{', '.join(sorted([*makers, 'session.upload']))}"
            )
        return makers[kind](rng, ns)

    # ---- sessions -------------------------------------------------------

    def new_session(
        self, rng: random.Random, start_ns: int, end_ns: int, upload_ns: int, prints: int = 0
    ) -> Session:
        session = Session(
            sid=_uuid(rng),
            user=rng.choice(_USERS),
            login=rng.choice(_LOGINS),
            node=rng.randrange(len(self.nodes)),
            start_ns=start_ns,
            end_ns=end_ns,
            upload_ns=upload_ns,
            prints=rng.randint(6, 40),
            seed=rng.getrandbits(32),
        )
        # The draws above happen either way, so a corpus is the same but for its recordings.
        return replace(session, prints=prints) if prints > 0 else session

    def _session_common(self, s: Session) -> dict[str, Any]:
        node = self.nodes[s.node]
        return {
            "user": s.user,
            "login": s.login,
            "sid": s.sid,
            "namespace": "default",
            "server_id": node.server_id,
            "server_hostname": node.hostname,
            "server_addr": node.addr,
            "server_labels": node.labels,
            "cluster_name": self.cluster,
        }

    def session_start(self, s: Session) -> dict[str, Any]:
        rng = random.Random(f"{s.seed}-start")
        ev: dict[str, Any] = {
            "event": "session.start",
            "code": CODES["session.start"],
            "time": format_time(s.start_ns),
            "uid": _stable_uuid(self.seed, s.sid, "start"),
            "ei": 0,
        }
        ev.update(self._session_common(s))
        ev.update(
            {
                "addr.remote": f"{_ip(rng)}:{rng.randint(30000, 65000)}",
                "addr.local": self.nodes[s.node].addr,
                "proto": "ssh",
                "size": "80:25",
                "session_recording": "node",
                "private_key_policy": "none",
                "user_kind": 1,
                "initial_command": [""],
            }
        )
        return ev

    def session_end(self, s: Session) -> dict[str, Any]:
        ev: dict[str, Any] = {
            "event": "session.end",
            "code": CODES["session.end"],
            "time": format_time(s.end_ns),
            "uid": _stable_uuid(self.seed, s.sid, "end"),
            "ei": s.prints + 2,
        }
        ev.update(self._session_common(s))
        ev.update(
            {
                "participants": [s.user],
                "session_start": format_time(s.start_ns),
                "session_stop": format_time(s.end_ns),
                "enhanced_recording": False,
                "interactive": True,
                "session_recording": "node",
                "proto": "ssh",
                "user_kind": 1,
            }
        )
        return ev

    def session_upload(self, s: Session) -> dict[str, Any]:
        return {
            "event": "session.upload",
            "code": CODES["session.upload"],
            "time": format_time(s.upload_ns),
            "uid": _stable_uuid(self.seed, s.sid, "upload"),
            "ei": SESSION_UPLOAD_INDEX,
            "sid": s.sid,
            "url": f"s3://teleport-sessions-{self.cluster}/records/{s.sid}.tar",
            "cluster_name": self.cluster,
            "user": s.user,
            "session_recording": "node",
        }

    def recording(self, s: Session) -> list[dict[str, Any]]:
        """The recorded events of a session, indexes 0..n-1.

        ``session.start`` and ``session.end`` are the very events of the audit
        log; in between come ``s.prints`` ``print`` events and one ``resize``.
        """
        rng = random.Random(f"{s.seed}-recording")
        span_ms = max(1, (s.end_ns - s.start_ns) // 1_000_000)
        offsets = sorted(rng.randrange(span_ms) for _ in range(s.prints + 1))
        resize_at = rng.randrange(s.prints + 1)
        node = self.nodes[s.node]
        out = [self.session_start(s)]
        written = 0
        for i, ms in enumerate(offsets):
            index = len(out)
            at = format_time(s.start_ns + ms * 1_000_000)
            if i == resize_at:
                out.append(
                    {
                        "event": "resize",
                        "code": CODES["resize"],
                        "ei": index,
                        "time": at,
                        "uid": _stable_uuid(self.seed, s.sid, "resize"),
                        "size": f"{rng.choice((120, 160, 200))}:{rng.choice((40, 50))}",
                        "sid": s.sid,
                        "user": s.user,
                        "login": s.login,
                        "namespace": "default",
                        "server_id": node.server_id,
                        "cluster_name": self.cluster,
                    }
                )
                continue
            raw = "".join(rng.choice(_SHELL_LINES) for _ in range(rng.randint(1, 3))).encode()
            out.append(
                {
                    "event": "print",
                    "ei": index,
                    "ci": index,
                    "time": at,
                    "data": base64.b64encode(raw).decode(),
                    "bytes": len(raw),
                    "ms": ms,
                    "offset": written,
                }
            )
            written += len(raw)
        out.append(self.session_end(s))
        return out


# --------------------------------------------------------------------------
# Encoding
# --------------------------------------------------------------------------


_SMALL_VARINTS = [bytes((i,)) for i in range(128)]
_KEY_ENTRIES: dict[str, bytes] = {}


def _vi(value: int) -> bytes:
    return _SMALL_VARINTS[value] if value < 128 else varint(value)


def _len_field(tag: bytes, payload: bytes) -> bytes:
    return tag + _vi(len(payload)) + payload


def _value(value: Any) -> bytes:
    """Wire form of a ``google.protobuf.Value`` holding a JSON value."""
    kind = type(value)
    if kind is str:
        return _len_field(b"\x1a", value.encode())  # string_value
    if kind is bool:
        return b"\x20\x01" if value else b"\x20\x00"  # bool_value
    if kind is int or kind is float:
        return b"\x11" + _DOUBLE.pack(float(value))  # number_value
    if value is None:
        return b"\x08\x00"  # null_value
    if kind is dict:
        return _len_field(b"\x2a", _struct(value))  # struct_value
    if kind is list or kind is tuple:
        items = b"".join(_len_field(b"\x0a", _value(v)) for v in value)
        return _len_field(b"\x32", items)  # list_value
    raise TypeError(f"cannot put {kind.__name__} into a protobuf Struct")


def _struct(fields: dict[str, Any]) -> bytes:
    """Wire form of a ``google.protobuf.Struct``: one map entry per key.

    Written by hand because ``Struct.update`` is a slow step of generating a
    large corpus; the result parses back to the very same Struct.
    """
    parts = []
    for key, value in fields.items():
        entry_key = _KEY_ENTRIES.get(key)
        if entry_key is None:
            entry_key = _KEY_ENTRIES[key] = _len_field(b"\x0a", key.encode())
        parts.append(_len_field(b"\x0a", entry_key + _len_field(b"\x12", _value(value))))
    return b"".join(parts)


def _encode(ev: dict[str, Any], time_ns: int, index: int | None = None) -> tuple[bytes, bytes]:
    """(framed ``EventUnstructured`` record, the event's JSON)."""
    raw = orjson.dumps(ev)
    seconds, nanos = divmod(time_ns, _NS)
    stamp = b""
    if seconds:
        stamp += b"\x08" + varint(seconds)
    if nanos:
        stamp += b"\x10" + varint(nanos)
    ei = int(ev.get("ei", 0)) if index is None else index
    body = (
        _len_field(b"\x0a", str(ev["event"]).encode())
        + _len_field(b"\x12", str(ev.get("uid") or hashlib.sha256(raw).hexdigest()).encode())
        + _len_field(b"\x1a", stamp)
        + (b"\x20" + varint(ei) if ei else b"")
        + _len_field(b"\x2a", _struct(ev))
    )
    return b"\x0a" + varint(len(body)) + body, raw


def _record_body(record: bytes) -> bytes:
    """Strip the ``0x0a <len>`` framing of a stored record."""
    i = 1
    while record[i] & 0x80:
        i += 1
    return record[i + 1 :]


def _plain(value: Any) -> Any:
    """Struct floats back to ints where integral, as Go's protojson prints them."""
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**53:
        return int(value)
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def _decode_record(record: bytes) -> dict[str, Any]:
    msg = auditlog_pb2.EventUnstructured.FromString(_record_body(record))
    out = _plain(json_format.MessageToDict(msg.unstructured))
    assert isinstance(out, dict)
    return out


# --------------------------------------------------------------------------
# Init
# --------------------------------------------------------------------------


def _corpus_dir(data_dir: str) -> str:
    return os.path.join(data_dir, CORPUS_DIR)


def corpus_exists(data_dir: str) -> bool:
    return os.path.exists(os.path.join(_corpus_dir(data_dir), _META))


def _unique_sorted(times: list[int]) -> list[int]:
    times.sort()
    for i in range(1, len(times)):
        if times[i] <= times[i - 1]:
            times[i] = times[i - 1] + 1
    return times


def generate_corpus(
    data_dir: str, options: GenerateOptions, *, now_ns: int | None = None, force: bool = False
) -> dict[str, Any]:
    """Write ``D/corpus`` (idempotent unless ``force``); returns the metadata."""
    cdir = _corpus_dir(data_dir)
    if corpus_exists(data_dir) and not force:
        return _read_meta(cdir)
    if options.days < 1 or options.events_per_day < 0:
        raise CorpusError("init: --days must be >= 1 and --events-per-day >= 0")
    now = _now_ns() if now_ns is None else now_ns
    today = datetime.datetime.fromtimestamp(now // _NS, datetime.UTC).date()
    start = options.start_date or today - datetime.timedelta(days=options.days - 1)
    last = start + datetime.timedelta(days=options.days - 1)
    if last > today:
        raise CorpusError(
            f"init: --start-date {start} with --days {options.days} ends on {last}, after today "
            f"({today}); pick an earlier --start-date or fewer --days"
        )
    rng = random.Random(options.seed)
    gen = _Generator(options.cluster_name, options.seed)

    # (time_ns, event dict, flags); sessions contribute three audit events.
    items: list[tuple[int, dict[str, Any], int]] = []
    sessions: list[Session] = []
    day_windows: list[tuple[int, int]] = []
    for d in range(options.days):
        day = start + datetime.timedelta(days=d)
        lo = _day_start_ns(day)
        hi = min(lo + _DAY_NS, now)  # the init day only fills up to "now"
        day_windows.append((lo, hi))
        span = max(1, hi - lo)
        n_sessions = min(options.sessions_per_day, options.events_per_day // 3)
        n_plain = options.events_per_day - 3 * n_sessions
        for _ in range(n_sessions):
            dur = min(rng.randint(20, 1800) * _NS, span // 3)
            t0 = lo + rng.randrange(max(1, span - dur - dur // 4 - 2))
            t1 = t0 + max(1, dur)
            tu = t1 + max(1, min(rng.randint(1, 30) * _NS, dur // 4 + 1))
            s = gen.new_session(rng, t0, t1, min(tu, hi - 1), options.session_prints)
            sessions.append(s)
            items.append((s.start_ns, gen.session_start(s), 0))
            items.append((s.end_ns, gen.session_end(s), 0))
            items.append((s.upload_ns, gen.session_upload(s), 0))
        for _ in range(n_plain):
            t = lo + rng.randrange(span)
            items.append((t, gen.random_event(rng, t), 0))
    for flag, count in ((FLAG_OVERSIZED, options.oversized), (FLAG_UNKNOWN, options.unknown)):
        for _ in range(count):
            lo, hi = rng.choice(day_windows)
            t = lo + rng.randrange(max(1, hi - lo))
            ev = gen.oversized(rng, t) if flag == FLAG_OVERSIZED else gen.unknown(rng, t)
            items.append((t, ev, flag))

    items.sort(key=lambda it: it[0])
    times = _unique_sorted([it[0] for it in items])
    if times and times[-1] > now:
        # Only possible when init runs within nanoseconds of midnight.
        raise CorpusError("init: too many events for the time elapsed today; retry in a second")

    tmp = cdir + ".tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp, mode=0o755)
    type_names: list[str] = []
    type_ids: dict[str, int] = {}
    cols: dict[str, array.array[int]] = {name: array.array(code) for name, code in _COLUMNS}
    offset = 0
    with (
        open(os.path.join(tmp, _EVENTS), "wb") as out,
        open(os.path.join(tmp, _JSONL), "wb") as jsonl,
    ):
        for t, (_, ev, flags) in zip(times, items, strict=True):
            ev["time"] = format_time(t)
            record, raw = _encode(ev, t)
            out.write(record)
            jsonl.write(raw + b"\n")
            kind = str(ev["event"])
            if kind not in type_ids:
                type_ids[kind] = len(type_names)
                type_names.append(kind)
            cols["time"].append(t)
            cols["offset"].append(offset)
            cols["length"].append(len(record))
            cols["json"].append(len(raw))
            cols["type"].append(type_ids[kind])
            cols["flags"].append(flags)
            offset += len(record)

    # Chunks: consecutive time slices of one day, like the parquet files an
    # Athena batcher writes; a few are tiny (single-event chunks, issue #61729).
    chunk_rows: list[list[Any]] = []
    order = array.array("I")
    i = 0
    n = len(times)
    # About 4-10 chunks a day, at most a few thousand events each.
    lo_size = max(1, min(2000, options.events_per_day // 10))
    hi_size = max(2, min(5000, options.events_per_day // 4))
    while i < n:
        chunk_day = _day_of(times[i])
        day_end = (times[i] // _DAY_NS + 1) * _DAY_NS
        size = rng.choice((1, 2, 3)) if rng.random() < 0.08 else rng.randint(lo_size, hi_size)
        j = i
        while j < n and j - i < size and times[j] < day_end:
            j += 1
        chunk_id = _uuid(rng)
        members = list(range(i, j))
        # Deterministic non-time order: by uid-like hash of the position.
        members.sort(
            key=lambda p: hashlib.blake2b(f"{chunk_id}{p}".encode(), digest_size=8).digest()
        )
        chunk_rows.append([chunk_id, chunk_day, len(order), len(members)])
        order.extend(members)
        i = j
    chunk_col = array.array("I", [0]) * n
    for number, (_, _, first, count) in enumerate(chunk_rows):
        for p in order[first : first + count]:
            chunk_col[p] = number
    cols["chunk"] = chunk_col

    with open(os.path.join(tmp, _INDEX), "wb") as out:
        for name, _code in _COLUMNS:
            cols[name].tofile(out)
        order.tofile(out)
    meta = {
        "format": _FORMAT,
        "cluster_name": options.cluster_name,
        "seed": options.seed,
        "start_date": start.isoformat(),
        "days": options.days,
        "events_per_day": options.events_per_day,
        "sessions_per_day": options.sessions_per_day,
        "oversized": options.oversized,
        "unknown": options.unknown,
        "created_ns": now,
        "count": n,
        "types": type_names,
        "chunks": chunk_rows,
        "sessions": [s.to_json() for s in sessions],
    }
    with open(os.path.join(tmp, _META), "wb") as out:
        out.write(orjson.dumps(meta))
    if os.path.exists(cdir):
        shutil.rmtree(cdir)
    os.rename(tmp, cdir)
    return meta


def _read_meta(cdir: str) -> dict[str, Any]:
    path = os.path.join(cdir, _META)
    try:
        with open(path, "rb") as f:
            meta: dict[str, Any] = orjson.loads(f.read())
    except FileNotFoundError:
        raise CorpusError(
            f"{path}: no corpus here; run `sandbox-teleport init --data-dir "
            f"{os.path.dirname(cdir)}` first"
        ) from None
    except orjson.JSONDecodeError as exc:
        raise CorpusError(f"{path}: not valid JSON ({exc}); re-run init with --force") from None
    if meta.get("format") != _FORMAT:
        raise CorpusError(
            f"{path}: corpus format {meta.get('format')!r} is not {_FORMAT}; re-run init --force"
        )
    return meta


# --------------------------------------------------------------------------
# Live appends
# --------------------------------------------------------------------------


@contextlib.contextmanager
def _live_lock(cdir: str) -> Iterator[None]:
    fd = os.open(os.path.join(cdir, _LIVE_LOCK), os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _read_live_state(cdir: str) -> dict[str, int]:
    try:
        with open(os.path.join(cdir, _LIVE_STATE), "rb") as f:
            state: dict[str, int] = orjson.loads(f.read())
            return state
    except FileNotFoundError:
        return {"end": 0, "last_time_ns": 0, "seq": 0}


def _write_live_state(cdir: str, state: dict[str, int]) -> None:
    path = os.path.join(cdir, _LIVE_STATE)
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "wb") as f:
        f.write(orjson.dumps(state))
    os.replace(tmp, path)


def append_events(
    data_dir: str,
    count: int,
    *,
    event_type: str | None = None,
    failed_logins: Sequence[tuple[str, str]] = (),
    now_ns: int | None = None,
    exact: bool = False,
) -> list[dict[str, Any]]:
    """Append ``count`` events timed "now" and return them (as JSON dicts).

    ``event_type`` picks one type (``session.upload`` adds a playable
    recording); ``failed_logins`` (user, login) pairs make failed
    ``user.login`` events cycling over the pairs. Safe while the server runs
    and from several processes: the frame is written whole under the lock.
    With ``exact``, the first event is timed at ``now_ns`` or nothing is
    written (CorpusError when a stored event is not older).
    """
    if count < 0:
        raise CorpusError("append: --count must be >= 0")
    cdir = _corpus_dir(data_dir)
    meta = _read_meta(cdir)
    gen = _Generator(str(meta["cluster_name"]), int(meta["seed"]))
    appended: list[dict[str, Any]] = []
    with _live_lock(cdir):
        state = _recover_live_tail(cdir, _read_live_state(cdir))
        path = os.path.join(cdir, _LIVE)
        seq = state["seq"]
        rng = random.Random(f"{meta['seed']}-live-{seq}")
        now = _now_ns() if now_ns is None else now_ns
        t = max(now, state["last_time_ns"] + 1, int(meta["created_ns"]) + 1)
        if exact and t != now:
            raise CorpusError(
                f"append --at {format_time(now)}: events are stored up to "
                f"{format_time(t - 1)}; give a later --at"
            )
        events: list[tuple[int, dict[str, Any], Session | None]] = []
        for k in range(count):
            session: Session | None = None
            if failed_logins:
                user, login = failed_logins[k % len(failed_logins)]
                ev = gen.user_login(rng, t, success=False, user=user, login=login)
            elif event_type == "session.upload" or (event_type is None and rng.random() < 0.03):
                dur = rng.randint(20, 600) * _NS
                session = gen.new_session(rng, t - dur - 2 * _NS, t - 2 * _NS, t)
                ev = gen.session_upload(session)
            elif event_type is not None:
                ev = gen.by_type(rng, t, event_type)
            else:
                ev = gen.random_event(rng, t)
            events.append((t, ev, session))
            t += 1 + rng.randrange(1000)
        frames = bytearray()
        i = 0
        while i < len(events):
            day = _day_of(events[i][0])
            j = i
            while j < len(events) and j - i < LIVE_CHUNK_EVENTS and _day_of(events[j][0]) == day:
                j += 1
            frames += _frame(rng, day, events[i:j])
            appended.extend(ev for _, ev, _ in events[i:j])
            i = j
        if frames:
            fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                os.write(fd, bytes(frames))
                os.fsync(fd)
            finally:
                os.close(fd)
            state = {
                "end": state["end"] + len(frames),
                "last_time_ns": events[-1][0],
                "seq": seq + 1,
            }
            _write_live_state(cdir, state)
    return appended


def _recover_live_tail(cdir: str, state: dict[str, int]) -> dict[str, int]:
    """Reconcile live.log with its state after a writer died (caller holds the lock).

    Complete frames past the recorded end are kept (a server may have served
    them already); only an incomplete last frame is cut off.
    """
    path = os.path.join(cdir, _LIVE)
    with open(path, "a+b") as f:
        size = f.seek(0, os.SEEK_END)
        if size == state["end"]:
            return state
        f.seek(state["end"])
        tail = f.read()
        end, last = state["end"], state["last_time_ns"]
        for _, fmeta, frame_end in _iter_frames(tail, 0):
            end = state["end"] + frame_end
            if fmeta["events"]:
                last = max(last, int(fmeta["events"][-1][0]))
        if end != size:
            f.truncate(end)
    return {"end": end, "last_time_ns": last, "seq": state["seq"] + 1}


def _frame(
    rng: random.Random, day: str, events: Sequence[tuple[int, dict[str, Any], Session | None]]
) -> bytes:
    rows: list[list[Any]] = []
    blob = bytearray()
    sessions: list[list[Any]] = []
    for t, ev, session in events:
        record, raw = _encode(ev, t)
        rows.append(
            [
                t,
                len(raw),
                len(record),
                ev["event"],
                int(bool(ev["event"] in UNKNOWN_TYPES)) * FLAG_UNKNOWN,
            ]
        )
        blob += record
        if session is not None:
            sessions.append(session.to_json())
    meta = orjson.dumps({"day": day, "chunk": _uuid(rng), "events": rows, "sessions": sessions})
    return _FRAME_HEAD.pack(_FRAME_MAGIC, len(meta), len(blob)) + meta + bytes(blob)


def _iter_frames(data: bytes | mmap.mmap, start: int) -> Iterator[tuple[int, dict[str, Any], int]]:
    """(blob offset, frame meta, frame end) of every complete frame from ``start``."""
    pos = start
    size = len(data)
    while pos + _FRAME_HEAD.size <= size:
        magic, meta_len, blob_len = _FRAME_HEAD.unpack_from(data, pos)
        if magic != _FRAME_MAGIC:
            raise CorpusError(
                f"live.log: bad frame at byte {pos}; the file is corrupt, re-run init --force"
            )
        end = pos + _FRAME_HEAD.size + meta_len + blob_len
        if end > size:
            return  # a frame still being written
        meta_start = pos + _FRAME_HEAD.size
        meta = orjson.loads(bytes(data[meta_start : meta_start + meta_len]))
        yield meta_start + meta_len, meta, end
        pos = end


# --------------------------------------------------------------------------
# The loaded corpus (what the server serves)
# --------------------------------------------------------------------------


@dataclass
class Chunk:
    id: str
    day: str
    positions: Sequence[int]


@dataclass
class Page:
    """One ``GetUnstructuredEvents`` answer, already in wire form."""

    payload: bytes  # concatenated framed records = EventsUnstructured.items
    count: int
    last_key: str


@dataclass
class _Live:
    mm: mmap.mmap | None = None
    parsed: int = 0
    size: int = 0
    mtime_ns: int = 0


@dataclass
class _Views:
    by_type: dict[int, array.array[int]] = field(default_factory=dict)
    special: array.array[int] = field(default_factory=lambda: array.array("I"))


class Corpus:
    """The served events, loaded from ``D/corpus`` and refreshed with live appends.

    Grows only; readers take the current count at the start of a call and
    never see a partially added frame. ``refresh`` is cheap (one ``stat``) and
    is called by the server at the start of every RPC.
    """

    def __init__(self, data_dir: str) -> None:
        self.data_dir = data_dir
        self.cdir = _corpus_dir(data_dir)
        meta = _read_meta(self.cdir)
        self.meta = meta
        self.cluster_name = str(meta["cluster_name"])
        self.seed = int(meta["seed"])
        self._gen = _Generator(self.cluster_name, self.seed)
        n = int(meta["count"])
        self.base_count = n
        self._lock = threading.Lock()
        cols: dict[str, array.array[int]] = {}
        path = os.path.join(self.cdir, _INDEX)
        with open(path, "rb") as f:
            raw = f.read()
        pos = 0
        for name, code in (*_COLUMNS, ("order", "I")):
            col: array.array[int] = array.array(code)
            width = col.itemsize * n
            col.frombytes(raw[pos : pos + width])
            if len(col) != n:
                raise CorpusError(f"{path}: truncated index; re-run init --force")
            cols[name] = col
            pos += width
        self.times = cols["time"]
        self.offsets = cols["offset"]
        self.lengths = cols["length"]
        self.type_ids = cols["type"]
        self.flags = cols["flags"]
        self.json_cum: array.array[int] = array.array("Q", [0])
        acc = 0
        cum_append = self.json_cum.append
        for size in cols["json"]:
            acc += size
            cum_append(acc)
        self.type_names: list[str] = list(meta["types"])
        self.type_index = {name: i for i, name in enumerate(self.type_names)}
        self._views = _Views()
        self._index_positions(0, n)
        events_path = os.path.join(self.cdir, _EVENTS)
        with open(events_path, "rb") as f:
            self._base: mmap.mmap | bytes = (
                mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) if n else b""
            )
        # Live records: (offset in live.log) for positions >= base_count.
        self.chunks: dict[str, Chunk] = {}
        self.day_chunks: dict[str, list[str]] = {}
        order = cols["order"]
        for chunk_id, day, first, count in meta["chunks"]:
            self._add_chunk(Chunk(chunk_id, day, order[first : first + count]))
        self.sessions: dict[str, Session] = {}
        for row in meta["sessions"]:
            s = Session.from_json(row)
            self.sessions[s.sid] = s
        self._live = _Live()
        self._recordings: dict[str, list[bytes]] = {}
        self.count = n
        self.refresh()

    # ---- loading --------------------------------------------------------

    def _add_chunk(self, chunk: Chunk) -> None:
        self.chunks[chunk.id] = chunk
        self.day_chunks.setdefault(chunk.day, []).append(chunk.id)

    def _index_positions(self, first: int, end: int) -> None:
        by_type = self._views.by_type
        special = self._views.special
        type_ids = self.type_ids
        flags = self.flags
        for p in range(first, end):
            tid = type_ids[p]
            view = by_type.get(tid)
            if view is None:
                view = by_type[tid] = array.array("I")
            view.append(p)
            if flags[p]:
                special.append(p)

    def refresh(self) -> bool:
        """Pick up frames appended to live.log since the last look; True if any."""
        path = os.path.join(self.cdir, _LIVE)
        try:
            st = os.stat(path)
        except FileNotFoundError:
            return False
        live = self._live
        if st.st_size == live.size and st.st_mtime_ns == live.mtime_ns:
            return False
        with self._lock:
            if st.st_size == live.size and st.st_mtime_ns == live.mtime_ns:
                return False
            with open(path, "rb") as f:
                mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) if st.st_size else None
            live.size, live.mtime_ns = st.st_size, st.st_mtime_ns
            if mm is None:
                return False
            added = False
            for blob_offset, fmeta, end in _iter_frames(mm, live.parsed):
                first = len(self.times)
                off = blob_offset
                for t, json_len, length, kind, flags in fmeta["events"]:
                    if kind not in self.type_index:
                        self.type_index[kind] = len(self.type_names)
                        self.type_names.append(kind)
                    self.times.append(t)
                    self.offsets.append(off)
                    self.lengths.append(length)
                    self.type_ids.append(self.type_index[kind])
                    self.flags.append(flags)
                    self.json_cum.append(self.json_cum[-1] + json_len)
                    off += length
                last = len(self.times)
                self._index_positions(first, last)
                for row in fmeta["sessions"]:
                    s = Session.from_json(row)
                    self.sessions[s.sid] = s
                live.parsed = end
                live.mm = mm
                self._add_chunk(
                    Chunk(fmeta["chunk"], fmeta["day"], _uid_order(self, first, last, mm))
                )
                self.count = last  # publish after everything is in place
                added = True
            live.mm = mm
            return added

    # ---- record access --------------------------------------------------

    def record(self, p: int) -> bytes:
        off = self.offsets[p]
        src = self._base if p < self.base_count else self._live.mm
        assert src is not None
        return bytes(src[off : off + self.lengths[p]])

    def _records(self, positions: Iterable[int]) -> bytes:
        base, live, nb = self._base, self._live.mm, self.base_count
        offs, lens = self.offsets, self.lengths
        parts = []
        for p in positions:
            o = offs[p]
            src = base if p < nb else live
            assert src is not None
            parts.append(src[o : o + lens[p]])
        return b"".join(parts)

    def _run(self, a: int, b: int) -> bytes:
        """Records a..b-1 (ascending, contiguous positions)."""
        if a >= b:
            return b""
        nb = self.base_count
        if b <= nb:
            return bytes(self._base[self.offsets[a] : self.offsets[b - 1] + self.lengths[b - 1]])
        if a >= nb:
            return self._records(range(a, b))
        return self._run(a, nb) + self._records(range(nb, b))

    def json_size(self, p: int) -> int:
        return self.json_cum[p + 1] - self.json_cum[p]

    # ---- search (GetUnstructuredEvents) --------------------------------

    def search(
        self,
        start_ns: int,
        end_ns: int,
        *,
        types: Sequence[str] = (),
        limit: int = 0,
        start_key: str = "",
        descending: bool = False,
        hidden: int = 0,
        max_bytes: int = MAX_EVENT_BYTES_IN_RESPONSE,
    ) -> Page:
        """Events with ``start_ns <= time <= end_ns``, one page of them.

        Both ends are inclusive, as Teleport's backends select ``BETWEEN start
        AND end`` (lib/events/dynamoevents Log.searchEventsRaw, lib/events/pgevents
        Log.searchEvents, lib/events/firestoreevents, lib/events/filelog).

        ``limit`` <= 0 means Teleport's default 500; above 10000 raises
        ``ValueError`` (Teleport: "limit ... exceeds ..."). A page also stops
        before its event JSON would reach ``max_bytes`` but always holds at
        least one event, so an event larger than the budget is served alone
        instead of stalling the reader. ``last_key`` is non-empty exactly when
        more matching events exist in the window. ``hidden`` is a mask of
        event flags to leave out.
        """
        if limit <= 0:
            limit = DEFAULT_LIMIT
        if limit > MAX_LIMIT:
            raise ValueError(f"limit {limit} exceeds {MAX_LIMIT}")
        n = self.count
        times = self.times
        lo = bisect.bisect_left(times, start_ns, 0, n)
        hi = bisect.bisect_right(times, end_ns, 0, n)
        if start_key:
            key_ns = decode_key(start_key)
            if descending:
                hi = min(hi, bisect.bisect_left(times, key_ns, 0, n))
            else:
                lo = max(lo, bisect.bisect_right(times, key_ns, 0, n))
        if lo >= hi:
            return Page(b"", 0, "")
        wanted = [self.type_index[t] for t in dict.fromkeys(types) if t in self.type_index]
        if types and not wanted:
            return Page(b"", 0, "")
        if not types and not descending and not self._hidden_in(lo, hi, hidden):
            return self._fast_page(lo, hi, limit, max_bytes)
        candidates = self._candidates(lo, hi, wanted if types else None, descending)
        taken: list[int] = []
        total = 0
        more = False
        flags = self.flags
        for p in candidates:
            if hidden and flags[p] & hidden:
                continue
            if taken and (len(taken) >= limit or total + self.json_size(p) >= max_bytes):
                more = True
                break
            taken.append(p)
            total += self.json_size(p)
        last_key = encode_key(times[taken[-1]]) if more else ""
        return Page(self._records(taken), len(taken), last_key)

    def _hidden_in(self, lo: int, hi: int, hidden: int) -> bool:
        if not hidden:
            return False
        special = self._views.special
        i = bisect.bisect_left(special, lo)
        while i < len(special) and special[i] < hi:
            if self.flags[special[i]] & hidden:
                return True
            i += 1
        return False

    def _fast_page(self, lo: int, hi: int, limit: int, max_bytes: int) -> Page:
        cum = self.json_cum
        # Largest b with cum[b] - cum[lo] < max_bytes, at least lo + 1.
        b = bisect.bisect_left(cum, cum[lo] + max_bytes, lo + 1, hi + 1) - 1
        b = max(lo + 1, min(b, lo + limit, hi))
        last_key = encode_key(self.times[b - 1]) if b < hi else ""
        return Page(self._run(lo, b), b - lo, last_key)

    def _candidates(
        self, lo: int, hi: int, wanted: list[int] | None, descending: bool
    ) -> Iterator[int]:
        if wanted is None:
            return iter(range(hi - 1, lo - 1, -1) if descending else range(lo, hi))
        slices = []
        for tid in wanted:
            view = self._views.by_type.get(tid)
            if view is None:
                continue
            i = bisect.bisect_left(view, lo)
            j = bisect.bisect_left(view, hi)
            if i < j:
                slices.append(view[i:j])
        if len(slices) == 1:
            only = slices[0]
            return reversed(only) if descending else iter(only)
        if descending:
            return heapq.merge(*(reversed(s) for s in slices), reverse=True)
        return heapq.merge(*slices)

    # ---- bulk export ----------------------------------------------------

    def chunk_ids(self, day: str) -> list[str]:
        """Chunk ids of a UTC day, in a stable order that is not time order."""
        return sorted(self.day_chunks.get(day, ()))

    def chunk(self, day: str, chunk_id: str) -> Chunk | None:
        chunk = self.chunks.get(chunk_id)
        if chunk is None or chunk.day != day:
            return None
        return chunk

    # ---- sessions -------------------------------------------------------

    def recording(self, sid: str) -> list[bytes] | None:
        """Serialised ``EventUnstructured`` messages of a session, or None."""
        cached = self._recordings.get(sid)
        if cached is not None:
            return cached
        session = self.sessions.get(sid)
        if session is None:
            return None
        out = []
        for ev in self._gen.recording(session):
            record, _raw = _encode(ev, _parse_time_ns(str(ev["time"])))
            out.append(_record_body(record))
        if len(self._recordings) > 256:
            self._recordings.clear()
        self._recordings[sid] = out
        return out


def _uid_order(corpus: Corpus, first: int, last: int, mm: mmap.mmap) -> array.array[int]:
    """A live chunk's export order: by event id, which is random relative to time."""
    ids = []
    for p in range(first, last):
        off = corpus.offsets[p]
        body = _record_body(bytes(mm[off : off + corpus.lengths[p]]))
        ids.append((auditlog_pb2.EventUnstructured.FromString(body).id, p))
    ids.sort()
    return array.array("I", [p for _, p in ids])


def parse_time_ns(text: str) -> int:
    """``2026-01-02T03:04:05.123456789Z`` (UTC, any fraction) as nanoseconds; ValueError if not."""
    if not text.endswith("Z"):
        raise ValueError(f"{text!r} is not a UTC time ending in Z")
    frac = text[:-1].partition(".")[2]
    if frac and not frac.isdigit():
        raise ValueError(f"{text!r} has a bad fraction of a second")
    return _parse_time_ns(text)


def _parse_time_ns(text: str) -> int:
    main, _, frac = text.rstrip("Z").partition(".")
    dt = datetime.datetime.strptime(main, "%Y-%m-%dT%H:%M:%S").replace(tzinfo=datetime.UTC)
    return int(dt.timestamp()) * _NS + int((frac + "000000000")[:9])


# --------------------------------------------------------------------------
# Opaque keys and cursors
# --------------------------------------------------------------------------


def encode_key(time_ns: int) -> str:
    """A ``last_key``: the time of the last event served (times are unique)."""
    return _KEY_PREFIX + base64.urlsafe_b64encode(struct.pack(">q", time_ns)).decode().rstrip("=")


def decode_key(key: str) -> int:
    if not key.startswith(_KEY_PREFIX):
        raise ValueError(f"start_key {key!r} was not issued by this server")
    try:
        raw = base64.urlsafe_b64decode(key[len(_KEY_PREFIX) :] + "==")
        (value,) = struct.unpack(">q", raw)
    except (ValueError, struct.error):
        raise ValueError(f"start_key {key!r} is malformed") from None
    return int(value)


def _cursor_mac(chunk_id: str, pos: int) -> bytes:
    return hashlib.blake2b(f"{chunk_id}/{pos}".encode(), digest_size=6).digest()


def encode_chunk_cursor(chunk_id: str, next_pos: int) -> str:
    """Cursor resuming a chunk export at member ``next_pos`` (0-based)."""
    raw = struct.pack(">I", next_pos) + _cursor_mac(chunk_id, next_pos)
    return _CURSOR_PREFIX + base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_chunk_cursor(chunk_id: str, cursor: str) -> int:
    """Position to resume at; ``ValueError`` for a cursor of another chunk or garbage."""
    if not cursor:
        return 0
    if not cursor.startswith(_CURSOR_PREFIX):
        raise ValueError(f"cursor {cursor!r} was not issued by this server")
    try:
        raw = base64.urlsafe_b64decode(cursor[len(_CURSOR_PREFIX) :] + "==")
    except ValueError:
        raise ValueError(f"cursor {cursor!r} is malformed") from None
    if len(raw) != 10:
        raise ValueError(f"cursor {cursor!r} is malformed")
    (pos,) = struct.unpack(">I", raw[:4])
    if raw[4:] != _cursor_mac(chunk_id, pos):
        raise ValueError(f"cursor {cursor!r} does not belong to chunk {chunk_id}")
    return int(pos)


# --------------------------------------------------------------------------
# Read-side helpers for tests and `info`
# --------------------------------------------------------------------------


def _iter_json(data_dir: str, skip: int) -> Iterator[bytes]:
    """The JSON of every stored event not flagged in ``skip``, in time order.

    Generated events come from ``events.jsonl`` (the exact dicts the records
    were built from, fast to read); live ones are decoded from their records.
    """
    corpus = Corpus(data_dir)
    flags = corpus.flags
    with open(os.path.join(corpus.cdir, _JSONL), "rb") as f:
        for p, line in enumerate(f):
            if not flags[p] & skip:
                yield line
    for p in range(corpus.base_count, corpus.count):
        if not flags[p] & skip:
            yield orjson.dumps(_decode_record(corpus.record(p)))


def _skip_mask(oversized: bool, unknown: bool) -> int:
    return (0 if oversized else FLAG_OVERSIZED) | (0 if unknown else FLAG_UNKNOWN)


def all_events(
    data_dir: str, *, oversized: bool = True, unknown: bool = True
) -> Iterator[dict[str, Any]]:
    """Every stored event (live appends included) as its JSON dict, in time order.

    Numbers are ints where integral, as Go's protojson prints them.
    ``oversized=False`` / ``unknown=False`` leave out the events the matching
    fault hides, to compare with what a server with that fault serves.
    """
    for raw in _iter_json(data_dir, _skip_mask(oversized, unknown)):
        event: dict[str, Any] = orjson.loads(raw)
        yield event


def event_uids(data_dir: str, *, oversized: bool = True, unknown: bool = True) -> set[str]:
    """The ``uid`` of every stored event (also the ``id`` of its ``EventUnstructured``)."""
    return {
        str(orjson.loads(raw)["uid"])
        for raw in _iter_json(data_dir, _skip_mask(oversized, unknown))
    }


def info(data_dir: str) -> dict[str, Any]:
    """Counts per UTC day and per type, chunks and sessions (``sandbox-teleport info``)."""
    corpus = Corpus(data_dir)
    per_day: dict[str, dict[str, int]] = {}
    for p in range(corpus.count):
        day = _day_of(corpus.times[p])
        kind = corpus.type_names[corpus.type_ids[p]]
        counts = per_day.setdefault(day, {})
        counts[kind] = counts.get(kind, 0) + 1
    return {
        "cluster_name": corpus.cluster_name,
        "seed": corpus.seed,
        "events": corpus.count,
        "live_events": corpus.count - corpus.base_count,
        "oversized": sum(1 for f in corpus.flags if f & FLAG_OVERSIZED),
        "unknown": sum(1 for f in corpus.flags if f & FLAG_UNKNOWN),
        "sessions": len(corpus.sessions),
        "first_time": format_time(corpus.times[0]) if corpus.count else None,
        "last_time": format_time(corpus.times[corpus.count - 1]) if corpus.count else None,
        "days": {
            day: {
                "events": sum(c.values()),
                "chunks": len(corpus.day_chunks.get(day, ())),
                "types": dict(sorted(c.items())),
            }
            for day, c in sorted(per_day.items())
        },
    }
