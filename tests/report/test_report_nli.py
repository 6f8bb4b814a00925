"""The before/after report, built from a synthetic run directory (no model needed)."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import pytest
from scipy.stats import binomtest

from tunelab.errors import TunelabError
from tunelab.metrics import classification_metrics
from tunelab.report import write_report

LABELS = ["entailment", "neutral", "contradiction"]
GOLD = ["entailment", "neutral", "contradiction"] * 4
BASELINE = ["entailment", "entailment", "entailment", "neutral", "neutral", "entailment",
            "entailment", "contradiction", "contradiction", "entailment", "entailment", "neutral"]
FINETUNED = ["entailment", "neutral", "contradiction", "entailment", "neutral", "contradiction",
             "neutral", "neutral", "contradiction", "entailment", "contradiction", "contradiction"]
CONFIG = "recipe: phi2_snli\nmodel: microsoft/phi-2\nlora:\n  r: 16\n  alpha: 32\n"
RUN_INFO = {
    "recipe": "phi2_snli",
    "model": "microsoft/phi-2",
    "started": "2026-11-22T07:00:00Z",
    "parameters": {"trainable": 17448960, "total": 1538841600, "percent": 1.1339,
                   "counting": "Counted with PEFT: trainable are the LoRA matrices."},
    "timings_s": {"load": 12.0, "baseline_eval": 3.1, "train": 200.5, "finetuned_eval": 3.0, "total": 230.0},
    "memory": {"device": "cpu", "peak_bytes": 123456789, "how": "process peak RSS"},
    "hardware": {"device": "cpu", "cpu": "Test CPU", "cpu_count": 2, "gpus": [], "num_processes": 1},
    "software": {"python": "3.11.7", "torch": "2.13.0", "transformers": "5.23.0", "peft": "0.21.2"},
    "train_rows": 480,
    "eval_rows": {"test": 12},
}
TRAIN_LOG = [
    {"epoch": 0.5, "step": 5, "loss": 1.2, "learning_rate": 1e-4},
    {"epoch": 1.0, "step": 10, "loss": 0.9, "learning_rate": 5e-5},
    {"epoch": 1.0, "step": 10, "eval_loss": 0.8},
    {"epoch": 2.0, "step": 20, "loss": 0.5, "learning_rate": 0.0},
    {"epoch": 2.0, "step": 20, "eval_loss": 0.6},
]
REPORT_FILES = ("report.md", "report.html", "report.pdf", "metrics_test.png", "confusion_test.png", "loss.png",
                "reliability_test.png")
SCRIPT_PREMISE = "A man types <script>alert('x')</script> | on a\nkeyboard."


def make_run(root: Path, *, info=RUN_INFO, config=CONFIG, train_log=TRAIN_LOG, splits=("test",),
             predictions=True) -> Path:
    run = root / "run"
    run.mkdir()
    if info is not None:
        (run / "run_info.json").write_text(json.dumps(info))
    if config is not None:
        (run / "config.yaml").write_text(config)
    if train_log is not None:
        (run / "train_log.json").write_text(json.dumps(train_log))
    for split in splits:
        folder = run / "eval" / split
        for name, predicted in (("baseline", BASELINE), ("finetuned", FINETUNED)):
            (folder / name).mkdir(parents=True)
            metrics = classification_metrics(GOLD, predicted, LABELS)
            (folder / name / "metrics.json").write_text(json.dumps(metrics))
            if predictions:
                write_model_predictions(folder / name / "predictions.csv", predicted, 0.9 if name == "finetuned" else None)
        if predictions:
            write_predictions(folder / "predictions.csv")
    return run


def write_model_predictions(path: Path, predicted: list[str], confidence: float | None = None) -> None:
    """One model's predictions.csv as the pipeline writes it: the label and the 3-way probabilities."""
    with path.open("w", newline="", encoding="utf-8") as file:
        writer = csv.writer(file)
        writer.writerow(["premise", "hypothesis", "gold", "pred", *(f"p_{label}" for label in LABELS)])
        for i, (gold, pred) in enumerate(zip(GOLD, predicted)):
            top = confidence or 0.5 + i / 100
            writer.writerow([f"Premise number {i}.", f"Hypothesis number {i}.", gold, pred,
                             *(top if label == pred else (1 - top) / 2 for label in LABELS)])


def write_predictions(path: Path) -> None:
    with path.open("w", newline="", encoding="utf-8") as file:
        writer = csv.writer(file)
        writer.writerow(["premise", "hypothesis", "gold", "baseline_pred", "baseline_prob",
                         "finetuned_pred", "finetuned_prob"])
        for i, (gold, before, after) in enumerate(zip(GOLD, BASELINE, FINETUNED)):
            premise = SCRIPT_PREMISE if i == 1 else f"Premise number {i}."
            hypothesis = "It costs $5 or $6." if i == 1 else f"Hypothesis number {i}."
            writer.writerow([premise, hypothesis, gold, before, 0.5 + i / 100, after, 0.9])


def expected_counts() -> dict[str, int]:
    counts = {"corrected": 0, "uncorrected": 0, "regressed": 0}
    for gold, before, after in zip(GOLD, BASELINE, FINETUNED):
        if before != gold and after == gold:
            counts["corrected"] += 1
        elif before == gold and after != gold:
            counts["regressed"] += 1
        elif before != gold and after != gold:
            counts["uncorrected"] += 1
    return counts


def accuracy(predicted: list[str]) -> float:
    return sum(p == g for p, g in zip(predicted, GOLD)) / len(GOLD)


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_report(make_run(tmp_path_factory.mktemp("shared")))


def test_writes_every_file(report: Path):
    folder = report.parent
    assert report == folder / "report.md" and folder.name == "report"
    for name in REPORT_FILES:
        assert (folder / name).stat().st_size > 0, name
    for png in folder.glob("*.png"):
        assert png.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    pdf = (folder / "report.pdf").read_bytes()
    assert pdf.startswith(b"%PDF") and pdf.rstrip().endswith(b"%%EOF")
    assert not list(folder.glob("*.tmp"))


def test_markdown_has_the_numbers(report: Path):
    text = report.read_text(encoding="utf-8")
    before, after = 100 * accuracy(BASELINE), 100 * accuracy(FINETUNED)
    assert f"test: accuracy {before:.1f}% → {after:.1f}% ({after - before:+.1f} points)" in text
    assert f"| accuracy | {before:.1f}% | {after:.1f}% | {after - before:+.1f} points |" in text
    for name, count in expected_counts().items():
        assert re.search(rf"^\| {name} \| [^|]+ \| {count} \|", text, re.MULTILINE), name
    assert "17,448,960" in text and "1,538,841,600" in text and "(1.13%)" in text
    assert "Counted with PEFT" in text
    assert CONFIG.rstrip() in text
    assert "3 min 20 s" in text and "12.0 s" in text and "117.7 MiB" in text
    assert "not recorded" not in text


def test_markdown_lists_examples_up_to_the_limit(tmp_path: Path):
    text = write_report(make_run(tmp_path), max_examples=1).read_text(encoding="utf-8")
    counts = expected_counts()
    assert f"Corrected (baseline wrong, fine-tuned right): 1 of {counts['corrected']} shown" in text
    assert f"Uncorrected (both wrong): 1 of {counts['uncorrected']} shown" in text
    assert "Premise number 2." not in text  # only the first corrected example (row 1) is shown


def test_markdown_tables_escape_pipes_and_newlines(report: Path):
    row = next(line for line in report.read_text(encoding="utf-8").splitlines() if "alert(" in line)
    assert row.startswith("| A man types &lt;script>alert('x')&lt;/script> \\| on a keyboard. |")


def test_html_is_self_contained_and_escaped(report: Path):
    page = (report.parent / "report.html").read_text(encoding="utf-8")
    assert 'src="http' not in page and "<link" not in page
    assert page.count("data:image/png;base64,") == 4
    assert "&lt;script&gt;" in page and "<script>" not in page


def test_missing_optional_parts_say_not_recorded(tmp_path: Path):
    run = make_run(tmp_path, info={"recipe": "r", "timings_s": {"train": 5.0}}, config=None, train_log=None,
                   predictions=False)
    report = write_report(run)
    text = report.read_text(encoding="utf-8")
    assert text.count("not recorded") >= 8
    assert "| load | not recorded |" in text and "| train | 5.0 s |" in text
    assert "Peak memory: not recorded." in text and "there is no loss plot" in text
    assert not (report.parent / "loss.png").exists() and not (report.parent / "reliability_test.png").exists()
    assert "no intervals or calibration" in text
    assert (report.parent / "report.pdf").read_bytes().rstrip().endswith(b"%%EOF")


def test_every_split_gets_a_section(tmp_path: Path):
    run = make_run(tmp_path, splits=("test", "validation"))
    (run / "eval" / "incomplete" / "baseline").mkdir(parents=True)
    text = write_report(run).read_text(encoding="utf-8")
    assert text.index("## Split: test") < text.index("## Split: validation")
    assert "incomplete" not in text
    assert (run / "report" / "metrics_validation.png").is_file()


def test_missing_run_info_is_a_tunelab_error(tmp_path: Path):
    with pytest.raises(TunelabError, match="run_info.json.*recipe run"):
        write_report(make_run(tmp_path, info=None))


def test_missing_metrics_is_a_tunelab_error(tmp_path: Path):
    with pytest.raises(TunelabError, match="finetuned/metrics.json"):
        write_report(make_run(tmp_path, splits=()))


def test_rebuilding_overwrites_in_place(tmp_path: Path):
    run = make_run(tmp_path)
    write_report(run)
    (run / "run_info.json").write_text(json.dumps({**RUN_INFO, "recipe": "rebuilt_recipe"}))
    report = write_report(run)
    assert "rebuilt_recipe" in report.read_text(encoding="utf-8")
    assert "rebuilt_recipe" in (report.parent / "report.html").read_text(encoding="utf-8")
    assert sorted(p.name for p in report.parent.iterdir()) == sorted(REPORT_FILES)


def test_report_states_intervals_significance_and_calibration(report: Path):
    text = report.read_text(encoding="utf-8")
    counts = expected_counts()
    p_value = binomtest(counts["corrected"], counts["corrected"] + counts["regressed"]).pvalue
    headline = next(line for line in text.splitlines() if line.startswith("- test: accuracy"))
    assert "95% interval of the change [" in headline
    assert f"{counts['corrected']} rows corrected, {counts['regressed']} regressed; McNemar p = {p_value:.3g}" in headline
    assert ("is significant at 5%" in headline) == (p_value < 0.05)
    assert re.search(r"^\| test \| 12 \| accuracy \| \d+\.\d% \[[\d.]+, [\d.]+\] \|", text, re.MULTILINE)
    # the fine-tuned model says 0.9 for every prediction: its ECE is |accuracy - 0.9|
    ece = abs(accuracy(FINETUNED) - 0.9)
    assert f"| fine-tuned | {100 * ece:.1f} |" in text and "10 equal-width bins" in text
    assert "temperature" not in text  # no validation predictions: no temperature scaling
    assert not (report.parent.parent / "eval" / "test" / "statistics.json").exists()  # the report writes report/ only


def test_a_gain_within_noise_says_how_many_rows_would_resolve_it(report: Path):
    """6 rows corrected and 1 regressed of 12: McNemar p = 0.125. Connor's approximation by hand, 5% two-sided and
    80% power: (1.96 sqrt(7/12) + 0.8416 sqrt(7/12 - (5/12)^2))^2 / (5/12)^2 = 23.9, so about 24 rows."""
    assert expected_counts() == {"corrected": 6, "uncorrected": 1, "regressed": 1}
    headline = next(line for line in report.read_text(encoding="utf-8").splitlines() if line.startswith("- test: "))
    assert headline.endswith("; the gain is within noise for 12 rows (6 rows corrected, 1 regressed; McNemar "
                             "p = 0.125); about 24 rows would resolve a gain of this size.")


def test_temperature_scaling_from_validation_predictions(tmp_path: Path):
    run = make_run(tmp_path)
    for name, predicted in (("baseline", BASELINE), ("finetuned", FINETUNED)):
        (run / "calibration" / name).mkdir(parents=True)
        write_model_predictions(run / "calibration" / name / "predictions.csv", predicted, 0.9 if name == "finetuned" else None)
    text = write_report(run).read_text(encoding="utf-8")
    assert "| model | ECE | Brier | temperature (fitted on validation) | ECE after scaling | Brier after scaling |" in text
    row = next(line for line in text.splitlines() if line.startswith("| fine-tuned | "))
    raw_ece, temperature = (float(cell) for cell in row.split("|")[2:5:2])
    assert raw_ece == pytest.approx(100 * abs(accuracy(FINETUNED) - 0.9), abs=0.05)  # raw figures kept
    assert temperature > 1  # 0.9 confidence at lower accuracy: over-confident, softened
