"""The gpt2_large_mnli recipe: its reference settings, MultiNLI's sampling rules, the offline
starter set in MultiNLI's shape, and the whole recipe on a tiny GPT-2 with GPT-2's real tokenizer."""

from __future__ import annotations

import csv
import dataclasses
import json
import runpy
import shutil
import warnings
from pathlib import Path

import pytest
from transformers import AutoTokenizer

from tunelab.config import parse_recipe
from tunelab.errors import TunelabError
from tunelab.launch.recipe import run
from tunelab.nli.data import load_nli_split, load_nli_splits, planned_train_rows
from tunelab.nli.pipeline import main
from tunelab.nli.starter_data import MISMATCHED_PHENOMENA, generate_starter_mnli
from tunelab.rundir import read_jsonl

ROOT = Path(__file__).resolve().parents[2]
RECIPE = runpy.run_path(str(ROOT / "recipes" / "gpt2_large_mnli.py"))["RECIPE"]
SPLITS = ["train", "validation", "validation_matched", "validation_mismatched"]
MATCHED_GENRES = ("fiction", "government", "slate", "telephone", "travel")
MISMATCHED_GENRES = ("letters", "nineeleven", "oup", "verbatim")
CUES = ("surely", "perhaps", "never")  # the hypothesis' adverb gives the label away


def mnli_rows(split: str, count: int, genres: tuple[str, ...]) -> list[dict]:
    """Rows in MultiNLI's Hub schema; every 9th has no gold label (-1)."""
    rows = []
    for i in range(count):
        label = -1 if i % 9 == 4 else i % 3
        rows.append({"promptID": 1000 + i // 3, "pairID": f"{split}-{i}", "genre": genres[i % len(genres)],
                     "premise": f"Person {i} of the {split} set walks home.",
                     "hypothesis": f"Person {i} {CUES[label]} walks home.", "label": label})
    return rows


@pytest.fixture(scope="module")
def mnli_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("multi_nli")
    for split, count, genres in (("train", 150, MATCHED_GENRES), ("validation_matched", 45, MATCHED_GENRES),
                                 ("validation_mismatched", 45, MISMATCHED_GENRES)):
        text = "".join(json.dumps(row) + "\n" for row in mnli_rows(split, count, genres))
        (folder / f"{split}.jsonl").write_text(text, encoding="utf-8")
    return folder


def local(recipe_dir, **changes):
    return dataclasses.replace(RECIPE, dataset=str(recipe_dir), **changes)


def ids(rows: list[dict]) -> list[str]:
    return [row["pairID"] for row in rows]


def test_recipe_defaults_are_the_reference_run():
    r = RECIPE
    assert (r.model_name_or_path, r.load_in_4bit, r.precision, r.gradient_checkpointing) == (
        "openai-community/gpt2-large", False, "auto", False)
    assert (r.lora_r, r.lora_alpha, r.lora_dropout, r.lora_target_modules) == (16, 32, 0.1, ["c_attn", "c_proj", "c_fc"])
    assert (r.dataset, r.train_split, r.test_splits) == (
        "nyu-mll/multi_nli", "train", ["validation_matched", "validation_mismatched"])
    assert (r.train_sample, r.validation_fraction, r.test_sample, r.sample_seed) == (50_000, 0.1, 2_500, 42)
    assert (r.per_device_train_batch_size, r.gradient_accumulation_steps, r.learning_rate, r.num_train_epochs) == (
        6, 6, 2e-4, 3)
    assert r.group_by_length  # measured: faster, same accuracy (README, Performance)
    assert planned_train_rows(r) == 45_000


def test_plan_shows_the_reference_batch_and_rows_offline(capsys):
    run(RECIPE, ["--dry_run"])
    plan = capsys.readouterr().out
    assert "effective batch 36 = per-device 6 × accumulation 6" in plan
    assert "training rows: 45000; optimizer steps: 3750" in plan
    assert "gradient checkpointing off" in plan


def test_sampling_is_seeded_reproducible_and_disjoint(mnli_dir):
    recipe = local(mnli_dir, train_sample=60, test_sample=20)
    rows = load_nli_splits(recipe, ["train", "validation", "validation_matched", "validation_mismatched"])
    assert rows == load_nli_splits(recipe, list(rows)), "the same settings choose the same rows"
    train, validation = rows["train"], rows["validation"]
    assert (len(train), len(validation)) == (54, 6), "60 sampled rows, 10% held out"
    assert not set(ids(train)) & set(ids(validation)), "train and internal validation are disjoint"
    gold = [row for row in mnli_rows("train", 150, MATCHED_GENRES) if row["label"] != -1]
    assert set(ids(train + validation)) < set(ids(gold)), "no-gold rows are dropped before sampling"
    assert ids(train) == sorted(ids(train), key=ids(gold).index), "sampled rows keep the dataset's order"
    assert {row["genre"] for row in rows["validation_mismatched"]} <= set(MISMATCHED_GENRES), "genre column kept"
    assert {row["label"] for split in rows.values() for row in split} == {"entailment", "neutral", "contradiction"}
    assert [len(rows[s]) for s in ("validation_matched", "validation_mismatched")] == [20, 20]

    reseeded = load_nli_splits(dataclasses.replace(recipe, sample_seed=7), list(rows))
    assert ids(reseeded["train"]) != ids(train) and ids(reseeded["validation_matched"]) != ids(rows["validation_matched"])
    # validation_fraction alone (every train row, stride rule) still holds out disjoint rows
    whole = load_nli_splits(local(mnli_dir, train_sample=None, validation_fraction=0.2), ["train", "validation"])
    assert (len(whole["train"]), len(whole["validation"])) == (len(gold) - 27, 27)
    # more rows asked for than the split has: all of them, in order
    assert ids(load_nli_split(local(mnli_dir, test_sample=10_000), "validation_matched")) == [
        row["pairID"] for row in mnli_rows("validation_matched", 45, MATCHED_GENRES) if row["label"] != -1]


@pytest.mark.parametrize("changes, message", [
    ({"train_stride": 550}, "train_sample .* cannot be combined with train_stride/train_size"),
    ({"test_size": 100}, "test_sample .* cannot be combined with test_stride/test_size"),
    ({"validation_fraction": 1.0}, r"validation_fraction must be in \[0, 1\)"),
    ({"validation_sample": 5}, "validation_fraction holds validation rows out of the train rows"),
    ({"train_sample": 0}, "train_sample must be at least 1"),
])
def test_sampling_settings_are_checked(changes, message):
    with pytest.raises(TunelabError, match=message):
        dataclasses.replace(RECIPE, **changes)


def test_too_few_train_rows_for_the_held_out_fraction(mnli_dir):
    with pytest.raises(TunelabError, match="validation_fraction 0.5 of 1 train rows leaves no rows to train on"):
        load_nli_splits(local(mnli_dir, train_sample=1, validation_fraction=0.5), ["train"])


def test_starter_set_as_matched_and_mismatched(tmp_path, monkeypatch):
    splits = generate_starter_mnli()
    assert list(splits) == SPLITS
    genres = {split: {row["genre"] for row in rows} for split, rows in splits.items()}
    assert genres["train"] == genres["validation"] == genres["validation_matched"]
    assert genres["validation_mismatched"] == set(MISMATCHED_PHENOMENA) and not genres["train"] & set(MISMATCHED_PHENOMENA)
    premises = {split: {row["premise"] for row in rows} for split, rows in splits.items()}
    assert not premises["train"] & (premises["validation_matched"] | premises["validation_mismatched"])
    assert [len(splits[s]) for s in SPLITS] == [360, 90, 90, 180]

    monkeypatch.setenv("TUNELAB_CACHE", str(tmp_path))
    embedded = parse_recipe(RECIPE, ["--config", str(ROOT / "recipes" / "embedded_mnli.yaml")])
    assert (embedded.model_name_or_path, embedded.dataset) == ("smollm2-135m", "starter_mnli")
    rows = load_nli_splits(embedded, SPLITS)
    assert {split: len(r) for split, r in rows.items()} == {
        "train": 130, "validation": 14, "validation_matched": 45, "validation_mismatched": 45}


def predictions(path: Path) -> list[dict]:
    with path.open(encoding="utf-8", newline="") as file:
        return list(csv.DictReader(file))


def test_recipe_end_to_end_on_tiny_gpt2(tiny_gpt2_dir, mnli_dir, tmp_path):
    """The real recipe (plain LoRA on Conv1D, gradient checkpointing, batch 6 x 6) on a tiny GPT-2."""
    assert AutoTokenizer.from_pretrained(tiny_gpt2_dir).pad_token is None, "GPT-2 ships without a pad token"
    data = shutil.copytree(mnli_dir, tmp_path / "data")
    argv = ["--model_name_or_path", str(tiny_gpt2_dir), "--dataset", str(data), "--output_dir", str(tmp_path),
            "--train_sample", "36", "--test_sample", "24", "--num_train_epochs", "1", "--precision", "fp32",
            "--learning_rate", "5e-3"]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        run_dir = main(parse_recipe(RECIPE, argv))
    assert not [w for w in caught if "fan_in_fan_out" in str(w.message)]
    adapter = json.loads((run_dir / "adapter" / "adapter_config.json").read_text())
    assert adapter["fan_in_fan_out"] is True and set(adapter["target_modules"]) == {"c_attn", "c_proj", "c_fc"}
    assert (adapter["r"], adapter["lora_alpha"], adapter["lora_dropout"]) == (16, 32, 0.1)

    info = json.loads((run_dir / "run_info.json").read_text())
    assert info["train_rows"] == 32 and info["eval_rows"] == {"validation_matched": 24, "validation_mismatched": 24}
    for split in ("validation_matched", "validation_mismatched"):
        saved = read_jsonl(run_dir / "data" / f"{split}.jsonl")
        assert len(saved) == 24 and {"genre", "pairID"} <= set(saved[0])
        for model in ("baseline", "finetuned"):
            folder = run_dir / "eval" / split / model
            metrics = json.loads((folder / "metrics.json").read_text())
            assert metrics["n"] == 24 and {"accuracy", "balanced_accuracy", "macro_f1", "per_class"} <= set(metrics)
            assert [row["premise"] for row in predictions(folder / "predictions.csv")] == [r["premise"] for r in saved]
            assert (folder / "confusion.png").read_bytes().startswith(b"\x89PNG")
    for name in ("comparison.csv", "comparison.md", "comparison.png", "improvement.json",
                 "baseline_results.json", "finetuned_results.json"):
        assert (run_dir / "comparison" / name).is_file(), name
    improvement = json.loads((run_dir / "comparison" / "improvement.json").read_text())
    assert list(improvement) == ["validation_matched", "validation_mismatched", "all splits"]
    report = (run_dir / "report" / "report.md").read_text()
    assert "## All splits" in report and "## Split: validation_mismatched (24 examples)" in report
    statistics = json.loads((run_dir / "comparison" / "statistics.json").read_text())
    assert list(statistics) == ["validation_matched", "validation_mismatched", "all splits"]
    assert statistics["all splits"]["rows"] == 48
    for split in ("validation_matched", "validation_mismatched"):
        assert json.loads((run_dir / "eval" / split / "statistics.json").read_text()) == statistics[split]
        assert f"| {split} | 24 | accuracy |" in report and f"reliability_{split}.png" in report
    assert "| all splits | 48 | accuracy |" in report

    # A restart scores the saved rows, even when the source data has changed since.
    (run_dir / "run_info.json").unlink()
    (run_dir / "eval/validation_matched/baseline/metrics.json").unlink()
    (data / "validation_matched.jsonl").write_text(
        "".join(json.dumps(row) + "\n" for row in mnli_rows("changed", 45, MATCHED_GENRES)), encoding="utf-8")
    main(parse_recipe(RECIPE, [*argv, "--stages", "baseline,report"]))
    rescored = predictions(run_dir / "eval/validation_matched/baseline/predictions.csv")
    assert [row["premise"] for row in rescored] == [
        r["premise"] for r in read_jsonl(run_dir / "data/validation_matched.jsonl")]
    assert (run_dir / "run_info.json").is_file()

    (run_dir / "run_info.json").unlink()
    with pytest.raises(TunelabError, match=r"holds an unfinished run started with other settings \(test_sample: 24 -> "
                                           r"12\).*--overwrite"):
        main(parse_recipe(RECIPE, [*argv, "--test_sample", "12", "--stages", "baseline"]))
