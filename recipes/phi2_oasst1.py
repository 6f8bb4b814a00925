"""microsoft/phi-2, QLoRA, OpenAssistant/oasst1 chat SFT with TRL's SFTTrainer: the reference run.

    accelerate launch --config_file accelerate_configs/a40.yaml recipes/phi2_oasst1.py
    tunelab run recipes/phi2_oasst1.py --config recipes/embedded_oasst1.yaml     # offline, 2 CPU cores

Conversations are built from OASST1's message trees (best-ranked reply at every assistant turn,
deleted and unreviewed messages dropped, English only); only assistant turns are trained. phi-2
has no chat template, so tunelab's "### User:" / "### Assistant:" template is used, with the
EOS token closing each assistant turn. Then:

    tunelab merge runs/phi2_oasst1        # runs/phi2_oasst1/merged
    tunelab chat runs/phi2_oasst1         # terminal chat, streamed, CPU

Override any field on the command line (`--max_steps 100`) or from a YAML file (`--config`).
"""

from tunelab.chat.config import ChatRecipe
from tunelab.launch.recipe import run

RECIPE = ChatRecipe(
    run_name="phi2_oasst1",
    # Model: 4-bit NF4 with double quantization; bf16 compute where supported, else fp16 (precision auto)
    model_name_or_path="microsoft/phi-2",
    load_in_4bit=True,
    bnb_4bit_quant_type="nf4",
    bnb_4bit_use_double_quant=True,
    precision="auto",
    gradient_checkpointing=True,
    # LoRA on phi-2's projection layers (attention q/k/v and output, MLP in and out)
    lora_r=16,
    lora_alpha=32,
    lora_dropout=0.05,
    lora_bias="none",
    lora_target_modules=["q_proj", "k_proj", "v_proj", "dense", "fc1", "fc2"],
    # Data: OASST1 trees -> English conversations; 200 held-out conversations from its validation split
    dataset="OpenAssistant/oasst1",
    train_split="train",
    eval_split="validation",
    language="en",
    eval_size=200,
    chat_template="auto",
    max_length=1024,
    # Optimisation
    per_device_train_batch_size=4,
    per_device_eval_batch_size=4,
    gradient_accumulation_steps=4,
    optim="paged_adamw_32bit",
    learning_rate=2e-4,
    max_grad_norm=0.3,
    max_steps=500,
    warmup_ratio=0.03,
    lr_scheduler_type="cosine",
    save_strategy="steps",
    save_steps=10,
    logging_steps=10,
    # Evaluation: the fixed prompts answered by both models (tunelab.chat.config.GENERAL_PROMPTS)
    max_new_tokens=256,
)

if __name__ == "__main__":
    run(RECIPE)
