"""A sandbox Fluentd v1.16 in_http receiver, faithful enough to test the forwarder against.

Run it with ``sandbox-fluentd --config fluent.conf`` or in-process::

    server = FluentdServer(load_config("fluent.conf"), port=0).start()
    ...
    server.stop()
    records = read_records("/path/of/the/file/output")
"""

from __future__ import annotations

from .conf import ConfigError, FluentConfig, build_config, load_config
from .records import read_events, read_records
from .server import Faults, FluentdServer, Stats

__all__ = [
    "ConfigError",
    "Faults",
    "FluentConfig",
    "FluentdServer",
    "Stats",
    "build_config",
    "load_config",
    "read_events",
    "read_records",
]
