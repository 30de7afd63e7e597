"""Hostile config and policy files, fuzzed: each loads, or fails with one KetchError naming the file and the key.

Random bytes, random YAML, and the repository's own files with one value
replaced by a random one (or one key added): ``load_config``, the catalog
settings and ``load_policy`` either accept the file or raise ``ConfigError`` /
``PolicyError`` whose message names the file and (for a replaced value) the key
or its section; no other exception (TypeError, AttributeError, ...) reaches the user.
"""

from __future__ import annotations

import copy
import datetime as dt
import itertools
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ketch_spark.catalog.classify import ClassifierSettings
from ketch_spark.config import load_config
from ketch_spark.connectors.jdbc import jdbc_sources
from ketch_spark.errors import ConfigError, PolicyError
from ketch_spark.policy import load_policy
from ketch_spark.session import s3a_settings

REPO = Path(__file__).resolve().parent.parent
_SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
_names = itertools.count()

_yaml_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(2**70), max_value=2**70), st.floats(allow_nan=False),
    st.text(max_size=12), st.dates(min_value=dt.date(1, 1, 1)),
    st.sampled_from(["", " ", "~/x", "~nobody-here/x", "s3a://", "\x00", "policy.yaml", "KETCH_X", "sha256", "null",
                     "constant", "email", "2026-13-45", "1e3"]),
)
_keys = st.one_of(st.text(max_size=10), st.integers(-3, 3), st.booleans(), st.none(), st.dates(min_value=dt.date(2000, 1, 1)),
                  st.sampled_from(["warehouse", "policy", "spark", "consent", "filter", "dsr", "catalog", "connectors",
                                   "purposes", "tcf", "us_privacy", "gpp", "bit", "legal_basis", "obfuscate", "columns"]))
yaml_values = st.recursive(_yaml_scalars, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_keys, inner, max_size=3),
                           max_leaves=10)


def _conf_data() -> dict:
    data = yaml.safe_load((REPO / "conf" / "ketch.yaml").read_text())
    data["policy"] = str(REPO / "conf" / "policy.yaml")
    data["dsr"] = {"due_days": 30, "default_phone_region": "US", "obfuscate": {
        "default": "null", "categories": {"gender": {"method": "constant", "value": "other"}},
        "columns": {"is_deleted": {"method": "constant", "value": True}}}}
    data["catalog"] = {"sample_rows": 100, "min_confidence": 0.5, "overrides": [{"asset": "*", "column": "c", "category": "email"}]}
    data["connectors"] = {
        "s3": {"endpoint": "http://127.0.0.1:1", "region": "eu-west-1", "access_key_id": "a", "secret_access_key": "k",
               "path_style_access": True, "ssl_enabled": False},
        "dynamodb": {"region": "eu-west-1", "endpoint_url": "http://127.0.0.1:1", "access_key_id_env": "KETCH_X",
                     "secret_access_key": "k", "connect_timeout": 5, "read_timeout": 2.5, "max_attempts": 2,
                     "scan_page_size": 100},
    }
    return data


def _policy_data() -> dict:
    return yaml.safe_load((REPO / "conf" / "policy.yaml").read_text())


def _paths(data: Any, prefix: tuple = ()) -> list[tuple]:
    """Every key path of a nested mapping (list items by index)."""
    found = []
    items = data.items() if isinstance(data, dict) else enumerate(data) if isinstance(data, list) else ()
    for key, value in items:
        found.append((*prefix, key))
        found.extend(_paths(value, (*prefix, key)))
    return found


def _replaced(data: dict, path: tuple, value: Any) -> dict:
    copied = copy.deepcopy(data)
    node = copied
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    return copied


def _write(tmp_path: Path, text: str | bytes) -> Path:
    path = tmp_path / f"hostile-{next(_names)}.yaml"
    path.write_bytes(text if isinstance(text, bytes) else text.encode("utf-8", "surrogatepass"))
    return path


def _dump(data: Any) -> str:
    return yaml.safe_dump(data, allow_unicode=True)


def _load_all_config(path: Path) -> None:
    """Loads the config, its policy, its catalog settings and the Spark settings of its connectors.s3 section.

    A policy error must name the policy file.
    """
    cfg = load_config(path)
    s3a_settings(cfg)
    try:
        cfg.policy()
    except PolicyError as exc:
        assert cfg.policy_path in str(exc), str(exc)
    ClassifierSettings.from_config(cfg)


def _check_error(exc: ConfigError, path: Path, key_path: tuple = ()) -> None:
    message = str(exc)
    assert str(path) in message, message
    if key_path:
        named = [".".join(str(k) for k in key_path[:n]) for n in range(1, len(key_path) + 1)]
        assert any(name in message for name in named), (key_path, message)


# --- config --------------------------------------------------------------------------------------


@_SETTINGS
@given(content=st.binary(max_size=200) | st.text(max_size=200))
def test_random_bytes_as_config(tmp_path, content):
    path = _write(tmp_path, content)
    try:
        _load_all_config(path)
    except ConfigError as exc:
        _check_error(exc, path)


@_SETTINGS
@given(data=st.dictionaries(_keys, yaml_values, max_size=5) | yaml_values)
def test_random_yaml_as_config(tmp_path, data):
    path = _write(tmp_path, _dump(data))
    try:
        _load_all_config(path)
    except ConfigError as exc:
        _check_error(exc, path)


_CONF_PATHS = _paths(_conf_data())


@_SETTINGS
@given(key_path=st.sampled_from(_CONF_PATHS), value=yaml_values)
def test_config_with_one_value_replaced(tmp_path, key_path, value):
    path = _write(tmp_path, _dump(_replaced(_conf_data(), key_path, value)))
    try:
        _load_all_config(path)
    except ConfigError as exc:
        _check_error(exc, path, key_path)


@_SETTINGS
@given(section=st.sampled_from([(), ("consent",), ("filter",), ("dsr",), ("dsr", "obfuscate"), ("catalog",),
                                ("connectors", "s3"), ("connectors", "dynamodb")]),
       key=_keys, value=yaml_values)
def test_config_with_one_key_added(tmp_path, section, key, value):
    data = _conf_data()
    node = data
    for name in section:
        node = node[name]
    if key in node:
        return
    node[key] = value
    path = _write(tmp_path, _dump(data))
    try:
        _load_all_config(path)
    except ConfigError as exc:
        _check_error(exc, path, section)


# --- policy --------------------------------------------------------------------------------------


def _check_policy_error(exc: PolicyError, path: Path, key_path: tuple = ()) -> None:
    _check_error(exc, path, key_path)


@_SETTINGS
@given(content=st.binary(max_size=200) | st.text(max_size=200))
def test_random_bytes_as_policy(tmp_path, content):
    path = _write(tmp_path, content)
    try:
        load_policy(path)
    except PolicyError as exc:
        _check_policy_error(exc, path)


@_SETTINGS
@given(data=st.dictionaries(_keys, yaml_values, max_size=5) | yaml_values)
def test_random_yaml_as_policy(tmp_path, data):
    path = _write(tmp_path, _dump(data))
    try:
        load_policy(path)
    except PolicyError as exc:
        _check_policy_error(exc, path)


_POLICY_PATHS = _paths(_policy_data())


@_SETTINGS
@given(key_path=st.sampled_from(_POLICY_PATHS), value=yaml_values)
def test_policy_with_one_value_replaced(tmp_path, key_path, value):
    path = _write(tmp_path, _dump(_replaced(_policy_data(), key_path, value)))
    try:
        load_policy(path)
    except PolicyError as exc:
        _check_policy_error(exc, path, key_path)


@_SETTINGS
@given(section=st.sampled_from([(), ("purposes",), ("purposes", "analytics"), ("tcf",), ("tcf", "purposes"),
                                ("us_privacy",), ("gpp",)]),
       key=_keys, value=yaml_values)
def test_policy_with_one_key_added(tmp_path, section, key, value):
    data = _policy_data()
    node = data
    for name in section:
        node = node[name]
    if key in node:
        return
    node[key] = value
    path = _write(tmp_path, _dump(data))
    try:
        load_policy(path)
    except PolicyError as exc:
        _check_policy_error(exc, path, section)


def test_yaml_with_a_list_as_a_key_is_a_config_error(tmp_path):
    path = _write(tmp_path, "? [a, b]\n: 1\nwarehouse: x\n")
    with pytest.raises(ConfigError, match=str(path)):
        load_config(path)


@pytest.mark.parametrize("key", ["warehouse", "policy", "jars_dir"])
@pytest.mark.parametrize("value", ["~nobody-such-user/x", "a\x00b"])
def test_a_path_that_cannot_be_one_is_a_config_error(tmp_path, key, value):
    path = _write(tmp_path, _dump({key: value}))
    with pytest.raises(ConfigError, match=f"{path}: {key}: cannot be used as a path"):
        load_config(path)


@_SETTINGS
@given(key=st.sampled_from(["url", "user", "password", "schemas", "connect_timeout"]), value=yaml_values,
       as_list=st.booleans())
def test_jdbc_connector_entry_with_one_value_replaced(key, value, as_list):
    entry = {"url": "jdbc:postgresql://127.0.0.1:5432/dw", "user": "reader", "password": "p", "schemas": ["public"],
             "connect_timeout": 5, key: value}
    try:
        sources = jdbc_sources({"jdbc": [entry] if as_list else entry})
    except ConfigError as exc:
        assert "connectors.jdbc" in str(exc) or "PostgreSQL URL" in str(exc), str(exc)
    else:
        assert len(sources) == 1


@_SETTINGS
@given(value=yaml_values)
def test_jdbc_connectors_section_of_any_shape(value):
    try:
        jdbc_sources({"jdbc": value})
    except ConfigError as exc:
        assert "connectors.jdbc" in str(exc) or "PostgreSQL URL" in str(exc), str(exc)


@_SETTINGS
@given(name=st.sampled_from(["s3", "dynamodb"]), value=yaml_values)
def test_s3_and_dynamodb_sections_of_any_shape(tmp_path, name, value):
    data = _conf_data()
    data["connectors"][name] = value
    path = _write(tmp_path, _dump(data))
    try:
        _load_all_config(path)
    except ConfigError as exc:
        _check_error(exc, path, ("connectors", name))


@pytest.mark.parametrize("key", ["access_key_id", "secret_access_key"])
def test_a_credential_of_the_wrong_type_is_refused_without_showing_it(tmp_path, key):
    data = _conf_data()
    data["connectors"]["s3"][key] = 987654321
    path = _write(tmp_path, _dump(data))
    with pytest.raises(ConfigError, match=f"connectors.s3.{key}: expected a string") as raised:
        load_config(path)
    assert "987654321" not in str(raised.value)
