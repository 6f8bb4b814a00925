"""The recipe parser: YAML then command-line overrides, typed values, helpful errors."""

import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tunelab.chat.config import ChatRecipe
from tunelab.config import GROUPS, SettingsError, parse_recipe, recipe_to_dict
from tunelab.errors import TunelabError
from tunelab.nli.config import NLIRecipe

ROOT = Path(__file__).resolve().parents[1]
DEFAULTS = NLIRecipe(run_name="demo", learning_rate=2.5e-5, lora_r=32)


def test_command_line_overrides_are_typed():
    recipe = parse_recipe(DEFAULTS, ["--learning_rate", "1e-4", "--lora_r=8", "--load_in_4bit", "false",
                                     "--lora_target_modules", "q_proj, v_proj", "--train_size", "none", "--overwrite"])
    assert recipe.learning_rate == 1e-4
    assert recipe.lora_r == 8
    assert recipe.load_in_4bit is False
    assert recipe.lora_target_modules == ["q_proj", "v_proj"]
    assert recipe.train_size is None
    assert recipe.overwrite is True
    assert DEFAULTS.learning_rate == 2.5e-5, "the recipe's defaults are never mutated"


def test_yaml_then_command_line(tmp_path):
    config = tmp_path / "run.yaml"
    config.write_text("learning_rate: 3.0e-4\nnum_train_epochs: 2\nlora_target_modules: [fc1, fc2]\n")
    recipe = parse_recipe(DEFAULTS, ["--config", str(config), "--num_train_epochs", "4"])
    assert recipe.learning_rate == 3e-4
    assert recipe.num_train_epochs == 4
    assert recipe.lora_target_modules == ["fc1", "fc2"]


@pytest.mark.parametrize("argv, message", [
    (["--learning_rat", "1e-4"], "did you mean 'learning_rate'"),
    (["--lora_rank", "8"], "did you mean 'lora_r'"),
    (["--lora_r", "eight"], "lora_r must be a whole number"),
    (["--learning_rate", "-1"], "learning_rate must be positive"),
    (["--lora_r", "0"], "lora_r must be at least 1"),
    (["--lora_dropout", "1.0"], "lora_dropout must be in [0, 1)"),
    (["--precision", "fp8"], "precision must be one of"),
    (["--attn_implementation", "flash"], "attn_implementation must be one of auto, sdpa, eager, flash_attention_2"),
    (["--run_name", "../elsewhere"], "plain folder name"),
    (["--label_words", "yes,no"], "label_words needs 3 words"),
    (["--neftune_noise_alpha", "0"], "neftune_noise_alpha must be > 0 (or none), not 0.0"),
    (["--loraplus_lr_ratio", "0.5"], "loraplus_lr_ratio must be at least 1 (or none), not 0.5"),
    (["positional"], "unexpected argument"),
])
def test_bad_settings_name_the_fix(argv, message):
    with pytest.raises(TunelabError) as error:
        parse_recipe(DEFAULTS, argv)
    assert message in str(error.value)
    assert "\n" not in str(error.value)


def test_unknown_yaml_key_is_rejected(tmp_path):
    config = tmp_path / "run.yaml"
    config.write_text("per_device_batch_size: 4\n")
    with pytest.raises(TunelabError, match="did you mean 'per_device_eval_batch_size'|did you mean 'per_device_train_batch_size'"):
        parse_recipe(DEFAULTS, ["--config", str(config)])


def test_bad_yaml_and_missing_file(tmp_path):
    broken = tmp_path / "broken.yaml"
    broken.write_text("learning_rate: [1,\n")
    with pytest.raises(TunelabError, match="not valid YAML"):
        parse_recipe(DEFAULTS, ["--config", str(broken)])
    with pytest.raises(TunelabError, match="cannot read config file"):
        parse_recipe(DEFAULTS, ["--config", str(tmp_path / "missing.yaml")])


def test_saved_config_leaves_out_run_control():
    data = recipe_to_dict(parse_recipe(DEFAULTS, ["--overwrite"]))
    assert "overwrite" not in data and data["run_name"] == "demo" and data["lora_r"] == 32


def test_help_lists_every_setting_by_group_with_the_recipes_values(capsys):
    with pytest.raises(SystemExit) as exit_:
        parse_recipe(DEFAULTS, ["--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    for f in dataclasses.fields(NLIRecipe):
        assert f"  --{f.name} {f.type} (default: " in out and f.metadata["help"] in out, f.name
    assert "  --lora_r int (default: 32)\n      rank of the LoRA matrices" in out, "the recipe's value, not 16"
    assert "  --train_size int | None (default: none)" in out
    assert "  --lora_target_modules list[str] (default: q_proj,k_proj,v_proj,o_proj)" in out
    groups = [line for line in out.splitlines() if line.endswith(":") and not line.startswith(" ")]
    assert groups == ["model:", "method:", "LoRA:", "data:", "optimisation:", "run:"]
    for recipe_class in (NLIRecipe, ChatRecipe):
        for f in dataclasses.fields(recipe_class):
            assert f.metadata.get("group") in GROUPS and f.metadata.get("help"), f"{recipe_class.__name__}.{f.name}"
    assert out.index("--learning_rate") > out.index("optimisation:") > out.index("--max_length")


def test_help_shows_the_values_of_the_config_file_and_command_line(tmp_path, capsys):
    config = tmp_path / "run.yaml"
    config.write_text("learning_rate: 1.0e-3\nlora_r: 8\n")
    with pytest.raises(SystemExit):
        parse_recipe(DEFAULTS, ["--config", str(config), "--lora_r", "4", "--help"])
    out = capsys.readouterr().out
    assert "  --learning_rate float (default: 0.001)" in out and "  --lora_r int (default: 4)" in out
    with pytest.raises(SystemExit):  # a command line that does not parse: the recipe's values
        parse_recipe(DEFAULTS, ["--lora_r", "many", "--help"])
    assert "  --lora_r int (default: 32)" in capsys.readouterr().out


@pytest.mark.parametrize("command", [
    ["python", "recipes/phi2_snli.py", "--help"],
    ["tunelab", "run", "recipes/phi2_snli.py", "--help"],
    ["tunelab", "plan", "recipes/phi2_oasst1.py", "--help"],
])
def test_help_of_every_entry_point(command):
    executable = sys.executable if command[0] == "python" else str(Path(sys.executable).with_name(command[0]))
    result = subprocess.run([executable, *command[1:]], cwd=ROOT, capture_output=True, text=True, timeout=300,
                            env={**os.environ, "PYTHONPATH": str(ROOT / "src")})
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.startswith(f"usage: {command[-2]} [--config FILE.yaml]")
    assert "  --model_name_or_path str (default: microsoft/phi-2)" in result.stdout
    plan = command[1] == "plan"  # tunelab plan is a dry run, and --help shows this command line's values
    assert "\nrun:\n" in result.stdout and f"--dry_run bool (default: {str(plan).lower()})" in result.stdout
    chat = command[-2].endswith("oasst1.py")
    assert ("--eval_prompts list[str]" in result.stdout) == chat and ("--label_words" in result.stdout) != chat


def test_every_problem_is_reported_at_once(tmp_path):
    config = tmp_path / "run.yaml"
    config.write_text("per_device_batch_size: 4\nwarmup_ratio: 2\n")
    argv = ["--config", str(config), "--learning_rat", "1e-4", "--lora_r", "eight", "--lora_dropout", "1.0",
            "--label_words", "yes,no", "positional"]
    with pytest.raises(SettingsError) as error:
        parse_recipe(DEFAULTS, argv)
    lines = str(error.value).splitlines()
    assert lines[0] == "7 problems in the settings:"
    for message in ("unexpected argument 'positional'", "unknown setting 'per_device_batch_size' in " + str(config),
                    "did you mean 'learning_rate'", "lora_r must be a whole number", "lora_dropout must be in [0, 1)",
                    "label_words needs 3 words", "warmup_ratio must be in [0, 1), not 2.0"):
        assert sum(message in line for line in lines[1:]) == 1, message


def test_a_wrong_recipe_exits_with_one_error_message():
    result = subprocess.run([sys.executable, "recipes/phi2_snli.py", "--lora_r", "0", "--train_stride", "0"],
                            cwd=ROOT, capture_output=True, text=True, timeout=300,
                            env={**os.environ, "PYTHONPATH": str(ROOT / "src")})
    assert result.returncode == 2
    assert result.stderr.splitlines() == ["tunelab: error: 2 problems in the settings:",
                                          "  lora_r must be at least 1, not 0",
                                          "  train_stride must be at least 1, not 0"]


def test_settings_are_checked_before_torch_loads():
    """A mistake in the settings (or --help) answers at once: the pipeline, and torch with it, is imported after."""
    for argv in (["--lora_r", "0"], ["--help"]):
        probe = ("import atexit, runpy, sys\n"
                 "atexit.register(lambda: print('loaded:', sorted({'torch', 'transformers'} & set(sys.modules))))\n"
                 f"sys.argv = ['recipes/phi2_snli.py', *{argv!r}]\n"
                 "runpy.run_path(sys.argv[0], run_name='__main__')")
        result = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=60,
                                env={**os.environ, "PYTHONPATH": str(ROOT / "src")})
        assert result.returncode == (2 if argv[0] == "--lora_r" else 0), result.stderr[-2000:]
        assert result.stdout.splitlines()[-1] == "loaded: []", argv
