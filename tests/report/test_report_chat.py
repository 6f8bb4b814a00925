"""The chat report's interval of the perplexity change, from a synthetic run directory (no model needed)."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

from tunelab.report import write_report

NLL = {"baseline": [30.0, 50.0, 20.0, 44.0, 35.0, 61.0], "finetuned": [21.0, 37.0, 15.0, 30.0, 26.0, 40.0]}
TOKENS = [10, 20, 8, 16, 12, 22]


def make_chat_run(root: Path, per_conversation: bool = True) -> Path:
    (root / "run_info.json").write_text(json.dumps({"task": "chat", "recipe": "phi2_oasst1"}))
    for model, nll in NLL.items():
        mean = sum(nll) / sum(TOKENS)
        perplexity = {"perplexity": math.exp(mean), "mean_nll": mean, "assistant_tokens": sum(TOKENS),
                      "conversations": len(TOKENS)}
        if per_conversation:
            perplexity["per_conversation"] = {"nll_sum": nll, "assistant_tokens": TOKENS}
        (root / "eval" / "chat" / model).mkdir(parents=True)
        (root / "eval" / "chat" / model / "perplexity.json").write_text(json.dumps(perplexity))
    return root


def test_chat_report_gives_an_interval_of_the_perplexity_change(tmp_path):
    text = write_report(make_chat_run(tmp_path)).read_text(encoding="utf-8")
    match = re.search(r"95% interval of the change: ([-+][\d.]+) to ([-+][\d.]+) \(([-+][\d.]+)% to ([-+][\d.]+)%\), "
                      r"by a paired bootstrap over the 6 held-out conversations \(2,000 resamples, seed 0\); "
                      r"it excludes no change", text)
    assert match, text[:2000]
    change = math.exp(sum(NLL["finetuned"]) / sum(TOKENS)) - math.exp(sum(NLL["baseline"]) / sum(TOKENS))
    low, high = float(match.group(1)), float(match.group(2))
    assert low <= change <= high < 0  # every conversation improved: the whole interval is a drop


def test_older_chat_runs_say_the_losses_were_not_recorded(tmp_path):
    text = write_report(make_chat_run(tmp_path, per_conversation=False)).read_text(encoding="utf-8")
    assert "interval of the change: per-conversation losses not recorded" in text
