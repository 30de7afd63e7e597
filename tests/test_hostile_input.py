"""Hostile consent input, fuzzed: every record is accepted or quarantined with a reason, nothing crashes.

Each example writes one file of hostile records (random bytes, random JSON,
records with random field values, near-valid TC, US Privacy and GPP strings)
mixed with valid records, and ingests it once: the valid records must all be
accepted, every hostile record must be accepted or quarantined with a known
reason and a detail, and ``read == accepted + quarantined + duplicates``.
The fast run takes a few examples per format; the ``slow`` ones take more.
"""

from __future__ import annotations

import base64
import csv
import datetime as dt
import io
import json
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from pyspark.sql import functions as F

from ketch_spark.consent.sources import REASONS, ingest_consent
from ketch_spark.errors import KetchError, SchemaError
from ketch_spark.tables import read_table
from tcf_encode import encode_tc

ORG = "0xF0221E55"
TS = "2026-11-20T10:00:00Z"
_B64URL = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
#: Hostile records per ingest: a small file per format, then larger ones (the first of which is in make test,
#: the other rounds in make test-slow).
_FAST_RECORDS = 40
_SLOW_RECORDS = 300
_SLOW_ROUNDS = 4
_LARGE_ROUNDS = [0, *(pytest.param(round_, marks=pytest.mark.slow) for round_ in range(1, _SLOW_ROUNDS))]
_CHECKS = [HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example,
           HealthCheck.function_scoped_fixture]


# --- hostile values -------------------------------------------------------------------------------

_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=12),
    st.sampled_from(["", " ", "true", "false", "1", "0", "yes", "null", TS, "2026-11-20", "1999-12-31T23:59:59Z",
                     "2999-01-01T00:00:00Z", "0000-00-00T00:00:00Z", "2026-13-45T99:99:99Z", "\u0000", "x" * 300,
                     "analytics", "legacy_profiling", " analytics ", "ANALYTICS"]),
)
json_values = st.recursive(_scalars, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
                           max_leaves=8)
purposes_maps = st.dictionaries(
    st.sampled_from(["analytics", "advertising", "legacy_profiling", "telepathy", "", " personalization "]) | st.text(max_size=6),
    json_values, max_size=4,
)
#: One line of random bytes (no line break, so it stays one record).
byte_lines = st.binary(min_size=1, max_size=40).map(lambda b: b.replace(b"\n", b" ").replace(b"\r", b" "))
text_lines = st.text(min_size=1, max_size=60).map(lambda s: s.replace("\n", " ").replace("\r", " "))


def _mutations(valid: str) -> st.SearchStrategy[str]:
    """Near-valid strings: ``valid`` with one character changed, truncated, or extended."""
    if not valid:
        return st.just(valid)
    positions = st.integers(0, len(valid) - 1)
    changed = st.tuples(positions, st.sampled_from(_B64URL + "~.!= \u00e9")).map(lambda t: valid[: t[0]] + t[1] + valid[t[0] + 1:])
    truncated = positions.map(lambda n: valid[:n])
    extended = st.text(alphabet=_B64URL + "~.", min_size=1, max_size=8).map(lambda tail: valid + tail)
    return st.one_of(changed, truncated, extended)


# --- records --------------------------------------------------------------------------------------


_counter = iter(range(10**6))
_PLACEHOLDER = "__FZ__"


@dataclass
class Batch:
    """Lines of one input file: the valid ones (with what they grant) and the hostile ones."""

    valid: list[str] = field(default_factory=list)
    expected: set[tuple[str, str, bool]] = field(default_factory=set)
    hostile: list[str] = field(default_factory=list)
    random_bytes: list[bytes] = field(default_factory=list)
    header_lines: int = 0
    tag: int = field(default_factory=lambda: next(_counter))

    def content(self) -> bytes:
        lines = [line.encode() for line in self.valid] + [line.encode() for line in self.hostile] + self.random_bytes
        return b"\n".join(lines) + b"\n"

    def records(self) -> int:
        """Records Spark reads: lines that are not blank (Spark trims spaces only)."""
        text_lines = [*self.valid, *self.hostile]
        return sum(1 for line in text_lines if line.strip(" ")) - self.header_lines + sum(
            1 for line in self.random_bytes if line.decode("utf-8", "replace").strip(" ")
        )


def _valid_json_records(batch: Batch, tag: int) -> None:
    for i in range(6):
        user = f"ok-{tag}-{i}"
        source = ("api", "ios_sdk", "android_sdk", "js_tag")[i % 4]
        if i % 2:
            record = {"org_id": ORG, "user_id": user, "ts": TS, "purpose": "analytics", "granted": bool(i % 3), "source": source}
            batch.expected.add((user, "analytics", bool(i % 3)))
        else:
            record = {"org_id": ORG, "user_id": user, "ts": TS, "purposes": {"advertising": True, "email_marketing": False},
                      "source": source}
            batch.expected |= {(user, "advertising", True), (user, "email_marketing", False)}
        batch.valid.append(json.dumps(record))


@st.composite
def hostile_json_record(draw, extra_fields: dict[str, st.SearchStrategy] | None = None) -> str:
    """A JSON object in the record's shape whose fields are random (present or not, any JSON type)."""
    record: dict = {}
    fields = {"org_id": st.just(ORG) | json_values, "user_id": st.just(_PLACEHOLDER) | json_values,
              "ts": st.just(TS) | json_values, "purposes": purposes_maps | json_values,
              "purpose": st.sampled_from(["analytics", "telepathy"]) | json_values, "granted": json_values,
              "source": st.sampled_from(["api", "ios_sdk"]) | json_values, **(extra_fields or {})}
    for name, values in fields.items():
        if draw(st.booleans()):
            record[name] = draw(values)
    for name, value in draw(st.dictionaries(st.text(max_size=6), json_values, max_size=2)).items():
        record.setdefault(name, value)
    text = json.dumps(record, ensure_ascii=draw(st.booleans()))
    return text if draw(st.integers(0, 9)) else text[: draw(st.integers(0, len(text)))]


def hostile_line(record: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    """A hostile text line: mostly ``record`` (in the input's shape), else random JSON or random text."""
    return st.one_of(record, record, record, st.builds(json.dumps, json_values), text_lines)


def _draw_many(strategy: st.SearchStrategy, n: int) -> list:
    """``n`` values of ``strategy`` as Hypothesis generates them (edge cases first), without running Spark per value."""
    drawn: list = []

    @settings(max_examples=n, database=None, phases=(Phase.generate,), deadline=None, suppress_health_check=_CHECKS)
    @given(strategy)
    def collect(value) -> None:
        drawn.append(value)

    collect()
    return drawn


def _hostile(batch: "Batch", record: st.SearchStrategy[str], n: int) -> None:
    """Adds ``n`` hostile lines and a few lines of random bytes to ``batch``; placeholders get ids unique to it."""
    lines = _draw_many(hostile_line(record), n)
    batch.hostile = [line.replace(_PLACEHOLDER, f"fz-{batch.tag}-{i}") for i, line in enumerate(lines)]
    batch.random_bytes = _draw_many(byte_lines, 3)


# --- ingest and check --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def warehouse(spark, base_config, tmp_path_factory):
    root = tmp_path_factory.mktemp("hostile")
    return root, base_config.with_warehouse(root / "warehouse")


def _ingest(spark, cfg, path: Path, fmt: str, tag: int, records: int, expected: set, validate: bool = False):
    """Ingests ``path`` once and checks the counts, the valid records and every quarantine row; returns
    the stored events and quarantine rows."""
    try:
        result = ingest_consent(spark, cfg, str(path), fmt=fmt, batch_id=f"fuzz-{fmt}-{tag}", validate=validate)
    except KetchError as exc:
        raise AssertionError(f"a record-level problem stopped the whole ingest of {path}: {exc}") from None
    assert result.records == records, path
    assert result.read == result.accepted + result.quarantined + result.duplicates
    events = read_table(spark, cfg, "consent_events").where(F.col("batch_id") == result.batch_id).collect()
    quarantine = read_table(spark, cfg, "consent_quarantine").where(F.col("batch_id") == result.batch_id).collect()
    assert len(events) == result.accepted and len(quarantine) == result.quarantined
    stored = {(e["user_id"], e["purpose"], e["granted"]) for e in events}
    assert expected <= stored, (path, sorted(expected - stored))
    for row in quarantine:
        assert row["reason"] in REASONS and row["detail"], (path, row["raw"], row["reason"], row["detail"])
    return events, quarantine


def _ingest_and_check(spark, env, batch: Batch, fmt: str, suffix: str, validate: bool = False) -> None:
    """Ingests ``batch`` as one file; each hostile line is quarantined as it was read, or gave events."""
    root, cfg = env
    path = root / "in" / f"{fmt}-{batch.tag}" / f"input.{suffix}"
    path.parent.mkdir(parents=True)
    path.write_bytes(batch.content())
    events, quarantine = _ingest(spark, cfg, path, fmt, batch.tag, batch.records(), batch.expected, validate)
    quarantined_raws = {row["raw"] for row in quarantine}
    users = {e["user_id"] for e in events}
    for line in batch.hostile:
        if line.strip(" "):
            assert line in quarantined_raws or _user_of(line, fmt) in users, (path, line)
    unseen_bytes = [b for b in batch.random_bytes if b.decode("utf-8", "replace").strip(" ")]
    other_raws = quarantined_raws - set(batch.hostile) - set(batch.valid)
    assert len(other_raws) <= len(unseen_bytes) and (not unseen_bytes or other_raws), (path, other_raws)


def _user_of(line: str, fmt: str) -> str | None:
    """The trimmed user id of a hostile line, when it has one a stored event could carry."""
    if fmt == "csv":
        row = next(csv.reader(io.StringIO(line)), [])
        return row[1].strip() if len(row) > 1 else None
    try:
        record = json.loads(line)
    except ValueError:
        return None
    user = record.get("user_id") if isinstance(record, dict) else None
    return user.strip() if isinstance(user, str) else None


# --- JSON lines (API and SDK log records) --------------------------------------------------------


#: Lines no generator writes by chance: a key given twice, deep nesting, escapes of lone surrogates and NUL.
_SPECIAL_JSON_LINES = [
    f'{{"org_id": "{ORG}", "user_id": "{_PLACEHOLDER}", "user_id": "x", "ts": "{TS}", "purposes": {{"analytics": true}}}}',
    f'{{"org_id": "{ORG}", "user_id": "{_PLACEHOLDER}", "ts": "{TS}", "purposes": {{"analytics": true, "analytics": false}}}}',
    f'{{"org_id": "{ORG}", "user_id": "{_PLACEHOLDER}", "ts": "{TS}", "x": {"[" * 2000}1{"]" * 2000}}}',
    f'{{"org_id": "{ORG}\\ud800", "user_id": "{_PLACEHOLDER}\\udc00", "ts": "{TS}", "purposes": {{"analytics\\u0000": true}}}}',
]


def _json_batch(n: int) -> Batch:
    batch = Batch()
    _valid_json_records(batch, batch.tag)
    _hostile(batch, hostile_json_record(), n)
    batch.hostile += [line.replace(_PLACEHOLDER, f"fz-{batch.tag}-s{i}") for i, line in enumerate(_SPECIAL_JSON_LINES)]
    return batch


def test_hostile_json_lines(spark, warehouse):
    _ingest_and_check(spark, warehouse, _json_batch(_FAST_RECORDS), "json", "jsonl")


@pytest.mark.parametrize("round_", _LARGE_ROUNDS)
def test_hostile_json_lines_many(spark, warehouse, round_):
    # the first round also runs the batch expectations on the hostile records (their sources are random too)
    _ingest_and_check(spark, warehouse, _json_batch(_SLOW_RECORDS), "json", "jsonl", validate=round_ == 0)


# --- CSV with a header ---------------------------------------------------------------------------

_CSV_HEADER = "org_id,user_id,ts,purpose,granted,source"
_csv_cells = st.one_of(st.text(max_size=10), st.sampled_from(["", ORG, TS, "analytics", "true", "0", "yes", '"', '""', ",",
                                                              "a\"b", "  ", "x" * 300]))


@st.composite
def hostile_csv_row(draw) -> str:
    cells = [draw(st.just(ORG) | _csv_cells), draw(st.just(_PLACEHOLDER) | _csv_cells), draw(st.just(TS) | _csv_cells),
             draw(st.sampled_from(["analytics", "telepathy"]) | _csv_cells), draw(_csv_cells), draw(_csv_cells)]
    cells = cells[: draw(st.integers(0, 6))] + draw(st.lists(_csv_cells, max_size=2))
    quoting = draw(st.sampled_from([csv.QUOTE_MINIMAL, csv.QUOTE_ALL, csv.QUOTE_NONE]))
    if quoting == csv.QUOTE_NONE and cells == [""]:
        quoting = csv.QUOTE_ALL  # Python's writer refuses one empty unquoted field: it would read back as no row
    out = io.StringIO()
    csv.writer(out, quoting=quoting, escapechar="\\", lineterminator="").writerow(cells)
    return out.getvalue().replace("\n", " ").replace("\r", " ")


def _csv_batch(n: int) -> Batch:
    batch = Batch(valid=[_CSV_HEADER], header_lines=1)
    for i in range(6):
        user, granted = f"ok-{batch.tag}-{i}", bool(i % 2)
        batch.valid.append(f"{ORG},{user},{TS},{'advertising' if i % 3 else 'analytics'},{str(granted).lower()},file_drop")
        batch.expected.add((user, "advertising" if i % 3 else "analytics", granted))
    _hostile(batch, hostile_csv_row(), n)
    return batch


def test_hostile_csv_rows(spark, warehouse):
    _ingest_and_check(spark, warehouse, _csv_batch(_FAST_RECORDS), "csv", "csv")


@pytest.mark.parametrize("round_", _LARGE_ROUNDS)
def test_hostile_csv_rows_many(spark, warehouse, round_):
    _ingest_and_check(spark, warehouse, _csv_batch(_SLOW_RECORDS), "csv", "csv")


# --- TC and US Privacy strings --------------------------------------------------------------------

_VALID_TC = encode_tc(created=dt.datetime(2026, 11, 1), last_updated=dt.datetime(2026, 11, 19),
                      purposes_consent=(1, 8, 9), purposes_li=(2,))
_TC_VARIANTS = [
    _VALID_TC,
    encode_tc(created=dt.datetime(2026, 11, 1), last_updated=dt.datetime(2026, 11, 19), version=1),
    encode_tc(created=dt.datetime(2026, 11, 1), last_updated=dt.datetime(2026, 11, 19), version=63),
    encode_tc(created=dt.datetime(1970, 1, 1), last_updated=dt.datetime(1970, 1, 1)),
    encode_tc(created=dt.datetime(2026, 11, 1), last_updated=dt.datetime(2090, 1, 1)),
    encode_tc(created=dt.datetime(2026, 11, 1), last_updated=dt.datetime(2026, 11, 19), extra_segment=True),
    base64.urlsafe_b64encode(b"\xff" * 40).decode().rstrip("="),
    base64.urlsafe_b64encode(b"\x00" * 40).decode().rstrip("="),
]
tc_strings = st.one_of(st.sampled_from(_TC_VARIANTS), _mutations(_VALID_TC), st.text(alphabet=_B64URL + ".", max_size=80),
                       st.text(max_size=20), json_values)
us_privacy_strings = st.one_of(st.sampled_from(["1YNN", "1---", "1NYY", "1YN", "1YNNN", "2YNN", "1ynn", " 1YNN ", "1YXN", ""]),
                               _mutations("1YNY"), st.text(max_size=6), json_values)


def _tcf_batch(n: int) -> Batch:
    batch = Batch()
    for i in range(4):
        user = f"ok-{batch.tag}-{i}"
        if i % 2:
            batch.valid.append(json.dumps({"org_id": ORG, "user_id": user, "ts": TS, "tc_string": _VALID_TC, "source": "cmp"}))
            batch.expected |= {(user, "analytics", True), (user, "strictly_necessary", True)}
        else:
            batch.valid.append(json.dumps({"org_id": ORG, "user_id": user, "ts": TS, "us_privacy": "1YYN", "source": "cmp"}))
            batch.expected |= {(user, "data_sale", False)}
    _hostile(batch, hostile_json_record({"tc_string": tc_strings, "us_privacy": us_privacy_strings}), n)
    return batch


def test_hostile_tc_and_us_privacy_strings(spark, warehouse):
    _ingest_and_check(spark, warehouse, _tcf_batch(_FAST_RECORDS), "tcf", "jsonl")


@pytest.mark.parametrize("round_", _LARGE_ROUNDS)
def test_hostile_tc_and_us_privacy_strings_many(spark, warehouse, round_):
    _ingest_and_check(spark, warehouse, _tcf_batch(_SLOW_RECORDS), "tcf", "jsonl")


# --- GPP strings ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def gpp_strings(iab) -> list[str]:
    """Valid GPP strings written by IAB's encoder: one per kind of section, and a few together."""

    def encoded(**sections) -> str:
        model = iab()
        for name, values in sections.items():
            if name == "uspv1":
                model.decodeSection("uspv1", values)
                continue
            for key, value in values.items():
                model.setFieldValue(name, key, value)
        return model.encode()

    return [
        encoded(usnat={"SaleOptOut": 1, "MspaCoveredTransaction": 1}),
        encoded(usca={"SaleOptOut": 2, "SharingOptOut": 1}),
        encoded(usva={"TargetedAdvertisingOptOut": 1}),
        encoded(uspv1="1YYN"),
        encoded(uspv1="1NNN", usnat={"SharingOptOut": 2, "MspaCoveredTransaction": 1}, usco={"SaleOptOut": 1}),
        encoded(tcfeuv2={"CmpId": 7}),
        "DBABLA~BAAQYAAAAgBA.QA",
    ]


@st.composite
def gpp_values(draw, valid: list[str]) -> object:
    """Valid GPP strings, near-valid ones (one character changed, truncated, another header, a section
    twice or empty), random ones and JSON values of other types."""
    base = draw(st.sampled_from(valid))
    header, _, rest = base.partition("~")
    other_header = draw(st.sampled_from([s.partition("~")[0] for s in valid] + ["DBAA", "DBABM", "DBACNY", "CBABLA", "DBABLA"]))
    return draw(st.one_of(
        st.just(base), _mutations(base), st.just(f"{other_header}~{rest}"), st.just(header),
        st.just(f"{base}~{rest}"), st.just(base.replace("~", "~~", 1)), st.text(alphabet=_B64URL + "~.", max_size=60),
        st.text(max_size=20), json_values,
    ))


def _gpp_batch(valid_strings: list[str], n: int) -> Batch:
    batch = Batch()
    first, second = f"ok-{batch.tag}-0", f"ok-{batch.tag}-1"
    batch.valid.append(json.dumps({"org_id": ORG, "user_id": first, "ts": TS, "gpp_string": valid_strings[0]}))
    batch.expected |= {(first, "data_sale", False), (first, "advertising", False)}
    batch.valid.append(json.dumps({"org_id": ORG, "user_id": second, "ts": TS, "purposes": {"analytics": True}}))
    batch.expected.add((second, "analytics", True))
    _hostile(batch, hostile_json_record({"gpp_string": gpp_values(valid_strings)}), n)
    return batch


def test_hostile_gpp_strings(spark, warehouse, gpp_strings):
    _ingest_and_check(spark, warehouse, _gpp_batch(gpp_strings, _FAST_RECORDS), "gpp", "jsonl")


@pytest.mark.parametrize("round_", _LARGE_ROUNDS)
def test_hostile_gpp_strings_many(spark, warehouse, gpp_strings, round_):
    _ingest_and_check(spark, warehouse, _gpp_batch(gpp_strings, _SLOW_RECORDS), "gpp", "jsonl")


# --- Parquet -------------------------------------------------------------------------------------

_PARQUET_SCHEMA = "org_id string, user_id string, ts string, purposes map<string,string>, source string"
_parquet_strings = st.one_of(st.none(), st.text(max_size=10), st.sampled_from(["", " ", ORG, TS, "true", "false", "1", "0",
                                                                               "yes", "y", "t", "maybe", "x" * 300]))
parquet_rows = st.tuples(
    st.just(ORG) | _parquet_strings, st.just(TS) | _parquet_strings,
    st.none() | st.dictionaries(st.sampled_from(["analytics", "advertising", "legacy_profiling", "telepathy"]) | st.text(max_size=6),
                                _parquet_strings, max_size=3),
    _parquet_strings,
)


def test_hostile_parquet_rows(spark, warehouse):
    root, cfg = warehouse
    tag = next(_counter)
    valid = [(ORG, f"ok-{tag}-0", TS, {"analytics": "true", "advertising": "0"}, "api")]
    hostile = [(org, f"fz-{tag}-{i}", ts, purposes, source)
               for i, (org, ts, purposes, source) in enumerate(_draw_many(parquet_rows, _FAST_RECORDS))]
    path = root / "in" / f"parquet-{tag}"
    spark.createDataFrame(valid + hostile, _PARQUET_SCHEMA).coalesce(1).write.parquet(str(path))
    expected = {(f"ok-{tag}-0", "analytics", True), (f"ok-{tag}-0", "advertising", False)}
    events, quarantine = _ingest(spark, cfg, path, "parquet", tag, len(valid) + len(hostile), expected)
    seen = {e["user_id"] for e in events} | {json.loads(row["raw"]).get("user_id") for row in quarantine}
    assert {user for _, user, *_ in hostile} <= seen
    # a choice that is no CSV-style boolean is invalid, as in JSON ("yes" is no grant)
    granted = {(e["user_id"], e["purpose"]): e["granted"] for e in events}
    for _, user, _, purposes, _ in hostile:
        for purpose, value in (purposes or {}).items():
            if (user, purpose.strip()) in granted:
                assert (value or "").strip().lower() in ("true", "false", "1", "0"), (user, purpose, value)


@pytest.mark.parametrize("purposes_type", ["struct<analytics:boolean>", "array<string>", "string"])
def test_a_parquet_purposes_column_that_is_no_map_is_one_schema_error(spark, warehouse, purposes_type):
    root, cfg = warehouse
    path = root / "in" / f"parquet-{next(_counter)}"
    spark.createDataFrame([], f"org_id string, user_id string, ts string, purposes {purposes_type}").write.parquet(str(path))
    with pytest.raises(SchemaError, match=f"{path}.*column purposes is {purposes_type}; expected map<string,boolean>"):
        ingest_consent(spark, cfg, str(path), fmt="parquet")
