# Copyright: the teleport-event-handler authors
# Apache License 2.0 (see LICENSE)
"""Keep a Teleport identity file current with ``tctl auth sign``.

The decision reads only the TLS certificate inside the existing file (the
one the forwarder presents to Teleport): who it is for (CN), the roles it
carries (O) and when it ends (NotAfter). A new identity is signed into a
private temporary directory next to the target and then moved into place
atomically, so the forwarder never reads half a file and the key is never
readable by anyone else.
"""

from __future__ import annotations

import datetime
import os
import shutil
import tempfile
from typing import Any, Dict, List, NamedTuple, Optional, Sequence

from ansible_collections.teleport.event_handler.plugins.module_utils import _pki
from ansible_collections.teleport.event_handler.plugins.module_utils._duration import (
    format_duration,
)
from ansible_collections.teleport.event_handler.plugins.module_utils._tctl import TctlRunner

__all__ = ["IdentityError", "IdentityState", "describe", "inspect_identity", "sign_identity"]


class IdentityError(Exception):
    """An identity that cannot be read or written as asked."""


class IdentityState(NamedTuple):
    """What the existing identity file says, and whether it must be renewed."""

    exists: bool
    user: str
    roles: List[str]
    not_after: Optional[datetime.datetime]
    renew_reason: str  # empty when the file can stay


def inspect_identity(
    path: str,
    user: str,
    renew_before: datetime.timedelta,
    now: datetime.datetime,
    wanted_roles: Optional[Sequence[str]] = None,
) -> IdentityState:
    """Read ``path`` and decide whether it must be renewed (never raises for a bad file)."""
    # sign_identity would fail without the directory: check mode must fail alike.
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise IdentityError(f"path: the directory {directory} does not exist; create it first")
    try:
        with open(path, "rb") as handle:
            data = handle.read()
    except FileNotFoundError:
        return IdentityState(False, "", [], None, "the identity file does not exist")
    except OSError as exc:
        raise IdentityError(
            f"path: cannot read {path} ({exc.strerror}); fix its permissions"
        ) from None
    try:
        parts = _pki.parse_identity_file(data, source=path)
        cert = _pki.load_certificate(parts.tls_cert_pem, source=path)
        key = _pki.load_private_key(parts.private_key_pem, source=path)
    except _pki.PkiError as exc:
        return IdentityState(True, "", [], None, f"the identity file is not usable ({exc})")
    holder, roles = _pki.subject_names(cert)
    not_after = cert.not_valid_after_utc
    state = IdentityState(True, holder, list(roles), not_after, "")
    if not _pki.key_matches_cert(key, cert):
        return state._replace(renew_reason="the private key does not match the certificate")
    if holder != user:
        return state._replace(renew_reason=f"the identity is for user {holder!r}, not {user!r}")
    left = not_after - now
    if left <= renew_before:
        if left.total_seconds() <= 0:
            reason = f"the identity expired at {_pki.iso_utc(not_after)}"
        else:
            reason = (
                f"the identity expires at {_pki.iso_utc(not_after)}, within renew_before "
                f"({format_duration(renew_before)})"
            )
        return state._replace(renew_reason=reason)
    if wanted_roles is not None and sorted(wanted_roles) != sorted(roles):
        return state._replace(
            renew_reason=(
                f"the identity carries roles {sorted(roles)} but user {user!r} now has "
                f"{sorted(wanted_roles)}"
            )
        )
    return state


def sign_identity(runner: TctlRunner, user: str, path: str, ttl: str, mode: int) -> IdentityState:
    """Sign a new identity for ``user`` and put it at ``path`` atomically with ``mode``."""
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise IdentityError(f"path: the directory {directory} does not exist; create it first")
    # tctl writes the file itself and refuses to overwrite one, so it gets a
    # fresh private directory beside the target (same filesystem for the rename).
    workdir = tempfile.mkdtemp(prefix=".tctl-sign-", dir=directory)
    try:
        out = os.path.join(workdir, "identity")
        runner.auth_sign(user, out, ttl, fmt="file")
        try:
            with open(out, "rb") as handle:
                data = handle.read()
        except OSError:
            raise IdentityError(
                f"tctl auth sign reported success but wrote no identity to {out}; "
                "is tctl_path really Teleport's tctl?"
            ) from None
        try:
            parts = _pki.parse_identity_file(data, source="the new identity")
            cert = _pki.load_certificate(parts.tls_cert_pem, source="the new identity")
        except _pki.PkiError as exc:
            raise IdentityError(str(exc)) from None
        _pki.write_file_atomic(path, data, mode)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    holder, roles = _pki.subject_names(cert)
    return IdentityState(True, holder, list(roles), cert.not_valid_after_utc, "")


def describe(state: IdentityState) -> Dict[str, Any]:
    """The diff/return view of an identity: who, which roles, until when; never the key."""
    return {
        "user": state.user,
        "roles": state.roles,
        "not_after": _pki.iso_utc(state.not_after) if state.not_after else None,
    }
