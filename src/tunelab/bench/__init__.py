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
optimization on its own (`--variants` lists them; `variants.VARIANTS` says what each changes).

Each repetition times `--steps` training steps (forward, backward, optimizer step) after
`--warmup` untimed ones for every variant in turn (each repetition starting with another
variant), then all the training repetitions are followed by `--eval_repeats` timed evaluations
of `--eval_rows` test rows; the median and the spread (min-max) over the repetitions are
reported. A variant that trains (or evaluates) exactly like an earlier one is not run again. Memory is the peak
during the phase: CUDA's allocator peak on a GPU, the process's resident memory on a CPU
(sampled every 10 ms, after returning freed memory to the system). MFU counts the model's FLOPs per
real token (`tunelab.flops.flops_per_token`) against the device's peak: a GPU's published dense peak,
a CPU's measured training-shaped matmul peak (`tunelab.flops.cpu_peak_flops`).
Evaluation variants that score labels are compared with tunelab's predictions on the same
weights: `agreement` should be 100% for an optimization that keeps the results.

Results go to OUT/bench-<workload>-<time>.json and .md (never overwriting earlier ones).
This is a benchmark, not a test: figures depend on the machine and its load.

Modules: `variants` (the ways to train and evaluate), `workloads` (recipe, model, rows and batches),
`measure` (timed phases and peak memory), `results` (figures, JSON, Markdown), `command` (`tunelab bench`).
"""
