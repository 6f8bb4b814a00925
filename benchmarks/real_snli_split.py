"""Split a file of real SNLI rows (SNLI 1.0 jsonl: sentence1, sentence2, gold_label) into train/validation/test
folders for `--dataset`, no premise shared between them. Writes only to OUT; the rows are never committed.

    python benchmarks/real_snli_split.py ../shared/data/snli_1.0_dev_subset.jsonl /tmp/real
    python benchmarks/real_snli_split.py ../shared/data/snli_1.0_dev_subset.jsonl /tmp/real-fold1 --fold 1
    python benchmarks/real_snli_split.py ../shared/data/snli_1.0_dev_subset.jsonl /tmp/real-reversed --add_reversed
    python benchmarks/real_snli_split.py ../shared/data/snli_1.0_dev_subset.jsonl /tmp/real1200-f8 \
        --test_rows 100 --validation_rows 50 --fold 8

Rows without a gold label ("-") are dropped; premises are shuffled with seed 0 and cut, whole premises with
all their hypotheses, into blocks of 270 rows (`--test_rows`; the last block smaller). Fold K tests on block K, validates
on the premises after it (100 rows, `--validation_rows`, or a row more to keep a premise whole) and trains
on the rest. The test rows of different folds never overlap: settings chosen by their test accuracy on one
fold are confirmed on rows that played no part in choosing them. Blocks of 100 test rows and 50 validation
rows leave about 1,120 rows to train on, near the 1,200 of a user who trains on a whole subset like this one;
the premises keep their order, so such blocks 8 to 12 hold the rows after the first three 270-row folds.

`--add_reversed` also trains on each contradiction and entailment with premise and hypothesis swapped: a
contradiction stays one, an entailment becomes neutral (a premise is rarely implied by its more general
hypothesis); neutral rows are not swapped (their reverse can be anything). Validation and test rows are
unchanged. (To train on the starter set's rows beside these, the recipe setting `--extra_train_dataset starter`.)
"""

import argparse
import json
import random
from pathlib import Path

LABELS = ("entailment", "neutral", "contradiction")
KEPT_COLUMNS = ("sentence1", "sentence2", "gold_label", "annotator_labels")  # annotator_labels: --annotator_labels
REVERSED_LABELS = {"contradiction": "contradiction", "entailment": "neutral"}


def main(source: str, out: str, fold: int = 0, add_reversed: bool = False,
         test_rows: int = 270, validation_rows: int = 100) -> None:
    rows = [json.loads(line) for line in Path(source).read_text(encoding="utf-8").splitlines() if line.strip()]
    by_premise: dict[str, list[dict]] = {}
    for row in rows:
        if row["gold_label"] in LABELS:
            by_premise.setdefault(row["sentence1"], []).append(row)
    premises = sorted(by_premise)
    random.Random(0).shuffle(premises)
    blocks: list[list[str]] = [[]]
    for premise in premises:
        if sum(len(by_premise[p]) for p in blocks[-1]) >= test_rows:
            blocks.append([])
        blocks[-1].append(premise)
    if not 0 <= fold < len(blocks):
        raise SystemExit(f"--fold must be from 0 to {len(blocks) - 1} for {source}")
    parts: dict[str, list[dict]] = {"train": [], "validation": [], "test": []}
    after_test = [p for block in blocks[fold + 1:] + blocks[:fold] for p in block]
    for premise in blocks[fold]:
        parts["test"] += by_premise[premise]
    for premise in after_test:
        split = "validation" if len(parts["validation"]) < validation_rows else "train"
        parts[split] += by_premise[premise]
    if add_reversed:
        parts["train"] += [reversed_pair(row) for row in parts["train"] if row["gold_label"] in REVERSED_LABELS]
    Path(out).mkdir(parents=True, exist_ok=True)
    for split, chosen in parts.items():
        lines = [json.dumps({key: row[key] for key in KEPT_COLUMNS}) for row in chosen]
        (Path(out) / f"{split}.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
        print(f"{split}: {len(chosen)} rows")


def reversed_pair(row: dict) -> dict:
    """The row with premise and hypothesis swapped, labelled by REVERSED_LABELS (one annotator: that label)."""
    label = REVERSED_LABELS[row["gold_label"]]
    return {"sentence1": row["sentence2"], "sentence2": row["sentence1"], "gold_label": label,
            "annotator_labels": [label]}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", help="SNLI 1.0 jsonl rows")
    parser.add_argument("out", help="the folder to write train/validation/test.jsonl into")
    parser.add_argument("--fold", type=int, default=0, help="which block of test rows (0 is the README's split)")
    parser.add_argument("--add_reversed", action="store_true",
                        help="also train on contradictions and entailments with premise and hypothesis swapped")
    parser.add_argument("--test_rows", type=int, default=270, help="rows in each fold's test block")
    parser.add_argument("--validation_rows", type=int, default=100, help="validation rows after the test block")
    args = parser.parse_args()
    if args.test_rows < 1 or args.validation_rows < 1:
        parser.error("--test_rows and --validation_rows must be at least 1")
    main(args.source, args.out, args.fold, args.add_reversed, args.test_rows, args.validation_rows)
