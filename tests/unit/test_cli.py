"""The teleport-event-handler console script: version, check-config, start's error path."""

from __future__ import annotations

import datetime
import os
import subprocess
import sys
from pathlib import Path

import pytest

from teleport_event_handler import __version__, pki
from teleport_event_handler.cli import COMMANDS, build_parser, main
from teleport_event_handler.protos import TELEPORT_API_VERSION

SCRIPT = Path(sys.executable).parent / "teleport-event-handler"


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("FDFWD_", "FDWRD_"))}
    return subprocess.run(
        [str(SCRIPT), *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**clean, **(env or {})},
        check=False,
    )


def write_identity(path: Path, *, expired: bool) -> None:
    ca_key = pki.generate_private_key("ecdsa-p256")
    ca = pki.issue_ca(ca_key, "user CA")
    key = pki.generate_private_key("ecdsa-p256")
    cert = pki.issue_leaf(
        ca,
        ca_key,
        key.public_key(),
        "bot-event-handler",
        "client",
        ttl=datetime.timedelta(hours=1),
        not_before=pki.utcnow() - datetime.timedelta(hours=3 if expired else 0),
    )
    parts = pki.IdentityParts(
        pki.private_key_pem(key), b"", pki.cert_pem(cert), (), (pki.cert_pem(ca),)
    )
    pki.write_file_atomic(str(path), pki.build_identity_file(parts))


def write_config(
    tmp_path: Path, identity: Path, url: str = "https://localhost:8888/test.log"
) -> Path:
    file = tmp_path / "teleport-event-handler.toml"
    file.write_text(
        f'storage = "{tmp_path}/storage"\ntimeout = "10s"\nbatch = 20\nwindow-size = "12h"\n'
        f'[forward.fluentd]\nurl = "{url}"\nsession-url = "https://localhost:8888/session"\n'
        f'[teleport]\naddr = "localhost:3025"\nidentity = "{identity}"\nrefresh.enabled = true\n'
    )
    return file


def test_console_script_is_installed() -> None:
    assert SCRIPT.exists(), "run '.venv/bin/pip install -e .' to install the console script"


def test_version() -> None:
    result = run("version")
    assert result.returncode == 0
    lines = result.stdout.splitlines()
    assert lines[0] == f"teleport-event-handler v{__version__} python"
    assert "teleport.auditlog.v1" in lines[1]
    assert f"v{TELEPORT_API_VERSION}," in lines[1]


def test_check_config_ok(tmp_path: Path) -> None:
    identity = tmp_path / "identity"
    write_identity(identity, expired=False)
    file = write_config(tmp_path, identity)
    result = run("check-config", str(file))
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == f"{file}: OK"
    summary = "\n".join(lines[1:])
    assert f"teleport: addr localhost:3025, identity {identity} (reloaded every 1m)" in summary
    assert "window-size 12h" in summary and "timeout 10s" in summary and "start-time now" in summary
    assert "fluentd: url https://localhost:8888/test.log" in summary
    assert f"storage: {tmp_path}/storage" in summary
    assert result.stderr == ""


def test_check_config_expired_identity(tmp_path: Path) -> None:
    identity = tmp_path / "identity"
    write_identity(identity, expired=True)
    file = write_config(tmp_path, identity)
    result = run("check-config", str(file))
    assert result.returncode == 1
    assert result.stdout == ""
    (line,) = result.stderr.splitlines()
    assert line.startswith(f"{file}: teleport.identity: the identity in {identity} expired at ")
    assert "; write a fresh identity with 'tctl auth sign" in line and "tbot" in line


def test_check_config_lists_every_problem(tmp_path: Path) -> None:
    file = write_config(tmp_path, tmp_path / "no-identity", url="ftp://localhost/x")
    result = run("check-config", str(file), env={"FDFWD_BATCH": "x"})
    assert result.returncode == 1
    lines = result.stderr.splitlines()
    assert f"{file}: forward.fluentd.url: 'ftp://localhost/x' is not an https:// URL; " in lines[0]
    assert any(
        line.startswith(f"{file}: teleport.identity: {tmp_path}/no-identity does not exist;")
        for line in lines
    )
    # The file's batch wins over FDFWD_BATCH, so the bad variable is never read.
    assert not any("FDFWD_BATCH" in line for line in lines)
    assert all(line.startswith(f"{file}: ") for line in lines)


def test_check_config_warns_but_passes_on_http(tmp_path: Path) -> None:
    identity = tmp_path / "identity"
    write_identity(identity, expired=False)
    file = write_config(tmp_path, identity, url="http://localhost:8888/test.log")
    result = run("check-config", str(file))
    assert result.returncode == 0
    assert "warning:" in result.stderr and "use https:// for mutual TLS" in result.stderr


def test_check_config_missing_file_and_usage(tmp_path: Path) -> None:
    result = run("check-config", str(tmp_path / "absent.toml"))
    assert result.returncode == 1
    assert f"config file: {tmp_path / 'absent.toml'} does not exist" in result.stderr
    usage = run("check-config")
    assert usage.returncode == 2
    assert usage.stderr.startswith("teleport-event-handler: error: command line:")


def test_start_config_error_exits_2(tmp_path: Path) -> None:
    result = run("start", "--fluentd-url=https://f/a", "--timeout=10", env={"FDFWD_STORAGE": "/s"})
    assert result.returncode == 2
    lines = result.stderr.splitlines()
    assert all(line.startswith("teleport-event-handler: error: ") for line in lines)
    assert any("--timeout: '10' has no unit; add a unit, e.g. 10s" in line for line in lines)
    assert any("--fluentd-session-url: required but not set" in line for line in lines)
    assert not any("storage" in line for line in lines)


# --- in-process: argument handling ------------------------------------------------------


@pytest.mark.parametrize(
    "argv",
    [
        ["-c", "{file}", "-d", "start"],
        ["start", "-c", "{file}", "--debug"],
        ["--debug=true", "start", "--config={file}"],
    ],
)
def test_globals_before_or_after_the_subcommand(
    argv: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    file = tmp_path / "bad.toml"
    file.write_text('batch = 0\nstorage = "/s"\n')
    assert main([a.format(file=file) for a in argv]) == 2
    err = capsys.readouterr().err
    assert f"teleport-event-handler: error: {file}: batch: 0 is out of range" in err


def test_subcommand_table_is_the_parser() -> None:
    assert [c.name for c in COMMANDS] == [
        "version",
        "configure",
        "start",
        "check-config",
        "dead-letter",
        "status",
    ]
    parser = build_parser()
    help_text = parser.format_help()
    assert "Forwards Teleport AuditLog to external sources" in help_text
    for command in COMMANDS:
        assert command.name in help_text


def test_unknown_command(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["stat"]) == 2
    assert "invalid choice: 'stat'" in capsys.readouterr().err
