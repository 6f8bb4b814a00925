"""Loading NLI data: schemas, no-gold rows, the SNLI subsetting rule, prompts and truncation."""

import dataclasses
import json
from pathlib import Path

import pytest

from tunelab.errors import TunelabError
from tunelab.nli.config import NLI_LABELS, NLIRecipe
from tunelab.nli.data import (
    Prompt,
    annotator_distribution,
    load_nli_split,
    load_nli_splits,
    recipe_prompt,
    say_extra_train_rows,
    subset_rows,
    tokenize_rows,
    warn_about_small_data,
)
from tunelab.rundir import read_jsonl


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def hub_schema_rows(n):
    """Rows in SNLI's Hub schema; every 7th has no gold label (-1)."""
    return [{"premise": f"Premise number {i}.", "hypothesis": f"Hypothesis {i}.", "label": -1 if i % 7 == 3 else i % 3}
            for i in range(n)]


def test_one_file_of_nli_rows_holds_a_fifth_out_for_testing_as_any_classification_file(tmp_path):
    """SNLI's own schema in one file: the test rows are a fifth of it, never train rows; --test_fraction 0
    reads the whole file for every split."""
    path = write_jsonl(tmp_path / "my_nli.jsonl", [{"sentence1": f"A premise {i}.", "sentence2": f"A hypothesis {i}.",
                                                    "gold_label": NLI_LABELS[i % 3]} for i in range(100)])
    splits = load_nli_splits(NLIRecipe(dataset=str(path)), ["train", "validation", "test"])
    assert [len(splits[s]) for s in ("train", "validation", "test")] == [72, 8, 20]
    assert not {r["premise"] for r in splits["test"]} & {r["premise"] for r in splits["train"] + splits["validation"]}
    whole = load_nli_splits(NLIRecipe(dataset=str(path), test_fraction=0), ["train", "test"])
    assert len(whole["train"]) == len(whole["test"]) == 100


def test_drops_no_gold_rows_then_strides(tmp_path):
    write_jsonl(tmp_path / "train.jsonl", hub_schema_rows(100))
    recipe = NLIRecipe(dataset=str(tmp_path), train_stride=5, train_size=10)
    rows = load_nli_split(recipe, "train")
    gold = [r for r in hub_schema_rows(100) if r["label"] != -1]
    assert [r["premise"] for r in rows] == [r["premise"] for r in gold[::5][:10]]
    assert {r["label"] for r in rows} <= {"entailment", "neutral", "contradiction"}


def test_snli_original_schema_is_understood(tmp_path):
    write_jsonl(tmp_path / "test.jsonl", [
        {"sentence1": "A man sleeps.", "sentence2": "A man rests.", "gold_label": "entailment", "pairID": "1"},
        {"sentence1": "A man sleeps.", "sentence2": "A man runs.", "gold_label": "-", "pairID": "2"},
    ])
    rows = load_nli_split(NLIRecipe(dataset=str(tmp_path)), "test")
    assert rows == [{"pairID": "1", "premise": "A man sleeps.", "hypothesis": "A man rests.", "label": "entailment"}]


def test_subset_rule_matches_reference_counts():
    # SNLI 1.0 train: 550,152 pairs, 785 of them without a gold label (label -1), dropped first.
    gold_rows = list(range(550_152 - 785))
    chosen = subset_rows(gold_rows, 550, 1000)
    assert len(chosen) == 999 and chosen[0] == 0 and chosen[-1] == 998 * 550, "the 1,000 cap is never reached"
    recipes_page = (Path(__file__).resolve().parents[2] / "docs" / "recipes.md").read_text(encoding="utf-8")
    assert "every 550th train row after dropping the 785 without a gold label (999 rows" in recipes_page
    assert subset_rows(list(range(10)), 3, None) == [0, 3, 6, 9]
    assert subset_rows(list(range(10)), 3, 2) == [0, 3]


@pytest.mark.parametrize("rows, message", [
    ([{"premise": "a", "label": 0}], "has no 'hypothesis' column"),
    ([{"premise": "a", "hypothesis": "b", "label": "maybe"}], "not one of entailment"),
    ([{"premise": " ", "hypothesis": "b", "label": 0}], "empty or non-text premise"),
    ([{"premise": "a", "hypothesis": "b", "label": -1}], "no rows left"),
])
def test_bad_rows_name_the_problem(tmp_path, rows, message):
    write_jsonl(tmp_path / "train.jsonl", rows)
    with pytest.raises(TunelabError, match=message):
        load_nli_split(NLIRecipe(dataset=str(tmp_path)), "train")


def test_malformed_line_reports_file_and_line(tmp_path):
    path = tmp_path / "train.jsonl"
    path.write_text('{"premise": "a", "hypothesis": "b", "label": 0}\n{"premise": oops}\n')
    with pytest.raises(TunelabError, match=r"train.jsonl:2: not valid JSON"):
        read_jsonl(path)


def test_non_utf8_file(tmp_path):
    path = tmp_path / "train.jsonl"
    path.write_bytes(b'{"premise": "caf\xe9", "hypothesis": "b", "label": 0}\n')
    with pytest.raises(TunelabError, match="not valid UTF-8"):
        read_jsonl(path)


def test_missing_split_file_and_path(tmp_path):
    write_jsonl(tmp_path / "train.jsonl", hub_schema_rows(3))
    with pytest.raises(TunelabError, match=r"has no test.jsonl, test.csv or test.parquet \(found: train.jsonl\)"):
        load_nli_split(NLIRecipe(dataset=str(tmp_path)), "test")
    with pytest.raises(TunelabError, match="does not exist"):
        load_nli_split(NLIRecipe(dataset=str(tmp_path / "nowhere.jsonl")), "train")


def test_a_folder_without_validation_rows_holds_a_tenth_of_train_out_and_says_so(tmp_path, capsys):
    write_jsonl(tmp_path / "train.jsonl", hub_schema_rows(70))  # 60 gold rows
    write_jsonl(tmp_path / "test.jsonl", hub_schema_rows(14))
    recipe = NLIRecipe(dataset=str(tmp_path), train_stride=1, train_size=None, validation_stride=1,
                       validation_size=None, test_stride=1, test_size=None)
    rows = load_nli_splits(recipe, ["train", "validation", "test"])
    assert (len(rows["train"]), len(rows["validation"]), len(rows["test"])) == (54, 6, 12)
    train, validation = ({row["premise"] for row in rows[split]} for split in ("train", "validation"))
    assert not train & validation and len(train | validation) == 60
    assert load_nli_splits(recipe, ["validation"]) == {"validation": rows["validation"]}, "the same rows every time"
    warn_about_small_data(recipe, rows)
    assert (f"warning: {tmp_path} has no validation.jsonl: validating on 6 rows held out of train (10%; "
            "--validation_fraction sets the share)") in capsys.readouterr().out

    write_jsonl(tmp_path / "validation.jsonl", hub_schema_rows(7))  # a validation file is read, never replaced
    assert len(load_nli_splits(recipe, ["train", "validation"])["train"]) == 60


def test_extra_train_dataset_adds_its_whole_train_split_to_train_only(tmp_path, capsys):
    own, extra = tmp_path / "own", tmp_path / "extra"
    for folder, count in ((own, 30), (extra, 14)):
        folder.mkdir()
        for split in ("train", "validation", "test"):
            write_jsonl(folder / f"{split}.jsonl", [{**row, "premise": f"{folder.name} {row['premise']}"}
                                                    for row in hub_schema_rows(count)])
    recipe = NLIRecipe(dataset=str(own), train_sample=10, extra_train_dataset=str(extra))
    rows = load_nli_splits(recipe, ["train", "validation", "test"])
    assert [r["premise"].split()[0] for r in rows["train"]] == ["own"] * 10 + ["extra"] * 12, "all 12 gold rows added"
    say_extra_train_rows(recipe, rows)
    assert f"train: 10 rows of {own} and 12 of {extra} (extra_train_dataset)" in capsys.readouterr().out
    assert {r["premise"].split()[0] for r in rows["validation"] + rows["test"]} == {"own"}
    alone = load_nli_splits(dataclasses.replace(recipe, extra_train_dataset=None), ["train"])["train"]
    assert rows["train"][:10] == alone, "the own rows are chosen as without the extra set"
    same = dataclasses.replace(recipe, extra_train_dataset=str(own))
    assert load_nli_splits(same, ["train"])["train"] == alone, "its own dataset adds nothing"
    named_otherwise = dataclasses.replace(recipe, extra_train_dataset=str(tmp_path / "extra" / ".." / "own"))
    assert load_nli_splits(named_otherwise, ["train"])["train"] == alone, "nor when named another way"
    starter = load_nli_split(dataclasses.replace(recipe, extra_train_dataset="starter"), "train")
    assert len(starter) == 10 + 480
    with pytest.raises(TunelabError, match="does not exist"):
        load_nli_split(dataclasses.replace(recipe, extra_train_dataset=str(tmp_path / "none.jsonl")), "train")


def test_unreachable_hub_dataset_is_one_line(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    with pytest.raises(TunelabError, match="cannot load dataset 'nobody/no-such-nli-set'") as error:
        load_nli_split(NLIRecipe(dataset="nobody/no-such-nli-set"), "train")
    assert "\n" not in str(error.value)


def test_prompt_format():
    assert Prompt().format({"premise": "A dog runs.", "hypothesis": "An animal moves."}) == \
        "Premise: A dog runs.\nHypothesis: An animal moves.\nRelationship:"
    # one pass: braces inside a sentence are text, not placeholders
    assert Prompt("{hypothesis} | {premise} ->").format({"premise": "Say {hypothesis}.", "hypothesis": "B."}) == "B. | Say {hypothesis}. ->"


def test_prompt_template_needs_both_placeholders_once():
    with pytest.raises(TunelabError, match=r"prompt_template must hold \{hypothesis\} exactly once"):
        NLIRecipe(prompt_template="Premise: {premise}\nAnswer:")


def test_chat_template_wraps_the_prompt_as_a_user_turn(gpt2_tokenizer_dir):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(gpt2_tokenizer_dir)
    recipe = NLIRecipe(model_name_or_path=str(gpt2_tokenizer_dir), use_chat_template=True,
                       prompt_template="Does '{premise}' imply '{hypothesis}'?")
    with pytest.raises(TunelabError, match="has no chat template: set --use_chat_template false"):
        recipe_prompt(recipe, tokenizer)
    tokenizer.chat_template = ("{% for m in messages %}<|{{ m.role }}|>{{ m.content }}\n{% endfor %}"
                               "{% if add_generation_prompt %}<|assistant|>{% endif %}")
    prompt = recipe_prompt(recipe, tokenizer)
    assert prompt.format({"premise": "A {x}.", "hypothesis": "B."}) == "<|user|>Does 'A {x}.' imply 'B.'?\n<|assistant|>"
    assert recipe_prompt(dataclasses.replace(recipe, use_chat_template=False), tokenizer) == \
        Prompt("Does '{premise}' imply '{hypothesis}'?")
    dataset, _ = tokenize_rows([{"premise": "A.", "hypothesis": "B.", "label": "neutral"}], tokenizer, 64, 1,
                               prompt=prompt)
    assert tokenizer.decode(dataset[0]["input_ids"]) == prompt.format({"premise": "A.", "hypothesis": "B."})


def test_long_premises_are_truncated_never_the_answer_position(gpt2_tokenizer_dir):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(gpt2_tokenizer_dir)
    rows = [{"premise": "word " * 300, "hypothesis": "A short claim.", "label": "neutral"},
            {"premise": "A short premise.", "hypothesis": "A short claim.", "label": "entailment"}]
    dataset, truncated = tokenize_rows(rows, tokenizer, max_length=64, reserve=1)
    assert truncated == 1
    long_ids = dataset[0]["input_ids"]
    assert len(long_ids) <= 63
    assert tokenizer.decode(long_ids).endswith("Hypothesis: A short claim.\nRelationship:")
    assert dataset["labels"] == [1, 0]


def test_annotator_labels_become_the_training_distribution(tmp_path, gpt2_tokenizer_dir):
    from transformers import AutoTokenizer

    rows = [{"sentence1": "A.", "sentence2": "B.", "gold_label": "neutral",
             "annotator_labels": ["neutral", "entailment", "neutral", "neutral", "contradiction"]},
            {"sentence1": "C.", "sentence2": "D.", "gold_label": "contradiction"}]
    write_jsonl(tmp_path / "train.jsonl", rows)
    loaded = load_nli_split(NLIRecipe(dataset=str(tmp_path)), "train")
    assert [annotator_distribution(row) for row in loaded] == [[0.2, 0.6, 0.2], [0.0, 0.0, 1.0]]
    tokenizer = AutoTokenizer.from_pretrained(gpt2_tokenizer_dir)
    soft, _ = tokenize_rows(loaded, tokenizer, 64, 1, annotator_labels=True)
    assert soft["label_distribution"] == [[0.2, 0.6, 0.2], [0.0, 0.0, 1.0]] and soft["labels"] == [1, 2]
    assert "label_distribution" not in tokenize_rows(loaded, tokenizer, 64, 1)[0].column_names
