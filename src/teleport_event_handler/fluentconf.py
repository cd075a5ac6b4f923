"""Render the project's one ``fluent.conf`` template.

The template (``templates/fluent.conf.j2``, a link to the event_handler role's
``templates/fluent.conf.j2``) is what the demo, the tests, the Ansible role
and ``configure`` give Fluentd. It is rendered from one variable,
``fluent_conf``, a dict whose keys the template documents at its top. The
Jinja2 settings are the Ansible template module's (``trim_blocks``, trailing
newline kept), so Python and Ansible write the same file.
"""

from __future__ import annotations

import importlib.resources
from collections.abc import Mapping

import jinja2

__all__ = ["OPTIONAL_KEYS", "REQUIRED_KEYS", "FluentConfError", "render_fluent_conf"]

REQUIRED_KEYS = (
    "port",
    "ca_path",
    "cert_path",
    "private_key_path",
    "private_key_passphrase",
    "output_dir",
)
OPTIONAL_KEYS = (
    "bind",
    "audit_tag",
    "session_tag_prefix",
    "flush_interval",
    "buffer_type",
    "buffer_dir",
    "forward_port",
)
_TEMPLATE = "fluent.conf.j2"


class FluentConfError(ValueError):
    """A ``fluent_conf`` the template cannot be rendered from; the message names the key."""


def template_text() -> str:
    """The template's source, as installed with the package."""
    return (
        importlib.resources.files("teleport_event_handler")
        .joinpath("templates", _TEMPLATE)
        .read_text(encoding="utf-8")
    )


def _check(fluent_conf: Mapping[str, object]) -> None:
    missing = [key for key in REQUIRED_KEYS if fluent_conf.get(key) in (None, "")]
    if missing:
        raise FluentConfError(f"fluent_conf: give {', '.join(missing)}")
    unknown = sorted(set(fluent_conf) - set(REQUIRED_KEYS) - set(OPTIONAL_KEYS))
    if unknown:
        raise FluentConfError(
            f"fluent_conf: unknown key(s) {', '.join(unknown)}: use "
            + ", ".join(REQUIRED_KEYS + OPTIONAL_KEYS)
        )
    port = fluent_conf["port"]
    if isinstance(port, bool) or not str(port).isdigit() or not 0 <= int(str(port)) < 65536:
        raise FluentConfError(
            f"fluent_conf.port {port!r}: give a TCP port, 1-65535 (0: any free port)"
        )
    forward_port = fluent_conf.get("forward_port")
    if forward_port not in (None, "") and (
        isinstance(forward_port, bool)
        or not str(forward_port).isdigit()
        or not 0 < int(str(forward_port)) < 65536
        or str(forward_port) == str(port)
    ):
        raise FluentConfError(
            f"fluent_conf.forward_port {forward_port!r}: give a TCP port, 1-65535, other "
            "than port (in_http's), or leave it unset for no in_forward"
        )
    for key, value in fluent_conf.items():
        if "\n" in str(value) or "\r" in str(value):
            raise FluentConfError(f"fluent_conf.{key}: a value cannot span lines")
    buffer_type = fluent_conf.get("buffer_type", "file")
    if buffer_type not in ("file", "memory"):
        raise FluentConfError(f"fluent_conf.buffer_type {buffer_type!r}: give file or memory")


def render_fluent_conf(fluent_conf: Mapping[str, object]) -> str:
    """The ``fluent.conf`` text for ``fluent_conf``; FluentConfError names a bad key."""
    _check(fluent_conf)
    environment = jinja2.Environment(
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        keep_trailing_newline=True,
        autoescape=False,
    )
    try:
        template = environment.from_string(template_text())
        return template.render(fluent_conf=dict(fluent_conf))
    except jinja2.UndefinedError as exc:
        raise FluentConfError(f"fluent_conf: {exc}") from exc
