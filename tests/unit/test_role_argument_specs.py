"""The event_handler role documents every variable, with the default it has.

``meta/argument_specs.yml`` is what ``ansible-doc -t role`` shows and what
Ansible validates a play's variables against; ``defaults/main.yml`` is what
the role runs with. They must name the same variables with the same defaults,
and the forwarder's settings must default to what the forwarder itself uses.
"""

from __future__ import annotations

import datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from teleport_event_handler.config import OPTIONS
from teleport_event_handler.durations import go_seconds

ROLE = Path(__file__).resolve().parents[2] / "roles" / "event_handler"


class _UniqueKeyLoader(yaml.SafeLoader):
    """A loader that refuses a key given twice (YAML keeps the last silently)."""


def _construct_mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    keys = [loader.construct_object(key) for key, _ in node.value]
    duplicates = sorted({key for key in keys if keys.count(key) > 1})
    if duplicates:
        raise yaml.constructor.ConstructorError(
            None, None, f"keys given twice: {duplicates}", node.start_mark
        )
    return loader.construct_mapping(node)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def _load(relative: str) -> Any:
    return yaml.load((ROLE / relative).read_text(encoding="utf-8"), Loader=_UniqueKeyLoader)


@pytest.fixture(scope="module")
def defaults() -> dict[str, Any]:
    return _load("defaults/main.yml")


@pytest.fixture(scope="module")
def options() -> dict[str, Any]:
    return _load("meta/argument_specs.yml")["argument_specs"]["main"]["options"]


def test_every_default_is_documented_and_every_documented_variable_has_a_default(
    defaults: dict[str, Any], options: dict[str, Any]
) -> None:
    assert sorted(set(defaults) - set(options)) == [], "in defaults/main.yml only"
    assert sorted(set(options) - set(defaults)) == [], "in meta/argument_specs.yml only"


def test_documented_defaults_equal_the_role_defaults(
    defaults: dict[str, Any], options: dict[str, Any]
) -> None:
    differ = {
        name: (spec.get("default"), defaults[name])
        for name, spec in options.items()
        if spec.get("default") != defaults.get(name)
    }
    assert differ == {}


_TYPES = {"str": str, "int": int, "bool": bool, "list": list, "dict": dict, "raw": object}


def test_documented_types_fit_the_defaults(options: dict[str, Any]) -> None:
    wrong = {
        name: spec["type"]
        for name, spec in options.items()
        if not isinstance(spec["default"], _TYPES[spec["type"]])
        or (spec["type"] == "int" and isinstance(spec["default"], bool))
    }
    assert wrong == {}
    for name, spec in options.items():
        assert spec["description"], name
        if "choices" in spec:
            assert spec["default"] in spec["choices"], name


def test_variables_are_prefixed(defaults: dict[str, Any]) -> None:
    assert [name for name in defaults if not name.startswith("event_handler_")] == []
    internal = _load("vars/main.yml")
    assert [name for name in internal if not name.startswith("_event_handler_")] == []


def _role_variable(flag: str) -> str:
    return "event_handler_" + flag.replace("-", "_")


def test_every_forwarder_setting_is_a_role_variable(defaults: dict[str, Any]) -> None:
    wanted = [_role_variable(opt.flag) for opt in OPTIONS]
    assert sorted(name for name in wanted if name not in defaults) == []


# Role variables whose empty default leaves the key out of the TOML, so the
# forwarder's own default applies (and follows the forwarder's upgrades).
LEFT_OUT_WHEN_EMPTY = {"teleport-api-version", "teleport-dial", "fluentd-protocol"}


def _same(forwarder: Any, role: Any, kind: str) -> bool:
    if kind == "duration":
        return float(forwarder) == go_seconds(str(role))
    if kind == "list":
        return list(forwarder) == list(role)
    return bool(forwarder == role)


def test_forwarder_settings_default_to_the_forwarders_defaults(defaults: dict[str, Any]) -> None:
    # Settings the forwarder leaves unset (None, or required) take a value the
    # role chooses: paths it manages, URLs built from the Fluentd host, or
    # empty, which the TOML template leaves out.
    differ = {}
    for opt in OPTIONS:
        role = defaults[_role_variable(opt.flag)]
        if opt.default is None or (opt.flag in LEFT_OUT_WHEN_EMPTY and role == ""):
            continue
        if isinstance(opt.default, datetime.datetime):  # pragma: no cover - no such default today
            continue
        if not _same(opt.default, role, opt.kind):
            differ[opt.flag] = (opt.default, role)
    assert differ == {}
