"""The before/after report of a run, rebuilt purely from the files in its run directory."""

from __future__ import annotations

from pathlib import Path


def write_report(run_dir: str | Path, max_examples: int = 5) -> Path:
    """Write RUN_DIR/report/{report.md, report.html, report.pdf, *.png} and the model card (README.md of the
    folder the run saved); return the report.md path."""
    from tunelab.report.card import write_model_card
    from tunelab.report.chat import is_chat_run, write_chat_report
    from tunelab.report.nli import write_nli_report

    report = write_chat_report(run_dir) if is_chat_run(run_dir) else write_nli_report(run_dir, max_examples)
    write_model_card(run_dir)
    return report
