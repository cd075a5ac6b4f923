"""Files the handler cannot read stop ``start`` with exit 2 and the fix, never a traceback.

The handler runs as ``nobody`` (setpriv) against files owned by root with mode
0600, as a package-installed service meets files written by the wrong user.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from teleport_sandbox.stack import Stack


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A directory ``nobody`` can enter (pytest's own tmp_path is private to root)."""
    path = Path(tempfile.mkdtemp(prefix="eh-unreadable-", dir="/tmp"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path)


@pytest.mark.parametrize("unreadable", ["key", "cert", "ca", "identity"])
def test_an_unreadable_file_is_a_configuration_error(
    unreadable: str, small_template: str, tmp_path: Path, shared_dir: Path
) -> None:
    stack = Stack.copy_of(small_template, str(tmp_path / "stack"))
    assert stack.material is not None
    files = {
        "key": stack.material.client_key,
        "cert": stack.material.client_cert,
        "ca": stack.material.ca,
        "identity": stack.identity,
    }
    copies = {}
    for name, source in files.items():
        target = shared_dir / name
        shutil.copyfile(source, target)
        target.chmod(0o600 if name == unreadable else 0o644)
        copies[name] = str(target)
    storage = shared_dir / "storage"
    storage.mkdir(mode=0o777)
    toml = stack.handler_toml(
        str(shared_dir / "handler.toml"),
        storage=str(storage),
        fluentd__key=copies["key"],
        fluentd__cert=copies["cert"],
        fluentd__ca=copies["ca"],
        teleport__identity=copies["identity"],
        teleport__addr="127.0.0.1:1",
    )
    os.chmod(toml, 0o644)
    result = subprocess.run(
        [
            "setpriv",
            "--reuid=nobody",
            "--regid=nogroup",
            "--clear-groups",
            *stack.handler_command(toml),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert f"{copies[unreadable]} is not readable by uid 65534" in result.stderr, result.stderr
    assert "grant read access to the user that runs the forwarder" in result.stderr
