"""Run the collection's modules for real: ansible-playbook against localhost.

Shared by ``test_modules_*.py`` (this file holds no tests). The collection is
the checkout itself, linked into a temporary ``ansible_collections`` tree;
the modules run under this interpreter, which has ``cryptography``, and
drive the sandbox's ``sandbox-tctl`` as their tctl.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
FQCN = "teleport.event_handler."


def _collections(tmp_path: Path) -> Path:
    root = tmp_path / "collections"
    namespace = root / "ansible_collections" / "teleport"
    if not namespace.exists():
        namespace.mkdir(parents=True)
        (namespace / "event_handler").symlink_to(REPO)
    return root


def run_playbook(
    tmp_path: Path,
    tasks: list[dict[str, Any]],
    env: dict[str, str] | None = None,
    timeout: float = 180,
    module_defaults: dict[str, Any] | None = None,
) -> tuple[list[dict[str, Any]], str]:
    """Run ``tasks`` in one play on localhost; return each task's result and the output.

    Every task is registered; a failing task stops the play unless it sets
    ``ignore_errors``. The results are written by a last task as JSON.
    """
    results_file = tmp_path / "results.json"
    if results_file.exists():
        results_file.unlink()
    names = [f"result_{index}" for index in range(len(tasks))]
    play_tasks = [dict(task, register=name) for task, name in zip(tasks, names, strict=True)]
    collected = "{{ [" + ", ".join(f"{name} | default({{}})" for name in names) + "] | to_json }}"
    play_tasks.append(
        {
            "name": "Keep the results for the test",
            "ansible.builtin.copy": {"content": collected, "dest": str(results_file)},
        }
    )
    playbook = tmp_path / "playbook.yml"
    playbook.write_text(
        yaml.safe_dump(
            [
                {
                    "hosts": "localhost",
                    "connection": "local",
                    "gather_facts": False,
                    "vars": {"ansible_python_interpreter": sys.executable},
                    "module_defaults": module_defaults or {},
                    "tasks": play_tasks,
                }
            ],
            sort_keys=False,
        )
    )
    environment = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("ANSIBLE_", "TELEPORT_"))
    }
    environment.update(
        PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        ANSIBLE_COLLECTIONS_PATH=str(_collections(tmp_path)),
        ANSIBLE_LOCAL_TEMP=str(tmp_path / "ansible-tmp"),
        ANSIBLE_NOCOLOR="1",
        ANSIBLE_RETRY_FILES_ENABLED="0",
        ANSIBLE_LOCALHOST_WARNING="0",
        ANSIBLE_INVENTORY_UNPARSED_WARNING="0",
    )
    environment.update(env or {})
    proc = subprocess.run(
        [str(BIN / "ansible-playbook"), "-i", "localhost,", "--diff", str(playbook)],
        cwd=tmp_path,
        env=environment,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    output = proc.stdout + proc.stderr
    assert results_file.exists(), f"the play did not finish (rc {proc.returncode}):\n{output}"
    return json.loads(results_file.read_text()), output


def four_times(module: str, args: dict[str, Any], **task: Any) -> list[dict[str, Any]]:
    """The module in check mode, applied, in check mode again, applied again."""
    return [
        {"name": f"{module} {label}", FQCN + module: args, "check_mode": check, **task}
        for label, check in (("check", True), ("apply", False), ("check", True), ("apply", False))
    ]


def changes(results: list[dict[str, Any]]) -> list[bool]:
    return [bool(result.get("changed")) for result in results]


def mode_of(path: str | Path) -> int:
    return os.stat(path).st_mode & 0o777
