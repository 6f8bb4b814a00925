"""The offline NLI starter set: size, balance, determinism, leakage and label spot checks."""

import json
import re
from collections import Counter

import pytest

from tunelab.nli.config import NLI_LABELS
from tunelab.nli.starter_data import (
    TAXONOMY_CHAINS,
    generate_starter_nli,
    write_starter_nli,
)

ENTAILMENT, NEUTRAL, CONTRADICTION = 0, 1, 2
EXPECTED_PHENOMENA = {
    "hypernym", "negation", "antonym", "quantifier", "added_detail", "swapped_roles", "paraphrase", "unrelated_event",
}
NUMBER_WORDS = ("two", "three", "four", "five", "six")


@pytest.fixture(scope="module")
def starter():
    return generate_starter_nli(seed=0)


def all_rows(splits):
    return [row for rows in splits.values() for row in rows]


def rows_of(splits, phenomenon):
    return [row for row in all_rows(splits) if row["phenomenon"] == phenomenon]


def words(sentence):
    return sentence.rstrip(".").lower().split()


def is_subsequence(short, long):
    remaining = iter(long)
    return all(word in remaining for word in short)


def swap_noun(sentence, old, new):
    """`sentence` with "a/an <old>" replaced by "a/an <new>", keeping the capital of a first word."""
    article = "an" if new[0] in "aeiou" else "a"
    swapped = re.sub(rf"\b[Aa]n? {old}\b", f"{article} {new}", sentence, count=1)
    return swapped[0].upper() + swapped[1:]


# ---------------------------------------------------------------------------- shape

def test_size_and_exact_label_balance_in_every_split(starter):
    assert list(starter) == ["train", "validation", "test"]
    assert len(all_rows(starter)) >= 600
    assert len(starter["train"]) > len(starter["validation"]) == len(starter["test"]) > 0
    for split, rows in starter.items():
        counts = Counter(row["label"] for row in rows)
        assert counts[0] == counts[1] == counts[2] == len(rows) // 3, split


def test_rows_have_the_schema_and_hub_label_ids(starter):
    assert NLI_LABELS == ("entailment", "neutral", "contradiction")
    for row in all_rows(starter):
        assert list(row) == ["premise", "hypothesis", "label", "phenomenon"]
        assert row["label"] in {0, 1, 2}
        assert isinstance(row["premise"], str) and isinstance(row["hypothesis"], str)


def test_every_phenomenon_is_present_with_balanced_labels(starter):
    counts = Counter((row["phenomenon"], row["label"]) for row in all_rows(starter))
    assert {phenomenon for phenomenon, _ in counts} == EXPECTED_PHENOMENA
    for phenomenon in EXPECTED_PHENOMENA:
        assert counts[phenomenon, 0] == counts[phenomenon, 1] == counts[phenomenon, 2] > 0, phenomenon


def test_premises_are_single_sentences_of_6_to_20_words(starter):
    for row in all_rows(starter):
        premise = row["premise"]
        assert premise[0].isupper() and premise.endswith(".") and premise.count(".") == 1, premise
        assert 6 <= len(premise.split()) <= 20, premise
        assert row["hypothesis"][0].isupper() and row["hypothesis"].endswith("."), row["hypothesis"]


# ---------------------------------------------------------------------------- determinism and leakage

def test_same_seed_gives_identical_output_and_another_seed_differs(starter):
    assert json.dumps(generate_starter_nli(seed=0)) == json.dumps(starter)
    assert json.dumps(generate_starter_nli(seed=1)) != json.dumps(starter)


def test_no_premise_is_shared_between_splits(starter):
    premises = {split: {row["premise"] for row in rows} for split, rows in starter.items()}
    assert not premises["train"] & premises["validation"]
    assert not premises["train"] & premises["test"]
    assert not premises["validation"] & premises["test"]


def test_a_scene_reworded_with_another_subject_stays_in_one_split(starter):
    """Leak check: "a nurse is fishing from a pier" in train and "a boy is ..." in test."""
    splits_of_scene = {}
    for split, rows in starter.items():
        for row in rows:
            if row["phenomenon"] in {"negation", "antonym", "added_detail", "paraphrase", "unrelated_event"}:
                scene = (row["phenomenon"], row["premise"].split(" is ", 1)[1])
                splits_of_scene.setdefault(scene, set()).add(split)
    assert all(len(splits) == 1 for splits in splits_of_scene.values())


def test_no_duplicate_pairs_and_no_hypothesis_repeats_its_premise(starter):
    pairs = [(row["premise"], row["hypothesis"]) for row in all_rows(starter)]
    assert len(pairs) == len(set(pairs))
    assert all(premise != hypothesis for premise, hypothesis in pairs)


def test_the_word_not_is_no_shortcut_to_a_label(starter):
    with_not = Counter(row["label"] for row in all_rows(starter) if " not " in f" {row['hypothesis']} ")
    contradictions = len(all_rows(starter)) // 3
    assert with_not[ENTAILMENT] > 0 and with_not[NEUTRAL] > 0
    assert with_not[CONTRADICTION] < contradictions / 2


# ---------------------------------------------------------------------------- label spot checks

def test_inserting_not_into_the_premise_contradicts_it(starter):
    inserted = [row for row in rows_of(starter, "negation")
                if row["hypothesis"] == row["premise"].replace(" is ", " is not ", 1)]
    assert inserted
    assert all(row["label"] == CONTRADICTION for row in inserted)


def test_hypernyms_entail_hyponyms_are_neutral_and_siblings_contradict(starter):
    assert any(chain[:4] == ("puppy", "dog", "animal", "cat") for chain in TAXONOMY_CHAINS)
    for row in rows_of(starter, "hypernym"):
        labels = {
            label
            for chain in TAXONOMY_CHAINS
            for label, noun in enumerate((chain.general, chain.specific, chain.sibling))
            if swap_noun(row["premise"], chain.middle, noun) == row["hypothesis"]
        }
        assert labels == {row["label"]}, row


def test_quantifier_cues_match_their_labels(starter):
    checked = Counter()
    for row in rows_of(starter, "quantifier"):
        premise, hypothesis = row["premise"].lower(), row["hypothesis"].lower()
        counted = premise.split()[0] in NUMBER_WORDS
        if hypothesis.startswith(("no ", "nobody ", "only one ", "dozens of ", "none of ")):
            checked["denied"] += 1
            assert row["label"] == CONTRADICTION, row
        if counted and hypothesis.startswith(("some ", "more than one ")):
            checked["weakened"] += 1
            assert row["label"] == ENTAILMENT, row
        if counted and hypothesis.startswith("every "):
            checked["generalised"] += 1
            assert row["label"] == NEUTRAL, row
        if premise.startswith("all the ") and hypothesis.startswith("every "):
            checked["all is every"] += 1
            assert row["label"] == ENTAILMENT, row
    assert set(checked) == {"denied", "weakened", "generalised", "all is every"}, f"a cue matched no row: {checked}"


def test_dropping_a_detail_entails_and_adding_one_is_neutral(starter):
    dropped = added = 0
    for row in rows_of(starter, "added_detail"):
        premise, hypothesis = words(row["premise"]), words(row["hypothesis"])
        if is_subsequence(hypothesis, premise):
            dropped += 1
            assert row["label"] == ENTAILMENT, row
        elif is_subsequence(premise, hypothesis):
            added += 1
            assert row["label"] == NEUTRAL, row
    assert dropped and added


def test_swapped_roles_passives_entail_and_swapped_exclusive_roles_contradict(starter):
    passives = contradictions = 0
    for row in rows_of(starter, "swapped_roles"):
        hypothesis = row["hypothesis"]
        if " is being " in hypothesis or " is getting " in hypothesis:
            passives += 1
            assert row["label"] == ENTAILMENT, row
        if row["label"] == CONTRADICTION:
            contradictions += 1
            premise_first_clause = words(row["premise"].split(" and ")[0])
            assert sorted(words(hypothesis)) == sorted(premise_first_clause), row
    assert passives and contradictions


def test_unrelated_event_contradictions_use_no_negation(starter):
    contradictions = [row for row in rows_of(starter, "unrelated_event") if row["label"] == CONTRADICTION]
    assert contradictions
    assert not any({"not", "no", "nobody"} & set(words(row["hypothesis"])) for row in contradictions)


# ---------------------------------------------------------------------------- writing

def read_jsonl(path):
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_write_starter_nli_writes_three_jsonl_files_matching_the_generator(tmp_path, starter):
    folder = write_starter_nli(tmp_path / "nested" / "starter", seed=0)
    assert folder == tmp_path / "nested" / "starter"
    assert sorted(path.name for path in folder.iterdir()) == ["test.jsonl", "train.jsonl", "validation.jsonl"]
    for split, rows in starter.items():
        assert read_jsonl(folder / f"{split}.jsonl") == rows


def test_write_starter_nli_replaces_existing_files(tmp_path, starter):
    (tmp_path / "train.jsonl").write_text("stale\n", encoding="utf-8")
    write_starter_nli(str(tmp_path), seed=0)
    assert read_jsonl(tmp_path / "train.jsonl") == starter["train"]
