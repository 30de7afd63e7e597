"""The real-schema corpus: well-formed files, labels matching the leaves, coverage, and a runnable evaluation.

No Spark session is needed: the corpus is plain JSON and the classifier works on collected rows.
"""

from __future__ import annotations

import json
from collections import Counter

import pytest

from ketch_spark.catalog.classify import CATEGORIES, leaf_values
from real_schema_corpus import (
    CORPUS_DIR,
    EVALUATED_IDENTITY_TYPES,
    FAMILY_OF_SYSTEM,
    CorpusAsset,
    current_classifier,
    evaluate,
    load_corpus,
)

_FILES = sorted(CORPUS_DIR.glob("*.json"))
_FAMILIES = (
    "event_trackers",
    "crm_marketing",
    "payments_commerce",
    "identity_providers",
    "ad_platforms",
    "change_data_capture",
    "logs",
)


@pytest.fixture(scope="module")
def corpus() -> list[CorpusAsset]:
    return load_corpus()


def test_corpus_files_exist():
    assert len(_FILES) >= 26


@pytest.mark.parametrize("file", _FILES, ids=[f.stem for f in _FILES])
def test_asset_file_is_well_formed(file):
    (asset,) = [a for a in load_corpus(file.parent) if a.path == file]
    assert asset.system in FAMILY_OF_SYSTEM, f"{file.name}: system {asset.system!r} has no family"
    assert asset.object and asset.asset
    assert asset.reference.startswith("https://")
    assert 20 <= len(asset.rows) <= 40
    leaves = leaf_values(asset.rows)
    assert set(asset.labels) == set(leaves), (
        f"{file.name}: unlabelled paths {sorted(set(leaves) - set(asset.labels))}, "
        f"labels without a leaf {sorted(set(asset.labels) - set(leaves))}"
    )
    invalid = {p: c for p, c in asset.labels.items() if c is not None and c not in CATEGORIES}
    assert not invalid, f"{file.name}: unknown categories {invalid}"
    # personal columns vary over the sample: a constant is not a useful test of a personal column
    constant = [
        p for p, c in asset.labels.items()
        if c is not None and len({json.dumps(v, sort_keys=True) for v in leaves[p][1]}) < 2
    ]
    assert not constant, f"{file.name}: personal columns with a single value {constant}"


def test_corpus_totals(corpus):
    labels = [c for asset in corpus for c in asset.labels.values()]
    by_category = Counter(labels)
    identity = sum(by_category[t] for t in EVALUATED_IDENTITY_TYPES)
    assert len(corpus) >= 26
    assert len(labels) >= 650
    assert identity >= 90
    for kind in EVALUATED_IDENTITY_TYPES:
        assert by_category[kind] >= 3, f"only {by_category[kind]} {kind} columns"
    # non-personal columns are the majority
    assert by_category[None] > len(labels) / 2


def test_every_family_is_represented(corpus):
    systems_by_family: dict[str, set[str]] = {}
    for asset in corpus:
        systems_by_family.setdefault(asset.family, set()).add(asset.system)
    for family in _FAMILIES:
        assert systems_by_family.get(family), f"no asset of family {family}"
    for family in set(_FAMILIES) - {"change_data_capture"}:
        assert len(systems_by_family[family]) >= 2, f"family {family}: {systems_by_family[family]}"


def test_non_person_tables(corpus):
    non_person = [a for a in corpus if a.is_non_person]
    assert len(non_person) >= 3
    # Debezium envelopes exist for a person table and a non-person table: ``after.id`` is personal only in one
    debezium = {a.asset: a.labels.get("after.id") for a in corpus if a.system == "Debezium"}
    assert "user_id" in debezium.values() and None in debezium.values()


def test_evaluate_current_classifier(corpus):
    result = evaluate(current_classifier, corpus)
    ratios = [f"{measure}_{kind}" for kind in EVALUATED_IDENTITY_TYPES for measure in ("precision", "recall")]
    ratios += ["identity_precision", "identity_recall", "identity_detection_precision",
               "identity_detection_recall", "category_accuracy_non_identity"]
    for key in ratios:
        assert 0.0 <= result[key] <= 1.0, (key, result[key])
    assert result["assets"] == len(corpus)
    assert result["columns"] == sum(len(a.labels) for a in corpus)
    assert result["identity_columns"] + result["non_identity_columns"] == result["columns"]
    assert result["misclassified_count"] == len(result["misclassified"])
    for miss in result["misclassified"]:
        assert set(miss) == {"asset", "path", "label", "predicted"}
        assert miss["label"] != miss["predicted"]


def test_classifier_meets_the_targets_on_the_real_schema_corpus(corpus):
    result = evaluate(current_classifier, corpus)
    misses = [f"{m['asset']} {m['path']}: {m['label']} -> {m['predicted']}" for m in result["misclassified"]]
    assert result["identity_precision"] >= 0.97, misses
    assert result["identity_recall"] >= 0.97, misses
    assert result["category_accuracy_non_identity"] >= 0.97, misses


def test_evaluate_scores_a_perfect_classifier(corpus):
    truth = {a.asset: a.labels for a in corpus}
    result = evaluate(lambda rows, asset_name: truth[asset_name], corpus)
    assert result["misclassified"] == []
    assert result["identity_precision"] == result["identity_recall"] == 1.0
    assert result["category_accuracy_non_identity"] == 1.0
    for kind in EVALUATED_IDENTITY_TYPES:
        assert result[f"precision_{kind}"] == result[f"recall_{kind}"] == 1.0
