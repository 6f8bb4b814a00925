"""The GPU proof: every GPU claim of tunelab in one command, figures to JSON and Markdown.

    python3 benchmarks/gpu/proof.py OUT            # on the GPU machine: the whole proof in under 8 minutes
    python3 benchmarks/gpu/proof.py OUT --cpu      # tiny models, a few steps: what tests/test_gpu_kit.py runs

It writes OUT/proof.json (every figure), OUT/proof.md (the tables for the README), OUT/logs/<part>.log
(each part's output as it runs), OUT/proof.log (those logs in order) and OUT/monitoring_phi2_snli.json (the
NVML samples for docs/monitoring.md); models, data and run directories go to --work (default: a
temporary folder). The proof runs tunelab's own entry points, each part in its own process with its own
time budget, so one failure or timeout still leaves the other parts' figures. On the GPU the parts run
one at a time; with --cpu two at a time (--jobs):

  prepare          GPU, driver and library versions and what `--profile auto` picks here; phi-2's published
                   architecture with random weights (tunelab.bench.workloads.published_model, built on the GPU); an NLI
                   folder: the starter set's train rows repeated to 1,000, 100 validation and test rows
  phi2_snli        the recipe as a user launches it (`tunelab launch --profile auto`): 4-bit NF4, LoRA r=32,
                   paged AdamW 8-bit, 1,000 rows x 5 epochs, baseline, evaluation, report
  bench_phi2_4bit  `tunelab bench --workload phi2_snli`, all 32 layers, 4-bit as the recipe ships, with and
                   without padding-free batches (variant padding_free)
  bench_phi2_bf16  the same with --load_in_4bit false (bf16 weights): the MFU target
  bench_gpt2_large `tunelab bench --workload gpt2_large_mnli`, all 36 layers
  sft_phi2_oasst1  a few SFTTrainer steps of the phi2_oasst1 recipe in 4-bit (TRL on CUDA)

If the phi2_snli part runs out of time, its training time is extrapolated from the steps it logged
and labelled as such. This is a benchmark, not a test: figures depend on the machine.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
NLI_ROWS = {"gpu": {"train": 1000, "validation": 100, "test": 100}, "cpu": {"train": 24, "validation": 9, "test": 9}}
TARGET_TRAIN_SECONDS = 60  # phi2_snli as shipped, on the H200 (the reference: 23.92 minutes on an A40)
TARGET_MFU_PERCENT = 40  # bf16 LoRA on phi-2's shape
TARGET_EVAL_SPEEDUP = 5  # against generating one row at a time


@dataclass(frozen=True)
class Part:
    name: str
    gpu_seconds: int  # time budget on the H200
    cpu_seconds: int  # time budget in --cpu mode


# GPU budgets: 450 s together, which leaves half a minute of the 8 for installing the wheels. CPU
# budgets are only limits for a loaded machine: the parts take seconds there.
PARTS = (
    Part("prepare", 70, 120),
    Part("phi2_snli", 170, 240),
    Part("bench_phi2_4bit", 55, 180),
    Part("bench_phi2_bf16", 55, 180),
    Part("bench_gpt2_large", 50, 180),
    Part("sft_phi2_oasst1", 50, 180),
)


# ---------------------------------------------------------------------------- the commands of each part

class Proof:
    """The settings of one proof and the command line of each part."""

    def __init__(self, args: argparse.Namespace):
        self.cpu, self.out, self.work = args.cpu, Path(args.out), Path(args.work)
        self.mode = "cpu" if self.cpu else "gpu"
        self.epochs = args.epochs if args.epochs is not None else (1 if self.cpu else 5)
        self.jobs = args.jobs or (2 if self.cpu else 1)
        self.models = self.work / "models"
        self.data = self.work / "data" / "nli"
        self.runs = self.work / "runs"
        self.bench = self.work / "bench"
        self.logs = self.out / "logs"  # each part's output as it runs, in OUT so that it comes back

    def prepared(self) -> dict:
        path = self.work / "prepared.json"
        return json.loads(path.read_text()) if path.is_file() else {}

    def command(self, part: str) -> list[str]:
        tunelab = [sys.executable, "-m", "tunelab.cli"]
        me = [sys.executable, str(Path(__file__).resolve()), str(self.out), "--work", str(self.work),
              *(["--cpu"] if self.cpu else [])]
        phi = self.prepared().get("phi", "")
        if part == "prepare":
            return [*me, "--step", part]
        if part == "phi2_snli":
            rows = ["--train_stride", "1", "--train_size", "none", "--validation_stride", "1", "--validation_size",
                    "none", "--test_stride", "1", "--test_size", "none"]
            return [*tunelab, "launch", "recipes/phi2_snli.py", "--profile", "auto", "--model_name_or_path", phi,
                    "--dataset", str(self.data), *rows, "--num_train_epochs", str(self.epochs),
                    "--output_dir", str(self.runs), "--overwrite", "true"]
        if part == "sft_phi2_oasst1":
            steps = "2" if self.cpu else "10"
            small = ["--max_length", "64", "--per_device_train_batch_size", "1", "--gradient_accumulation_steps", "1"]
            return [*tunelab, "run", "recipes/phi2_oasst1.py", "--profile", "auto", "--model_name_or_path", phi,
                    "--dataset", "starter", "--max_steps", steps, "--logging_steps", "1", "--save_steps", steps,
                    "--stages", "train", "--output_dir", str(self.runs), "--overwrite", "true",
                    *(small if self.cpu else [])]
        bench = self.bench_settings(part)
        if part == "bench_phi2_bf16":  # bench's phi2_snli workload with bf16 weights (see bench_bf16)
            return [*me, "--step", "bench_bf16", "--", *bench]
        return [*tunelab, "bench", *bench]

    def bench_settings(self, part: str) -> list[str]:
        workload = {"bench_phi2_4bit": "phi2_snli", "bench_phi2_bf16": "phi2_snli",
                    "bench_gpt2_large": "gpt2_large_mnli"}[part]
        variants = {"bench_phi2_4bit": "reference,tunelab,padding_free",
                    "bench_phi2_bf16": "reference,tunelab,padding_free,batch_x2"}.get(part, "reference,tunelab")
        sizes = (["--steps", "1", "--warmup", "0", "--repeats", "1", "--eval_rows", "4", "--eval_repeats", "1"]
                 if self.cpu else
                 ["--steps", "8", "--warmup", "2", "--repeats", "3", "--eval_rows", "64", "--eval_repeats", "2"])
        model = []
        if self.cpu:  # tiny models with the same module names instead of the published architectures
            model = ["--model", self.prepared().get("gpt2" if workload == "gpt2_large_mnli" else "phi", "")]
        return ["--workload", workload, "--variants", variants, *sizes, *model, "--out", str(self.bench / part)]


# ---------------------------------------------------------------------------- steps run inside a part's process

def step_environment(proof: Proof) -> dict:
    """The device, driver and versions, and the profile `--profile auto` picks from what NVML sees."""
    import torch

    from tunelab.profiles import auto_profile, detect_gpus
    from tunelab.summary import software_versions

    gpus = detect_gpus()
    profile, reason = auto_profile(gpus)
    found = {"torch": torch.__version__, "cuda": torch.version.cuda, "cuda_available": torch.cuda.is_available(),
             "gpus": [vars(gpu) for gpu in gpus], "auto_profile": profile.name, "auto_profile_reason": reason,
             "software": software_versions(), "cpu_count": os.cpu_count()}
    if torch.cuda.is_available():
        found["device_capability"] = list(torch.cuda.get_device_capability())
        found["bf16_matmul_tflops"] = matmul_tflops(torch)
        found["nvidia_smi"] = run_quietly(["nvidia-smi", "--query-gpu=name,driver_version,memory.total,clocks.max.sm,"
                                           "power.limit", "--format=csv"])
    return found


def matmul_tflops(torch, size: int = 8192, repeats: int = 10) -> float:
    """The measured ceiling for MFU: a bf16 size³ matrix product on random data, timed with CUDA events."""
    a, b = (torch.randn(size, size, device="cuda", dtype=torch.bfloat16) for _ in range(2))
    for _ in range(3):
        a @ b
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(repeats):
        a @ b
    end.record()
    torch.cuda.synchronize()
    return round(2 * size**3 * repeats / (start.elapsed_time(end) / 1000) / 1e12, 1)


def step_prepare(proof: Proof) -> dict:
    """The models (phi-2's published architecture, or tiny ones on --cpu) and the NLI folder."""
    import torch

    from tunelab.bench.workloads import published_model
    from tunelab.config import load_recipe
    from tunelab.tiny_models import build_tiny_model

    environment = step_environment(proof)
    if proof.cpu:
        models = {kind: str(build_tiny_model(kind, proof.models / f"tiny-{kind}")) for kind in ("phi", "gpt2")}
    else:
        phi2 = load_recipe(str(ROOT / "recipes" / "phi2_snli.py"), [])
        gpt2 = load_recipe(str(ROOT / "recipes" / "gpt2_large_mnli.py"), [])
        # Random initialisation of 2.7 B weights takes seconds on the GPU, minutes on the CPU. The folders
        # land in the tunelab cache, where `tunelab bench` finds them.
        with torch.device("cuda"):
            models = {"phi": str(published_model("phi-2", None, phi2)),
                      "gpt2": str(published_model("gpt2-large", None, gpt2))}
    return {**models, "nli": write_nli_folder(proof.data, NLI_ROWS[proof.mode]), "environment": environment}


def write_nli_folder(folder: Path, sizes: dict[str, int]) -> dict[str, int]:
    """The starter set's rows, repeated where a split needs more rows than it has (SNLI-length prompts)."""
    from tunelab.nli.data import starter_data_dir
    from tunelab.rundir import read_jsonl, write_jsonl

    source = starter_data_dir("starter")
    for split, size in sizes.items():
        rows = read_jsonl(source / f"{split}.jsonl")
        write_jsonl(folder / f"{split}.jsonl", [rows[i % len(rows)] for i in range(size)])
    return sizes


def step_bench_bf16(argv: list[str]) -> None:
    """`tunelab bench --workload phi2_snli` with bf16 weights: the workload's recipe with --load_in_4bit false."""
    from dataclasses import replace

    from tunelab.bench.command import parse_args, run_benchmark
    from tunelab.bench.results import markdown, write_results
    from tunelab.bench.workloads import WORKLOADS

    four_bit = WORKLOADS["phi2_snli"]
    WORKLOADS["phi2_snli_bf16"] = replace(four_bit, name="phi2_snli_bf16",
                                                overrides=(*four_bit.overrides, "--load_in_4bit", "false"))
    args = parse_args([arg if arg != "phi2_snli" else "phi2_snli_bf16" for arg in argv])
    summary = run_benchmark(args)
    summary["command"] = (f"python3 benchmarks/gpu/proof.py OUT --parts bench_phi2_bf16: tunelab bench "
                          f"{' '.join(argv)} with the recipe's --load_in_4bit false")
    write_results(summary, Path(args.out))
    print(markdown(summary))


def run_quietly(command: list[str]) -> str:
    try:
        return subprocess.run(command, capture_output=True, text=True, timeout=20).stdout.strip()
    except (OSError, subprocess.SubprocessError) as error:
        return f"not available: {error}"


# ---------------------------------------------------------------------------- running the parts

def run_parts(proof: Proof, parts: list[Part], deadline: float) -> dict:
    """prepare first, then the other parts `proof.jobs` at a time. Each part writes OUT/logs/<part>.log as it runs;
    proof.log gathers those logs in the parts' order at the end."""
    def run(part: Part) -> dict:
        with open(proof.logs / f"{part.name}.log", "w", encoding="utf-8") as log:
            return run_part(proof, part, deadline, log)

    results = {part.name: run(part) for part in parts if part.name == "prepare"}
    with ThreadPoolExecutor(max_workers=proof.jobs) as pool:
        later = {part.name: pool.submit(run, part) for part in parts if part.name != "prepare"}
    results.update({name: future.result() for name, future in later.items()})
    with open(proof.out / "proof.log", "a", encoding="utf-8") as log:
        for part in parts:
            log.write((proof.logs / f"{part.name}.log").read_text(encoding="utf-8"))
    return results


def run_part(proof: Proof, part: Part, deadline: float, log) -> dict:
    """Run one part in its own process group, killed at its budget or the proof's deadline."""
    budget = part.cpu_seconds if proof.cpu else part.gpu_seconds
    remaining = deadline - time.monotonic()
    if remaining < 5:
        return {"status": "skipped", "why": "the proof's time budget was spent", "budget_s": budget}
    timeout = min(budget, remaining)
    command = proof.command(part.name)
    log.write(f"\n===== {part.name} (budget {budget} s): {' '.join(command)}\n")
    log.flush()
    start = time.monotonic()
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               env=part_environment(proof), start_new_session=True)
    lines = []
    reader = _tee(process, log, lines)
    try:
        returncode = process.wait(timeout=timeout)
        status = "ok" if returncode == 0 else f"failed (exit {returncode})"
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        status = f"timeout after {timeout:.0f} s"
    reader.join()
    seconds = time.monotonic() - start
    say(f"{part.name}: {status} in {seconds:.1f} s (budget {budget} s)")
    return {"status": status, "seconds": round(seconds, 1), "budget_s": budget, "command": command,
            "output_tail": lines[-25:] if status != "ok" else []}


def _tee(process: subprocess.Popen, log, lines: list[str]):
    import threading

    def copy() -> None:
        for line in process.stdout:
            log.write(line)
            lines.append(line.rstrip("\n"))
        log.flush()

    thread = threading.Thread(target=copy, daemon=True)
    thread.start()
    return thread


def part_environment(proof: Proof) -> dict[str, str]:
    env = dict(os.environ)
    paths = [str(ROOT / "src"), *[p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]]
    env.update(PYTHONPATH=os.pathsep.join(paths), PYTHONUNBUFFERED="1", HF_HUB_OFFLINE="1",
               TRANSFORMERS_OFFLINE="1", TOKENIZERS_PARALLELISM="false", TUNELAB_CACHE=str(proof.work / "cache"))
    if proof.cpu:  # the cores shared out: parts side by side with a thread per core each spin against each other
        env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // proof.jobs)))
    return env


# ---------------------------------------------------------------------------- figures

def collect(proof: Proof, results: dict) -> dict:
    """The figures of the parts that ran, from the files their processes wrote."""
    figures = {"prepare": proof.prepared()}
    if "phi2_snli" in results:
        figures["phi2_snli"] = nli_run_figures(proof, results["phi2_snli"])
    for part in ("bench_phi2_4bit", "bench_phi2_bf16", "bench_gpt2_large"):
        found = sorted((proof.bench / part).glob("bench-*.json"))
        if found and part in results:
            figures[part] = json.loads(found[-1].read_text())
    sft = proof.runs / "phi2_oasst1"
    if (sft / "progress.json").is_file() and "sft_phi2_oasst1" in results:
        figures["sft_phi2_oasst1"] = json.loads((sft / "progress.json").read_text())
    return figures


def nli_run_figures(proof: Proof, result: dict) -> dict:
    """Time, memory, rates and MFU of the phi2_snli run; extrapolated from the logged steps if it ran out of time."""
    run_dir = proof.runs / "phi2_snli"
    read = lambda name: json.loads((run_dir / name).read_text()) if (run_dir / name).is_file() else {}  # noqa: E731
    progress, monitoring = read("progress.json"), read("monitoring.json")
    figures = {"run_dir": str(run_dir), "finished": (run_dir / "run_info.json").is_file(),
               "timings_s": progress.get("timings_s", {}), "memory": progress.get("memory", {}),
               "monitoring": progress.get("monitoring") or monitoring.get("summary"),
               "train_rows": progress.get("train_rows", NLI_ROWS[proof.mode]["train"]), "epochs": proof.epochs,
               "profile": profile_line(proof.logs / "phi2_snli.log")}
    for split in ("test",):
        for model in ("baseline", "finetuned"):
            metrics = read(f"eval/{split}/{model}/metrics.json")
            if metrics:
                figures.setdefault("accuracy", {})[model] = metrics.get("accuracy")
    steps = [s["step_time_s"] for s in monitoring.get("samples", []) if "step_time_s" in s]
    if not figures["finished"] and steps:
        config = _read_yaml(run_dir / "config.yaml")
        batch = config.get("per_device_train_batch_size", 8) * config.get("gradient_accumulation_steps", 1)
        planned = math.ceil(NLI_ROWS[proof.mode]["train"] / batch) * proof.epochs
        figures["extrapolated"] = {
            "train_seconds": round(statistics.median(steps) * planned, 1), "planned_steps": planned,
            "logged_steps": monitoring["samples"][-1]["step"], "median_step_time_s": statistics.median(steps),
            "note": f"EXTRAPOLATED: the run stopped ({result.get('status')}); median step time of "
                    f"{len(steps)} logged windows x {planned} planned steps"}
    return figures


def profile_line(log: Path) -> str | None:
    """What `--profile auto` became: the recipe's own line, or the profile `tunelab launch` passed on."""
    lines = log.read_text().splitlines() if log.is_file() else []
    for line in lines:
        if "profile auto ->" in line:
            return line.removeprefix("[tunelab] ").strip()
    for line in lines:
        launched = re.search(r"accelerate launch --config_file (\S+) .*--profile (\S+)", line)
        if line.startswith("[tunelab]") and launched:
            return f"profile auto -> {launched[2]} (accelerate config {Path(launched[1]).name})"
    return None


def _read_yaml(path: Path) -> dict:
    import yaml

    return yaml.safe_load(path.read_text()) if path.is_file() else {}


def nvml_sample(proof: Proof, count: int = 3) -> dict:
    """The first logged samples of the phi2_snli run: real NVML and PyTorch memory figures."""
    path = proof.runs / "phi2_snli" / "monitoring.json"
    if not path.is_file():
        return {}
    monitoring = json.loads(path.read_text())
    return {"samples": monitoring.get("samples", [])[:count], "summary": monitoring.get("summary")}


# ---------------------------------------------------------------------------- the Markdown

def markdown(summary: dict) -> str:
    figures, parts = summary["figures"], summary["parts"]
    lines = [f"# tunelab GPU proof ({summary['mode']} mode), {summary['finished']}", "",
             f"Device: {device_line(figures['prepare'].get('environment', {}))}. Whole proof: {summary['seconds']:.0f} s.", "",
             "| part | status | seconds | budget s |", "|---|---|---|---|"]
    lines += [f"| {name} | {r['status']} | {r.get('seconds', '')} | {r['budget_s']} |" for name, r in parts.items()]
    if "phi2_snli" in figures:
        lines += ["", *phi2_snli_section(figures["phi2_snli"])]
    lines += ["", *targets_section(figures), *packing_section(figures)]
    for part in ("bench_phi2_4bit", "bench_phi2_bf16", "bench_gpt2_large"):
        if part in figures:
            lines += [f"## {part}", "", bench_table(figures[part])]
    sft = figures.get("sft_phi2_oasst1", {}).get("monitoring") or {}
    if sft:
        lines += ["## sft_phi2_oasst1 (TRL SFTTrainer, 4-bit)", "", rates_line(sft), ""]
    sample = summary.get("nvml_sample", {}).get("samples", [])
    if sample:
        lines += ["## NVML sample (phi2_snli, first logged steps)", "", "```json",
                  json.dumps(sample, indent=1), "```", ""]
    return "\n".join(lines) + "\n"


def bench_table(summary: dict) -> str:
    """`tunelab bench`'s own Markdown of a result (its JSON is in proof.json whatever happens here)."""
    try:
        from tunelab.bench.results import markdown as bench_markdown

        return bench_markdown(summary).replace("### ", "#### ")
    except Exception as error:  # the proof's tables must not be lost to one result's rendering
        return f"(not rendered: {type(error).__name__}: {error}; see proof.json)\n"


def device_line(environment: dict) -> str:
    gpus = environment.get("gpus") or []
    name = ", ".join(f"{g['name']} ({g['memory_gib']} GiB)" for g in gpus) or "no GPU"
    software = environment.get("software", {})
    return (f"{name}; torch {environment.get('torch')} (CUDA {environment.get('cuda')}), transformers "
            f"{software.get('transformers')}, bitsandbytes {software.get('bitsandbytes')}; "
            f"--profile auto picks {environment.get('auto_profile')}"
            + (f"; a bf16 8192³ matrix product ran at {environment['bf16_matmul_tflops']} TFLOP/s"
               if "bf16_matmul_tflops" in environment else ""))


def phi2_snli_section(run: dict) -> list[str]:
    if not run.get("timings_s") and not run.get("extrapolated"):
        return ["## phi2_snli end to end", "", "No figures: see the part's output in proof.log.", ""]
    timings, monitoring = run["timings_s"], run.get("monitoring") or {}
    lines = ["## phi2_snli end to end", "",
             f"{run.get('train_rows')} training rows x {run['epochs']} epochs; {run.get('profile')}", "",
             f"- total {timings.get('total', 0):.1f} s, training {timings.get('train', 0):.1f} s, "
             f"finished: {run['finished']}",
             f"- {rates_line(monitoring)}",
             f"- peak memory (PyTorch allocator): {run.get('memory', {}).get('peak_bytes', 0) / 2**30:.2f} GiB; "
             f"per device: {monitoring.get('peak_devices')}",
             f"- test accuracy (random weights, so near chance): {run.get('accuracy')}"]
    if "extrapolated" in run:
        lines.append(f"- **{run['extrapolated']['note']}: training {run['extrapolated']['train_seconds']} s**")
    return [*lines, ""]


def rates_line(monitoring: dict) -> str:
    return (f"{monitoring.get('samples_per_s')} samples/s, {monitoring.get('tokens_per_s')} tokens/s, "
            f"step {monitoring.get('step_time_s')} s, MFU {monitoring.get('mfu_pct', 'n/a')}% "
            f"({monitoring.get('peak_assumed')})")


def targets_section(figures: dict) -> list[str]:
    """The targets against what was measured (not measured: said so)."""
    run = figures.get("phi2_snli", {})
    train = run.get("timings_s", {}).get("train") if run.get("finished") else run.get("extrapolated", {}).get(
        "train_seconds")
    as_shipped = run.get("train_rows") == NLI_ROWS["gpu"]["train"] and run.get("epochs") == 5
    label = "extrapolated, " if "extrapolated" in run else ""
    rows = [(f"phi2_snli training ({label}{run.get('train_rows')} rows x {run.get('epochs')} epochs; the bar is for "
             "1000 x 5)", f"< {TARGET_TRAIN_SECONDS} s", train,
             as_shipped and train is not None and train < TARGET_TRAIN_SECONDS)]
    bf16 = tunelab_result(figures.get("bench_phi2_bf16"))
    mfu = bf16.get("train", {}).get("mfu_percent")
    rows.append(("bf16 LoRA MFU, phi-2 shape (bench)", f">= {TARGET_MFU_PERCENT}%", mfu,
                 mfu is not None and mfu >= TARGET_MFU_PERCENT))
    for part in ("bench_phi2_4bit", "bench_phi2_bf16", "bench_gpt2_large"):
        speedup = tunelab_result(figures.get(part)).get("eval", {}).get("speedup_vs_reference")
        rows.append((f"evaluation vs one-row generation ({part})", f">= {TARGET_EVAL_SPEEDUP}x", speedup,
                     speedup is not None and speedup >= TARGET_EVAL_SPEEDUP))
    lines = ["## Targets", "", "| target | bar | measured | met |", "|---|---|---|---|"]
    for name, bar, value, met in rows:
        shown = "not measured" if value is None else f"{value:.2f}"
        lines.append(f"| {name} | {bar} | {shown} | {'yes' if met else 'no'} |")
    return [*lines, ""]


def packing_section(figures: dict) -> list[str]:
    """phi-2's training tokens/s with padded batches (tunelab) and packed ones (padding_free)."""
    lines = ["## phi-2 with and without packing", "",
             "| bench | padded tokens/s | packed tokens/s | packed × padded | padding in padded batches "
             "| packed eval agreement |", "|---|---|---|---|---|---|"]
    for part in ("bench_phi2_4bit", "bench_phi2_bf16"):
        padded, packed = (variant_result(figures.get(part), name) for name in ("tunelab", "padding_free"))
        if not padded or not packed:
            lines.append(f"| {part} | not measured | | | | |")
            continue
        rates = [result["train"]["tokens_per_s"]["median"] for result in (padded, packed)]
        agreement = packed["eval"].get("agreement_with_tunelab_percent")
        lines.append(f"| {part} | {rates[0]:,.0f} | {rates[1]:,.0f} | {rates[1] / rates[0]:.2f}× "
                     f"| {padded['train']['padding_percent']['median']:.0f}% "
                     f"| {'n/a' if agreement is None else f'{agreement:.0f}%'} |")
    return [*lines, ""]


def tunelab_result(bench: dict | None) -> dict:
    return variant_result(bench, "tunelab")


def variant_result(bench: dict | None, name: str) -> dict:
    return next((r for r in (bench or {}).get("results", []) if r["variant"]["name"] == name), {})


# ---------------------------------------------------------------------------- main

def say(message: str) -> None:
    print(f"[proof] {message}", flush=True)


def parse_args(argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", help="folder for proof.json, proof.md, proof.log (created)")
    parser.add_argument("--cpu", action="store_true", help="tiny models and a few steps, for the test suite")
    parser.add_argument("--work", help="folder for models, data and runs (default: a new temporary folder)")
    parser.add_argument("--budget", type=float, help="seconds for all parts together (default: the parts' sum)")
    parser.add_argument("--parts", help=f"comma-separated subset of {','.join(p.name for p in PARTS)} "
                                        "(prepare runs first whenever a later part needs it)")
    parser.add_argument("--epochs", type=int, help="phi2_snli epochs (default 5; 1 with --cpu)")
    parser.add_argument("--jobs", type=int, help="parts run side by side after prepare (default 1 on a GPU, whose "
                                                 "timings they would share; 2 with --cpu, where each part mostly "
                                                 "waits on one core importing torch and transformers)")
    parser.add_argument("--step", choices=("prepare", "bench_bf16"), help=argparse.SUPPRESS)
    args, rest = parser.parse_known_args(argv)
    if rest and args.step != "bench_bf16":
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    return args, [arg for arg in rest if arg != "--"]


def main(argv: list[str] | None = None) -> int:
    args, rest = parse_args(sys.argv[1:] if argv is None else argv)
    args.work = args.work or tempfile.mkdtemp(prefix="tunelab-proof-")
    proof = Proof(args)
    if args.step:
        return run_step(proof, args.step, rest)
    names = [p.name for p in PARTS]
    wanted = names if not args.parts else [n.strip() for n in args.parts.split(",")]
    unknown = sorted(set(wanted) - set(names))
    if unknown:
        print(f"proof: error: unknown part(s) {', '.join(unknown)}: choose from {', '.join(names)}", file=sys.stderr)
        return 2
    if not proof.prepared():
        wanted = sorted(set(wanted) | {"prepare"}, key=names.index)
    for folder in (proof.out, proof.work, proof.logs):
        folder.mkdir(parents=True, exist_ok=True)
    parts = [p for p in PARTS if p.name in wanted]
    budget = args.budget or sum(p.cpu_seconds if proof.cpu else p.gpu_seconds for p in parts)
    start = time.monotonic()
    say(f"{proof.mode} mode, parts {', '.join(wanted)}, budget {budget:.0f} s, work folder {proof.work}")
    results = run_parts(proof, parts, start + budget)
    summary = {"mode": proof.mode, "finished": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
               "seconds": time.monotonic() - start, "budget_s": budget, "work": str(proof.work), "parts": results}
    summary["figures"] = collect(proof, results)
    summary["nvml_sample"] = nvml_sample(proof) if "phi2_snli" in results else {}
    write_outputs(proof, summary)
    failed = [name for name, result in results.items() if result["status"] != "ok"]
    say(f"parts not ok: {', '.join(failed)}" if failed else "every part ok")
    return 1 if failed else 0


def run_step(proof: Proof, step: str, rest: list[str]) -> int:
    from tunelab.rundir import atomic_write_json

    if step == "bench_bf16":
        step_bench_bf16(rest)
        return 0
    found = step_prepare(proof)
    atomic_write_json(proof.work / "prepared.json", found)
    print(json.dumps(found, indent=1))
    return 0


def write_outputs(proof: Proof, summary: dict) -> None:
    sys.path.insert(0, str(ROOT / "src"))
    from tunelab.rundir import atomic_write_json, atomic_write_text

    atomic_write_json(proof.out / "proof.json", summary)
    monitoring = proof.runs / "phi2_snli" / "monitoring.json"
    if monitoring.is_file():
        atomic_write_text(proof.out / "monitoring_phi2_snli.json", monitoring.read_text())
    atomic_write_text(proof.out / "proof.md", markdown(summary))
    say(f"results: {proof.out / 'proof.md'}, {proof.out / 'proof.json'}")


if __name__ == "__main__":
    sys.exit(main())
