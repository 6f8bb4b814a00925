"""gpt2-large, LoRA, MultiNLI: matched and mismatched evaluation against the pretrained baseline.

    accelerate launch --config_file accelerate_configs/a40.yaml recipes/gpt2_large_mnli.py
    tunelab run recipes/gpt2_large_mnli.py --config recipes/embedded_mnli.yaml   # offline, on a CPU

Override any field on the command line (`--train_sample 10000`) or from a YAML file (`--config`).
The evaluation rows are kept in RUN_DIR/data/<split>.jsonl with the settings that chose them
(selection.json): every stage and restart scores exactly those rows, and `tunelab compare` refuses
to compare evaluations of different rows.
"""

from tunelab.launch.recipe import run
from tunelab.nli.config import NLIRecipe

RECIPE = NLIRecipe(
    run_name="gpt2_large_mnli",
    # Model: full-precision weights (no quantization), bf16 where supported, else fp16 on GPUs.
    # GPT-2 has no pad token (the EOS token pads) and stores its projections as Conv1D
    # (LoRA is configured with fan_in_fan_out); both are handled by tunelab.models.
    model_name_or_path="openai-community/gpt2-large",
    load_in_4bit=False,
    precision="auto",
    # Checkpointing off: with prompts padded only to the longest in the batch the activations are
    # small, and recomputing them cost 1.5x in training speed (tunelab bench; docs/performance.md).
    # The vgpu36 profile turns it on.
    gradient_checkpointing=False,
    # LoRA on GPT-2's attention (c_attn, c_proj) and MLP (c_fc, c_proj) projections
    lora_r=16,
    lora_alpha=32,
    lora_dropout=0.1,
    lora_bias="none",
    lora_target_modules=["c_attn", "c_proj", "c_fc"],
    # Data: 50,000 random train rows (seed 42), 10% of them held out as the internal validation set;
    # 2,500 random rows of each of validation_matched and validation_mismatched as the test splits.
    dataset="nyu-mll/multi_nli",
    train_split="train",
    validation_split="validation",  # the held-out 10% (MultiNLI has no split of that name)
    test_splits=["validation_matched", "validation_mismatched"],
    train_sample=50_000,
    validation_fraction=0.1,
    test_sample=2_500,
    sample_seed=42,
    # Optimisation: effective batch 36 = 6 per device x 6 accumulation steps
    per_device_train_batch_size=6,
    gradient_accumulation_steps=6,
    group_by_length=True,  # batches of similar lengths: 1.1-1.2x faster, same accuracy (docs/performance.md)
    learning_rate=2e-4,
    num_train_epochs=3,
    optim="adamw_torch",
    save_strategy="epoch",
)

if __name__ == "__main__":
    run(RECIPE)
