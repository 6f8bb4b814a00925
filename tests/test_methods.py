"""The fine-tuning methods (tunelab.methods) on one process: settings refused before anything loads, full and
freeze NLI runs whose model/ folder loads with transformers alone and predicts what the run evaluated, a
full run resumed after an interruption ending where an uninterrupted one ends, the classifier head trained
in full, a chat run trained in full (chat and merge), and what `plan` estimates for each method."""

import csv
import json
import re
import runpy
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer

from nli_helpers import SignalAtStep, tiny_nli_argv
from tunelab.config import parse_recipe
from tunelab.errors import TrainingInterrupted, TunelabError
from tunelab.methods import trained_by_freeze
from tunelab.nli.pipeline import main

ROOT = Path(__file__).resolve().parents[1]
RECIPE = runpy.run_path(str(ROOT / "recipes" / "phi2_snli.py"))["RECIPE"]
LABELS = ("entailment", "neutral", "contradiction")


def method_argv(model_dir, data_dir, output_dir, method, *extra) -> list[str]:
    """The tiny NLI run (1 epoch: 8 steps) with `method`, unquantized, with plain AdamW at a full-FT learning rate."""
    return tiny_nli_argv(model_dir, data_dir, output_dir, "--num_train_epochs", "1", "--load_in_4bit", "false",
                         "--optim", "adamw_torch", "--learning_rate", "1e-3", "--method", method, *extra)


def saved_probabilities(run_dir: Path, model: str = "finetuned") -> torch.Tensor:
    """A model's probabilities on the test rows as the run wrote them (4 decimals)."""
    with open(run_dir / "eval" / "test" / model / "predictions.csv", newline="") as handle:
        return torch.tensor([[float(row[f"p_{label}"]) for label in LABELS] for row in csv.DictReader(handle)])


def probabilities(model, run_dir: Path, scoring: str = "first_token") -> torch.Tensor:
    """`model`'s probabilities on the run's test rows, scored as the recipe scores them, with the run's tokenizer."""
    from tunelab.nli.data import tokenize_rows
    from tunelab.nli.trainer import NLICollator, answer_room, label_scores, label_token_ids

    rows = [json.loads(line) for line in (run_dir / "data" / "test.jsonl").read_text().splitlines()]
    tokenizer = AutoTokenizer.from_pretrained(run_dir / "model")
    tokenizer.pad_token = tokenizer.pad_token or tokenizer.eos_token
    label_ids = [] if scoring == "classifier" else label_token_ids(tokenizer, list(LABELS), scoring)
    dataset, _ = tokenize_rows(rows, tokenizer, 256, answer_room(label_ids, scoring) if label_ids else 1)
    batch = NLICollator(tokenizer.pad_token_id, label_ids, scoring)(list(dataset))
    with torch.no_grad():
        return label_scores(model.eval(), batch, label_ids, scoring).softmax(-1)


# ---------------------------------------------------------------------------- bad input, before anything loads

@pytest.mark.parametrize("args, message", [
    (["--method", "qlora"], "method must be one of lora, full, freeze, not 'qlora'"),
    (["--method", "full"], "method full trains the base weights, which cannot be 4-bit: set --load_in_4bit false"),
    (["--method", "freeze"], "method freeze trains the base weights, which cannot be 4-bit"),
    (["--method", "freeze", "--load_in_4bit", "false", "--freeze_trainable_layers", "0"],
     "freeze_trainable_layers must be at least 1, not 0"),
    (["--lora_target_modules", "all-linear,q_proj"], "lora_target_modules all-linear already names every linear"),
])
def test_bad_method_settings_are_one_line(args, message):
    with pytest.raises(TunelabError, match=re.escape(message)) as error:
        parse_recipe(RECIPE, args)
    assert "\n" not in str(error.value)


def test_lora_settings_given_with_full_are_named_once(capsys):
    parse_recipe(RECIPE, ["--method", "full", "--load_in_4bit", "false", "--lora_r", "4", "--use_dora", "true"])
    err = capsys.readouterr().err
    assert err.count("warning:") == 1
    assert "method full trains no LoRA adapters, so lora_r, use_dora are ignored" in err
    parse_recipe(RECIPE, ["--method", "full", "--load_in_4bit", "false"])  # the recipe's own LoRA values: no warning
    parse_recipe(RECIPE, ["--lora_r", "4"])
    assert "warning" not in capsys.readouterr().err


def test_freeze_of_more_layers_than_the_model_has_is_refused_before_loading(tiny_phi_dir, snli_dir, tmp_path):
    argv = method_argv(tiny_phi_dir, snli_dir, tmp_path, "freeze", "--freeze_trainable_layers", "3")
    with pytest.raises(TunelabError, match="freeze_trainable_layers 3 is more than the 2 layers of .*--method full"):
        main(parse_recipe(RECIPE, argv))
    assert not (tmp_path / "phi2_snli").exists(), "refused before the run directory is made"


def test_all_linear_puts_lora_on_every_linear_layer_but_the_head(tiny_phi_dir):
    from tunelab.launch.plan import estimate_memory
    from tunelab.models import load_model

    recipe = parse_recipe(RECIPE, ["--model_name_or_path", str(tiny_phi_dir), "--load_in_4bit", "false",
                                   "--lora_target_modules", "all-linear", "--precision", "fp32"])
    model = load_model(recipe)
    adapted = {name.rsplit(".", 1)[-1] for name, module in model.named_modules() if hasattr(module, "lora_A")}
    assert adapted == {"q_proj", "k_proj", "v_proj", "dense", "fc1", "fc2"}
    lora = sum(p.numel() for name, p in model.named_parameters() if "lora_" in name)
    assert estimate_memory(recipe)["trained_parameters"] == lora


# ---------------------------------------------------------------------------- full and freeze, end to end

@pytest.fixture(scope="module")
def full_run(tiny_phi_dir, snli_dir, tmp_path_factory):
    return main(parse_recipe(RECIPE, method_argv(tiny_phi_dir, snli_dir, tmp_path_factory.mktemp("full"), "full")))


def test_full_run_saves_a_model_folder_that_predicts_what_the_run_evaluated(full_run, tiny_phi_dir):
    assert not (full_run / "adapter").exists()
    model = AutoModelForCausalLM.from_pretrained(full_run / "model").eval()
    pretrained = AutoModelForCausalLM.from_pretrained(tiny_phi_dir)
    changed = [name for name, p in model.named_parameters()
               if not torch.equal(p, pretrained.get_parameter(name))]
    assert len(changed) == len(list(model.parameters())), "every weight trained"
    assert torch.allclose(probabilities(model, full_run), saved_probabilities(full_run), atol=2e-4)
    # the baseline scored the pretrained model, not the one trained in this process before it
    assert torch.allclose(probabilities(pretrained, full_run), saved_probabilities(full_run, "baseline"), atol=2e-4)

    info = json.loads((full_run / "run_info.json").read_text())
    assert info["method"] == "full"
    assert info["parameters"]["trainable"] == info["parameters"]["total"] == pretrained.num_parameters()
    report = (full_run / "report" / "report.md").read_text()
    assert "method: full (every weight trained, saved as a model folder in model/)" in report


def test_freeze_trains_only_the_last_layers_and_the_head(tiny_phi_dir, snli_dir, tmp_path):
    run_dir = main(parse_recipe(RECIPE, method_argv(tiny_phi_dir, snli_dir, tmp_path, "freeze",
                                                    "--freeze_trainable_layers", "1")))
    model = AutoModelForCausalLM.from_pretrained(run_dir / "model")
    pretrained = AutoModelForCausalLM.from_pretrained(tiny_phi_dir)
    trained = trained_by_freeze(pretrained, 1)
    assert trained == {name for name, _ in pretrained.named_parameters()
                       if name.startswith(("model.layers.1.", "model.final_layernorm.", "lm_head."))}
    for name, parameter in model.named_parameters():
        assert torch.equal(parameter, pretrained.get_parameter(name)) != (name in trained), name
    assert torch.allclose(probabilities(model, run_dir), saved_probabilities(run_dir), atol=2e-4)


def test_freeze_trains_a_head_tied_to_the_embeddings_and_a_classifier_head():
    from tunelab.tiny_models import tiny_config

    gpt2 = AutoModelForCausalLM.from_config(tiny_config("gpt2"))  # its head is the token embeddings (tied)
    assert trained_by_freeze(gpt2, 1) == {name for name, _ in gpt2.named_parameters()
                                          if name.startswith(("transformer.h.1.", "transformer.ln_f.", "transformer.wte."))}
    phi = AutoModelForSequenceClassification.from_config(tiny_config("phi", num_labels=3))
    assert trained_by_freeze(phi, 2) == {name for name, _ in phi.named_parameters()
                                         if name.startswith(("model.layers.", "model.final_layernorm.", "score."))}


def test_full_run_resumed_after_an_interruption_ends_as_an_uninterrupted_one(full_run, tiny_phi_dir, snli_dir,
                                                                                  tmp_path, capsys):
    argv = method_argv(tiny_phi_dir, snli_dir, tmp_path, "full")
    with pytest.raises(TrainingInterrupted, match="at step 5"):
        main(parse_recipe(RECIPE, argv), callbacks=[SignalAtStep(4)])
    with pytest.raises(TunelabError, match=r"other settings \(method: 'full' -> 'lora'\)"):
        main(parse_recipe(RECIPE, method_argv(tiny_phi_dir, snli_dir, tmp_path, "lora")))
    capsys.readouterr()
    run_dir = main(parse_recipe(RECIPE, argv))
    assert capsys.readouterr().out.count("{'loss'") == 2, "the restart trains steps 6 to 8 only (a loss every 2)"
    resumed, uninterrupted = (load_file(str(d / "model" / "model.safetensors")) for d in (run_dir, full_run))
    assert resumed.keys() == uninterrupted.keys()
    for name in resumed:
        torch.testing.assert_close(resumed[name], uninterrupted[name], rtol=0, atol=1e-6, msg=name)


def test_classifier_head_trained_in_full_loads_as_a_sequence_classifier(tiny_phi_dir, snli_dir, tmp_path):
    run_dir = main(parse_recipe(RECIPE, method_argv(tiny_phi_dir, snli_dir, tmp_path, "full", "--head", "classifier",
                                                    "--stages", "train,evaluate")))
    model = AutoModelForSequenceClassification.from_pretrained(run_dir / "model").eval()
    assert model.config.num_labels == 3
    assert torch.allclose(probabilities(model, run_dir, "classifier"), saved_probabilities(run_dir), atol=2e-4)


# ---------------------------------------------------------------------------- chat, merge, plan

def test_chat_run_in_full_chats_from_its_model_folder_with_nothing_to_merge(tiny_llama_dir, tmp_path, capsys):
    from chat_helpers import CHAT_RECIPE, tiny_chat_overrides
    from tunelab.chat.pipeline import main as chat_main
    from tunelab.chat.serve import load_chat_model, merge_adapter

    argv = tiny_chat_overrides(tiny_llama_dir, tmp_path, "--load_in_4bit", "false", "--optim", "adamw_torch",
                               "--method", "full", "--learning_rate", "1e-3", "--max_steps", "2")
    run_dir = chat_main(parse_recipe(CHAT_RECIPE, argv))
    assert (run_dir / "model" / "tokenizer_config.json").is_file() and not (run_dir / "adapter").exists()
    perplexity = {name: json.loads((run_dir / f"eval/chat/{name}/perplexity.json").read_text())["perplexity"]
                  for name in ("baseline", "finetuned")}
    assert perplexity["finetuned"] < perplexity["baseline"]
    assert merge_adapter(run_dir) == run_dir / "model"
    assert "nothing to merge" in capsys.readouterr().err
    model, tokenizer, what = load_chat_model(run_dir)
    assert what == f"fine-tuned model {run_dir / 'model'}" and len(tokenizer) == model.get_input_embeddings().num_embeddings


def test_plan_counts_each_methods_memory():
    from tunelab.launch.plan import build_plan, check_run_fits_profile
    from tunelab.nli.config import NLIRecipe

    plans = {method: build_plan(NLIRecipe(model_name_or_path="microsoft/phi-2", method=method, precision="bf16"))
             for method in ("lora", "freeze", "full")}
    memory = {method: plan["memory"] for method, plan in plans.items()}
    parameters = memory["full"]["parameters"]
    assert memory["full"]["trained_parameters"] == parameters
    # fp32 weights (4 bytes) + gradient (4) + two Adam moments (8): 16 bytes a parameter before sharding
    assert (memory["full"]["weights_gib"] + memory["full"]["training_state_gib"]) * 2**30 == 16 * parameters
    assert memory["lora"]["peak_gib"] < memory["freeze"]["peak_gib"] < memory["full"]["peak_gib"]
    by_gpus = memory["full"]["per_gpu_by_strategy"]
    assert by_gpus["ZeRO-3"][8] < by_gpus["ZeRO-2"][8] < by_gpus["DDP"][8]
    full = NLIRecipe(model_name_or_path="microsoft/phi-2", method="full", precision="bf16", profile="vgpu36")
    with pytest.raises(TunelabError, match=r"the settings do not fit 1 × .*36 GiB.*: per GPU 4\d\.\d of 36 GiB"):
        check_run_fits_profile(full, world_size=1)
    check_run_fits_profile(NLIRecipe(model_name_or_path="microsoft/phi-2", precision="bf16", profile="vgpu36"), 1)
