"""The `tunelab` command: run a recipe or a sweep, rebuild a report, compare evaluations, benchmark, prepare the offline default.

Errors a user can fix (TunelabError) print as one line and exit with status 2; `--debug`
shows the traceback instead. A run stopped by a signal after saving a checkpoint exits with 3.
"""

from __future__ import annotations

import argparse
import sys

from tunelab.config import load_recipe
from tunelab.console import quiet_third_party
from tunelab.errors import TunelabError, exit_on_error

# A run folder's config.yaml never turns this on: only the command that loads the run does.
TRUST_HELP = "run the model repository's own Python code (only for repositories you trust); a run's config.yaml " \
             "never turns this on"


def build_parser() -> argparse.ArgumentParser:
    """The `tunelab` command line; the commands that take recipe settings leave them to the recipe."""
    parser = argparse.ArgumentParser(prog="tunelab", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    # run and plan leave --help to the recipe, which lists its settings
    run = commands.add_parser("run", help="run a recipe file: tunelab run recipes/phi2_snli.py [--field value ...]",
                              add_help=False)
    run.add_argument("recipe")
    launch = commands.add_parser("launch", help="accelerate launch a recipe with a hardware profile's config: "
                                                "tunelab launch RECIPE [--profile auto|cpu|a40|...] [--field value ...]")
    launch.add_argument("recipe")
    plan = commands.add_parser("plan", help="print the resolved run plan without training", add_help=False)
    plan.add_argument("recipe")
    run_dir = commands.add_parser("run-dir", help="print the run directory a recipe with these settings writes to")
    run_dir.add_argument("recipe")
    report = commands.add_parser("report", help="rebuild the report of a run directory")
    report.add_argument("run_dir")
    comparison = commands.add_parser("compare", help="compare two evaluations of the same rows: tunelab compare "
                                                     "BASELINE_DIR FINETUNED_DIR [--out DIR]")
    comparison.add_argument("baseline_dir")
    comparison.add_argument("finetuned_dir")
    comparison.add_argument("--out", help="output folder (default: FINETUNED_DIR/comparison for a run directory, "
                                          "else ./comparison)")
    merge = commands.add_parser("merge", help="fold a chat run's LoRA adapter into the base weights (RUN_DIR/merged)")
    merge.add_argument("run_dir")
    merge.add_argument("--output", help="output folder (default: RUN_DIR/merged)")
    merge.add_argument("--dtype", default="float32", choices=("float32", "bfloat16", "float16"))
    merge.add_argument("--overwrite", action="store_true", help="replace a merged model tunelab wrote there before")
    merge.add_argument("--trust_remote_code", action="store_true", help=TRUST_HELP)
    chat = commands.add_parser("chat", help="chat on the terminal with a chat run's model, streamed, on CPU")
    chat.add_argument("run_dir", help="a chat run directory (its merged model, else base + adapter) or a model folder")
    chat.add_argument("--use", default="auto", choices=("auto", "merged", "adapter"))
    chat.add_argument("--max_new_tokens", type=int, default=256)
    chat.add_argument("--temperature", type=float, default=0.7, help="0 for greedy decoding")
    chat.add_argument("--system", help="a system message to start every conversation with")
    chat.add_argument("--threads", type=int, help="CPU threads for PyTorch")
    chat.add_argument("--trust_remote_code", action="store_true", help=TRUST_HELP)
    commands.add_parser("bench", help="training and evaluation throughput and memory vs the notebooks' approach "
                                      "(tunelab bench --help)", add_help=False)
    commands.add_parser("sweep", help="run every combination of comma-separated settings, here or as a Slurm job "
                                      "array, then the sweep report (tunelab sweep --help)", add_help=False)
    sweep_report = commands.add_parser("sweep-report", help="rebuild the report of a sweep: tunelab sweep-report SWEEP_DIR")
    sweep_report.add_argument("sweep_dir")
    init = commands.add_parser("init", help="copy the recipes, accelerate configs and Slurm templates into DIR "
                                            "to edit there (tunelab then uses them when run from DIR)")
    init.add_argument("dir")
    embedded = commands.add_parser("prepare-embedded", help="convert the offline default model once (smollm2-135m)")
    embedded.add_argument("name", nargs="?", default="smollm2-135m")
    push = commands.add_parser("push", help="upload a finished run's adapter (or model) folder and model card to "
                                            "the Hugging Face Hub: tunelab push RUN_DIR [--hub_model_id OWNER/NAME]")
    push.add_argument("run_dir")
    push.add_argument("--hub_model_id", help="the Hub repository (default: the run's hub_model_id)")
    push.add_argument("--public", action="store_true", help="create the repository public (default: the run's "
                                                            "hub_private, else private)")
    settings = commands.add_parser("settings", help="every recipe setting by family and group, with its type, "
                                                    "default and help")
    settings.add_argument("--markdown", action="store_true", help="as the Markdown page docs/settings.md")
    return parser


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    quiet_third_party(debug="--debug" in argv)
    args, rest = build_parser().parse_known_args(argv)

    with exit_on_error(debug="--debug" in rest):
        if args.command in ("run", "plan"):
            from tunelab.launch.recipe import run_file

            run_file(args.recipe, [*rest, *(["--dry_run"] if args.command == "plan" else [])])
            return
        if args.command == "launch":
            from tunelab.launch.accelerate import launch_recipe

            launch_recipe(args.recipe, rest)
            return
        if args.command == "bench":
            from tunelab.bench.command import main as bench

            bench(rest)
            return
        if args.command == "sweep":
            from tunelab.sweep.run import sweep_command

            print(sweep_command([arg for arg in rest if arg != "--debug"]))
            return
        if args.command == "run-dir":
            print(load_recipe(args.recipe, rest).run_dir)
            return
        if rest:
            raise TunelabError(f"unexpected arguments {' '.join(rest)} for 'tunelab {args.command}'")
        if args.command == "report":
            from tunelab.report import write_report

            print(write_report(args.run_dir))
        elif args.command == "compare":
            from tunelab.report.compare import compare

            print(compare(args.baseline_dir, args.finetuned_dir, args.out))
        elif args.command == "sweep-report":
            from tunelab.sweep.report import write_sweep_report

            print(write_sweep_report(args.sweep_dir))
        elif args.command == "merge":
            from tunelab.chat.serve import merge_adapter

            print(merge_adapter(args.run_dir, args.output, args.dtype, args.overwrite, args.trust_remote_code))
        elif args.command == "chat":
            from tunelab.chat.serve import chat_command

            chat_command(args.run_dir, args.use, args.max_new_tokens, args.temperature, args.system, args.threads,
                         args.trust_remote_code)
        elif args.command == "init":
            from tunelab.resources import init_project

            copied = init_project(args.dir)
            print(f"Copied {len(copied)} files into {args.dir}: recipes/, accelerate_configs/, slurm/")
        elif args.command == "prepare-embedded":
            from tunelab.embedded import embedded_model_path

            print(embedded_model_path(args.name))
        elif args.command == "push":
            from tunelab.hub import push_run

            push_run(args.run_dir, args.hub_model_id, False if args.public else None)
        elif args.command == "settings":
            from tunelab.settings_reference import settings_markdown, settings_text

            print(settings_markdown() if args.markdown else settings_text(), end="")


if __name__ == "__main__":
    main()
