"""The before/after report of a run, rebuilt purely from the files in its run directory."""

from __future__ import annotations

from pathlib import Path


def write_report(run_dir: str | Path, max_examples: int = 5) -> Path:
    """Write RUN_DIR/report/{report.md, report.html, report.pdf, *.png}; return the report.md path."""
    from tunelab.report.chat import is_chat_run, write_chat_report
    from tunelab.report.nli import write_nli_report

    if is_chat_run(run_dir):
        return write_chat_report(run_dir)
    return write_nli_report(run_dir, max_examples)
