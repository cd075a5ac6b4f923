"""Bulk export in worker processes: one chunk at a time per process.

A chunk's stream costs most of the handler's CPU in grpcio's per-message
hand-off and in turning each ``Struct`` into JSON (``docs/performance.md``),
all of it under one GIL when chunks are read by threads. With
``export-workers = N`` the engine hands each chunk to one of N processes,
which stream it from Teleport with the same credentials, filter and convert
its events, and send them back in batches over a pipe. The engine's process
keeps everything that decides what is committed: the order of a chunk's
events, the cursors, the pipeline to Fluentd, the state, the observers.

A worker holds nothing that must survive it: when the engine abandons a chunk
(shutdown, a person-fixable error) or a worker dies, the process is killed
and a new one started, and the chunk resumes from the last cursor the engine
received, as after a dropped stream. A worker whose parent is gone (kill -9)
fails its next send and exits.
"""

from __future__ import annotations

import contextlib
import datetime
import logging
import multiprocessing
import multiprocessing.connection
import os
import queue
import signal
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import grpc

from teleport_event_handler.backoff import Shutdown
from teleport_event_handler.events import TypeFilter, event_type_of, struct_to_json
from teleport_event_handler.locks import LOGIN_EVENT
from teleport_event_handler.protos.teleport.auditlog.v1 import auditlog_pb2
from teleport_event_handler.sessions import SESSION_UPLOAD
from teleport_event_handler.teleport import (
    CredentialFiles,
    TeleportClient,
    TeleportError,
    credential_loader,
)

log = logging.getLogger(__name__)

# Events per message on the pipe: large enough that pickling and the pipe cost
# little per event, small enough that the pipe's buffer gives back-pressure.
BATCH = 200
# Event types whose whole message the engine needs (the session a
# session.upload schedules, the failed login a user.login reports); for the
# rest it gets the type, id and time, which is what its observers read.
WHOLE_TYPES = frozenset({SESSION_UPLOAD, LOGIN_EVENT})
POLL = 0.5

# One exported event: (cursor after it, event as a serialised EventUnstructured
# (whole or only type, id and time; empty when the filters drop it), JSON body
# or None when the filters drop it).
Record = tuple[str, bytes, bytes | None]


@dataclass(frozen=True)
class WorkerSpec:
    """What a worker needs to reach Teleport as the engine does (all picklable)."""

    addr: str
    credentials: CredentialFiles
    api_version: str
    via_proxy: bool
    type_filter: TypeFilter
    log_level: int = logging.INFO


class WorkerRpcError(grpc.RpcError):
    """A Teleport call that failed in a worker, as the engine's retry logic reads it."""

    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(details)
        self._code = code
        self._details = details

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self._details

    def __str__(self) -> str:
        return f"{self._code.name}: {self._details}"


def _record(item: auditlog_pb2.ExportEventUnstructured, type_filter: TypeFilter) -> Record:
    event = item.event
    event_type = event_type_of(event)
    if not type_filter.wants(event_type):
        return (item.cursor, b"", None)
    body = struct_to_json(event.unstructured)
    if event_type in WHOLE_TYPES:
        return (item.cursor, event.SerializeToString(), body)
    head = auditlog_pb2.EventUnstructured(type=event_type, id=event.id)
    if event.HasField("time"):
        head.time.CopyFrom(event.time)
    return (item.cursor, head.SerializeToString(), body)


def _connect(spec: WorkerSpec) -> TeleportClient:
    loader = credential_loader(spec.credentials)
    if loader is None:
        raise TeleportError("no Teleport credentials were passed to the export worker")
    return TeleportClient(
        spec.addr, loader(), api_version=spec.api_version, via_proxy=spec.via_proxy, loader=loader
    )


def _export(
    conn: multiprocessing.connection.Connection,
    client: TeleportClient,
    type_filter: TypeFilter,
    task: tuple[datetime.date, str, str],
) -> None:
    """Stream one chunk to the engine; a failed call is sent as an "rpc" message."""
    batch: list[Record] = []
    try:
        for item in client.export_events(*task):
            batch.append(_record(item, type_filter))
            if len(batch) >= BATCH:
                conn.send(("events", batch))
                batch = []
        if batch:
            conn.send(("events", batch))
        conn.send(("done",))
    except grpc.RpcError as exc:
        if batch:
            conn.send(("events", batch))  # what was read counts as progress
        if isinstance(exc, grpc.Call):
            conn.send(("rpc", exc.code().name, exc.details() or str(exc)))
        else:
            conn.send(("rpc", grpc.StatusCode.UNKNOWN.name, str(exc)))


def _serve(conn: multiprocessing.connection.Connection, spec: WorkerSpec) -> None:
    """A worker's life: export the chunks it is sent until its pipe closes."""
    try:
        client = _connect(spec)
    except TeleportError as exc:
        # Read while being renewed, say: the engine retries the chunk with backoff
        # in a new worker, and says so while it persists.
        conn.send(("down", "UNAVAILABLE", f"the export worker cannot connect: {exc}"))
        return
    try:
        while True:
            try:
                task = conn.recv()
            except EOFError:
                return
            client.reload()  # a renewed identity is used from the next chunk on
            _export(conn, client, spec.type_filter, task)
    finally:
        client.close()


def worker_main(conn: multiprocessing.connection.Connection, spec: WorkerSpec) -> None:
    """Entry point of a worker process (spawned: no threads or channels inherited)."""
    # The engine's process handles SIGINT and SIGHUP; SIGTERM (systemd stops the
    # whole control group) ends a worker at once, which loses nothing.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    logging.basicConfig(
        level=spec.log_level, format=f"%(levelname)s export worker {os.getpid()}: %(message)s"
    )
    with contextlib.suppress(BrokenPipeError, ConnectionResetError, EOFError):
        _serve(conn, spec)  # these: the engine's process is gone


class _Worker:
    def __init__(self, context: Any, spec: WorkerSpec, number: int) -> None:
        self.conn, child = context.Pipe(duplex=True)
        self.process = context.Process(
            target=worker_main,
            args=(child, spec),
            name=f"teleport-event-handler export worker {number}",
            daemon=True,
        )
        self.process.start()
        child.close()

    def kill(self) -> None:
        if self.process.is_alive():
            self.process.kill()
        self.process.join(5)
        self.conn.close()


class ExportWorkers:
    """``count`` worker processes, each streaming one chunk at a time."""

    def __init__(self, count: int, spec: WorkerSpec, shutdown: Shutdown) -> None:
        self.count = count
        self._spec = spec
        self._shutdown = shutdown
        self._context = multiprocessing.get_context("spawn")
        self._idle: queue.Queue[_Worker] = queue.Queue()
        self._all: list[_Worker] = []
        self._lock = threading.Lock()
        self._started = 0
        self._closed = False

    def start(self) -> None:
        """Start every worker now, so that the first chunks do not wait for one."""
        for _ in range(self.count):
            self._idle.put(self._spawn())

    def _spawn(self) -> _Worker:
        with self._lock:
            if self._closed:
                raise WorkerRpcError(grpc.StatusCode.CANCELLED, "the export is stopping")
            self._started += 1
            worker = _Worker(self._context, self._spec, self._started)
            self._all.append(worker)
            return worker

    def _retire(self, worker: _Worker) -> None:
        worker.kill()
        with self._lock:
            if worker in self._all:
                self._all.remove(worker)

    def _acquire(self) -> _Worker:
        while True:
            try:
                return self._idle.get_nowait()
            except queue.Empty:
                pass
            with self._lock:
                can_spawn = len(self._all) < self.count
            if can_spawn:
                return self._spawn()
            try:
                return self._idle.get(timeout=POLL)
            except queue.Empty:
                if self._shutdown.requested:
                    raise WorkerRpcError(
                        grpc.StatusCode.CANCELLED, "the export is stopping"
                    ) from None

    def export(self, date: datetime.date, chunk: str, cursor: str) -> Iterator[list[Record]]:
        """Batches of one chunk's events after ``cursor``, in order.

        Raises ``WorkerRpcError`` where the stream would have raised
        ``grpc.RpcError`` (and when the worker could not connect, or died).
        """
        worker = self._acquire()
        finished = False
        try:
            try:
                worker.conn.send((date, chunk, cursor))
            except OSError as exc:
                raise WorkerRpcError(
                    grpc.StatusCode.UNAVAILABLE, f"the export worker exited ({exc!r})"
                ) from exc
            while True:
                while not worker.conn.poll(POLL):
                    if self._shutdown.requested:
                        raise WorkerRpcError(grpc.StatusCode.CANCELLED, "the export is stopping")
                    if not worker.process.is_alive():
                        raise WorkerRpcError(
                            grpc.StatusCode.UNAVAILABLE,
                            f"the export worker exited (code {worker.process.exitcode})",
                        )
                try:
                    message = worker.conn.recv()
                except (EOFError, OSError) as exc:
                    raise WorkerRpcError(
                        grpc.StatusCode.UNAVAILABLE, f"the export worker exited ({exc!r})"
                    ) from exc
                kind = message[0]
                if kind == "events":
                    yield message[1]
                elif kind == "done":
                    finished = True
                    return
                else:
                    finished = kind == "rpc"  # "down": the worker could not connect
                    raise WorkerRpcError(grpc.StatusCode[message[1]], message[2])
        finally:
            if finished:
                self._idle.put(worker)
            else:
                # Abandoned mid-stream (or the worker failed): its pipe may still
                # hold events of this chunk, so it is not used again.
                self._retire(worker)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            workers, self._all = self._all, []
        for worker in workers:
            worker.kill()
