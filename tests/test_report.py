"""The HTML compliance report: figures read from the warehouse, one offline file, checked in headless Chromium."""

from __future__ import annotations

import datetime as dt
import json
import struct
import subprocess
import tempfile
from html.parser import HTMLParser
from pathlib import Path

import pytest

from ketch_spark.catalog import AssetCatalog
from ketch_spark.cli import main
from ketch_spark.consent.compact import compact_consent
from ketch_spark.consent.sources import ingest_consent
from ketch_spark.datagen import write_raw_consent
from ketch_spark.report import (
    AssetSummary,
    ComplianceReport,
    DeadlineCounts,
    LateRequest,
    PurposeCoverage,
    StoreSummary,
    Verification,
    render_report,
    store_name,
    write_report,
)
from ketch_spark.rights.engine import run_requests
from ketch_spark.rights.requests import submit_requests
from ketch_spark.tables import read_table

CHROMIUM = Path("/usr/bin/chromium")
needs_chromium = pytest.mark.skipif(
    not CHROMIUM.is_file(),
    reason="Debian's chromium is not installed at /usr/bin/chromium: `make install` adds it (as root), or "
           "`apt-get install chromium`",
)
RECEIPT_SECRET = "report-test-receipt-secret-0123456789"
#: Flags of every Chromium start: headless, no sandbox (root in a container), nothing fetched in the background.
CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync")
NOW = dt.datetime(2026, 11, 30, 12, 0)


# --------------------------------------------------------------------------- helpers


class _Page(HTMLParser):
    """The text of a page: every table row's cells, the SVG texts, the tags used."""

    def __init__(self, markup: str) -> None:
        super().__init__()
        self.rows: list[list[str]] = []
        self.svg_texts: list[str] = []
        self.tags: set[str] = set()
        self.attributes: set[str] = set()
        self._cell: list[str] | None = None
        self._svg_text: list[str] | None = None
        self.feed(markup)
        self.close()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.add(tag)
        self.attributes.update(name for name, _ in attrs)
        if tag == "tr":
            self.rows.append([])
        elif tag in ("td", "th"):
            self._cell = []
        elif tag == "text":
            self._svg_text = []

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self._cell is not None:
            self.rows[-1].append("".join(self._cell).strip())
            self._cell = None
        elif tag == "text" and self._svg_text is not None:
            self.svg_texts.append("".join(self._svg_text).strip())
            self._svg_text = None

    def handle_data(self, data: str) -> None:
        for sink in (self._cell, self._svg_text):
            if sink is not None:
                sink.append(data)


def _chromium(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    profile = tempfile.mkdtemp(prefix="chromium-profile-", dir=tmp_path)
    return subprocess.run([str(CHROMIUM), *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args],
                          capture_output=True, text=True, timeout=180, check=True)


def _open_in_chromium(page: Path, tmp_path: Path) -> tuple[_Page, Path]:
    """The DOM Chromium builds from ``page`` (parsed), and a 1280x2000 screenshot of it."""
    dom = _chromium(tmp_path, "--dump-dom", page.as_uri()).stdout
    assert "<main>" in dom, dom[:2000]
    screenshot = tmp_path / f"{page.stem}.png"
    _chromium(tmp_path, f"--screenshot={screenshot}", "--window-size=1280,2000", page.as_uri())
    return _Page(dom), screenshot


def _assert_a_real_screenshot(screenshot: Path) -> None:
    data = screenshot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert struct.unpack(">II", data[16:24]) == (1280, 2000)
    assert len(data) > 40_000, f"{len(data)} bytes: a blank page?"  # text, tables and bars, not a blank page


def _percent(part: int, whole: int) -> str:
    return f"{part / whole * 100:.1f}%"


# --------------------------------------------------------------------------- rendering (no Spark)


def _sample_report() -> ComplianceReport:
    return ComplianceReport(
        warehouse="s3a://lake/ketch",
        generated_at=NOW,
        consent_version=12,
        purposes=[PurposeCoverage("analytics", "consent", 2000, 1500, 1234, 1234, 0.617),
                  PurposeCoverage("product_improvement", "legitimate_interest", 2000, 900, 700, 1800, 0.9)],
        deadlines=[DeadlineCounts("access", met=3, overdue=1), DeadlineCounts("erasure", met=40, missed=2, open=5)],
        late_requests=[LateRequest("r-7", "erasure", "done", "missed", NOW - dt.timedelta(days=3), NOW),
                       LateRequest("r-9", "access", "open", "overdue", NOW - dt.timedelta(days=1), None)],
        stores=[StoreSummary("s3", "json", 3, 2, 11, ("email", "ip_address")),
                StoreSummary("postgres", "jdbc", 9, 4, 23, ("email", "phone"))],
        assets=[AssetSummary("s3", "s3a://raw/<logs>", "json", 7, ("email", "ip_address"))],
        verifications=[Verification("s3a://raw/<logs>", "ok", 0, ("r-7",), "run-1", NOW, None),
                       Verification("public.users", "failed", 2, ("r-8",), "run-1", NOW, "2 row(s) still match")],
    )


def test_every_value_is_escaped_and_nothing_is_loaded_from_elsewhere():
    report = _sample_report()
    report.assets = [AssetSummary("s3", "s3a://raw/<script>alert(1)</script>", "json", 1, ("email",))]
    markup = render_report(report)
    page = _Page(markup)
    assert "<script" not in markup and "&lt;script&gt;alert(1)&lt;/script&gt;" in markup
    assert page.tags.isdisjoint({"script", "img", "link", "iframe", "object", "embed"})
    assert page.attributes.isdisjoint({"src", "href", "onload", "onerror"}) and "url(" not in markup
    assert "default-src 'none'" in markup  # the page's own policy forbids loading anything
    assert page.tags >= {"svg", "rect", "text", "table", "style"}


def test_sections_without_tables_say_so_in_a_sentence():
    markup = render_report(ComplianceReport(warehouse="/tmp/empty", generated_at=NOW))
    for sentence in ("No consent state yet", "No data-subject requests yet", "No catalog yet",
                     "No erasure has been verified yet"):
        assert sentence in markup
    assert "<svg" not in markup and "<table" not in markup


def test_store_names_say_system_and_format():
    assert [store_name("s3", "json"), store_name("file", "delta"), store_name("dynamodb", "dynamodb"),
            store_name("postgres", None)] == ["s3 · json", "file · delta", "dynamodb", "postgres"]


@needs_chromium
def test_chromium_shows_the_figures_of_a_report(tmp_path):
    out = tmp_path / "report.html"
    out.write_text(render_report(_sample_report()), encoding="utf-8")
    page, screenshot = _open_in_chromium(out, tmp_path)

    assert ["analytics", "consent", "1,234", "1,234", "1,500", "61.7%"] in page.rows
    assert ["product_improvement", "legitimate_interest", "1,800", "700", "900", "90.0%"] in page.rows
    assert ["erasure", "40", "2", "0", "5", "47"] in page.rows and ["access", "3", "0", "1", "0", "4"] in page.rows
    assert ["r-9", "access", "open", "missed (open, overdue)", "2026-11-29 12:00 UTC", "–"] in page.rows
    assert ["s3 · json", "3", "2", "11", "email, ip_address"] in page.rows
    assert ["s3a://raw/<logs>", "s3 · json", "7", "email, ip_address"] in page.rows
    assert ["public.users", "failed", "2", "r-8", "2026-11-30 12:00 UTC", "2 row(s) still match"] in page.rows
    assert {"61.7%", "90.0%", "23 columns", "1 of 2"} <= set(page.svg_texts)
    _assert_a_real_screenshot(screenshot)


# --------------------------------------------------------------------------- from a warehouse


def test_an_empty_warehouse_gives_sentences_and_creates_no_table(spark, cfg, tmp_path, capsys):
    conf = tmp_path / "ketch.yaml"
    conf.write_text(f"warehouse: {cfg.warehouse}\npolicy: {cfg.policy_path}\n")
    out = tmp_path / "out" / "report.html"
    assert main(["report", "--out", str(out), "--conf", str(conf)]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["command"] == "report" and summary["status"] == "ok" and summary["out"] == str(out)
    assert (summary["purposes"], summary["requests"], summary["stores"], summary["verifications"]) == (0, 0, 0, 0)
    markup = out.read_text()
    assert "No consent state yet" in markup and "No catalog yet" in markup
    assert not Path(cfg.warehouse).exists()  # reading made no table


def test_out_must_name_a_file(tmp_path, capsys):
    conf = tmp_path / "ketch.yaml"
    conf.write_text(f"warehouse: {tmp_path / 'wh'}\npolicy: {Path(__file__).parent.parent / 'conf' / 'policy.yaml'}\n")
    assert main(["report", "--out", str(tmp_path), "--conf", str(conf)]) == 1
    assert f"--out {tmp_path} is a folder" in json.loads(capsys.readouterr().out.strip().splitlines()[-1])["error"]


CONTACTS = [("org-a", f"u-{i}", f"contact{i}@example.com", f"+1415555{1000 + i}") for i in range(30)]
LATE_EMAIL, ON_TIME_EMAIL = "contact3@example.com", "contact4@example.com"


def _request(request_id: str, kind: str, email: str, received: dt.datetime) -> dict:
    request = {"request_id": request_id, "org_id": "org-a", "kind": kind, "identities": {"email": email},
               "received_at": received.strftime("%Y-%m-%dT%H:%M:%SZ")}
    return {**request, "mode": "delete"} if kind == "erasure" else request


@pytest.fixture(scope="module")
def warehouse(spark, base_config, tmp_path_factory):
    """A small warehouse: consent state, a scanned lake, requests met, missed, overdue and open.

    Returns the config and a ketch.yaml naming it.
    """
    root = tmp_path_factory.mktemp("report")
    cfg = base_config.with_warehouse(root / "warehouse")
    now = dt.datetime.now(dt.timezone.utc)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(cfg.dsr.receipt_secret_env, RECEIPT_SECRET)
        drops = write_raw_consent(spark, cfg.policy(), root / "drops", fmt="json", n_users=60)
        ingest_consent(spark, cfg, drops)
        compact_consent(spark, cfg)
        lake = root / "lake"
        spark.createDataFrame(CONTACTS, "org_id string, user_id string, email string, phone string") \
            .write.parquet(str(lake / "contacts"))
        spark.createDataFrame([(org, user, f"page-{n}") for org, user, _, _ in CONTACTS for n in range(2)],
                              "org_id string, user_id string, page string").write.format("delta").save(str(lake / "events"))
        AssetCatalog(spark, cfg).scan(str(lake))
        submit_requests(spark, cfg, [_request("late-1", "erasure", LATE_EMAIL, now - dt.timedelta(days=45)),
                                     _request("on-time-1", "erasure", ON_TIME_EMAIL, now - dt.timedelta(days=2))])
        run_requests(spark, cfg)
    submit_requests(spark, cfg, [_request("overdue-1", "access", "contact5@example.com", now - dt.timedelta(days=40)),
                                 _request("open-1", "access", "contact6@example.com", now)])
    conf = root / "ketch.yaml"
    conf.write_text(f"warehouse: {cfg.warehouse}\npolicy: {cfg.policy_path}\n")
    return cfg, conf


def _bit(words: list[int], bit: int) -> bool:
    index, offset = divmod(bit, 64)
    return index < len(words) and (words[index] >> offset) & 1 == 1


def _expected_consent_rows(spark, cfg) -> list[list[str]]:
    """The consent table's rows, computed here from consent/state's bitmaps."""
    state = read_table(spark, cfg, "consent_state").select("granted", "known").collect()
    rows = []
    for purpose in cfg.policy().active:
        known = sum(_bit(r.known, purpose.bit) for r in state)
        granted = sum(_bit(r.granted, purpose.bit) for r in state)
        allowed = sum(_bit(r.granted, purpose.bit) or (not _bit(r.known, purpose.bit) and purpose.default_allowed)
                      for r in state)
        rows.append([purpose.name, purpose.legal_basis, f"{allowed:,}", f"{granted:,}", f"{known:,}",
                     _percent(allowed, len(state))])
    return rows


def _expected_deadline_rows(spark, cfg, now: dt.datetime) -> list[list[str]]:
    """Per kind: met, missed (done late), overdue, open, all; from dsr/requests."""
    counts: dict[str, list[int]] = {}
    for r in read_table(spark, cfg, "dsr_requests").collect():
        done = r.status == "done"
        outcome = (0 if done and r.finished_at <= r.due_at else 1 if done else 2 if r.due_at < now else 3)
        counts.setdefault(r.kind, [0, 0, 0, 0])[outcome] += 1
    return [[kind, *(str(n) for n in numbers), str(sum(numbers))] for kind, numbers in sorted(counts.items())]


def _expected_store_rows(spark, cfg) -> list[list[str]]:
    """Per store (system, format): assets, assets with personal data, personal columns, categories."""
    assets = {r.asset_id: (r.system, r.format) for r in read_table(spark, cfg, "catalog_assets").collect()
              if r.status != "gone"}
    personal = [r for r in read_table(spark, cfg, "catalog_columns").collect()
                if r.category is not None and r.asset_id in assets]
    rows = []
    for store in sorted(set(assets.values()), key=lambda s: (s[0], s[1] or "")):
        mine = [c for c in personal if assets[c.asset_id] == store]
        rows.append([store_name(*store), str(sum(1 for s in assets.values() if s == store)),
                     str(len({c.asset_id for c in mine})), str(len(mine)),
                     ", ".join(sorted({c.category for c in mine})) or "–"])
    return rows


def _expected_verification_rows(spark, cfg) -> list[tuple[str, str, str]]:
    """Each asset's last verify row in dsr/audit: location, status, rows still matching."""
    latest: dict[str, object] = {}
    for r in read_table(spark, cfg, "dsr_audit").where("action = 'verify'").collect():
        if r.asset_id not in latest or (r.finished_at, r.run_id) > (latest[r.asset_id].finished_at,
                                                                    latest[r.asset_id].run_id):
            latest[r.asset_id] = r
    return sorted((r.location, r.status, "–" if r.rows_matched is None else f"{r.rows_matched:,}")
                  for r in latest.values())


@pytest.mark.slow
@needs_chromium
def test_a_warehouse_report_shows_its_figures_in_chromium(spark, warehouse, tmp_path, capsys):
    cfg, conf = warehouse
    out = tmp_path / "report.html"
    now = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)
    report = write_report(spark, cfg, out, now=now)
    page, screenshot = _open_in_chromium(out, tmp_path)

    consent_rows = _expected_consent_rows(spark, cfg)
    assert len(consent_rows) == len(cfg.policy().active) and all(row in page.rows for row in consent_rows)
    assert {row[-1] for row in consent_rows} <= set(page.svg_texts)
    deadline_rows = _expected_deadline_rows(spark, cfg, now)
    assert deadline_rows == [["access", "0", "0", "1", "1", "2"], ["erasure", "1", "1", "0", "0", "2"]]
    assert all(row in page.rows for row in deadline_rows)
    late = {row[0]: row[3] for row in page.rows if row and row[0] in ("late-1", "overdue-1", "on-time-1", "open-1")}
    assert late == {"late-1": "missed (done late)", "overdue-1": "missed (open, overdue)"}
    store_rows = _expected_store_rows(spark, cfg)
    assert ["file · parquet", "1", "1"] == store_rows[-1][:3] and all(row in page.rows for row in store_rows)
    verifications = _expected_verification_rows(spark, cfg)
    assert verifications and all(status == "ok" for _, status, _ in verifications)
    shown = {(row[0], row[1], row[2]) for row in page.rows if len(row) == 6 and row[1] in ("ok", "failed")}
    assert set(verifications) <= shown and f"{len(verifications)} of {len(verifications)}" in page.svg_texts
    markup = out.read_text()
    assert "@example.com" not in markup and "+1415555" not in markup  # no identity value in the report
    _assert_a_real_screenshot(screenshot)

    assert main(["report", "--out", str(tmp_path / "cli.html"), "--conf", str(conf)]) == 0
    captured = capsys.readouterr()
    summary = json.loads(captured.out.strip().splitlines()[-1])
    assert summary["status"] == "ok" and summary["out"] == str(tmp_path / "cli.html")
    expected = report.summary()
    assert {key: summary[key] for key in expected} == expected
    assert (summary["deadlines_met"], summary["deadlines_missed"], summary["deadlines_overdue"]) == (1, 1, 1)
    assert "ketch-spark report [" in captured.err and "personal data by store" in captured.err
    assert _Page((tmp_path / "cli.html").read_text()).rows == _Page(markup).rows
