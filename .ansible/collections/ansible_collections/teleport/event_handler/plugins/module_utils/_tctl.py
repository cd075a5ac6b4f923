# Copyright: the teleport-event-handler authors
# Apache License 2.0 (see LICENSE)
"""The one seam between the modules and Teleport's ``tctl``.

Every tctl call of the collection goes through :class:`TctlRunner`: it puts
the connection flags (``--config``, ``--auth-server``, ``--identity``) in
front of the sub-command, runs it with ``LC_ALL=C`` so that error text is
stable, and turns a failure into a :class:`TctlError` whose message says what
to fix. The runner only knows a ``run(argv, stdin) -> (rc, stdout, stderr)``
callable, so the unit tests replay recorded tctl calls through the very same
code the modules use.

Resource documents travel as JSON on stdin, never on the command line, so a
connector read with ``--with-secrets`` never shows up in a process listing,
a log or a temporary file.

Every call has a deadline (``timeout``): on a cluster that requires MFA for
admin actions, tctl run from a person's ``tsh`` profile waits for a security
key that nobody will touch under Ansible (Teleport's
``lib/authz/permissions.go`` ``isAdminActionAuthorizationRequired`` exempts
only built-in roles, bots and identities the Auth Service's admin
impersonates), so a call past its deadline is killed and explained.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

__all__ = [
    "DEFAULT_TIMEOUT",
    "STDIN_PATH",
    "TCTL_ARGUMENT_SPEC",
    "RunFunc",
    "TctlError",
    "TctlRunner",
    "TctlTimeout",
    "plain_text",
    "run_with_deadline",
    "runner_from_module",
]

# tctl opens the file it is given; naming the pipe keeps documents off the disk.
STDIN_PATH = "/dev/stdin"

RunFunc = Callable[[List[str], Optional[str]], Tuple[int, str, str]]

# Seconds one tctl call may take. A healthy call takes well under one; the
# deadline is for tctl waiting on something no one will do under Ansible.
DEFAULT_TIMEOUT = 60

# The connection options every tctl module takes (documented once, in the
# doc fragment teleport.event_handler.tctl).
TCTL_ARGUMENT_SPEC: Dict[str, Dict[str, Any]] = {
    "tctl_path": {"type": "str", "default": "tctl"},
    "auth_server": {"type": "str"},
    "identity_file": {"type": "path"},
    "tctl_config": {"type": "path"},
    "timeout": {"type": "int", "default": DEFAULT_TIMEOUT},
}

_LOGIN_HINT = (
    "tctl is not logged in to a Teleport cluster: run 'tsh login' as a user with admin rights, "
    "or set identity_file (an identity signed for such a user) with auth_server, "
    "or set tctl_config to teleport.yaml when running on the Auth Service host"
)

_MFA_HINT = (
    "the cluster requires MFA for admin actions and tctl, using a person's tsh login, "
    "waits for a security key that no one touches under Ansible: set identity_file to an "
    "identity Teleport exempts (one signed with 'tctl auth sign' on the Auth Service host, "
    "or a Machine ID bot's), or run the task on the Auth Service host with tctl_config"
)

# Real tctl colours its "ERROR: " prefix red whether or not stderr is a
# terminal (lib/utils/cli.go, UserMessageFromError with Color(Red, ...)).
_ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")

# What tctl prints while it waits for a key (lib/client/mfa prompts).
_MFA_PROMPT = re.compile(r"tap any security key|security key|enter an? (otp|code)", re.I)

# (pattern on stderr, kind of failure); the first match wins. Real tctl and
# the sandbox both print "ERROR: ..." on stderr and exit 1.
_FAILURES = (
    # api/mfa: ErrAdminActionMFARequired, when tctl could not run the MFA ceremony.
    (re.compile(r"requires MFA verification|MFA is required for admin", re.I), "mfa"),
    (
        re.compile(
            r"not logged in|tsh login|no credentials|failed to load (client )?credentials"
            r"|please log ?in|profile .*not found",
            re.I,
        ),
        "login",
    ),
    (
        re.compile(
            r"certificate (has )?expired|expired certificate|credentials (have )?expired", re.I
        ),
        "expired",
    ),
    (re.compile(r"access denied|permission denied|not authorized|unauthorized", re.I), "denied"),
    (
        re.compile(
            r"not a supported resource|unsupported resource|unknown resource|"
            r"unsupported kind|unknown kind|resources of type .* is not supported",
            re.I,
        ),
        "kind",
    ),
    (re.compile(r"already exists", re.I), "exists"),
    # Connectors are "not configured" (lib/services/local/users.go, GetGithubConnector).
    (
        re.compile(r"not found|is not configured|does not exist|doesn't exist", re.I),
        "missing",
    ),
    (
        re.compile(
            r"connection refused|deadline exceeded|no such host|dial tcp|"
            r"failed to connect|cannot connect to the auth server|unavailable",
            re.I,
        ),
        "unreachable",
    ),
)


class TctlTimeout(Exception):
    """Raised by a run function when tctl outlived its deadline (and was killed)."""

    def __init__(self, seconds: float, stderr: str = "") -> None:
        super().__init__(f"timed out after {seconds} seconds")
        self.seconds = seconds
        self.stderr = stderr


class TctlError(Exception):
    """A tctl call that failed; ``message`` says what to fix."""

    def __init__(
        self, message: str, kind: str = "failed", rc: Optional[int] = None, stderr: str = ""
    ) -> None:
        super().__init__(message)
        self.message = message
        self.kind = kind
        self.rc = rc
        self.stderr = stderr  # what tctl said, without colour codes


def plain_text(stderr: str) -> str:
    """tctl's stderr without terminal colour codes."""
    return _ANSI_ESCAPE.sub("", stderr)


def _first_error_line(stderr: str) -> str:
    """The most telling line of tctl's stderr, without its "ERROR:" prefix.

    Teleport prints a wrapped error as an indented tree under the ERROR line
    (gravitational/trace, TraceErr.UserMessage); those lines are joined on.
    """
    lines = [line.rstrip() for line in plain_text(stderr).splitlines() if line.strip()]
    for index, line in enumerate(lines):
        if line.upper().startswith("ERROR:"):
            parts = [line[len("ERROR:") :].strip()]
            for more in lines[index + 1 :]:
                if not more[:1].isspace():
                    break
                parts.append(more.strip())
            return ": ".join(parts)
    return lines[-1].strip() if lines else "no error output"


class TctlRunner:
    """Runs tctl sub-commands with the connection flags of one module call."""

    def __init__(
        self,
        run: RunFunc,
        binary: str = "tctl",
        auth_server: Optional[str] = None,
        identity_file: Optional[str] = None,
        config: Optional[str] = None,
        timeout: Optional[int] = None,
    ) -> None:
        self._run = run
        self.binary = binary
        self.auth_server = auth_server
        self.identity_file = identity_file
        self.config = config
        self.timeout = timeout

    def argv(self, args: Sequence[str]) -> List[str]:
        """The full command line: binary, connection flags, then the sub-command."""
        argv = [self.binary]
        if self.config:
            argv.append("--config=" + self.config)
        if self.auth_server:
            argv.append("--auth-server=" + self.auth_server)
        if self.identity_file:
            argv.append("--identity=" + self.identity_file)
        argv.extend(args)
        return argv

    def call(self, args: Sequence[str], stdin: Optional[str] = None, what: str = "") -> str:
        """Run ``tctl ARGS``; return stdout or raise a :class:`TctlError` that explains."""
        argv = self.argv(args)
        try:
            rc, out, err = self._run(argv, stdin)
        except TctlTimeout as exc:
            raise self._timed_out(args, exc) from None
        if rc == 0:
            return out
        raise self._explain(args, rc, err, what)

    def _timed_out(self, args: Sequence[str], exc: "TctlTimeout") -> TctlError:
        command = "tctl " + " ".join(args)
        waited = f"tctl did not finish within {exc.seconds:g} seconds (timeout) and was stopped"
        said = plain_text(exc.stderr)
        if _MFA_PROMPT.search(said):
            prompt = said.strip().splitlines()[-1].strip()
            return TctlError(f"{command}: {waited} at the prompt {prompt!r}; {_MFA_HINT}", "mfa")
        if self.identity_file or self.config:
            hint = "check that the Auth Service answers, or raise timeout if it is that slow"
        else:
            hint = (
                "check that the Auth Service answers; if tctl was waiting for a security key, "
                + _MFA_HINT
            )
        return TctlError(f"{command}: {waited}; {hint}", "timeout")

    def _explain(self, args: Sequence[str], rc: int, stderr: str, what: str) -> TctlError:
        detail = _first_error_line(stderr)
        command = "tctl " + " ".join(args)
        kind = "failed"
        text = plain_text(stderr)
        for pattern, name in _FAILURES:
            if pattern.search(text):
                kind = name
                break
        target = what or (args[1] if len(args) > 1 else "the resource")
        if kind == "mfa":
            message = f"{command}: {detail}. Here {_MFA_HINT}"
        elif kind == "login":
            message = f"{command}: {detail}. {_LOGIN_HINT}"
        elif kind == "expired":
            where = f"identity_file {self.identity_file}" if self.identity_file else "tctl's login"
            message = (
                f"{command}: {detail}. The credentials of {where} have expired: "
                "renew them (tsh login, or sign a new identity) and run again"
            )
        elif kind == "denied":
            message = (
                f"{command}: {detail}. The identity tctl uses may not do this to {target}: "
                "give its user a role that allows it (for example the preset 'editor' role), "
                "or point identity_file/tctl_config at an identity that has one"
            )
        elif kind == "kind":
            message = (
                f"{command}: {detail}. Check the resource kind (e.g. role, user, bot, github, "
                "saml, oidc, lock); 'tctl get --help' lists the kinds this tctl knows"
            )
        elif kind == "unreachable":
            address = self.auth_server or "the default address"
            message = (
                f"{command}: {detail}. tctl cannot reach the Auth Service at {address}: "
                "check auth_server and that Teleport is running"
            )
        elif kind == "missing":
            # A read of a missing resource is not a failure (get returns None),
            # so this is something the command needs: a role, a user or a bot.
            message = (
                f"{command}: {detail}. Create it first (for example with "
                "teleport.event_handler.tctl_resource) or fix the name"
            )
        elif kind == "exists":
            message = f"{command}: {detail}. It was created while the task ran; run the task again"
        else:
            message = f"{command} failed with exit code {rc}: {detail}"
        return TctlError(message, kind=kind, rc=rc, stderr=text)

    # --- the sub-commands the modules use -----------------------------------

    def get(self, kind: str, name: str, with_secrets: bool = False) -> Optional[Dict[str, Any]]:
        """The resource ``kind/name`` as tctl's JSON shows it, or None if there is none."""
        args = ["get", f"{kind}/{name}", "--format=json"]
        if with_secrets:
            args.append("--with-secrets")
        try:
            out = self.call(args, what=f"{kind}/{name}")
        except TctlError as exc:
            # Teleport words it per kind: "role NAME is not found" (unquoted),
            # 'user "NAME" is not found', for a bot the chain ending in
            # 'user "bot-NAME" is not found', for a connector 'github connector
            # "NAME" is not configured'. Only a not-found that names the
            # resource means it is absent; any other is a real failure.
            if exc.kind == "missing" and name in exc.stderr:
                return None
            raise
        try:
            data = json.loads(out) if out.strip() else []
        except ValueError:
            # Never echo the output: with --with-secrets it holds private keys.
            raise TctlError(
                f"tctl get {kind}/{name}: the output is not JSON; "
                "is tctl_path really Teleport's tctl?"
            ) from None
        if isinstance(data, dict):
            data = [data]
        if not isinstance(data, list):
            raise TctlError(f"tctl get {kind}/{name}: expected a JSON list of resources")
        for doc in data:
            if isinstance(doc, dict) and (doc.get("metadata") or {}).get("name") == name:
                return doc
        return None

    def create(self, document: Dict[str, Any], force: bool) -> str:
        """``tctl create [-f] /dev/stdin`` with the document as JSON on stdin.

        Real tctl reads stdin when no file is named and the sandbox when given
        "-"; both open ``/dev/stdin``, so one spelling serves both.
        """
        args = ["create"]
        if force:
            args.append("-f")
        args.append(STDIN_PATH)
        meta = document.get("metadata") or {}
        what = f"{document.get('kind')}/{meta.get('name')}"
        return self.call(args, stdin=json.dumps(document), what=what)

    def delete(self, kind: str, name: str) -> str:
        return self.call(["rm", f"{kind}/{name}"], what=f"{kind}/{name}")

    def users_set_roles(self, user: str, roles: Sequence[str]) -> str:
        return self.call(
            ["users", "update", user, "--set-roles", ",".join(roles)], what=f"user/{user}"
        )

    def bots_add_roles(self, bot: str, roles: Sequence[str]) -> str:
        return self.call(["bots", "update", bot, "--add-roles", ",".join(roles)], what=f"bot/{bot}")

    def bots_set_roles(self, bot: str, roles: Sequence[str]) -> str:
        return self.call(["bots", "update", bot, "--set-roles", ",".join(roles)], what=f"bot/{bot}")

    def auth_sign(self, user: str, out: str, ttl: str, fmt: str = "file") -> str:
        return self.call(
            ["auth", "sign", f"--user={user}", f"--format={fmt}", f"--out={out}", f"--ttl={ttl}"],
            what=f"user/{user}",
        )


def run_with_deadline(
    argv: List[str], stdin: Optional[str], timeout: Optional[float], environ: Dict[str, str]
) -> Tuple[int, str, str]:
    """Run ``argv``; past ``timeout`` seconds kill it (and its children) and raise TctlTimeout.

    AnsibleModule.run_command has no deadline, so the seam runs tctl itself:
    in its own session, so that a stuck tctl and anything it started die
    together and no pipe is left open.
    """
    try:
        # argv is a list, never a shell line.
        process = subprocess.Popen(
            argv,
            stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=environ,
            start_new_session=True,
        )
    except OSError as exc:
        raise TctlError(
            f"tctl_path: cannot run {argv[0]}: {exc.strerror or exc}; set tctl_path to "
            "Teleport's tctl",
            kind="binary",
        ) from None
    data = stdin.encode("utf-8") if stdin is not None else None
    try:
        out, err = process.communicate(data, timeout=timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(OSError):  # it may have ended by itself meanwhile
            os.killpg(process.pid, signal.SIGKILL)
        out, err = process.communicate()
        raise TctlTimeout(timeout or 0, err.decode("utf-8", "replace")) from None
    return (
        process.returncode,
        out.decode("utf-8", "replace"),
        err.decode("utf-8", "replace"),
    )


def runner_from_module(module: Any) -> TctlRunner:
    """A runner for an AnsibleModule whose argument spec includes ``TCTL_ARGUMENT_SPEC``."""
    params = module.params
    binary = params["tctl_path"] or "tctl"
    if os.sep in binary:
        resolved = binary if os.access(binary, os.X_OK) else None
    else:
        resolved = module.get_bin_path(binary)
    if not resolved:
        raise TctlError(
            f"tctl_path: cannot run {binary!r}: install Teleport's tctl on this host "
            "or set tctl_path to its full path",
            kind="binary",
        )
    for option in ("identity_file", "tctl_config"):
        path = params.get(option)
        if path and not os.path.isfile(path):
            raise TctlError(f"{option}: {path} does not exist; fix the path", kind="option")

    timeout = params.get("timeout")
    if timeout is not None and timeout <= 0:
        raise TctlError(
            f"timeout: {timeout} is not a number of seconds; give a positive number", "option"
        )
    environ = dict(os.environ, LC_ALL="C", LANG="C")

    def run(argv: List[str], stdin: Optional[str]) -> Tuple[int, str, str]:
        return run_with_deadline(argv, stdin, timeout, environ)

    return TctlRunner(
        run,
        binary=resolved,
        auth_server=params.get("auth_server"),
        identity_file=params.get("identity_file"),
        config=params.get("tctl_config"),
        timeout=timeout,
    )
