"""Machine ID in the role: the tbot configuration, its unit and the handler's TOML, rendered
by Ansible's own template module from the role's defaults (tbot cannot run here)."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
ROLE = ROOT / "roles" / "event_handler"


def _render(tmp_path: Path, template: str, extra: dict[str, object]) -> str:
    out = tmp_path / template.removesuffix(".j2")
    playbook = tmp_path / "render.yml"
    overrides = tmp_path / "overrides.yml"  # a later vars file wins over the defaults
    overrides.write_text(yaml.safe_dump(extra))
    play = {
        "hosts": "localhost",
        "connection": "local",
        "gather_facts": False,
        "vars_files": [
            str(ROLE / "defaults" / "main.yml"),
            str(ROLE / "vars" / "main.yml"),
            str(overrides),
        ],
        "vars": {"ansible_python_interpreter": sys.executable},
        "tasks": [
            {
                "name": "Render",
                "ansible.builtin.template": {
                    "src": str(ROLE / "templates" / template),
                    "dest": str(out),
                    "mode": "0600",
                },
            }
        ],
    }
    playbook.write_text(yaml.safe_dump([play]))
    ansible = shutil.which("ansible-playbook")
    assert ansible, "ansible-playbook comes with ansible-core (requirements-dev.txt)"
    result = subprocess.run(
        [ansible, "-i", "localhost,", str(playbook)], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return out.read_text()


TBOT = {
    "event_handler_identity_source": "tbot",
    "event_handler_teleport_addr": "teleport.example.com:443",
    "event_handler_tbot_token": "s3cr3t-join-token",
    "event_handler_fluentd_host": "fluentd.example.com",
}


def test_the_tbot_configuration_has_an_identity_output(tmp_path: Path) -> None:
    config = yaml.safe_load(_render(tmp_path, "tbot.yaml.j2", TBOT))
    assert config["version"] == "v2"
    assert config["proxy_server"] == "teleport.example.com:443"
    assert "auth_server" not in config
    assert config["onboarding"] == {"join_method": "token", "token": "s3cr3t-join-token"}
    assert config["storage"] == {
        "type": "directory",
        "path": "/var/lib/teleport-event-handler-tbot",
    }
    (output,) = config["outputs"]
    assert output == {
        "type": "identity",
        "destination": {
            "type": "directory",
            "path": "/var/lib/teleport-event-handler-tbot/identity-out",
        },
    }


def test_the_handler_reads_tbots_identity_with_refresh_on(tmp_path: Path) -> None:
    text = _render(tmp_path, "teleport-event-handler.toml.j2", TBOT)
    toml = tomllib.loads(text)
    assert (
        toml["teleport"]["identity"] == "/var/lib/teleport-event-handler-tbot/identity-out/identity"
    )
    assert toml["teleport"]["refresh"]["enabled"] is True


def test_the_tbot_unit_runs_as_the_handler_user_before_it(tmp_path: Path) -> None:
    unit = _render(tmp_path, "tbot.service.j2", TBOT)
    assert "User=teleport-event-handler" in unit
    assert "ExecStart=/usr/local/bin/tbot start -c /etc/teleport-event-handler/tbot.yaml" in unit
    assert "Before=teleport-event-handler.service" in unit
    assert (
        "ReadWritePaths=/var/lib/teleport-event-handler-tbot "
        "/var/lib/teleport-event-handler-tbot/identity-out" in unit
    )
