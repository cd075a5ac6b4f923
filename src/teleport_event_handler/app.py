"""Wiring and lifecycle of ``teleport-event-handler start``.

Order of start-up, as the Go plugin: credentials (refused early when expired),
the state directory and its start time, the Fluentd client, the Teleport
connection, then the engine the cluster supports. SIGTERM and SIGINT stop
reading, let in-flight requests finish, commit what was acknowledged and exit
0; a second SIGINT exits at once (nothing acknowledged is lost either way).
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
import time
from collections.abc import Callable
from types import FrameType
from typing import cast

from teleport_event_handler import __version__, accelerator
from teleport_event_handler.backoff import Shutdown
from teleport_event_handler.config import Config
from teleport_event_handler.deadletter import DeadLetters
from teleport_event_handler.events import TypeFilter
from teleport_event_handler.forward import ForwardClient
from teleport_event_handler.gostate import take_over
from teleport_event_handler.locks import AutoLocker
from teleport_event_handler.monitor import Monitor, MonitorError, TimedSink
from teleport_event_handler.notify import Notifier
from teleport_event_handler.pipeline import Pipeline, PipelineFailed
from teleport_event_handler.protos.teleport.auditlog.v1.auditlog_pb2 import EventUnstructured
from teleport_event_handler.sessions import SessionExporter
from teleport_event_handler.sink import FluentdClient, SinkError
from teleport_event_handler.source import (
    BulkEngine,
    Engine,
    LegacyEngine,
    Stopped,
    call_with_retry,
    probe_bulk,
    utcnow,
)
from teleport_event_handler.state import State, StateError, state_dir
from teleport_event_handler.teleport import (
    CredentialFiles,
    Credentials,
    TeleportClient,
    TeleportError,
    check_not_expired,
    choose_dial,
    credential_loader,
)
from teleport_event_handler.workers import ExportWorkers, WorkerSpec

log = logging.getLogger("teleport_event_handler")

# Caught up, bulk export polls for new chunks after 0.5 s, doubling the wait while
# nothing new appears, up to this (Teleport's exporter: 16 s).
BULK_POLL_INTERVAL = 16.0
PROGRESS_INTERVAL = 60.0
SHUTDOWN_GRACE = 5.0


def credential_files(config: Config) -> CredentialFiles:
    """The Teleport credential files the configuration names, for every reader of them."""
    return CredentialFiles(
        identity=config.teleport_identity,
        cert=config.teleport_cert,
        key=config.teleport_key,
        ca=config.teleport_ca,
    )


def load_credentials(files: CredentialFiles) -> Credentials:
    loader = credential_loader(files)
    if loader is None:
        raise TeleportError(
            "no Teleport credentials: set [teleport] identity, or cert, key and ca together"
        )
    creds = loader()
    check_not_expired(creds)
    return creds


# A SIGHUP that came before Teleport was dialed, to be honoured once it is.
_early_hangup = threading.Event()


def _install_signals(shutdown: Shutdown) -> None:
    def on_signal(signum: int, _frame: FrameType | None) -> None:
        if shutdown.requested and signum == signal.SIGINT:
            log.warning("second interrupt: exiting now")
            os._exit(130)
        log.info("received %s: finishing in-flight requests", signal.Signals(signum).name)
        shutdown.request()

    def on_early_hangup(_signum: int, _frame: FrameType | None) -> None:
        # Replaced once Teleport is dialed (_teleport_client), which then honours it:
        # the credentials may have been read before the file was renewed.
        _early_hangup.set()
        log.info("received SIGHUP before connecting to Teleport: reloading once connected")

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGHUP, on_early_hangup)


def _progress(pipeline: Pipeline, shutdown: Shutdown) -> None:
    last, last_time = 0, time.monotonic()
    while not shutdown.wait(PROGRESS_INTERVAL):
        now = time.monotonic()
        sent = pipeline.events_sent
        log.info(
            "Event processing: %d events sent in the last %.0fs (%.0f/s), %d in total",
            sent - last,
            now - last_time,
            (sent - last) / max(now - last_time, 1e-9),
            sent,
        )
        last, last_time = sent, now


def _cancel_calls_on_shutdown(client: TeleportClient, shutdown: Shutdown) -> None:
    """A SIGTERM ends Teleport calls and streams at once, not after their reply."""
    while not shutdown.wait(3600.0):
        pass
    client.close()


def run(config: Config, shutdown: Shutdown | None = None) -> int:
    """Run the export until it is stopped; the process exit code."""
    shutdown = shutdown or Shutdown()
    if threading.current_thread() is threading.main_thread():
        _install_signals(shutdown)
    log.info(
        "teleport-event-handler %s starting (event JSON: %s)", __version__, accelerator.CONVERSION
    )
    notifier = Notifier(os.environ)
    try:
        return _run(config, shutdown, notifier)
    except (TeleportError, StateError, SinkError, PipelineFailed, MonitorError) as exc:
        log.error("%s", exc)
        return 1
    finally:
        notifier.stopping()
        notifier.close()


def _teleport_client(config: Config, files: CredentialFiles, creds: Credentials) -> TeleportClient:
    """Dial Auth directly or through the Proxy; reload renewed credentials; warn before expiry."""
    via_proxy, why = choose_dial(config.teleport_addr, creds, config.teleport_dial)
    log.info(
        "dialing the Auth Service %s %s (%s)",
        "through the Proxy's TLS routing at" if via_proxy else "directly at",
        config.teleport_addr,
        why,
    )
    client = TeleportClient(
        config.teleport_addr,
        creds,
        api_version=config.teleport_api_version,
        via_proxy=via_proxy,
        loader=credential_loader(files),
    )
    refresh = config.teleport_refresh_enabled and bool(files.identity)
    threading.Thread(
        target=client.monitor,
        args=(config.teleport_refresh_interval, refresh),
        name="identity",
        daemon=True,
    ).start()
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGHUP, lambda _signum, _frame: client.request_reload())
    if _early_hangup.is_set():
        _early_hangup.clear()
        client.request_reload()
    return client


def _not_yet(config: Config) -> None:
    """Say plainly which Go plugin features this version does not do yet."""
    if config.lock_enabled and config.dry_run:
        log.info("lock-enabled is set, but a dry run makes no locks (as the Go plugin)")


def _run(config: Config, shutdown: Shutdown, notifier: Notifier) -> int:
    _not_yet(config)
    files = credential_files(config)
    creds = load_credentials(files)

    directory = state_dir(config.storage, config.teleport_addr, config.dry_run)
    state = State(directory)
    state.pause = shutdown.wait  # a full disk pauses the export until there is space
    take_over(state)  # the Go plugin's state, on the first start in its directory
    start_time = state.settle_start_time(config.start_time, utcnow())
    log.info("state in %s; exporting events from %s", directory, start_time.isoformat())

    type_filter = TypeFilter(config.types, config.skip_event_types)
    dead_letter_path = os.path.join(directory, "dead-letter.jsonl")
    monitor = Monitor(
        state=state,
        type_filter=type_filter,
        stuck_after=config.stuck_after,
        dead_letter_path=dead_letter_path,
        notifier=notifier,
    )
    dead_letters = DeadLetters(directory, monitor.on_dead_letter)
    sink_class = ForwardClient if config.uses_forward else FluentdClient
    raw_sink = sink_class(
        ca=config.fluentd_ca,
        cert=config.fluentd_cert,
        key=config.fluentd_key,
        max_connections=config.fluentd_max_connections,
        timeout=config.fluentd_timeout,
        shutdown=shutdown,
        on_rejected=dead_letters,
        dry_run=config.dry_run,
    )
    # Pipeline and SessionExporter annotate FluentdClient; they need only the Sink protocol.
    sink = cast(FluentdClient, TimedSink(raw_sink, monitor.send_seconds))
    monitor.wiring.sink = raw_sink
    if config.metrics_addr:
        monitor.serve(config.metrics_addr)
    unreachable = sink.check(config.fluentd_url)
    if unreachable:
        log.warning("%s; events will wait until it answers", unreachable)
    client = _teleport_client(config, files, creds)
    threading.Thread(
        target=_cancel_calls_on_shutdown, args=(client, shutdown), name="cancel", daemon=True
    ).start()
    monitor.wiring.prober = client
    monitor.wiring.identity_expires = lambda: client.creds.not_after.timestamp()
    # Started: the state, the Fluentd client and the Teleport channel exist. Waiting
    # for Teleport or Fluentd to answer is the export's business, not start-up's.
    notifier.ready(f"connecting to Teleport at {config.teleport_addr}")
    pipeline = Pipeline(
        sink=sink,
        url=config.fluentd_url,
        state=state,
        shutdown=shutdown,
        batch_size=config.fluentd_batch_size,
        as_array=config.fluentd_array,
        workers=config.fluentd_max_connections,
    )
    sessions: SessionExporter | None = None
    workers: ExportWorkers | None = None
    try:
        pong = call_with_retry("Ping", client.ping, client, shutdown)
        log.info(
            "connected to Teleport cluster %r (version %s) at %s as %r",
            pong.ClusterName,
            pong.ServerVersion,
            config.teleport_addr,
            creds.user,
        )
        pipeline.start()
        sessions = SessionExporter(
            client=client,
            state=state,
            sink=sink,
            shutdown=shutdown,
            url_prefix=config.fluentd_session_url,
            skip_types=config.skip_session_types,
            concurrency=config.concurrency,
            batch_size=config.fluentd_batch_size,
            as_array=config.fluentd_array,
        )
        sessions.start()
        monitor.wiring.pipeline = pipeline
        monitor.wiring.sessions = sessions
        observers: list[Callable[[EventUnstructured, str], None]] = [monitor.observe]
        if config.lock_enabled and not config.dry_run:
            locker = AutoLocker(
                client=client,
                shutdown=shutdown,
                allowed=config.lock_failed_attempts_count,
                period=config.lock_period,
                lock_for=config.lock_for,
            )
            locker.start()
            observers.append(locker.observe)
            log.info(
                "auto-lock: more than %d failed logins within %gs lock the user",
                config.lock_failed_attempts_count,
                config.lock_period,
            )
        threading.Thread(
            target=_progress, args=(pipeline, shutdown), name="progress", daemon=True
        ).start()
        bulk = probe_bulk(client, shutdown)
        monitor.wiring.engine = "bulk" if bulk else "legacy"
        monitor.wiring.poll_interval = BULK_POLL_INTERVAL if bulk else config.timeout
        monitor.start(shutdown)
        if bulk:
            log.info("the cluster serves bulk export: using the per-day chunk engine")
            if config.export_workers:
                workers = ExportWorkers(
                    config.export_workers,
                    WorkerSpec(
                        addr=config.teleport_addr,
                        credentials=files,
                        api_version=config.teleport_api_version,
                        via_proxy=client.via_proxy,
                        type_filter=type_filter,
                        log_level=log.getEffectiveLevel(),
                    ),
                    shutdown,
                )
                workers.start()
                log.info("bulk export: %d worker processes stream the chunks", workers.count)
            engine: Engine = BulkEngine(
                client=client,
                state=state,
                pipeline=pipeline,
                shutdown=shutdown,
                start_time=start_time,
                type_filter=type_filter,
                poll_interval=BULK_POLL_INTERVAL,
                chunk_concurrency=config.export_workers or max(config.concurrency // 4, 3),
                workers=workers,
                exit_on_last_event=config.exit_on_last_event,
                observers=observers,
                schedule_sessions=True,
            )
        else:
            log.info("bulk export is not implemented by this backend: using windowed search")
            engine = LegacyEngine(
                client=client,
                state=state,
                pipeline=pipeline,
                shutdown=shutdown,
                start_time=start_time,
                window_size=config.window_size,
                page_size=config.batch,
                type_filter=type_filter,
                poll_interval=config.timeout,
                exit_on_last_event=config.exit_on_last_event,
                observers=observers,
                schedule_sessions=True,
            )
        with contextlib.suppress(Stopped):
            engine.run()
        if not shutdown.requested:
            log.info("caught up with the last event: waiting for Fluentd to acknowledge")
            pipeline.wait_idle()
            # The sessions the last events scheduled, too (recordings not found
            # yet stay in the state for the next run).
            while not sessions.idle() and not shutdown.wait(0.5):
                pass
        if sessions.failure is not None:
            raise PipelineFailed(str(sessions.failure)) from sessions.failure
    except Stopped:
        pass  # a SIGTERM while Ping or the probe waited for Teleport: nothing was read
    except BaseException:
        shutdown.request()  # stop the senders: nothing unacknowledged gets committed
        raise
    finally:
        # Stopping on a signal, requests in flight get SHUTDOWN_GRACE to finish
        # (as the Go plugin's 5 s); then they are aborted, and never committed.
        pipeline.close(SHUTDOWN_GRACE if shutdown.requested else 30.0)
        shutdown.request()
        if workers is not None:
            workers.close()
        client.close()
        sink.close()
        pipeline.join(SHUTDOWN_GRACE)
        if sessions is not None:
            sessions.join(SHUTDOWN_GRACE)
        monitor.close()
        state.close()
    log.info(
        "stopped: %d events sent and committed, %d session recordings exported%s",
        pipeline.events_committed,
        sessions.sessions_done if sessions is not None else 0,
        f", {dead_letters.count} refused events in {dead_letters.path}"
        if dead_letters.count
        else "",
    )
    return 0
