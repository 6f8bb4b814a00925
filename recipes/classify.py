"""microsoft/phi-2, QLoRA, your own classification task: any labels, one or more text columns.

    accelerate launch --config_file accelerate_configs/a40.yaml recipes/classify.py \
        --dataset my_reviews.csv --text_columns review --label_column sentiment --labels negative,positive
    accelerate launch --config_file accelerate_configs/cpu.yaml recipes/classify.py --config recipes/embedded_classify.yaml

A .csv, .jsonl or .parquet file (test_fraction of its rows held out for testing), a folder of
train/validation/test files, or a Hub id. docs/classification.md has the details.
Override any field on the command line (`--learning_rate 1e-4`) or from a YAML file (`--config`).
"""

from tunelab.classify.config import ClassificationRecipe
from tunelab.launch.recipe import run

RECIPE = ClassificationRecipe(
    run_name="classify",
    # Model: 4-bit NF4 with double quantization; compute in bf16 where supported
    model_name_or_path="microsoft/phi-2",
    load_in_4bit=True,
    bnb_4bit_quant_type="nf4",
    bnb_4bit_use_double_quant=True,
    # LoRA on every attention and MLP projection of phi-2
    lora_r=32,
    lora_alpha=64,
    lora_dropout=0.05,
    lora_target_modules=["q_proj", "k_proj", "v_proj", "dense", "fc1", "fc2"],
    # Data: the offline sentiment starter set; with your own file, name its columns and labels
    dataset="starter_sentiment",
    text_columns=["text"],
    label_column="label",
    labels=["negative", "positive"],
    test_fraction=0.2,  # for a single file: a fifth of its rows held out for testing (a folder's test file otherwise)
    # Optimisation
    per_device_train_batch_size=8,
    learning_rate=5e-5,
    num_train_epochs=3,
    optim="paged_adamw_8bit",
    save_strategy="epoch",
)

if __name__ == "__main__":
    run(RECIPE)
