"""``python -m teleport_sandbox.fluentd``: the same as ``sandbox-fluentd``."""

from __future__ import annotations

import sys

from .cli import main

sys.exit(main())
