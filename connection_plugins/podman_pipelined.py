# The sandbox's and Molecule's connection to their Podman containers:
# containers.podman.podman with pipelining. A module then costs one
# `podman exec` (the module on stdin) instead of four or five (a temporary
# directory, the module copied in, made executable, run, removed), and the
# container's file system is mounted (`podman mount`, which containers.podman
# runs for every task) only when a file is transferred.
#
# containers.podman turns pipelining off (has_pipelining = False) because
# `podman exec` without `-i` drops stdin and Podman before 1.8 truncated it
# with `-i` (containers/ansible-podman-collections#275); this connection
# passes `-i`. The version it extends is pinned by molecule/requirements.txt.
# Test infrastructure only: kept out of the collection (galaxy.yml).
"""Connection plugin: containers.podman.podman with pipelining."""

from __future__ import annotations

import shlex
from typing import Any

from ansible.module_utils.common.text.converters import to_native
from ansible.plugins.connection import ensure_connect
from ansible_collections.containers.podman.plugins.connection.podman import (
    Connection as PodmanConnection,
)

DOCUMENTATION = """
name: podman_pipelined
short_description: Run tasks in a local Podman container, with pipelining
description:
  - containers.podman.podman, whose C(podman exec) is given C(-i) so that Ansible can pipe the
    module to the interpreter (pipelining on by default).
options:
  remote_addr:
    description: The name or ID of the container.
    default: inventory_hostname
    vars:
      - name: ansible_host
      - name: inventory_hostname
      - name: ansible_podman_host
  remote_user:
    description: The user that runs commands in the container (C(podman exec --user)).
    vars:
      - name: ansible_user
  podman_extra_args:
    description: Arguments given to every podman command.
    default: ''
    vars:
      - name: ansible_podman_extra_args
  podman_executable:
    description: The podman command.
    default: podman
    vars:
      - name: ansible_podman_executable
  pipelining:
    description: Pipe modules to the interpreter instead of copying them into the container.
    type: boolean
    default: true
    env:
      - name: ANSIBLE_PIPELINING
    vars:
      - name: ansible_pipelining
"""


class Connection(PodmanConnection):  # type: ignore[misc]
    transport = "podman_pipelined"
    has_pipelining = True
    _mounted = False

    def _connect(self) -> Connection:
        self._connected = True
        return self

    def _mount(self) -> None:
        # containers.podman's connect: `podman mount`, then files are copied
        # through the mount point (or with `podman cp` when that fails).
        if not self._mounted:
            super()._connect()
            self._mounted = True

    def put_file(self, in_path: str, out_path: str) -> None:
        self._mount()
        super().put_file(in_path, out_path)

    def fetch_file(self, in_path: str, out_path: str) -> None:
        self._mount()
        super().fetch_file(in_path, out_path)

    @ensure_connect  # type: ignore[misc]
    def exec_command(
        self, cmd: str, in_data: bytes | None = None, sudoable: bool = False
    ) -> tuple[int, bytes, bytes]:
        # ConnectionBase's bookkeeping, then podman exec with stdin attached.
        super(PodmanConnection, self).exec_command(cmd, in_data=in_data, sudoable=sudoable)
        args: list[Any] = ["exec", "-i"]
        if self.user:
            args += ["--user", self.user]
        command = shlex.split(to_native(cmd, errors="surrogate_or_strict"))
        rc, stdout, stderr = self._podman(args, command, in_data)
        return rc, stdout, stderr
