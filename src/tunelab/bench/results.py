"""The figures of a benchmark (medians, spreads, ratios to the reference, MFU) and their JSON and Markdown."""

from __future__ import annotations

import statistics
import time
from dataclasses import asdict
from pathlib import Path

import torch

from tunelab.bench.measure import GIB, Bench, Measured
from tunelab.bench.variants import Variant
from tunelab.bench.workloads import Workload
from tunelab.flops import flops_per_token, peak_flops
from tunelab.models import parameter_counts
from tunelab.rundir import atomic_write_json, atomic_write_text
from tunelab.runtime.precision import compute_dtype
from tunelab.summary import hardware_info, software_versions


def rates(measured: Measured) -> str:
    return (f"{measured.samples / measured.seconds:8.2f} samples/s {measured.tokens / measured.seconds:9.1f} tokens/s "
            f"peak {measured.peak_bytes / GIB:.2f} GiB")


def summarise(args, workload: Workload, bench: Bench, variants: list[Variant], train_runs: dict,
              eval_runs: dict, train_owner: dict[str, str], eval_owner: dict[str, str]) -> dict:
    recipe, model = bench.recipe, bench.model
    base = model.get_base_model()
    flops_note = flops_per_token(model, gradient_checkpointing=recipe.gradient_checkpointing)[1]
    device_name = torch.cuda.get_device_name() if bench.device.type == "cuda" else None
    dtype = compute_dtype(recipe.precision)
    peak, peak_note = peak_flops(device_name, dtype)
    results = []
    for variant in variants:
        flops = flops_per_token(model, gradient_checkpointing=variant.gradient_checkpointing)[0]
        train = phase_figures(train_runs[variant.name], flops / peak if peak else None)
        evaluation = phase_figures(eval_runs[variant.name], None)
        first = eval_runs[variant.name][0].extra
        if variant.evaluation == "generate":
            evaluation["unparsed_percent"] = first["unparsed_percent"]
        elif "tunelab" in eval_runs:
            tunelab = eval_runs["tunelab"][0].extra["predictions"]
            evaluation["agreement_with_tunelab_percent"] = 100.0 * sum(
                a == b for a, b in zip(first["predictions"], tunelab)) / len(tunelab)
        train["same_as"], evaluation["same_as"] = train_owner[variant.name], eval_owner[variant.name]
        results.append({"variant": asdict(variant), "train": train, "eval": evaluation})
    add_ratios(results)
    prompt_lengths = [len(ids) for ids in bench.inputs.prompt_ids.values()]
    return {
        "workload": workload.name,
        "recipe": workload.recipe_file,
        "model": recipe.model_name_or_path,
        "architecture": f"{base.config.model_type}, {base.config.num_hidden_layers} layers, "
                        f"hidden {base.config.hidden_size}, vocabulary {base.config.vocab_size}",
        "parameters": parameter_counts(model)["total"],
        "load_in_4bit": recipe.load_in_4bit,
        "gradient_checkpointing": recipe.gradient_checkpointing,
        "train_batch_size": recipe.per_device_train_batch_size,
        "eval_batch_size": recipe.per_device_eval_batch_size,
        "max_length": recipe.max_length,
        "dataset": recipe.dataset,
        "prompt_tokens": {"mean": round(statistics.mean(prompt_lengths), 1), "max": max(prompt_lengths)},
        "settings": {k: getattr(args, k) for k in ("steps", "warmup", "repeats", "eval_rows", "eval_repeats")},
        "device": device_name or "cpu",
        "threads": torch.get_num_threads(),
        "hardware": hardware_info(),
        "software": software_versions(),
        "mfu": f"{flops_note}; {peak_note}",
        "command": " ".join(["tunelab bench", *args.argv]),
        "results": results,
    }


def phase_figures(runs: list[Measured], peak_seconds_per_token: float | None) -> dict:
    """Median and spread (min, max) of each rate over the repetitions, and the highest peak memory.

    `peak_seconds_per_token`: the model's training FLOPs per token over the device's peak FLOP/s (None: no MFU).
    """
    figures = {}
    for name, per_run in (("samples_per_s", [r.samples / r.seconds for r in runs]),
                          ("tokens_per_s", [r.tokens / r.seconds for r in runs]),
                          ("padding_percent", [100.0 * (1 - r.tokens / r.padded_tokens) for r in runs])):
        figures[name] = {"median": statistics.median(per_run), "min": min(per_run), "max": max(per_run)}
    figures["peak_memory_gib"] = max(r.peak_bytes for r in runs) / GIB
    if peak_seconds_per_token is not None:
        figures["mfu_percent"] = 100.0 * figures["tokens_per_s"]["median"] * peak_seconds_per_token
    return figures


def add_ratios(results: list[dict]) -> None:
    """Each variant's median rates and peak memory divided by the reference's (when the reference ran)."""
    reference = next((r for r in results if r["variant"]["name"] == "reference"), None)
    if reference is None:
        return
    for result in results:
        for phase in ("train", "eval"):
            mine, theirs = result[phase], reference[phase]
            mine["speedup_vs_reference"] = mine["samples_per_s"]["median"] / theirs["samples_per_s"]["median"]
            mine["memory_vs_reference"] = mine["peak_memory_gib"] / theirs["peak_memory_gib"]


def markdown(summary: dict) -> str:
    lines = [
        f"### {summary['workload']} on {summary['device']} ({summary['threads']} threads)",
        "",
        f"Model: {summary['architecture']}, {summary['parameters']:,} parameters"
        f"{', 4-bit NF4' if summary['load_in_4bit'] else ''}"
        f"{', gradient checkpointing' if summary['gradient_checkpointing'] else ''}; "
        f"train batch {summary['train_batch_size']}, eval batch {summary['eval_batch_size']}, max_length "
        f"{summary['max_length']}; prompts {summary['prompt_tokens']['mean']} tokens on average "
        f"(max {summary['prompt_tokens']['max']}) from {summary['dataset']}.",
        f"Settings: {summary['settings']}. Rates are medians over the repetitions, with (min-max).",
        "",
        "| variant | changes | train samples/s | train tokens/s | train × ref | train peak GiB | mem × ref "
        "| eval samples/s | eval × ref | eval peak GiB | eval agreement |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for result in summary["results"]:
        variant = result["variant"]
        lines.append("| " + " | ".join([variant["name"], variant["changes"], *train_cells(result),
                                        *eval_cells(result)]) + " |")
    mfu = [f"{r['variant']['name']} {r['train']['mfu_percent']:.1f}%" for r in summary["results"]
           if "mfu_percent" in r["train"]]
    lines += ["", *([f"MFU (training): {', '.join(mfu)}."] if mfu else []), summary["mfu"] + ".", "",
              f"Command: `{summary['command']}`"]
    return "\n".join(lines) + "\n"


def train_cells(result: dict) -> list[str]:
    train, name = result["train"], result["variant"]["name"]
    if train["same_as"] != name:
        return [f"as {train['same_as']}", "", "", "", ""]
    return [spread(train["samples_per_s"]), spread(train["tokens_per_s"], 0), ratio(train, "speedup_vs_reference"),
            f"{train['peak_memory_gib']:.2f}", ratio(train, "memory_vs_reference")]


def eval_cells(result: dict) -> list[str]:
    evaluation, name = result["eval"], result["variant"]["name"]
    if evaluation["same_as"] != name:
        return [f"as {evaluation['same_as']}", "", "", ""]
    if "agreement_with_tunelab_percent" in evaluation:
        agreement = f"{evaluation['agreement_with_tunelab_percent']:.0f}%"
    else:
        agreement = f"{evaluation['unparsed_percent']:.0f}% unparsed" if "unparsed_percent" in evaluation else ""
    return [spread(evaluation["samples_per_s"]), ratio(evaluation, "speedup_vs_reference"),
            f"{evaluation['peak_memory_gib']:.2f}", agreement]


def spread(figure: dict, digits: int = 2) -> str:
    return f"{figure['median']:.{digits}f} ({figure['min']:.{digits}f}-{figure['max']:.{digits}f})"


def ratio(phase: dict, key: str) -> str:
    return f"{phase[key]:.2f}×" if key in phase else ""


def write_results(summary: dict, out: Path) -> tuple[Path, Path]:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    stem = out / f"bench-{summary['workload']}-{stamp}"
    json_path, md_path = stem.with_suffix(".json"), stem.with_suffix(".md")
    atomic_write_json(json_path, summary)
    atomic_write_text(md_path, markdown(summary))
    return json_path, md_path
