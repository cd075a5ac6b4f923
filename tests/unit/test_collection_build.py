"""The collection tarball Ansible users install: the Ansible side only, with its license,
its own README, and ignore files for every ansible-core version it claims (issue 7)."""

from __future__ import annotations

import json
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def tarball(tmp_path_factory: pytest.TempPathFactory) -> tarfile.TarFile:
    out = tmp_path_factory.mktemp("collection")
    galaxy = shutil.which("ansible-galaxy")
    assert galaxy, "ansible-galaxy comes with ansible-core (requirements-dev.txt)"
    subprocess.run(
        [galaxy, "collection", "build", "--output-path", str(out), str(ROOT)],
        check=True,
        capture_output=True,
    )
    (path,) = out.glob("teleport-event_handler-*.tar.gz")
    return tarfile.open(path)


def test_the_tarball_holds_the_ansible_side_and_its_license(tarball: tarfile.TarFile) -> None:
    names = set(tarball.getnames())
    for wanted in (
        "LICENSE",
        "MANIFEST.json",
        "docs/collection/README.md",
        "docs/role.md",
        "docs/modules.md",
        "meta/runtime.yml",
        "meta/execution-environment.yml",
        "requirements.txt",
        "bindep.txt",
        "plugins/modules/fluentd_mtls.py",
        "roles/event_handler/tasks/main.yml",
        "playbooks/site.yml",
    ):
        assert wanted in names, wanted
    for unwanted in ("src", "sandbox", "bench", "molecule", "scripts", "inventories", ".venv"):
        assert not [n for n in names if n == unwanted or n.startswith(unwanted + "/")], unwanted
    forwarder_docs = {"docs/configuration.md", "docs/architecture.md", "docs/performance.md"}
    assert not names & forwarder_docs
    assert not [n for n in names if n.startswith("changelogs/fragments")]
    assert "README.md" not in names  # the repository's, about the forwarder too


def test_the_manifest_names_a_real_readme_and_no_made_up_urls(tarball: tarfile.TarFile) -> None:
    member = tarball.extractfile("MANIFEST.json")
    assert member is not None
    info = json.load(member)["collection_info"]
    assert info["readme"] == "docs/collection/README.md"
    assert info["license"] == ["Apache-2.0"]
    for key in ("repository", "documentation", "homepage", "issues"):
        assert not info.get(key) or "example" not in info[key], (key, info[key])
    license_member = tarball.extractfile("LICENSE")
    assert license_member is not None
    assert b"Apache License" in license_member.read()


def test_every_claimed_ansible_version_has_a_sanity_ignore_file() -> None:
    runtime = yaml.safe_load((ROOT / "meta" / "runtime.yml").read_text())
    assert runtime["requires_ansible"] == ">=2.17.0"
    # requirements-dev.txt installs ansible-core>=2.17,<2.20: 2.17, 2.18 and 2.19.
    assert "ansible-core>=2.17,<2.20" in (ROOT / "requirements-dev.txt").read_text()
    for version in ("2.17", "2.18", "2.19"):
        assert (ROOT / "tests" / "sanity" / f"ignore-{version}.txt").is_file(), version
