"""What tests/test_docs.py checks in README.md and docs/*.md: relative links and their anchors, and every quoted
shell command that runs tunelab, a recipe, accelerate, a launch or Slurm script or a benchmark script: the files
it names exist and each `--flag` is one the command accepts.

Whatever the pages say, they are parsed as they are: code blocks (fenced or indented) and inline code spans.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import io
import re
import runpy
import shlex
from pathlib import Path

import yaml

from tunelab.cli import build_parser
from tunelab.config import _split_argv
from tunelab.settings_reference import recipe_families

ROOT = Path(__file__).resolve().parents[1]
FENCE = re.compile(r"^(\s*)(```|~~~)")
LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
INLINE_CODE = re.compile(r"(`+)(.+?)\1")
HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
SCHEMES = ("http://", "https://", "mailto:", "ftp://")


def pages() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]


# ---------------------------------------------------------------------------- Markdown structure

def split_markdown(text: str) -> tuple[list[str], list[str]]:
    """(prose lines, code-block lines): fenced blocks, and blocks indented by 4 spaces after a blank line."""
    prose, code = [], []
    fence, in_indented, previous_blank = None, False, True
    for line in text.splitlines():
        opened = FENCE.match(line)
        if fence is not None:
            fence = None if opened and opened.group(2) == fence else fence
            if fence is not None:
                code.append(line)
        elif opened:
            fence = opened.group(2)
        elif not line.strip():
            previous_blank = True
        else:
            in_indented = line.startswith(("    ", "\t")) and (in_indented or previous_blank)
            (code if in_indented else prose).append(line)
            previous_blank = False
    return prose, code


def inline_code(prose: list[str]) -> list[str]:
    return [match.group(2).strip() for line in prose for match in INLINE_CODE.finditer(line)]


def anchors(path: Path) -> set[str]:
    """GitHub's anchors of the headings in a Markdown file (lowercase, punctuation dropped, spaces as '-',
    repeated ones numbered)."""
    prose, _ = split_markdown(path.read_text(encoding="utf-8"))
    seen: dict[str, int] = {}
    found = set()
    for line in prose:
        heading = HEADING.match(line)
        if not heading:
            continue
        text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading.group(2))
        slug = re.sub(r"[^\w\- ]", "", text.lower()).replace(" ", "-")
        found.add(slug if slug not in seen else f"{slug}-{seen[slug]}")
        seen[slug] = seen.get(slug, 0) + 1
    return found


def broken_links(page: Path) -> list[str]:
    """Each relative link of `page` whose file, or whose #anchor in a Markdown file, does not exist."""
    prose, _ = split_markdown(page.read_text(encoding="utf-8"))
    text = INLINE_CODE.sub("", "\n".join(prose))
    problems = []
    for target in LINK.findall(text):
        if target.startswith(SCHEMES):
            continue
        file_part, _, anchor = target.partition("#")
        path = (page.parent / file_part).resolve() if file_part else page
        if not path.exists():
            problems.append(f"{page.name}: link {target} names a file that does not exist")
        elif anchor and path.suffix == ".md" and anchor not in anchors(path):
            problems.append(f"{page.name}: link {target}: no heading with anchor #{anchor} in {path.name}")
    return problems


# ---------------------------------------------------------------------------- quoted commands

def commands(page: Path) -> list[tuple[list[str], bool]]:
    """The shell commands quoted in `page`, each split into words, and whether it is a whole command (from a
    code block) rather than inline code naming one, which may leave out its arguments. Continuation lines
    are joined, comments, `$ ` prompts, redirections and a synopsis' [brackets] dropped, `&&` chains split."""
    prose, code = split_markdown(page.read_text(encoding="utf-8"))
    blocks = "\n".join(code).replace("\\\n", " ").splitlines()
    lines = [(line, True) for line in blocks] + [(span, False) for span in inline_code(prose)]
    found = []
    for line, whole in lines:
        try:
            words = shlex.split(line.strip().removeprefix("$ "), comments=True)
        except ValueError:  # not shell: unbalanced quotes in prose or YAML
            continue
        found += [(segment, whole) for segment in _segments(words) if command_kind(segment)]
    return found


def _segments(words: list[str]) -> list[list[str]]:
    """The commands of a chain, without environment assignments, redirections and [ ] around options."""
    segments, current, drop_next = [], [], False
    for word in words:
        if drop_next:
            drop_next = False
        elif word in ("&&", "||", ";", "|"):
            segments.append(current)
            current = []
        elif word in (">", ">>", "<", "2>", "2>&1"):
            drop_next = word != "2>&1"
        elif current:
            current.append(word.strip("[]") if word.startswith("[") or word.endswith("]") else word)
        elif not re.match(r"^[A-Z_][A-Z0-9_]*=", word):
            current.append(word)
    return [segment for segment in [*segments, current] if segment]


def program(word: str) -> str:
    return word.rsplit("/", 1)[-1] if word.startswith((".venv/", "/")) else word


def command_kind(words: list[str]) -> str | None:
    """Which of the commands this test knows `words` runs, or None."""
    first = program(words[0])
    if first == "tunelab":
        return "tunelab"
    if first == "accelerate" and words[1:2] == ["launch"]:
        return "accelerate"
    if first in ("python", "python3") and len(words) > 1 and words[1].endswith(".py"):
        return "python"
    if first in ("sbatch",):
        return "sbatch"
    if re.match(r"^(\./)?(launch|recipes|benchmarks)/\S+\.(sh|py)$", first):
        return "script"
    return None


def problems_of(command: list[str], whole: bool) -> list[str]:
    """What is wrong with one quoted command: files under the repository's folders that do not exist, flags
    the command does not take. Inline code that does not parse as a whole command only names one."""
    problems = [f"{word} does not exist" for word in command if names_missing_file(word)]
    if command_kind(command) == "sbatch" and not whole and not any(word.endswith(".sbatch") for word in command):
        return problems  # inline code naming sbatch itself, not a job line
    checks = {"tunelab": _tunelab_flags, "accelerate": _accelerate_flags, "python": _python_flags,
              "sbatch": _sbatch_flags, "script": _script_flags}
    try:
        problems += checks[command_kind(command)]([word for word in command if word not in ("--help", "-h")])
    except SystemExit:
        problems += ["the command line does not parse"] if whole else []
    return [f"`{shlex.join(command)}`: {problem}" for problem in problems]


def repository_folders() -> set[str]:
    return {p.name for p in ROOT.iterdir() if p.is_dir() and not p.name.startswith(".") and p.name != "runs"}


def names_missing_file(word: str) -> bool:
    """A word that names a path inside one of the repository's folders (recipes/..., accelerate_configs/...)
    that does not exist; `--flag=path` counts too."""
    path = word.split("=", 1)[-1] if word.startswith("--") else word
    if "/" not in path or "*" in path or "<" in path:
        return False
    return path.split("/", 1)[0] in repository_folders() and not (ROOT / path).exists()


def recipe_flag_problems(recipe: str, argv: list[str]) -> list[str]:
    """`--name` words of `argv`, and keys of a `--config` YAML file in the repository, that are not settings of
    the recipe file (or, for a placeholder such as RECIPE, of any recipe family)."""
    settings = recipe_settings(recipe)
    config_file, overrides = _split_argv(argv, [])
    problems = [f"--{name} is not a setting of {recipe}" for name in overrides if name not in settings | {"help"}]
    if config_file and (ROOT / config_file).is_file():
        keys = yaml.safe_load((ROOT / config_file).read_text(encoding="utf-8")) or {}
        problems += [f"{config_file}: {key} is not a setting of {recipe}" for key in keys if key not in settings]
    return problems


@functools.cache
def recipe_settings(recipe: str) -> frozenset[str]:
    if (ROOT / recipe).is_file() and recipe.endswith(".py"):
        return frozenset(runpy.run_path(str(ROOT / recipe))["RECIPE"].__dataclass_fields__)
    return frozenset(name for family in recipe_families() for name in family.__dataclass_fields__)


def _quiet_parse(parse, *args):
    """argparse's result; its error message goes nowhere (the caller reports the command)."""
    with contextlib.redirect_stderr(io.StringIO()), contextlib.redirect_stdout(io.StringIO()):
        return parse(*args)


def _tunelab_flags(command: list[str]) -> list[str]:
    parser = build_parser()
    subcommands = next(action for action in parser._actions if isinstance(action, argparse._SubParsersAction))
    if len(command) == 1:
        return []  # the command's name in prose
    name = command[1]
    if name not in ("run", "plan", "launch", "run-dir", "sweep", "bench"):
        options = subcommands.choices[name]._option_string_actions if name in subcommands.choices else {}
        unknown = [f"tunelab {name} has no option {word}" for word in command[2:]
                   if word.startswith("-") and word.split("=", 1)[0] not in options]
        return unknown if name in subcommands.choices else [f"tunelab has no command {name}"]
    if name == "sweep":
        from tunelab.sweep.grid import parse_sweep_args

        sweep, overrides = _quiet_parse(parse_sweep_args, command[2:])
        return recipe_flag_problems(sweep.recipe, overrides)
    if name == "bench":
        from tunelab.bench.command import parse_args

        _quiet_parse(parse_args, command[2:])
        return []
    args, rest = _quiet_parse(parser.parse_known_args, command[1:])
    return recipe_flag_problems(args.recipe, rest)


def _accelerate_flags(command: list[str]) -> list[str]:
    from accelerate.commands.launch import launch_command_parser

    args = _quiet_parse(launch_command_parser().parse_args, command[2:])
    return recipe_flag_problems(args.training_script, args.training_script_args)


def _python_flags(command: list[str]) -> list[str]:
    return _script_flags(command[1:])


def _sbatch_flags(command: list[str]) -> list[str]:
    scripts = [i for i, word in enumerate(command) if word.endswith(".sbatch")]
    return recipe_flag_problems("RECIPE", command[scripts[0] + 1:]) if scripts else ["no .sbatch script named"]


def _script_flags(command: list[str]) -> list[str]:
    """A recipe file takes its settings; launch/*.sh pass theirs to a recipe; any other Python script
    declares each flag it takes as a string in its source (argparse)."""
    script = command[0].removeprefix("./")
    if script.startswith("recipes/"):
        return recipe_flag_problems(script, command[1:])
    if script.startswith("launch/") and len(command) > 1:
        return recipe_flag_problems(command[1], command[2:])
    if not (ROOT / script).is_file():
        return []  # reported as a missing file
    source = (ROOT / script).read_text(encoding="utf-8")
    flags = {word.split("=", 1)[0] for word in command[1:] if word.startswith("--")}
    return [f"{script} does not declare {flag}" for flag in sorted(flags)
            if f'"{flag}"' not in source and f"'{flag}'" not in source]


def all_problems() -> tuple[list[str], int]:
    """Every problem in every page's quoted commands, and how many commands were checked."""
    checked = [(page, command, whole) for page in pages() for command, whole in commands(page)]
    return [f"{page.name}: {problem}" for page, command, whole in checked
            for problem in problems_of(command, whole)], len(checked)

