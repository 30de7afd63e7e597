"""Config loading and validation: errors name the file and the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from ketch_spark._yaml import load_yaml_file
from ketch_spark.config import KetchConfig, ObfuscationRule, config_from_mapping, dsr_settings_from_mapping, load_config
from ketch_spark.errors import ConfigError, KetchError

REPO = Path(__file__).resolve().parent.parent


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "ketch.yaml"
    path.write_text(text)
    return path


def test_repository_config_loads():
    cfg = load_config(Path(__file__).resolve().parent.parent / "conf" / "ketch.yaml")
    assert Path(cfg.warehouse).is_absolute() and cfg.warehouse.endswith("ketch-data")
    assert Path(cfg.policy_path).is_file()
    assert cfg.spark["spark.sql.session.timeZone"] == "UTC"
    assert cfg.consent.max_future_skew_seconds == 300
    assert cfg.policy().purpose("analytics").bit == 1


def test_relative_policy_is_resolved_against_the_config_folder(tmp_path):
    (tmp_path / "mine.yaml").write_text("purposes: {a: {bit: 0, legal_basis: consent}}\n")
    cfg = load_config(_write(tmp_path, "warehouse: s3a://bucket/lake/\npolicy: mine.yaml\nspark: {spark.x: 1, spark.y: true}\n"))
    assert cfg.policy_path == str(tmp_path / "mine.yaml")
    assert cfg.warehouse == "s3a://bucket/lake"
    assert cfg.spark == {"spark.x": "1", "spark.y": "true"}
    assert cfg.path("consent/state") == "s3a://bucket/lake/consent/state"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("warehouse: [1]\n", "warehouse: expected a path or URI string"),
        ("wharehouse: x\n", "unknown key(s) wharehouse"),
        ("consent: {max_future_skew_seconds: -5}\n", "consent.max_future_skew_seconds: expected a positive integer"),
        ("consent: {skew: 5}\n", "consent: unknown key(s) skew"),
        ("filter: {broadcast_max_bytes: big}\n", "filter.broadcast_max_bytes: expected a positive integer"),
        ("filter: {key_set_cache_entries: -1}\n", "filter.key_set_cache_entries: expected an integer >= 0, found -1"),
        ("spark: {spark.x: {nested: 1}}\n", "spark.spark.x: expected a scalar Spark setting"),
        ("warehouse: a\nwarehouse: b\n", "duplicate key 'warehouse'"),
        ("warehouse: [unclosed\n", "invalid YAML"),
        ("- just\n- a list\n", "expected a mapping at the top level"),
    ],
)
def test_invalid_config_names_file_and_key(tmp_path, text, expected):
    path = _write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert expected in str(info.value)
    assert str(path) in str(info.value)
    assert isinstance(info.value, (KetchError, ValueError))


def test_missing_file_says_so(tmp_path):
    with pytest.raises(ConfigError, match="file not found"):
        load_config(tmp_path / "nope.yaml")


def test_defaults_without_a_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("KETCH_SPARK_CONF", raising=False)
    cfg = load_config()
    assert cfg.warehouse == str(tmp_path / "ketch-data")
    assert isinstance(cfg, KetchConfig)


def test_unknown_free_section_is_refused():
    with pytest.raises(ConfigError, match="unknown config section"):
        KetchConfig().section("nope")


def _uncommented_dsr_block(text: str) -> str:
    """The commented ``# dsr:`` block of ketch.yaml with its leading ``# `` removed."""
    lines = text.splitlines()
    start = lines.index("# dsr:")
    block = [lines[start]]
    for line in lines[start + 1:]:
        if not line.startswith("#   "):
            break
        block.append(line)
    return "\n".join(line.removeprefix("# ") for line in block) + "\n"


def test_documented_dsr_section_is_valid_and_gives_the_story_rules(tmp_path):
    text = (REPO / "conf" / "ketch.yaml").read_text()
    assert "\ndsr:" not in text  # documented, not active: the defaults apply
    path = _write(tmp_path, text + _uncommented_dsr_block(text))
    data = load_yaml_file(path)
    cfg = config_from_mapping(data, source=str(path))
    settings = dsr_settings_from_mapping(data["dsr"], source=str(path))
    assert cfg.dsr == settings
    assert settings.due_days == 30 and settings.org_column == "org_id" and settings.default_phone_region == "US"
    assert settings.vacuum_retention_hours == 168 and settings.allow_short_retention is False
    assert settings.receipt_secret_env == "KETCH_RECEIPT_SECRET" and settings.hmac_secret_env == "KETCH_DSR_HMAC_SECRET"
    assert settings.obfuscate_default == ObfuscationRule("null")
    assert settings.rule_for("email_sha256", "email_sha256") == ObfuscationRule("sha256", "deleted")
    for category in ("gender", "age_range", "income_band"):
        assert settings.rule_for(category, category) == ObfuscationRule("constant", "other")
    for column in ("household_income", "customer_status"):
        assert settings.rule_for(column, "income_band") == ObfuscationRule("constant", "other")
    assert settings.rule_for("is_deleted", None).value is True
    assert settings.rule_for("is_deleted", None).method == "constant"
    assert settings.rule_for("email", "email") == ObfuscationRule("null")
    assert settings.rule_for("page", None) is None
    assert settings.rule_for("id", "user_id", key=True) is None  # a key keeps its value unless named
    assert settings.rule_for("is_deleted", None, key=True).method == "constant"


def test_delta_section_defaults_and_documented_keys():
    default = config_from_mapping({}).delta
    assert (default.commit_retries, default.commit_backoff_seconds) == (3, 0.5)
    assert default.log_store.enabled and default.log_store.table_name == "ketch_delta_log"
    cfg = config_from_mapping({"delta": {"commit_retries": 0, "commit_backoff_seconds": 2, "log_store": {
        "enabled": False, "table_name": "locks", "region": "eu-west-1", "endpoint": "http://127.0.0.1:5000",
        "create_table": False}}})
    assert cfg.delta.commit_retries == 0 and cfg.delta.commit_backoff_seconds == 2.0
    store = cfg.delta.log_store
    assert (store.enabled, store.table_name, store.region, store.endpoint, store.create_table) == (
        False, "locks", "eu-west-1", "http://127.0.0.1:5000", False)


@pytest.mark.parametrize(
    ("delta", "expected"),
    [
        ({"commit_retries": -1}, "delta.commit_retries: expected an integer >= 0"),
        ({"commit_backoff_seconds": -0.1}, "delta.commit_backoff_seconds"),
        ({"retries": 3}, "delta: unknown key(s) retries"),
        ({"log_store": {"tabel_name": "x"}}, "delta.log_store: unknown key(s) tabel_name"),
        ({"log_store": {"enabled": "yes"}}, "delta.log_store.enabled: expected true or false"),
        ({"log_store": {"table_name": " "}}, "delta.log_store.table_name: must not be empty"),
    ],
)
def test_invalid_delta_section_names_the_key(delta, expected):
    with pytest.raises(ConfigError, match=expected.replace("(", r"\(").replace(")", r"\)")):
        config_from_mapping({"delta": delta}, source="ketch.yaml")
