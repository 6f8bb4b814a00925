"""The recipe parser: YAML then command-line overrides, typed values, helpful errors."""

import pytest

from tunelab.config import parse_recipe, recipe_to_dict
from tunelab.errors import TunelabError
from tunelab.nli.config import NLIRecipe

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
    (["--run_name", "../elsewhere"], "plain folder name"),
    (["--label_words", "yes,no"], "label_words needs 3 words"),
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
