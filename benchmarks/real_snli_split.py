"""Split a file of real SNLI rows (SNLI 1.0 jsonl: sentence1, sentence2, gold_label) into train/validation/test
folders for `--dataset`, no premise shared between them. Writes only to OUT; the rows are never committed.

    python benchmarks/real_snli_split.py ../shared/data/snli_1.0_dev_subset.jsonl /tmp/real

Rows without a gold label ("-") are dropped; premises are shuffled with seed 0, then whole premises (with
all their hypotheses) fill test (270 rows), then validation (100, or a row more to keep a premise whole),
then train (the rest).
"""

import json
import random
import sys
from pathlib import Path

LABELS = ("entailment", "neutral", "contradiction")
SIZES = {"test": 270, "validation": 100}


def main(source: str, out: str) -> None:
    rows = [json.loads(line) for line in Path(source).read_text(encoding="utf-8").splitlines() if line.strip()]
    by_premise: dict[str, list[dict]] = {}
    for row in rows:
        if row["gold_label"] in LABELS:
            by_premise.setdefault(row["sentence1"], []).append(row)
    premises = sorted(by_premise)
    random.Random(0).shuffle(premises)
    parts: dict[str, list[dict]] = {"train": [], "validation": [], "test": []}
    for premise in premises:
        split = next((name for name, size in SIZES.items() if len(parts[name]) < size), "train")
        parts[split] += by_premise[premise]
    Path(out).mkdir(parents=True, exist_ok=True)
    for split, chosen in parts.items():
        lines = [json.dumps({key: row[key] for key in ("sentence1", "sentence2", "gold_label")}) for row in chosen]
        (Path(out) / f"{split}.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
        print(f"{split}: {len(chosen)} rows")


if __name__ == "__main__":
    main(*sys.argv[1:3])
