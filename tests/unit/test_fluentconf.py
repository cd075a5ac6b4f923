"""The one fluent.conf template and its renderer (issue 6, fact 11).

That every rendered variant runs on a real Fluentd is checked in
tests/integration/test_real_fluentd.py; here: the variable contract.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import jinja2
import pytest

from teleport_event_handler import fluentconf
from teleport_event_handler.fluentconf import FluentConfError, render_fluent_conf
from teleport_sandbox.fluentd.conf import build_config

ROOT = Path(__file__).resolve().parents[2]
ROLE_TEMPLATE = ROOT / "roles" / "event_handler" / "templates" / "fluent.conf.j2"
PACKAGE_TEMPLATE = ROOT / "src" / "teleport_event_handler" / "templates" / "fluent.conf.j2"

VALUES: dict[str, object] = {
    "port": 8888,
    "ca_path": "/etc/fluentd/certs/ca.crt",
    "cert_path": "/etc/fluentd/certs/server.crt",
    "private_key_path": "/etc/fluentd/certs/server.key",
    "private_key_passphrase": "secret",
    "output_dir": "/var/log/fluentd/teleport",
}


def test_the_package_template_is_the_roles_template() -> None:
    assert os.path.islink(PACKAGE_TEMPLATE)
    assert PACKAGE_TEMPLATE.resolve() == ROLE_TEMPLATE.resolve()
    assert fluentconf.template_text() == ROLE_TEMPLATE.read_text()


def test_the_documented_keys_are_the_keys_the_renderer_takes() -> None:
    header = ROLE_TEMPLATE.read_text().split("#}", 1)[0]
    documented = re.findall(r"^      ([a-z_]+)\s{2,}", header, re.MULTILINE)
    assert documented == [*fluentconf.REQUIRED_KEYS, *fluentconf.OPTIONAL_KEYS]
    used = set(re.findall(r"fluent_conf\.([a-z_]+)", ROLE_TEMPLATE.read_text().split("#}", 1)[1]))
    assert used == set(documented)


def test_defaults() -> None:
    text = render_fluent_conf(VALUES)
    config = build_config(text)
    assert config.source.port == 8888
    assert config.source.bind == "0.0.0.0"
    assert config.source.parse.keep_time_key
    assert config.source.tls is not None and config.source.tls.client_cert_auth
    assert [m.patterns for m in config.matches] == [("test.log",), ("session.*.log",)]
    assert [m.path for m in config.matches] == [
        "/var/log/fluentd/teleport/audit",
        "/var/log/fluentd/teleport/session",
    ]
    assert [m.flush_interval for m in config.matches] == [1.0, 1.0]
    assert text.count("flush_at_shutdown true") == 2
    assert "path '/var/log/fluentd/teleport/buffer/audit'" in text
    assert text.endswith("</match>\n")
    assert not config.warnings or all("Oj" in w for w in config.warnings), config.warnings


def test_forward_source_only_when_forward_port_is_set() -> None:
    plain = render_fluent_conf(VALUES)
    assert "@type forward" not in plain
    assert render_fluent_conf({**VALUES, "forward_port": ""}) == plain
    head = subprocess.run(
        ["git", "show", "HEAD:roles/event_handler/templates/fluent.conf.j2"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    if head.returncode == 0 and "forward_port" not in head.stdout:
        # Without forward_port, the output is byte for byte what it was before the key.
        environment = jinja2.Environment(
            undefined=jinja2.StrictUndefined, trim_blocks=True, keep_trailing_newline=True
        )
        assert environment.from_string(head.stdout).render(fluent_conf=VALUES) == plain
    text = render_fluent_conf({**VALUES, "forward_port": 24224})
    config = build_config(text)
    assert config.forward is not None and config.forward.port == 24224
    assert config.forward.bind == "0.0.0.0"
    assert config.forward.tls is not None and config.forward.tls.client_cert_auth
    assert config.forward.tls.private_key_passphrase == "secret"
    assert config.source.port == 8888
    assert (
        text.replace(text[text.index("\n<source>\n  @type forward") : text.index("\n<match")], "")
        == plain
    )
    assert not config.warnings or all("Oj" in w for w in config.warnings), config.warnings


def test_memory_buffers_have_no_path() -> None:
    text = render_fluent_conf({**VALUES, "buffer_type": "memory", "flush_interval": "2s"})
    assert "@type memory" in text and "/buffer/" not in text
    assert [m.flush_interval for m in build_config(text).matches] == [2.0, 2.0]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"port": None}, "give port"),
        ({"output_dir": ""}, "give output_dir"),
        ({"port": "http"}, "give a TCP port"),
        ({"port": 70000}, "give a TCP port"),
        ({"colour": "blue"}, "unknown key"),
        ({"private_key_passphrase": "a\nb"}, "cannot span lines"),
        ({"buffer_type": "s3"}, "give file or memory"),
        ({"forward_port": 0}, "forward_port 0: give a TCP port"),
        ({"forward_port": 8888}, "other than port"),
        ({"forward_port": "x"}, "forward_port 'x'"),
    ],
)
def test_bad_values_name_the_key(change: dict[str, object], message: str) -> None:
    values = {**VALUES, **change}
    with pytest.raises(FluentConfError, match=message):
        render_fluent_conf({k: v for k, v in values.items() if v is not None})


def test_ansible_renders_the_same_file(tmp_path: Path) -> None:
    """The role's template task and the Python renderer write identical bytes."""
    ansible = Path(sys.executable).with_name("ansible")
    if not ansible.exists():
        pytest.skip("ansible is not installed in this environment")
    values = {**VALUES, "private_key_passphrase": "it's #{x} \\ y", "buffer_type": "memory"}
    (tmp_path / "vars.json").write_text(json.dumps({"fluent_conf": values}))
    dest = tmp_path / "fluent.conf"
    result = subprocess.run(
        [
            str(ansible),
            "localhost",
            "-c",
            "local",
            "-i",
            "localhost,",
            "-e",
            f"ansible_python_interpreter={sys.executable}",
            "-e",
            f"@{tmp_path / 'vars.json'}",
            "-m",
            "template",
            "-a",
            f"src={ROLE_TEMPLATE} dest={dest}",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert dest.read_text() == render_fluent_conf(values)
