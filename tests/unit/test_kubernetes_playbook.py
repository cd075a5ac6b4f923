"""playbooks/kubernetes.yml, run by ansible-playbook with the checkout as the collection:
the Helm chart's values and the Secrets it reads, from a PKI and an identity file."""

from __future__ import annotations

import base64
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]


def _run(tmp_path: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    collections = tmp_path / "collections" / "ansible_collections" / "teleport"
    collections.mkdir(parents=True, exist_ok=True)
    link = collections / "event_handler"
    if not link.exists():
        link.symlink_to(ROOT)
    ansible = shutil.which("ansible-playbook")
    assert ansible, "ansible-playbook comes with ansible-core (requirements-dev.txt)"
    env = {
        **os.environ,
        "ANSIBLE_COLLECTIONS_PATH": str(tmp_path / "collections"),
        "ANSIBLE_PYTHON_INTERPRETER": sys.executable,
    }
    return subprocess.run(
        [ansible, "-i", "localhost,", "teleport.event_handler.kubernetes", *extra],
        capture_output=True,
        text=True,
        timeout=180,
        env=env,
    )


def _pki(tmp_path: Path) -> Path:
    pki = tmp_path / "pki"
    pki.mkdir()
    for name in ("ca-bundle.crt", "client.crt", "client.key"):
        (pki / name).write_text(f"-----BEGIN {name}-----\n")
    return pki


def test_values_and_secrets_for_the_chart(tmp_path: Path) -> None:
    pki = _pki(tmp_path)
    identity = tmp_path / "identity"
    identity.write_text("IDENTITY FILE\n")
    out = tmp_path / "out"
    result = _run(
        tmp_path,
        "-e", f"event_handler_k8s_dir={out}",
        "-e", f"event_handler_pki_dir={pki}",
        "-e", f"event_handler_k8s_identity_file={identity}",
        "-e", "event_handler_teleport_addr=teleport.example.com:443",
        "-e", "event_handler_fluentd_host=fluentd.example.com",
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert "BEGIN client.key" not in result.stdout + result.stderr
    values = yaml.safe_load((out / "values.yaml").read_text())
    assert values["teleport"] == {
        "address": "teleport.example.com:443",
        "identitySecretName": "teleport-event-handler-identity",
        "identitySecretPath": "auth_id",
    }
    assert values["fluentd"]["url"] == "https://fluentd.example.com:8888/test.log"
    assert values["fluentd"]["certificate"] == {
        "secretName": "teleport-event-handler-client-tls",
        "caPath": "ca.crt",
        "certPath": "client.crt",
        "keyPath": "client.key",
    }
    assert values["eventHandler"]["batch"] == 20 and values["tbot"] == {"enabled": False}
    secrets = list(yaml.safe_load_all((out / "secrets.yaml").read_text()))
    assert [s["metadata"]["name"] for s in secrets] == [
        "teleport-event-handler-client-tls",
        "teleport-event-handler-identity",
    ]
    tls, ident = (s["data"] for s in secrets)
    assert base64.b64decode(tls["client.key"]) == b"-----BEGIN client.key-----\n"
    assert base64.b64decode(tls["ca.crt"]) == b"-----BEGIN ca-bundle.crt-----\n"
    assert base64.b64decode(ident["auth_id"]) == b"IDENTITY FILE\n"
    assert stat.S_IMODE((out / "secrets.yaml").stat().st_mode) == 0o600


def test_without_an_identity_the_playbook_names_the_fix(tmp_path: Path) -> None:
    result = _run(
        tmp_path,
        "-e", f"event_handler_k8s_dir={tmp_path / 'out'}",
        "-e", f"event_handler_pki_dir={_pki(tmp_path)}",
    )  # fmt: skip
    assert result.returncode != 0
    assert "event_handler_k8s_identity_file" in result.stdout


def test_a_tbot_of_your_own_writes_the_identity_secret_the_chart_reads(tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = _run(
        tmp_path,
        "-e", f"event_handler_k8s_dir={out}",
        "-e", f"event_handler_pki_dir={_pki(tmp_path)}",
        "-e", "event_handler_identity_source=tbot",
        "-e", "event_handler_k8s_tbot_in_chart=false",
        "-e", "event_handler_tbot_proxy_server=teleport.example.com:443",
        "-e", "event_handler_tbot_join_method=kubernetes",
        "-e", "event_handler_tbot_token=event-handler-bot",
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    values = yaml.safe_load((out / "values.yaml").read_text())
    assert values["tbot"] == {"enabled": False}
    assert values["teleport"]["identitySecretName"] == "teleport-event-handler-identity"
    assert values["teleport"]["identitySecretPath"] == "identity"
    tbot = yaml.safe_load((out / "tbot.yaml").read_text())
    assert tbot["version"] == "v2" and tbot["proxy_server"] == "teleport.example.com:443"
    assert tbot["onboarding"] == {"join_method": "kubernetes", "token": "event-handler-bot"}
    assert tbot["storage"]["type"] == "kubernetes_secret"
    assert tbot["outputs"] == [
        {
            "type": "identity",
            "destination": {"type": "kubernetes_secret", "name": "teleport-event-handler-identity"},
        }
    ]
    # The identity Secret is tbot's to write: secrets.yaml holds the client TLS only.
    secrets = list(yaml.safe_load_all((out / "secrets.yaml").read_text()))
    assert [s["metadata"]["name"] for s in secrets] == ["teleport-event-handler-client-tls"]
