"""How much a before/after difference can be trusted: small pure functions over evaluation rows.

- `paired_intervals`: 95% confidence intervals for accuracy, balanced accuracy and macro-F1 of two
  models and for their change, by a paired percentile bootstrap over the rows (scipy.stats.bootstrap:
  both models are scored on the same resampled rows).
- `mcnemar`: McNemar's exact test on the discordant pairs (rows one model gets right and the other
  wrong), a two-sided binomial test (scipy.stats.binomtest), and `rows_to_resolve`, the rows a
  gain of this size needs to be significant at 5% with 80% power.
- `calibration`: expected calibration error over 10 equal-width bins of the top-label confidence,
  the multiclass Brier score (scikit-learn) and the reliability diagram's bins; `fit_temperature`
  fits one temperature on validation rows (scipy.optimize), `scaled` applies it.
- `perplexity_intervals`: the same paired bootstrap over held-out conversations for a chat run's
  perplexity (each resample's perplexity pools its conversations' tokens) and its relative change.
- `paired_statistics` puts them together for one split, as the JSON written to statistics.json.

Labels are integer codes 0..k-1 throughout; probabilities are (rows, k) arrays.
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import minimize_scalar
from scipy.special import log_softmax, softmax
from scipy.stats import binomtest, bootstrap, norm
from sklearn.metrics import brier_score_loss

from tunelab.metrics import HEADLINE_METRICS
from tunelab.rundir import MODELS

CONFIDENCE = 0.95
RESAMPLES = 2000
SEED = 0
ECE_BINS = 10
ALPHA, POWER = 0.05, 0.8
PROBABILITY_FLOOR = 1e-6  # saved probabilities are rounded; log(0) would be infinite


def headline_scores(gold: np.ndarray, predicted: np.ndarray, k: int) -> np.ndarray:
    """Accuracy, balanced accuracy and macro-F1 (scikit-learn's definitions) along the last axis.

    Vectorized over leading axes so that thousands of bootstrap resamples cost one call; returns an
    array of shape (3, *leading axes). Balanced accuracy averages recall over the classes present
    in `gold`; macro-F1 averages F1 over all k classes, 0 where a class is neither present nor predicted.
    """
    cells = (gold * k + predicted)[..., None] == np.arange(k * k)
    confusion = cells.sum(axis=-2).reshape(*gold.shape[:-1], k, k)
    hits = np.diagonal(confusion, axis1=-2, axis2=-1)
    support, guessed = confusion.sum(axis=-1), confusion.sum(axis=-2)
    accuracy = hits.sum(axis=-1) / gold.shape[-1]
    recall = np.where(support > 0, hits / np.maximum(support, 1), np.nan)
    balanced = np.nanmean(recall, axis=-1)
    f1 = np.where(support + guessed > 0, 2 * hits / np.maximum(support + guessed, 1), 0.0)
    return np.stack([accuracy, balanced, f1.mean(axis=-1)])


def paired_intervals(gold: np.ndarray, baseline: np.ndarray, finetuned: np.ndarray, k: int,
                     n_resamples: int = RESAMPLES, seed: int = SEED) -> dict:
    """metric -> {baseline, finetuned, change} -> {value, low, high}: a paired percentile bootstrap."""

    def statistic(gold, baseline, finetuned, axis=-1):
        before, after = headline_scores(gold, baseline, k), headline_scores(gold, finetuned, k)
        return np.concatenate([before, after, after - before])

    values = statistic(gold, baseline, finetuned)
    result = bootstrap((gold, baseline, finetuned), statistic, paired=True, vectorized=True,
                       n_resamples=n_resamples, confidence_level=CONFIDENCE, method="percentile",
                       rng=np.random.default_rng(seed), batch=200)
    low, high = result.confidence_interval
    intervals = {}
    for m, metric in enumerate(HEADLINE_METRICS):
        intervals[metric] = {
            role: {"value": float(values[i]), "low": float(low[i]), "high": float(high[i])}
            for role, i in (("baseline", m), ("finetuned", 3 + m), ("change", 6 + m))}
    return intervals


def perplexity_intervals(nll_baseline: np.ndarray, nll_finetuned: np.ndarray, tokens: np.ndarray,
                         n_resamples: int = RESAMPLES, seed: int = SEED) -> dict:
    """{baseline, finetuned, change, relative_change} -> {value, low, high}: perplexity exp(summed NLL /
    tokens) over resampled conversations (per-conversation summed NLL and assistant-token counts)."""

    def statistic(before, after, tokens, axis=-1):
        count = tokens.sum(axis=axis)
        low, high = np.exp(before.sum(axis=axis) / count), np.exp(after.sum(axis=axis) / count)
        return np.stack([low, high, high - low, high / low - 1])

    data = tuple(np.asarray(column, dtype=float) for column in (nll_baseline, nll_finetuned, tokens))
    values = statistic(*data)
    result = bootstrap(data, statistic, paired=True, vectorized=True, n_resamples=n_resamples,
                       confidence_level=CONFIDENCE, method="percentile", rng=np.random.default_rng(seed))
    low, high = result.confidence_interval
    return {name: {"value": float(values[i]), "low": float(low[i]), "high": float(high[i])}
            for i, name in enumerate(("baseline", "finetuned", "change", "relative_change"))}


def mcnemar(corrected: int, regressed: int) -> dict:
    """McNemar's exact test: under no difference, each discordant row is corrected with probability 1/2."""
    discordant = corrected + regressed
    p_value = binomtest(corrected, discordant, 0.5).pvalue if discordant else 1.0
    return {"corrected": corrected, "regressed": regressed, "p_value": float(p_value),
            "significant": bool(p_value < ALPHA)}


def rows_to_resolve(rows: int, corrected: int, regressed: int) -> int | None:
    """Rows needed for McNemar's test to detect this gain at 5% with 80% power (Connor's normal
    approximation, with the observed shares of corrected and regressed rows); None without a change."""
    gained, lost = corrected / rows, regressed / rows
    change, discordant = gained - lost, gained + lost
    if change == 0:
        return None
    z_alpha, z_power = norm.ppf(1 - ALPHA / 2), norm.ppf(POWER)
    needed = (z_alpha * np.sqrt(discordant) + z_power * np.sqrt(discordant - change**2)) ** 2 / change**2
    return int(np.ceil(needed))


def verdict(test: dict, rows: int, needed: int | None) -> str:
    """The headline's plain sentence about a McNemar result."""
    if test["corrected"] == test["regressed"]:
        return f"no change: as many rows corrected as regressed ({test['corrected']:,}) on {rows:,} rows."
    direction = "gain" if test["corrected"] > test["regressed"] else "loss"
    counts = f"{test['corrected']:,} rows corrected, {test['regressed']:,} regressed; McNemar p = {test['p_value']:.3g}"
    if test["significant"]:
        return f"the {direction} is significant at 5% ({counts})."
    return (f"the {direction} is within noise for {rows:,} rows ({counts}); about {needed:,} rows would resolve "
            f"a {direction} of this size.")


def reliability_bins(probabilities: np.ndarray, gold: np.ndarray, bins: int = ECE_BINS) -> list[dict]:
    """Rows binned by top-label confidence into equal-width bins over [0, 1]: count, mean confidence, accuracy."""
    confidence = probabilities.max(axis=1)
    correct = probabilities.argmax(axis=1) == gold
    which = np.minimum((confidence * bins).astype(int), bins - 1)
    return [{"low": b / bins, "high": (b + 1) / bins, "count": int((which == b).sum()),
             "confidence": float(confidence[which == b].mean()) if (which == b).any() else None,
             "accuracy": float(correct[which == b].mean()) if (which == b).any() else None}
            for b in range(bins)]


def expected_calibration_error(probabilities: np.ndarray, gold: np.ndarray, bins: int = ECE_BINS) -> float:
    """Sum over bins of (share of rows) x |accuracy - mean confidence| (top label, equal-width bins)."""
    rows = len(gold)
    return float(sum(b["count"] / rows * abs(b["accuracy"] - b["confidence"])
                     for b in reliability_bins(probabilities, gold, bins) if b["count"]))


def calibration(probabilities: np.ndarray, gold: np.ndarray, bins: int = ECE_BINS) -> dict:
    """ECE, multiclass Brier score (sum over classes, 0..2) and the reliability bins."""
    k = probabilities.shape[1]
    return {"ece": expected_calibration_error(probabilities, gold, bins),
            "brier": float(brier_score_loss(gold, probabilities, labels=list(range(k)))),
            "reliability": reliability_bins(probabilities, gold, bins)}


def fit_temperature(probabilities: np.ndarray, gold: np.ndarray) -> float:
    """The temperature T that minimizes the negative log-likelihood of softmax(log p / T) on these rows."""
    logits = np.log(np.maximum(probabilities, PROBABILITY_FLOOR))

    def nll(temperature: float) -> float:
        return -log_softmax(logits / temperature, axis=1)[np.arange(len(gold)), gold].mean()

    return float(minimize_scalar(nll, bounds=(0.05, 20.0), method="bounded").x)


def scaled(probabilities: np.ndarray, temperature: float) -> np.ndarray:
    return softmax(np.log(np.maximum(probabilities, PROBABILITY_FLOOR)) / temperature, axis=1)


def paired_statistics(gold: np.ndarray, predicted: dict[str, np.ndarray], probabilities: dict[str, np.ndarray],
                      validation: dict[str, tuple[np.ndarray, np.ndarray]] | None = None,
                      n_resamples: int = RESAMPLES, seed: int = SEED) -> dict:
    """Everything above for one split. `predicted` and `probabilities` hold "baseline" and "finetuned";
    `validation`, when given, maps a model to its (gold, probabilities) on the validation split, on
    which a temperature is fitted and then applied to the test probabilities (reported beside the raw
    figures, never in their place)."""
    k = probabilities["baseline"].shape[1]
    rows = len(gold)
    corrected = int(((predicted["baseline"] != gold) & (predicted["finetuned"] == gold)).sum())
    regressed = int(((predicted["baseline"] == gold) & (predicted["finetuned"] != gold)).sum())
    test = mcnemar(corrected, regressed)
    needed = rows_to_resolve(rows, corrected, regressed)
    result = {
        "rows": rows,
        "confidence_level": CONFIDENCE,
        "bootstrap": {"resamples": n_resamples, "seed": seed, "method": "percentile, rows resampled in pairs"},
        "intervals": paired_intervals(gold, predicted["baseline"], predicted["finetuned"], k, n_resamples, seed),
        "mcnemar": {**test, "rows_to_resolve": needed, "verdict": verdict(test, rows, needed)},
        "calibration": {
            "binning": f"{ECE_BINS} equal-width bins of the top label's probability",
            **{model: calibration(probabilities[model], gold) for model in MODELS}},
    }
    if validation:
        result["calibration"]["temperature_scaled"] = {}
        for model, (validation_gold, validation_probabilities) in validation.items():
            temperature = fit_temperature(validation_probabilities, validation_gold)
            figures = calibration(scaled(probabilities[model], temperature), gold)
            result["calibration"]["temperature_scaled"][model] = {
                "temperature": temperature, "ece": figures["ece"], "brier": figures["brier"]}
    return result
