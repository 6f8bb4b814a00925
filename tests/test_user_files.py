"""Nothing a user made is lost, and no code runs that the command line did not ask for: every destructive
path removes only folders holding tunelab's marker, a folder that is not a run is never resumed into, a run's
config.yaml never turns trust_remote_code on, and a stop between run_info.json and the report is finished
by the next start without training again (docs/reliability.md)."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

import tunelab as tunelab_package
from tunelab.chat.serve import MERGED_MARKER, load_base_and_adapter, merge_adapter
from tunelab.errors import TrainingInterrupted, TunelabError
from tunelab.nli.config import NLIRecipe
from tunelab.pipeline import PipelineRun
from tunelab.rundir import REPLACED, RUN_MARKER, discard_replaced_run, prepare_run_dir

ROOT = Path(__file__).resolve().parents[1]


def plant_user_files(folder: Path) -> dict[str, bytes]:
    files = {"notes.txt": b"my thesis notes", "data/train.jsonl": b'{"premise": "mine"}\n'}
    for name, content in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(content)
    return files


def contents(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def tunelab(*args, **environment):
    """The tunelab command of the source tree these tests import."""
    env = {**os.environ, "PYTHONPATH": str(Path(tunelab_package.__file__).parents[1]), **environment}
    return subprocess.run([sys.executable, "-m", "tunelab.cli", *map(str, args)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)


# ---------------------------------------------------------------------------- run directories

@pytest.mark.parametrize("overwrite", [False, True])
def test_a_folder_tunelab_did_not_make_is_never_resumed_into_or_replaced(overwrite, tmp_path, capsys):
    planted = plant_user_files(tmp_path / "mine")
    recipe = NLIRecipe(output_dir=str(tmp_path), run_name="mine", overwrite=overwrite)
    with pytest.raises(TunelabError, match=r"mine holds files tunelab did not write \(data, notes.txt\).*"
                                           "--run_name or --output_dir"):
        PipelineRun(recipe, [])
    assert contents(tmp_path / "mine") == planted
    assert sorted(p.name for p in (tmp_path / "mine").iterdir()) == ["data", "notes.txt"]
    assert "Resuming" not in capsys.readouterr().out


def test_a_new_or_empty_folder_becomes_a_run_that_overwrite_may_replace(tmp_path):
    (tmp_path / "empty").mkdir()
    with PipelineRun(NLIRecipe(output_dir=str(tmp_path), run_name="empty", learning_rate=1e-3), []):
        pass
    assert (tmp_path / "empty" / RUN_MARKER).is_file()
    with PipelineRun(NLIRecipe(output_dir=str(tmp_path), run_name="empty", learning_rate=1e-4, overwrite=True), []):
        pass
    assert "learning_rate: 0.0001" in (tmp_path / "empty" / "config.yaml").read_text()


def test_a_set_aside_folder_tunelab_did_not_make_is_never_deleted(tmp_path):
    planted = plant_user_files(tmp_path / REPLACED)
    with pytest.raises(TunelabError, match=f"{REPLACED} was not made by tunelab"):
        discard_replaced_run(tmp_path)
    with pytest.raises(TunelabError, match=f"{REPLACED} was not made by tunelab"):
        prepare_run_dir(tmp_path, overwrite=True, settings={})
    assert contents(tmp_path / REPLACED) == planted


def test_a_start_killed_during_overwrite_is_named_by_report_and_undone_by_the_rerun(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    prepare_run_dir(run_dir, overwrite=False, settings={"learning_rate": 1.0})
    for name in ("run_info.json", "report/report.md"):
        (run_dir / name).parent.mkdir(exist_ok=True)
        (run_dir / name).write_text("{}")
    prepare_run_dir(run_dir, overwrite=True, settings={"learning_rate": 2.0})  # then SIGKILL before training
    result = tunelab("report", run_dir)
    assert result.returncode == 2
    assert f"the earlier run is in {run_dir / REPLACED}" in result.stderr and len(result.stderr.splitlines()) == 1
    with pytest.raises(TunelabError, match="holds a finished run"):
        prepare_run_dir(run_dir, overwrite=False, settings={"learning_rate": 2.0})
    assert (run_dir / "report" / "report.md").is_file() and not (run_dir / REPLACED).exists()


# ---------------------------------------------------------------------------- merge

def fake_chat_run(folder: Path, model_dir: Path, trust_remote_code: bool = False) -> Path:
    (folder / "adapter").mkdir(parents=True)
    (folder / "adapter" / "adapter_config.json").write_text("{}")
    (folder / "config.yaml").write_text(yaml.safe_dump({"model_name_or_path": str(model_dir),
                                                         "trust_remote_code": trust_remote_code}))
    return folder


@pytest.mark.parametrize("output", ["elsewhere", "run"])
def test_merge_overwrite_never_replaces_what_tunelab_did_not_merge(output, tmp_path):
    run_dir = fake_chat_run(tmp_path / "run", tmp_path / "no-model")
    target = tmp_path / output
    target.mkdir(exist_ok=True)
    planted = plant_user_files(target)
    before = contents(target)
    result = tunelab("merge", run_dir, "--output", target, "--overwrite")
    assert result.returncode == 2 and len(result.stderr.splitlines()) == 1, result.stderr
    assert f"is not a merged model tunelab wrote (no {MERGED_MARKER})" in result.stderr
    assert contents(target) == before and planted.items() <= contents(target).items()


def test_merge_overwrite_replaces_its_own_merged_model(tiny_chat_run, tmp_path):
    target = tmp_path / "merged"
    merge_adapter(tiny_chat_run, target)
    (target / "stale.txt").write_text("from the earlier merge")
    merge_adapter(tiny_chat_run, target, overwrite=True)
    assert (target / MERGED_MARKER).is_file() and not (target / "stale.txt").exists()


# ---------------------------------------------------------------------------- trust_remote_code

def copy_run_asking_for_remote_code(tiny_chat_run: Path, model_dir: Path, tmp_path: Path) -> Path:
    """The tiny chat run, its config.yaml saying trust_remote_code: true, its base model's config an auto_map."""
    base = shutil.copytree(model_dir, tmp_path / "base")
    config = json.loads((base / "config.json").read_text())
    config["auto_map"] = {"AutoModelForCausalLM": "modeling_evil.EvilForCausalLM"}
    (base / "config.json").write_text(json.dumps(config))
    (base / "modeling_evil.py").write_text("raise SystemExit('repository code ran')\n")
    run_dir = shutil.copytree(tiny_chat_run, tmp_path / "run", ignore=shutil.ignore_patterns("merged"))
    settings = yaml.safe_load((run_dir / "config.yaml").read_text())
    settings.update(model_name_or_path=str(base), trust_remote_code=True)
    (run_dir / "config.yaml").write_text(yaml.safe_dump(settings))
    return run_dir


def test_a_runs_config_never_turns_trust_remote_code_on(tiny_chat_run, tiny_llama_dir, tmp_path, capsys):
    run_dir = copy_run_asking_for_remote_code(tiny_chat_run, tiny_llama_dir, tmp_path)
    model, _ = load_base_and_adapter(run_dir)  # the repository's code would end the process
    assert type(model.get_base_model()).__name__ == "LlamaForCausalLM"
    err = capsys.readouterr().err
    assert "was trained with trust_remote_code: true" in err and "--trust_remote_code" in err
    merged = merge_adapter(run_dir, tmp_path / "merged")
    assert "auto_map" not in json.loads((merged / "config.json").read_text())
    assert not list(merged.glob("*.py"))


# ---------------------------------------------------------------------------- a stop during the report stage

@pytest.mark.parametrize("extra", [[], ["--overwrite"]], ids=["plain", "overwrite"])
def test_a_stop_during_the_report_is_finished_by_the_rerun_without_training(extra, tiny_phi_dir, snli_dir, tmp_path,
                                                                           monkeypatch, capsys):
    """The same command again, as the interrupt advises, writes only the report (also when it had --overwrite)."""
    import tunelab.report
    from test_faults import RECIPE, tiny_argv
    from tunelab.config import parse_recipe
    from tunelab.nli.pipeline import main

    write_report = tunelab.report.write_report

    def stopped(run_dir, *args):
        raise TrainingInterrupted("Interrupted by SIGTERM outside training: run the same command again to continue")

    monkeypatch.setattr(tunelab.report, "write_report", stopped)
    argv = tiny_argv(tiny_phi_dir, snli_dir, tmp_path, "--run_name", "cut", *extra)
    with pytest.raises(TrainingInterrupted):
        main(parse_recipe(RECIPE, argv))
    run_dir = tmp_path / "cut"
    assert (run_dir / "run_info.json").is_file() and not (run_dir / "report" / "report.md").exists()
    trained = contents(run_dir / "checkpoints")
    capsys.readouterr()
    monkeypatch.setattr(tunelab.report, "write_report", write_report)
    main(parse_recipe(RECIPE, argv))  # the same command again, as the interrupt advised
    assert (run_dir / "report" / "report.md").is_file()
    assert contents(run_dir / "checkpoints") == trained
    assert "writing the report only" in capsys.readouterr().out
    with pytest.raises(TunelabError, match="holds a finished run"):
        main(parse_recipe(RECIPE, [arg for arg in argv if arg != "--overwrite"]))
