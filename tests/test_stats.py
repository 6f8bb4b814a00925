"""Known answers for tunelab.stats: McNemar, paired bootstrap intervals, calibration, temperature."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.special import softmax
from sklearn.metrics import accuracy_score, balanced_accuracy_score, f1_score

from tunelab.stats import (
    calibration,
    expected_calibration_error,
    fit_temperature,
    headline_scores,
    mcnemar,
    paired_intervals,
    paired_statistics,
    perplexity_intervals,
    rows_to_resolve,
    scaled,
)


def noisy_predictions(gold: np.ndarray, accuracy: float, rng) -> np.ndarray:
    wrong = rng.random(len(gold)) > accuracy
    return np.where(wrong, (gold + rng.integers(1, 3, len(gold))) % 3, gold)


def test_mcnemar_exact_p_by_hand():
    # 10 corrected vs 2 regressed: p = 2 * (C(12,10) + C(12,11) + C(12,12)) / 2**12 = 158 / 4096
    test = mcnemar(10, 2)
    assert test["p_value"] == pytest.approx(158 / 4096) and test["significant"]
    assert mcnemar(2, 10)["p_value"] == pytest.approx(158 / 4096)
    assert mcnemar(6, 3)["p_value"] == pytest.approx(2 * (84 + 36 + 9 + 1) / 512) and not mcnemar(6, 3)["significant"]
    assert mcnemar(0, 0)["p_value"] == 1.0


def test_rows_to_resolve_by_hand():
    # shares 0.10 and 0.02: (1.95996 * sqrt(0.12) + 0.84162 * sqrt(0.12 - 0.08**2))**2 / 0.08**2 = 144.8
    assert rows_to_resolve(100, 10, 2) == 145
    assert rows_to_resolve(100, 5, 5) is None


@pytest.mark.filterwarnings("ignore:y_pred contains classes not in y_true")
def test_scores_match_scikit_learn():
    rng = np.random.default_rng(3)
    gold = rng.integers(0, 2, 50)  # class 2 never gold: balanced accuracy skips it, macro-F1 counts it
    predicted = rng.integers(0, 3, 50)
    accuracy, balanced, macro_f1 = headline_scores(gold, predicted, 3)
    assert accuracy == pytest.approx(accuracy_score(gold, predicted))
    assert balanced == pytest.approx(balanced_accuracy_score(gold, predicted))
    assert macro_f1 == pytest.approx(f1_score(gold, predicted, labels=[0, 1, 2], average="macro", zero_division=0))


def test_intervals_contain_the_estimate_and_narrow_with_rows():
    rng = np.random.default_rng(0)
    widths = []
    for rows in (100, 1600):
        gold = rng.integers(0, 3, rows)
        baseline, finetuned = noisy_predictions(gold, 0.4, rng), noisy_predictions(gold, 0.75, rng)
        intervals = paired_intervals(gold, baseline, finetuned, 3, n_resamples=2000)
        for metric in intervals.values():
            for figures in metric.values():
                assert figures["low"] <= figures["value"] <= figures["high"]
        assert intervals["accuracy"]["finetuned"]["value"] == pytest.approx(np.mean(finetuned == gold))
        widths.append(intervals["accuracy"]["change"]["high"] - intervals["accuracy"]["change"]["low"])
    assert widths[1] < widths[0] / 3  # 16 times the rows: about a quarter of the width


def test_bootstrap_is_paired_and_seeded():
    rng = np.random.default_rng(1)
    gold = rng.integers(0, 3, 200)
    same = noisy_predictions(gold, 0.6, rng)
    change = paired_intervals(gold, same, same, 3)["accuracy"]["change"]
    assert change["low"] == change["high"] == 0.0  # the same rows for both models: no spread in the change
    other = noisy_predictions(gold, 0.7, rng)
    assert paired_intervals(gold, same, other, 3, seed=5) == paired_intervals(gold, same, other, 3, seed=5)


def test_ece_of_calibrated_and_overconfident_predictions():
    rng = np.random.default_rng(2)
    rows = 20000
    gold = rng.integers(0, 3, rows)
    confidence = rng.uniform(0.5, 1.0, rows)  # the top label stays the top label
    top = np.where(rng.random(rows) < confidence, gold, (gold + 1) % 3)  # right with probability = confidence
    probabilities = np.full((rows, 3), 0.0)
    probabilities[np.arange(rows), top] = confidence
    probabilities[np.arange(rows), (top + 1) % 3] = 1 - confidence
    assert expected_calibration_error(probabilities, gold) < 0.02
    overconfident = np.full((rows, 3), 0.005)
    overconfident[np.arange(rows), top] = 0.99
    accuracy = np.mean(top == gold)
    assert expected_calibration_error(overconfident, gold) == pytest.approx(0.99 - accuracy, abs=1e-9)
    assert 0.99 - accuracy > 0.2
    onehot = np.eye(3)[gold]
    assert calibration(overconfident, gold)["brier"] == pytest.approx(((overconfident - onehot) ** 2).sum(1).mean())


def test_temperature_recovers_overconfidence():
    rng = np.random.default_rng(4)
    logits = rng.normal(0, 1.5, (4000, 3))
    gold = np.array([rng.choice(3, p=p) for p in softmax(logits, axis=1)])
    overconfident = softmax(3 * logits, axis=1)
    temperature = fit_temperature(overconfident, gold)
    assert temperature == pytest.approx(3, rel=0.15)
    assert expected_calibration_error(scaled(overconfident, temperature), gold) < \
        expected_calibration_error(overconfident, gold) / 2


def test_paired_statistics_of_one_split():
    rng = np.random.default_rng(5)
    gold = rng.integers(0, 3, 120)
    predicted = {"baseline": noisy_predictions(gold, 0.4, rng), "finetuned": noisy_predictions(gold, 0.8, rng)}
    probabilities = {model: np.eye(3)[labels] * 0.7 + 0.1 for model, labels in predicted.items()}
    result = paired_statistics(gold, predicted, probabilities,
                               validation={"finetuned": (gold, probabilities["finetuned"])}, n_resamples=500)
    corrected = int(((predicted["baseline"] != gold) & (predicted["finetuned"] == gold)).sum())
    assert result["mcnemar"]["corrected"] == corrected and result["mcnemar"]["significant"]
    assert result["mcnemar"]["verdict"].startswith("the gain is significant at 5%")
    assert set(result["calibration"]["temperature_scaled"]) == {"finetuned"}
    assert result["calibration"]["baseline"]["ece"] == pytest.approx(abs(0.8 - np.mean(predicted["baseline"] == gold)))


def test_perplexity_interval_pools_tokens_and_narrows_with_conversations():
    rng = np.random.default_rng(6)
    widths = []
    for conversations in (20, 320):
        tokens = rng.integers(5, 60, conversations)
        before = tokens * rng.normal(2.0, 0.3, conversations)  # summed NLL: about 2 nats a token
        after = tokens * rng.normal(1.5, 0.3, conversations)
        intervals = perplexity_intervals(before, after, tokens)
        assert intervals["baseline"]["value"] == pytest.approx(np.exp(before.sum() / tokens.sum()))
        assert intervals["relative_change"]["value"] == pytest.approx(
            np.exp((after.sum() - before.sum()) / tokens.sum()) - 1)
        for figures in intervals.values():
            assert figures["low"] <= figures["value"] <= figures["high"]
        assert intervals["change"]["high"] < 0  # a clear drop
        widths.append(intervals["change"]["high"] - intervals["change"]["low"])
    assert widths[1] < widths[0] / 2
