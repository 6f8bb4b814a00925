"""The classification recipe's settings and data: formats, label matching, one-line errors before slow work."""

import json

import pytest

from tunelab.classify.config import ClassificationRecipe
from tunelab.config import SettingsError, load_recipe, parse_recipe
from tunelab.errors import TunelabError
from tunelab.nli.data import load_nli_splits, load_run_rows, warn_about_small_data

ROWS = [{"review": f"Review number {i} is {'good' if i % 2 else 'bad'}.", "sentiment": ["bad", "good"][i % 2],
         "stars": i} for i in range(20)]
DATA = ["--text_columns", "review", "--label_column", "sentiment", "--labels", "bad,good"]


def recipe(dataset, *argv) -> ClassificationRecipe:
    return parse_recipe(ClassificationRecipe(), ["--dataset", str(dataset), *DATA, *argv])


def write_csv(path, rows, header=("review", "sentiment", "stars")):
    lines = [",".join(header)] + [",".join(f'"{row[c]}"' if c == "review" else str(row[c]) for c in header)
                                  for row in rows]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def write_parquet(path, rows):
    import pyarrow
    import pyarrow.parquet

    pyarrow.parquet.write_table(pyarrow.Table.from_pylist(rows), path)
    return path


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


WRITERS = {"jsonl": write_jsonl, "csv": write_csv, "parquet": write_parquet}


@pytest.mark.parametrize("suffix", sorted(WRITERS))
def test_a_folder_of_split_files_in_each_format_gives_the_same_rows(suffix, tmp_path):
    for split, rows in (("train", ROWS[:12]), ("validation", ROWS[12:16]), ("test", ROWS[16:])):
        WRITERS[suffix](tmp_path / f"{split}.{suffix}", rows)
    splits = load_nli_splits(recipe(tmp_path), ["train", "validation", "test"])
    assert [row["label"] for row in splits["train"]] == [r["sentiment"] for r in ROWS[:12]]
    assert [row["review"] for row in splits["test"]] == [r["review"] for r in ROWS[16:]]
    assert int(splits["test"][0]["stars"]) == 16, "other columns are kept"


def test_a_single_file_holds_out_test_fraction_and_a_validation_share(tmp_path):
    path = write_csv(tmp_path / "my_reviews.csv", ROWS)
    splits = load_nli_splits(recipe(path, "--test_fraction", "0.25"), ["train", "validation", "test"])
    assert [len(splits[s]) for s in ("train", "validation", "test")] == [13, 2, 5]
    texts = [{row["review"] for row in rows} for rows in splits.values()]
    assert set.union(*texts) == {row["review"] for row in ROWS} and sum(map(len, texts)) == len(ROWS), "disjoint"


def test_integer_labels_are_positions_and_names_match_in_any_case(tmp_path):
    rows = [{"review": "Fine.", "sentiment": 1}, {"review": "Poor.", "sentiment": 0},
            {"review": "Unlabelled.", "sentiment": -1}]
    write_jsonl(tmp_path / "ints.jsonl", rows)
    write_jsonl(tmp_path / "names.jsonl", [{"review": "Fine.", "sentiment": "GOOD"}, {"review": "Poor.", "sentiment": "bad"}])
    for name in ("ints", "names"):
        rows = load_nli_splits(recipe(tmp_path / f"{name}.jsonl", "--test_fraction", "0"), ["test"])["test"]
        assert [row["label"] for row in rows] == ["good", "bad"], name


def test_a_local_copy_of_a_hub_dataset_is_read_by_load_dataset(tmp_path):
    """The Hub's layout (data/<split>-00000-of-00001.parquet, integer ClassLabel labels) through datasets.load_dataset,
    the code that reads a Hub id."""
    (tmp_path / "data").mkdir()
    for split, rows in (("train", ROWS[:12]), ("test", ROWS[12:])):
        write_parquet(tmp_path / "data" / f"{split}-00000-of-00001.parquet",
                      [{"review": r["review"], "sentiment": r["stars"] % 2} for r in rows])
    rows = load_nli_splits(recipe(tmp_path), ["test"])["test"]
    assert [row["label"] for row in rows] == [r["sentiment"] for r in ROWS[12:]]


def test_the_default_prompt_names_the_columns():
    assert ClassificationRecipe(text_columns=["question", "passage"], label_column="answer").template() == \
        "Question: {question}\nPassage: {passage}\nAnswer:"
    assert ClassificationRecipe(labels=["a", "b", "c"]).words() == ["a", "b", "c"]


def test_the_offline_twin_takes_a_files_own_columns_and_prompts_with_their_names():
    twin = load_recipe("recipes/classify.py", ["--config", "recipes/embedded_classify.yaml", "--dataset", "q.csv",
                                               "--text_columns", "question", "--label_column", "type",
                                               "--labels", "ABBR,DESC"])
    assert (twin.model_name_or_path, twin.template()) == ("smollm2-135m", "Question: {question}\nType:")


@pytest.mark.parametrize("argv, message", [
    (["--labels", "good"], "labels needs at least two names"),
    (["--labels", "bad,good,bad"], "labels must all differ, but bad appears more than once"),
    (["--prompt_template", "Review: {review} Title: {title}\nSentiment:"],
     "prompt_template has {title}, which no column fills (text_columns: review)"),
    (["--label_words", "no,yes,maybe"], "label_words needs 2 words, one for each of bad, good"),
])
def test_settings_errors(argv, message, tmp_path):
    with pytest.raises(SettingsError, match=message.replace("(", r"\(").replace(")", r"\)").replace("{", r"\{")
                       .replace("}", r"\}")):
        recipe(tmp_path, *argv)


@pytest.mark.parametrize("rows, message", [
    ([{"text": "Hi.", "sentiment": "good"}],
     "row 1 has no 'review' column (columns: sentiment, text): name the file's columns with --text_columns"),
    ([{"review": "Hi.", "sentiment": "good"}, {"review": "  ", "sentiment": "bad"}],
     "row 2 has an empty or non-text review"),
    ([{"review": "Hi.", "sentiment": "great"}], "row 1 has label 'great', which is not one of bad, good"),
    ([{"review": "Hi.", "sentiment": s} for s in ("good", "meh", "great", "-", "bad")],
     "row 2 has label 'meh', which is not one of bad, good (or 0 to 1; -1, '-' or empty for no gold label): fix the "
     "row or --labels (the sentiment column holds: --labels bad,good,great,meh)"),
    ([{"review": "Hi.", "sentiment": n} for n in (0, 1, 5, 2)],
     "row 3 has label 5, which is not one of bad, good (or 0 to 1; -1, '-' or empty for no gold label): fix the row "
     "or --labels (the sentiment column holds positions up to 5: name each class, in order, with --labels)"),
    ([{"review": "Hi.", "sentiment": f"note {n}"} for n in range(40)],
     "(the sentiment column holds 40 different values: is --label_column right?)"),
    ([{"review": "Hi.", "sentiment": ["good"]}], "row 1 has label ['good'], which is not one of bad, good"),
    ([{"review": "Hi.", "sentiment": "good"}, {"review": "Ho.", "sentiment": 0}],
     "mixed label types: row 1 has the name 'good', row 2 the position 0"),
])
def test_bad_rows_are_one_line_errors(rows, message, tmp_path):
    path = write_jsonl(tmp_path / "data.jsonl", rows)
    with pytest.raises(TunelabError) as error:
        load_nli_splits(recipe(path, "--test_fraction", "0"), ["test"])
    assert message in str(error.value) and "\n" not in str(error.value)


def test_a_broken_csv_row_names_the_file_and_line(tmp_path):
    path = tmp_path / "broken.csv"
    path.write_text('review,sentiment\n"Fine.",good\nPoor, really poor.,bad\n', encoding="utf-8")
    with pytest.raises(TunelabError, match=r"broken.csv, line 3: 3 fields where the header names 2"):
        load_nli_splits(recipe(path, "--test_fraction", "0"), ["test"])
    path.write_text('review,sentiment\n"Fine.",good\n"Poor.,bad\n', encoding="utf-8")
    with pytest.raises(TunelabError, match=r"broken.csv, line \d+: .*fix the quoting"):
        load_nli_splits(recipe(path, "--test_fraction", "0"), ["test"])


def test_a_split_without_a_class_is_a_warning(tmp_path, capsys):
    for split, rows in (("train", ROWS[:12]), ("validation", ROWS[12:16]), ("test", ROWS[16:20:2])):
        write_jsonl(tmp_path / f"{split}.jsonl", rows)
    settings = recipe(tmp_path)
    warn_about_small_data(settings, load_run_rows(settings, tmp_path / "run", write=False))
    assert "warning: test has no good rows" in capsys.readouterr().out
