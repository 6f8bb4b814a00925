"""`tunelab bench`: both implementations really run and are measured alike; no figure is asserted.

Timings depend on the machine, so these tests check what the benchmark computes and writes
(who padded what, which rows were scored, ratios against the reference), never how fast.
"""

import json
import subprocess
import sys

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from tunelab.bench.command import main, parse_args
from tunelab.bench.measure import parse_label
from tunelab.bench.variants import REFERENCE, TUNELAB, VARIANTS, resolved
from tunelab.bench.workloads import Inputs, collate
from tunelab.errors import TunelabError
from tunelab.nli.config import NLIRecipe
from tunelab.nli.trainer import label_scores, label_token_ids


def test_parse_label_finds_the_first_label_word_in_a_generated_answer():
    words = ["entailment", "neutral", "contradiction"]
    assert parse_label(" Neutral.", words) == 1
    assert parse_label(" contradiction, not entailment", words) == 2
    assert parse_label(" the premise says", words) == -1


def test_reference_batches_are_the_answered_text_padded_to_max_length_with_padding_ignored(gpt2_tokenizer_dir):
    recipe = NLIRecipe(model_name_or_path=str(gpt2_tokenizer_dir), max_length=32)
    tokenizer = AutoTokenizer.from_pretrained(gpt2_tokenizer_dir)
    tokenizer.pad_token = tokenizer.eos_token
    inputs = Inputs(tokenizer, label_token_ids(tokenizer, recipe.label_words, "first_token"), [], [],
                    prompt_ids={0: [5, 6, 7], 1: [5, 6]}, text_ids={0: [5, 6, 7, 8], 1: [5, 6, 9]})
    batch = collate(inputs, [0, 1], REFERENCE, recipe, labels=[0, 1])
    assert batch["input_ids"].shape == (2, 32)
    assert batch["input_ids"][1, :3].tolist() == [5, 6, 9]  # right padding, answer included
    assert batch["labels"][1, :3].tolist() == [5, 6, 9] and (batch["labels"][1, 3:] == -100).all()
    shipped = collate(inputs, [0, 1], TUNELAB, recipe, labels=[0, 1])
    assert shipped["input_ids"].tolist() == [[5, 6, 7], [tokenizer.pad_token_id, 5, 6]]  # longest, left, no answer


def test_padding_to_max_length_leaves_the_label_scores_unchanged(tiny_gpt2_dir):
    """GPT-2 has absolute positions: the position ids must make extra left padding harmless."""
    recipe = NLIRecipe(model_name_or_path=str(tiny_gpt2_dir), max_length=40)
    tokenizer = AutoTokenizer.from_pretrained(tiny_gpt2_dir)
    tokenizer.pad_token = tokenizer.eos_token
    model = AutoModelForCausalLM.from_pretrained(tiny_gpt2_dir).eval()
    label_ids = label_token_ids(tokenizer, recipe.label_words, "first_token")
    prompts = [tokenizer(text)["input_ids"] for text in ("Premise: A dog runs.\nHypothesis: An animal moves.\n"
                                                         "Relationship:", "Premise: Hi.\nHypothesis: Bye.\nRelationship:")]
    inputs = Inputs(tokenizer, label_ids, [], [], prompt_ids=dict(enumerate(prompts)))
    scores = {}
    for variant in (TUNELAB, VARIANTS["pad_to_max_length"]):
        batch = collate(inputs, [0, 1], variant, recipe, labels=[0, 0])
        with torch.no_grad():
            scores[variant.padding] = label_scores(model, batch, label_ids, "first_token")
    assert batch["input_ids"].shape[1] == 40
    torch.testing.assert_close(scores["max_length"], scores["longest"], atol=1e-4, rtol=1e-4)


def test_bench_runs_reference_and_tunelab_alternating_and_writes_json_and_markdown(tiny_phi_dir, snli_dir, tmp_path):
    out = tmp_path / "bench"
    argv = ["--workload", "phi2_snli", "--model", str(tiny_phi_dir), "--dataset", str(snli_dir),
            "--variants", "reference,tunelab,pad_to_max_length,eval_in_order,generate_batched,lora_unmerged",
            "--steps", "1", "--warmup", "0",
            "--repeats", "2", "--eval_rows", "6", "--eval_repeats", "1", "--threads", "1", "--out", str(out)]
    main(argv)
    [json_file], [md_file] = out.glob("*.json"), out.glob("*.md")
    summary = json.loads(json_file.read_text())
    results = {r["variant"]["name"]: r for r in summary["results"]}
    assert list(results) == ["reference", "tunelab", "pad_to_max_length", "eval_in_order", "generate_batched",
                             "lora_unmerged"]
    reference, tunelab = results["reference"], results["tunelab"]
    assert reference["train"]["speedup_vs_reference"] == pytest.approx(1.0)
    for result in results.values():
        assert result["train"]["samples_per_s"]["min"] <= result["train"]["samples_per_s"]["median"] \
            <= result["train"]["samples_per_s"]["max"]
        assert result["train"]["peak_memory_gib"] > 0 and result["eval"]["samples_per_s"]["median"] > 0
    # The reference pads every batch to max_length (256); tunelab only to the longest prompt in the batch
    assert reference["train"]["padding_percent"]["median"] > 70
    assert tunelab["train"]["padding_percent"]["median"] < 30
    assert results["pad_to_max_length"]["train"]["padding_percent"]["median"] > 70
    # Scoring variants are checked against tunelab's predictions; the generation ones report parse failures
    assert results["pad_to_max_length"]["eval"]["agreement_with_tunelab_percent"] == pytest.approx(100.0)
    assert results["eval_in_order"]["eval"]["agreement_with_tunelab_percent"] == pytest.approx(100.0)
    assert results["eval_in_order"]["train"]["same_as"] == "tunelab"
    assert 0 <= reference["eval"]["unparsed_percent"] <= 100 and "agreement_with_tunelab_percent" not in reference["eval"]
    # A variant that trains like an earlier one is not trained again: its figures are that one's
    assert results["generate_batched"]["train"]["same_as"] == "reference"
    assert results["generate_batched"]["eval"]["same_as"] == "generate_batched"
    # phi2_snli is 4-bit: its LoRA weights are never merged, so "unmerged" evaluates exactly like tunelab
    assert results["lora_unmerged"]["eval"]["same_as"] == "tunelab"
    assert summary["prompt_tokens"]["max"] <= summary["max_length"] and summary["settings"]["repeats"] == 2
    assert summary["device"] == "cpu" and "training-shaped matmul peak of this CPU" in summary["mfu"]
    assert all(result["train"]["mfu_percent"] > 0 for result in results.values())
    table = md_file.read_text()
    assert "| reference | the notebooks' approach |" in table and "| tunelab | the recipe as shipped |" in table
    assert "| generate_batched | reference, generation batched (eval batch size) | as reference |" in table
    assert "tunelab bench --workload phi2_snli" in table


def test_bench_merges_lora_for_evaluation_where_the_weights_are_not_4bit(tiny_llama_dir, snli_dir, tmp_path):
    out = tmp_path / "bench"
    main(["--workload", "smollm2_snli", "--model", str(tiny_llama_dir), "--dataset", str(snli_dir),
                "--variants", "tunelab,lora_unmerged,score_one_row", "--steps", "1", "--warmup", "0", "--repeats", "1",
                "--eval_rows", "6", "--eval_repeats", "1", "--threads", "1", "--out", str(out)])
    [json_file] = out.glob("*.json")
    results = {r["variant"]["name"]: r for r in json.loads(json_file.read_text())["results"]}
    assert results["tunelab"]["variant"]["merge_lora"] and not results["lora_unmerged"]["variant"]["merge_lora"]
    for name in ("lora_unmerged", "score_one_row"):
        assert results[name]["train"]["same_as"] == "tunelab" and results[name]["eval"]["same_as"] == name
        assert results[name]["eval"]["agreement_with_tunelab_percent"] == pytest.approx(100.0)


def test_padding_free_variants_score_as_tunelab_and_train_without_padding(tiny_llama_dir, snli_dir, tmp_path):
    out = tmp_path / "bench"
    main(["--workload", "smollm2_snli", "--model", str(tiny_llama_dir), "--dataset", str(snli_dir),
          "--variants", "tunelab,padding_free,padding_free_batch_x2", "--steps", "1", "--warmup", "0",
          "--repeats", "1", "--eval_rows", "6", "--eval_repeats", "1", "--threads", "1", "--out", str(out)])
    [json_file], [md_file] = out.glob("*.json"), out.glob("*.md")
    results = {r["variant"]["name"]: r for r in json.loads(json_file.read_text())["results"]}
    for name in ("padding_free", "padding_free_batch_x2"):
        assert results[name]["train"]["same_as"] == name and results[name]["train"]["padding_percent"]["median"] == 0
        assert results[name]["eval"]["agreement_with_tunelab_percent"] == pytest.approx(100.0)
    assert results["padding_free_batch_x2"]["eval"]["same_as"] == "padding_free"
    assert "| padding_free | tunelab, each batch packed into one sequence without padding |" in md_file.read_text()


def test_compiled_and_unautocast_variants_score_as_tunelab_and_leave_the_model_uncompiled(tiny_llama_dir, snli_dir,
                                                                                         tmp_path, monkeypatch):
    from tunelab.bench import measure

    benches = []
    monkeypatch.setattr(measure.Bench, "__init__", lambda self, *args, init=measure.Bench.__init__:
                        benches.append(self) or init(self, *args))
    out = tmp_path / "bench"
    main(["--workload", "smollm2_snli", "--model", str(tiny_llama_dir), "--dataset", str(snli_dir),
          "--variants", "tunelab,torch_compile,no_autocast", "--steps", "1", "--warmup", "1",
          "--repeats", "1", "--eval_rows", "6", "--eval_repeats", "1", "--threads", "1", "--out", str(out)])
    results = {r["variant"]["name"]: r for r in json.loads(next(out.glob("*.json")).read_text())["results"]}
    autocast = results["tunelab"]["variant"]["autocast_bf16"]  # as the trainer: where the recipe computes in bf16
    assert results["no_autocast"]["train"]["same_as"] == ("no_autocast" if autocast else "tunelab")
    assert results["torch_compile"]["train"]["same_as"] == "torch_compile"
    for name in ("torch_compile", "no_autocast"):
        assert results[name]["eval"]["agreement_with_tunelab_percent"] == pytest.approx(100.0)
    assert results["torch_compile"]["variant"]["compile"] and not results["tunelab"]["variant"]["compile"]
    assert all(module._compiled_call_impl is None for module in benches[0].model.modules())


def test_packed_batches_are_one_sequence_of_the_rows_prompts(gpt2_tokenizer_dir):
    recipe = NLIRecipe(model_name_or_path=str(gpt2_tokenizer_dir), max_length=32)
    tokenizer = AutoTokenizer.from_pretrained(gpt2_tokenizer_dir)
    inputs = Inputs(tokenizer, label_token_ids(tokenizer, recipe.label_words, "first_token"), [], [],
                    prompt_ids={0: [5, 6, 7], 1: [5, 6]})
    batch = collate(inputs, [0, 1], VARIANTS["padding_free"], recipe, labels=[0, 1])
    assert batch["input_ids"].tolist() == [[5, 6, 7, 5, 6]] and batch["position_ids"].tolist() == [[0, 1, 2, 0, 1]]
    assert batch["row_ends"].tolist() == [2, 4] and batch["labels"].tolist() == [0, 1]


def test_packing_variants_are_refused_for_sequence_scoring():
    with pytest.raises(TunelabError, match="padding_free packs rows for label_scoring first_token only"):
        resolved(VARIANTS["padding_free"], NLIRecipe(label_scoring="sequence"), mergeable=True)


def test_unknown_variant_is_refused_with_the_choices():
    with pytest.raises(TunelabError, match="unknown variant.*choose from reference, tunelab"):
        parse_args(["--variants", "reference,fastest"])


def test_cli_reports_a_bad_bench_argument_in_one_line(tmp_path):
    result = subprocess.run([sys.executable, "-m", "tunelab.cli", "bench", "--variants", "nope"],
                            capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].startswith("tunelab: error: unknown variant(s) nope")
    assert "Traceback" not in result.stderr
