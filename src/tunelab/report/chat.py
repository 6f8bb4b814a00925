"""The report of a chat run: held-out perplexity before and after, the eval prompts side by side.

Built from the run directory's files only (run_info.json, config.yaml, train_log.json,
eval/chat/...), as the same blocks the NLI report uses, so Markdown, HTML and PDF come out of
tunelab.report's renderers and say the same thing. `tunelab report RUN_DIR` picks this report
for runs whose run_info.json says `"task": "chat"`.
"""

from __future__ import annotations

import json
from pathlib import Path

from matplotlib.figure import Figure

from tunelab import __version__
from tunelab.errors import TunelabError
from tunelab.report.common import (
    MODEL_LABELS,
    NOT_RECORDED,
    PRODUCER,
    Run,
    load_run,
    mapping_blocks,
    memory_blocks,
    monitoring_blocks,
    parameter_blocks,
    read_json,
    timing_blocks,
    training_blocks,
)
from tunelab.report.figures import new_figure
from tunelab.report.render import write_documents
from tunelab.rundir import MODELS
from tunelab.stats import CONFIDENCE, RESAMPLES, SEED, perplexity_intervals


def is_chat_run(run_dir: str | Path) -> bool:
    """True when run_info.json marks a chat run (or, before it exists, eval/chat/ is there)."""
    run_dir = Path(run_dir)
    try:
        return json.loads((run_dir / "run_info.json").read_text(encoding="utf-8")).get("task") == "chat"
    except (OSError, ValueError, AttributeError):
        return (run_dir / "eval" / "chat").is_dir()


def write_chat_report(run_dir: str | Path) -> Path:
    """Write RUN_DIR/report/{report.md, report.html, report.pdf, *.png}; return the report.md path."""
    run_dir = Path(run_dir)
    run = load_run(run_dir)
    evaluation = _load_evaluation(run_dir / "eval" / "chat")
    figures: dict[str, Figure] = {}
    blocks = chat_report_blocks(run, evaluation, figures)
    return write_documents(blocks, figures, run_dir / "report")


def _load_evaluation(eval_dir: Path) -> dict:
    evaluation = {}
    for name in MODELS:
        path = eval_dir / name / "perplexity.json"
        if not path.is_file():
            raise TunelabError(f"{path} is missing: it is written by {PRODUCER} (baseline and evaluate stages)")
        perplexity = read_json(path, dict)
        if "perplexity" not in perplexity:
            raise TunelabError(f"{path} lacks perplexity; rerun {PRODUCER}")
        replies_path = eval_dir / name / "replies.json"
        replies = read_json(replies_path, list) if replies_path.is_file() else None
        evaluation[name] = {"perplexity": perplexity, "replies": replies}
    return evaluation


def chat_report_blocks(run: Run, evaluation: dict, figures: dict[str, Figure]) -> list[tuple]:
    info = run.info
    figures["perplexity.png"] = _perplexity_figure(evaluation)
    return [
        ("heading", 1, f"tunelab chat report: {info.get('recipe', NOT_RECORDED)} "
                       f"({info.get('model', NOT_RECORDED)})"),
        ("paragraph", f"Pretrained baseline versus the fine-tuned model on the same held-out conversations "
                      f"(dataset {info.get('dataset', NOT_RECORDED)}, language "
                      f"{info.get('language') or 'any'}). Run {run.directory.name}, started "
                      f"{info.get('started', NOT_RECORDED)}; report by tunelab {__version__}."),
        ("heading", 2, "Headline"),
        ("list", _headline(evaluation)),
        ("image", "perplexity.png", "held-out perplexity on assistant tokens, baseline and fine-tuned"),
        *_format_blocks(info.get("chat_format")),
        *_reply_blocks(evaluation),
        *training_blocks(run, figures),
        *parameter_blocks(info.get("parameters") or {}),
        *timing_blocks(info.get("timings_s") or {}),
        *memory_blocks(info.get("memory") or {}),
        *monitoring_blocks(run, figures),
        *mapping_blocks("Hardware", info.get("hardware")),
        *mapping_blocks("Software", info.get("software")),
        ("heading", 2, "Config (config.yaml)"),
        ("code", run.config) if run.config is not None else ("paragraph", f"config.yaml {NOT_RECORDED}."),
    ]


def _headline(evaluation: dict) -> list[str]:
    before, after = (evaluation[name]["perplexity"] for name in MODELS)
    change = 100 * (after["perplexity"] - before["perplexity"]) / before["perplexity"]
    lines = [
        f"held-out perplexity (assistant tokens only): {before['perplexity']:.2f} → {after['perplexity']:.2f} "
        f"({change:+.1f}%)",
        _interval_line(before, after),
        f"mean negative log-likelihood per assistant token: {before['mean_nll']:.3f} → {after['mean_nll']:.3f} nats",
        f"scored: {before.get('conversations', NOT_RECORDED)} held-out conversations, "
        f"{before.get('assistant_tokens', 0):,} assistant tokens (each reply's end-of-turn token included)",
    ]
    replies = {name: evaluation[name]["replies"] for name in MODELS}
    if all(replies.values()):
        stopped = ", ".join(f"{MODEL_LABELS[name]} {sum(bool(r.get('stopped')) for r in replies[name])} of "
                            f"{len(replies[name])}" for name in MODELS)
        lines.append(f"eval prompts answered up to the end-of-turn token (not cut at max_new_tokens): {stopped}")
    return lines


def _interval_line(before: dict, after: dict) -> str:
    """The paired bootstrap interval of the perplexity change over the held-out conversations."""
    if "per_conversation" not in before or "per_conversation" not in after:
        return f"interval of the change: per-conversation losses {NOT_RECORDED} (perplexity.json from an older run)"
    tokens = before["per_conversation"]["assistant_tokens"]
    intervals = perplexity_intervals(before["per_conversation"]["nll_sum"], after["per_conversation"]["nll_sum"],
                                     tokens)
    change, relative = intervals["change"], intervals["relative_change"]
    return (f"{CONFIDENCE:.0%} interval of the change: {change['low']:+.2f} to {change['high']:+.2f} "
            f"({100 * relative['low']:+.1f}% to {100 * relative['high']:+.1f}%), by a paired bootstrap over the "
            f"{len(tokens):,} held-out conversations ({RESAMPLES:,} resamples, seed {SEED}); "
            + ("it excludes no change" if change["low"] > 0 or change["high"] < 0 else "it includes no change"))


def _format_blocks(chat_format: dict | None) -> list[tuple]:
    if not chat_format:
        return [("heading", 2, "Chat format"), ("paragraph", f"Chat format {NOT_RECORDED}.")]
    template = chat_format.get("chat_template")
    described = {"model": "the model's own chat template", "tunelab": "tunelab's template (the model has none)"}
    return [("heading", 2, "Chat format"), ("list", [
        f"template: {described.get(template, template)}",
        f"end-of-turn token: {chat_format.get('end_of_turn')!r} (id {chat_format.get('end_of_turn_id')}), "
        "in the labels of every assistant turn",
        f"pad token: {chat_format.get('pad_token')!r} (id {chat_format.get('pad_token_id')})"
        + (", added for training" if chat_format.get("pad_token_added") else ""),
        "loss: assistant turns only; prompts (system and user turns, role headers) are masked out",
    ])]


def _reply_blocks(evaluation: dict) -> list[tuple]:
    blocks: list[tuple] = [("heading", 2, "Eval prompts, side by side")]
    baseline, finetuned = (evaluation[name]["replies"] for name in MODELS)
    if not baseline or not finetuned:
        return blocks + [("paragraph", f"Replies {NOT_RECORDED} (eval/chat/<model>/replies.json).")]
    blocks.append(("paragraph", "Greedy decoding of one user message, by each model. A reply marked [cut] hit "
                                "max_new_tokens before the model ended its turn."))
    rows = [[b["prompt"], _reply(b), _reply(f)] for b, f in zip(baseline, finetuned)]
    return blocks + [("table", ["prompt", "baseline", "fine-tuned"], rows)]


def _reply(reply: dict) -> str:
    text = reply.get("reply") or "(empty)"
    return text if reply.get("stopped") else f"{text} [cut]"


def _perplexity_figure(evaluation: dict) -> Figure:
    figure = new_figure((5, 3.2))
    axes = figure.add_subplot()
    values = [evaluation[name]["perplexity"]["perplexity"] for name in MODELS]
    bars = axes.bar([MODEL_LABELS[name] for name in MODELS], values, color=["#9e9e9e", "#1f77b4"], width=0.5)
    axes.bar_label(bars, fmt="{:.2f}", fontsize=9)
    axes.set_ylim(0, max(values) * 1.2)
    axes.set_ylabel("perplexity")
    axes.set_title("Held-out perplexity, assistant tokens (lower is better)")
    return figure
