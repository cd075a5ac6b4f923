"""docs/role.md's variable table is what roles/event_handler/meta/argument_specs.yml says."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]


def test_role_docs_are_current() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "role-docs"), "--check"],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr


def test_every_variable_has_a_row() -> None:
    specs = yaml.safe_load((ROOT / "roles/event_handler/meta/argument_specs.yml").read_text())
    doc = (ROOT / "docs" / "role.md").read_text()
    missing = [
        name for name in specs["argument_specs"]["main"]["options"] if f"| `{name}` |" not in doc
    ]
    assert missing == []
