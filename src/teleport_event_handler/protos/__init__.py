"""Our ``.proto`` files for Teleport's API and their generated stubs (``scripts/gen-protos``).

``TELEPORT_API_VERSION`` is the Teleport release whose wire contract these
protos follow. The client sends it as the ``version`` gRPC metadata on every
call, as Teleport's own API client sends its ``api.Version``: the Auth Service
reads that value as the client's Teleport API version (``api/metadata``
``ClientVersionFromContext``) and, where the cluster rejects old clients, closes
the connection of any client older than its oldest supported version or whose
value is not a semantic version (``lib/auth/middleware.go``
``Middleware.ValidateClientVersion``). ``[teleport] api-version`` overrides it.
"""

TELEPORT_API_VERSION = "17.4.8"

__all__ = ["TELEPORT_API_VERSION"]
