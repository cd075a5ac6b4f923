"""check_config_file: the config plus every file it names, all problems reported at once."""

from __future__ import annotations

import datetime
import os
from pathlib import Path

import pytest

from teleport_event_handler import pki
from teleport_event_handler.config import ConfigError, Problem, check_config_file


def write_identity(path: Path, *, expired: bool = False, with_ca: bool = True) -> None:
    """A Teleport-format identity file signed by a throwaway user CA."""
    ca_key = pki.generate_private_key("ecdsa-p256")
    ca = pki.issue_ca(ca_key, "example.com user CA")
    key = pki.generate_private_key("ecdsa-p256")
    start = pki.utcnow() - datetime.timedelta(days=2) if expired else None
    cert = pki.issue_leaf(
        ca,
        ca_key,
        key.public_key(),
        "bot-event-handler",
        "client",
        ttl=datetime.timedelta(days=1),
        not_before=start,
    )
    parts = pki.IdentityParts(
        private_key_pem=pki.private_key_pem(key),
        ssh_cert=b"",
        tls_cert_pem=pki.cert_pem(cert),
        ssh_ca_lines=(),
        tls_ca_pems=(pki.cert_pem(ca),) if with_ca else (),
    )
    pki.write_file_atomic(str(path), pki.build_identity_file(parts))


def write_fluentd_client(directory: Path) -> dict[str, Path]:
    ca_key = pki.generate_private_key("ecdsa-p256")
    ca = pki.issue_ca(ca_key, "fluentd CA")
    key = pki.generate_private_key("ecdsa-p256")
    cert = pki.issue_leaf(ca, ca_key, key.public_key(), "client", "client")
    paths = {name: directory / f"{name}.pem" for name in ("ca", "cert", "key")}
    paths["ca"].write_bytes(pki.cert_pem(ca))
    paths["cert"].write_bytes(pki.cert_pem(cert))
    pki.write_file_atomic(str(paths["key"]), pki.private_key_pem(key))
    return paths


def write_config(tmp_path: Path, fluentd: dict[str, Path], identity: Path, extra: str = "") -> Path:
    file = tmp_path / "teleport-event-handler.toml"
    file.write_text(
        f'storage = "{tmp_path / "storage"}"\ntimeout = "10s"\nbatch = 20\n{extra}\n'
        "[forward.fluentd]\n"
        f'ca = "{fluentd["ca"]}"\ncert = "{fluentd["cert"]}"\nkey = "{fluentd["key"]}"\n'
        'url = "https://localhost:8888/test.log"\nsession-url = "https://localhost:8888/session"\n'
        f'[teleport]\naddr = "localhost:3025"\nidentity = "{identity}"\nrefresh.enabled = true\n'
    )
    return file


@pytest.fixture
def good(tmp_path: Path) -> tuple[Path, dict[str, Path], Path]:
    fluentd = write_fluentd_client(tmp_path)
    identity = tmp_path / "identity"
    write_identity(identity)
    return write_config(tmp_path, fluentd, identity), fluentd, identity


def check_problems(path: Path) -> tuple[Problem, ...]:
    with pytest.raises(ConfigError) as info:
        check_config_file(str(path), {})
    return info.value.problems


def test_good_config_passes(good: tuple[Path, dict[str, Path], Path]) -> None:
    file, fluentd, identity = good
    config = check_config_file(str(file), {})
    assert config.teleport_identity == str(identity)
    assert config.fluentd_cert == str(fluentd["cert"])
    assert config.warnings == ()


def test_environment_is_read(good: tuple[Path, dict[str, Path], Path]) -> None:
    file, _fluentd, _identity = good
    assert check_config_file(str(file), {"FDFWD_CONCURRENCY": "7"}).concurrency == 7


def test_expired_identity(tmp_path: Path, good: tuple[Path, dict[str, Path], Path]) -> None:
    file, _fluentd, identity = good
    write_identity(identity, expired=True)
    (problem,) = check_problems(file)
    assert problem.key == "teleport.identity"
    assert problem.file == str(file)
    assert problem.problem.startswith(f"the identity in {identity} expired at ")
    assert "tctl auth sign" in problem.fix and "tbot" in problem.fix


def test_every_problem_is_reported(
    tmp_path: Path, good: tuple[Path, dict[str, Path], Path]
) -> None:
    file, fluentd, identity = good
    identity.write_text("not an identity\n")
    fluentd["ca"].unlink()
    (tmp_path / "other").mkdir()
    other = write_fluentd_client(tmp_path / "other")
    fluentd["key"].write_bytes(other["key"].read_bytes())
    (tmp_path / "storage").write_text("a file, not a directory")
    text = file.read_text().replace('url = "https://localhost:8888/test.log"\n', "")
    file.write_text(text)
    found = {p.key: p for p in check_problems(file)}
    assert set(found) == {
        "forward.fluentd.url",
        "teleport.identity",
        "forward.fluentd.ca",
        "forward.fluentd.key",
        "storage",
    }
    assert found["forward.fluentd.url"].problem == "required but not set"
    assert "not a Teleport identity file" in found["teleport.identity"].problem
    assert found["forward.fluentd.ca"].problem == f"{fluentd['ca']} does not exist"
    assert found["forward.fluentd.key"].problem.startswith("does not match the certificate")
    assert "is not a directory" in found["storage"].problem
    assert all(p.file == str(file) for p in found.values())


def test_relative_missing_path_names_the_working_directory(
    tmp_path: Path, good: tuple[Path, dict[str, Path], Path]
) -> None:
    file, _fluentd, identity = good
    file.write_text(file.read_text().replace(str(identity), "identity-nope"))
    (problem,) = check_problems(file)
    assert problem.problem == f"identity-nope does not exist (relative to {os.getcwd()})"


def test_encrypted_fluentd_key(good: tuple[Path, dict[str, Path], Path]) -> None:
    file, fluentd, _identity = good
    key = pki.load_private_key(fluentd["key"].read_bytes())
    fluentd["key"].write_bytes(pki.private_key_pem(key, passphrase="secret"))
    (problem,) = check_problems(file)
    assert problem.key == "forward.fluentd.key"
    assert problem.problem.endswith("is encrypted")
    assert "no passphrase setting" in problem.fix


def test_expired_fluentd_certificate(
    tmp_path: Path, good: tuple[Path, dict[str, Path], Path]
) -> None:
    file, fluentd, _identity = good
    ca_key = pki.generate_private_key("ecdsa-p256")
    ca = pki.issue_ca(ca_key, "old CA", not_before=pki.utcnow() - datetime.timedelta(days=30))
    key = pki.load_private_key(fluentd["key"].read_bytes())
    old = pki.issue_leaf(
        ca,
        ca_key,
        key.public_key(),
        "client",
        "client",
        ttl=datetime.timedelta(days=1),
        not_before=pki.utcnow() - datetime.timedelta(days=3),
    )
    fluentd["cert"].write_bytes(pki.cert_pem(old))
    (problem,) = check_problems(file)
    assert problem.key == "forward.fluentd.cert"
    assert "expired at" in problem.problem


def test_identity_without_ca_and_world_readable(
    good: tuple[Path, dict[str, Path], Path],
) -> None:
    file, _fluentd, identity = good
    write_identity(identity, with_ca=False)
    (problem,) = check_problems(file)
    assert "holds no TLS CA certificates" in problem.problem
    write_identity(identity)
    identity.chmod(0o644)
    config = check_config_file(str(file), {})
    assert any("chmod 600" in w and str(identity) in w for w in config.warnings)


def test_env_sourced_file_is_named_by_its_variable(
    tmp_path: Path, good: tuple[Path, dict[str, Path], Path]
) -> None:
    file, _fluentd, identity = good
    file.write_text(file.read_text().replace(f'identity = "{identity}"\n', ""))
    env = {"FDFWD_TELEPORT_IDENTITY": str(tmp_path / "missing")}
    with pytest.raises(ConfigError) as info:
        check_config_file(str(file), env)
    (problem,) = info.value.problems
    assert problem.key == "FDFWD_TELEPORT_IDENTITY (environment)"
    assert problem.file is None


def test_unreadable_config_file(tmp_path: Path) -> None:
    (problem,) = check_problems(tmp_path / "absent.toml")
    assert problem.key == "config file" and "does not exist" in problem.problem


def test_batch_above_teleports_page_limit_is_refused(
    good: tuple[Path, dict[str, Path], Path],
) -> None:
    """Teleport answers a GetUnstructuredEvents limit above 10000 with INVALID_ARGUMENT
    "limit N exceeds 10000" (lib/defaults EventsMaxIterationLimit; lib/events/pgevents
    Log.searchEvents, lib/events/filelog FileLog.SearchEvents): check-config refuses it
    first, with the limit named."""
    file, _, _ = good
    file.write_text(file.read_text().replace("batch = 20\n", "batch = 20000\n"))
    problems = check_problems(file)
    assert len(problems) == 1
    assert "batch" in str(problems[0]) and "from 1 to 10000" in str(problems[0])
    file.write_text(file.read_text().replace("batch = 20000\n", "batch = 10000\n"))
    assert check_config_file(str(file), {}).batch == 10000
