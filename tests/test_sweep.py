"""`tunelab sweep`: the grid, refusals before anything runs, two tiny runs interrupted and resumed, the sweep report."""

from __future__ import annotations

import json
import os
import signal
import statistics
import subprocess
import sys
from pathlib import Path

import pytest

from tunelab.errors import TunelabError
from tunelab.rundir import RUN_MARKER
from tunelab.sweep.grid import plan_sweep, record_sweep
from tunelab.sweep.report import write_sweep_report
from tunelab.sweep.run import sweep_command

ROOT = Path(__file__).resolve().parents[1]
RECIPE = str(ROOT / "recipes" / "phi2_snli.py")


def tiny_args(model_dir, data_dir) -> list[str]:
    return ["--model_name_or_path", str(model_dir), "--dataset", str(data_dir), "--train_stride", "1",
            "--train_size", "none", "--validation_stride", "1", "--validation_size", "none", "--test_stride", "1",
            "--test_size", "none", "--learning_rate", "5e-3", "--num_train_epochs", "1", "--precision", "fp32"]


def test_grid_sweeps_scalar_settings_and_keeps_list_commas(tmp_path):
    sweep = plan_sweep(RECIPE, ["--seed", "42,7", "--learning_rate=1e-4,2e-4", "--lora_target_modules", "q_proj,v_proj",
                                "--report_to", "none"], tmp_path / "sweep")
    assert sweep["grid"] == {"seed": ["42", "7"], "learning_rate": ["1e-4", "2e-4"]}
    assert [run["name"] for run in sweep["runs"]] == ["seed-42_learning_rate-1e-4", "seed-42_learning_rate-2e-4",
                                                     "seed-7_learning_rate-1e-4", "seed-7_learning_rate-2e-4"]
    assert sweep["fixed"] == ["--lora_target_modules", "q_proj,v_proj", "--report_to", "none"]
    assert sweep["runs"][1]["arguments"][-4:] == ["--seed", "42", "--learning_rate", "2e-4"]
    assert not (tmp_path / "sweep").exists(), "planning writes nothing"


@pytest.mark.parametrize("argv, message", [
    (["--seed", "42,x"], "seed"),
    (["--learning_rate", "1e-4"], "nothing to sweep"),
    (["--seed", "1,2", "--run_name", "a"], "--run_name is set by the sweep"),
    (["--seed", "1,2", "--learning_rat", "1e-4"], "did you mean 'learning_rate'"),
])
def test_bad_settings_stop_before_any_run(tmp_path, argv, message):
    with pytest.raises(TunelabError, match=message):
        sweep_command([RECIPE, "--sweep_dir", str(tmp_path / "sweep"), *argv])
    assert not (tmp_path / "sweep").exists()


def test_another_grid_in_the_same_folder_is_refused(tmp_path):
    record_sweep(plan_sweep(RECIPE, ["--seed", "1,2"], tmp_path), tmp_path)
    record_sweep(plan_sweep(RECIPE, ["--seed", "1,2"], tmp_path), tmp_path)  # the same sweep: resumed
    with pytest.raises(TunelabError, match="holds another sweep"):
        record_sweep(plan_sweep(RECIPE, ["--seed", "1,3"], tmp_path), tmp_path)


@pytest.mark.parametrize("argv, message", [
    (["--seed", "5,5"], "--seed lists 5 more than once"),
    (["--dataset", "data/x y,data/x-y"], r"\{'dataset': 'data/x y'\} and \{'dataset': 'data/x-y'\} would share the "
                                         "run folder dataset-data-x-y"),
    (["--head", "label_words,classifier", "--lora_target_modules", "q_proj,lm_head"],
     "lora_target_modules names lm_head, which --head classifier replaces"),
])
def test_settings_that_collide_or_fail_at_model_load_stop_before_any_run(tmp_path, argv, message):
    with pytest.raises(TunelabError, match=message):
        plan_sweep(RECIPE, argv, tmp_path / "sweep")


def test_a_damaged_sweep_record_is_named(tmp_path):
    (tmp_path / "sweep.json").write_text('{"recipe": ')
    with pytest.raises(TunelabError, match=f"{tmp_path / 'sweep.json'} could not be read as JSON .*another --sweep_dir"):
        record_sweep(plan_sweep(RECIPE, ["--seed", "1,2"], tmp_path), tmp_path)


def test_a_fixed_command_continues_a_sweep_that_finished_no_run(tmp_path):
    from tunelab.rundir import prepare_run_dir

    failed = plan_sweep(RECIPE, ["--seed", "1,2", "--learning_rate", "9"], tmp_path)
    record_sweep(failed, tmp_path)
    fixed = plan_sweep(RECIPE, ["--seed", "1,2", "--learning_rate", "1e-4"], tmp_path)
    assert record_sweep(fixed, tmp_path) is True  # its runs start again with --overwrite
    assert json.loads((tmp_path / "sweep.json").read_text()) == fixed
    finished = tmp_path / fixed["runs"][0]["name"]
    prepare_run_dir(finished, overwrite=False, settings={})
    for name in ("run_info.json", "report/report.md"):
        (finished / name).parent.mkdir(exist_ok=True)
        (finished / name).write_text("{}")
    with pytest.raises(TunelabError, match="holds another sweep .*, finished runs\\)"):
        record_sweep(failed, tmp_path)


def test_sweep_of_two_tiny_runs_resumes_after_an_interruption_and_reports(tiny_phi_dir, snli_dir, tmp_path, capsys):
    sweep_dir = tmp_path / "sweep"
    argv = [RECIPE, "--sweep_dir", str(sweep_dir), "--seed", "1,2", *tiny_args(tiny_phi_dir, snli_dir)]
    # Ctrl-C (SIGINT to the process group) once the second run has started: the sweep stops with status 3.
    process = subprocess.Popen([sys.executable, "-m", "tunelab.cli", "sweep", *argv], stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True, start_new_session=True,
                               env={**os.environ, "PYTHONPATH": str(ROOT / "src"), "PYTHONUNBUFFERED": "1"})
    output = []
    for line in process.stdout:
        output.append(line)
        if "Starting seed-2" in line:  # the run's own process is up: Ctrl-C reaches both
            os.killpg(process.pid, signal.SIGINT)
    assert process.wait(timeout=600) == 3, "".join(output)[-3000:]
    assert "sweep stopped during seed-2: run the same command again to resume" in "".join(output)
    first, second = sweep_dir / "seed-1", sweep_dir / "seed-2"
    assert (first / "run_info.json").is_file() and not (second / "run_info.json").exists()
    finished_at = (first / "run_info.json").stat().st_mtime_ns

    capsys.readouterr()
    sweep_command(argv)  # the same command again
    out = capsys.readouterr().out
    assert "Run 1 of 2, seed-1: finished before, reusing it" in out and "Run 2 of 2: seed-2" in out
    assert (first / "run_info.json").stat().st_mtime_ns == finished_at, "the finished run was not redone"
    assert (second / "run_info.json").is_file() and (second / "report" / "report.md").is_file()

    # The sweep report's numbers are the runs' own.
    results = json.loads((sweep_dir / "sweep_results.json").read_text())
    accuracies = []
    for run, folder in zip(results["runs"], (first, second)):
        metrics = json.loads((folder / "eval" / "test" / "finetuned" / "metrics.json").read_text())
        baseline = json.loads((folder / "eval" / "test" / "baseline" / "metrics.json").read_text())
        assert run["splits"]["test"]["finetuned"]["accuracy"] == metrics["accuracy"]
        assert run["splits"]["test"]["baseline"]["macro_f1"] == baseline["macro_f1"]
        interval = json.loads((folder / "eval" / "test" / "statistics.json").read_text())["intervals"]["accuracy"]
        assert run["splits"]["test"]["finetuned"]["intervals"]["accuracy"] == [interval["finetuned"]["low"],
                                                                              interval["finetuned"]["high"]]
        log = json.loads((folder / "train_log.json").read_text())
        assert run["validation"]["value"] == [e["eval_accuracy"] for e in log if "eval_accuracy" in e][-1]
        assert run["train_s"] == json.loads((folder / "run_info.json").read_text())["timings_s"]["train"]
        accuracies.append(metrics["accuracy"])
    (setting,) = results["settings"]
    assert setting["runs"] == 2 and results["best"] == setting["setting"] == "all runs"
    figures = setting["test"]["test"]["finetuned"]["accuracy"]
    assert figures["mean"] == pytest.approx(statistics.fmean(accuracies))
    assert figures["std"] == pytest.approx(statistics.stdev(accuracies))
    report = (sweep_dir / "report" / "report.md").read_text()
    assert "Chosen setting (by validation, never test)" in report and "| seed-2 |" in report
    assert f"{100 * figures['mean']:.1f}% ± {100 * figures['std']:.1f}%" in report
    assert (sweep_dir / "report" / "sweep.png").read_bytes().startswith(b"\x89PNG")
    assert write_sweep_report(sweep_dir) == sweep_dir / "report" / "report.md"  # `tunelab sweep-report` rebuilds it


def finished_fake_sweep(sweep_dir: Path) -> Path:
    """A 2 x 2 sweep's folder with each run's results written (no training): learning rate 1e-4 is better on
    validation, 2e-4 on test."""
    record_sweep(plan_sweep(RECIPE, ["--seed", "1,2", "--learning_rate", "1e-4,2e-4"], sweep_dir), sweep_dir)
    figures = {"1e-4": (0.9, 0.5), "2e-4": (0.6, 0.95)}  # learning rate -> (validation, test) accuracy
    for run in json.loads((sweep_dir / "sweep.json").read_text())["runs"]:
        folder = sweep_dir / run["name"]
        validation, test = figures[run["settings"]["learning_rate"]]
        seed = int(run["settings"]["seed"])
        for model, accuracy in (("baseline", 0.3), ("finetuned", test + seed / 100)):
            (folder / "eval" / "test" / model).mkdir(parents=True)
            (folder / "eval" / "test" / model / "metrics.json").write_text(json.dumps(
                {"accuracy": accuracy, "balanced_accuracy": accuracy, "macro_f1": accuracy}))
        (folder / "train_log.json").write_text(json.dumps([{"eval_accuracy": 0.1}, {"eval_accuracy": validation}]))
        (folder / "run_info.json").write_text(json.dumps({"timings_s": {"train": 1.0}}))
        (folder / RUN_MARKER).write_text("{}")
        (folder / "report").mkdir()
        (folder / "report" / "report.md").write_text("# report")
    return sweep_dir


def test_sweep_report_command_rebuilds_the_report(tmp_path):
    """`tunelab sweep-report SWEEP_DIR`, as a user runs it: the report and results, its path printed; a folder
    that holds no sweep is one error line."""
    sweep_dir = finished_fake_sweep(tmp_path / "sweep")
    tunelab = str(Path(sys.executable).parent / "tunelab")
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    done = subprocess.run([tunelab, "sweep-report", str(sweep_dir)], env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0 and done.stdout == f"{sweep_dir / 'report' / 'report.md'}\n", done.stderr[-2000:]
    assert json.loads((sweep_dir / "sweep_results.json").read_text())["best"] == "learning_rate-1e-4"
    report = (sweep_dir / "report" / "report.md").read_text()
    assert "## Chosen setting (by validation, never test)\n\nlearning_rate-1e-4: mean validation" in report
    assert {p.name for p in (sweep_dir / "report").iterdir()} >= {"report.md", "report.html", "report.pdf", "sweep.png"}
    missing = subprocess.run([tunelab, "sweep-report", str(tmp_path)], env=env, capture_output=True, text=True,
                             timeout=300)
    assert missing.returncode == 2 and missing.stdout == "" and [
        line for line in missing.stderr.splitlines() if line.startswith("tunelab: error:")] == [
        f"tunelab: error: {tmp_path / 'sweep.json'} not found: give the folder `tunelab sweep` wrote (it holds "
        "sweep.json)"]


def test_best_setting_is_chosen_on_validation_not_test(tmp_path):
    """Two settings: the one with the better validation accuracy wins though its test accuracy is worse."""
    sweep_dir = finished_fake_sweep(tmp_path / "sweep")
    write_sweep_report(sweep_dir)
    results = json.loads((sweep_dir / "sweep_results.json").read_text())
    assert results["best"] == "learning_rate-1e-4"
    row = next(r for r in results["settings"] if r["setting"] == "learning_rate-1e-4")
    assert row["test"]["test"]["finetuned"]["accuracy"]["mean"] == pytest.approx(0.515)
    assert row["validation"]["mean"] == pytest.approx(0.9) and row["runs"] == 2
