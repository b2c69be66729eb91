"""Damaged run directories, mismatched datasets and blocked output paths: every
later stage answers with one line naming the problem, never a traceback."""

import h5py
import numpy as np
import pytest
from conftest import assert_one_line_error, make_shard

LATER_STAGES = {
    "prune": ("prune/train_model_prune.py", ["--targets", "0.4"]),
    "analyze": ("prune/analyze_prune.py", ["--no-hls"]),
    "sensitivity": ("prune/sensitivity_scan.py", ["--points", "0,50"]),
}


def _stage(run_cli, run, stage, *extra):
    script, args = LATER_STAGES[stage]
    return run_cli(script, "--config", run.parent / "config.yaml", "--run-dir", run, *args, *extra)


@pytest.mark.parametrize("stage", sorted(LATER_STAGES))
def test_damaged_baseline_config_is_named(run, run_cli, stage):
    (run / "baseline/config.yaml").write_text("data: [unclosed\n")
    assert_one_line_error(_stage(run_cli, run, stage), f"{run}/baseline/config.yaml is not valid YAML")


@pytest.mark.parametrize("content, what", [('{"val_loss": ', "not valid JSON"), ("[]", "a JSON list")])
def test_damaged_metrics_are_named(run, run_cli, content, what):
    (run / "baseline/metrics.json").write_text(content)
    for proc in (run_cli("ptq/summarize_run.py", run), _stage(run_cli, run, "analyze")):
        assert_one_line_error(proc, f"{run}/baseline/metrics.json is damaged ({what}")


def test_damaged_standardization_is_named(run, run_cli):
    (run / "baseline/standardization.json").write_text("{bad")
    assert_one_line_error(_stage(run_cli, run, "prune"), "standardization.json is damaged")
    assert not (run / "prune_0.40").exists()


@pytest.mark.parametrize("stage", ["prune", "analyze"])
def test_data_with_other_features_than_the_baseline_is_refused(run, run_cli, tmp_path, stage):
    make_shard(tmp_path / "wide.h5", n=3000, n_features=6, seed=9)
    proc = _stage(run_cli, run, stage, "--data", tmp_path / "wide.h5")
    assert_one_line_error(proc, "has 6 input features, the run was trained on 4")
    assert not (run / "prune_0.40").exists() and not (run / "analysis").exists()


@pytest.mark.parametrize("args, fragment", [
    (["--models", ","], "--models expects comma-separated model names"),
    (["--set", "analysis.bins=[100000,200000]"], "analysis.bins [100000, 200000] hold none of the 200 test events"),
])
def test_analysis_arguments_that_select_nothing_are_refused(run, run_cli, args, fragment):
    assert_one_line_error(_stage(run_cli, run, "analyze", *args), fragment)
    assert not (run / "analysis").exists()


@pytest.mark.parametrize("stage", ["prune", "analyze"])
def test_an_output_path_that_is_a_file_is_one_line(run, run_cli, stage):
    blocked = run / ("prune_0.40" if stage == "prune" else "analysis")
    blocked.write_text("not a directory")
    assert_one_line_error(_stage(run_cli, run, stage), str(blocked))


def test_run_dir_that_is_a_file_is_one_line(tmp_path, run_cli):
    make_shard(tmp_path / "d.h5", n=500)
    (tmp_path / "afile").write_text("x")
    (tmp_path / "c.yaml").write_text("train: {epochs: 1}\n")
    proc = run_cli("ptq/trainModel.py", "--config", tmp_path / "c.yaml", "--run-dir", tmp_path / "afile",
                   "--data", tmp_path / "d.h5")
    assert_one_line_error(proc, "afile")


@pytest.mark.parametrize("case, fragment", [
    ("schema_version", "schema_version 'abc' is not supported"),
    ("parameters", "the 'parameters' attribute is not a JSON object"),
    ("aux_group", "'aux/sub' is a group"),
    ("no_features", "'inputs' has no feature columns"),
])
def test_malformed_dataset_attributes_are_one_line(tmp_path, run_cli, case, fragment):
    path = make_shard(tmp_path / "d.h5", n=500)
    with h5py.File(path, "a") as f:
        if case == "schema_version":
            f.attrs["schema_version"] = "abc"
        elif case == "parameters":
            f.attrs["parameters"] = "{not json"
        elif case == "aux_group":
            f.create_group("aux/sub")
        else:
            del f["inputs"]
            f["inputs"] = np.zeros((500, 0), np.float32)
            f.attrs["feature_names"] = np.array([], dtype=h5py.string_dtype())
    assert_one_line_error(run_cli("data/validate_dataset.py", path), fragment)


@pytest.mark.parametrize("sets, fragment", [
    (["seed=99999999999999999999"], "seed must be <="),
    (["model.custom_objects=[nosuchmod:X]"], "nosuchmod"),
    (["distribute.strategy=multiworker", "distribute.workers=3", "data.batch_size=128"],
     "data.batch_size 128 is not divisible by distribute.workers 3"),
])
def test_config_values_that_would_fail_later_are_refused_at_the_door(tmp_path, run_cli, sets, fragment):
    make_shard(tmp_path / "d.h5", n=500)
    (tmp_path / "c.yaml").write_text("train: {epochs: 1}\n")
    args = [a for s in sets for a in ("--set", s)]
    proc = run_cli("ptq/trainModel.py", "--config", tmp_path / "c.yaml", "--run-dir", tmp_path / "run",
                   "--data", tmp_path / "d.h5", *args)
    assert_one_line_error(proc, fragment)
    assert not (tmp_path / "run/baseline").exists()


def test_a_model_too_large_for_memory_is_one_line(tmp_path, run_cli):
    make_shard(tmp_path / "d.h5", n=500)
    (tmp_path / "c.yaml").write_text("train: {epochs: 1}\n")
    proc = run_cli("ptq/trainModel.py", "--config", tmp_path / "c.yaml", "--run-dir", tmp_path / "run",
                   "--data", tmp_path / "d.h5", "--set", "model.hidden_units=[100000000000]")
    assert_one_line_error(proc, "TensorFlow ran out of memory (OOM when allocating tensor with shape[4,100000000000]")
    assert not (tmp_path / "run").exists()


def test_config_that_is_not_text_is_one_line(tmp_path, run_cli):
    (tmp_path / "c.yaml").write_bytes(b"\xff\xfe\x00binary")
    proc = run_cli("ptq/trainModel.py", "--config", tmp_path / "c.yaml", "--run-dir", tmp_path / "run")
    assert_one_line_error(proc, "is not UTF-8 text")


def test_absurd_pileup_is_refused(tmp_path, run_cli):
    proc = run_cli("data/make_dataset.py", "--out", tmp_path / "d", "--events", "10", "--pileup", "1e30")
    assert_one_line_error(proc, "pileup_mu=1e+30 must be <= 1000")
