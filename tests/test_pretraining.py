"""ptq/trainModel.py as a user runs it: artifacts, resume after a kill, bad input."""

import csv
import json
import os
import subprocess
import sys
import textwrap

import h5py
import numpy as np
import pytest
from conftest import ROOT, assert_one_line_error, kill_mid_training, make_shard, saved_model_val_mae

pytestmark = pytest.mark.slow

CONFIG = """
seed: 3
data: {batch_size: %(batch)d, shuffle_buffer: 3000}
model: {hidden_units: [16, 8]}
train: {epochs: %(epochs)d, early_stopping_patience: 0, reduce_lr_patience: 1}
"""


def _config(tmp_path, epochs=3, batch=128):
    path = tmp_path / "config.yaml"
    path.write_text(CONFIG % {"epochs": epochs, "batch": batch})
    return path


@pytest.fixture
def shards(tmp_path):
    for k in range(2):
        make_shard(tmp_path / f"data/shard_{k}.h5", n=3000, seed=k)
    return str(tmp_path / "data/shard_*.h5")


def test_pretraining_writes_every_artifact(tmp_path, shards, run_cli):
    run_cli("ptq/trainModel.py", "--config", _config(tmp_path), "--run-dir", tmp_path / "run",
            "--data", shards, check_ok=True)
    stage = tmp_path / "run/baseline"
    for name in ("model.h5", "standardization.json", "config.yaml", "history.csv", "metrics.json"):
        assert (stage / name).is_file(), name
    assert list((stage / "tensorboard").rglob("events.out.tfevents.*"))
    metrics = json.loads((stage / "metrics.json").read_text())
    assert metrics["test"]["n_events"] == metrics["events"]["test"] == 600
    assert 0.8 < metrics["test"]["response_median"] < 1.2
    assert metrics["test"]["resolution_q68"] > 0 and np.isfinite(metrics["val_loss"])
    rows = list(csv.DictReader((stage / "history.csv").open()))
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3]
    assert min(float(r["val_loss"]) for r in rows) == pytest.approx(metrics["val_loss"])
    with h5py.File(stage / "model.h5") as f:  # a plain Keras 2 HDF5 model
        assert "model_config" in f.attrs
    assert not list(stage.rglob("*.tmp"))
    # A second identical command recognises the finished stage.
    again = run_cli("ptq/trainModel.py", "--config", _config(tmp_path), "--run-dir", tmp_path / "run",
                    "--data", shards, check_ok=True)
    assert "already complete" in again.stderr
    # Progress: one line per epoch when not on a terminal (SLURM logs).
    summary = run_cli("ptq/summarize_run.py", tmp_path / "run", check_ok=True)
    assert "baseline" in summary.stdout and "model.h5" in summary.stdout


def test_resume_after_kill_ends_with_the_same_result(tmp_path, shards, run_cli):
    cfg = _config(tmp_path, epochs=5, batch=16)  # ~300 steps/epoch: a kill lands mid-run
    run_cli("ptq/trainModel.py", "--config", cfg, "--run-dir", tmp_path / "straight", "--data", shards,
            check_ok=True)

    state = tmp_path / "killed/baseline/checkpoint/state.json"
    done = kill_mid_training("ptq/trainModel.py", ["--config", cfg, "--run-dir", tmp_path / "killed", "--data", shards],
                             state, settle=0.1)  # somewhere inside the next epoch
    assert 2 <= done < 5
    assert not (tmp_path / "killed/baseline/metrics.json").exists()

    resumed = run_cli("ptq/trainModel.py", "--config", cfg, "--run-dir", tmp_path / "killed", "--data",
                      shards, check_ok=True)
    assert "resuming" in resumed.stderr and f"after epoch {done}" in resumed.stderr
    a = json.loads((tmp_path / "straight/baseline/metrics.json").read_text())
    b = json.loads((tmp_path / "killed/baseline/metrics.json").read_text())
    for m in (a, b):
        m.pop("train_seconds_this_process")
    assert a == b
    assert (tmp_path / "straight/baseline/history.csv").read_text() == \
        (tmp_path / "killed/baseline/history.csv").read_text()


def test_resume_with_a_different_config_is_refused(tmp_path, shards, run_cli):
    # --epochs overrides train.epochs (3 in the file), and is recorded as such.
    run_cli("ptq/trainModel.py", "--config", _config(tmp_path), "--run-dir", tmp_path / "run",
            "--data", shards, "--epochs", "1", check_ok=True)
    rows = list(csv.DictReader((tmp_path / "run/baseline/history.csv").open()))
    assert [int(r["epoch"]) for r in rows] == [1]
    assert json.loads((tmp_path / "run/baseline/metrics.json").read_text())["epochs_run"] == 1
    same = run_cli("ptq/trainModel.py", "--config", _config(tmp_path, epochs=1), "--run-dir", tmp_path / "run",
                   "--data", shards, check_ok=True)
    assert "already complete" in same.stderr
    proc = run_cli("ptq/trainModel.py", "--config", _config(tmp_path, epochs=1), "--run-dir",
                   tmp_path / "run", "--data", shards, "--set", "train.learning_rate=0.1")
    assert_one_line_error(proc, "different config")


def test_overwrite_with_bad_data_keeps_the_existing_baseline(tmp_path, shards, run_cli):
    run_cli("ptq/trainModel.py", "--config", _config(tmp_path, epochs=1), "--run-dir", tmp_path / "run",
            "--data", shards, check_ok=True)
    _nan_shard(tmp_path / "bad.h5")
    proc = run_cli("ptq/trainModel.py", "--config", _config(tmp_path, epochs=1), "--run-dir",
                   tmp_path / "run", "--data", tmp_path / "bad.h5", "--overwrite")
    assert_one_line_error(proc, "NaN or Inf")
    assert (tmp_path / "run/baseline/metrics.json").is_file()
    assert (tmp_path / "run/baseline/model.h5").is_file()


def _history(stage):
    return [{k: float(v) for k, v in row.items()} for row in csv.DictReader((stage / "history.csv").open())]


def test_plateau_reduces_the_learning_rate_stops_early_and_keeps_the_best_model(plateau_run):
    """Validation stops improving (noise targets): the learning rate drops by
    train.reduce_lr_factor after reduce_lr_patience epochs without improvement,
    training stops early_stopping_patience epochs after the best one, and model.h5
    holds the weights of the best epoch, not the last."""
    from hepprune.core import config as config_mod

    stage = plateau_run / "run/baseline"
    t = config_mod.load(stage / "config.yaml").train
    assert (t.early_stopping_patience, t.reduce_lr_patience, t.reduce_lr_factor) == (2, 1, 0.5)
    metrics = json.loads((stage / "metrics.json").read_text())
    rows = _history(stage)
    val = [r["val_loss"] for r in rows]
    assert metrics["stopped_early"] is True
    assert metrics["epochs_run"] == len(rows) < t.epochs
    assert [int(r["epoch"]) for r in rows] == list(range(1, len(rows) + 1))
    best = metrics["best_epoch"]
    assert val[best - 1] == min(val) and metrics["val_loss"] == pytest.approx(min(val), rel=1e-12)
    assert best < len(rows) and best == len(rows) - t.early_stopping_patience  # stopped `patience` epochs later
    assert all(v > val[best - 1] for v in val[best:])

    # learning_rate is the rate each epoch ran with: it starts at train.learning_rate
    # and is multiplied by the factor after every epoch that did not improve.
    lrs = [r["learning_rate"] for r in rows]
    assert lrs[0] == pytest.approx(t.learning_rate, rel=1e-6)
    for i in range(1, len(rows)):
        improved = val[i - 1] < min(val[:i - 1], default=np.inf)
        expected = lrs[i - 1] if improved else max(lrs[i - 1] * t.reduce_lr_factor, t.min_learning_rate)
        assert lrs[i] == pytest.approx(expected, rel=1e-6), (i + 1, lrs)
    assert lrs[-1] < lrs[0]

    # model.h5 is the best-validation model: its own validation loss is the best
    # epoch's, and differs from the last epoch's.
    saved = saved_model_val_mae(stage)
    assert saved == pytest.approx(val[best - 1], rel=1e-5), (saved, val)
    assert saved != pytest.approx(val[-1], rel=1e-3)


# ------------------------------------------------------------------ bad input


def _nan_shard(path):
    make_shard(path, n=1000)
    with h5py.File(path, "a") as f:
        t = f["target"][...]
        t[10] = np.nan
        f["target"][...] = t


@pytest.mark.parametrize("case, fragment", [
    ("missing_file", "no dataset file matches"),
    ("not_hdf5", "not a readable HDF5 file"),
    ("missing_dataset", "missing dataset 'reference'"),
    ("shapes_disagree", "shards disagree"),
    ("nan", "NaN or Inf in 'target'"),
    ("empty_split", "split is empty"),
    ("unknown_key", "unknown config key 'train.epoch'; valid keys in train: epochs"),
    ("out_of_range", "data.batch_size must be >= 1"),
    ("missing_config", "config file not found"),
    ("cnn_without_image", "no 'image' view"),
])
def test_bad_input_is_one_line_and_writes_nothing(tmp_path, run_cli, case, fragment):
    data = tmp_path / "data"
    data.mkdir()
    cfg, extra = _config(tmp_path, epochs=1), []
    pattern = str(data / "*.h5")
    if case == "missing_file":
        pattern = str(tmp_path / "nowhere/*.h5")
    elif case == "not_hdf5":
        (data / "a.h5").write_bytes(b"\x00garbage")
    elif case == "missing_dataset":
        make_shard(data / "a.h5", n=500)
        with h5py.File(data / "a.h5", "a") as f:
            del f["reference"]
    elif case == "shapes_disagree":
        make_shard(data / "a.h5", n=500, n_features=4)
        make_shard(data / "b.h5", n=500, n_features=6)
    elif case == "nan":
        _nan_shard(data / "a.h5")
    elif case == "empty_split":
        make_shard(data / "a.h5", n=3)
    else:
        make_shard(data / "a.h5", n=1000)
        extra = {"unknown_key": ["--set", "train.epoch=2"], "out_of_range": ["--set", "data.batch_size=0"],
                 "cnn_without_image": ["--set", "model.type=cnn"]}.get(case, [])
        if case == "missing_config":
            cfg = tmp_path / "nope.yaml"
    proc = run_cli("ptq/trainModel.py", "--config", cfg, "--run-dir", tmp_path / "run", "--data", pattern,
                   *extra)
    assert_one_line_error(proc, fragment)
    assert not (tmp_path / "run/baseline").exists()


# Root reads any file whatever its mode (CAP_DAC_OVERRIDE). To make chmod 000 bite
# as root too, the CLI is started through this launcher, which drops the two
# capabilities that bypass file permissions from the bounding set and then execs
# Python: a root without them is refused like any other user.
_WITHOUT_DAC_OVERRIDE = textwrap.dedent("""
    import ctypes, os, sys
    libc = ctypes.CDLL(None, use_errno=True)
    for cap in (1, 2):  # CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH
        if libc.prctl(24, cap, 0, 0, 0) != 0:  # PR_CAPBSET_DROP
            sys.exit(99)
    os.execv(sys.executable, [sys.executable, *sys.argv[1:]])
""")


def _run_unprivileged(*args):
    """Run ``python *args`` as run_cli does; as root, without the capabilities above."""
    prefix = ["-c", _WITHOUT_DAC_OVERRIDE] if os.geteuid() == 0 else []
    return subprocess.run([sys.executable, *prefix, *map(str, args)], cwd=ROOT, capture_output=True, text=True,
                          timeout=600, env=dict(os.environ, PYTHONUNBUFFERED="1"))


def test_unreadable_dataset_file_is_one_line_and_writes_nothing(tmp_path):
    data = tmp_path / "data"
    make_shard(data / "a.h5", n=1000)
    os.chmod(data / "a.h5", 0)
    try:
        probe = _run_unprivileged("-c", f"open({str(data / 'a.h5')!r}, 'rb').read(1)")
        if probe.returncode == 99:
            pytest.skip("running as root and cannot drop CAP_DAC_OVERRIDE (no CAP_SETPCAP)")
        if probe.returncode == 0:
            pytest.skip("a chmod 000 file is still readable here")
        assert "PermissionError" in probe.stderr, probe.stderr
        proc = _run_unprivileged(ROOT / "ptq/trainModel.py", "--config", _config(tmp_path, epochs=1), "--run-dir",
                                 tmp_path / "run", "--data", data / "*.h5")
    finally:
        os.chmod(data / "a.h5", 0o644)
    assert_one_line_error(proc, str(data / "a.h5"), "not a readable HDF5 file (PermissionError)")
    assert not (tmp_path / "run/baseline").exists()
