"""Throughput and memory of training and evaluation: tunelab's NLI recipe vs the notebooks' approach.

    tunelab bench                                       # SmolLM2-135M (embedded) on the starter set
    tunelab bench --workload phi2_snli --layers 2       # phi-2's architecture, random weights, 2 of 32 layers
    tunelab bench --workload gpt2_large_mnli --variants reference,tunelab,no_checkpointing

Both implementations train the same LoRA model on the same rows, alternating in one process:
- `reference`, as the notebooks do it: the formatted text with its answer ("...Relationship:
  neutral") padded to max_length, the language-model loss over every position and the whole
  vocabulary, evaluation by `generate` (one row at a time, as many new tokens as the longest
  label word) and parsing the label word out of the text;
- `tunelab`, the recipe as shipped: prompts padded to the longest in the batch, the label-word loss
  at the answer position only (`trainer.label_scores`), evaluation by the same scores, rows longest
  first, with the LoRA weights merged into the base weights unless those are 4-bit.
Further variants change one thing of `tunelab` (or of `reference`) each, to measure every
optimization on its own (`--variants` lists them; `VARIANTS` says what each changes).

Each repetition times `--steps` training steps (forward, backward, optimizer step) after
`--warmup` untimed ones for every variant in turn (each repetition starting with another
variant), then all the training repetitions are followed by `--eval_repeats` timed evaluations
of `--eval_rows` test rows; the median and the spread (min-max) over the repetitions are
reported. A variant that trains (or evaluates) exactly like an earlier one is not run again. Memory is the peak
during the phase: CUDA's allocator peak on a GPU, the process's resident memory on a CPU
(sampled every 10 ms, after returning freed memory to the system). MFU (GPU only) counts the
model's FLOPs per real token (`monitoring.flops_per_token`) against the device's dense peak.
Evaluation variants that score labels are compared with tunelab's predictions on the same
weights: `agreement` should be 100% for an optimization that keeps the results.

Results go to OUT/bench-<workload>-<time>.json and .md (never overwriting earlier ones).
This is a benchmark, not a test: figures depend on the machine and its load.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import math
import os
import random
import shutil
import statistics
import sys
import threading
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch
import torch.nn.functional as F

from tunelab.errors import TunelabError
from tunelab.nli.config import NLI_LABELS, NLIRecipe

GIB = 1024**3


# ---------------------------------------------------------------------------- variants

@dataclass(frozen=True)
class Variant:
    """One way to train and evaluate; every field is one optimization that can be switched alone."""

    name: str
    changes: str
    loss: str = "label_word"  # or "full_lm": causal-LM loss over the whole formatted text and vocabulary
    padding: str = "longest"  # or "max_length"
    group_by_length: bool | None = None  # None: as the recipe says; batches of similar lengths (LengthGroupedSampler)
    attention: str | None = None  # None: the model's default (SDPA); or "eager"
    autocast_bf16: bool = False
    compile: bool = False
    batch_scale: int = 1  # train batch = the recipe's per_device_train_batch_size x batch_scale
    gradient_checkpointing: bool | None = None  # None: as the recipe says
    evaluation: str = "score"  # or "generate"
    eval_longest_first: bool = True  # score the rows sorted by length (nli.predict); the notebooks do not
    eval_batch_size: int | None = None  # None: the recipe's per_device_eval_batch_size
    merge_lora: bool = True  # evaluate with the LoRA weights merged into the base weights (models.adapter_merged)


REFERENCE = Variant("reference", "the notebooks' approach", loss="full_lm", padding="max_length",
                    group_by_length=False, evaluation="generate", eval_longest_first=False, eval_batch_size=1,
                    merge_lora=False)
TUNELAB = Variant("tunelab", "the recipe as shipped")
VARIANTS = {variant.name: variant for variant in (
    REFERENCE,
    TUNELAB,
    replace(TUNELAB, name="pad_to_max_length", changes="tunelab, batches padded to max_length", padding="max_length"),
    replace(TUNELAB, name="full_lm_loss", changes="tunelab, LM loss over the full vocabulary and text",
            loss="full_lm"),
    replace(TUNELAB, name="group_by_length", changes="tunelab, batches grouped by length", group_by_length=True),
    replace(TUNELAB, name="random_order", changes="tunelab, batches in random order (not grouped by length)",
            group_by_length=False),
    replace(TUNELAB, name="eval_in_order", changes="tunelab, evaluation rows in their order (not longest first)",
            eval_longest_first=False),
    replace(TUNELAB, name="lora_unmerged", changes="tunelab, evaluation with the LoRA layers unmerged",
            merge_lora=False),
    replace(TUNELAB, name="score_one_row", changes="tunelab, evaluation one row at a time", eval_batch_size=1),
    replace(TUNELAB, name="eager_attention", changes="tunelab, eager attention instead of SDPA", attention="eager"),
    replace(TUNELAB, name="bf16_autocast", changes="tunelab, bf16 autocast", autocast_bf16=True),
    replace(TUNELAB, name="torch_compile", changes="tunelab, torch.compile(dynamic=True)", compile=True),
    replace(TUNELAB, name="batch_x2", changes="tunelab, twice the batch size", batch_scale=2),
    replace(TUNELAB, name="no_checkpointing", changes="tunelab, gradient checkpointing off",
            gradient_checkpointing=False),
    replace(TUNELAB, name="checkpointing", changes="tunelab, gradient checkpointing on", gradient_checkpointing=True),
    replace(REFERENCE, name="generate_batched", changes="reference, generation batched (eval batch size)",
            eval_batch_size=None),
)}
DEFAULT_VARIANTS = ("reference", "tunelab")


# ---------------------------------------------------------------------------- workloads

@dataclass(frozen=True)
class Workload:
    name: str
    recipe_file: str
    overrides: tuple[str, ...]  # command-line settings on top of the recipe file
    published: str | None  # a published architecture built with random weights, or None: the recipe's model


ALL_ROWS = ("--train_stride", "1", "--train_size", "null", "--test_stride", "1", "--test_size", "null")
WORKLOADS = {w.name: w for w in (
    Workload("smollm2_snli", "recipes/phi2_snli.py", ("--config", "recipes/embedded_snli.yaml"), None),
    Workload("phi2_snli", "recipes/phi2_snli.py", ("--dataset", "starter", *ALL_ROWS), "phi-2"),
    Workload("gpt2_large_mnli", "recipes/gpt2_large_mnli.py", ("--dataset", "starter_mnli"), "gpt2-large"),
)}


def workload_recipe(workload: Workload, args: argparse.Namespace) -> NLIRecipe:
    """The workload's recipe with its model replaced by a random-weight build (or --model) and its data by --dataset."""
    from tunelab.config import load_recipe

    argv = list(workload.overrides)
    if args.dataset:
        argv += ["--dataset", args.dataset, *ALL_ROWS]
    recipe = load_recipe(str(project_root() / workload.recipe_file), argv)
    model = args.model or (published_model(workload.published, args.layers, recipe) if workload.published else None)
    return replace(recipe, model_name_or_path=str(model)) if model else recipe


def project_root() -> Path:
    return Path(__file__).resolve().parents[2]


def published_model(name: str, layers: int | None, recipe: NLIRecipe) -> Path:
    """A folder with `name`'s published architecture (first `layers` layers), random weights and GPT-2's tokenizer.

    Built once into the tunelab cache; throughput and memory do not depend on the weights' values.
    """
    from transformers import AutoModelForCausalLM

    from tunelab.models import compute_dtype
    from tunelab.tiny_models import load_gpt2_tokenizer, published_config

    config = published_config(name)
    config.num_hidden_layers = layers or config.num_hidden_layers
    dtype = compute_dtype(recipe.precision)
    cache = Path(os.environ.get("TUNELAB_CACHE", Path.home() / ".cache" / "tunelab"))
    folder = cache / "bench" / f"{name}-{config.num_hidden_layers}layers-{str(dtype).removeprefix('torch.')}"
    if not folder.exists():
        say(f"building {name} with {config.num_hidden_layers} layers and random weights in {folder}")
        torch.manual_seed(0)
        model = AutoModelForCausalLM.from_config(config, dtype=dtype)
        staging = folder.with_name(folder.name + ".partial")
        shutil.rmtree(staging, ignore_errors=True)
        model.save_pretrained(staging)
        load_gpt2_tokenizer().save_pretrained(staging)
        staging.rename(folder)  # complete or absent: an interrupted build is redone
    return folder


# ---------------------------------------------------------------------------- inputs

@dataclass
class Inputs:
    """The rows, their token ids for both implementations, and what scoring needs."""

    tokenizer: object
    label_ids: list[list[int]]
    train_rows: list[dict]
    eval_rows: list[dict]
    prompt_ids: dict[int, list[int]] = field(default_factory=dict)  # row index -> prompt ids (tunelab)
    text_ids: dict[int, list[int]] = field(default_factory=dict)  # row index -> prompt + answer ids (reference)


def prepare_inputs(recipe: NLIRecipe, args: argparse.Namespace) -> Inputs:
    from tunelab.models import load_tokenizer
    from tunelab.nli.data import format_prompt, load_nli_split, tokenize_rows
    from tunelab.nli.trainer import answer_room, label_token_ids

    tokenizer = load_tokenizer(recipe)
    label_ids = label_token_ids(tokenizer, recipe.label_words, recipe.label_scoring)
    train_rows = load_nli_split(recipe, recipe.train_split)
    eval_rows = load_nli_split(recipe, recipe.test_splits[0])[: args.eval_rows]
    random.Random(recipe.seed).shuffle(train_rows)
    inputs = Inputs(tokenizer, label_ids, train_rows, eval_rows)
    reserve = answer_room(label_ids, recipe.label_scoring)
    tokenized, _ = tokenize_rows(train_rows + eval_rows, tokenizer, recipe.max_length, reserve)
    words = dict(zip(NLI_LABELS, recipe.label_words))
    for index, (row, example) in enumerate(zip(train_rows + eval_rows, tokenized)):
        inputs.prompt_ids[index] = example["input_ids"]
        text = format_prompt(row["premise"], row["hypothesis"]) + " " + words[row["label"]]
        inputs.text_ids[index] = tokenizer(text, truncation=True, max_length=recipe.max_length)["input_ids"]
    return inputs


def train_batches(inputs: Inputs, variant: Variant, batch_size: int, accumulation: int, count: int,
                  seed: int) -> list[list[int]]:
    """`count` batches of row indices; grouped by length with the sampler the Trainer uses when the variant asks
    (which groups by batch size x gradient accumulation steps, as the Trainer does)."""
    from transformers.trainer_pt_utils import LengthGroupedSampler

    indices = list(range(len(inputs.train_rows)))
    if variant.group_by_length:
        lengths = [len(inputs.prompt_ids[i]) for i in indices]
        generator = torch.Generator().manual_seed(seed)
        indices = list(LengthGroupedSampler(batch_size * accumulation, lengths=lengths, generator=generator))
    needed = batch_size * count
    ordered = (indices * math.ceil(needed / len(indices)))[:needed]
    return [ordered[i:i + batch_size] for i in range(0, needed, batch_size)]


def collate(inputs: Inputs, rows: list[int], variant: Variant, recipe: NLIRecipe, labels: list[int]) -> dict:
    """A batch as the variant feeds it: tunelab's collator (left padding) or the notebooks' right padding."""
    from tunelab.nli.trainer import NLICollator

    pad = inputs.tokenizer.pad_token_id
    if variant.loss == "label_word":
        collator = NLICollator(pad, inputs.label_ids, recipe.label_scoring)
        batch = collator([{"input_ids": inputs.prompt_ids[i], "labels": label} for i, label in zip(rows, labels)])
        if variant.padding == "max_length":
            batch = left_pad_to(batch, recipe.max_length, pad)
        return batch
    texts = [inputs.text_ids[i] for i in rows]
    width = recipe.max_length if variant.padding == "max_length" else max(map(len, texts))
    input_ids = torch.tensor([ids + [pad] * (width - len(ids)) for ids in texts])
    attention_mask = torch.tensor([[1] * len(ids) + [0] * (width - len(ids)) for ids in texts])
    # DataCollatorForLanguageModeling: labels are the input ids, padding ignored
    return {"input_ids": input_ids, "attention_mask": attention_mask,
            "labels": input_ids.masked_fill(attention_mask == 0, -100)}


def left_pad_to(batch: dict, width: int, pad: int) -> dict:
    extra = width - batch["input_ids"].shape[1]
    padded = dict(batch)
    for key, value in (("input_ids", pad), ("attention_mask", 0), ("position_ids", 0)):
        padded[key] = F.pad(batch[key], (extra, 0), value=value)
    return padded


# ---------------------------------------------------------------------------- one phase

class PeakMemory:
    """Peak memory during a `with` block: CUDA's allocator peak, or the process's resident set on a CPU."""

    def __init__(self, device: torch.device):
        self.device, self.peak_bytes = device, 0

    def __enter__(self) -> PeakMemory:
        if self.device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            return self
        import psutil

        release_freed_memory()
        self._process, self._done = psutil.Process(), threading.Event()
        self.peak_bytes = self._process.memory_info().rss
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._done.wait(0.01):
            self.peak_bytes = max(self.peak_bytes, self._process.memory_info().rss)

    def __exit__(self, *exc_info) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize()
            self.peak_bytes = torch.cuda.max_memory_allocated()
        else:
            self._done.set()
            self._thread.join()


def release_freed_memory() -> None:
    """Give memory the allocator holds but no tensor uses back to the system, so each phase's peak is its own."""
    import gc

    gc.collect()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


@dataclass
class Measured:
    seconds: float
    samples: int
    tokens: int  # real (non-padding) tokens
    padded_tokens: int
    peak_bytes: int
    extra: dict = field(default_factory=dict)


class Bench:
    """The model and inputs of one workload, and the timed training and evaluation of each variant."""

    def __init__(self, recipe: NLIRecipe, model, inputs: Inputs, args: argparse.Namespace):
        self.recipe, self.model, self.inputs, self.args = recipe, model, inputs, args
        self.device = next(model.parameters()).device
        self.optimizers: dict[str, torch.optim.Optimizer] = {}
        self._compiled: dict[str, torch.nn.Module] = {}
        self.reference_predictions: list[int] | None = None

    @contextlib.contextmanager
    def applied(self, variant: Variant):
        """The model as the variant runs it (attention, checkpointing, compilation, autocast); undone after."""
        base = self.model.get_base_model()
        attention = base.config._attn_implementation
        checkpointing = base.is_activation_checkpointing
        if variant.attention:
            base.set_attn_implementation(variant.attention)
        if variant.gradient_checkpointing is not None and variant.gradient_checkpointing != checkpointing:
            set_checkpointing(base, variant.gradient_checkpointing)
        model = self.model
        if variant.compile:
            model = self._compiled.setdefault(variant.name, torch.compile(self.model, dynamic=True))
        autocast = torch.autocast(self.device.type, dtype=torch.bfloat16) if variant.autocast_bf16 \
            else contextlib.nullcontext()
        try:
            with autocast:
                yield model
        finally:
            base.set_attn_implementation(attention)
            if base.is_activation_checkpointing != checkpointing:
                set_checkpointing(base, checkpointing)

    def train(self, variant: Variant, repeat: int) -> Measured:
        batch_size = self.recipe.per_device_train_batch_size * variant.batch_scale
        steps, warmup = self.args.steps, self.args.warmup
        batches = train_batches(self.inputs, variant, batch_size, self.recipe.gradient_accumulation_steps,
                                warmup + steps, seed=repeat)
        optimizer = self.optimizers.setdefault(variant.name, torch.optim.AdamW(
            [p for p in self.model.parameters() if p.requires_grad], lr=self.recipe.learning_rate))
        self.model.train()
        with self.applied(variant) as model:
            for rows in batches[:warmup]:
                self._train_step(model, optimizer, variant, rows)
            with PeakMemory(self.device) as memory:
                start = time.perf_counter()
                counts = [self._train_step(model, optimizer, variant, rows) for rows in batches[warmup:]]
                synchronize(self.device)
                seconds = time.perf_counter() - start
        return Measured(seconds, steps * batch_size, sum(c[0] for c in counts), sum(c[1] for c in counts),
                        memory.peak_bytes)

    def _train_step(self, model, optimizer, variant: Variant, rows: list[int]) -> tuple[int, int]:
        from tunelab.nli.trainer import label_word_loss

        labels = [NLI_LABELS.index(self.inputs.train_rows[i]["label"]) for i in rows]
        batch = to_device(collate(self.inputs, rows, variant, self.recipe, labels), self.device)
        if variant.loss == "label_word":
            loss, _ = label_word_loss(model, batch, self.inputs.label_ids, self.recipe.label_scoring)
        else:
            loss = model(**batch).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return int(batch["attention_mask"].sum()), batch["attention_mask"].numel()

    @torch.no_grad()
    def evaluate(self, variant: Variant) -> Measured:
        from tunelab.models import adapter_merged

        self.model.eval()
        first_train = len(self.inputs.train_rows)
        rows = list(range(first_train, first_train + len(self.inputs.eval_rows)))
        if variant.eval_longest_first:
            rows.sort(key=lambda row: -len(self.inputs.prompt_ids[row]))
        batch_size = variant.eval_batch_size
        predict = self._score if variant.evaluation == "score" else self._generate
        merged = adapter_merged(self.model) if variant.merge_lora else contextlib.nullcontext()
        with self.applied(variant) as model, merged:
            if self.args.warmup:
                predict(model, variant, rows[:batch_size])
            with PeakMemory(self.device) as memory:
                start = time.perf_counter()
                results = [predict(model, variant, rows[i:i + batch_size]) for i in range(0, len(rows), batch_size)]
                synchronize(self.device)
                seconds = time.perf_counter() - start
        scored = dict(zip(rows, (p for batch_predictions, _, _ in results for p in batch_predictions)))
        predictions = [scored[row] for row in sorted(rows)]
        extra = {"predictions": predictions}
        if variant.evaluation == "generate":
            extra["unparsed_percent"] = 100.0 * predictions.count(-1) / len(predictions)
        return Measured(seconds, len(rows), sum(r[1] for r in results), sum(r[2] for r in results),
                        memory.peak_bytes, extra)

    def _score(self, model, variant: Variant, rows: list[int]) -> tuple[list[int], int, int]:
        from tunelab.nli.trainer import label_scores

        prompts_only = replace(variant, loss="label_word")  # scoring reads the prompt, whatever the training loss
        batch = to_device(collate(self.inputs, rows, prompts_only, self.recipe, [0] * len(rows)), self.device)
        scores = label_scores(model, batch, self.inputs.label_ids, self.recipe.label_scoring)
        return scores.argmax(-1).tolist(), int(batch["attention_mask"].sum()), batch["attention_mask"].numel()

    def _generate(self, model, variant: Variant, rows: list[int]) -> tuple[list[int], int, int]:
        """The notebooks' evaluation: generate an answer after the prompt and look for a label word in it."""
        tokenizer, pad = self.inputs.tokenizer, self.inputs.tokenizer.pad_token_id
        prompts = [self.inputs.prompt_ids[i] for i in rows]
        width = max(map(len, prompts))
        input_ids = torch.tensor([[pad] * (width - len(p)) + p for p in prompts], device=self.device)
        attention_mask = (torch.arange(width, device=self.device) >= torch.tensor(
            [width - len(p) for p in prompts], device=self.device)[:, None]).long()
        new_tokens = max(map(len, self.inputs.label_ids))
        output = model.generate(input_ids=input_ids, attention_mask=attention_mask, max_new_tokens=new_tokens,
                                min_new_tokens=new_tokens, do_sample=False, pad_token_id=pad)
        answers = tokenizer.batch_decode(output[:, width:], skip_special_tokens=True)
        return [parse_label(answer, self.recipe.label_words) for answer in answers], \
            int(attention_mask.sum()) + new_tokens * len(rows), output.numel()


def parse_label(answer: str, label_words: list[str]) -> int:
    """The index of the first label word in a generated answer, or -1 when there is none."""
    found = [(answer.lower().find(word.lower()), index) for index, word in enumerate(label_words)]
    found = [(position, index) for position, index in found if position >= 0]
    return min(found)[1] if found else -1


def set_checkpointing(model, enabled: bool) -> None:
    if enabled:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    else:
        model.gradient_checkpointing_disable()


def to_device(batch: dict, device: torch.device) -> dict:
    return {key: value.to(device) for key, value in batch.items()}


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


# ---------------------------------------------------------------------------- the run

def run_benchmark(args: argparse.Namespace) -> dict:
    from tunelab.models import can_merge_adapter, load_model

    if args.threads:
        torch.set_num_threads(args.threads)
    workload = WORKLOADS[args.workload]
    variants = [VARIANTS[name] for name in args.variants]
    recipe = workload_recipe(workload, args)
    say(f"{workload.name}: {recipe.model_name_or_path}, loading data and model")
    inputs = prepare_inputs(recipe, args)
    torch.manual_seed(recipe.seed)
    model = load_model(recipe)
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
            say(f"repeat {repeat + 1}/{args.repeats} {variant.name:>18} train {rates(train_runs[variant.name][-1])}")
    for repeat in range(args.eval_repeats):
        for variant in rotated([v for v in variants if v.name in eval_runs], repeat):
            eval_runs[variant.name].append(bench.evaluate(variant))
            say(f"repeat {repeat + 1}/{args.eval_repeats} {variant.name:>18} eval  {rates(eval_runs[variant.name][-1])}")
    train_runs = {v.name: train_runs[train_owner[v.name]] for v in variants}
    eval_runs = {v.name: eval_runs[eval_owner[v.name]] for v in variants}
    return summarise(args, workload, bench, variants, train_runs, eval_runs, train_owner, eval_owner)


def rotated(variants: list[Variant], repeat: int) -> list[Variant]:
    """A different variant first in each repetition, so that no variant always follows the same one."""
    shift = repeat % len(variants)
    return variants[shift:] + variants[:shift]


TRAIN_FIELDS = ("loss", "padding", "group_by_length", "attention", "autocast_bf16", "compile", "batch_scale",
                "gradient_checkpointing")
EVAL_FIELDS = ("evaluation", "eval_longest_first", "padding", "attention", "autocast_bf16", "compile", "eval_batch_size",
               "merge_lora")


def resolved(variant: Variant, recipe: NLIRecipe, mergeable: bool) -> Variant:
    """The variant with the recipe's values where it keeps them (None)."""
    checkpointing = recipe.gradient_checkpointing if variant.gradient_checkpointing is None \
        else variant.gradient_checkpointing
    grouped = recipe.group_by_length if variant.group_by_length is None else variant.group_by_length
    return replace(variant, gradient_checkpointing=checkpointing, group_by_length=grouped,
                   eval_batch_size=variant.eval_batch_size or recipe.per_device_eval_batch_size,
                   merge_lora=variant.merge_lora and mergeable)


def same_runs(variants: list[Variant], fields: tuple[str, ...]) -> dict[str, str]:
    """Each variant's name -> the first variant that runs this phase identically (itself if none): measured once."""
    first: dict[tuple, str] = {}
    return {v.name: first.setdefault(tuple(getattr(v, f) for f in fields), v.name) for v in variants}


def rates(measured: Measured) -> str:
    return (f"{measured.samples / measured.seconds:8.2f} samples/s {measured.tokens / measured.seconds:9.1f} tokens/s "
            f"peak {measured.peak_bytes / GIB:.2f} GiB")


def summarise(args, workload: Workload, bench: Bench, variants: list[Variant], train_runs: dict,
              eval_runs: dict, train_owner: dict[str, str], eval_owner: dict[str, str]) -> dict:
    from tunelab.flops import flops_per_token, peak_flops
    from tunelab.models import parameter_counts
    from tunelab.monitoring import hardware_info, software_versions

    recipe, model = bench.recipe, bench.model
    base = model.get_base_model()
    flops_note = flops_per_token(model, gradient_checkpointing=recipe.gradient_checkpointing)[1]
    device_name = torch.cuda.get_device_name() if bench.device.type == "cuda" else None
    dtype = torch.bfloat16 if device_name and recipe.precision in ("auto", "bf16") else torch.float32
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


# ---------------------------------------------------------------------------- output

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
    from tunelab.rundir import atomic_write_json, atomic_write_text

    stamp = time.strftime("%Y%m%d-%H%M%S")
    stem = out / f"bench-{summary['workload']}-{stamp}"
    json_path, md_path = stem.with_suffix(".json"), stem.with_suffix(".md")
    atomic_write_json(json_path, summary)
    atomic_write_text(md_path, markdown(summary))
    return json_path, md_path


def say(message: str) -> None:
    print(f"[tunelab bench] {message}", file=sys.stderr, flush=True)


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="tunelab bench", description=__doc__.splitlines()[0])
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
    say(f"results written to {json_path} and {md_path}")
