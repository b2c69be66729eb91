"""The stage lifecycle under faults, as a user meets them: a second process on the
same stage, a loss or metric that is not finite, a full disk, leftovers of a killed
write, targets whose directories would collide."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest
from conftest import ROOT, assert_one_line_error, make_shard

pytestmark = pytest.mark.slow

TINY = "seed: 5\ndata: {batch_size: 64, shuffle_buffer: 2000}\nmodel: {hidden_units: [16, 8]}\n"


def _train(run_cli, tmp_path, *args, config=TINY + "train: {epochs: 2, early_stopping_patience: 0}\n"):
    (tmp_path / "c.yaml").write_text(config)
    if not (tmp_path / "d.h5").exists():
        make_shard(tmp_path / "d.h5", n=3000, seed=9)
    return run_cli("ptq/trainModel.py", "--config", tmp_path / "c.yaml", "--run-dir", tmp_path / "run",
                   "--data", tmp_path / "d.h5", *args)


def test_a_second_process_on_the_same_stage_is_refused_naming_the_holder(tmp_path, run_cli):
    (tmp_path / "c.yaml").write_text(TINY + "train: {epochs: 400, early_stopping_patience: 0}\n")
    make_shard(tmp_path / "d.h5", n=3000, seed=9)
    args = [sys.executable, str(ROOT / "ptq/trainModel.py"), "--config", str(tmp_path / "c.yaml"),
            "--run-dir", str(tmp_path / "run"), "--data", str(tmp_path / "d.h5")]
    first = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        history = tmp_path / "run/baseline/history.csv"
        deadline = time.time() + 120
        while not history.exists():  # the first process is training: it holds the stage
            assert first.poll() is None and time.time() < deadline, "the first training never started"
            time.sleep(0.2)
        second = run_cli("ptq/trainModel.py", *args[2:])
        assert_one_line_error(second, f"run/baseline is in use by process {first.pid} on {socket.gethostname()}")
        assert first.poll() is None  # the holder was not disturbed
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    # A killed holder leaves no stale lock: the stage resumes.
    from hepprune.core import lifecycle

    with lifecycle.lock(tmp_path / "run/baseline"):
        pass


def test_a_zero_target_is_refused_before_training(tmp_path, run_cli):
    target = (np.arange(3000) + 1) * 0.01
    target[1234] = 0.0
    make_shard(tmp_path / "d.h5", n=3000, seed=9, target=target)
    proc = _train(run_cli, tmp_path)
    assert_one_line_error(proc, "d.h5: target 0 at event 1234 is not positive; the response pred/true divides by it")
    assert not (tmp_path / "run").exists()


def test_a_diverging_loss_stops_at_its_epoch_and_writes_no_result(tmp_path, run_cli):
    proc = _train(run_cli, tmp_path, "--set", "train.learning_rate=1.0e+30", "--set", "train.loss=mse")
    line = assert_one_line_error(proc, "epoch 1: the training loss is", "(not finite)", "learning rate 1e+30")
    assert "Epoch 2/2" not in proc.stdout + proc.stderr, line  # stopped at the epoch it happened
    stage = tmp_path / "run/baseline"
    assert not (stage / "metrics.json").exists() and not (stage / "model.h5").exists()
    assert not (stage / "checkpoint/state.json").exists()  # nothing of the diverged epoch was committed


def test_non_finite_metrics_never_reach_metrics_json(tmp_path):
    from hepprune.core import lifecycle
    from hepprune.core.errors import RunError

    with lifecycle.stage(tmp_path / "run/baseline", "x: 1\n") as stage:
        stage.begin()
        with pytest.raises(RunError, match=r"the metric test\.resolution_q68 is not a finite number"):
            stage.finish({"val_loss": 0.1, "test": {"response_median": 1.0, "resolution_q68": float("nan")}})
        with pytest.raises(RunError, match=r"the metric val_loss is not a finite number"):
            stage.finish({"val_loss": float("inf")})
    assert not (tmp_path / "run/baseline/metrics.json").exists()


@pytest.fixture
def small_disk(tmp_path):
    """A 150 KB tmpfs: room for the run's config and first files, not for its checkpoints."""
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a small tmpfs needs root")
    mount = tmp_path / "disk"
    mount.mkdir()

    def mount_with(size):
        subprocess.run(["umount", str(mount)], capture_output=True)
        proc = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mount)],
                              capture_output=True, text=True)
        if proc.returncode:
            pytest.skip(f"cannot mount a tmpfs here: {proc.stderr.strip()}")
        return mount

    yield mount_with
    subprocess.run(["umount", str(mount)], capture_output=True)


@pytest.mark.parametrize("size, where", [("40k", "checkpoint/best_weights.h5"), ("150k", "checkpoint/epoch_0001")])
def test_a_full_disk_is_one_line_naming_the_path(tmp_path, run_cli, small_disk, size, where):
    """40 KB fills up while an HDF5 file is written, 150 KB in TensorFlow's checkpoint writer."""
    disk = small_disk(size)
    make_shard(tmp_path / "d.h5", n=3000, seed=9)
    (tmp_path / "c.yaml").write_text(TINY.replace("[16, 8]", "[128, 64]") + "train: {epochs: 2}\n")
    proc = run_cli("ptq/trainModel.py", "--config", tmp_path / "c.yaml", "--run-dir", disk / "run",
                   "--data", tmp_path / "d.h5")
    assert_one_line_error(proc, f"no space left on device writing {disk}/run/baseline/{where}")
    assert "Exception ignored" not in proc.stderr and "out of memory" not in proc.stderr
    assert not (disk / "run/baseline/metrics.json").exists() and not (disk / "run/baseline/model.h5").exists()


def test_leftover_temporaries_are_removed_when_the_stage_runs_again(run, run_cli):
    stage = run / "prune_0.50"
    stale = [stage / ".model.h5.k3j2l1.tmp", stage / "checkpoint/.state.json.a1b2c3.tmp"]
    for path in stale:
        path.write_bytes(b"half a file")
    (stage / "metrics.json").unlink()  # as if killed after training, before the results
    run_cli("prune/train_model_prune.py", "--config", run.parent / "config.yaml", "--run-dir", run, check_ok=True)
    assert not any(p.exists() for p in stale)
    assert json.loads((stage / "metrics.json").read_text())["stage"] == "prune_0.50"


@pytest.mark.parametrize("targets", ["0.875,0.88", "0.5,0.504", "0.5,0.5"])
def test_targets_that_would_share_or_blur_a_directory_are_refused_before_training(run, run_cli, targets):
    before = sorted(p.name for p in run.iterdir())
    proc = run_cli("prune/train_model_prune.py", "--config", run.parent / "config.yaml", "--run-dir", run,
                   "--targets", targets, "--overwrite")
    assert_one_line_error(proc, "prune.targets:", "could not be told apart")
    assert sorted(p.name for p in run.iterdir()) == before


def test_directory_names_keep_every_decimal_a_target_has():
    from hepprune.core.runs import format_target, prune_stage

    assert [prune_stage(t) for t in (0.3, 0.5, 0.75, 0.875, 0.88)] == \
        ["prune_0.30", "prune_0.50", "prune_0.75", "prune_0.875", "prune_0.88"]
    assert format_target(0.9375) == "0.9375"


def test_hdf5_built_in_memory_is_the_file_keras_writes(tmp_path):
    """Built in memory (so a full disk cannot leave HDF5 half-way), the bytes are still
    those tf_keras writes to disk: h5_bytes and gzip_bytes in metrics.json do not change."""
    from hepprune.core.backend import keras
    from hepprune.core.fit import h5_image, weights_h5_image

    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(8, name="fc1"), keras.layers.Dense(1)])
    model.save(tmp_path / "m.h5", save_format="h5", include_optimizer=False)
    model.save_weights(tmp_path / "w.h5", save_format="h5")
    assert h5_image(model) == (tmp_path / "m.h5").read_bytes()
    assert weights_h5_image(model) == (tmp_path / "w.h5").read_bytes()
