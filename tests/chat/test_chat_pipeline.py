"""Chat SFT: templates, assistant-only loss masks token by token, TRL's labels, the phi2_oasst1 recipe end to end
(with its resource monitoring and summary), W&B tracking of a chat run, and a run on two CPU processes."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from chat_helpers import CHAT_RECIPE, LLAMA_TARGETS, ROOT, tiny_chat_overrides
from test_tracking import free_port, no_credentials, offline_run, wandb_environment
from tunelab.chat.format import (
    PAD_TOKEN,
    TUNELAB_CHAT_TEMPLATE,
    end_of_turn_id,
    prepare_chat_tokenizer,
    render,
    tokenize_chat,
)
from tunelab.chat.pipeline import ChatRun, main
from tunelab.config import parse_recipe
from tunelab.errors import TunelabError
from tunelab.tiny_models import load_gpt2_tokenizer
from tunelab.tracking import NO_KEY

# SmolLM2-Instruct's own template (ChatML with a default system message): a model that has a template.
CHATML_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful AI assistant.<|im_end|>\n' }}{% endif %}"
    "{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
CONVERSATION = [
    {"role": "user", "content": "What is the capital of Peru?"},
    {"role": "assistant", "content": "The capital of Peru is Lima."},
    {"role": "user", "content": "And Chile?"},
    {"role": "assistant", "content": "The capital of Chile is Santiago."},
]


def chatml_tokenizer():
    tokenizer = load_gpt2_tokenizer()
    tokenizer.add_special_tokens({"additional_special_tokens": ["<|im_start|>", "<|im_end|>"]})
    tokenizer.eos_token = tokenizer.pad_token = "<|im_end|>"
    tokenizer.chat_template = CHATML_TEMPLATE
    return tokenizer


def expected_masks(tokenizer, input_ids, text, assistant_texts):
    """1 for tokens inside each reply + end-of-turn token, found by string search and a token-by-token walk."""
    spans, cursor = [], 0
    for piece in assistant_texts:
        start = text.index(piece, cursor)
        spans.append((start, start + len(piece)))
        cursor = start + len(piece)
    masks, position = [], 0
    for token in input_ids:
        piece = tokenizer.decode([token])
        assert text[position:position + len(piece)] == piece
        masks.append(int(any(start <= position < end for start, end in spans)))
        position += len(piece)
    assert position == len(text)
    return masks


def test_model_without_template_gets_tunelabs_with_a_new_pad_token():
    tokenizer = load_gpt2_tokenizer()
    assert tokenizer.chat_template is None and tokenizer.pad_token is None
    info = prepare_chat_tokenizer(tokenizer)
    assert info["chat_template"] == "tunelab" and tokenizer.chat_template == TUNELAB_CHAT_TEMPLATE
    assert info["end_of_turn"] == "<|endoftext|>" and info["end_of_turn_id"] == tokenizer.eos_token_id
    assert info["pad_token"] == PAD_TOKEN and info["pad_token_added"]  # GPT-2's unk is its EOS: no other token
    assert tokenizer.pad_token_id not in (info["end_of_turn_id"], None)
    assert render(tokenizer, CONVERSATION[:1], add_generation_prompt=True) == (
        "### User:\nWhat is the capital of Peru?\n\n### Assistant:\n")


def test_model_template_is_used_and_pad_moves_off_the_end_of_turn_token():
    tokenizer = chatml_tokenizer()
    info = prepare_chat_tokenizer(tokenizer)
    assert info["chat_template"] == "model" and tokenizer.chat_template == CHATML_TEMPLATE
    assert info["end_of_turn"] == "<|im_end|>"
    assert info["pad_token"] == "<|endoftext|>" and not info["pad_token_added"]  # its unk token, not <|im_end|>
    forced = chatml_tokenizer()
    assert prepare_chat_tokenizer(forced, "tunelab")["chat_template"] == "tunelab"
    with pytest.raises(TunelabError, match="has no chat template"):
        prepare_chat_tokenizer(load_gpt2_tokenizer(), "model")


def test_tunelab_template_masks_token_by_token():
    tokenizer = load_gpt2_tokenizer()
    prepare_chat_tokenizer(tokenizer)
    row = tokenize_chat(tokenizer, CONVERSATION)
    text = render(tokenizer, CONVERSATION)
    replies = [m["content"] + "<|endoftext|>" for m in CONVERSATION if m["role"] == "assistant"]
    assert row["assistant_masks"] == expected_masks(tokenizer, row["input_ids"], text, replies)
    masked = [t for t, m in zip(row["input_ids"], row["assistant_masks"]) if m]
    assert tokenizer.decode(masked) == "".join(replies)
    assert masked.count(tokenizer.eos_token_id) == 2 and tokenizer.pad_token_id not in row["input_ids"]
    # tunelab's template carries {% generation %} markers: transformers' own assistant mask agrees.
    reference = tokenizer.apply_chat_template(CONVERSATION, return_dict=True, return_assistant_tokens_mask=True)
    assert reference["input_ids"] == row["input_ids"]
    assert reference["assistant_masks"] == row["assistant_masks"]


def test_model_template_masks_token_by_token():
    tokenizer = chatml_tokenizer()
    prepare_chat_tokenizer(tokenizer)
    row = tokenize_chat(tokenizer, CONVERSATION)
    text = render(tokenizer, CONVERSATION)
    assert text.startswith("<|im_start|>system\nYou are a helpful AI assistant.<|im_end|>\n<|im_start|>user\n")
    replies = [m["content"] + "<|im_end|>" for m in CONVERSATION if m["role"] == "assistant"]
    assert row["assistant_masks"] == expected_masks(tokenizer, row["input_ids"], text, replies)
    end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    ends = [i for i, token in enumerate(row["input_ids"]) if token == end]
    assert [row["assistant_masks"][i] for i in ends] == [0, 0, 1, 0, 1]  # system, user, reply, user, reply
    truncated = tokenize_chat(tokenizer, CONVERSATION, max_length=20)
    assert truncated["input_ids"] == row["input_ids"][:20]
    assert truncated["assistant_masks"] == row["assistant_masks"][:20]


def test_templates_that_cannot_teach_stopping_or_are_not_prefix_preserving_are_refused():
    tokenizer = load_gpt2_tokenizer()
    tokenizer.chat_template = ("{% for m in messages %}{{ m['role'] + ': ' + m['content'] + '\n' }}{% endfor %}"
                               "{% if add_generation_prompt %}assistant: {% endif %}")
    with pytest.raises(TunelabError, match="could not learn to stop"):
        prepare_chat_tokenizer(tokenizer)
    tokenizer.chat_template = ("{{ messages | length }}{% for m in messages %}{{ m['content'] + eos_token }}"
                               "{% endfor %}")
    with pytest.raises(TunelabError, match="not prefix-preserving"):
        end_of_turn_id(tokenizer)


def test_template_file(tmp_path):
    path = tmp_path / "t.jinja"
    path.write_text(TUNELAB_CHAT_TEMPLATE.replace("### ", ">> "))
    tokenizer = chatml_tokenizer()
    info = prepare_chat_tokenizer(tokenizer, str(path))
    assert info["chat_template"] == str(path) and info["end_of_turn"] == "<|im_end|>"  # eos_token of this tokenizer
    assert render(tokenizer, CONVERSATION[:1]).startswith(">> User:")


def test_sft_trainer_labels_train_assistant_turns_and_their_end_of_turn_token(tiny_llama_dir, tmp_path):
    argv = tiny_chat_overrides(tiny_llama_dir, tmp_path, "--load_in_4bit", "false", "--optim", "adamw_torch",
                               "--lora_target_modules", "q_proj,v_proj")
    with ChatRun(parse_recipe(CHAT_RECIPE, argv), []) as run:
        run.load("trainer")
        trainer = run.trainer
        tokenizer = run.tokenizer
        eot, pad = run.chat_info["end_of_turn_id"], tokenizer.pad_token_id
        assert eot != pad
        assert run.model.get_input_embeddings().num_embeddings == len(tokenizer)  # grown for the added pad token
        dataset = trainer.train_dataset
        assert len(dataset) == 48
        for row, source in zip(dataset, run.tokenized["train"]):
            assert row["input_ids"] == source["input_ids"]
            assert row["labels"] == [t if m else -100 for t, m in zip(source["input_ids"], source["assistant_masks"])]
            assert row["labels"].count(eot) >= 1 and pad not in row["labels"]
        first = run.conversations["train"][0]
        turns = sum(m["role"] == "assistant" for m in first["messages"])
        assert dataset[0]["labels"].count(eot) == turns
        batch = trainer.data_collator([dataset[0], dataset[2]])
        shorter = min(len(dataset[0]["input_ids"]), len(dataset[2]["input_ids"]))
        longer = max(len(dataset[0]["input_ids"]), len(dataset[2]["input_ids"]))
        padded_row = 0 if len(dataset[0]["input_ids"]) == shorter else 1
        if shorter < longer:
            assert (batch["input_ids"][padded_row, shorter:] == pad).all()
            assert (batch["labels"][padded_row, shorter:] == -100).all()
            assert (batch["attention_mask"][padded_row, shorter:] == 0).all()


def test_phi2_oasst1_recipe_on_a_tiny_4bit_phi(tiny_phi_dir, tmp_path, capsys):
    """The real recipe (4-bit QLoRA, phi's projections, paged AdamW 32-bit) on the starter trees."""
    recipe = parse_recipe(CHAT_RECIPE, tiny_chat_overrides(tiny_phi_dir, tmp_path))
    assert recipe.load_in_4bit and recipe.optim == "paged_adamw_32bit" and recipe.lora_target_modules[-1] == "fc2"
    run_dir = main(recipe)
    out = capsys.readouterr().out
    assert run_dir == tmp_path / "phi2_oasst1"
    for name in ("config.yaml", "run_info.json", "train_log.json", "progress.json", "monitoring.json",
                 "adapter/adapter_model.safetensors", "adapter/tokenizer.json", "adapter/tunelab_chat.json",
                 "eval/chat/baseline/perplexity.json", "eval/chat/finetuned/perplexity.json",
                 "eval/chat/baseline/replies.json", "eval/chat/finetuned/replies.json", "eval/chat/replies.csv",
                 "report/report.md", "report/report.html", "report/report.pdf", "report/perplexity.png"):
        assert (run_dir / name).is_file(), name
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir() if p.is_dir()) == ["checkpoint-2",
                                                                                        "checkpoint-4"]
    info = json.loads((run_dir / "run_info.json").read_text())
    assert info["task"] == "chat" and info["train_rows"] == 48 and info["eval_rows"] == {"held-out conversations": 8}
    assert info["chat_format"]["chat_template"] == "tunelab" and info["chat_format"]["pad_token_added"]
    before, after = (json.loads((run_dir / f"eval/chat/{m}/perplexity.json").read_text())
                     for m in ("baseline", "finetuned"))
    assert before["assistant_tokens"] == after["assistant_tokens"] > 0 and before["conversations"] == 8
    assert after["perplexity"] < before["perplexity"]
    for figures in (before, after):  # each conversation's losses, for the report's bootstrap interval
        losses = figures["per_conversation"]
        assert len(losses["nll_sum"]) == 8 and losses["assistant_tokens"] == before["per_conversation"]["assistant_tokens"]
        assert sum(losses["nll_sum"]) / sum(losses["assistant_tokens"]) == pytest.approx(figures["mean_nll"])
    replies = json.loads((run_dir / "eval/chat/finetuned/replies.json").read_text())
    assert [r["prompt"] for r in replies] == ["What is the capital of Sweden?", "What is 23 plus 19?"]
    assert all(1 <= r["new_tokens"] <= 4 for r in replies)
    log = json.loads((run_dir / "train_log.json").read_text())
    assert [entry["step"] for entry in log if "loss" in entry] == [1, 2, 3, 4]
    assert not (run_dir / ".adapter.partial").exists()

    # The resource monitor watched training: its figures reach the log, progress.json, run_info.json and the terminal.
    assert all("cpu_rss_gib" in entry and "step_time_s" in entry for entry in log if "loss" in entry)
    monitoring = info["monitoring"]
    assert monitoring["train_steps"] == 4 and monitoring["tokens_per_s"] > 0 and "cpu" in monitoring["peak_devices"]
    assert json.loads((run_dir / "progress.json").read_text())["monitoring"] == monitoring
    assert json.loads((run_dir / "monitoring.json").read_text())["summary"] == monitoring
    assert re.search(r"\[tunelab\] Wall time .*: load .*, train .*, evaluate ", out)
    assert "[tunelab] Peak memory: cpu " in out and "real tokens/s" in out

    report = (run_dir / "report/report.md").read_text()
    assert f"{before['perplexity']:.2f} → {after['perplexity']:.2f}" in report
    assert re.search(r"95% interval of the change: [-+][\d.]+ to [-+][\d.]+ \([-+][\d.]+% to [-+][\d.]+%\), by a "
                     r"paired bootstrap over the 8 held-out conversations", report)
    assert "| What is 23 plus 19? |" in report and "end-of-turn token: '<|endoftext|>'" in report
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", info["started"]) and f"started {info['started']};" in report
    from tunelab.report import write_report

    assert write_report(run_dir) == run_dir / "report/report.md"  # `tunelab report` rebuilds a chat report
    with pytest.raises(TunelabError, match="holds a finished run"):
        main(recipe)


def test_chat_run_on_a_single_file_of_conversations_holds_a_tenth_out_and_learns(tiny_llama_dir, tmp_path):
    """A user's own .jsonl of `messages` conversations (a system turn in each): 54 train, 6 held out."""
    cities = ["Lima", "Quito", "Bogota", "Santiago", "Caracas", "Montevideo"]
    rows = [{"messages": [{"role": "system", "content": "Answer in one sentence."},
                          {"role": "user", "content": f"Where is office {n}?"},
                          {"role": "assistant", "content": f"Office {n} is in {cities[n % 6]}."}]} for n in range(60)]
    path = tmp_path / "my_chats.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    argv = tiny_chat_overrides(tiny_llama_dir, tmp_path / "runs", "--load_in_4bit", "false", "--optim", "adamw_torch",
                               "--gradient_checkpointing", "false", "--lora_target_modules", LLAMA_TARGETS)
    argv[argv.index("starter")] = str(path)
    run_dir = main(parse_recipe(CHAT_RECIPE, argv))
    info = json.loads((run_dir / "run_info.json").read_text())
    assert info["train_rows"] == 48 and info["eval_rows"] == {"held-out conversations": 6}
    before, after = (json.loads((run_dir / f"eval/chat/{m}/perplexity.json").read_text())
                     for m in ("baseline", "finetuned"))
    assert before["conversations"] == 6 and after["perplexity"] < before["perplexity"]


def test_chat_run_with_compiled_layers_trains_through_trl_and_generates_its_replies(tiny_llama_dir, tmp_path):
    """torch_compile in a chat run: TRL's training steps (with gradient checkpointing), the perplexity and the
    generated replies all run, and the layers compile a few graphs, far from PyTorch's recompile limit."""
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    counters.clear()
    argv = tiny_chat_overrides(tiny_llama_dir, tmp_path, "--load_in_4bit", "false", "--optim", "adamw_torch",
                               "--gradient_checkpointing", "true", "--lora_target_modules", LLAMA_TARGETS,
                               "--torch_compile", "true")
    run_dir = main(parse_recipe(CHAT_RECIPE, argv))
    for name in ("baseline", "finetuned"):
        assert len(json.loads((run_dir / "eval" / "chat" / name / "replies.json").read_text())) == 2
    assert 0 < counters["stats"]["unique_graphs"] < torch._dynamo.config.recompile_limit
    assert (run_dir / "adapter" / "adapter_model.safetensors").is_file()


def test_chat_run_needs_a_wandb_key_unless_offline_then_tracks_training(tiny_llama_dir, tmp_path, monkeypatch):
    for name in ("WANDB_API_KEY", "WANDB_IDENTITY_TOKEN_FILE", "WANDB_PROJECT", "WANDB_NAME", "WANDB_RUN_GROUP",
                 "WANDB_RUN_ID"):
        monkeypatch.delenv(name, raising=False)
    for name, value in {**no_credentials(tmp_path), **wandb_environment(tmp_path), "WANDB_MODE": "online"}.items():
        monkeypatch.setenv(name, value)
    argv = tiny_chat_overrides(tiny_llama_dir, tmp_path / "runs", "--load_in_4bit", "false", "--optim", "adamw_torch",
                               "--lora_target_modules", "q_proj,v_proj", "--report_to", "wandb", "--stages", "baseline,train")
    recipe = parse_recipe(CHAT_RECIPE, argv)
    with pytest.raises(TunelabError) as error:
        main(recipe)
    assert str(error.value) == NO_KEY and not (tmp_path / "runs").exists(), "refused before anything loads"

    monkeypatch.setenv("WANDB_MODE", "offline")
    run = offline_run(main(recipe))
    assert run["run"].display_name == "phi2_oasst1" and run["config"]["recipe"]["chat_template"] == "auto"
    for key in ("train/loss", "train/step_time_s", "train/tokens_per_s", "timings/train_s", "monitoring/tokens_per_s",
                "monitoring/peak/cpu_peak_rss_gib"):
        assert key in run["summary"], key
    assert {"config.yaml", "progress.json", "monitoring.json", "train_log.json", "eval/chat/baseline/perplexity.json",
            "eval/chat/baseline/replies.json"} <= run["files"]


def test_two_cpu_processes_share_one_chat_run(tiny_llama_dir, tmp_path):
    """Each rank knows it is one of two from the start: only rank 0 locks and writes the run directory."""
    accelerate = Path(sys.executable).parent / "accelerate"
    argv = tiny_chat_overrides(tiny_llama_dir, tmp_path / "runs", "--load_in_4bit", "false", "--optim", "adamw_torch",
                               "--lora_target_modules", "q_proj,v_proj", "--per_device_train_batch_size", "4",
                               "--stages", "baseline,train,evaluate")
    command = [str(accelerate), "launch", "--config_file", str(ROOT / "accelerate_configs" / "cpu_ddp.yaml"),
               "--num_processes", "2", "--main_process_port", str(free_port()),
               str(ROOT / "recipes" / "phi2_oasst1.py"), *argv]
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "CUDA_VISIBLE_DEVICES": ""}
    result = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count("[tunelab] Starting phi2_oasst1") == 1
    assert result.stdout.count("[tunelab] Wall time") == 1
    run_dir = tmp_path / "runs" / "phi2_oasst1"
    samples = json.loads((run_dir / "monitoring.json").read_text())["samples"]
    assert samples and all(set(sample["devices"]) == {"rank0_cpu", "rank1_cpu"} for sample in samples)
    progress = json.loads((run_dir / "progress.json").read_text())
    assert progress["monitoring"]["world_size"] == 2 and progress["monitoring"]["train_steps"] == 4
    for model in ("baseline", "finetuned"):
        perplexity = json.loads((run_dir / f"eval/chat/{model}/perplexity.json").read_text())
        assert perplexity["conversations"] == 8
        tokens = perplexity["per_conversation"]["assistant_tokens"]  # each conversation scored by exactly one rank
        assert len(tokens) == 8 and all(tokens) and sum(tokens) == perplexity["assistant_tokens"]
    assert {p.name for p in (run_dir / "adapter").iterdir()} >= {"adapter_model.safetensors", "tunelab_chat.json"}
