"""The Teleport credential files: built from the configuration once, read by the
engine's process and by each export worker, which gets them pickled."""

from __future__ import annotations

import pickle

import pytest

from teleport_event_handler.app import credential_files, load_credentials
from teleport_event_handler.config import load_config
from teleport_event_handler.events import TypeFilter
from teleport_event_handler.teleport import CredentialFiles, TeleportError, credential_loader
from teleport_event_handler.workers import WorkerSpec

FLUENTD = [
    "--fluentd-url=https://fluentd.example.com:8888/test.log",
    "--fluentd-session-url=https://fluentd.example.com:8888/session",
    "--storage=/var/lib/teh",
]


def test_an_identity_file_from_the_configuration() -> None:
    config = load_config([*FLUENTD, "--teleport-identity=/etc/teh/identity"], {})
    assert credential_files(config) == CredentialFiles(identity="/etc/teh/identity")


def test_a_key_pair_from_the_configuration() -> None:
    flags = ["--teleport-cert=/t/crt", "--teleport-key=/t/key", "--teleport-ca=/t/ca"]
    config = load_config([*FLUENTD, *flags], {})
    assert credential_files(config) == CredentialFiles(cert="/t/crt", key="/t/key", ca="/t/ca")


def test_the_loader_reads_the_identity_file_when_one_is_named() -> None:
    missing = "/nonexistent/identity"
    loader = credential_loader(CredentialFiles(identity=missing, cert="/c", key="/k", ca="/a"))
    assert loader is not None
    with pytest.raises(TeleportError, match=f"identity file {missing}"):
        loader()


def test_the_loader_reads_a_key_pair_only_with_all_three_files() -> None:
    loader = credential_loader(CredentialFiles(cert="/nonexistent/crt", key="/k", ca="/a"))
    assert loader is not None
    with pytest.raises(TeleportError, match="teleport certificate /nonexistent/crt"):
        loader()
    assert credential_loader(CredentialFiles(cert="/c", key="/k")) is None
    assert credential_loader(CredentialFiles()) is None


def test_no_credentials_is_one_clear_error() -> None:
    with pytest.raises(TeleportError, match=r"set \[teleport\] identity, or cert, key and ca"):
        load_credentials(CredentialFiles())


def test_a_worker_spec_survives_pickling_with_its_credentials() -> None:
    """Worker processes are spawned: the spec crosses to them pickled."""
    files = CredentialFiles(cert="/t/crt", key="/t/key", ca="/t/ca")
    spec = WorkerSpec(
        addr="auth.example.com:3025",
        credentials=files,
        api_version="v1",
        via_proxy=False,
        type_filter=TypeFilter(("user.login",), ()),
    )
    copy = pickle.loads(pickle.dumps(spec))
    assert copy.credentials == files
    assert copy.addr == spec.addr and copy.type_filter.types == {"user.login"}
