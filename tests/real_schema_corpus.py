"""A labelled corpus of assets modelled on the published schemas of real systems, and its evaluator.

Each file of ``tests/data/real_schemas/`` holds one asset as a real system exports or
sends it (Segment calls, Salesforce records, Stripe objects, Debezium envelopes,
access logs...): synthetic rows, nested exactly as the system nests them, and the
honest label of every leaf path (see
:func:`ketch_spark.catalog.classify.leaf_values`)::

    {"system": "Stripe", "object": "Customer", "reference": "https://docs.stripe.com/api/customers/object",
     "asset": "stripe/customers", "rows": [...], "labels": {"address.line1": "postal_address", "id": "user_id",
     "object": null, ...}}

A label is one of :data:`ketch_spark.catalog.classify.CATEGORIES`, or ``None`` for a
column that is not personal data. :func:`evaluate` scores any classifier of the form
``classify(rows, asset_name) -> {path: category or None}`` against the labels;
:func:`current_classifier` adapts today's :func:`~ketch_spark.catalog.classify.classify_rows`.

Run ``python tests/real_schema_corpus.py`` to print the scores of the current classifier.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

__all__ = [
    "CORPUS_DIR",
    "EVALUATED_IDENTITY_TYPES",
    "FAMILY_OF_SYSTEM",
    "CorpusAsset",
    "Classifier",
    "load_corpus",
    "evaluate",
    "current_classifier",
    "format_report",
]

#: Folder of the corpus files.
CORPUS_DIR = Path(__file__).resolve().parent / "data" / "real_schemas"

#: Categories that identify a data subject, scored type by type by :func:`evaluate`.
EVALUATED_IDENTITY_TYPES: tuple[str, ...] = (
    "email",
    "email_sha256",
    "email_md5",
    "phone",
    "ip_address",
    "user_id",
    "device_id",
)

#: Family of systems each corpus system belongs to.
FAMILY_OF_SYSTEM: Mapping[str, str] = {
    "Segment": "event_trackers",
    "Snowplow": "event_trackers",
    "Mixpanel": "event_trackers",
    "Amplitude": "event_trackers",
    "Google Analytics 4": "event_trackers",
    "Salesforce": "crm_marketing",
    "HubSpot": "crm_marketing",
    "Mailchimp": "crm_marketing",
    "Braze": "crm_marketing",
    "Marketo": "crm_marketing",
    "Stripe": "payments_commerce",
    "Shopify": "payments_commerce",
    "Adyen": "payments_commerce",
    "WooCommerce": "payments_commerce",
    "Auth0": "identity_providers",
    "Okta": "identity_providers",
    "Keycloak": "identity_providers",
    "Meta": "ad_platforms",
    "Google Ads": "ad_platforms",
    "TikTok": "ad_platforms",
    "Debezium": "change_data_capture",
    "nginx": "logs",
    "AWS Elastic Load Balancing": "logs",
    "Amazon CloudFront": "logs",
}

#: ``classify(rows, asset_name) -> {column path: category or None}``.
Classifier = Callable[[list[dict[str, Any]], str], Mapping[str, "str | None"]]

_REQUIRED_KEYS = ("system", "object", "reference", "asset", "rows", "labels")


@dataclass(frozen=True)
class CorpusAsset:
    """One labelled asset of the corpus.

    Attributes:
        system: The system the asset comes from (``Stripe``).
        object: The object or record type of that system (``Customer``).
        reference: Public documentation the field names and nesting come from.
        asset: Name a data lake would give the asset (context for classifiers).
        rows: Synthetic records, nested as the system exports or sends them.
        labels: Category (or ``None``) of every leaf path of ``rows``.
        path: The file the asset was read from.
    """

    system: str
    object: str
    reference: str
    asset: str
    rows: list[dict[str, Any]]
    labels: dict[str, str | None]
    path: Path

    @property
    def family(self) -> str:
        """The family of systems (``payments_commerce``...), ``other`` when unknown."""
        return FAMILY_OF_SYSTEM.get(self.system, "other")

    @property
    def is_non_person(self) -> bool:
        """Whether no column of the asset is personal data (a products or inventory table...)."""
        return all(label is None for label in self.labels.values())


def load_corpus(folder: Path | str | None = None) -> list[CorpusAsset]:
    """Reads every ``*.json`` asset of the corpus, sorted by file name.

    Args:
        folder: Folder of the files; :data:`CORPUS_DIR` when ``None``.

    Returns:
        The assets, in file-name order.

    Raises:
        ValueError: A file is not a JSON object with the expected keys and types.
    """
    root = Path(folder) if folder is not None else CORPUS_DIR
    assets: list[CorpusAsset] = []
    for file in sorted(root.glob("*.json")):
        document = json.loads(file.read_text(encoding="utf-8"))
        if not isinstance(document, dict) or any(key not in document for key in _REQUIRED_KEYS):
            raise ValueError(f"{file}: expected a JSON object with keys {', '.join(_REQUIRED_KEYS)}")
        rows, labels = document["rows"], document["labels"]
        if not isinstance(rows, list) or not all(isinstance(row, dict) for row in rows):
            raise ValueError(f"{file}: 'rows' must be a list of JSON objects")
        if not isinstance(labels, dict):
            raise ValueError(f"{file}: 'labels' must be a JSON object")
        assets.append(
            CorpusAsset(
                system=str(document["system"]),
                object=str(document["object"]),
                reference=str(document["reference"]),
                asset=str(document["asset"]),
                rows=rows,
                labels=dict(labels),
                path=file,
            )
        )
    return assets


def current_classifier(rows: list[dict[str, Any]], asset_name: str) -> dict[str, str | None]:
    """Adapts :func:`~ketch_spark.catalog.classify.classify_rows` to the :data:`Classifier` form.

    Args:
        rows: The collected rows of an asset.
        asset_name: Name of the asset (context for a bare ``id`` or ``name``).

    Returns:
        Category (or ``None``) of every leaf path.
    """
    from ketch_spark.catalog.classify import classify_rows

    return {c.column: c.category for c in classify_rows(rows, asset_name=asset_name)}


def _ratio(numerator: int, denominator: int) -> float:
    """``numerator / denominator``, 0.0 when nothing was counted (an undefined ratio scores nothing)."""
    return numerator / denominator if denominator else 0.0


def evaluate(classify: Classifier, assets: list[CorpusAsset] | None = None) -> dict[str, Any]:
    """Scores a classifier against the corpus labels.

    A column counts for an identity type only with that exact type (an email hash
    predicted as ``email`` is wrong for both ``email`` and ``email_sha256``). A path
    the classifier does not return is predicted ``None``; paths it returns beyond
    the labels are ignored.

    Args:
        classify: ``classify(rows, asset_name) -> {path: category or None}``.
        assets: The assets to score; the whole corpus (:func:`load_corpus`) when ``None``.

    Returns:
        A dict with

        * ``precision_<t>`` and ``recall_<t>`` for each type ``t`` of
          :data:`EVALUATED_IDENTITY_TYPES`, with ``labelled_<t>``, ``predicted_<t>``
          and ``correct_<t>`` counts;
        * ``identity_precision`` / ``identity_recall``: over every column predicted
          as (resp. labelled as) an identity type, the share whose exact type is right;
        * ``identity_detection_precision`` / ``identity_detection_recall``: the same
          when any identity type for any identity column counts as right;
        * ``category_accuracy_non_identity``: share of the columns not labelled as an
          identity type (``None`` included) whose predicted category equals the label;
        * counts: ``assets``, ``columns``, ``identity_columns``, ``non_identity_columns``,
          ``predicted_identity_columns``, ``misclassified_count``;
        * ``misclassified``: every column whose prediction differs from its label, as
          dicts with ``asset``, ``path``, ``label`` and ``predicted``, in corpus order.

        Ratios with nothing to count are 0.0.
    """
    corpus = load_corpus() if assets is None else assets
    identity = set(EVALUATED_IDENTITY_TYPES)
    labelled = dict.fromkeys(EVALUATED_IDENTITY_TYPES, 0)
    predicted = dict.fromkeys(EVALUATED_IDENTITY_TYPES, 0)
    correct = dict.fromkeys(EVALUATED_IDENTITY_TYPES, 0)
    columns = identity_columns = predicted_identity = exact_identity = 0
    detected = detected_right = non_identity = non_identity_right = 0
    misclassified: list[dict[str, str | None]] = []
    for asset in corpus:
        predictions = classify(asset.rows, asset.asset)
        for path, label in asset.labels.items():
            guess = predictions.get(path)
            columns += 1
            if label in identity:
                identity_columns += 1
                labelled[label] += 1
                if guess in identity:
                    detected += 1
            else:
                non_identity += 1
                non_identity_right += guess == label
            if guess in identity:
                predicted_identity += 1
                predicted[guess] += 1
                detected_right += label in identity
            if guess == label and label in identity:
                correct[label] += 1
                exact_identity += 1
            if guess != label:
                misclassified.append({"asset": asset.asset, "path": path, "label": label, "predicted": guess})
    result: dict[str, Any] = {}
    for kind in EVALUATED_IDENTITY_TYPES:
        result[f"precision_{kind}"] = _ratio(correct[kind], predicted[kind])
        result[f"recall_{kind}"] = _ratio(correct[kind], labelled[kind])
    result.update(
        identity_precision=_ratio(exact_identity, predicted_identity),
        identity_recall=_ratio(exact_identity, identity_columns),
        identity_detection_precision=_ratio(detected_right, predicted_identity),
        identity_detection_recall=_ratio(detected, identity_columns),
        category_accuracy_non_identity=_ratio(non_identity_right, non_identity),
        assets=len(corpus),
        columns=columns,
        identity_columns=identity_columns,
        non_identity_columns=non_identity,
        predicted_identity_columns=predicted_identity,
        misclassified_count=len(misclassified),
    )
    for kind in EVALUATED_IDENTITY_TYPES:
        result[f"labelled_{kind}"] = labelled[kind]
        result[f"predicted_{kind}"] = predicted[kind]
        result[f"correct_{kind}"] = correct[kind]
    result["misclassified"] = misclassified
    return result


def format_report(result: Mapping[str, Any], misclassified: int = 40) -> str:
    """Human-readable summary of an :func:`evaluate` result.

    Args:
        result: What :func:`evaluate` returned.
        misclassified: How many misclassified columns to list.

    Returns:
        The summary figures, then the first ``misclassified`` misclassified columns.
    """
    lines = [
        f"assets={result['assets']} columns={result['columns']} identity_columns={result['identity_columns']} "
        f"predicted_identity_columns={result['predicted_identity_columns']} "
        f"misclassified={result['misclassified_count']}",
        f"identity_precision={result['identity_precision']:.3f} identity_recall={result['identity_recall']:.3f}",
        f"identity_detection_precision={result['identity_detection_precision']:.3f} "
        f"identity_detection_recall={result['identity_detection_recall']:.3f}",
        f"category_accuracy_non_identity={result['category_accuracy_non_identity']:.3f}",
    ]
    for kind in EVALUATED_IDENTITY_TYPES:
        lines.append(
            f"  {kind:<13} precision={result[f'precision_{kind}']:.3f} recall={result[f'recall_{kind}']:.3f} "
            f"(labelled {result[f'labelled_{kind}']}, predicted {result[f'predicted_{kind}']}, "
            f"correct {result[f'correct_{kind}']})"
        )
    lines.append(f"first {misclassified} misclassified columns (asset | path | label -> predicted):")
    for miss in result["misclassified"][:misclassified]:
        lines.append(f"  {miss['asset']} | {miss['path']} | {miss['label']} -> {miss['predicted']}")
    return "\n".join(lines)


if __name__ == "__main__":  # pragma: no cover - manual report
    print(format_report(evaluate(current_classifier)))
