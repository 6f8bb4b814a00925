"""Bad input ends on one line that names the file, row or setting and the fix, before any slow work: data files
that are not JSON lines, YAML mistakes, settings no run can use, chat trees that break the OASST1 shape; test rows
that are also training rows are warned about; notices a user cannot act on stay hidden unless --debug."""

import json
import logging
import shutil
import sys
import warnings
from pathlib import Path

import pytest

from tunelab.chat.data import build_conversations, load_chat_split
from tunelab.config import parse_recipe
from tunelab.console import quiet_third_party
from tunelab.errors import TunelabError
from tunelab.models import check_target_modules
from tunelab.nli.config import NLIRecipe
from tunelab.nli.data import load_nli_split, load_nli_splits, warn_about_small_data
from tunelab.rundir import read_jsonl

ROWS = [{"premise": "A man walks.", "hypothesis": "A man surely walks.", "label": 0},
        {"premise": "A girl sings.", "hypothesis": "A girl never sings.", "label": 2}]


def nli_folder(folder: Path, train_text: str | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for split in ("train", "validation", "test"):
        (folder / f"{split}.jsonl").write_text("".join(json.dumps(row) + "\n" for row in ROWS), encoding="utf-8")
    if train_text is not None:
        (folder / "train.jsonl").write_text(train_text, encoding="utf-8")
    return folder


# ---------------------------------------------------------------------------- data files (one reader for all)

def test_a_byte_order_mark_is_read_past(tmp_path):
    folder = nli_folder(tmp_path / "d")
    (folder / "train.jsonl").write_bytes(b"\xef\xbb\xbf" + (folder / "train.jsonl").read_bytes())
    assert read_jsonl(folder / "train.jsonl") == ROWS
    assert len(load_nli_split(NLIRecipe(dataset=str(folder)), "train")) == 2


def test_a_pretty_printed_json_array_is_named_as_such(tmp_path):
    folder = nli_folder(tmp_path / "d", json.dumps(ROWS, indent=2))
    with pytest.raises(TunelabError, match=r"train.jsonl:1 holds a JSON array, not JSON lines: write one object per "
                                           r"line \(for example with: jq -c"):
        load_nli_split(NLIRecipe(dataset=str(folder)), "train")


def test_a_folder_or_a_looping_link_where_the_file_should_be(tmp_path):
    folder = nli_folder(tmp_path / "d")
    (folder / "train.jsonl").unlink()
    (folder / "train.jsonl").mkdir()
    with pytest.raises(TunelabError, match=r"train.jsonl is a folder where a data file should be"):
        load_nli_split(NLIRecipe(dataset=str(folder)), "train")
    shutil.rmtree(folder / "train.jsonl")
    (folder / "train.jsonl").symlink_to(folder / "train.jsonl")
    with pytest.raises(TunelabError, match=r"train.jsonl is a symbolic link that loops back on itself"):
        load_nli_split(NLIRecipe(dataset=str(folder)), "train")
    chat = tmp_path / "chat"
    chat.mkdir()
    (chat / "train.jsonl").symlink_to(chat / "train.jsonl")
    with pytest.raises(TunelabError, match=r"train.jsonl is a symbolic link that loops back on itself"):
        load_chat_split(str(chat), "train", None)


def test_a_missing_extra_train_dataset_is_named_as_that_setting(tmp_path):
    recipe = NLIRecipe(dataset=str(nli_folder(tmp_path / "d")), extra_train_dataset=str(tmp_path / "gone.jsonl"))
    with pytest.raises(TunelabError, match=r"^extra_train_dataset path .*gone.jsonl does not exist: check the "
                                           r"--extra_train_dataset path$"):
        load_nli_splits(recipe, ["train"])


def test_test_rows_that_are_also_training_rows_are_counted(tmp_path, capsys):
    folder = nli_folder(tmp_path / "d")
    recipe = NLIRecipe(dataset=str(folder))
    rows = load_nli_splits(recipe, ["train", "test"])
    rows["test"].append({"premise": "Unseen.", "hypothesis": "Never seen.", "label": "neutral"})
    warn_about_small_data(recipe, rows)
    assert "warning: 2 of the 3 test rows are also train rows: the scores on them are scores on training rows" \
        in capsys.readouterr().out
    rows["test"].pop(0)
    warn_about_small_data(recipe, rows)
    assert "warning: 1 of the 2 test rows is also a train row: its score is a score on a training row" \
        in capsys.readouterr().out


# ---------------------------------------------------------------------------- settings

@pytest.mark.parametrize("text, message", [
    ("learning_rate: 1e-4\nseed: 3\nlearning_rate: 2e-4\n", r"line 3 has the key 'learning_rate' twice: keep one"),
    ("seed: 3\nlora_target_modules:\n\t- q_proj\n", r"line 3 is indented with a tab: YAML indents with spaces only"),
])
def test_yaml_with_a_repeated_key_or_a_tab_names_the_line(text, message, tmp_path):
    (tmp_path / "c.yaml").write_text(text)
    with pytest.raises(TunelabError, match=message):
        parse_recipe(NLIRecipe(), ["--config", str(tmp_path / "c.yaml")])


@pytest.mark.parametrize("argv, message", [
    (["--num_train_epochs", "inf"], "num_train_epochs must be a finite number, not inf"),
    (["--prompt_template", "P: {premise} H: {hypothesis} Topic: {topic}"],
     r"prompt_template has \{topic\}, which no column fills"),
])
def test_settings_no_run_can_use_are_refused_on_one_line(argv, message):
    with pytest.raises(TunelabError, match=message) as error:
        parse_recipe(NLIRecipe(), argv)
    assert "\n" not in str(error.value)


def test_a_lora_target_that_is_not_a_linear_layer_is_one_line(tiny_llama_dir):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_llama_dir)
    with pytest.raises(TunelabError) as error:
        check_target_modules(model, ["q_proj", "input_layernorm"])
    message = str(error.value)
    assert message.startswith("lora_target_modules names input_layernorm (LlamaRMSNorm), not a linear layer")
    assert "q_proj" in message and "\n" not in message and "eps=" not in message


# ---------------------------------------------------------------------------- chat trees

def message(message_id, parent, role, text="text"):
    return {"message_id": message_id, "parent_id": parent, "role": role, "text": text, "lang": "en",
            "review_result": True, "rank": 0}


@pytest.mark.parametrize("rows, found", [
    ([message("P1", None, "prompter"), message("A1", "P1", "bot")], r"row 2: unknown role 'bot': use prompter or "),
    ([message("P1", None, "prompter"), message("A1", "P1", "assistant", None)], "row 2: message A1 has no text"),
    ([message("P1", None, "prompter", "  "), message("A1", "P1", "assistant")], "row 1: message P1 has no text"),
    ([message("P1", None, "prompter"), message("P2", "P1", "prompter")],
     "row 2: message P2 has role 'prompter' where 'assistant' belongs"),
    ([message("A0", None, "assistant")], "row 1: message A0 has role 'assistant' where 'prompter' belongs"),
])
def test_chat_rows_that_break_the_tree_name_the_file_and_row(rows, found, tmp_path):
    (tmp_path / "train.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    with pytest.raises(TunelabError, match=f"^{tmp_path / 'train.jsonl'}: {found}"):
        load_chat_split(str(tmp_path), "train", "en")


def test_a_conversation_deeper_than_the_recursion_limit_is_walked(tmp_path):
    depth = sys.getrecursionlimit() * 2
    rows = [message("m0", None, "prompter")]
    rows += [message(f"m{i}", f"m{i - 1}", "assistant" if i % 2 else "prompter") for i in range(1, depth)]
    conversations = build_conversations(rows)
    assert len(conversations) == 1 and len(conversations[0]["messages"]) == depth


# ---------------------------------------------------------------------------- notices

def test_notices_a_user_cannot_act_on_are_hidden_unless_debug(caplog):
    notices = [("A single label was found in 'y_true' and 'y_pred'. For the confusion matrix ...",
                "sklearn.metrics._classification"),
               ("y_pred contains classes not in y_true", "sklearn.metrics._classification"),
               ("Attempting to set identical low and high xlims makes transformation singular", "matplotlib.axes._base")]
    for debug in (False, True):
        with warnings.catch_warnings(record=True) as caught:
            warnings.resetwarnings()
            quiet_third_party(debug)
            for text, module in notices:
                warnings.warn_explicit(text, UserWarning, "x.py", 1, module=module)
        assert len(caught) == (len(notices) if debug else 0)
    report = ("\x1b[1mPhiForSequenceClassification LOAD REPORT\x1b[0m from: tiny\nKey | Status |\n----+----+-\n"
              "lm_head.weight | UNEXPECTED |\nscore.weight | MISSING |\n")
    with caplog.at_level(logging.WARNING):
        logger = logging.getLogger("transformers.modeling_utils")
        logger.warning(report)  # what --head classifier means to do
        logger.warning(report.replace("score.weight", "model.layers.0.mlp.up_proj.weight"))  # a real loss
    assert [r.getMessage().count("up_proj") for r in caplog.records] == [1]
