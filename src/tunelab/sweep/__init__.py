"""Sweeps: repeated runs and grids of settings, ending in one comparative report.

    tunelab sweep RECIPE --seed 42,7,1 --learning_rate 2e-4,5e-4 [--field value ...] [--sweep_dir DIR]
    tunelab sweep RECIPE ... --slurm [--sbatch="--time=02:00:00 --gpus-per-node=1"]
    tunelab sweep-report SWEEP_DIR

A comma-separated value of a scalar setting is swept; list settings (test_splits, lora_target_modules, ...)
and report_to keep their commas. Every combination is one run, in SWEEP_DIR/<name> (its own run
directory with its own report), named after its swept values. SWEEP_DIR (default runs/sweep-<recipe>)
holds sweep.json, the grid; the same command run again reuses the finished runs and resumes the others
from their checkpoints; another grid in the same folder is refused.

Here the runs go one after the other (`tunelab run`, a process each; Ctrl-C lets the current run save a
checkpoint). With --slurm, slurm/sweep.sbatch runs them as a job array, one task per unfinished run
(SWEEP_DIR/tasks/<index>.env gives each task its settings for slurm/single_node.sbatch, so a task
checkpoints, requeues and resumes like any run), and a job that waits for the array writes the report.

The sweep report (SWEEP_DIR/report/report.{md,html,pdf}, sweep.png, sweep_results.json, sweep_results.csv)
has every run's settings, baseline and fine-tuned test metrics with their 95% intervals, validation
figure, training time and peak memory; the mean ± standard deviation over seeds of each setting; the
setting chosen by the mean validation figure (never a test figure); and metric vs setting with error bars.
"""
