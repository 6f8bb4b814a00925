"""The model card in the run's saved folder, and the upload of that folder to the Hub (up to the upload call)."""

import contextlib
import io
import json
import re
import runpy
from pathlib import Path

import huggingface_hub
import huggingface_hub.constants
import pytest
import yaml
from huggingface_hub import ModelCard

from nli_helpers import tiny_nli_argv
from tunelab.cli import main as tunelab
from tunelab.config import SettingsError, parse_recipe
from tunelab.errors import TunelabError
from tunelab.hub import check_hub_access, push_run
from tunelab.nli.pipeline import main
from tunelab.report.card import base_model, write_model_card

ROOT = Path(__file__).resolve().parents[2]
RECIPE = runpy.run_path(str(ROOT / "recipes" / "phi2_snli.py"))["RECIPE"]
FAKE_TOKEN = "hf_tunelabTestTokenNeverWritten0123456789"


class FakeHub:
    """HfApi's create_repo and upload_folder, recording their arguments and what the folder held."""

    def __init__(self, patch):
        self.calls = []
        patch.setattr(huggingface_hub.HfApi, "create_repo", self.create_repo)
        patch.setattr(huggingface_hub.HfApi, "upload_folder", self.upload_folder)

    def create_repo(self, repo_id, **options):
        self.calls.append(("create_repo", repo_id, options))

    def upload_folder(self, folder_path, repo_id, **options):
        files = sorted(path.name for path in Path(folder_path).iterdir())
        card = (Path(folder_path) / "README.md").read_text(encoding="utf-8")
        self.calls.append(("upload_folder", repo_id, {"folder": Path(folder_path), "files": files, "card": card,
                                                      **options}))
        return huggingface_hub.CommitInfo(commit_url=f"https://huggingface.co/{repo_id}/commit/1", commit_message="",
                                          commit_description="", oid="1")


@pytest.fixture(scope="module")
def pushed_run(tiny_phi_dir, snli_dir, tmp_path_factory):
    """A tiny NLI run with push_to_hub, a token in the environment, the Hub answering and HfApi faked."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HF_TOKEN", FAKE_TOKEN)
        patch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)  # the tests run offline
        patch.setattr("tunelab.network.hub_reachable", lambda: True)
        hub = FakeHub(patch)
        argv = tiny_nli_argv(tiny_phi_dir, snli_dir, tmp_path_factory.mktemp("runs"), "--num_train_epochs", "1",
                             "--load_in_4bit", "false", "--optim", "adamw_torch", "--push_to_hub", "true",
                             "--hub_model_id", "someone/tiny-nli")
        run_dir = main(parse_recipe(RECIPE, argv))
    return run_dir, hub.calls


def test_a_run_writes_a_filled_card_with_its_results_and_hub_metadata(pushed_run, tiny_phi_dir):
    run_dir, _ = pushed_run
    text = (run_dir / "adapter" / "README.md").read_text(encoding="utf-8")
    assert "More Information Needed" not in text and str(tiny_phi_dir) not in text
    card = ModelCard.load(run_dir / "adapter" / "README.md")
    assert card.data.base_model is None, "a local base model has no Hub id"
    assert f"a local model folder (`{tiny_phi_dir.name}`), not on the Hub" in text
    assert card.data.library_name == "peft" and card.data.pipeline_tag == "text-classification"
    statistics = json.loads((run_dir / "eval" / "test" / "statistics.json").read_text())
    accuracy = statistics["intervals"]["accuracy"]
    results = {result.metric_type: result for result in card.data.eval_results}
    assert results["accuracy"].metric_value == round(accuracy["finetuned"]["value"], 4)
    assert results["accuracy"].dataset_split == "test" and card.data.model_name == "someone/tiny-nli"
    row = next(line for line in text.splitlines() if line.startswith("| accuracy |"))
    low, high = (f"{100 * accuracy['finetuned'][end]:.1f}" for end in ("low", "high"))
    assert f"{100 * accuracy['finetuned']['value']:.1f}% [{low}, {high}]" in row
    assert statistics["mcnemar"]["verdict"] in text
    headline = (run_dir / "report" / "report.md").read_text().split("## Headline\n\n")[1].split("\n")[0]
    assert headline in text, "the report's headline"
    for fact in ("- labels: entailment, neutral, contradiction", "- training rows: 60", "- evaluation rows: test 30",
                 "- learning_rate: 0.005", "- lora_r: 32", "- training time: ", "- transformers: ", "- peft: ",
                 "merge_and_unload()", "## Full configuration"):
        assert fact in text, fact
    assert "output_dir" not in text, "where this machine keeps its runs is not published"


def test_the_card_s_loading_code_runs_and_answers_with_a_label(pushed_run, tiny_phi_dir):
    run_dir, _ = pushed_run
    text = (run_dir / "adapter" / "README.md").read_text(encoding="utf-8")
    code = text.split("## How to use")[1].split("```python\n")[1].split("```")[0]
    code = code.replace(f'"PATH/TO/{tiny_phi_dir.name}"', json.dumps(str(tiny_phi_dir)))
    code = code.replace('"someone/tiny-nli"', json.dumps(str(run_dir / "adapter")))
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        exec(compile(code, "card", "exec"), {})
    assert printed.getvalue().strip() in ("entailment", "neutral", "contradiction")


def test_the_run_uploads_its_adapter_and_card_and_never_writes_the_token(pushed_run):
    run_dir, calls = pushed_run
    assert [call[:2] for call in calls] == [("create_repo", "someone/tiny-nli"), ("upload_folder", "someone/tiny-nli")]
    assert calls[0][2] == {"private": True, "exist_ok": True}
    upload = calls[1][2]
    assert upload["folder"] == run_dir / "adapter"
    assert "adapter_model.safetensors" in upload["files"] and "README.md" in upload["files"]
    assert "model-index" in upload["card"] and upload["ignore_patterns"] == ["training_args.bin"]
    for path in run_dir.rglob("*"):
        if path.is_file():
            assert FAKE_TOKEN.encode() not in path.read_bytes(), path


def test_tunelab_push_uploads_a_finished_run_later(pushed_run, monkeypatch, capsys):
    run_dir, _ = pushed_run
    hub = FakeHub(monkeypatch)
    tunelab(["push", str(run_dir), "--hub_model_id", "other/name", "--public"])
    assert hub.calls[0] == ("create_repo", "other/name", {"private": False, "exist_ok": True})
    assert hub.calls[1][2]["folder"] == run_dir / "adapter"
    assert "Uploaded" in capsys.readouterr().out


def test_offline_the_real_upload_call_ends_on_one_line(pushed_run, monkeypatch):
    run_dir, _ = pushed_run
    monkeypatch.setenv("HF_TOKEN", FAKE_TOKEN)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(TunelabError) as raised:
        push_run(run_dir)  # the real HfApi: create_repo refuses in offline mode
    message = str(raised.value)
    assert "\n" not in message and FAKE_TOKEN not in message
    assert "someone/tiny-nli" in message and "OfflineModeIsEnabled" in message
    assert f"tunelab push {run_dir}" in message
    with pytest.raises(TunelabError, match="HF_HUB_OFFLINE is set: unset it, or set --push_to_hub false"):
        check_hub_access()


def test_a_push_without_token_or_network_stops_before_anything_loads(tiny_phi_dir, snli_dir, tmp_path, monkeypatch):
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))  # no stored token there
    monkeypatch.setattr(huggingface_hub.constants, "HF_TOKEN_PATH", str(tmp_path / "hf-home" / "token"))
    argv = tiny_nli_argv(tiny_phi_dir, snli_dir, tmp_path, "--push_to_hub", "true", "--hub_model_id", "me/x")
    with pytest.raises(TunelabError, match="needs a Hugging Face token with write access: run `hf auth login`"):
        main(parse_recipe(RECIPE, argv))
    monkeypatch.setenv("HF_TOKEN", FAKE_TOKEN)
    monkeypatch.setattr("tunelab.network.hub_reachable", lambda: False)
    with pytest.raises(TunelabError, match="which does not answer"):
        main(parse_recipe(RECIPE, argv))
    assert not (tmp_path / "phi2_snli").exists(), "nothing started"


def test_push_settings_are_checked():
    with pytest.raises(SettingsError, match="push_to_hub needs the repository to upload to: set --hub_model_id"):
        parse_recipe(RECIPE, ["--push_to_hub", "true"])
    with pytest.raises(SettingsError, match="hub_model_id must be a Hub repository id, OWNER/NAME"):
        parse_recipe(RECIPE, ["--hub_model_id", "../elsewhere"])


def test_the_base_model_is_named_by_its_hub_id():
    assert base_model("smollm2-135m")[0] == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert "SmolLM2-135M-Instruct.Q4_1.gguf" in base_model("smollm2-135m")[1]
    cache = "/home/me/.cache/huggingface/hub/models--microsoft--phi-2/snapshots/abc123"
    assert base_model(cache)[0] == "microsoft/phi-2"
    assert base_model("microsoft/phi-2")[0] == "microsoft/phi-2"
    assert base_model("/data/my-model")[0] is None


def _finished_run(run_dir: Path, config: dict, info: dict, folder: str, files: dict) -> Path:
    (run_dir / folder).mkdir(parents=True)
    (run_dir / "config.yaml").write_text(yaml.safe_dump(config))
    (run_dir / "run_info.json").write_text(json.dumps(info))
    for name, content in files.items():
        (run_dir / name).parent.mkdir(parents=True, exist_ok=True)
        (run_dir / name).write_text(json.dumps(content))
    return run_dir


def test_a_chat_card_gives_perplexity_with_its_interval(tmp_path):
    conversations = {"nll_sum": [30.0, 42.0, 25.0, 51.0], "assistant_tokens": [10, 14, 9, 17]}
    perplexity = {role: {"perplexity": p, "mean_nll": 0.0, "conversations": 4, "assistant_tokens": 50,
                         "per_conversation": {**conversations, "nll_sum": [x * s for x in conversations["nll_sum"]]}}
                  for role, p, s in (("baseline", 20.0, 1.0), ("finetuned", 12.0, 0.8))}
    run_dir = _finished_run(
        tmp_path / "chat", {"run_name": "chat", "output_dir": "runs", "model_name_or_path": "smollm2-135m",
                            "dataset": "OpenAssistant/oasst1", "learning_rate": 1e-3, "lora_r": 16},
        {"task": "chat", "train_rows": 100, "eval_rows": {"held-out conversations": 4},
         "timings_s": {"train": 75.0, "total": 90.0}, "software": {"peft": "0.21.2"}},
        "adapter", {"adapter/adapter_config.json": {}, "eval/chat/baseline/perplexity.json": perplexity["baseline"],
                    "eval/chat/finetuned/perplexity.json": perplexity["finetuned"]})
    card = ModelCard.load(write_model_card(run_dir))
    assert card.data.base_model == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert card.data.datasets == ["OpenAssistant/oasst1"] and card.data.pipeline_tag == "text-generation"
    assert card.data.eval_results[0].metric_type == "perplexity"
    row = next(line for line in card.text.splitlines() if line.startswith("| perplexity |"))
    assert re.fullmatch(r"\| perplexity \| [\d.]+ \[[\d.]+, [\d.]+\] \| [\d.]+ \[[\d.]+, [\d.]+\] \| -[\d.]+ \[.+\] \|",
                        row), row
    assert "apply_chat_template" in card.text and "tunelab merge RUN_DIR" in card.text
    assert "- training time: 1 min 15 s" in card.text


def test_a_fully_fine_tuned_model_s_card_loads_it_without_peft(tmp_path):
    metrics = {"n": 3, "labels": ["yes", "no"], "accuracy": 0.5, "balanced_accuracy": 0.5, "macro_f1": 0.4}
    run_dir = _finished_run(
        tmp_path / "full", {"run_name": "full", "output_dir": "runs", "model_name_or_path": "openai-community/gpt2",
                            "dataset": "starter", "method": "full", "lora_r": 16, "learning_rate": 1e-5},
        {"train_rows": 10}, "model",
        {"model/config.json": {}, "eval/test/baseline/metrics.json": metrics,
         "eval/test/finetuned/metrics.json": {**metrics, "accuracy": 1.0}})
    card = ModelCard.load(write_model_card(run_dir))
    assert card.data.library_name == "transformers" and card.data.base_model == "openai-community/gpt2"
    assert 'AutoModelForCausalLM.from_pretrained("path/to/full/model")' in card.text
    assert "PeftModel" not in card.text and "lora_r" not in card.text.split("## Full configuration")[0]
    assert "| accuracy | 50.0% | 100.0% | +50.0 points |" in card.text
    assert write_model_card(tmp_path / "nothing-saved") is None


def test_a_chat_run_s_card_loads_its_adapter_and_tokenizer_and_chats(tiny_chat_run, tiny_llama_dir):
    text = (tiny_chat_run / "adapter" / "README.md").read_text(encoding="utf-8")
    assert ModelCard.load(tiny_chat_run / "adapter" / "README.md").data.eval_results[0].metric_type == "perplexity"
    assert re.search(r"\| perplexity \| [\d.]+ \[[\d.]+, [\d.]+\] \|", text)
    code = text.split("## How to use")[1].split("```python\n")[1].split("```")[0]
    code = code.replace(f'"PATH/TO/{tiny_llama_dir.name}"', json.dumps(str(tiny_llama_dir)))
    code = code.replace('"path/to/tiny_chat/adapter"', json.dumps(str(tiny_chat_run / "adapter")))
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        exec(compile(code, "card", "exec"), {})  # the tokenizer with its chat template comes from the adapter
    assert printed.getvalue().strip()


def test_a_classifier_head_run_s_card_loads_the_head_and_answers_with_a_label(tiny_phi_dir, snli_dir, tmp_path):
    argv = tiny_nli_argv(tiny_phi_dir, snli_dir, tmp_path, "--num_train_epochs", "1", "--load_in_4bit", "false",
                         "--optim", "adamw_torch", "--head", "classifier", "--lora_target_modules",
                         "q_proj,k_proj,v_proj,dense")
    run_dir = main(parse_recipe(RECIPE, argv))
    text = (run_dir / "adapter" / "README.md").read_text(encoding="utf-8")
    assert "- answer: a linear classifier head on the prompt's last token" in text
    code = text.split("## How to use")[1].split("```python\n")[1].split("```")[0]
    assert "AutoModelForSequenceClassification" in code and "num_labels=3" in code
    code = code.replace(f'"PATH/TO/{tiny_phi_dir.name}"', json.dumps(str(tiny_phi_dir)))
    code = code.replace('"path/to/phi2_snli/adapter"', json.dumps(str(run_dir / "adapter")))
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        exec(compile(code, "card", "exec"), {})
    assert printed.getvalue().strip() in ("entailment", "neutral", "contradiction")
