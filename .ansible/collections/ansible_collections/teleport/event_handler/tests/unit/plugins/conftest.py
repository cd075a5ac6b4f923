# Copyright: the teleport-event-handler authors
# Apache License 2.0 (see LICENSE)
"""Make the collection importable when these tests run from the repository.

ansible-test runs them inside ``ansible_collections/teleport/event_handler``,
where the import path already works. A plain ``pytest`` from the repository
root (the project's own test command) gets a temporary
``ansible_collections/teleport/event_handler`` link to the checkout instead.
"""

from __future__ import annotations

import atexit
import os
import shutil
import sys
import tempfile


def _link_collection():
    try:
        import ansible_collections.teleport.event_handler.plugins.module_utils  # noqa: F401
    except ImportError:
        pass
    else:
        return
    checkout = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", ".."))
    root = tempfile.mkdtemp(prefix="collection-path-")
    atexit.register(shutil.rmtree, root, True)
    namespace = os.path.join(root, "ansible_collections", "teleport")
    os.makedirs(namespace)
    os.symlink(checkout, os.path.join(namespace, "event_handler"))
    sys.path.insert(0, root)
    for name in [
        n for n in sys.modules if n == "ansible_collections" or n.startswith("ansible_collections.")
    ]:
        del sys.modules[name]


_link_collection()
