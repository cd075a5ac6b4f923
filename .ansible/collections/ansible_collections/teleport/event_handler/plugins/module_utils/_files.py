# Copyright: the teleport-event-handler authors
# Apache License 2.0 (see LICENSE)
"""Owner, group and mode of the files the modules write, changed only if they differ."""

from __future__ import annotations

import re
from typing import Any, Optional

__all__ = ["secret_mode_problem", "set_attributes"]

# A symbolic clause that gives others (o, or a = everyone) read or write access.
_OTHERS_ACCESS = re.compile(r"^[ugoa]*[oa][ugoa]*[+=][^,]*[rw]")


def secret_mode_problem(mode: Any, option: str, what: str) -> Optional[str]:
    """Why ``mode`` must not be used for a file holding a secret, or None when it is fine.

    Owner and group access are the operator's choice (Fluentd may read its key
    through its group); access for every other user of the host is refused.
    """
    if mode is None:
        return None
    others = False
    if isinstance(mode, int):
        others = bool(mode & 0o006)
    else:
        text = str(mode).strip()
        if re.fullmatch(r"0?[0-7]{3,4}", text):
            others = bool(int(text, 8) & 0o006)
        else:
            others = any(_OTHERS_ACCESS.match(clause.strip()) for clause in text.split(","))
    if not others:
        return None
    return (
        f"{option}={mode!s} would let every user of the host read or change {what}; "
        f"use '0600' (owner only) or '0640' with group set to the service's group"
    )


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
