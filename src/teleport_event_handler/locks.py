"""Auto-lock: a user whose logins keep failing is locked through ``UpsertLock``.

The Go plugin's rule (``events_job.go`` ``TryLockUser``, ``helpers.go``
``upsertLock``, ``teleport_event.go`` ``setLoginData``): a ``user.login``
event with ``success`` false is a failed login; more than
``lock-failed-attempts-count`` of them within ``lock-period`` lock the user
with a ``types.LockV2`` named ``event-handler-auto-lock-<user>-<login>``,
targeting that user and login, with the message "User is locked due to too
many failed login attempts", expiring ``lock-for`` after it is made (never
when ``lock-for`` is 0). Disabled in a dry run.

Where this differs, on purpose:

* Failures are counted per (user, login), by the events' own times, in a
  sliding window. The Go plugin keys its rate limiter by the login alone
  (every user of ``root`` shares one count, and every web login, which has
  no login, shares another) and counts by the time it reads the events, so
  a backlog read quickly looks like a burst. An event read twice (after a
  restart) is counted once.
* A failed login without a ``login`` (web and SSO logins) locks the user
  itself: the lock targets the user only (Teleport then refuses that user
  everywhere) and is named ``event-handler-auto-lock-<user>-``, the name the
  Go plugin gives it.
* Locks are made by a thread of their own, so a slow or refusing Auth
  Service never holds up the export. Missing permission logs one error
  naming the fix (the role needs ``lock`` ``create`` and ``update``); the
  export goes on.
"""

from __future__ import annotations

import bisect
import datetime
import logging
import queue
import threading
from collections import OrderedDict
from dataclasses import dataclass

import grpc
from google.protobuf import timestamp_pb2

from teleport_event_handler.backoff import Backoff, Shutdown
from teleport_event_handler.protos.teleport.auditlog.v1 import auditlog_pb2
from teleport_event_handler.protos.teleport.legacy.types import types_pb2
from teleport_event_handler.teleport import TeleportClient, explain, is_transient, needs_a_person

log = logging.getLogger(__name__)

LOGIN_EVENT = "user.login"
LOCK_MESSAGE = "User is locked due to too many failed login attempts"
LOCK_RULE_FIX = (
    "add the rule {resources: ['lock'], verbs: ['create', 'update']} to the handler's role "
    "(tctl edit role/teleport-event-handler), or set lock-enabled = false"
)
UPSERT_ATTEMPTS = 5
# Failed logins remembered per (user, login) at most; a burst needs only count + 1.
_MAX_REMEMBERED = 1024
_MAX_KEYS = 100_000


def lock_name(user: str, login: str) -> str:
    """The Go plugin's lock name (``helpers.go`` ``upsertLock``)."""
    return f"event-handler-auto-lock-{user}-{login}"


@dataclass(frozen=True, slots=True)
class FailedLogin:
    user: str
    login: str
    time: datetime.datetime
    id: str


def failed_login(message: auditlog_pb2.EventUnstructured, event_type: str) -> FailedLogin | None:
    """The failed login a ``user.login`` event reports, or None."""
    if event_type != LOGIN_EVENT:
        return None
    fields = message.unstructured.fields
    success = fields.get("success")
    if success is not None and success.bool_value:
        return None
    user = fields["user"].string_value if "user" in fields else ""
    if not user:
        return None
    login = fields["login"].string_value if "login" in fields else ""
    if message.HasField("time"):
        when = message.time.ToDatetime(tzinfo=datetime.UTC)
    else:
        when = datetime.datetime.now(datetime.UTC)
    return FailedLogin(user, login, when, message.id)


def build_lock(user: str, login: str, lock_for: float, now: datetime.datetime) -> types_pb2.LockV2:
    lock = types_pb2.LockV2(Kind="lock", Version="v2")
    lock.Metadata.Name = lock_name(user, login)
    lock.Spec.Target.User = user
    lock.Spec.Target.Login = login
    lock.Spec.Message = LOCK_MESSAGE
    if lock_for > 0:
        expires = timestamp_pb2.Timestamp()
        expires.FromDatetime(now + datetime.timedelta(seconds=lock_for))
        lock.Spec.Expires.CopyFrom(expires)
    return lock


class FailedLoginCounter:
    """Sliding-window counts of failed logins per (user, login), by event time."""

    def __init__(self, allowed: int, period: float) -> None:
        self.allowed = max(1, allowed)
        self.period = datetime.timedelta(seconds=period)
        self._times: OrderedDict[tuple[str, str], list[datetime.datetime]] = OrderedDict()
        self._seen: OrderedDict[str, None] = OrderedDict()

    def add(self, failure: FailedLogin) -> bool:
        """Count one failure; True when it makes more than ``allowed`` within ``period``."""
        if failure.id:
            if failure.id in self._seen:
                return False
            self._seen[failure.id] = None
            if len(self._seen) > _MAX_KEYS:
                self._seen.popitem(last=False)
        key = (failure.user, failure.login)
        times = self._times.setdefault(key, [])
        self._times.move_to_end(key)
        if len(self._times) > _MAX_KEYS:
            self._times.popitem(last=False)
        position = bisect.bisect(times, failure.time)
        times.insert(position, failure.time)
        if len(times) > _MAX_REMEMBERED:
            del times[0]
            position -= 1
        # Any run of allowed + 1 failures that contains this one and fits in the period?
        run = self.allowed
        for first in range(max(0, position - run), min(position, len(times) - 1 - run) + 1):
            if times[first + run] - times[first] < self.period:
                return True
        return False


class AutoLocker:
    """Watches audit events for failed logins and locks users in the background."""

    def __init__(
        self,
        *,
        client: TeleportClient,
        shutdown: Shutdown,
        allowed: int,
        period: float,
        lock_for: float,
    ) -> None:
        self._client = client
        self._shutdown = shutdown
        self._lock_for = lock_for
        self._counter = FailedLoginCounter(allowed, period)
        self._counter_lock = threading.Lock()  # bulk chunks are read by several threads
        self._queue: queue.Queue[FailedLogin] = queue.Queue()
        self._denied_logged = False
        self._thread = threading.Thread(target=self._work, name="auto-lock", daemon=True)
        self.locks_made = 0

    def start(self) -> None:
        self._thread.start()

    def join(self, timeout: float) -> None:
        if self._thread.is_alive():
            self._thread.join(timeout)

    def observe(self, message: auditlog_pb2.EventUnstructured, event_type: str) -> None:
        failure = failed_login(message, event_type)
        if failure is None:
            return
        with self._counter_lock:
            burst = self._counter.add(failure)
        if burst:
            self._queue.put(failure)

    def _work(self) -> None:
        while not self._shutdown.requested:
            try:
                failure = self._queue.get(timeout=0.5)
            except queue.Empty:
                continue
            self._upsert(failure)

    def _upsert(self, failure: FailedLogin) -> None:
        lock = build_lock(
            failure.user, failure.login, self._lock_for, datetime.datetime.now(datetime.UTC)
        )
        backoff = Backoff(base=0.5, cap=10.0)
        for attempt in range(1, UPSERT_ATTEMPTS + 1):
            try:
                self._client.upsert_lock(lock)
            except grpc.RpcError as exc:
                if self._shutdown.requested:
                    return
                if needs_a_person(exc):
                    if not self._denied_logged:
                        self._denied_logged = True
                        log.error(
                            "could not lock user %r after repeated failed logins: Teleport "
                            "denied user %r: %s; to let the handler lock users, %s. "
                            "The export goes on.",
                            failure.user,
                            self._client.creds.user,
                            exc.details() if hasattr(exc, "details") else exc,
                            LOCK_RULE_FIX,
                        )
                    else:
                        log.debug("UpsertLock for %r denied again", failure.user)
                    return
                if not is_transient(exc) or attempt == UPSERT_ATTEMPTS:
                    log.error(
                        "could not lock user %r (lock %s): %s",
                        failure.user,
                        lock.Metadata.Name,
                        explain(exc, self._client.addr, self._client.creds),
                    )
                    return
                if backoff.sleep(self._shutdown):
                    return
                continue
            except ValueError:
                return  # the channel was closed by the shutdown
            self.locks_made += 1
            log.info(
                "User login is locked: user %r, login %r, lock %s, %s",
                failure.user,
                failure.login,
                lock.Metadata.Name,
                f"for {self._lock_for:g}s" if self._lock_for > 0 else "until removed",
            )
            return


__all__ = [
    "LOCK_MESSAGE",
    "AutoLocker",
    "FailedLoginCounter",
    "build_lock",
    "failed_login",
    "lock_name",
]
