"""Rights end to end: batched erasure (delete, obfuscate) and access over Delta and Parquet on s3a
(moto server), gzip JSON-lines logs and a partitioned CSV dataset on file://; verification, purge and
vacuum, audit, receipts, crash recovery."""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import json
import os
import stat
import zipfile
from pathlib import Path

import pytest
from chispa import assert_df_equality
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from ketch_spark.catalog import AssetCatalog
from ketch_spark.config import dsr_settings_from_mapping
from ketch_spark.rights.engine import rights_assets, run_requests
from ketch_spark.rights.receipts import read_receipt_file, verify_receipt
from ketch_spark.rights.requests import read_requests, submit_requests
from services import with_connectors

RECEIPT_SECRET = "receipt-secret-for-tests-0123456789"
JANE = " Jane.Doe@Example.COM "          # mixed case with spaces: matches jane.doe@example.com
JOSE = "José.Müller@Exämple.com"         # unicode, obfuscated
INJECTION = "x' OR '1'='1"               # a user id that must match itself only
BOB = "bob.smith@example.org"            # access request
NOBODY = "nobody@nowhere.example"        # found in no store

PEOPLE = [
    # user_id, email, phone, name, org
    ("u-1", "jane.doe@example.com", "+14155550101", "Jane Doe", "org-a"),
    ("u-2", "bob.smith@example.org", "+442071234567", "Bob Smith", "org-a"),
    ("u-3", "josé.müller@exämple.com", "+4930123456", "José Müller", "org-a"),
    (INJECTION, "eve@example.net", "+33142685300", "Eve Attacker", "org-a"),
    ("u-5", "maria.garcia@example.net", "+34911234567", "Maria Garcia", "org-a"),
    ("u-6", "li.wei@example.cn", "+861012345678", "Li Wei", "org-a"),
]


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _customers(spark) -> DataFrame:
    rows = []
    for i in range(60):  # the six people plus filler customers, spread over several files
        user_id, email, phone, name, org = PEOPLE[i] if i < len(PEOPLE) else (
            f"u-{100 + i}", f"filler{i}@example.com", f"+1415555{1000 + i}", f"Filler {i}", "org-a")
        rows.append((i, org, user_id, email, phone, name, ["female", "male"][i % 2], "25-34", "50k-75k", "active",
                     False, (( _sha(email.lower()),),)))
    schema = ("customer_id long, org_id string, user_id string, email string, phone string, full_name string, "
              "gender string, age_range string, household_income string, customer_status string, is_deleted boolean, "
              "profile struct<contact: struct<email_sha256: string>>")
    return spark.createDataFrame(rows, schema).repartition(6, "customer_id")


def _events(spark) -> DataFrame:
    rows = [(f"u-{1 + i % 6}" if i % 6 != 3 else INJECTION, "org-a", f"page-{i}", f"2026-11-0{1 + i % 3}")
            for i in range(48)]
    rows += [("u-2", "org-b", "other-org", "2026-11-01")]  # same user id in another org: not Bob
    return spark.createDataFrame(rows, "user_id string, org_id string, page string, event_date string")


def _write_logs(folder: Path) -> None:
    folder.mkdir(parents=True)
    for part in range(4):
        with gzip.open(folder / f"part-{part:04d}.jsonl.gz", "wt", encoding="utf-8") as handle:
            for line in range(12):
                user_id, email, _, name, org = PEOPLE[(part * 12 + line) % len(PEOPLE)] if part < 3 else \
                    (f"u-{200 + line}", f"log{line}@example.com", "", f"Log {line}", "org-a")
                record = {"ts": f"2026-11-0{part + 1}T10:{line:02d}:00Z", "org_id": org,
                          "user": {"id": user_id, "name": name, "contact": {"email": email}},
                          "event": "login", "n": line}
                handle.write(json.dumps(record, ensure_ascii=False) + "\n")


def _write_signups(folder: Path) -> None:
    for country, people in (("US", PEOPLE[:3]), ("DE", PEOPLE[3:5]), ("FR", [])):
        target = folder / f"country={country}"
        target.mkdir(parents=True)
        lines = ["signup_email,signup_phone,plan"]
        lines += [f"{email},{phone},pro" for _, email, phone, _, _ in people]
        lines += [f"someone{i}.{country.lower()}@example.com,+1212555{2000 + i},free" for i in range(5)]
        (target / "part-00000.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")


@dataclasses.dataclass
class Lake:
    root: Path
    customers: str
    events: str
    logs: str
    signups: str

    @property
    def uris(self) -> list[str]:
        return [self.customers, self.events, self.logs, self.signups]


def _build_lake(spark, moto, root: Path, bucket: str) -> Lake:
    s3 = moto.client("s3")
    s3.create_bucket(Bucket=bucket)
    customers = f"s3a://{bucket}/crm/customers"
    (_customers(spark).write.format("delta")
     .option("delta.enableDeletionVectors", "true").option("delta.enableChangeDataFeed", "true")
     .save(customers))
    events = f"s3a://{bucket}/events"
    _events(spark).repartition(3).write.partitionBy("event_date").parquet(events)
    _write_logs(root / "raw" / "logs")
    _write_signups(root / "signups")
    return Lake(root, customers, events, f"file://{root}/raw/logs", f"file://{root}/signups")


def _rights_cfg(services_cfg, **dsr):
    settings = dsr_settings_from_mapping({"vacuum_retention_hours": 0, "allow_short_retention": True,
                                          "default_phone_region": "US", **dsr})
    return dataclasses.replace(services_cfg, dsr=settings)


def _requests():
    return [
        {"request_id": "r-jane", "org_id": "org-a", "kind": "erasure", "mode": "delete",
         "identities": {"email": JANE, "user_id": " u-1 "}, "received_at": "2026-11-26T10:00:00Z"},
        {"request_id": "r-injection", "org_id": "org-a", "kind": "erasure", "mode": "delete",
         "identities": {"user_id": INJECTION}},
        {"request_id": "r-jose", "org_id": "org-a", "kind": "erasure", "mode": "obfuscate",
         "identities": {"email": JOSE, "user_id": "u-3"}},
        {"request_id": "r-nobody", "org_id": "org-a", "kind": "erasure", "mode": "delete",
         "identities": {"email": NOBODY}},
        {"request_id": "r-bob", "org_id": "org-a", "kind": "access", "identities": {"email": BOB, "user_id": "u-2"}},
        {"request_id": "r-nobody-access", "org_id": "org-a", "kind": "access", "identities": {"email": NOBODY}},
    ]


def _file_digests(root: Path) -> dict[str, str]:
    """sha256 of every file under root/raw and root/signups, by path relative to root."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for folder in ("raw", "signups") for p in sorted((root / folder).rglob("*")) if p.is_file()}


def _snapshot(spark, lake: Lake) -> dict[str, DataFrame]:
    return {
        "customers": spark.read.format("delta").load(lake.customers).cache(),
        "events": spark.read.parquet(lake.events).cache(),
        "logs": spark.read.json(f"{lake.logs}/*.jsonl.gz").cache(),
        "signups": spark.read.option("header", True).csv(lake.signups).cache(),
    }


ERASED_EMAILS = ("jane.doe@example.com", "eve@example.net")
ERASED_USERS = ("u-1", INJECTION)


@pytest.fixture(scope="module")
def scenario(spark, moto_server, s3a_spark, services_connectors, tmp_path_factory):
    """One lake, catalogued, with the batch of requests submitted and a dry run, then the real run."""
    root = tmp_path_factory.mktemp("rights-lake")
    lake = _build_lake(spark, moto_server, root, "rights-lake")
    from ketch_spark.config import load_config

    base = load_config(Path(__file__).resolve().parent.parent / "conf" / "ketch.yaml").with_warehouse(root / "wh")
    cfg = _rights_cfg(with_connectors(base, services_connectors))
    scan = AssetCatalog(spark, cfg).scan(*lake.uris)
    assert scan.errors == 0, scan.error_assets
    before = {name: df.collect() for name, df in _snapshot(spark, lake).items()}
    digests = _file_digests(root)
    submitted = submit_requests(spark, cfg, _requests())
    os.environ["KETCH_RECEIPT_SECRET"] = RECEIPT_SECRET
    try:
        dry = run_requests(spark, cfg, dry_run=True)
        after_dry = _file_digests(root)
        result = run_requests(spark, cfg)
    finally:
        os.environ.pop("KETCH_RECEIPT_SECRET", None)
    return dict(lake=lake, cfg=cfg, before=before, digests=digests, submitted=submitted, dry=dry,
                after_dry=after_dry, result=result)


def test_catalog_gives_the_rights_engine_every_identity_column(spark, scenario):
    assets = {a.location.rsplit("/", 1)[-1]: a for a in rights_assets(spark, scenario["cfg"])}
    columns = {name: {(c.column, c.identity_type) for c in a.identity_columns} for name, a in assets.items()}
    assert ("email", "email") in columns["customers"] and ("profile.contact.email_sha256", "email_sha256") in \
        columns["customers"]
    assert ("user_id", "user_id") in columns["events"]
    assert ("user.contact.email", "email") in columns["logs"]
    assert ("signup_email", "email") in columns["signups"] and ("signup_phone", "phone") in columns["signups"]


def test_dry_run_counts_rows_per_request_and_changes_nothing(scenario):
    dry = scenario["dry"]
    assert scenario["after_dry"] == scenario["digests"]
    touch = dry.would_touch
    customers = next(loc for loc in touch["r-jane"] if loc.endswith("customers"))
    assert touch["r-jane"][customers] == 1 and touch["r-injection"][customers] == 1
    events = next(loc for loc in touch["r-jane"] if loc.endswith("events"))
    assert touch["r-injection"][events] == 8 and touch["r-bob"][events] == 8  # org-b's u-2 is not Bob
    assert touch["r-jane"][events] == 8
    assert all(count == 0 for count in touch["r-nobody"].values())
    assert not dry.done and not dry.failed


def test_erased_subjects_are_gone_and_every_other_row_is_unchanged(spark, scenario):
    result, lake = scenario["result"], scenario["lake"]
    assert sorted(result.done) == ["r-bob", "r-injection", "r-jane", "r-jose", "r-nobody", "r-nobody-access"], \
        [a for a in result.summary()["assets"] if a["status"] != "ok"]
    after = _snapshot(spark, lake)
    before = {name: spark.createDataFrame(rows, after[name].schema) for name, rows in scenario["before"].items()}
    erased_customer = F.col("email").isin(*ERASED_EMAILS) | F.col("user_id").isin(*ERASED_USERS)
    jose = F.col("user_id") == "u-3"
    assert_df_equality(after["customers"].where(~jose), before["customers"].where(~erased_customer & ~jose),
                       ignore_row_order=True)
    assert_df_equality(after["events"].where(F.col("user_id") != "u-3"),
                       before["events"].where(~((F.col("user_id").isin(*ERASED_USERS)) & (F.col("org_id") == "org-a"))
                                              & (F.col("user_id") != "u-3")), ignore_row_order=True)
    erased_log = F.col("user.contact.email").isin(*ERASED_EMAILS) | F.col("user.id").isin(*ERASED_USERS)
    jose_log = F.col("user.contact.email") == "josé.müller@exämple.com"
    assert_df_equality(after["logs"].where(F.col("user.id") != "u-3"),
                       before["logs"].where(~erased_log & ~jose_log), ignore_row_order=True)
    jose_signup = F.col("signup_email") == "josé.müller@exämple.com"
    assert_df_equality(after["signups"].where(F.col("signup_email").isNotNull()),
                       before["signups"].where((F.col("signup_email") != "jane.doe@example.com") & ~jose_signup),
                       ignore_row_order=True, ignore_nullable=True)  # eve's signup holds no user id: it stays
    assert after["signups"].where(F.col("signup_email").isNull()).count() == 1  # José's row, obfuscated


def test_obfuscated_subject_keeps_rows_without_identities(spark, scenario):
    lake = scenario["lake"]
    obfuscated = spark.read.format("delta").load(lake.customers).where(F.col("email").isNull()).collect()
    assert len(obfuscated) == 1
    jose = obfuscated[0]
    assert jose["user_id"] is None and jose["phone"] is None and jose["customer_id"] is None  # identity columns
    assert jose["profile"]["contact"]["email_sha256"] is None
    assert jose["gender"] is None and jose["age_range"] is None  # personal categories: the default rule (null)
    assert jose["customer_status"] == "active" and jose["is_deleted"] is False  # not personal: kept
    logs = spark.read.json(f"{lake.logs}/*.jsonl.gz")
    assert logs.where(F.col("user.contact.email").contains("müller")).count() == 0
    assert logs.where(F.col("user.id") == "u-3").count() == 0
    assert logs.where(F.col("user.id").isNull()).count() == 6  # José's six log lines, kept without identities


def test_files_without_a_match_are_byte_identical(scenario):
    root = scenario["lake"].root
    after = _file_digests(root)
    before = scenario["digests"]
    unchanged = {k for k in before if after.get(k) == before[k]}
    assert "raw/logs/part-0003.jsonl.gz" in unchanged and "signups/country=FR/part-00000.csv" in unchanged
    assert "raw/logs/part-0000.jsonl.gz" not in unchanged and "signups/country=US/part-00000.csv" not in unchanged
    assert set(after) == set(before)  # same names, partitions kept, no staging left behind


def test_no_readable_delta_version_holds_an_erased_row(spark, scenario):
    from delta.tables import DeltaTable

    lake = scenario["lake"]
    history = DeltaTable.forPath(spark, lake.customers).history().select("version").collect()
    readable = 0
    for row in history:
        try:
            df = spark.read.format("delta").option("versionAsOf", row["version"]).load(lake.customers)
            found = df.where(F.col("email").isin(*ERASED_EMAILS)).count()
        except Exception:  # noqa: BLE001 - files vacuumed: the version is no longer readable
            continue
        readable += 1
        assert found == 0, f"version {row['version']} still holds an erased row"
    assert readable >= 1


def test_exports_hold_exactly_the_subjects_rows_owner_only(spark, scenario):
    result = scenario["result"]
    folder = Path(result.exports["r-bob"])
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["found"] and manifest["request"]["request_id"] == "r-bob"
    assert "bob.smith@example.org" not in json.dumps(manifest["request"])
    by_name = {a["location"].rsplit("/", 1)[-1]: a for a in manifest["assets"]}
    assert by_name["customers"]["rows"] == 1 and by_name["events"]["rows"] == 8 and by_name["logs"]["rows"] == 6
    for asset in manifest["assets"]:
        path = folder / asset["file"]
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        docs = [json.loads(line) for line in path.read_text().splitlines()]
        assert len(docs) == asset["rows"]
        for doc in docs:
            text = json.dumps(doc, ensure_ascii=False)
            assert "bob.smith@example.org" in text or '"u-2"' in text
            assert "jane" not in text.lower()
    with zipfile.ZipFile(folder / "r-bob.zip") as archive:
        assert sorted(archive.namelist()) == sorted(["r-bob/manifest.json"] + [f"r-bob/{a['file']}"
                                                                              for a in manifest["assets"]])
    empty = json.loads((Path(result.exports["r-nobody-access"]) / "manifest.json").read_text())
    assert empty["found"] is False and empty["assets"] == [] and "no data" in empty["note"]


def test_audit_and_receipts_are_complete_and_hold_no_identity(spark, scenario):
    cfg, result = scenario["cfg"], scenario["result"]
    from ketch_spark.rights.audit import read_audit

    audit = read_audit(spark, cfg)
    rows = audit.collect()
    actions = {(r["location"].rsplit("/", 1)[-1], r["action"], r["mode"]) for r in rows}
    for name in ("customers", "events", "logs", "signups"):
        assert (name, "erase", "delete") in actions and (name, "verify", "delete") in actions
        assert (name, "export", None) in actions
    assert all(r["status"] == "ok" for r in rows)
    text = json.dumps([r.asDict(recursive=True) for r in rows], default=str)
    for raw in ("jane.doe@example.com", "eve@example.net", "josé", INJECTION, BOB, NOBODY):
        assert raw.lower() not in text.lower()
    delete_rows = [r for r in rows if r["action"] == "erase" and r["mode"] == "delete"]
    customers = next(r for r in delete_rows if r["location"].endswith("customers"))
    assert customers["rows_changed"] == 2 and customers["rows_by_request"] == {"r-jane": 1, "r-injection": 1}
    logs = next(r for r in delete_rows if r["location"].endswith("logs"))
    assert logs["files_rewritten"] == logs["files_matched"] == 3 and logs["bytes_rewritten"] > 0
    receipt = read_receipt_file(result.receipts["r-jane"])
    assert verify_receipt(receipt, RECEIPT_SECRET.encode())
    assert {a["location"].rsplit("/", 1)[-1] for a in receipt["assets"]} == {"customers", "events", "logs",
                                                                               "signups"}
    assert all(a["verified"] for a in receipt["assets"]) and receipt["rows_erased"] >= 3
    assert "jane.doe" not in json.dumps(receipt).lower() and "u-1" not in json.dumps(receipt)
    receipt["rows_erased"] += 1
    assert not verify_receipt(receipt, RECEIPT_SECRET.encode())
    statuses = {r["request_id"]: r["status"] for r in read_requests(spark, cfg).collect()}
    assert set(statuses.values()) == {"done"}
    again = run_requests(spark, cfg, dry_run=True)
    assert again.requests == []
    # without the receipt secret a dry run cannot key the ledger: it skips the sweep and says which assets
    assert {loc.rsplit("/", 1)[-1] for loc in again.ledger_unchecked} == {"customers", "events", "logs", "signups"}


def test_a_tables_delete_and_obfuscate_batches_share_one_purge(spark, scenario):
    from delta.tables import DeltaTable

    audit = [r for r in scenario["result"].assets if r["location"].endswith("customers") and r["action"] == "erase"]
    assert sorted(r["mode"] for r in audit) == ["delete", "obfuscate"]
    operations = [r["operation"] for r in DeltaTable.forPath(spark, scenario["lake"].customers).history()
                  .orderBy("version").collect()]
    # one statement per batch, then one purge of the deletion vectors both left
    assert operations[operations.index("DELETE"):] == ["DELETE", "UPDATE", "REORG"], operations


@pytest.mark.parametrize("hours", [168, 0])
def test_vacuum_runs_only_once_a_removed_file_can_have_passed_the_retention(spark, base_config, tmp_path, caplog,
                                                                           hours):
    import logging

    from ketch_spark.connectors import Asset, connector_for
    from ketch_spark.connectors.base import PersonalColumn
    from ketch_spark.rights.match import IDENTITIES_SCHEMA

    location = f"file://{tmp_path / 'young'}"
    spark.createDataFrame([("org-a", "u-1"), ("org-a", "u-2")], "org_id string, user_id string") \
        .coalesce(1).write.format("delta").save(location)
    settings = dsr_settings_from_mapping({"vacuum_retention_hours": hours, "allow_short_retention": True})
    cfg = dataclasses.replace(base_config, dsr=settings)
    asset = Asset("file", location, "young", "delta",
                  personal_columns=(PersonalColumn("user_id", "user_id", "user_id"),))
    identities = spark.createDataFrame([("r-1", "org-a", "user_id", "u-1")], IDENTITIES_SCHEMA)
    with caplog.at_level(logging.INFO, logger="ketch_spark.connectors.delta_rights"):
        counts = connector_for(location, spark, cfg).erase(asset, identities, "delete")
    assert counts.rows_changed == 1
    skipped = [r for r in caplog.records if "VACUUM of" in r.getMessage() and "skipped" in r.getMessage()]
    # a table younger than the retention has no removed file VACUUM could delete: not vacuumed
    assert bool(skipped) == (hours == 168)
    stored = {p.name for p in (tmp_path / "young").glob("*.parquet")}
    assert len(stored) == (2 if hours else 1)  # with no retention the erased file is gone at once


def test_an_asset_erased_in_both_modes_is_verified_once_and_a_failure_still_names_its_requests(spark, base_config):
    from ketch_spark.connectors import Asset
    from ketch_spark.connectors.base import EraseCounts, VerifyResult
    from ketch_spark.rights import engine

    class Store:  # a connector whose re-query still finds the subject called "stuck"
        def __init__(self):
            self.checked = []

        def verify(self, asset, identities_df, erased):
            values = sorted(r["value"] for r in identities_df.collect())
            self.checked.append(values)
            return VerifyResult(remaining=1 if "stuck" in values else 0)

    def request(request_id, mode, user_id):
        return engine._Request(request_id, "org-a", "erasure", mode, {"user_id": user_id}, {})

    asset = Asset("file", "file:///lake/t", "t", "delta")
    for stuck, expected_calls in ((False, 1), (True, 3)):
        run = engine._Run(spark, base_config, [], dry_run=True)
        deleted, obfuscated = [request("r-del", "delete", "u-1")], [request("r-obf", "obfuscate",
                                                                              "stuck" if stuck else "u-2")]
        entries = [(asset, deleted, "delete"), (asset, obfuscated, "obfuscate")]
        frames = [run.identities(batch) for _, batch, _ in entries]
        counts = [EraseCounts(version_before=3, version_after=5), EraseCounts(version_before=4, version_after=5)]
        store = Store()
        shared = engine._shared_verifications(run, store, entries, frames, counts)
        rows = [engine._verify_row(run, store, asset, batch, frame, mode, c, shared.get(asset.asset_id))
                for (_, batch, mode), frame, c in zip(entries, frames, counts)]
        assert len(store.checked) == expected_calls  # one shared re-query; when it fails, one per mode
        assert [r.status for r in rows] == (["ok", "failed"] if stuck else ["ok", "ok"])
        assert set(run.errors) == ({"r-obf"} if stuck else set())
