"""The README's headline, reproduced: the main job exactly as shipped, every row and every epoch.

`accelerate launch --config_file accelerate_configs/cpu.yaml recipes/phi2_snli.py --config recipes/embedded_snli.yaml`
on the embedded SmolLM2-135M must learn the starter set (at least 75% test accuracy, at least 25 points above the
pretrained baseline; the README reports 43.3% -> 83.3%), and what it prints, what metrics.json holds and what the
report's headline says must be the same numbers. The chat main job (recipes/phi2_oasst1.py with
recipes/embedded_oasst1.yaml, docs/chat.md: perplexity 3.21 -> 1.26) must cut held-out perplexity by at least a
third. Each job runs once for this module (minutes on 2 cores); every test reads that one run.
"""

import json
import math
import re

import pytest

from embedded_helpers import readme_launch

pytestmark = pytest.mark.slow

ACCURACY_LINE = re.compile(r"^\[tunelab\] test accuracy: baseline (\d+\.\d)% -> fine-tuned (\d+\.\d)% "
                           r"\(([+-]\d+\.\d) points\)$", re.MULTILINE)
PERPLEXITY_LINE = re.compile(r"^\[tunelab\] Held-out perplexity \(assistant tokens\): baseline (\d+\.\d\d) -> "
                             r"fine-tuned (\d+\.\d\d) \(([+-]\d+\.\d)%\)$", re.MULTILINE)
STARTER_ROWS = {"train": 480, "validation": 120, "test": 120}  # the NLI starter set (README)


@pytest.fixture(scope="module")
def snli_main_job(embedded_cache, tmp_path_factory):
    output = tmp_path_factory.mktemp("readme-main-job")
    stdout = readme_launch("recipes/phi2_snli.py", "recipes/embedded_snli.yaml", output, embedded_cache,
                           timeout=3600)
    return output / "embedded_snli", stdout


@pytest.fixture(scope="module")
def chat_main_job(embedded_cache, tmp_path_factory):
    output = tmp_path_factory.mktemp("readme-chat-job")
    stdout = readme_launch("recipes/phi2_oasst1.py", "recipes/embedded_oasst1.yaml", output, embedded_cache,
                           timeout=3600)
    return output / "embedded_oasst1", stdout


def test_fine_tuning_reaches_the_readme_accuracy(snli_main_job):
    run_dir, _ = snli_main_job
    before, after = (read_json(run_dir / "eval" / "test" / m / "metrics.json") for m in ("baseline", "finetuned"))
    assert before["n"] == after["n"] == STARTER_ROWS["test"], "every test row"
    assert after["accuracy"] >= 0.75, after["accuracy"]
    assert after["accuracy"] - before["accuracy"] >= 0.25, (before["accuracy"], after["accuracy"])


def test_every_row_and_every_epoch_trained(snli_main_job):
    """All 480 starter train rows, once each epoch for the yaml's 3 epochs; `extra_train_dataset: starter`
    adds nothing when the dataset already is the starter set."""
    run_dir, stdout = snli_main_job
    info = read_json(run_dir / "run_info.json")
    assert info["train_rows"] == STARTER_ROWS["train"]
    assert "(extra_train_dataset)" not in stdout
    steps_per_epoch = math.ceil(STARTER_ROWS["train"] / 8)  # phi2_snli's per-device batch 8, one process
    checkpoints = sorted(int(p.name.split("-")[1]) for p in (run_dir / "checkpoints").glob("checkpoint-*"))
    assert checkpoints[-1] == 3 * steps_per_epoch
    state = read_json(run_dir / "checkpoints" / f"checkpoint-{checkpoints[-1]}" / "trainer_state.json")
    assert state["epoch"] == 3 and state["global_step"] == state["max_steps"] == 3 * steps_per_epoch


def test_the_printed_accuracy_line_is_metrics_json(snli_main_job):
    run_dir, stdout = snli_main_job
    before, after = (read_json(run_dir / "eval" / "test" / m / "metrics.json")["accuracy"]
                     for m in ("baseline", "finetuned"))
    [printed] = ACCURACY_LINE.findall(stdout)
    assert printed == (f"{100 * before:.1f}", f"{100 * after:.1f}", f"{100 * (after - before):+.1f}")


def test_the_report_headline_says_the_same(snli_main_job):
    run_dir, _ = snli_main_job
    before, after = (read_json(run_dir / "eval" / "test" / m / "metrics.json")["accuracy"]
                     for m in ("baseline", "finetuned"))
    statistics = read_json(run_dir / "eval" / "test" / "statistics.json")
    [headline] = section_items(run_dir / "report" / "report.md", "Headline")
    assert headline.startswith(f"test: accuracy {100 * before:.1f}% → {100 * after:.1f}% "
                               f"({100 * (after - before):+.1f} points), 95% interval of the change ")
    assert statistics["mcnemar"]["verdict"] in headline
    assert headline.endswith("; the gain is significant at 5% "
                             f"({statistics['mcnemar']['corrected']} rows corrected, "
                             f"{statistics['mcnemar']['regressed']} regressed; "
                             f"McNemar p = {statistics['mcnemar']['p_value']:.3g}).")


def test_chat_fine_tuning_cuts_perplexity_by_a_third(chat_main_job):
    run_dir, _ = chat_main_job
    before, after = (read_json(run_dir / "eval" / "chat" / m / "perplexity.json") for m in ("baseline", "finetuned"))
    assert before["conversations"] == after["conversations"] == 50, "every held-out starter conversation"
    assert after["perplexity"] <= before["perplexity"] * 2 / 3, (before["perplexity"], after["perplexity"])


def test_chat_printed_line_and_report_headline_are_perplexity_json(chat_main_job):
    run_dir, stdout = chat_main_job
    before, after = (read_json(run_dir / "eval" / "chat" / m / "perplexity.json")["perplexity"]
                     for m in ("baseline", "finetuned"))
    change = 100 * (after - before) / before
    [printed] = PERPLEXITY_LINE.findall(stdout)
    assert printed == (f"{before:.2f}", f"{after:.2f}", f"{change:+.1f}")
    headline = section_items(run_dir / "report" / "report.md", "Headline")
    assert headline[0] == f"held-out perplexity (assistant tokens only): {before:.2f} → {after:.2f} ({change:+.1f}%)"


def read_json(path):
    return json.loads(path.read_text())


def section_items(report, heading):
    """The `- ` list items of the report's `## heading` section."""
    text = report.read_text()
    section = text.split(f"\n## {heading}\n", 1)[1].split("\n## ", 1)[0]
    return [line[2:] for line in section.splitlines() if line.startswith("- ")]
