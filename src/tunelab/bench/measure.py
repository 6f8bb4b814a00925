"""Timed training steps and evaluations of one variant, with the peak memory of each phase."""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import threading
import time
from dataclasses import dataclass, field, replace

import torch
from peft.helpers import disable_input_dtype_casting

from tunelab.bench.variants import Variant
from tunelab.bench.workloads import Inputs, collate, train_batches
from tunelab.models import adapter_merged, compile_repeated_layers
from tunelab.nli.config import NLI_LABELS, NLIRecipe
from tunelab.nli.trainer import label_scores, label_word_loss
from tunelab.packing import real_tokens

GIB = 1024**3


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
        if variant.compile:
            compile_repeated_layers(self.model)
        autocast = torch.autocast(self.device.type, dtype=torch.bfloat16) if variant.autocast_bf16 \
            else contextlib.nullcontext()
        try:  # under autocast the adapters compute in bf16, as in the trainers (tunelab.training.AdaptersInAutocast)
            with autocast, disable_input_dtype_casting(self.model, active=variant.autocast_bf16):
                yield self.model
        finally:
            base.set_attn_implementation(attention)
            if base.is_activation_checkpointing != checkpointing:
                set_checkpointing(base, checkpointing)
            if variant.compile:
                for module in self.model.modules():
                    module._compiled_call_impl = None  # undoes nn.Module.compile, which has no public inverse

    def train(self, variant: Variant, repeat: int) -> Measured:
        batch_size = self.recipe.per_device_train_batch_size * variant.batch_scale
        steps, warmup = self.args.steps, self.args.warmup
        batches = train_batches(self.inputs, variant, batch_size, self.recipe.gradient_accumulation_steps,
                                warmup + steps, seed=repeat)
        optimizer = self.optimizers.setdefault(variant.name, torch.optim.AdamW(
            [p for p in self.model.parameters() if p.requires_grad], lr=self.recipe.learning_rate,
            fused=self.recipe.optim == "adamw_torch_fused"))
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
        labels = [NLI_LABELS.index(self.inputs.train_rows[i]["label"]) for i in rows]
        batch = to_device(collate(self.inputs, rows, variant, self.recipe, labels), self.device)
        if variant.loss == "label_word":
            loss, _ = label_word_loss(model, batch, self.inputs.label_ids, self.recipe.label_scoring)
        else:
            loss = model(**batch).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return real_tokens(batch), batch["input_ids"].numel()

    @torch.no_grad()
    def evaluate(self, variant: Variant) -> Measured:
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
        prompts_only = replace(variant, loss="label_word")  # scoring reads the prompt, whatever the training loss
        batch = to_device(collate(self.inputs, rows, prompts_only, self.recipe, [0] * len(rows)), self.device)
        scores = label_scores(model, batch, self.inputs.label_ids, self.recipe.label_scoring)
        return scores.argmax(-1).tolist(), real_tokens(batch), batch["input_ids"].numel()

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
