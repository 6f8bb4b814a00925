"""The `tunelab` command: run a recipe, rebuild a report, prepare the offline default.

Errors a user can fix (TunelabError) print as one line and exit with status 2; `--debug`
shows the traceback instead. A run stopped by a signal after saving a checkpoint exits with 3.
"""

from __future__ import annotations

import argparse
import os
import runpy
import sys
from contextlib import contextmanager

from tunelab.errors import TunelabError
from tunelab.interrupts import INTERRUPTED_EXIT_CODE, TrainingInterrupted


@contextmanager
def exit_on_error(debug: bool = False):
    try:
        yield
    except TrainingInterrupted as interrupted:
        if os.environ.get("RANK", "0") == "0":
            print(f"[tunelab] {interrupted}", file=sys.stderr, flush=True)
        sys.exit(INTERRUPTED_EXIT_CODE)
    except TunelabError as error:
        if debug:
            raise
        print(f"tunelab: error: {error}", file=sys.stderr, flush=True)
        sys.exit(2)
    except KeyboardInterrupt:
        print("tunelab: interrupted", file=sys.stderr, flush=True)
        sys.exit(130)


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(prog="tunelab", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="run a recipe file: tunelab run recipes/phi2_snli.py [--field value ...]")
    run.add_argument("recipe")
    report = commands.add_parser("report", help="rebuild the report of a run directory")
    report.add_argument("run_dir")
    embedded = commands.add_parser("prepare-embedded", help="convert the offline default model once (smollm2-135m)")
    embedded.add_argument("name", nargs="?", default="smollm2-135m")
    args, rest = parser.parse_known_args(argv)

    with exit_on_error(debug="--debug" in rest):
        if args.command == "run":
            sys.argv = [args.recipe, *rest]
            runpy.run_path(args.recipe, run_name="__main__")
            return
        if rest:
            raise TunelabError(f"unexpected arguments {' '.join(rest)} for 'tunelab {args.command}'")
        if args.command == "report":
            from tunelab.report import write_report

            print(write_report(args.run_dir))
        elif args.command == "prepare-embedded":
            from tunelab.embedded import embedded_model_path

            print(embedded_model_path(args.name))


if __name__ == "__main__":
    main()
