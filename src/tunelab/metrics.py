"""Classification metrics (scikit-learn) and the before/after comparison of two prediction sets."""

from __future__ import annotations

from collections.abc import Sequence

from sklearn.metrics import (
    accuracy_score,
    balanced_accuracy_score,
    confusion_matrix,
    f1_score,
    precision_recall_fscore_support,
    roc_auc_score,
)

HEADLINE_METRICS = ("accuracy", "balanced_accuracy", "macro_f1")
METRIC_NAMES = {"accuracy": "accuracy", "balanced_accuracy": "balanced accuracy", "macro_f1": "macro-F1"}


def classification_metrics(gold: Sequence[str], predicted: Sequence[str], labels: Sequence[str],
                           probabilities=None) -> dict:
    """Accuracy, balanced accuracy, macro-F1, per-class P/R/F1 and the confusion matrix; with two labels and
    the (rows, 2) `probabilities`, also `positive_class` (the second label's P/R/F1 and ROC-AUC).

    `gold` and `predicted` hold label names; `labels` fixes the class order of the matrix
    (rows = gold, columns = predicted).
    """
    labels = list(labels)
    precision, recall, f1, support = precision_recall_fscore_support(
        gold, predicted, labels=labels, zero_division=0
    )
    metrics = {
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
    if len(labels) == 2:  # precision, recall and F1 of the positive (second) class, and ROC-AUC
        positive = {k: v for k, v in metrics["per_class"][labels[1]].items() if k != "support"}
        metrics["positive_class"] = {"label": labels[1], **positive, "roc_auc": roc_auc(gold, labels[1], probabilities)}
    return metrics


def roc_auc(gold: Sequence[str], positive: str, probabilities) -> float | None:
    """ROC-AUC of the positive class's probabilities (column 1); None without probabilities or when the gold
    labels hold one class only."""
    is_positive = [label == positive for label in gold]
    if probabilities is None or not 0 < sum(is_positive) < len(gold):
        return None
    return float(roc_auc_score(is_positive, [float(row[1]) for row in probabilities]))


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
