"""``teleport-event-handler configure``: the Go plugin's starter kit, from the project's own parts.

For people who do not use Ansible. One run writes, into an existing directory:

* the Fluentd mutual-TLS material, through the collection's own bundle code
  (``mtls``, a link to ``plugins/module_utils/_mtls.py``, on ``pki``): what
  the ``fluentd_mtls`` module writes, with ``--force`` as its ``force``;
* ``fluent.conf`` from the project's one template (``fluentconf``);
* ``teleport-event-handler.toml`` from the event_handler role's own template
  (``templates/teleport-event-handler.toml.j2``, a link to the role's),
  rendered with the forwarder's defaults and the values the Go plugin writes;
* ``teleport-event-handler-role.yaml``: the role, user and impersonator role
  the guide (and the role's ``teleport.yml``) create.

Everything is computed first, so a bad name or address writes nothing; files
that exist are refused unless ``--force``. Secrets are written 0600 through a
temp file renamed into place (``pki.write_file_atomic``).
"""

from __future__ import annotations

import argparse
import datetime
import importlib.resources
import ipaddress
import json
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass

import jinja2

from teleport_event_handler import __version__, mtls, pki
from teleport_event_handler.config import OPTIONS
from teleport_event_handler.durations import DurationError, format_duration, go_seconds
from teleport_event_handler.fluentconf import FluentConfError, render_fluent_conf

__all__ = [
    "GUIDE_URL",
    "ConfigureError",
    "ConfigureOptions",
    "add_configure_arguments",
    "options_from_args",
    "planned_files",
    "render_handler_toml",
    "render_role_yaml",
    "run_configure",
]

GUIDE_URL = "https://goteleport.com/docs/management/export-audit-events/fluentd/"
ROLE_FILE = "teleport-event-handler-role.yaml"
FLUENT_CONF_FILE = "fluent.conf"
TOML_FILE = "teleport-event-handler.toml"
IDENTITY_FILE = "identity"
HANDLER_USER = "teleport-event-handler"
HANDLER_ROLE = "teleport-event-handler"
IMPERSONATOR_ROLE = "teleport-event-handler-impersonator"
IMPERSONATOR_MAX_SESSION_TTL = "10h"
DEFAULT_PORT = 8888
AUDIT_TAG = "test.log"
SESSION_TAG_PREFIX = "session"
# --length as the Go plugin spells it; 1024 is refused (see _key_type).
KEY_LENGTHS = (1024, 2048, 4096)
_TOML_TEMPLATE = "teleport-event-handler.toml.j2"


class ConfigureError(Exception):
    """Nothing (more) was written; the message names the file or flag and the fix."""


@dataclass(frozen=True)
class ConfigureOptions:
    """The command's arguments, parsed; defaults are the Go plugin's."""

    out: str
    addr: str = "localhost:3025"
    ca_name: str = "ca"
    server_name: str = "server"
    client_name: str = "client"
    ttl: datetime.timedelta = datetime.timedelta(hours=87600)
    dns_names: tuple[str, ...] = ("localhost",)
    ip_addresses: tuple[str, ...] = ()  # empty: the addresses the DNS names resolve to
    key_type: str = "rsa4096"
    common_name: str | None = None  # --cn: the server's and client's subject
    port: int = DEFAULT_PORT
    passphrase: str | None = None  # None: 32 random bytes, hex, as the Go plugin
    lock_enabled: bool = False
    force: bool = False

    @property
    def directory(self) -> str:
        return os.path.abspath(self.out)

    def path(self, name: str) -> str:
        return os.path.join(self.directory, name)


# --- arguments -----------------------------------------------------------------


def _comma_list(text: str) -> list[str]:
    return [item.strip() for item in text.split(",") if item.strip()]


def _ttl(text: str) -> datetime.timedelta:
    try:
        seconds = go_seconds(text)
    except DurationError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    if seconds <= 0:
        raise argparse.ArgumentTypeError(f"{text!r}: give a positive duration, e.g. 87600h")
    return datetime.timedelta(seconds=seconds)


def _port(text: str) -> int:
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise argparse.ArgumentTypeError(f"{text!r}: give a TCP port, 1-65535")
    return int(text)


def add_configure_arguments(parser: argparse.ArgumentParser) -> None:
    """The Go plugin's arguments and flags, then ours (marked so in --help)."""
    parser.add_argument("out", metavar="OUT", help="output directory (must exist)")
    parser.add_argument(
        "addr",
        metavar="ADDR",
        nargs="?",
        default="localhost:3025",
        help="Teleport Auth or Proxy address written as [teleport] addr (default: %(default)s)",
    )
    for name, default in (("ca-name", "ca"), ("server-name", "server"), ("client-name", "client")):
        parser.add_argument(
            name.replace("-", "_"),
            metavar=name.upper().replace("-", "_"),
            nargs="?",
            default=default,
            help=f"file stem of the {name.split('-')[0]} certificate and key "
            "(default: %(default)s)",
        )
    parser.add_argument(
        "--output",
        choices=["fluentd"],
        default="fluentd",
        help="export target; fluentd is the only one (default: %(default)s)",
    )
    parser.add_argument(
        "--ttl", type=_ttl, default="87600h", help="certificate TTL (default: %(default)s)"
    )
    parser.add_argument(
        "--dns-names",
        action="extend",
        type=_comma_list,
        metavar="NAMES",
        help="DNS SANs of the server and client certificates, comma separated or repeated; "
        "the first is the host in the handler's Fluentd URLs (default: localhost)",
    )
    parser.add_argument(
        "--ip",
        action="extend",
        type=_comma_list,
        metavar="ADDRESSES",
        help="IP SANs, comma separated or repeated (default: what --dns-names resolve to)",
    )
    parser.add_argument(
        "--length",
        "--key-length",
        dest="length",
        type=int,
        choices=KEY_LENGTHS,
        help="RSA key length (default: 4096)",
    )
    parser.add_argument(
        "--cn",
        metavar="NAME",
        help="subject common name of the server and client certificates "
        "(default: Server and Client, as the Go plugin)",
    )
    parser.add_argument(
        "--key-type",
        choices=pki.KEY_TYPES,
        help="key type instead of --length, e.g. ecdsa-p256 (ours)",
    )
    parser.add_argument(
        "--port",
        type=_port,
        default=DEFAULT_PORT,
        help="Fluentd's in_http port, in fluent.conf and the URLs (ours; default: %(default)s)",
    )
    parser.add_argument(
        "--passphrase-file",
        metavar="FILE",
        help="read the server key's passphrase from FILE, '-' for stdin (ours; default: "
        "32 random bytes, hex)",
    )
    parser.add_argument(
        "--lock-enabled",
        action="store_true",
        help="turn on auto-lock in the TOML and grant the role lock create/update (ours)",
    )
    parser.add_argument(
        "--force",
        action="store_true",
        help="overwrite files that exist (ours; without it nothing is overwritten)",
    )


def _key_type(args: argparse.Namespace) -> str:
    if args.key_type and args.length:
        raise ConfigureError("give --length or --key-type, not both")
    if args.key_type:
        return str(args.key_type)
    length = args.length or 4096
    if length == 1024:
        # OpenSSL 3 (Fluentd's Ruby) refuses 1024-bit RSA at its default security level.
        raise ConfigureError("--length 1024: too weak for OpenSSL 3; use 2048 or 4096")
    return f"rsa{length}"


def _read_passphrase(source: str | None, stdin_text: str | None) -> str | None:
    if source is None:
        return None
    if source == "-":
        text = stdin_text or ""
    else:
        try:
            with open(source, encoding="utf-8") as handle:
                text = handle.read()
        except OSError as exc:
            raise ConfigureError(f"--passphrase-file {source}: {exc.strerror}") from None
    secret = text.rstrip("\r\n")
    where = "stdin" if source == "-" else source
    if not secret:
        raise ConfigureError(f"--passphrase-file: {where} is empty; give a passphrase")
    if "\n" in secret or "\r" in secret:
        raise ConfigureError(f"--passphrase-file: {where} holds several lines; give one")
    return secret


def options_from_args(args: argparse.Namespace, stdin_text: str | None = None) -> ConfigureOptions:
    """The parsed command line as options; ConfigureError names a bad flag."""
    dns_names = tuple(dict.fromkeys(args.dns_names or ["localhost"]))
    ips = tuple(dict.fromkeys(args.ip or []))
    for address in ips:
        try:
            ipaddress.ip_address(address)
        except ValueError:
            raise ConfigureError(
                f"--ip {address!r}: not an IPv4 or IPv6 address; put names in --dns-names"
            ) from None
    return ConfigureOptions(
        out=args.out,
        addr=args.addr,
        ca_name=args.ca_name,
        server_name=args.server_name,
        client_name=args.client_name,
        ttl=args.ttl if isinstance(args.ttl, datetime.timedelta) else _ttl(args.ttl),
        dns_names=dns_names,
        ip_addresses=ips,
        key_type=_key_type(args),
        common_name=args.cn,
        port=args.port,
        passphrase=_read_passphrase(args.passphrase_file, stdin_text),
        lock_enabled=args.lock_enabled,
        force=args.force,
    )


# --- what is written -------------------------------------------------------------


def _bundle_spec(options: ConfigureOptions, ip_addresses: tuple[str, ...]) -> mtls.BundleSpec:
    return mtls.BundleSpec(
        directory=options.directory,
        key_type=options.key_type,
        ttl=options.ttl,
        ca_ttl=options.ttl,
        dns_names=options.dns_names,
        ip_addresses=ip_addresses,
        ca_name=options.ca_name,
        server_name=options.server_name,
        client_name=options.client_name,
        server_common_name=options.common_name or "Server",
        client_common_name=options.common_name or "Client",
        passphrase=options.passphrase,
        force=True,
    )


def planned_files(options: ConfigureOptions) -> list[str]:
    """Every file a run writes, the bundle's first."""
    bundle = mtls.bundle_paths(_bundle_spec(options, ()))
    configs = [options.path(name) for name in (ROLE_FILE, FLUENT_CONF_FILE, TOML_FILE)]
    return list(bundle.values()) + configs


def _fluentd_host(options: ConfigureOptions) -> str:
    names = [name for name in options.dns_names if not name.startswith("*.")]
    return names[0] if names else "localhost"


def _url_host(host: str) -> str:
    try:
        return f"[{host}]" if ipaddress.ip_address(host).version == 6 else host
    except ValueError:
        return host


def handler_settings(options: ConfigureOptions) -> dict[str, object]:
    """Every forwarder setting (by flag) for the TOML: the forwarder's defaults, then the
    values the Go plugin's configure writes, with absolute paths into OUT."""
    settings: dict[str, object] = {}
    for opt in OPTIONS:
        value = opt.default
        if opt.kind == "duration" and value is not None:
            value = format_duration(float(value))
        elif isinstance(value, tuple):
            value = list(value)
        settings[opt.flag] = "" if value is None else value
    paths = mtls.bundle_paths(_bundle_spec(options, ()))
    base = f"https://{_url_host(_fluentd_host(options))}:{options.port}"
    settings.update(
        {
            # What the Go plugin's template sets (storage, timeout, batch, the
            # Fluentd files and URLs, addr, identity, refresh.enabled).
            "storage": options.path("storage"),
            "timeout": "10s",
            "batch": 20,
            "fluentd-ca": paths["ca_cert"],
            "fluentd-cert": paths["client_cert"],
            "fluentd-key": paths["client_key"],
            "fluentd-url": f"{base}/{AUDIT_TAG}",
            "fluentd-session-url": f"{base}/{SESSION_TAG_PREFIX}",
            "teleport-addr": options.addr,
            "teleport-identity": options.path(IDENTITY_FILE),
            "teleport-refresh-enabled": True,
            # Left out of the TOML when empty: the forwarder's own applies.
            "teleport-api-version": "",
            "lock-enabled": options.lock_enabled,
        }
    )
    return settings


# Ansible's filters and globals that the role's TOML template uses, with
# Ansible's meaning (ansible.plugins.filter.core: to_json, bool, comment).
def _to_json(value: object) -> str:
    return json.dumps(value)


def _to_bool(value: object) -> bool:
    if isinstance(value, bool):
        return value
    return str(value).strip().lower() in ("yes", "on", "1", "true")


def _comment(text: object) -> str:
    lines = str(text).splitlines() or [""]
    return "#\n" + "\n".join(f"# {line}".rstrip() for line in lines) + "\n#"


def toml_template_text() -> str:
    """The event_handler role's TOML template, as installed with the package."""
    return (
        importlib.resources.files("teleport_event_handler")
        .joinpath("templates", _TOML_TEMPLATE)
        .read_text(encoding="utf-8")
    )


def render_handler_toml(settings: Mapping[str, object], managed: str) -> str:
    """The role's ``teleport-event-handler.toml.j2`` rendered from forwarder settings by flag.

    Each flag is the role variable ``event_handler_<flag, '-' as '_'>``; ``managed``
    stands in for ``ansible_managed``.
    """
    variables: dict[str, object] = {
        "event_handler_" + flag.replace("-", "_"): value for flag, value in settings.items()
    }
    variables["ansible_managed"] = managed

    def lookup(kind: str, name: str) -> object:
        if kind != "vars":
            raise ConfigureError(f"{_TOML_TEMPLATE}: lookup({kind!r}) is not supported here")
        return variables[name]

    environment = jinja2.Environment(
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        keep_trailing_newline=True,
        autoescape=False,
    )
    environment.filters.update({"to_json": _to_json, "bool": _to_bool, "comment": _comment})
    environment.globals["lookup"] = lookup
    try:
        text = environment.from_string(toml_template_text()).render(variables)
    except (jinja2.TemplateError, KeyError) as exc:
        raise ConfigureError(f"{_TOML_TEMPLATE} cannot be rendered: {exc}") from exc
    try:
        tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigureError(f"{_TOML_TEMPLATE} rendered invalid TOML: {exc}") from exc
    return text


def render_role_yaml(lock_enabled: bool) -> str:
    """The role, user and impersonator role (the guide's, as the Ansible role creates them)."""
    lock_rule = (
        "      # lock-enabled = true: UpsertLock needs both verbs.\n"
        "      - resources: [lock]\n"
        "        verbs: [create, update]\n"
        if lock_enabled
        else "      # With lock-enabled = true, also grant:\n"
        "      #   - resources: [lock]\n"
        "      #     verbs: [create, update]\n"
    )
    return (
        f"# Written by teleport-event-handler configure. Create these with:\n"
        f"#   tctl create -f {ROLE_FILE}\n"
        f"# The role the handler runs as: it reads the audit log and session recordings.\n"
        f"kind: role\n"
        f"version: v5\n"
        f"metadata:\n"
        f"  name: {HANDLER_ROLE}\n"
        f"spec:\n"
        f"  allow:\n"
        f"    rules:\n"
        f"      - resources: [event, session]\n"
        f"        verbs: [list, read]\n"
        f"{lock_rule}"
        f"---\n"
        f"kind: user\n"
        f"version: v2\n"
        f"metadata:\n"
        f"  name: {HANDLER_USER}\n"
        f"spec:\n"
        f"  roles: [{HANDLER_ROLE}]\n"
        f"---\n"
        f"# Give this role to whoever signs the handler's identity (tctl auth sign).\n"
        f"kind: role\n"
        f"version: v5\n"
        f"metadata:\n"
        f"  name: {IMPERSONATOR_ROLE}\n"
        f"spec:\n"
        f"  options:\n"
        f"    max_session_ttl: {IMPERSONATOR_MAX_SESSION_TTL}\n"
        f"  allow:\n"
        f"    impersonate:\n"
        f"      users: [{HANDLER_USER}]\n"
        f"      roles: [{HANDLER_ROLE}]\n"
    )


def fluent_conf_values(options: ConfigureOptions, passphrase: str) -> dict[str, object]:
    paths = mtls.bundle_paths(_bundle_spec(options, ()))
    return {
        "port": options.port,
        "ca_path": paths["ca_cert"],
        "cert_path": paths["server_cert"],
        "private_key_path": paths["server_key"],
        "private_key_passphrase": passphrase,
        "output_dir": options.path("fluentd"),
        "audit_tag": AUDIT_TAG,
        "session_tag_prefix": SESSION_TAG_PREFIX,
    }


# --- the run ---------------------------------------------------------------------


@dataclass(frozen=True)
class Written:
    """What a run wrote, for the summary."""

    certificates: list[str]
    role_yaml: str
    fluent_conf: str
    handler_toml: str
    identity: str


def _resolve(options: ConfigureOptions) -> tuple[str, ...]:
    if options.ip_addresses:
        return options.ip_addresses
    found: list[str] = []
    for name in options.dns_names:
        try:
            found.extend(mtls.resolve_ip_addresses((name,)))
        except mtls.BundleError:
            raise ConfigureError(
                f"--dns-names: {name!r} does not resolve here; fix the name, or give the "
                "Fluentd host's addresses with --ip"
            ) from None
    return tuple(dict.fromkeys(found))


def run_configure(options: ConfigureOptions) -> Written:
    """Write everything, or nothing if a file exists (without force) or a value is bad."""
    if not os.path.isdir(options.directory):
        raise ConfigureError(f"{options.out}: no such directory; create it first")
    targets = planned_files(options)
    existing = [path for path in targets if os.path.lexists(path)]
    if existing and not options.force:
        raise ConfigureError(
            f"{', '.join(existing)} already exist{'s' if len(existing) == 1 else ''}; "
            "nothing was written; pass --force to overwrite"
        )
    ip_addresses = _resolve(options)
    passphrase = options.passphrase or pki.random_passphrase()
    spec = _bundle_spec(options, ip_addresses)._replace(passphrase=passphrase)
    managed = (
        f"Written by teleport-event-handler configure (v{__version__}) for {options.addr}; "
        "edit as you need."
    )
    try:
        fluent_conf = render_fluent_conf(fluent_conf_values(options, passphrase))
    except FluentConfError as exc:
        raise ConfigureError(f"{FLUENT_CONF_FILE}: {exc}") from exc
    handler_toml = render_handler_toml(handler_settings(options), managed)
    role_yaml = render_role_yaml(options.lock_enabled)
    now = pki.utcnow()
    try:
        loaded = mtls.load_bundle(spec)
        plan = mtls.plan_bundle(spec, loaded, now)
        mtls.apply_plan(spec, loaded, plan, now)
        for name, text in (
            (ROLE_FILE, role_yaml),
            (FLUENT_CONF_FILE, fluent_conf),
            (TOML_FILE, handler_toml),
        ):
            # 0600 as the Go plugin: fluent.conf holds the passphrase.
            pki.write_file_atomic(options.path(name), text.encode("utf-8"), 0o600)
    except (mtls.BundleError, pki.PkiError) as exc:
        raise ConfigureError(str(exc)) from exc
    except OSError as exc:
        raise ConfigureError(f"{exc.filename or options.out}: {exc.strerror}") from exc
    paths = mtls.bundle_paths(spec)
    return Written(
        certificates=[paths[key] for key in paths],
        role_yaml=options.path(ROLE_FILE),
        fluent_conf=options.path(FLUENT_CONF_FILE),
        handler_toml=options.path(TOML_FILE),
        identity=options.path(IDENTITY_FILE),
    )


def display_path(path: str, cwd: str | None = None) -> str:
    """Relative to the working directory when below it, else absolute (as the Go plugin)."""
    here = cwd or os.getcwd()
    relative = os.path.relpath(path, here)
    return path if relative.startswith("..") else relative


def summary(written: Written) -> list[str]:
    """The Go plugin's numbered report, then the next steps."""
    show = display_path
    identity = show(written.identity)
    lines = [
        f"Teleport event handler v{__version__} python",
        "",
        "[1] Generated mTLS Fluentd certificates "
        + ", ".join(show(p) for p in written.certificates),
        f"[2] Generated sample teleport-event-handler role and user file {show(written.role_yaml)}",
        f"[3] Generated sample fluentd configuration file {show(written.fluent_conf)}",
        f"[4] Generated plugin configuration file {show(written.handler_toml)}",
        "",
        "Next steps:",
        f"  1. tctl create -f {show(written.role_yaml)}",
        f"     and give {IMPERSONATOR_ROLE} to the Teleport user who signs step 2",
        f"  2. tctl auth sign --user={HANDLER_USER} --format=file --out={identity} "
        f"--ttl={IMPERSONATOR_MAX_SESSION_TTL}",
        "     (or have tbot write an identity output there; refresh.enabled is on)",
        f"  3. fluentd -c {show(written.fluent_conf)}",
        f"  4. teleport-event-handler check-config {show(written.handler_toml)}",
        f"     teleport-event-handler start --config {show(written.handler_toml)}",
        "",
        "Follow-along with our getting started guide:",
        "",
        GUIDE_URL,
    ]
    return lines


def main_configure(args: argparse.Namespace, stdin_text: str | None = None) -> list[str]:
    """Parse, run and return the summary lines; ConfigureError on any problem."""
    options = options_from_args(args, stdin_text)
    return summary(run_configure(options))
