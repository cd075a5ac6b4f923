# Copyright: the teleport-event-handler authors
# Apache License 2.0 (see LICENSE)
"""Comparing a definition with what Teleport returns, and Go durations."""

from __future__ import annotations

import datetime

import pytest

from ansible_collections.teleport.event_handler.plugins.module_utils._duration import (
    DurationError,
    format_duration,
    parse_duration,
)
from ansible_collections.teleport.event_handler.plugins.module_utils._resources import (
    REDACTED,
    ResourceError,
    keep_granted_roles,
    load_definitions,
    matches,
    project,
    redact,
    secret_values,
)


@pytest.mark.parametrize(
    "text, seconds",
    [
        ("12h", 43200),
        ("1h30m", 5400),
        ("87600h", 315360000),
        ("90s", 90),
        ("1.5h", 5400),
        ("10h0m0s", 36000),
        ("30d", 2592000),
        ("0", 0),
        ("45", 45),
    ],
)
def test_go_durations(text, seconds):
    assert parse_duration(text) == datetime.timedelta(seconds=seconds)


@pytest.mark.parametrize("text", ["", "h", "12x", "1h 30m", "-1h", "ten hours"])
def test_bad_durations_name_the_option(text):
    with pytest.raises(DurationError, match=r"ttl: .* is not a duration"):
        parse_duration(text, "ttl")


def test_format_duration_is_what_tctl_accepts():
    assert format_duration(datetime.timedelta(hours=8760)) == "8760h"
    assert format_duration(datetime.timedelta(minutes=90)) == "1h30m"
    assert format_duration(datetime.timedelta(seconds=4)) == "4s"


def test_only_what_the_definition_sets_is_compared():
    wanted = {"spec": {"roles": ["a"], "traits": {}}}
    current = {"spec": {"roles": ["a"], "created_by": {"user": "x"}}, "status": {}}
    assert matches(wanted, current)
    assert not matches({"spec": {"roles": ["a", "b"]}}, current)
    assert not matches({"spec": {"roles": ["b"]}}, current)
    # Durations compare by length; other strings do not.
    assert matches({"max_session_ttl": "10h"}, {"max_session_ttl": "10h0m0s"})
    assert not matches({"max_session_ttl": "10h"}, {"max_session_ttl": "30h0m0s"})
    # Booleans are not numbers.
    assert not matches({"x": True}, {"x": 1})


def test_project_and_redact_show_only_safe_wanted_fields():
    current = {
        "spec": {
            "client_secret": "s",
            "teams_to_roles": [{"team": "a", "roles": ["r"]}],
            "display": "GitHub",
        },
        "metadata": {"revision": "1", "name": "g"},
    }
    wanted = {
        "spec": {"client_secret": "t", "teams_to_roles": [{"team": "a"}]},
        "metadata": {"name": "g"},
    }
    shown = redact(project(current, wanted))
    assert shown == {
        "spec": {"client_secret": REDACTED, "teams_to_roles": [{"team": "a"}]},
        "metadata": {"name": "g"},
    }


def test_definitions_need_kind_and_name():
    with pytest.raises(ResourceError, match="document 1: set 'kind'"):
        load_definitions({"metadata": {"name": "x"}}, None, "definition")
    with pytest.raises(ResourceError, match=r"set 'metadata\.name'"):
        load_definitions("kind: role\nspec: {}\n", None, "src /tmp/r.yaml")
    docs = load_definitions(None, '[{"kind": "role", "metadata": {"name": "a"}}]', "src x.json")
    assert docs == [{"kind": "role", "metadata": {"name": "a"}}]


def test_secret_values_are_what_redact_hides():
    docs = [
        {"kind": "role", "metadata": {"name": "r"}, "spec": {"allow": {}}},
        {
            "kind": "saml",
            "spec": {
                "signing_key_pair": {"private_key": "PEM", "cert": "C"},
                "client_secret": "",
                "attributes_to_roles": [{"name": "groups", "value": "admins"}],
            },
        },
        {"kind": "oidc", "spec": {"client_secret": "s3cr3t", "client_id": "id"}},
    ]
    assert secret_values(docs) == ["PEM", "s3cr3t"]
    assert not set(secret_values(docs)) & set(str(redact(docs)).split("'"))


def _github(mappings: list[dict[str, object]]) -> dict[str, object]:
    return {"kind": "github", "metadata": {"name": "gh"}, "spec": {"teams_to_roles": mappings}}


def test_connector_mappings_keep_roles_and_mappings_granted_elsewhere() -> None:
    wanted = _github([{"organization": "acme", "team": "ops", "roles": ["access"]}])
    # tctl_grant_role added a role to the mapping and a mapping of its own.
    current = _github(
        [
            {"organization": "acme", "team": "ops", "roles": ["access", "event-handler"]},
            {"organization": "acme", "team": "audit", "roles": ["event-handler"]},
        ]
    )
    merged = keep_granted_roles(wanted, "github", current)
    assert merged["spec"]["teams_to_roles"] == current["spec"]["teams_to_roles"]
    assert matches(merged, current)
    assert wanted["spec"]["teams_to_roles"] == [
        {"organization": "acme", "team": "ops", "roles": ["access"]}
    ]  # the definition itself is left as given


def test_connector_mappings_still_get_the_roles_the_definition_asks_for() -> None:
    wanted = {
        "kind": "saml",
        "metadata": {"name": "okta"},
        "spec": {"attributes_to_roles": [{"name": "groups", "value": "ops", "roles": ["editor"]}]},
    }
    current = {
        "kind": "saml",
        "metadata": {"name": "okta"},
        "spec": {"attributes_to_roles": [{"name": "groups", "value": "ops", "roles": ["viewer"]}]},
    }
    merged = keep_granted_roles(wanted, "saml", current)
    assert merged["spec"]["attributes_to_roles"] == [
        {"name": "groups", "value": "ops", "roles": ["editor", "viewer"]}
    ]
    assert not matches(merged, current)


def test_users_keep_granted_roles_in_teleports_order() -> None:
    wanted = {"kind": "user", "metadata": {"name": "ops"}, "spec": {"roles": ["access"]}}
    current = {"kind": "user", "metadata": {"name": "ops"}, "spec": {"roles": ["x", "access"]}}
    assert keep_granted_roles(wanted, "user", current)["spec"]["roles"] == ["x", "access"]
    assert keep_granted_roles(wanted, "user", None) is wanted
