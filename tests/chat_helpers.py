"""A small finished chat run for the serving, CLI and browser tests (built once per session).

The tiny random llama (GPT-2's tokenizer: no chat template, no pad token) is fine-tuned for a
few steps on the starter conversations by the real phi2_oasst1 recipe, with settings sized for
a test; then its adapter is merged. Replies are gibberish, but real generated tokens.
"""

from __future__ import annotations

import runpy
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CHAT_RECIPE = runpy.run_path(str(ROOT / "recipes" / "phi2_oasst1.py"))["RECIPE"]
LLAMA_TARGETS = "q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj"


def tiny_chat_overrides(model_dir, output_dir, *extra) -> list[str]:
    """The phi2_oasst1 recipe on the starter trees, sized for a test on 2 CPU cores."""
    return ["--model_name_or_path", str(model_dir), "--dataset", "starter", "--output_dir", str(output_dir),
            "--train_size", "48", "--eval_size", "8", "--max_steps", "4", "--save_steps", "2",
            "--logging_steps", "1", "--gradient_accumulation_steps", "1", "--learning_rate", "2e-2",
            "--warmup_ratio", "0", "--max_new_tokens", "4", "--max_length", "128",
            "--eval_prompts", "What is the capital of Sweden?,What is 23 plus 19?", "--precision", "fp32", *extra]


def build_tiny_chat_run(model_dir: Path, output_dir: Path) -> Path:
    """Train (unquantized, AdamW), evaluate, report and merge; returns the run directory."""
    from tunelab.chat.pipeline import main
    from tunelab.chat.serve import merge_adapter
    from tunelab.config import parse_recipe

    argv = tiny_chat_overrides(model_dir, output_dir, "--load_in_4bit", "false", "--optim", "adamw_torch",
                               "--gradient_checkpointing", "false", "--lora_target_modules", LLAMA_TARGETS,
                               "--run_name", "tiny_chat")
    run_dir = main(parse_recipe(CHAT_RECIPE, argv))
    merge_adapter(run_dir)
    return run_dir
