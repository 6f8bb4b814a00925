"""Conversations from OASST1-style message trees (branches, ranks, deleted/unreviewed messages, languages) and
from rows that each hold one conversation (`messages`), in folders or a single file."""

import json
import re

import pytest

from tunelab.chat.data import (
    STARTER_SPLITS,
    build_conversations,
    conversations_from_rows,
    load_chat_split,
    load_chat_splits,
    starter_trees,
    write_starter_oasst,
)
from tunelab.errors import TunelabError

OASST1_COLUMNS = {"message_id", "parent_id", "user_id", "created_date", "text", "role", "lang", "review_count",
                  "review_result", "deleted", "rank", "synthetic", "model_name", "detoxify", "message_tree_id",
                  "tree_state", "emojis", "labels"}


def msg(message_id, parent, role, text=None, rank=None, lang="en", deleted=False, review=True, reviews=3,
        tree="t"):
    return {"message_id": message_id, "parent_id": parent, "role": role, "text": text or message_id, "lang": lang,
            "rank": rank, "deleted": deleted, "review_result": review, "review_count": reviews,
            "message_tree_id": tree}


def texts(conversations):
    return [[m["content"] for m in c["messages"]] for c in conversations]


def test_best_ranked_reply_and_one_conversation_per_follow_up_branch():
    rows = [
        msg("P1", None, "prompter"),
        msg("A1", "P1", "assistant", rank=1),
        msg("A2", "P1", "assistant", rank=0),
        msg("A3", "P1", "assistant", rank=None),
        msg("P3", "A1", "prompter"), msg("A7", "P3", "assistant", rank=0),  # under a worse reply: never used
        msg("P2a", "A2", "prompter"), msg("A4", "P2a", "assistant", rank=0),
        msg("P2b", "A2", "prompter"), msg("A5", "P2b", "assistant", rank=1), msg("A6", "P2b", "assistant", rank=0),
    ]
    conversations = build_conversations(rows)
    assert texts(conversations) == [["P1", "A2", "P2a", "A4"], ["P1", "A2", "P2b", "A6"]]
    assert conversations[0]["tree_id"] == "t"
    assert [m["role"] for m in conversations[0]["messages"]] == ["user", "assistant", "user", "assistant"]
    assert conversations[1]["message_ids"] == ["P1", "A2", "P2b", "A6"]


def test_deleted_best_reply_falls_back_and_deleted_prompt_drops_its_subtree():
    rows = [
        msg("P1", None, "prompter"),
        msg("A1", "P1", "assistant", rank=0, deleted=True),
        msg("A2", "P1", "assistant", rank=1),
        msg("P2", "A2", "prompter", deleted=True), msg("A3", "P2", "assistant", rank=0),
        msg("P4", "A1", "prompter"), msg("A5", "P4", "assistant"),  # under the deleted reply
    ]
    assert texts(build_conversations(rows)) == [["P1", "A2"]]


@pytest.mark.parametrize("review", [None, False])
def test_unreviewed_and_rejected_messages_are_dropped(review):
    rows = [
        msg("P1", None, "prompter"),
        msg("A1", "P1", "assistant", rank=0, review=review, reviews=0),
        msg("A2", "P1", "assistant", rank=1),
        msg("Q1", None, "prompter", review=review, tree="u"), msg("B1", "Q1", "assistant", tree="u"),
    ]
    assert texts(build_conversations(rows)) == [["P1", "A2"]]


def test_language_filter():
    rows = [
        msg("P1", None, "prompter", lang="de", tree="de"), msg("A1", "P1", "assistant", lang="de", tree="de"),
        msg("Q1", None, "prompter"), msg("B1", "Q1", "assistant", rank=0),
        msg("Q2", "B1", "prompter", lang="es"), msg("B2", "Q2", "assistant", lang="es"),
    ]
    assert texts(build_conversations(rows, "en")) == [["Q1", "B1"]]  # the Spanish follow-up ends the path
    assert texts(build_conversations(rows, "de")) == [["P1", "A1"]]
    assert texts(build_conversations(rows, None)) == [["P1", "A1"], ["Q1", "B1", "Q2", "B2"]]


def test_paths_end_on_an_answer_and_none_is_a_prefix_of_another():
    rows = [
        msg("P1", None, "prompter"), msg("A1", "P1", "assistant"),
        msg("P2", "A1", "prompter"),  # unanswered follow-up
        msg("P3", "A1", "prompter"), msg("A3", "P3", "assistant"),
        msg("Q1", None, "prompter"),  # unanswered root
        msg("R1", None, "prompter"), msg("C1", "R1", "assistant"), msg("R2", "C1", "prompter"),
    ]
    assert texts(build_conversations(rows)) == [["P1", "A1", "P3", "A3"], ["R1", "C1"]]


def test_unranked_replies_come_after_ranked_ones_then_more_reviews_then_id():
    rows = [msg("P1", None, "prompter"), msg("A0", "P1", "assistant", rank=None, reviews=9),
            msg("A1", "P1", "assistant", rank=2, reviews=1)]
    assert texts(build_conversations(rows)) == [["P1", "A1"]]
    rows = [msg("P1", None, "prompter"), msg("A0", "P1", "assistant", reviews=2),
            msg("A1", "P1", "assistant", reviews=5), msg("A2", "P1", "assistant", reviews=5)]
    assert texts(build_conversations(rows)) == [["P1", "A1"]]


def test_text_is_stripped_and_missing_columns_are_reported():
    rows = [msg("P1", None, "prompter", text="  Hi?\n"), msg("A1", "P1", "assistant", text="Hello. ")]
    assert texts(build_conversations(rows)) == [["Hi?", "Hello."]]
    with pytest.raises(TunelabError, match="lacks role"):
        build_conversations([{"message_id": "x", "parent_id": None, "text": "hi"}])


def test_starter_trees_use_oasst1_schema_and_exercise_every_rule():
    rows = starter_trees("train")
    assert all(set(row) == OASST1_COLUMNS for row in rows)
    ids = [row["message_id"] for row in rows]
    assert len(set(ids)) == len(ids)
    assert all(row["parent_id"] is None or row["parent_id"] in set(ids) for row in rows)
    assert {row["lang"] for row in rows} >= {"en", "de", "es", "fr"}
    assert any(row["deleted"] for row in rows) and any(row["review_result"] is None for row in rows)
    assert any((row["rank"] or 0) > 0 for row in rows)
    english = build_conversations(rows, "en")
    assert len(english) >= 150 and len(build_conversations(rows, None)) > len(english)
    for conversation in english:
        roles = [m["role"] for m in conversation["messages"]]
        assert roles[0] == "user" and roles[-1] == "assistant" and roles[::2] == ["user"] * len(roles[::2])
    replies = {m["content"] for c in english for m in c["messages"] if m["role"] == "assistant"}
    assert "Buy cheap watches at my site!!!" not in replies  # deleted
    assert not any(reply.isupper() for reply in replies)  # unreviewed
    assert not any(reply.startswith("I think it is") for reply in replies)  # rank 1, beaten by rank 0
    assert any(len(c["messages"]) >= 6 for c in english)
    assert starter_trees("train") == rows  # deterministic


def test_starter_validation_asks_about_held_out_items():
    train = build_conversations(starter_trees("train"))
    validation = build_conversations(starter_trees("validation"))
    first_answers = {c["messages"][1]["content"] for c in train}
    held_out = [c for c in validation if c["messages"][1]["content"] not in first_answers]
    assert len(validation) >= 40 and len(held_out) >= 0.9 * len(validation)


def test_load_chat_split_from_folder_and_starter(tmp_path, monkeypatch):
    monkeypatch.setenv("TUNELAB_CACHE", str(tmp_path / "cache"))
    assert len(load_chat_split("starter", "validation", "en", size=7)) == 7
    assert sorted(p.name for p in (tmp_path / "cache/data/starter_oasst").iterdir()) == ["train.jsonl",
                                                                                       "validation.jsonl"]
    folder = write_starter_oasst(tmp_path / "copy")
    assert set(STARTER_SPLITS) == {p.stem for p in folder.glob("*.jsonl")}
    (tmp_path / "mine").mkdir()
    rows = [msg("P1", None, "prompter"), msg("A1", "P1", "assistant")]
    (tmp_path / "mine" / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert texts(load_chat_split(str(tmp_path / "mine"), "train", "en")) == [["P1", "A1"]]
    with pytest.raises(TunelabError, match="no validation.jsonl"):
        load_chat_split(str(tmp_path / "mine"), "validation", "en")
    with pytest.raises(TunelabError, match="no conversations in language 'xx'"):
        load_chat_split(str(tmp_path / "mine"), "train", "xx")


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def chat(number, system=False):
    turns = [{"role": "user", "content": f" Question {number}? "}, {"role": "assistant", "content": f"Answer {number}."}]
    return {"messages": [{"role": "system", "content": "Be brief."}] * system + turns, "source": "mine"}


def test_conversation_rows_in_a_folder_are_read_as_they_are(tmp_path):
    folder = tmp_path / "chats"
    folder.mkdir()
    write_jsonl(folder / "train.jsonl", [chat(1, system=True), chat(2)])
    write_jsonl(folder / "validation.jsonl", [chat(3)])
    train, held = load_chat_splits(str(folder), ("train", "validation"), "en")
    assert texts(train) == [["Be brief.", "Question 1?", "Answer 1."], ["Question 2?", "Answer 2."]]
    assert [m["role"] for m in train[0]["messages"]] == ["system", "user", "assistant"]
    assert texts(held) == [["Question 3?", "Answer 3."]]


def test_a_single_file_holds_a_tenth_of_its_conversations_out_the_same_way_each_time(tmp_path, capsys):
    path = write_jsonl(tmp_path / "chats.jsonl", [chat(n) for n in range(40)])
    train, held = load_chat_splits(str(path), ("train", "validation"), None)
    assert (len(train), len(held)) == (36, 4)
    assert f"[tunelab] {path}: 4 of its 40 conversations held out for evaluation" in capsys.readouterr().out
    assert not {c["tree_id"] for c in train} & {c["tree_id"] for c in held}
    assert load_chat_splits(str(path), ("train", "validation"), None, sizes=(5, 2)) == (train[:5], held[:2])
    trees = write_jsonl(tmp_path / "trees.jsonl", [msg("P1", None, "prompter", tree="a"),
                                                    msg("A1", "P1", "assistant", tree="a"),
                                                    msg("P2", "A1", "prompter", tree="a"),
                                                    msg("A2", "P2", "assistant", tree="a"),
                                                    msg("P3", "A1", "prompter", tree="a"),
                                                    msg("A3", "P3", "assistant", tree="a"),
                                                    msg("Q1", None, "prompter", tree="b"),
                                                    msg("B1", "Q1", "assistant", tree="b")])
    train, held = load_chat_splits(str(trees), ("train", "validation"), "en")
    assert len(held) in (1, 2) and len({c["tree_id"] for c in held}) == 1  # a tree's branches stay together
    assert len(train) + len(held) == 3


@pytest.mark.parametrize("messages, message", [
    ("Hi there", "row 1: messages must be a list of"),
    (["Hi there", {"role": "assistant", "content": "Hi"}], "row 1: messages must be a list of"),
    ([{"role": "bot", "content": "Hi"}], "row 1: a turn has role 'bot': give each turn a role, one of system, user, "
                                         "assistant"),
    ([{"role": "user", "content": " "}, {"role": "assistant", "content": "Hi"}],
     "row 1: a user turn has no content: fill it in or remove the row"),
    ([{"role": "user", "content": "Hi"}], "row 1: turns go user: after an optional system message, user and "
                                          "assistant turns alternate, starting with the user and ending with the "
                                          "assistant"),
    ([{"role": "user", "content": "Hi"}, {"role": "user", "content": "Hello?"},
      {"role": "assistant", "content": "Hi"}], "row 1: turns go user -> user -> assistant"),
    ([{"role": "system", "content": "Be brief."}], "row 1: turns go system:"),
])
def test_bad_conversation_rows_are_one_line_errors_naming_the_row(messages, message, tmp_path):
    path = write_jsonl(tmp_path / "chats.jsonl", [{"messages": messages}, chat(2), chat(3)])
    with pytest.raises(TunelabError, match=f"^{tmp_path}/chats.jsonl: " + re.escape(message)):
        load_chat_splits(str(path), ("train", "validation"), "en")


def test_a_single_file_must_be_json_lines_with_two_conversations(tmp_path):
    with pytest.raises(TunelabError, match=r"chats.csv: chat data is read from JSON lines: give a .jsonl file"):
        load_chat_splits(str(write_jsonl(tmp_path / "chats.csv", [chat(1)])), ("train", "validation"), "en")
    with pytest.raises(TunelabError, match=r"has 1 conversation tree\(s\): a single file needs at least 2"):
        load_chat_splits(str(write_jsonl(tmp_path / "one.jsonl", [chat(1)])), ("train", "validation"), "en")


def test_a_hub_dataset_with_a_messages_column_gives_its_conversations(tmp_path):
    """The Hub path (load_dataset), on a local copy in the Hub's layout: a `messages` column is one conversation."""
    import pyarrow
    import pyarrow.parquet

    from tunelab.chat.data import _load_from_hub

    (tmp_path / "hub" / "data").mkdir(parents=True)
    rows = [chat(n, system=n == 0) | {"prompt_id": str(n)} for n in range(3)]
    pyarrow.parquet.write_table(pyarrow.Table.from_pylist(rows), tmp_path / "hub/data/train-00000-of-00001.parquet")
    loaded = _load_from_hub(str(tmp_path / "hub"), "train")
    assert [set(row) for row in loaded] == [{"messages"}] * 3
    assert texts(conversations_from_rows(loaded, "en", "hub:train")) == [
        ["Be brief.", "Question 0?", "Answer 0."], ["Question 1?", "Answer 1."], ["Question 2?", "Answer 2."]]
