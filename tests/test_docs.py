"""The README cannot drift from the code: every quarantine reason is in its table, every format example is in
`consent ingest --help` and holds a signal the decoders accept."""

from __future__ import annotations

import json
import re
from pathlib import Path


from ketch_spark.cli import INGEST_FORMAT_EXAMPLES, build_parser
from ketch_spark.consent.gpp import GPP_REASONS, gpp_fields
from ketch_spark.consent.sources import FORMATS, REASONS
from ketch_spark.consent.tcf import tc_fields, us_privacy_valid
from ketch_spark.rights.ledger import ERASED_SUBJECT

REPO = Path(__file__).resolve().parent.parent
README = (REPO / "README.md").read_text()
_REASON_WORDS = r"(?:malformed|missing|invalid|unknown|retired|ancient|future|erased|id_too)_[a-z_]+"


def _table_keys(heading: str) -> list[str]:
    """First-column names (`name`) of the first table after ``heading`` in the README."""
    section = README.split(heading, 1)[1]
    table = section[section.index("\n|"):].split("\n\n", 1)[0]
    return re.findall(r"^\| `([a-z_0-9]+)` \|", table, flags=re.MULTILINE)


def _ingest_help() -> str:
    consent = build_parser()._subparsers._group_actions[0].choices["consent"]  # noqa: SLF001
    return consent._subparsers._group_actions[0].choices["ingest"].format_help()  # noqa: SLF001


def test_every_quarantine_reason_is_in_the_readme_table_and_nothing_else():
    assert sorted(_table_keys("### Quarantine reasons")) == sorted(REASONS)


def test_every_reason_literal_in_the_ingest_code_is_declared():
    code = (REPO / "ketch_spark" / "consent" / "sources.py").read_text()
    literals = set(re.findall(rf'"({_REASON_WORDS})"', code))
    literals |= {template.format(name=name) for template in re.findall(r'f"((?:invalid|missing)_\{name\})"', code)
                 for name in ("org_id", "user_id")}
    assert literals and literals <= set(REASONS)
    assert ERASED_SUBJECT in REASONS


def test_every_gpp_decoder_reason_is_in_the_readme():
    assert sorted(_table_keys("The decoder's reasons for `invalid_gpp_string`")) == sorted(GPP_REASONS)


def test_format_examples_are_in_the_readme_and_the_ingest_help():
    help_text = _ingest_help()
    assert {fmt for fmt, _ in INGEST_FORMAT_EXAMPLES} == set(FORMATS)
    for _, example in INGEST_FORMAT_EXAMPLES:
        assert example in README and example in help_text
    assert ":func:" not in help_text


def test_format_examples_hold_valid_signals(spark):
    records = [json.loads(example) for fmt, example in INGEST_FORMAT_EXAMPLES if fmt in ("json", "tcf", "gpp")]
    assert all({"org_id", "user_id", "ts", "source"} <= set(r) for r in records)
    signals = {key: r[key] for r in records for key in ("tc_string", "us_privacy", "gpp_string") if key in r}
    assert set(signals) == {"tc_string", "us_privacy", "gpp_string"}
    row = spark.createDataFrame([tuple(signals.values())], ", ".join(f"{k} string" for k in signals)).select(
        tc_fields("tc_string")["valid"].alias("tc"), us_privacy_valid("us_privacy").alias("usp"),
        gpp_fields("gpp_string")["valid"].alias("gpp"),
    ).head()
    assert (row["tc"], row["usp"], row["gpp"]) == (True, True, True)
    csv_header, csv_line = (example for fmt, example in INGEST_FORMAT_EXAMPLES if fmt == "csv")
    assert len(csv_header.split(",")) == len(csv_line.split(","))
