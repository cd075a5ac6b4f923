"""Auto-lock: which failed logins count, when a burst locks, and the lock sent."""

from __future__ import annotations

import datetime

from google.protobuf import struct_pb2

from teleport_event_handler.locks import (
    LOCK_MESSAGE,
    FailedLogin,
    FailedLoginCounter,
    build_lock,
    failed_login,
    lock_name,
)
from teleport_event_handler.protos.teleport.auditlog.v1 import auditlog_pb2

UTC = datetime.UTC
T0 = datetime.datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


def _login(uid: str, seconds: float, user: str = "alice", login: str = "root") -> FailedLogin:
    return FailedLogin(user, login, T0 + datetime.timedelta(seconds=seconds), uid)


def _event(
    fields: dict[str, object], event_type: str = "user.login"
) -> auditlog_pb2.EventUnstructured:
    payload = struct_pb2.Struct()
    payload.update(fields)
    message = auditlog_pb2.EventUnstructured(type=event_type, id="e1", unstructured=payload)
    message.time.FromDatetime(T0)
    return message


def test_only_failed_user_login_events_count() -> None:
    failed = failed_login(
        _event({"user": "alice", "login": "root", "success": False}), "user.login"
    )
    assert failed == FailedLogin("alice", "root", T0, "e1")
    assert failed_login(_event({"user": "alice", "success": True}), "user.login") is None
    assert failed_login(_event({"user": "alice", "success": False}), "session.start") is None
    # A web login has no login: it counts, with an empty login.
    web = failed_login(_event({"user": "bob", "success": False}), "user.login")
    assert web is not None and web.login == ""


def test_more_than_count_within_the_period_is_a_burst_and_not_before() -> None:
    counter = FailedLoginCounter(allowed=3, period=60.0)
    assert [counter.add(_login(f"e{n}", n * 10)) for n in range(3)] == [False] * 3
    assert counter.add(_login("e3", 30))  # the 4th within a minute


def test_failures_spread_over_more_than_the_period_never_lock() -> None:
    counter = FailedLoginCounter(allowed=3, period=60.0)
    assert not any(counter.add(_login(f"e{n}", n * 21)) for n in range(20))


def test_out_of_order_events_are_counted_by_their_own_time() -> None:
    counter = FailedLoginCounter(allowed=2, period=60.0)
    assert not counter.add(_login("a", 100))
    assert not counter.add(_login("b", 0))  # read late, long before
    assert not counter.add(_login("c", 130))
    assert counter.add(_login("d", 90))  # 90, 100, 130 fall within one minute


def test_an_event_read_twice_counts_once_and_keys_are_user_and_login() -> None:
    counter = FailedLoginCounter(allowed=1, period=60.0)
    assert not counter.add(_login("same", 1))
    assert not counter.add(_login("same", 1))
    assert not counter.add(_login("other-user", 2, user="bob"))
    assert not counter.add(_login("other-login", 2, login="ubuntu"))
    assert counter.add(_login("again", 3))


def test_the_lock_is_the_go_plugins() -> None:
    now = datetime.datetime(2026, 1, 2, tzinfo=UTC)
    lock = build_lock("alice", "root", 300.0, now)
    assert lock.Kind == "lock" and lock.Version == "v2"
    assert lock.Metadata.Name == lock_name("alice", "root") == "event-handler-auto-lock-alice-root"
    assert (lock.Spec.Target.User, lock.Spec.Target.Login) == ("alice", "root")
    assert lock.Spec.Message == LOCK_MESSAGE
    assert lock.Spec.Expires.ToDatetime(tzinfo=UTC) == now + datetime.timedelta(minutes=5)
    forever = build_lock("bob", "", 0.0, now)
    assert not forever.Spec.HasField("Expires")
    assert forever.Metadata.Name == "event-handler-auto-lock-bob-"
    assert (forever.Spec.Target.User, forever.Spec.Target.Login) == ("bob", "")
