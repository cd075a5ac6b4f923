# Copyright: the teleport-event-handler authors
# Apache License 2.0 (see LICENSE)
"""Owner, group and mode of the files the modules write, changed only if they differ."""

from __future__ import annotations

from typing import Any, Optional

__all__ = ["set_attributes"]


def set_attributes(
    module: Any, path: str, owner: Optional[str], group: Optional[str], mode: Any, changed: bool
) -> bool:
    """Apply what differs (AnsibleModule honours check mode); return the updated ``changed``."""
    if owner is not None:
        changed = module.set_owner_if_different(path, owner, changed)
    if group is not None:
        changed = module.set_group_if_different(path, group, changed)
    if mode is not None:
        changed = module.set_mode_if_different(path, mode, changed)
    return bool(changed)
