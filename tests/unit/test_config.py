"""load_config: every flag, env var and TOML key of the Go plugin lands in the right field."""

from __future__ import annotations

import dataclasses
import datetime
from pathlib import Path
from typing import Any

import pytest

from teleport_event_handler.config import (
    OPTIONS,
    Config,
    ConfigError,
    Option,
    load_config,
    normalize_bool_args,
)
from teleport_event_handler.durations import DurationError, format_duration, go_seconds

UTC = datetime.UTC

REQUIRED = {
    "fluentd-url": "https://fluentd.example.com:8888/test.log",
    "fluentd-session-url": "https://fluentd.example.com:8888/session",
    "storage": "/var/lib/teh",
    "teleport-identity": "/etc/teh/identity",
}
TRIO = ("teleport-cert", "teleport-key", "teleport-ca")

# A non-default value per option: (text for flags and env, TOML literal, expected field value).
SAMPLES: dict[str, tuple[str, str, Any]] = {
    "debug": ("true", "true", True),
    "fluentd-url": ("https://f.example:8443/a.log", '"https://f.example:8443/a.log"', None),
    "fluentd-session-url": ("https://f.example:8443/s", '"https://f.example:8443/s"', None),
    "fluentd-cert": ("/c/client.crt", '"/c/client.crt"', None),
    "fluentd-key": ("/c/client.key", '"/c/client.key"', None),
    "fluentd-ca": ("/c/ca.crt", '"/c/ca.crt"', None),
    "fluentd-max-connections": ("7", "7", 7),
    "fluentd-batch-size": ("500", "500", 500),
    "fluentd-array": ("false", "false", False),
    "fluentd-timeout": ("1m30s", '"1m30s"', 90.0),
    "fluentd-protocol": ("forward", '"forward"', "forward"),
    "teleport-addr": ("tele.example.com:443", '"tele.example.com:443"', None),
    "teleport-identity": ("/id/identity", '"/id/identity"', None),
    "teleport-refresh-enabled": ("true", "true", True),
    "teleport-refresh-interval": ("30s", '"30s"', 30.0),
    "teleport-ca": ("/t/ca.pem", '"/t/ca.pem"', None),
    "teleport-cert": ("/t/cert.pem", '"/t/cert.pem"', None),
    "teleport-key": ("/t/key.pem", '"/t/key.pem"', None),
    "teleport-api-version": ("18.1.0", '"18.1.0"', "18.1.0"),
    "teleport-dial": ("proxy", '"proxy"', "proxy"),
    "storage": ("/srv/storage", '"/srv/storage"', None),
    "batch": ("50", "50", 50),
    "types": ("user.login, session.start", '["user.login", "session.start"]', None),
    "skip-event-types": ("app.session.chunk", '"app.session.chunk"', None),
    "skip-session-types": ("print,resize", '["print", "resize"]', None),
    "start-time": (
        "2021-05-05T10:20:30.75+02:00",
        "2021-05-05T10:20:30.75+02:00",
        datetime.datetime(2021, 5, 5, 8, 20, 30, tzinfo=UTC),
    ),
    "timeout": ("10s", '"10s"', 10.0),
    "dry-run": ("true", "true", True),
    "exit-on-last-event": ("true", "true", True),
    "concurrency": ("8", "8", 8),
    "window-size": ("1h", '"1h"', 3600.0),
    "export-workers": ("4", "4", 4),
    "lock-enabled": ("true", "true", True),
    "lock-failed-attempts-count": ("5", "5", 5),
    "lock-period": ("2m", '"2m"', 120.0),
    "lock-for": ("87600h", '"87600h"', 87600 * 3600.0),
    "metrics-addr": ("127.0.0.1:9464", '"127.0.0.1:9464"', "127.0.0.1:9464"),
    "log-format": ("json", '"json"', "json"),
    "stuck-after": ("10m", '"10m"', 600.0),
}
LIST_EXPECTED = {
    "types": ("user.login", "session.start"),
    "skip-event-types": ("app.session.chunk",),
    "skip-session-types": ("print", "resize"),
}


def expected(opt: Option) -> Any:
    text, _literal, value = SAMPLES[opt.flag]
    if opt.flag in LIST_EXPECTED:
        return LIST_EXPECTED[opt.flag]
    return text if value is None else value


def base_flags(tested: str) -> list[str]:
    """Flags for everything required except ``tested`` (a flag would beat the source under test)."""
    flags = [f"--{name}={value}" for name, value in REQUIRED.items() if name != tested]
    if tested in TRIO:
        flags = [f for f in flags if not f.startswith("--teleport-identity")]
        flags += [f"--{name}=/t/{name}" for name in TRIO if name != tested]
    partner = {"fluentd-cert": "fluentd-key", "fluentd-key": "fluentd-cert"}.get(tested)
    if partner:
        flags.append(f"--{partner}=/c/{partner}")
    return flags


def test_every_option_has_a_sample() -> None:
    assert {opt.flag for opt in OPTIONS} == set(SAMPLES)


def test_reference_page_lists_every_flag_and_variable() -> None:
    page = (Path(__file__).parents[2] / "docs" / "configuration.md").read_text()
    for opt in OPTIONS:
        assert f"`--{opt.flag}" in page, opt.flag
        for env in opt.env:
            assert f"`{env}`" in page, env


def test_defaults() -> None:
    config = load_config([f"--{k}={v}" for k, v in REQUIRED.items()], {})
    assert config == Config(
        config_path=None,
        debug=False,
        fluentd_url="https://fluentd.example.com:8888/test.log",
        fluentd_session_url="https://fluentd.example.com:8888/session",
        fluentd_cert=None,
        fluentd_key=None,
        fluentd_ca=None,
        fluentd_max_connections=10,
        fluentd_batch_size=200,
        fluentd_array=True,
        fluentd_timeout=30.0,
        teleport_addr="localhost:3025",
        teleport_identity="/etc/teh/identity",
        teleport_refresh_enabled=False,
        teleport_refresh_interval=60.0,
        teleport_ca=None,
        teleport_cert=None,
        teleport_key=None,
        storage="/var/lib/teh",
        batch=20,
        types=(),
        skip_event_types=(),
        skip_session_types=("print", "desktop.recording"),
        start_time=None,
        timeout=5.0,
        dry_run=False,
        exit_on_last_event=False,
        concurrency=5,
        window_size=86400.0,
        lock_enabled=False,
        lock_failed_attempts_count=3,
        lock_period=60.0,
        lock_for=0.0,
    )
    assert config.warnings == () and config.notes == ()


def test_max_connections_follows_concurrency() -> None:
    argv = [f"--{k}={v}" for k, v in REQUIRED.items()]
    assert load_config([*argv, "--concurrency=9"], {}).fluentd_max_connections == 18
    assert load_config([*argv, "--fluentd-max-connections=3"], {}).fluentd_max_connections == 3


@pytest.mark.parametrize("opt", OPTIONS, ids=lambda o: o.flag)
def test_flag_round_trip(opt: Option) -> None:
    text = SAMPLES[opt.flag][0]
    config = load_config([*base_flags(opt.flag), f"--{opt.flag}={text}"], {})
    assert getattr(config, opt.field) == expected(opt)
    if opt.kind != "bool":  # the space-separated form
        config = load_config([*base_flags(opt.flag), f"--{opt.flag}", text], {})
        assert getattr(config, opt.field) == expected(opt)


@pytest.mark.parametrize(
    ("opt", "env"), [(o, e) for o in OPTIONS for e in o.env], ids=lambda x: getattr(x, "flag", x)
)
def test_env_round_trip(opt: Option, env: str) -> None:
    config = load_config(base_flags(opt.flag), {env: SAMPLES[opt.flag][0]})
    assert getattr(config, opt.field) == expected(opt)


@pytest.mark.parametrize(
    ("opt", "path"),
    [(o, p) for o in OPTIONS for p in o.toml_paths()],
    ids=lambda x: getattr(x, "flag", None) or ".".join(x),
)
def test_toml_round_trip(opt: Option, path: tuple[str, ...], tmp_path: Path) -> None:
    # A dotted key at the top of the file is the same TOML as [table] + key.
    file = tmp_path / "teh.toml"
    file.write_text(f"{'.'.join(path)} = {SAMPLES[opt.flag][1]}\n")
    config = load_config(["--config", str(file), *base_flags(opt.flag)], {})
    assert getattr(config, opt.field) == expected(opt)
    assert config.config_path == str(file)


def test_toml_comma_string_list_and_duration_zero(tmp_path: Path) -> None:
    file = tmp_path / "teh.toml"
    file.write_text('types = "a, b,,c"\nlock-for = 0\nskip-session-types = []\n')
    config = load_config(["-c", str(file), *base_flags("")], {})
    assert config.types == ("a", "b", "c")
    assert config.lock_for == 0.0
    assert config.skip_session_types == ()


def test_bool_flag_forms() -> None:
    base = base_flags("")
    assert load_config([*base, "--dry-run"], {}).dry_run is True
    assert load_config([*base, "--dry-run=false"], {}).dry_run is False
    assert load_config([*base, "--dry-run=TRUE"], {}).dry_run is True
    assert load_config([*base, "--teleport-refresh-enabled", "true"], {}).teleport_refresh_enabled
    assert load_config([*base, "--no-fluentd-array"], {}).fluentd_array is False
    assert load_config([*base, "-d"], {}).debug is True


def test_false_flag_beats_true_env() -> None:
    config = load_config([*base_flags(""), "--lock-enabled=false"], {"FDFWD_LOCKING_ENABLED": "1"})
    assert config.lock_enabled is False


def test_normalize_bool_args_leaves_other_tokens() -> None:
    argv = ["--storage", "true", "--dry-run=0", "--", "--dry-run=x"]
    assert normalize_bool_args(argv) == ["--storage", "true", "--no-dry-run", "--", "--dry-run=x"]


def test_list_flag_repeated() -> None:
    config = load_config([*base_flags(""), "--types=a,b", "--types", "c"], {})
    assert config.types == ("a", "b", "c")


# --- precedence: flag > TOML > env > default ----------------------------------------


def test_precedence(tmp_path: Path) -> None:
    file = tmp_path / "teh.toml"
    file.write_text('batch = 30\ntimeout = "7s"\n[teleport]\naddr = "file.example.com:3025"\n')
    env = {
        "FDFWD_BATCH": "40",
        "FDFWD_TIMEOUT": "8s",
        "FDFWD_TELEPORT_ADDR": "env:1",
        "FDFWD_CONCURRENCY": "6",
    }
    argv = ["-c", str(file), *base_flags(""), "--batch=50"]
    config = load_config(argv, env)
    assert config.batch == 50  # flag beats file and env
    assert config.timeout == 7.0  # file beats env
    assert config.teleport_addr == "file.example.com:3025"
    assert config.concurrency == 6  # env beats default
    assert config.window_size == 86400.0  # default


def test_config_path_from_env_and_flag(tmp_path: Path) -> None:
    one, two = tmp_path / "one.toml", tmp_path / "two.toml"
    one.write_text("batch = 1\n")
    two.write_text("batch = 2\n")
    assert load_config(base_flags(""), {"FDFWD_CONFIG": str(one)}).batch == 1
    assert (
        load_config(["--config", str(two), *base_flags("")], {"FDFWD_CONFIG": str(one)}).batch == 2
    )


def test_debug_precedence(tmp_path: Path) -> None:
    file = tmp_path / "teh.toml"
    file.write_text("debug = false\n")
    assert load_config(base_flags(""), {"FDFWD_DEBUG": "true"}).debug is True
    assert load_config(["-c", str(file), *base_flags("")], {"FDFWD_DEBUG": "true"}).debug is False
    assert load_config(["-c", str(file), "-d", *base_flags("")], {}).debug is True


def test_dotted_form_wins_with_a_warning(tmp_path: Path) -> None:
    file = tmp_path / "teh.toml"
    file.write_text("lock-enabled = false\nlock.enabled = true\n")
    config = load_config(["-c", str(file), *base_flags("")], {})
    assert config.lock_enabled is True
    assert any("lock.enabled" in w and "lock-enabled" in w for w in config.warnings)


@pytest.mark.parametrize(
    ("typo", "documented", "field", "value", "partner"),
    [
        ("FDWRD_FLUENTD_CERT", "FDFWD_FLUENTD_CERT", "fluentd_cert", "/x", "--fluentd-key=/k"),
        ("FDWRD_FLUENTD_KEY", "FDFWD_FLUENTD_KEY", "fluentd_key", "/x", "--fluentd-cert=/c"),
        ("FDWRD_FLUENTD_CA", "FDFWD_FLUENTD_CA", "fluentd_ca", "/x", None),
        ("FDWRD_MAX_CONNECTIONS", "FDFWD_MAX_CONNECTIONS", "fluentd_max_connections", "4", None),
        ("FDWRD_TELEPORT_CERT", "FDFWD_TELEPORT_CERT", "teleport_cert", "/x", None),
    ],
)
def test_both_env_spellings(
    typo: str, documented: str, field: str, value: str, partner: str | None
) -> None:
    flags = base_flags("teleport-cert" if "TELEPORT" in typo else "")
    if partner:
        flags.append(partner)
    want = int(value) if value.isdigit() else value
    for env in ({typo: value}, {documented: value}, {typo: value, documented: value}):
        assert getattr(load_config(flags, env), field) == want


def test_disagreeing_spellings_are_an_error() -> None:
    env = {"FDFWD_MAX_CONNECTIONS": "4", "FDWRD_MAX_CONNECTIONS": "5"}
    with pytest.raises(ConfigError) as info:
        load_config(base_flags(""), env)
    assert "FDFWD_MAX_CONNECTIONS (environment): disagrees with FDWRD_MAX_CONNECTIONS" in str(
        info.value
    )


def test_empty_env_var_is_unset() -> None:
    config = load_config(base_flags(""), {"FDFWD_BATCH": "", "FDFWD_TELEPORT_ADDR": ""})
    assert config.batch == 20 and config.teleport_addr == "localhost:3025"


# --- Go plugin files load unchanged ---------------------------------------------------

CONFIGURE_TEMPLATE = """\
storage = "./storage"
timeout = "10s"
batch = 20

[forward.fluentd]
ca = "/home/bob/event-handler/ca.crt"
cert = "/home/bob/event-handler/client.crt"
key = "/home/bob/event-handler/client.key"
url = "https://localhost:8888/test.log"
session-url = "https://localhost:8888/session"

[teleport]
addr = "localhost:3025"
identity = "identity"
refresh.enabled = true
"""

HELM_CONFIGMAP = """\
storage = "/var/lib/teleport/plugins/event-handler/storage"
timeout = "10s"
batch = 20
window-size = "24h"
debug = false

[teleport]
addr = "teleport.example.com:443"
identity = "/var/lib/teleport/plugins/event-handler/teleport-identity/auth_id"
refresh.enabled = true

[forward.fluentd]
url = "https://fluentd.fluentd.svc.cluster.local/events.log"
session-url = "https://fluentd.fluentd.svc.cluster.local/session.log"
ca = "/var/lib/teleport/plugins/event-handler/fluentd/ca.crt"
cert = "/var/lib/teleport/plugins/event-handler/fluentd/client.crt"
key = "/var/lib/teleport/plugins/event-handler/fluentd/client.key"
"""

GUIDE_TOML = """\
storage = "./storage"
timeout = "10s"
batch = 20
namespace = "default"
# The window size should be specified as a duration string, parsed by Go's time.ParseDuration.
window-size = "24h"

[forward.fluentd]
ca = "/home/bob/event-handler/ca.crt"
cert = "/home/bob/event-handler/client.crt"
key = "/home/bob/event-handler/client.key"
url = "https://fluentd.example.com:8888/test.log"
session-url = "https://fluentd.example.com:8888/session"

[teleport]
addr = "example.teleport.com:443"
identity = "identity"
"""


def test_configure_template_loads(tmp_path: Path) -> None:
    file = tmp_path / "teleport-event-handler.toml"
    file.write_text(CONFIGURE_TEMPLATE)
    config = load_config(["--config", str(file)], {})
    assert (config.storage, config.timeout, config.batch) == ("./storage", 10.0, 20)
    assert config.fluentd_ca == "/home/bob/event-handler/ca.crt"
    assert config.fluentd_cert == "/home/bob/event-handler/client.crt"
    assert config.fluentd_key == "/home/bob/event-handler/client.key"
    assert config.fluentd_url == "https://localhost:8888/test.log"
    assert config.fluentd_session_url == "https://localhost:8888/session"
    assert config.teleport_addr == "localhost:3025"
    assert config.teleport_identity == "identity"
    assert config.teleport_refresh_enabled is True
    assert config.warnings == ()


def test_helm_configmap_loads(tmp_path: Path) -> None:
    file = tmp_path / "teleport-event-handler.toml"
    file.write_text(HELM_CONFIGMAP)
    config = load_config(["--config", str(file)], {})
    assert config.storage == "/var/lib/teleport/plugins/event-handler/storage"
    assert (config.timeout, config.batch, config.window_size, config.debug) == (
        10.0,
        20,
        86400.0,
        False,
    )
    assert config.teleport_addr == "teleport.example.com:443"
    assert str(config.teleport_identity).endswith("/teleport-identity/auth_id")
    assert config.teleport_refresh_enabled is True
    assert config.fluentd_url == "https://fluentd.fluentd.svc.cluster.local/events.log"
    assert config.fluentd_session_url == "https://fluentd.fluentd.svc.cluster.local/session.log"
    assert config.fluentd_key == "/var/lib/teleport/plugins/event-handler/fluentd/client.key"


def test_guide_toml_with_namespace_loads(tmp_path: Path) -> None:
    file = tmp_path / "teleport-event-handler.toml"
    file.write_text(GUIDE_TOML)
    config = load_config(["--config", str(file), "--teleport-refresh-enabled=true"], {})
    assert config.teleport_addr == "example.teleport.com:443"
    assert config.teleport_refresh_enabled is True
    assert any("namespace is ignored" in note for note in config.notes)


# --- validation messages ------------------------------------------------------------------


def problems(argv: list[str], env: dict[str, str] | None = None) -> str:
    with pytest.raises(ConfigError) as info:
        load_config(argv, env or {})
    assert info.value.problems
    return str(info.value)


def test_observability_settings_name_the_fix() -> None:
    flags = base_flags("")
    assert "metrics-addr: 'localhost' has no port" in problems([*flags, "--metrics-addr=localhost"])
    assert "write text or json" in problems([*flags, "--log-format=xml"])
    assert "is not HOST:PORT" in problems([*flags, "--metrics-addr=http://0.0.0.0:9464"])
    off = load_config([*flags, "--metrics-addr="], {})
    assert off.metrics_addr is None
    assert load_config(flags, {}).stuck_after == 300.0


def test_required_settings_are_all_reported() -> None:
    message = problems([])
    for needle in (
        "--fluentd-url: required but not set; set 'url' under [forward.fluentd]",
        "--fluentd-session-url: required but not set",
        "--storage: required but not set; set top-level 'storage' in the config file, "
        "--storage or FDFWD_STORAGE",
        "--teleport-identity: no Teleport credentials are set",
    ):
        assert needle in message


def test_required_named_by_toml_key_with_a_config_file(tmp_path: Path) -> None:
    file = tmp_path / "teh.toml"
    file.write_text("batch = 20\n")
    message = problems(["-c", str(file)])
    assert f"{file}: forward.fluentd.url: required but not set" in message
    assert f"{file}: storage: required but not set" in message
    assert f"{file}: teleport.identity: no Teleport credentials" in message


@pytest.mark.parametrize(
    ("extra", "env", "needles"),
    [
        (
            ["--fluentd-url=ftp://x/y"],
            {},
            ["--fluentd-url: 'ftp://x/y' is not an https:// URL", "https://"],
        ),
        (["--fluentd-url=https:///nohost"], {}, ["has no host"]),
        (["--fluentd-url=https://h:99999/a"], {}, ["has an invalid port"]),
        (["--fluentd-session-url=https://h/s?x=1"], {}, ["'.<session id>.log' is appended"]),
        (
            ["--teleport-addr=teleport.example.com"],
            {},
            ["--teleport-addr: 'teleport.example.com' has no port", "host:port"],
        ),
        (["--teleport-addr=https://t:443"], {}, ["has a URL scheme"]),
        (["--teleport-addr=t:0"], {}, ["is not a number from 1 to 65535"]),
        (["--batch=0"], {}, ["--batch: 0 is out of range; use a number from 1 to 10000"]),
        (["--batch=ten"], {}, ["--batch: 'ten' is not a whole number"]),
        # Teleport refuses a client version that is not MAJOR.MINOR.PATCH
        # (lib/auth/middleware.go, Middleware.ValidateClientVersion).
        (
            ["--teleport-api-version=v18"],
            {},
            ["--teleport-api-version: 'v18' is not a Teleport version", "MAJOR.MINOR.PATCH"],
        ),
        # Teleport refuses a page limit above 10000 (lib/defaults EventsMaxIterationLimit,
        # checked in lib/events/dynamoevents, pgevents and filelog search functions).
        (["--batch=10001"], {}, ["--batch: 10001 is out of range; use a number from 1 to 10000"]),
        (["--concurrency=-1"], {}, ["--concurrency: -1 is out of range"]),
        (["--fluentd-batch-size=10001"], {}, ["use a number from 1 to 10000"]),
        (["--fluentd-max-connections=-2"], {}, ["use 0 or more"]),
        (
            ["--lock-failed-attempts-count=0"],
            {},
            ["--lock-failed-attempts-count: 0 is out of range"],
        ),
        (["--timeout=10"], {}, ["--timeout: '10' has no unit; add a unit, e.g. 10s"]),
        (["--window-size=0"], {}, ["--window-size: 0s is not positive"]),
        (["--lock-for=-1h"], {}, ["--lock-for: -1h is negative"]),
        (["--lock-period=1d"], {}, ["unknown unit 'd'"]),
        (
            ["--start-time=2021-05-05"],
            {},
            ["--start-time: '2021-05-05' is not an RFC3339 time", "2021-05-05T00:00:00Z"],
        ),
        (["--start-time=2021-05-05T00:00:00"], {}, ["is not an RFC3339 time"]),
        (["--start-time=2021-02-30T00:00:00Z"], {}, ["is not a valid time"]),
        (
            ["--dry-run=maybe"],
            {},
            ["--dry-run: 'maybe' is not a boolean; write --dry-run, --dry-run=true"],
        ),
        (["--no-dry-run=true"], {}, ["--no-dry-run: takes no value"]),
        (
            ["--fluentd-urll=x"],
            {},
            ["unrecognized arguments: --fluentd-urll=x", "did you mean --fluentd-url?"],
        ),
        ([], {"FDFWD_BATCH": "x"}, ["FDFWD_BATCH (environment): 'x' is not a whole number"]),
        ([], {"FDFWD_DRY_RUN": "maybe"}, ["FDFWD_DRY_RUN (environment): 'maybe' is not a boolean"]),
        (
            ["--fluentd-cert=/c"],
            {},
            [
                "--fluentd-key: not set, but --fluentd-cert is; "
                "give the client certificate and its key together"
            ],
        ),
        (
            [],
            {"FDWRD_FLUENTD_KEY": "/k"},
            ["--fluentd-cert: not set, but FDWRD_FLUENTD_KEY (environment) is"],
        ),
        (
            ["--teleport-cert=/c"],
            {},
            ["--teleport-identity: set together with --teleport-cert", "not both"],
        ),
    ],
)
def test_validation_messages(extra: list[str], env: dict[str, str], needles: list[str]) -> None:
    message = problems([*base_flags(""), *extra], env)
    for needle in needles:
        assert needle in message, message


def test_teleport_trio_incomplete() -> None:
    argv = [f"--{k}={v}" for k, v in REQUIRED.items() if k != "teleport-identity"]
    message = problems([*argv, "--teleport-cert=/c", "--teleport-key=/k"])
    assert "--teleport-ca: not set, but --teleport-cert, --teleport-key are" in message
    assert "set --teleport-cert, --teleport-key, --teleport-ca all together" in message


def test_toml_type_and_key_errors(tmp_path: Path) -> None:
    file = tmp_path / "teh.toml"
    file.write_text(
        'batch = "x"\ntimeout = 10\nstart-time = 2021-05-05T00:00:00\nsessionurl = 1\n'
        "[teleport]\nrefresh-enabled = true\naddr = 3025\n"
        "[forward.fluentbit]\nurl = 'https://x/y'\n"
        "[forward.fluentd]\nurl = 'https://f/a'\nsession-url = 'https://f/s'\narray = 'perhaps'\n"
    )
    message = problems(["-c", str(file), "--storage=/s", "--teleport-identity=/i"])
    for needle in (
        f"{file}: batch: 'x' is not a whole number",
        f'{file}: timeout: 10 has no unit; add a unit, e.g. "10s"',
        f"{file}: start-time: 2021-05-05T00:00:00 has no time zone",
        f"{file}: teleport.refresh-enabled: unknown key; did you mean teleport.refresh.enabled?",
        f"{file}: forward.fluentbit: unknown key; did you mean forward.fluentd",
        f"{file}: sessionurl: unknown key",
        f"{file}: teleport.addr: got an integer; write a quoted string",
        f"{file}: forward.fluentd.array: 'perhaps' is not a boolean",
    ):
        assert needle in message, message


def test_toml_syntax_and_missing_file(tmp_path: Path) -> None:
    file = tmp_path / "teh.toml"
    file.write_text("storage = \n")
    message = problems(["-c", str(file)])
    assert f"{file}: TOML syntax:" in message and "line 1" in message
    assert "required" not in message  # nothing else is guessed from a broken file
    missing = tmp_path / "nope.toml"
    assert f"config file: {missing} does not exist" in problems(["-c", str(missing)])


def test_http_url_is_accepted_with_a_warning() -> None:
    flags = [*base_flags("fluentd-url"), "--fluentd-url=http://localhost:8888/test.log"]
    config = load_config(flags, {})
    assert config.fluentd_url == "http://localhost:8888/test.log"
    assert any(
        w.startswith("--fluentd-url: http:// sends events unencrypted") for w in config.warnings
    )


def test_refresh_without_identity_warns() -> None:
    flags = [f"--{k}={v}" for k, v in REQUIRED.items() if k != "teleport-identity"]
    flags += [f"--{name}=/t/{name}" for name in TRIO] + ["--teleport-refresh-enabled"]
    config = load_config(flags, {})
    assert any("has no effect without an identity file" in w for w in config.warnings)


def test_describe_is_plain_and_complete() -> None:
    config = load_config([*base_flags(""), "--start-time=2021-05-05T00:00:00Z"], {})
    described = config.describe()
    assert described["window_size"] == "24h" and described["lock_for"] == "0s"
    assert described["start_time"] == "2021-05-05T00:00:00Z"
    assert set(described) == {f.name for f in dataclasses.fields(Config)} - {"warnings", "notes"}


def test_config_built_directly_resolves_max_connections() -> None:
    config = Config(
        fluentd_url="https://f/a", fluentd_session_url="https://f/s", storage="/s", concurrency=4
    )
    assert config.fluentd_max_connections == 8


# --- Go durations ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("1h30m", 5400.0),
        ("500ms", 0.5),
        ("87600h", 315360000.0),
        ("10s", 10.0),
        ("0", 0.0),
        ("1.5h", 5400.0),
        (".5s", 0.5),
        ("1\u00b5s", 1e-6),
        ("1\u03bcs", 1e-6),
        ("2us", 2e-6),
        ("3ns", 3e-9),
        ("-1m", -60.0),
        ("+2m3s", 123.0),
    ],
)
def test_go_seconds(text: str, seconds: float) -> None:
    assert go_seconds(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["10", "", "1x", "h", "1h 2m", "1.5", "s10", "1d", "-"])
def test_go_seconds_rejects(text: str) -> None:
    with pytest.raises(DurationError):
        go_seconds(text)


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0.0, "0s"),
        (86400.0, "24h"),
        (90.0, "1m30s"),
        (0.5, "500ms"),
        (7384.5, "2h3m4.5s"),
        (1e-6, "1us"),
    ],
)
def test_format_duration(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text
    assert go_seconds(text) == pytest.approx(seconds)
