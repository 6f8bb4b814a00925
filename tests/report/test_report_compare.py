"""Comparing two evaluations: the outputs, the layouts understood, and the refusal to compare different rows."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from scipy.stats import binomtest

from tunelab.cli import main as cli_main
from tunelab.errors import TunelabError
from tunelab.metrics import classification_metrics
from tunelab.report import write_report
from tunelab.report.compare import compare

LABELS = ["entailment", "neutral", "contradiction"]
GOLD = LABELS * 4
PREDICTIONS = {  # split -> (baseline, fine-tuned) predictions for the 12 GOLD rows
    "matched": (["entailment"] * 12, GOLD[:9] + ["neutral", "entailment", "neutral"]),
    "mismatched": (["neutral"] * 6 + GOLD[6:], GOLD[:6] + ["entailment"] * 6),
}


def write_evaluation(folder: Path, split: str, predicted: list[str], premises: list[str] | None = None) -> Path:
    """One model on one split, as the pipeline writes it: metrics.json and predictions.csv."""
    folder.mkdir(parents=True)
    gold = GOLD[:len(predicted)]
    (folder / "metrics.json").write_text(json.dumps(classification_metrics(gold, predicted, LABELS)))
    premises = premises or [f"{split} premise {i}." for i in range(len(gold))]
    with (folder / "predictions.csv").open("w", newline="", encoding="utf-8") as file:
        writer = csv.writer(file)
        writer.writerow(["premise", "hypothesis", "gold", "pred", *(f"p_{label}" for label in LABELS)])
        for premise, label, pred in zip(premises, gold, predicted):
            writer.writerow([premise, "A hypothesis.", label, pred, 0.5, 0.3, 0.2])
    return folder


def make_run(root: Path) -> Path:
    """A run directory with eval/<split>/{baseline,finetuned} for both splits."""
    for split, (baseline, finetuned) in PREDICTIONS.items():
        write_evaluation(root / "eval" / split / "baseline", split, baseline)
        write_evaluation(root / "eval" / split / "finetuned", split, finetuned)
    return root


def accuracy(predicted: list[str]) -> float:
    return sum(p == g for p, g in zip(predicted, GOLD)) / len(GOLD)


def test_comparison_outputs(tmp_path):
    run = make_run(tmp_path / "run")
    out = compare(run, run)
    assert out == run / "comparison"
    improvement = json.loads((out / "improvement.json").read_text())
    assert list(improvement) == ["matched", "mismatched", "all splits"]
    for split, (baseline, finetuned) in PREDICTIONS.items():
        before, after = accuracy(baseline), accuracy(finetuned)
        figures = improvement[split]["accuracy"]
        assert improvement[split]["rows"] == 12
        assert figures == pytest.approx({"baseline": before, "finetuned": after, "absolute": after - before,
                                         "relative": (after - before) / before})
    # "all splits" pools the rows of both splits: the metrics of the concatenated predictions
    pooled = {role: classification_metrics(GOLD * 2, [p for pair in PREDICTIONS.values() for p in pair[index]], LABELS)
              for index, role in enumerate(("baseline", "finetuned"))}
    assert improvement["all splits"]["rows"] == 24
    for metric in ("accuracy", "balanced_accuracy", "macro_f1"):
        assert improvement["all splits"][metric]["finetuned"] == pytest.approx(pooled["finetuned"][metric])
    assert improvement["all splits"]["f1_neutral"]["baseline"] == pytest.approx(pooled["baseline"]["per_class"]["neutral"]["f1"])

    for role in ("baseline", "finetuned"):
        results = json.loads((out / f"{role}_results.json").read_text())
        assert set(results["splits"]) == {"matched", "mismatched"}
        assert results["combined"]["confusion_matrix"] == pooled[role]["confusion_matrix"]
        assert results["combined"]["n"] == 24 and results["model"] == role

    table = list(csv.DictReader((out / "comparison.csv").open(encoding="utf-8")))
    assert len(table) == 3 * 6  # two splits and the pool, three headline metrics and three per-class F1
    row = next(r for r in table if r["split"] == "matched" and r["metric"] == "accuracy")
    assert float(row["absolute_change"]) == pytest.approx(accuracy(PREDICTIONS["matched"][1]) - 1 / 3, abs=1e-6)
    markdown = (out / "comparison.md").read_text()
    assert "| matched | 12 | accuracy | 33.3% | 75.0% | +41.7 points | +125.0% |" in markdown
    assert "| all splits | 24 | F1 entailment |" in markdown
    assert (out / "comparison.png").read_bytes().startswith(b"\x89PNG")
    assert not list(out.glob("*.tmp"))


def test_comparison_statistics(tmp_path):
    out = compare(make_run(tmp_path / "run"), make_run(tmp_path / "run2"), tmp_path / "out")
    statistics = json.loads((out / "statistics.json").read_text())
    assert list(statistics) == ["matched", "mismatched", "all splits"]
    discordant = {}
    for split, (baseline, finetuned) in PREDICTIONS.items():
        corrected = sum(b != g == f for g, b, f in zip(GOLD, baseline, finetuned))
        regressed = sum(b == g != f for g, b, f in zip(GOLD, baseline, finetuned))
        discordant[split] = (corrected, regressed)
        test = statistics[split]["mcnemar"]
        assert (test["corrected"], test["regressed"]) == (corrected, regressed)
        assert test["p_value"] == pytest.approx(binomtest(corrected, corrected + regressed).pvalue)
        change = statistics[split]["intervals"]["accuracy"]["change"]
        assert change["value"] == pytest.approx(accuracy(finetuned) - accuracy(baseline))
        assert change["low"] <= change["value"] <= change["high"]
    # pooled: the rows of both splits together, so the discordant counts add up
    pooled = statistics["all splits"]["mcnemar"]
    assert (pooled["corrected"], pooled["regressed"]) == tuple(map(sum, zip(*discordant.values())))
    assert statistics["all splits"]["rows"] == 24
    table = list(csv.DictReader((out / "comparison.csv").open(encoding="utf-8")))
    row = next(r for r in table if r["split"] == "matched" and r["metric"] == "accuracy")
    interval = statistics["matched"]["intervals"]["accuracy"]["change"]
    assert float(row["change_low"]) == pytest.approx(interval["low"], abs=1e-6)
    assert float(row["mcnemar_p"]) == pytest.approx(statistics["matched"]["mcnemar"]["p_value"], abs=1e-6)
    assert next(r for r in table if r["metric"] == "f1_neutral")["change_low"] == ""  # intervals: headline metrics
    markdown = (out / "comparison.md").read_text()
    assert "| matched | 12 | accuracy | 33.3% [" in markdown and "McNemar" in markdown


def test_every_layout_of_an_evaluation_gives_the_same_comparison(tmp_path):
    run = make_run(tmp_path / "run")
    reference = json.loads((compare(run, run, tmp_path / "ref") / "improvement.json").read_text())
    # one model's evaluation on several splits: <split>/metrics.json
    for role in ("baseline", "finetuned"):
        for split in PREDICTIONS:
            target = tmp_path / role / split
            target.mkdir(parents=True)
            for name in ("metrics.json", "predictions.csv"):
                (target / name).write_bytes((run / "eval" / split / role / name).read_bytes())
    by_model = compare(tmp_path / "baseline", tmp_path / "finetuned", tmp_path / "by_model")
    assert json.loads((by_model / "improvement.json").read_text()) == reference
    assert json.loads((compare(run / "eval", run / "eval", tmp_path / "eval") / "improvement.json").read_text()) == reference
    # one split: a model folder (named after its split), or the eval/<split>/ folder holding both models
    single = compare(run / "eval/matched/baseline", run / "eval/matched/finetuned", tmp_path / "single")
    assert json.loads((single / "improvement.json").read_text()) == {"matched": reference["matched"]}
    both = compare(run / "eval/matched", run / "eval/matched", tmp_path / "both")
    assert json.loads((both / "improvement.json").read_text()) == {"matched": reference["matched"]}


def test_same_rows_in_another_order_are_accepted(tmp_path):
    baseline = write_evaluation(tmp_path / "a" / "matched", "matched", PREDICTIONS["matched"][0])
    rows = list(csv.reader((baseline / "predictions.csv").open(encoding="utf-8")))
    finetuned = tmp_path / "b" / "matched"
    finetuned.mkdir(parents=True)
    (finetuned / "metrics.json").write_bytes((baseline / "metrics.json").read_bytes())
    with (finetuned / "predictions.csv").open("w", newline="", encoding="utf-8") as file:
        csv.writer(file).writerows([rows[0], *reversed(rows[1:])])
    in_order = json.loads((compare(baseline, baseline, tmp_path / "in_order") / "improvement.json").read_text())
    reordered = json.loads((compare(baseline, finetuned, tmp_path / "out") / "improvement.json").read_text())
    assert reordered == in_order

    # The same premises and the same gold labels, but misaligned by one row: not the same rows.
    premise, gold = rows[0].index("premise"), rows[0].index("gold")
    shifted = [row[:] for row in rows[1:]]
    for row, source in zip(shifted, rows[2:] + rows[1:2]):
        row[gold] = source[gold]
    with (finetuned / "predictions.csv").open("w", newline="", encoding="utf-8") as file:
        csv.writer(file).writerows([rows[0], *shifted])
    assert sorted(r[premise] for r in shifted) == sorted(r[premise] for r in rows[1:])
    assert sorted(r[gold] for r in shifted) == sorted(r[gold] for r in rows[1:])
    with pytest.raises(TunelabError, match="refusing to compare split matched: .* 12 of them differ"):
        compare(baseline, finetuned, tmp_path / "misaligned")


def test_refuses_to_compare_different_rows(tmp_path):
    run = make_run(tmp_path / "run")
    other = tmp_path / "other"
    premises = [f"mismatched premise {i}." for i in range(9)] + ["Other 1.", "Other 2.", "Other 3."]
    for split, (baseline, finetuned) in PREDICTIONS.items():
        write_evaluation(other / split, split, finetuned, premises if split == "mismatched" else None)
    with pytest.raises(TunelabError, match=r"^refusing to compare split mismatched: the baseline has 12 rows and the "
                                           r"fine-tuned model 12, and 3 of them differ .*: evaluate both models on "
                                           r"the same rows"):
        compare(run, other, tmp_path / "out")
    assert not (tmp_path / "out").exists()

    shorter = tmp_path / "shorter" / "matched"
    write_evaluation(shorter, "matched", PREDICTIONS["matched"][1][:10], [f"matched premise {i}." for i in range(10)])
    with pytest.raises(TunelabError, match="the baseline has 12 rows and the fine-tuned model 10, and 2 of them differ"):
        compare(run / "eval/matched/baseline", shorter, tmp_path / "out")

    write_evaluation(other / "other", "other", GOLD)
    (other / "mismatched" / "metrics.json").unlink()
    with pytest.raises(TunelabError, match=r"cover different splits \(baseline: matched, mismatched; fine-tuned: "
                                           r"matched, other\)"):
        compare(run, other, tmp_path / "out")


def test_missing_predictions_or_evaluation_are_errors(tmp_path):
    run = make_run(tmp_path / "run")
    (run / "eval/matched/finetuned/predictions.csv").unlink()
    with pytest.raises(TunelabError, match="finetuned/predictions.csv is missing: comparing needs"):
        compare(run, run)
    with pytest.raises(TunelabError, match="holds no evaluation"):
        compare(tmp_path, run)
    with pytest.raises(TunelabError, match="evaluation directory .*nowhere not found"):
        compare(tmp_path / "nowhere", run)


def test_cli_compare(tmp_path, capsys, monkeypatch):
    run = make_run(tmp_path / "run")
    cli_main(["compare", str(run / "eval/matched/baseline"), str(run / "eval/matched/finetuned"),
              "--out", str(tmp_path / "out")])
    assert capsys.readouterr().out.strip() == str(tmp_path / "out")
    assert (tmp_path / "out" / "comparison.md").is_file()
    monkeypatch.chdir(tmp_path)
    cli_main(["compare", str(run / "eval/matched/baseline"), str(run / "eval/matched/finetuned")])
    assert capsys.readouterr().out.strip() == "comparison" and (tmp_path / "comparison" / "comparison.csv").is_file()

    write_evaluation(tmp_path / "other" / "matched", "matched", GOLD, [f"Other {i}." for i in range(12)])
    with pytest.raises(SystemExit) as exit_info:
        cli_main(["compare", str(run / "eval/matched/baseline"), str(tmp_path / "other" / "matched")])
    assert exit_info.value.code == 2
    error = capsys.readouterr().err
    assert error.startswith("tunelab: error: refusing to compare split matched:") and error.count("\n") == 1


def test_report_puts_every_split_side_by_side(tmp_path):
    run = make_run(tmp_path / "run")
    (run / "run_info.json").write_text(json.dumps({"recipe": "gpt2_large_mnli", "model": "gpt2-large"}))
    text = write_report(run).read_text(encoding="utf-8")
    assert text.index("## All splits") < text.index("## Split: matched") < text.index("## Split: mismatched")
    assert "| all splits | 24 | accuracy |" in text
    assert (run / "report" / "comparison.png").is_file()
