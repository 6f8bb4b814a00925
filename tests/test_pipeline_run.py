"""tunelab.pipeline's run directory, with nothing loaded (a stand-in trainer): a pipeline's check before
config.yaml, progress.json's merge, run_info.json, and the adapter that appears only when complete."""

import json
import os
from pathlib import Path

import pytest
import torch

from tunelab.chat.config import ChatRecipe
from tunelab.chat.pipeline import ChatRun
from tunelab.errors import TunelabError
from tunelab.nli.config import NLIRecipe
from tunelab.pipeline import PipelineRun
from tunelab.rundir import LOCK_FILE

CHAT_INFO = {"chat_template": "tunelab", "end_of_turn": "<|endoftext|>"}


class StandInTrainer:
    """Writes what trainer.save_model writes for a LoRA adapter; `fail` stops it halfway."""

    def __init__(self, weights: bytes = b"new weights", fail: bool = False):
        self.weights, self.fail = weights, fail
        self.model = torch.nn.Linear(1, 1)  # not sharded: the adapter is saved by save_model

    def save_model(self, folder: str) -> None:
        Path(folder).mkdir(parents=True, exist_ok=True)
        (Path(folder) / "adapter_model.safetensors").write_bytes(self.weights)
        if self.fail:
            raise OSError("No space left on device")
        (Path(folder) / "adapter_config.json").write_text("{}")


def chat_run(tmp_path: Path, trainer: StandInTrainer | None = None) -> ChatRun:
    run = ChatRun(ChatRecipe(output_dir=str(tmp_path), run_name="chat"), [])
    run.trainer = trainer or StandInTrainer()  # in place of the load steps: no model loads
    run.chat_info = CHAT_INFO
    return run


def old_adapter(run_dir: Path) -> Path:
    folder = run_dir / "adapter"
    folder.mkdir(parents=True)
    (folder / "adapter_model.safetensors").write_bytes(b"old weights")
    (folder / "left_over.txt").write_text("from an earlier save")
    return folder


def test_chat_adapter_appears_with_its_chat_format_in_one_rename(tmp_path, monkeypatch):
    renamed_folders = []
    replace = os.replace

    def recording_replace(source, target):
        if Path(source).is_dir():
            contents = sorted(p.name for p in Path(source).iterdir())
            renamed_folders.append((Path(source).name, Path(target).name, contents))
        replace(source, target)

    monkeypatch.setattr(os, "replace", recording_replace)
    with chat_run(tmp_path) as run:
        adapter = old_adapter(run.dir)
        run.save_adapter()
    files = ["adapter_config.json", "adapter_model.safetensors", "tunelab_chat.json"]
    assert renamed_folders == [(".adapter.partial", "adapter", files)]
    assert sorted(p.name for p in adapter.iterdir()) == files
    assert (adapter / "adapter_model.safetensors").read_bytes() == b"new weights"
    assert json.loads((adapter / "tunelab_chat.json").read_text()) == CHAT_INFO
    assert not (run.dir / ".adapter.partial").exists()


def test_a_failed_save_leaves_the_previous_adapter_untouched(tmp_path):
    with chat_run(tmp_path, StandInTrainer(fail=True)) as run:
        adapter = old_adapter(run.dir)
        with pytest.raises(OSError, match="No space left"):
            run.save_adapter()
    assert sorted(p.name for p in adapter.iterdir()) == ["adapter_model.safetensors", "left_over.txt"]
    assert (adapter / "adapter_model.safetensors").read_bytes() == b"old weights"


def test_a_refused_run_directory_is_unlocked_and_keeps_its_config(tmp_path):
    class RefusingRun(PipelineRun):
        def check_before_config(self) -> None:
            raise TunelabError("the saved rows differ from the recipe's")

    recipe = NLIRecipe(output_dir=str(tmp_path), run_name="nli")
    with pytest.raises(TunelabError, match="saved rows differ"):
        RefusingRun(recipe, [])
    assert not (recipe.run_dir / LOCK_FILE).exists() and not (recipe.run_dir / "config.yaml").exists()
    with PipelineRun(recipe, []) as run:
        assert (run.dir / LOCK_FILE).exists() and (run.dir / "config.yaml").exists()
    assert not (recipe.run_dir / LOCK_FILE).exists()


def test_progress_adds_timings_and_the_pipelines_figures_and_run_info_names_the_chat_run(tmp_path):
    with chat_run(tmp_path) as run:
        run.watch.seconds["train"] = 2.0
        first = run.save_progress()
        assert "train_rows" not in first and "chat_format" not in first and "monitoring" not in first
        run.watch.seconds["train"] = 1.5
        run.tokenized = {"train": [{"assistant_masks": [0, 1, 1]}, {"assistant_masks": [1, 0]}],
                         "eval": [{"assistant_masks": [1]}]}
        run.loaded_steps += ["data", "tokenizer"]
        run.monitor.summary = {"train_steps": 4}
        run.write_run_info(run.save_progress())
    progress = json.loads((run.dir / "progress.json").read_text())
    assert progress["timings_s"] == {"train": 3.5, "total": 3.5} and "started" in progress
    assert progress["train_rows"] == 2 and progress["train_assistant_tokens"] == 3
    assert progress["eval_rows"] == {"held-out conversations": 1} and progress["chat_format"] == CHAT_INFO
    assert progress["monitoring"] == {"train_steps": 4} and progress["memory"]["peak_bytes"] > 0
    info = json.loads((run.dir / "run_info.json").read_text())
    assert list(info)[:6] == ["task", "recipe", "model", "dataset", "method", "language"]
    assert (info["task"], info["recipe"], info["language"]) == ("chat", "chat", "en")
    assert info["monitoring"] == {"train_steps": 4} and info["hardware"]["device"] in ("cpu", "cuda")
    assert "torch" in info["software"]
