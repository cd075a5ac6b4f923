# Copyright: the teleport-event-handler authors
# Apache License 2.0 (see LICENSE)
"""The connection options of every module that drives tctl."""

from __future__ import annotations


class ModuleDocFragment:
    DOCUMENTATION = r"""
options:
  tctl_path:
    description:
      - The C(tctl) binary to run, a name looked up on E(PATH) or a full path.
    type: str
    default: tctl
  auth_server:
    description:
      - Address of the Teleport Auth Service or Proxy Service, passed as C(--auth-server).
      - Needed with O(identity_file) unless the identity file names its cluster.
    type: str
  identity_file:
    description:
      - An identity file for C(tctl), passed as C(--identity). Its user needs the rights the
        task uses (for example the preset C(editor) role).
      - Without it (and without O(tctl_config)) C(tctl) uses the C(tsh login) profile of the
        user Ansible runs as.
    type: path
  tctl_config:
    description:
      - The Teleport configuration file, passed as C(--config). Set it when the task runs on
        the Auth Service host, where C(tctl) acts as the cluster's built-in admin.
    type: path
  timeout:
    description:
      - Seconds each C(tctl) call may take before it is stopped and the task fails with what to
        fix. A task never hangs on a C(tctl) that waits for something no one will do under
        Ansible.
      - The usual cause is MFA for admin actions. On a cluster that requires it, C(tctl) run
        from a person's C(tsh login) waits for a security key touch on every change. Use an
        O(identity_file) that Teleport exempts (one signed with C(tctl auth sign) on the Auth
        Service host, or a Machine ID bot's), or run the task on the Auth Service host with
        O(tctl_config).
    type: int
    default: 60
notes:
  - Every C(tctl) call runs with E(LC_ALL=C); resource documents are passed on standard input,
    never on the command line.
  - Failures say what to fix, for example "not logged in", "access denied" or an unknown kind.
  - Each C(tctl) call runs in its own process group, which is killed when O(timeout) passes.
"""
