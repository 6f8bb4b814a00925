"""CPU generation speed: a chat run's merged model vs its base model + unmerged LoRA adapter.

    python benchmarks/chat_generation.py RUN_DIR            # a finished chat run (merged first if needed)
    python benchmarks/chat_generation.py                    # no run: SmolLM2-135M-Instruct (embedded) with a
                                                            # random LoRA adapter on every projection, r=16
    options: --new_tokens 64 --repeats 3 --threads N

Greedy decoding of exactly --new_tokens tokens (end-of-turn suppressed until then) for one short
prompt, after one warm-up generation; the median of --repeats runs is printed as tokens per second.
The unmerged adapter adds two small matrix products to every adapted layer at every token; merging
folds them into the base weights, so the merged model runs at the base model's speed.
This is a benchmark, not a test: the numbers depend on the machine and its load.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

PROMPT = [{"role": "user", "content": "Give me three tips for learning a new language."}]


def demo_run(folder: Path) -> Path:
    """A run directory holding SmolLM2 + a random (non-zero) LoRA adapter, as the chat recipe would write it."""
    import yaml
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from tunelab.chat.format import prepare_chat_tokenizer
    from tunelab.config import Recipe
    from tunelab.models import load_tokenizer, resolve_model_path

    recipe = Recipe(model_name_or_path="smollm2-135m")
    tokenizer = load_tokenizer(recipe)
    prepare_chat_tokenizer(tokenizer)
    base = AutoModelForCausalLM.from_pretrained(resolve_model_path(recipe.model_name_or_path), dtype=torch.float32)
    torch.manual_seed(0)
    targets = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    model = get_peft_model(base, LoraConfig(r=16, lora_alpha=32, target_modules=targets, init_lora_weights=False,
                                            task_type="CAUSAL_LM"))
    model.save_pretrained(folder / "adapter")
    tokenizer.save_pretrained(folder / "adapter")
    (folder / "config.yaml").write_text(yaml.safe_dump({"model_name_or_path": "smollm2-135m"}))
    return folder


def tokens_per_second(model, tokenizer, new_tokens: int, repeats: int) -> tuple[float, float]:
    from tunelab.chat.serve import _generation_kwargs

    kwargs = _generation_kwargs(model, tokenizer, PROMPT, new_tokens, temperature=0.0, top_p=1.0)
    kwargs["min_new_tokens"] = new_tokens
    with torch.no_grad():
        model.generate(**{**kwargs, "max_new_tokens": 8, "min_new_tokens": 8})  # warm-up
        seconds = []
        for _ in range(repeats):
            start = time.perf_counter()
            output = model.generate(**kwargs)
            seconds.append(time.perf_counter() - start)
            assert output.shape[1] - kwargs["input_ids"].shape[1] == new_tokens
    median = statistics.median(seconds)
    return new_tokens / median, 1000 * median / new_tokens


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", nargs="?")
    parser.add_argument("--new_tokens", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    from tunelab.chat.serve import (
        MERGED_MARKER,
        load_base_and_adapter,
        load_model_folder,
        merge_adapter,
    )

    scratch = tempfile.TemporaryDirectory(prefix="tunelab-bench-")
    run_dir = Path(args.run_dir) if args.run_dir else demo_run(Path(scratch.name))
    merged = run_dir / "merged"
    if not (merged / MERGED_MARKER).is_file():
        merged = merge_adapter(run_dir, Path(scratch.name) / "merged")
    print(f"run: {run_dir if args.run_dir else 'SmolLM2-135M-Instruct + random LoRA r=16 (all projections)'}; "
          f"{args.new_tokens} new tokens, greedy, median of {args.repeats}; CPU, {torch.get_num_threads()} threads")
    rows = []
    for name, load in (("base + unmerged adapter", lambda: load_base_and_adapter(run_dir)),
                       ("merged", lambda: load_model_folder(merged))):
        start = time.perf_counter()
        model, tokenizer = load()
        loaded = time.perf_counter() - start
        rate, ms = tokens_per_second(model, tokenizer, args.new_tokens, args.repeats)
        rows.append((name, loaded, rate, ms))
        del model
    print(f"{'model':<26}{'load s':>8}{'tokens/s':>10}{'ms/token':>10}")
    for name, loaded, rate, ms in rows:
        print(f"{name:<26}{loaded:>8.1f}{rate:>10.1f}{ms:>10.1f}")
    print(f"merged / unmerged speed: {rows[1][2] / rows[0][2]:.2f}x")
    scratch.cleanup()


if __name__ == "__main__":
    main(sys.argv[1:])
