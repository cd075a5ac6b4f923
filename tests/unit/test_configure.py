"""``teleport-event-handler configure``: what it writes, how, and what it refuses.

The end-to-end proof (the files drive a sandbox Teleport, a real Fluentd and
the forwarder) is tests/integration/test_configure_end_to_end.py; these check the files
themselves, through the console script's ``main``.
"""

from __future__ import annotations

import datetime
import io
import os
import stat
import tomllib
from pathlib import Path

import pytest
import yaml
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from teleport_event_handler import configure, pki
from teleport_event_handler.cli import main
from teleport_event_handler.fluentconf import render_fluent_conf

ROOT = Path(__file__).resolve().parents[2]
ROLE_TEMPLATES = ROOT / "roles" / "event_handler" / "templates"
SECRETS = ("ca.key", "server.key", "client.key", "server.pass")
CONFIGS = ("fluent.conf", "teleport-event-handler.toml", "teleport-event-handler-role.yaml")
CERTS = ("ca.crt", "server.crt", "client.crt", "ca-bundle.crt")
FAST = ("--key-type", "ecdsa-p256")


def _configure(out: Path, *args: str) -> int:
    return main(["configure", str(out), *args])


def _cert(out: Path, name: str) -> x509.Certificate:
    return x509.load_pem_x509_certificate((out / name).read_bytes())


def _cn(cert: x509.Certificate) -> str:
    return str(cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value)


def _sans(cert: x509.Certificate) -> tuple[list[str], list[str]]:
    ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return ext.get_values_for_type(x509.DNSName), [
        str(ip) for ip in ext.get_values_for_type(x509.IPAddress)
    ]


def _toml(out: Path) -> dict[str, object]:
    return tomllib.loads((out / "teleport-event-handler.toml").read_text())


def test_writes_every_file_private_where_secret(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _configure(tmp_path, "teleport.example.com:443", *FAST) == 0
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == sorted(SECRETS + CONFIGS + CERTS)
    for name in SECRETS + CONFIGS:
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o600, name
    for name in CERTS:
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o644, name
    # No temp file of the atomic writes is left behind.
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]
    printed = capsys.readouterr().out
    assert printed.startswith("Teleport event handler v")
    for step in (
        "[1] Generated mTLS Fluentd certificates",
        "[2] Generated sample teleport-event-handler role and user file",
        "[3] Generated sample fluentd configuration file",
        "[4] Generated plugin configuration file",
        f"tctl create -f {tmp_path}/teleport-event-handler-role.yaml",
        f"tctl auth sign --user=teleport-event-handler --format=file --out={tmp_path}/identity",
        f"fluentd -c {tmp_path}/fluent.conf",
        f"teleport-event-handler start --config {tmp_path}/teleport-event-handler.toml",
        configure.GUIDE_URL,
    ):
        assert step in printed, step


def test_refuses_to_overwrite_without_force_and_writes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "fluent.conf").write_text("mine\n")
    (tmp_path / "ca.key").write_text("mine\n")
    assert _configure(tmp_path, *FAST) == 1
    err = capsys.readouterr().err
    assert str(tmp_path / "fluent.conf") in err and str(tmp_path / "ca.key") in err
    assert "--force" in err and "nothing was written" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ca.key", "fluent.conf"]
    assert (tmp_path / "fluent.conf").read_text() == "mine\n"

    assert _configure(tmp_path, *FAST, "--force") == 0
    assert "<transport tls>" in (tmp_path / "fluent.conf").read_text()
    assert stat.S_IMODE((tmp_path / "ca.key").stat().st_mode) == 0o600


def test_force_issues_a_new_bundle(tmp_path: Path) -> None:
    assert _configure(tmp_path, *FAST) == 0
    before = {n: _cert(tmp_path, n).serial_number for n in ("ca.crt", "server.crt", "client.crt")}
    passphrase = (tmp_path / "server.pass").read_text()
    assert _configure(tmp_path, *FAST) == 1
    assert _configure(tmp_path, *FAST, "--force") == 0
    after = {n: _cert(tmp_path, n).serial_number for n in before}
    assert not set(before.values()) & set(after.values())
    assert (tmp_path / "server.pass").read_text() != passphrase
    server = _cert(tmp_path, "server.crt")
    assert pki.is_signed_by(server, _cert(tmp_path, "ca.crt"))


def test_the_go_plugins_certificate_profile(tmp_path: Path) -> None:
    # Defaults: RSA 4096, CN CA/Server/Client, localhost and what it resolves
    # to, 87600h, the server key encrypted the way Fluentd reads it.
    assert _configure(tmp_path) == 0
    ca, server, client = (_cert(tmp_path, f"{n}.crt") for n in ("ca", "server", "client"))
    assert [_cn(c) for c in (ca, server, client)] == ["CA", "Server", "Client"]
    for cert in (ca, server, client):
        assert pki.key_type_of(cert.public_key()) == "rsa4096"
        lifetime = cert.not_valid_after_utc - cert.not_valid_before_utc
        assert lifetime == datetime.timedelta(hours=87600)
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.path_length == 0
    for cert, eku in ((server, ExtendedKeyUsageOID.SERVER_AUTH), (client, "client")):
        usages = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        wanted = ExtendedKeyUsageOID.CLIENT_AUTH if eku == "client" else eku
        assert list(usages) == [wanted]
        dns, ips = _sans(cert)
        assert dns == ["localhost"] and "127.0.0.1" in ips
        assert pki.is_signed_by(cert, ca)
    server_key = (tmp_path / "server.key").read_text()
    assert "Proc-Type: 4,ENCRYPTED" in server_key and "DEK-Info: AES-256-CBC," in server_key
    passphrase = (tmp_path / "server.pass").read_text().strip()
    assert len(passphrase) == 64
    assert f"private_key_passphrase '{passphrase}'" in (tmp_path / "fluent.conf").read_text()
    key = pki.load_private_key(server_key.encode(), passphrase)
    assert pki.key_matches_cert(key, server)
    for name in ("ca.key", "client.key"):
        assert (tmp_path / name).read_text().startswith("-----BEGIN RSA PRIVATE KEY-----")


def test_cn_dns_names_ip_and_port(tmp_path: Path) -> None:
    args = ("--cn", "handler.example.com", "--dns-names", "forwarder.example.com,fluentd")
    args += ("--dns-names", "fluentd.internal", "--ip", "10.0.0.5", "--port", "24224")
    assert _configure(tmp_path, "auth.example.com:3025", *FAST, *args) == 0
    for name in ("server.crt", "client.crt"):
        cert = _cert(tmp_path, name)
        assert _cn(cert) == "handler.example.com"
        # Given addresses are used as they are: the names are not looked up.
        assert _sans(cert) == (
            ["forwarder.example.com", "fluentd", "fluentd.internal"],
            ["10.0.0.5"],
        )
    fluentd = _toml(tmp_path)["forward"]["fluentd"]  # type: ignore[index]
    assert fluentd["url"] == "https://forwarder.example.com:24224/test.log"
    assert fluentd["session-url"] == "https://forwarder.example.com:24224/session"
    assert "port 24224" in (tmp_path / "fluent.conf").read_text()


def test_an_unresolvable_name_writes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _configure(tmp_path, *FAST, "--dns-names", "no-such-host.invalid") == 1
    err = capsys.readouterr().err
    assert "no-such-host.invalid" in err and "--ip" in err
    assert list(tmp_path.iterdir()) == []


def test_the_toml_is_the_roles_template_with_the_go_plugins_values(tmp_path: Path) -> None:
    assert (
        configure.toml_template_text()
        == (ROLE_TEMPLATES / "teleport-event-handler.toml.j2").read_text()
    )
    assert _configure(tmp_path, "teleport.example.com:443", *FAST) == 0
    doc = _toml(tmp_path)
    # Every key and value of the Go plugin's template (absolute paths into OUT).
    assert doc["storage"] == str(tmp_path / "storage")
    assert doc["timeout"] == "10s" and doc["batch"] == 20
    assert doc["forward"] == {
        "fluentd": {
            **doc["forward"]["fluentd"],  # type: ignore[index]
            "ca": str(tmp_path / "ca.crt"),
            "cert": str(tmp_path / "client.crt"),
            "key": str(tmp_path / "client.key"),
            "url": "https://localhost:8888/test.log",
            "session-url": "https://localhost:8888/session",
        }
    }
    teleport = doc["teleport"]
    assert teleport["addr"] == "teleport.example.com:443"  # type: ignore[index]
    assert teleport["identity"] == str(tmp_path / "identity")  # type: ignore[index]
    assert teleport["refresh"]["enabled"] is True  # type: ignore[index]
    assert doc["lock-enabled"] is False
    assert (
        "Written by teleport-event-handler configure"
        in (tmp_path / "teleport-event-handler.toml").read_text()
    )


def test_fluent_conf_is_the_one_template(tmp_path: Path) -> None:
    assert _configure(tmp_path, *FAST, "--port", "9999") == 0
    options = configure.ConfigureOptions(out=str(tmp_path), port=9999)
    passphrase = (tmp_path / "server.pass").read_text().strip()
    expected = render_fluent_conf(configure.fluent_conf_values(options, passphrase))
    assert (tmp_path / "fluent.conf").read_text() == expected


def test_role_yaml_grants_what_the_forwarder_needs(tmp_path: Path) -> None:
    assert _configure(tmp_path, *FAST) == 0
    docs = list(yaml.safe_load_all((tmp_path / "teleport-event-handler-role.yaml").read_text()))
    role, user, impersonator = docs
    assert (role["kind"], role["metadata"]["name"]) == ("role", "teleport-event-handler")
    assert role["spec"]["allow"]["rules"] == [
        {"resources": ["event", "session"], "verbs": ["list", "read"]}
    ]
    assert user == {
        "kind": "user",
        "version": "v2",
        "metadata": {"name": "teleport-event-handler"},
        "spec": {"roles": ["teleport-event-handler"]},
    }
    assert impersonator["metadata"]["name"] == "teleport-event-handler-impersonator"
    assert impersonator["spec"]["allow"]["impersonate"] == {
        "users": ["teleport-event-handler"],
        "roles": ["teleport-event-handler"],
    }


def test_lock_enabled_turns_auto_lock_on_and_grants_locks(tmp_path: Path) -> None:
    assert _configure(tmp_path, *FAST, "--lock-enabled") == 0
    assert _toml(tmp_path)["lock-enabled"] is True
    role = next(yaml.safe_load_all((tmp_path / "teleport-event-handler-role.yaml").read_text()))
    assert {"resources": ["lock"], "verbs": ["create", "update"]} in role["spec"]["allow"]["rules"]


def test_passphrase_from_stdin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO("correct horse battery\n"))
    assert _configure(tmp_path, *FAST, "--passphrase-file", "-") == 0
    assert (tmp_path / "server.pass").read_text().strip() == "correct horse battery"
    assert (
        "private_key_passphrase 'correct horse battery'" in (tmp_path / "fluent.conf").read_text()
    )
    key = (tmp_path / "server.key").read_bytes()
    assert pki.key_matches_cert(
        pki.load_private_key(key, "correct horse battery"), _cert(tmp_path, "server.crt")
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--length", "1024"), "--length 1024"),
        (("--length", "2048", "--key-type", "ecdsa-p256"), "not both"),
        (("--ip", "not-an-ip"), "--ip 'not-an-ip'"),
    ],
)
def test_bad_flags_name_the_flag(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: tuple[str, ...], message: str
) -> None:
    assert _configure(tmp_path, *args) == 1
    assert message in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_out_must_be_a_directory(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert _configure(tmp_path / "missing", *FAST) == 1
    assert "no such directory" in capsys.readouterr().err


def test_bad_ttl_is_a_usage_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert _configure(tmp_path, "--ttl", "ten years") == 2
    assert "--ttl: 'ten years' is not a Go duration" in capsys.readouterr().err


def test_key_length_is_accepted_as_an_alias(tmp_path: Path) -> None:
    assert _configure(tmp_path, "--key-length", "2048") == 0
    assert pki.key_type_of(_cert(tmp_path, "server.crt").public_key()) == "rsa2048"


def test_paths_are_shown_relative_below_the_working_directory(tmp_path: Path) -> None:
    assert configure.display_path(str(tmp_path / "a" / "b"), str(tmp_path)) == os.path.join(
        "a", "b"
    )
    assert configure.display_path("/etc/x", str(tmp_path)) == "/etc/x"


def test_file_stems_from_the_positional_arguments(tmp_path: Path) -> None:
    args = ("localhost:3025", "fluent-ca", "fluentd", "handler", *FAST)
    assert _configure(tmp_path, *args) == 0
    for stem in ("fluent-ca", "fluentd", "handler"):
        assert (tmp_path / f"{stem}.crt").exists() and (tmp_path / f"{stem}.key").exists()
    fluentd = _toml(tmp_path)["forward"]["fluentd"]  # type: ignore[index]
    assert (fluentd["ca"], fluentd["cert"], fluentd["key"]) == (
        str(tmp_path / "fluent-ca.crt"),
        str(tmp_path / "handler.crt"),
        str(tmp_path / "handler.key"),
    )
    conf = (tmp_path / "fluent.conf").read_text()
    assert f"cert_path '{tmp_path}/fluentd.crt'" in conf
    assert f"private_key_path '{tmp_path}/fluentd.key'" in conf
