# Copyright: the teleport-event-handler authors
# Apache License 2.0 (see LICENSE)
"""When an identity file must be renewed, read from the TLS certificate inside it."""

from __future__ import annotations

import datetime

from ansible_collections.teleport.event_handler.plugins.module_utils import _pki
from ansible_collections.teleport.event_handler.plugins.module_utils._identity import (
    inspect_identity,
)

HOUR = datetime.timedelta(hours=1)


def _identity(path, user, roles, ttl, key=None):
    """An identity file laid out as Teleport writes it (key, TLS cert, TLS CA)."""
    ca_key = _pki.generate_private_key("ecdsa-p256")
    ca = _pki.issue_ca(ca_key, "sandbox")
    key = key or _pki.generate_private_key("ecdsa-p256")
    cert = _pki.issue_leaf(
        ca, ca_key, key.public_key(), user, "client", ttl=ttl, organizations=tuple(roles)
    )
    parts = _pki.IdentityParts(
        _pki.private_key_pem(key), b"", _pki.cert_pem(cert), (), (_pki.cert_pem(ca),)
    )
    _pki.write_file_atomic(str(path), _pki.build_identity_file(parts))


def test_reasons_to_renew(tmp_path):
    path = tmp_path / "identity"
    now = _pki.utcnow()
    state = inspect_identity(str(path), "handler", 4 * HOUR, now)
    assert not state.exists and state.renew_reason == "the identity file does not exist"

    _identity(path, "handler", ["teleport-event-handler"], 12 * HOUR)
    state = inspect_identity(str(path), "handler", 4 * HOUR, now, ["teleport-event-handler"])
    assert state.renew_reason == ""
    assert state.user == "handler" and state.roles == ["teleport-event-handler"]
    assert state.not_after - now > 11 * HOUR

    assert "not 'other'" in inspect_identity(str(path), "other", 4 * HOUR, now).renew_reason
    late = inspect_identity(str(path), "handler", 4 * HOUR, now + 9 * HOUR)
    assert "within renew_before (4h)" in late.renew_reason
    gone = inspect_identity(str(path), "handler", 4 * HOUR, now + 13 * HOUR)
    assert gone.renew_reason.startswith("the identity expired at")
    roles = inspect_identity(
        str(path), "handler", 4 * HOUR, now, ["access", "teleport-event-handler"]
    )
    assert "now has ['access', 'teleport-event-handler']" in roles.renew_reason

    path.write_bytes(b"not an identity\n")
    assert "not usable" in inspect_identity(str(path), "handler", HOUR, now).renew_reason
