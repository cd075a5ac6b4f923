"""The forwarder's wheel holds the forwarder alone: no test peer rides along
to the production hosts the role installs it on (issue 6)."""

from __future__ import annotations

import email.parser
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> zipfile.ZipFile:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(out), str(ROOT)],
        check=True,
    )
    (path,) = out.glob("teleport_event_handler-*.whl")
    return zipfile.ZipFile(path)


def test_wheel_contains_no_sandbox_module(wheel: zipfile.ZipFile) -> None:
    names = wheel.namelist()
    packages = {name.split("/")[0] for name in names}
    assert "teleport_event_handler" in packages
    assert not [name for name in names if "sandbox" in name.lower()], names
    assert not [p for p in packages if not p.startswith("teleport_event_handler")], packages


def test_wheel_has_no_sandbox_console_scripts_or_dependency(wheel: zipfile.ZipFile) -> None:
    (entry_points,) = [n for n in wheel.namelist() if n.endswith(".dist-info/entry_points.txt")]
    scripts = wheel.read(entry_points).decode()
    assert "teleport-event-handler =" in scripts
    assert "sandbox" not in scripts
    (metadata,) = [n for n in wheel.namelist() if n.endswith(".dist-info/METADATA")]
    message = email.parser.Parser().parsestr(wheel.read(metadata).decode())
    requires = message.get_all("Requires-Dist")
    assert requires and not [r for r in requires if "sandbox" in r.lower()], requires


def test_wheel_carries_the_shared_pki_code_as_a_real_file(wheel: zipfile.ZipFile) -> None:
    # pki.py is a symlink to the collection's module_utils in the tree; the
    # wheel must hold its content, not a dangling link.
    assert b"def issue_ca" in wheel.read("teleport_event_handler/pki.py")


def test_wheel_carries_the_one_fluent_conf_template_as_a_real_file(wheel: zipfile.ZipFile) -> None:
    # templates/fluent.conf.j2 links to the role's template in the tree; the
    # wheel must hold the same text, which `configure` renders.
    role_template = ROOT / "roles" / "event_handler" / "templates" / "fluent.conf.j2"
    packed = wheel.read("teleport_event_handler/templates/fluent.conf.j2")
    assert packed == role_template.read_bytes()
    assert b"<transport tls>" in packed


@pytest.mark.parametrize(
    ("packed", "source"),
    [
        ("teleport_event_handler/mtls.py", "plugins/module_utils/_mtls.py"),
        (
            "teleport_event_handler/templates/teleport-event-handler.toml.j2",
            "roles/event_handler/templates/teleport-event-handler.toml.j2",
        ),
    ],
)
def test_wheel_carries_the_collections_shared_files_as_real_files(
    wheel: zipfile.ZipFile, packed: str, source: str
) -> None:
    # configure uses the collection's Fluentd bundle code and the role's TOML
    # template through links in the tree: the wheel holds their text.
    assert wheel.read(packed) == (ROOT / source).read_bytes()
