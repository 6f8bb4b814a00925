"""The documentation cannot drift from the code: the generated settings page, relative links, quoted commands."""

from __future__ import annotations

import dataclasses
import gc
import textwrap

from docs_check import ROOT, all_problems, broken_links, commands, pages, problems_of
from tunelab.cli import main
from tunelab.config import Recipe
from tunelab.settings_reference import COMMAND, recipe_families, settings_markdown, settings_text

SETTINGS_PAGE = ROOT / "docs" / "settings.md"


def test_the_settings_page_is_the_code_s_settings():
    assert SETTINGS_PAGE.read_text(encoding="utf-8") == settings_markdown(), (
        f"docs/settings.md differs from the settings declared in the code: regenerate it with `{COMMAND}`")


def test_tunelab_settings_prints_every_family_and_setting(capsys):
    main(["settings", "--markdown"])
    page = capsys.readouterr().out
    assert page == settings_markdown()
    for family in ("Recipe", "ClassificationRecipe", "NLIRecipe", "ChatRecipe"):
        assert f"## {family}" in page
    assert "| `--learning_rate` | `float` | `0.0002` | peak learning rate |" in page
    assert "| `--bnb_4bit_quant_storage` | `str \\| None` | `none` |" in page  # a pipe stays inside its cell
    # ChatRecipe changes the base's default: both are shown
    assert "| `--save_strategy` | `str` | `steps` (`epoch` in Recipe) |" in page
    main(["settings"])
    text = capsys.readouterr().out
    assert ("--label_words list[str] | None (default: entailment,neutral,contradiction; none in "
            "ClassificationRecipe)") in text


def test_a_new_recipe_family_and_its_settings_appear_without_edits():
    @dataclasses.dataclass
    class SummaryRecipe(Recipe):
        """A summarisation recipe."""

        summary_words: int = dataclasses.field(default=60, metadata={"group": "data", "help": "words per summary"})
        seed: int = dataclasses.field(default=7, metadata={"group": "run", "help": "the seed"})

    SummaryRecipe.__module__ = "tunelab.summaries.config"
    try:
        assert SummaryRecipe in recipe_families()
        page = settings_markdown()
        assert "## SummaryRecipe, beside Recipe\n\nA summarisation recipe." in page
        assert "| `--summary_words` | `int` | `60` | words per summary |" in page
        assert "| `--seed` | `int` | `7` (`42` in Recipe) | the seed |" in page
        assert "--summary_words int (default: 60)" in settings_text()
    finally:
        del SummaryRecipe
        gc.collect()
    assert "SummaryRecipe" not in settings_markdown()


def test_every_relative_link_and_anchor_resolves():
    assert [page.name for page in pages()][:1] == ["README.md"]
    problems = [problem for page in pages() for problem in broken_links(page)]
    assert not problems, "\n".join(problems)


def test_the_link_check_finds_missing_files_and_anchors(tmp_path):
    (tmp_path / "other.md").write_text("# Other page\n\n## Same\n\n## Same\n")
    page = tmp_path / "page.md"
    page.write_text(textwrap.dedent("""\
        # A page

        ## How sure is a result?

        [ok](#how-sure-is-a-result) [ok](other.md#same-1) [ok](other.md) ![ok](other.md)
        [gone](missing.md) [bad anchor](#how-sure) [bad anchor](other.md#same-2) [web](https://example.com/x)
        `[not a link](missing-in-code.md)`

            [not a link either](missing-in-block.md)
        """))
    assert broken_links(page) == [
        "page.md: link missing.md names a file that does not exist",
        "page.md: link #how-sure: no heading with anchor #how-sure in page.md",
        "page.md: link other.md#same-2: no heading with anchor #same-2 in other.md",
    ]


def test_every_quoted_command_names_files_and_flags_that_exist():
    problems, checked = all_problems()
    assert not problems, "\n".join(problems)
    assert checked > 20, "the README's commands were not found"


def test_the_command_check_finds_rotten_files_and_flags(tmp_path):
    page = tmp_path / "page.md"
    page.write_text(textwrap.dedent("""\
        Run `tunelab run recipes/phi2_snli.py --learning_rat 1e-4` or `tunelab compare` (a name only).

            .venv/bin/accelerate launch --config_fil accelerate_configs/cpu.yaml recipes/phi2_snli.py
            accelerate launch --config_file accelerate_configs/gone.yaml recipes/phi2_snli.py --lora_rank 8
            tunelab sweep recipes/phi2_oasst1.py --seed 1,2 --head classifier --slurm   # chat has no head
            tunelab merge RUN_DIR [--dtype float32|bfloat16] [--outptu DIR]
            tunelab plan RECIPE --precision bf16 --no_such_setting 1 && tunelab bench --workloads x
            python benchmarks/real_snli_split.py ROWS OUT --folds 2
            sbatch --time=01:00:00 slurm/single_node.sbatch --learning_rate 1e-4 --learnign_rate 2
            launch/train.sh recipes/gone.py --profile auto
            [tunelab] Report: runs/x/report/report.md

            tunelab run recipes/phi2_oasst1.py --config recipes/embedded_mnli.yaml   # an NLI file for chat

        ```bash
        FOO=1 tunelab run recipes/gpt2_large_mnli.py --train_sample 10 \\
            --test_sampel 5 > out.log
        ```
        """))
    problems = [problem for command, whole in commands(page) for problem in problems_of(command, whole)]
    expected = [
        "--learning_rat is not a setting of recipes/phi2_snli.py",
        "--config_fil accelerate_configs/cpu.yaml recipes/phi2_snli.py`: the command line does not parse",
        "accelerate_configs/gone.yaml does not exist",
        "--lora_rank is not a setting of recipes/phi2_snli.py",
        "--head is not a setting of recipes/phi2_oasst1.py",
        "tunelab merge has no option --outptu",
        "--no_such_setting is not a setting of RECIPE",
        "`tunelab bench --workloads x`: the command line does not parse",
        "benchmarks/real_snli_split.py does not declare --folds",
        "--learnign_rate is not a setting of RECIPE",
        "recipes/gone.py does not exist",
        "--test_sampel is not a setting of recipes/gpt2_large_mnli.py",
        "recipes/embedded_mnli.yaml: train_sample is not a setting of recipes/phi2_oasst1.py",
        "recipes/embedded_mnli.yaml: test_sample is not a setting of recipes/phi2_oasst1.py",
    ]
    for message in expected:
        assert sum(message in problem for problem in problems) == 1, (message, problems)
    assert len(problems) == len(expected), problems
