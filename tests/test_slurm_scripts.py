"""slurm/: the generated sbatch scripts (golden files) and submit.py's refusals, no cluster needed."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT, assert_one_line_error, make_shard

from hepprune.core import config
from hepprune.slurm.scripts import Paths, render, render_candidates, render_tensorboard

GOLDEN = ROOT / "tests" / "golden"
GOLDEN_CONFIG = {
    "prune": {"targets": [0.3, 0.5, 0.75]},
    "slurm": {"partition": "gpu", "account": "cms-l1",
              "setup": ["module load python/3.11", "source ~/venvs/hep/bin/activate"],
              "extra": ["--qos=normal"], "signal_seconds": 600, "synth": True, "rtl": True, "frontier": True,
              "pretrain": {"time": "1-00:00:00", "cpus": 8, "mem": "32G", "gpus": 1}},
}
PATHS = Paths(project=Path("/opt/hepprune"), run_dir=Path("/scratch/alice/runs/study1"),
              config=Path("/scratch/alice/runs/study1/slurm/config.yaml"))


def _rendered():
    cfg = config.from_dict(GOLDEN_CONFIG)
    return {**render(cfg, PATHS), "tensorboard": render_tensorboard(cfg, PATHS)}


@pytest.mark.parametrize("stage", ["pretrain", "prune", "analyze", "scan", "synth", "rtl", "frontier",
                                   "tensorboard"])
def test_generated_script_matches_golden_file(stage):
    text = _rendered()[stage]
    golden = GOLDEN / f"{stage}.sbatch"
    if os.environ.get("HEPPRUNE_UPDATE_GOLDEN"):
        golden.write_text(text)
    assert text == golden.read_text(), f"{stage}.sbatch changed; review, then rerun with HEPPRUNE_UPDATE_GOLDEN=1"


MULTIWORKER_CONFIG = {**GOLDEN_CONFIG, "distribute": {"strategy": "multiworker", "workers": 4}}


@pytest.mark.parametrize("stage", ["pretrain", "prune"])
def test_multiworker_script_matches_golden_file(stage):
    """One worker per task: --ntasks and an srun step that stops when a worker fails."""
    text = render(config.from_dict(MULTIWORKER_CONFIG), PATHS)[stage]
    golden = GOLDEN / f"{stage}_multiworker.sbatch"
    if os.environ.get("HEPPRUNE_UPDATE_GOLDEN"):
        golden.write_text(text)
    assert text == golden.read_text(), f"{golden.name} changed; review, then rerun with HEPPRUNE_UPDATE_GOLDEN=1"


QAT_CONFIG = {**GOLDEN_CONFIG, "qat": {"bits": [8, 6]}}


def test_qat_prune_array_matches_golden_file():
    """One task per model: float at each target, then each bit setting's dense reference and targets."""
    text = render(config.from_dict(QAT_CONFIG), PATHS)["prune"]
    golden = GOLDEN / "prune_qat.sbatch"
    if os.environ.get("HEPPRUNE_UPDATE_GOLDEN"):
        golden.write_text(text)
    assert text == golden.read_text(), f"{golden.name} changed; review, then rerun with HEPPRUNE_UPDATE_GOLDEN=1"


def test_a_frontier_round_is_one_array_task_per_candidate():
    """The frontier's round: float and QAT candidates each their own task, with slurm.prune resources."""
    text = render_candidates(config.from_dict(GOLDEN_CONFIG), PATHS, [(0.725, None), (0.8, 8)])
    golden = GOLDEN / "frontier_round.sbatch"
    if os.environ.get("HEPPRUNE_UPDATE_GOLDEN"):
        golden.write_text(text)
    assert text == golden.read_text(), f"{golden.name} changed; review, then rerun with HEPPRUNE_UPDATE_GOLDEN=1"


def test_each_qat_array_task_selects_exactly_its_own_model():
    """Task i's --targets/--bits pick the i-th model of the sweep and nothing else, so no two tasks
    share a stage directory."""
    from hepprune.core.cli import parse_bits, parse_targets
    from hepprune.core.runs import prune_stage, sweep

    cfg = config.from_dict(QAT_CONFIG)
    lines = render(cfg, PATHS)["prune"].splitlines()
    targets = next(line for line in lines if line.startswith("TARGETS=("))[9:-1].split()
    bits = next(line for line in lines if line.startswith("BITS=("))[6:-1].split()
    assert "#SBATCH --array=0-10" in lines and len(targets) == len(bits) == 11
    stages = []
    for t, b in zip(targets, bits, strict=True):
        (pair,) = sweep(cfg, parse_targets(t, allow_zero=True), parse_bits(b))
        stages.append(prune_stage(*pair))
    assert stages == [prune_stage(*pair) for pair in sweep(cfg)]
    assert stages[:4] == ["prune_0.30", "prune_0.50", "prune_0.75", "prune_0.00_q8"] and len(set(stages)) == 11


def test_multiworker_leaves_the_other_stages_single_process():
    multi = render(config.from_dict(MULTIWORKER_CONFIG), PATHS)
    single = render(config.from_dict(GOLDEN_CONFIG), PATHS)
    for stage in ("analyze", "scan", "synth"):
        assert multi[stage] == single[stage]


def test_multiworker_outside_srun_is_refused(tmp_path, run_cli):
    make_shard(tmp_path / "d.h5", n=600)
    (tmp_path / "c.yaml").write_text("distribute: {strategy: multiworker}\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
    proc = subprocess.run([os.sys.executable, str(ROOT / "ptq/trainModel.py"), "--config", str(tmp_path / "c.yaml"),
                           "--run-dir", str(tmp_path / "run"), "--data", str(tmp_path / "d.h5")],
                          capture_output=True, text=True, env=env, cwd=ROOT, timeout=300)
    assert_one_line_error(proc, "distribute.strategy=multiworker needs an srun step", "distribute.strategy=single")
    assert not (tmp_path / "run").exists()


def test_generated_scripts_are_valid_bash():
    for stage, text in _rendered().items():
        proc = subprocess.run(["bash", "-n"], input=text, capture_output=True, text=True)
        assert proc.returncode == 0, (stage, proc.stderr)
    proc = subprocess.run(["bash", "-n", str(ROOT / "slurm/preempt.sh")], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def test_no_synth_job_unless_asked():
    assert set(render(config.from_dict({}), PATHS)) == {"pretrain", "prune", "analyze", "scan"}


def test_dry_run_prints_commands_and_scripts_and_writes_nothing(tmp_path, run_cli):
    (tmp_path / "c.yaml").write_text("data: {path: /data/cal/shard_*.h5}\nprune: {targets: [0.5, 0.75]}\n")
    proc = run_cli("slurm/submit.py", "--config", tmp_path / "c.yaml", "--run-dir", tmp_path / "run", "--dry-run",
                   check_ok=True)
    out = proc.stdout
    assert f"# sbatch --parsable {tmp_path}/run/slurm/pretrain.sbatch" in out
    assert (f"# sbatch --parsable --dependency=afterok:<pretrain> --kill-on-invalid-dep=yes "
            f"{tmp_path}/run/slurm/prune.sbatch") in out
    assert "--dependency=afterok:<prune> --kill-on-invalid-dep=yes" in out
    assert "#SBATCH --array=0-1" in out and "TARGETS=(0.50 0.75)" in out
    assert "/data/cal/shard_*.h5" not in out  # jobs read the frozen config, not the YAML given here
    assert not (tmp_path / "run").exists()
    assert "rtl.sbatch" not in out

    (tmp_path / "c.yaml").write_text("data: {path: /data/cal/shard_*.h5}\nslurm: {rtl: true}\n")
    out = run_cli("slurm/submit.py", "--config", tmp_path / "c.yaml", "--run-dir", tmp_path / "run", "--dry-run",
                  check_ok=True).stdout
    assert (f"# sbatch --parsable --dependency=afterok:<scan>:<analyze> --kill-on-invalid-dep=yes "
            f"{tmp_path}/run/slurm/rtl.sbatch") in out  # the scan's width; the analysis is re-run at its end


@pytest.mark.parametrize("yaml_text, fragment", [
    ("slurm: {prune: {time: 4h}}\n", "slurm.prune.time must be an sbatch --time value"),
    ("slurm: {prune: {tme: '1:00:00'}}\n", "unknown config key 'slurm.prune.tme'; valid keys in slurm.prune: time"),
])
def test_bad_slurm_settings_are_refused_before_submitting(tmp_path, run_cli, yaml_text, fragment):
    (tmp_path / "c.yaml").write_text("data: {path: /data/x.h5}\n" + yaml_text)
    proc = run_cli("slurm/submit.py", "--config", tmp_path / "c.yaml", "--run-dir", tmp_path / "run")
    assert_one_line_error(proc, fragment)
    assert not (tmp_path / "run").exists()


def test_run_dir_with_whitespace_is_refused(tmp_path, run_cli):
    (tmp_path / "c.yaml").write_text("data: {path: /data/x.h5}\n")
    proc = run_cli("slurm/submit.py", "--config", tmp_path / "c.yaml", "--run-dir", tmp_path / "my run", "--dry-run")
    assert_one_line_error(proc, "contains whitespace")


def test_sbatch_not_found_hints_at_running_locally(tmp_path, run_cli, monkeypatch):
    (tmp_path / "c.yaml").write_text("data: {path: /data/x.h5}\n")
    monkeypatch.setenv("PATH", str(Path(os.__file__).parent))  # python's lib dir: no sbatch there
    proc = subprocess.run([sys.executable, str(ROOT / "slurm/submit.py"), "--config", str(tmp_path / "c.yaml"),
                           "--run-dir", str(tmp_path / "run")], capture_output=True, text=True, cwd=ROOT)
    assert_one_line_error(proc, "sbatch not found", "run the stages locally")
    assert not (tmp_path / "run").exists()


def test_config_that_disagrees_with_the_run_baseline_is_refused(pruned_run, tmp_path, run_cli):
    (tmp_path / "c.yaml").write_text((pruned_run / "config.yaml").read_text().replace("hidden_units: [32, 16]",
                                                                                     "hidden_units: [64, 16]"))
    proc = run_cli("slurm/submit.py", "--config", tmp_path / "c.yaml", "--run-dir", pruned_run / "run",
                   "--data", pruned_run / "data.h5", "--dry-run")
    assert_one_line_error(proc, "disagrees with", "model.hidden_units")
