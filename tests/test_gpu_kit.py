"""The GPU proof kit (benchmarks/gpu): its CPU mode end to end, its time limits and its one command line."""

import importlib.util
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
KIT = ROOT / "benchmarks" / "gpu"
OPTIONAL = ("deepspeed", "wandb", "gguf")


def load_proof():
    spec = importlib.util.spec_from_file_location("gpu_proof", KIT / "proof.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def hiding_sitecustomize(folder: Path, record: Path) -> Path:
    """A sitecustomize that makes the optional packages unimportable in every process that starts with
    this folder on PYTHONPATH, and records each such process's command line."""
    folder.mkdir()
    (folder / "sitecustomize.py").write_text(
        "import sys\n"
        f"for name in {OPTIONAL!r}:\n"
        "    sys.modules[name] = None\n"
        f"with open({str(record)!r}, 'a') as f:\n"
        "    f.write(' '.join(sys.argv) + '\\n')\n")
    return folder


def test_cpu_proof_runs_every_part_without_the_optional_packages(tmp_path):
    calls = tmp_path / "processes.txt"
    hide = hiding_sitecustomize(tmp_path / "hide", calls)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(hide), str(ROOT / "src")])}
    out, work = tmp_path / "out", tmp_path / "work"
    result = subprocess.run([sys.executable, str(KIT / "proof.py"), str(out), "--cpu", "--work", str(work)],
                            cwd=ROOT, env=env, capture_output=True, text=True, timeout=1200)
    summary = json.loads((out / "proof.json").read_text())
    parts = summary["parts"]
    assert result.returncode == 0, json.dumps(parts, indent=1)[-4000:]
    assert list(parts) == [part.name for part in load_proof().PARTS]
    assert all(part["status"] == "ok" for part in parts.values())

    started = calls.read_text().splitlines()  # sys.argv as site sees it: "-m" stands for "-m tunelab.cli"
    for process in ("recipes/phi2_snli.py --profile cpu", "-m bench --workload phi2_snli",
                    "-m bench --workload gpt2_large_mnli", "-m run recipes/phi2_oasst1.py"):
        assert any(line.startswith(process) for line in started), process
    assert any("--step bench_bf16" in line for line in started)

    figures = summary["figures"]
    run = figures["phi2_snli"]
    assert run["finished"] and run["train_rows"] == 24 and "extrapolated" not in run
    assert run["timings_s"]["train"] > 0 and run["monitoring"]["samples_per_s"] > 0
    assert set(run["accuracy"]) == {"baseline", "finetuned"}
    assert run["profile"] == "profile auto -> cpu (accelerate config cpu.yaml)"
    assert figures["bench_phi2_4bit"]["load_in_4bit"] and not figures["bench_phi2_bf16"]["load_in_4bit"]
    for part in ("bench_phi2_4bit", "bench_phi2_bf16", "bench_gpt2_large"):
        names = [r["variant"]["name"] for r in figures[part]["results"]]
        assert names[:2] == ["reference", "tunelab"], part
        assert figures[part]["results"][1]["train"]["speedup_vs_reference"] > 0
        assert ("padding_free" in names) is (part != "bench_gpt2_large"), part
    assert figures["sft_phi2_oasst1"]["monitoring"]["train_steps"] == 2
    assert figures["prepare"]["environment"]["auto_profile"] == "cpu"
    assert summary["nvml_sample"]["samples"], "the run's monitoring samples"

    markdown = (out / "proof.md").read_text()
    for heading in ("## phi2_snli end to end", "## Targets", "## bench_phi2_bf16", "## sft_phi2_oasst1",
                    "## phi-2 with and without packing"):
        assert heading in markdown
    packing = markdown.split("## phi-2 with and without packing")[1].split("##")[0]
    packing_rows = [line for line in packing.splitlines() if line.startswith("| bench_phi2_")]
    assert len(packing_rows) == 2 and all("not measured" not in row and "| 100% |" in row for row in packing_rows)
    assert (out / "monitoring_phi2_snli.json").is_file()
    log = (out / "proof.log").read_text()  # the parts' own logs, in the parts' order though two ran at a time
    starts = [log.index(f"===== {name} (budget") for name in parts]
    assert starts == sorted(starts) and all((out / "logs" / f"{name}.log").stat().st_size > 0 for name in parts)


def test_a_part_over_its_budget_is_killed_and_the_next_still_runs(tmp_path, monkeypatch):
    """At its budget the part's whole process group is killed: the shell never reaches its last line and the
    child it left running (stdout elsewhere, so nothing waits for it) is gone; the next part still runs."""
    proof_module = load_proof()
    proof = proof_module.Proof(proof_module.parse_args([str(tmp_path / "out"), "--cpu", "--work",
                                                        str(tmp_path)])[0])
    pids = tmp_path / "pids"
    script = f"echo $$ > {pids}; sleep 600 > /dev/null 2>&1 & echo $! >> {pids}; wait; echo finished"
    commands = {"slow": ["sh", "-c", script], "quick": [sys.executable, "-c", "print('done')"]}
    monkeypatch.setattr(proof, "command", lambda name: commands[name])
    start = time.monotonic()
    try:
        with open(tmp_path / "log", "w") as log:
            slow = proof_module.run_part(proof, proof_module.Part("slow", 60, 2), start + 30, log)
            quick = proof_module.run_part(proof, proof_module.Part("quick", 60, 30), start + 30, log)
            late = proof_module.run_part(proof, proof_module.Part("quick", 60, 30), time.monotonic() + 1, log)
        assert slow["status"] == "timeout after 2 s"
        assert [running(int(pid)) for pid in pids.read_text().split()] == [False, False], "shell and its child"
        assert quick["status"] == "ok" and late["status"] == "skipped"
        lines = (tmp_path / "log").read_text().splitlines()
        assert "finished" not in lines and lines.index("done") > lines.index(f"===== slow (budget 2 s): sh -c {script}")
    finally:
        for pid in pids.read_text().split() if pids.exists() else ():
            if running(int(pid)):
                os.kill(int(pid), 9)


def running(pid: int) -> bool:
    """Whether process `pid` exists and has not exited (a zombie waiting for its parent counts as exited)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_a_run_that_ran_out_of_time_is_extrapolated_and_says_so(tmp_path):
    proof_module = load_proof()
    proof = proof_module.Proof(proof_module.parse_args([str(tmp_path / "out"), "--work", str(tmp_path)])[0])
    run_dir = proof.runs / "phi2_snli"
    run_dir.mkdir(parents=True)
    (run_dir / "config.yaml").write_text("per_device_train_batch_size: 8\ngradient_accumulation_steps: 1\n")
    samples = [{"step": 10 * i, "step_time_s": t, "devices": {}} for i, t in enumerate((0.2, 0.1, 0.1), 1)]
    (run_dir / "monitoring.json").write_text(json.dumps({"summary": None, "samples": samples}))
    figures = proof_module.nli_run_figures(proof, {"status": "timeout after 150 s"})
    assert not figures["finished"]
    assert figures["extrapolated"]["planned_steps"] == 125 * 5
    assert figures["extrapolated"]["train_seconds"] == 62.5
    assert "EXTRAPOLATED" in figures["extrapolated"]["note"] and "timeout after 150 s" in figures["extrapolated"]["note"]
    targets = "\n".join(proof_module.targets_section({"phi2_snli": figures}))
    assert "phi2_snli training (extrapolated, 1000 rows x 5 epochs; the bar is for 1000 x 5) | < 60 s | 62.50 | no |" \
        in targets


def test_the_device_command_installs_every_fetched_wheel_and_fits_the_limit():
    command = next(line.strip() for line in (KIT / "README.md").read_text().splitlines()
                   if line.startswith("    python3 -m pip install"))
    assert len(command) < 2000
    assert "--no-deps --no-index" in command.replace("--no-index --no-deps", "--no-deps --no-index")
    assert "proof.py $OUT" in command
    script = (KIT / "fetch_wheels.sh").read_text()
    pins = re.findall(r"^\s+([A-Za-z0-9_.-]+)==([0-9.]+)", script, flags=re.MULTILINE)
    required = dict(re.findall(r"^([A-Za-z0-9_.-]+)==([0-9.]+)$", (ROOT / "requirements.txt").read_text(),
                               flags=re.MULTILINE))
    assert {name for name, _ in pins} >= {"bitsandbytes", "transformers", "trl", "datasets", "dill", "multiprocess"}
    for name, version in pins:
        assert required.get(name, version) == version, f"{name} differs from requirements.txt"
