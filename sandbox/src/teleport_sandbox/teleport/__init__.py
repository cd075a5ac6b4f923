"""A sandbox Teleport cluster: its authority, resources, RBAC, gRPC server and ``tctl``.

No real Teleport can run here, so tests and demos talk to this stand-in. It
keeps Teleport's observable contract (identity files, certificate encoding,
resource documents, RBAC wording, ``tctl`` output) so that code written
against it also works against a real cluster.

Submodules: ``authority`` (CAs, identities), ``resources`` (state, RBAC),
``tctl`` (the ``sandbox-tctl`` console script), ``server``/``corpus``/``cli``
(the gRPC peer). Nothing is imported here so that each stays cheap to load.
"""

from __future__ import annotations

# The Teleport release whose behaviour the sandbox mirrors; reported by
# ``sandbox-tctl version``/``status`` and by the server's Ping.
TELEPORT_VERSION = "17.4.8"

# Environment variable naming a sandbox data directory for tools that were
# not given ``--config`` (``sandbox-tctl --identity``, the Ansible modules).
DATA_DIR_ENV = "TELEPORT_SANDBOX_DATA_DIR"

__all__ = ["DATA_DIR_ENV", "TELEPORT_VERSION"]
