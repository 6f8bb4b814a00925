"""The `tunelab bench` command: parse its arguments, measure every variant in turn, write the results."""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path

import torch

import tunelab.bench
from tunelab.bench.measure import Bench
from tunelab.bench.results import markdown, rates, summarise, write_results
from tunelab.bench.variants import (
    DEFAULT_VARIANTS,
    EVAL_FIELDS,
    TRAIN_FIELDS,
    VARIANTS,
    resolved,
    rotated,
    same_runs,
)
from tunelab.bench.workloads import WORKLOADS, prepare_inputs, workload_recipe
from tunelab.console import say
from tunelab.errors import TunelabError
from tunelab.models import can_merge_adapter, load_model


def run_benchmark(args: argparse.Namespace) -> dict:
    if args.threads:
        torch.set_num_threads(args.threads)
    workload = WORKLOADS[args.workload]
    variants = [VARIANTS[name] for name in args.variants]
    recipe = workload_recipe(workload, args)
    say(f"{workload.name}: {recipe.model_name_or_path}, loading data and model", stream=sys.stderr)
    inputs = prepare_inputs(recipe, args)
    torch.manual_seed(recipe.seed)
    model = load_model(replace(recipe, torch_compile=False))  # the torch_compile variant compiles
    if torch.cuda.is_available() and not recipe.load_in_4bit:
        model = model.cuda()
    bench = Bench(recipe, model, inputs, args)
    variants = [resolved(variant, recipe, can_merge_adapter(model)) for variant in variants]
    train_owner, eval_owner = same_runs(variants, TRAIN_FIELDS), same_runs(variants, EVAL_FIELDS)
    train_runs = {name: [] for name in set(train_owner.values())}
    eval_runs = {name: [] for name in set(eval_owner.values())}
    for repeat in range(args.repeats):
        for variant in rotated([v for v in variants if v.name in train_runs], repeat):
            train_runs[variant.name].append(bench.train(variant, repeat))
            say(f"repeat {repeat + 1}/{args.repeats} {variant.name:>18} train {rates(train_runs[variant.name][-1])}",
                stream=sys.stderr)
    for repeat in range(args.eval_repeats):
        for variant in rotated([v for v in variants if v.name in eval_runs], repeat):
            eval_runs[variant.name].append(bench.evaluate(variant))
            say(f"repeat {repeat + 1}/{args.eval_repeats} {variant.name:>18} eval  {rates(eval_runs[variant.name][-1])}",
                stream=sys.stderr)
    train_runs = {v.name: train_runs[train_owner[v.name]] for v in variants}
    eval_runs = {v.name: eval_runs[eval_owner[v.name]] for v in variants}
    return summarise(args, workload, bench, variants, train_runs, eval_runs, train_owner, eval_owner)


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="tunelab bench", description=tunelab.bench.__doc__.splitlines()[0])
    parser.add_argument("--workload", default="smollm2_snli", choices=sorted(WORKLOADS))
    parser.add_argument("--variants", default=",".join(DEFAULT_VARIANTS),
                        help=f"comma-separated, from: {', '.join(VARIANTS)}")
    parser.add_argument("--layers", type=int, help="build only the first N layers of a published architecture "
                                                   "(default: all; a CPU needs few)")
    parser.add_argument("--model", help="a local model folder instead of the workload's model")
    parser.add_argument("--dataset", help="NLI rows instead of the starter set: a .jsonl file or folder (all rows)")
    parser.add_argument("--steps", type=int, default=4, help="timed training steps per repetition")
    parser.add_argument("--warmup", type=int, default=1, help="untimed training steps before them")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--eval_rows", type=int, default=48)
    parser.add_argument("--eval_repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, help="CPU threads for PyTorch")
    parser.add_argument("--out", default="runs/bench", help="folder for the JSON and Markdown results")
    args = parser.parse_args(argv)
    args.variants = [name.strip() for name in args.variants.split(",") if name.strip()]
    unknown = [name for name in args.variants if name not in VARIANTS]
    if unknown:
        raise TunelabError(f"unknown variant(s) {', '.join(unknown)}: choose from {', '.join(VARIANTS)}")
    for name in ("steps", "repeats", "eval_rows", "eval_repeats"):
        if getattr(args, name) < 1:
            raise TunelabError(f"--{name} must be at least 1")
    args.argv = argv
    return args


def main(argv: list[str]) -> None:
    args = parse_args(argv)
    summary = run_benchmark(args)
    json_path, md_path = write_results(summary, Path(args.out))
    print(markdown(summary))
    say(f"results written to {json_path} and {md_path}", stream=sys.stderr)
