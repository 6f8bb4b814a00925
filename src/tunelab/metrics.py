"""Classification metrics (scikit-learn) and the before/after comparison of two prediction sets."""

from __future__ import annotations

from collections.abc import Sequence

from sklearn.metrics import (
    accuracy_score,
    balanced_accuracy_score,
    confusion_matrix,
    f1_score,
    precision_recall_fscore_support,
)

HEADLINE_METRICS = ("accuracy", "balanced_accuracy", "macro_f1")
METRIC_NAMES = {"accuracy": "accuracy", "balanced_accuracy": "balanced accuracy", "macro_f1": "macro-F1"}


def classification_metrics(gold: Sequence[str], predicted: Sequence[str], labels: Sequence[str]) -> dict:
    """Accuracy, balanced accuracy, macro-F1, per-class P/R/F1 and the confusion matrix.

    `gold` and `predicted` hold label names; `labels` fixes the class order of the matrix
    (rows = gold, columns = predicted).
    """
    labels = list(labels)
    precision, recall, f1, support = precision_recall_fscore_support(
        gold, predicted, labels=labels, zero_division=0
    )
    return {
        "n": len(gold),
        "labels": labels,
        "accuracy": float(accuracy_score(gold, predicted)),
        "balanced_accuracy": float(balanced_accuracy_score(gold, predicted)),
        "macro_f1": float(f1_score(gold, predicted, labels=labels, average="macro", zero_division=0)),
        "per_class": {
            label: {
                "precision": float(precision[i]),
                "recall": float(recall[i]),
                "f1": float(f1[i]),
                "support": int(support[i]),
            }
            for i, label in enumerate(labels)
        },
        "confusion_matrix": confusion_matrix(gold, predicted, labels=labels).tolist(),
    }


def change_categories(gold: Sequence[str], baseline: Sequence[str], finetuned: Sequence[str]) -> list[str]:
    """For each row: 'corrected', 'regressed', 'uncorrected' (both wrong) or 'kept' (both right)."""
    categories = []
    for g, b, f in zip(gold, baseline, finetuned, strict=True):
        if b != g and f == g:
            categories.append("corrected")
        elif b == g and f != g:
            categories.append("regressed")
        elif b != g and f != g:
            categories.append("uncorrected")
        else:
            categories.append("kept")
    return categories
