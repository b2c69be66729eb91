"""Shared test helpers: tiny real HDF5 files and a CLI runner."""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from hepprune.data.schema import write_shard

ROOT = Path(__file__).resolve().parents[1]


def _shared_data() -> Path:
    """../shared/data beside the checkout; $HEPPRUNE_SHARED_DATA or /work/shared/data otherwise."""
    candidates = [os.environ.get("HEPPRUNE_SHARED_DATA"), ROOT.parent / "shared/data", "/work/shared/data"]
    for c in candidates:
        if c and Path(c).is_dir():
            return Path(c)
    return ROOT.parent / "shared/data"


NANOAOD_SAMPLE = _shared_data() / "nanoAOD_2015_CMS_Open_Data_ttbar.root"


def make_shard(path, n=2000, n_features=4, seed=0, chunk_bytes=4096, **overrides):
    """A small regression shard whose target doubles as a unique event id
    (distinct in float32 across shards of different seeds)."""
    rng = np.random.default_rng(seed)
    true = (rng.permutation(n) + 1 + seed * 100_000) * 0.01
    x = rng.normal(size=(n, n_features)).astype(np.float32)
    ref = true * (0.8 + 0.05 * x[:, 0])
    x[:, 1] = np.log(ref)
    kwargs = dict(inputs=x, target=true, reference=ref,
                  feature_names=[f"f{i}" for i in range(n_features)], target_name="E_true",
                  reference_name="raw", source="test", parameters={"seed": seed}, chunk_bytes=chunk_bytes)
    kwargs.update(overrides)
    return write_shard(path, **kwargs)


# `make test` runs two xdist workers that take whole files in collection order
# (--dist loadfile --no-loadscope-reorder). The longest files (minutes each, in
# this order) go first and the many short ones fill in at the end, so both
# workers finish together instead of one starting a long file late.
LONGEST_FIRST = ("test_rtl.py", "test_user_models.py", "test_slurm_cluster.py", "test_pruning.py", "test_qat.py",
                 "test_analysis.py", "test_example_digits.py", "test_damaged_inputs.py", "test_example_user_h5.py",
                 "test_pretraining.py", "test_cnn_regression.py", "test_example_weight_vs_neuron.py",
                 "test_lifecycle.py", "test_bitwidth_scan.py")


def pytest_collection_modifyitems(items):
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: a file keeps its own order


def _run_root(tmp_path_factory) -> Path:
    """This run's temporary base, common to all xdist workers."""
    root = tmp_path_factory.getbasetemp()
    return root.parent if os.environ.get("PYTEST_XDIST_WORKER") else root


def built_once(tmp_path_factory, name: str, build) -> Path:
    """``build(directory)`` run by the first xdist worker that asks, under a
    lock; the others wait for it and get the same directory. Tests only read
    it (or copy it first)."""
    root = _run_root(tmp_path_factory)
    path, done = root / name, root / f"{name}.done"
    with open(root / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        if not done.exists():
            shutil.rmtree(path, ignore_errors=True)  # a worker that failed to build it
            path.mkdir()
            build(path)
            done.touch()
    return path


@pytest.fixture(scope="session", autouse=True)
def csim_cache(tmp_path_factory):
    """One cache of C-simulation libraries (ptq/csim_build.py) for the whole run,
    shared by the xdist workers, started empty: each distinct firmware is
    compiled once per run, and the user's own cache is never touched."""
    os.environ["HEPPRUNE_CACHE_DIR"] = str(_run_root(tmp_path_factory) / "hepprune-cache")
    return Path(os.environ["HEPPRUNE_CACHE_DIR"])


@pytest.fixture
def run_cli():
    """Run a project script as a user would (`python ptq/trainModel.py ...`)."""

    def _run(script: str, *args, timeout=600, check_ok=None):
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        proc = subprocess.run([sys.executable, str(ROOT / script), *map(str, args)], cwd=ROOT,
                              capture_output=True, text=True, timeout=timeout, env=env)
        if check_ok and proc.returncode != 0:
            raise AssertionError(f"{script} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
        return proc

    return _run


def assert_one_line_error(proc, *fragments):
    """A bad input ends in exit 2 and exactly one `error:` line, no traceback."""
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, proc.stderr
    for fragment in fragments:
        assert fragment in errors[0], errors[0]
    return errors[0]


def kill_mid_training(script: str, args, state: Path, after_epochs: int = 2, settle: float = 0.2) -> int:
    """Start a project script, SIGKILL it once its checkpoint has `after_epochs`
    epochs done (plus `settle` seconds, so the kill lands inside the next epoch),
    and return the epochs the checkpoint holds: the state a resume starts from."""
    proc = subprocess.Popen([sys.executable, str(ROOT / script), *map(str, args)], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if state.is_file() and json.loads(state.read_text())["epochs_done"] >= after_epochs:
            break
        time.sleep(0.02)
    time.sleep(settle)
    assert proc.poll() is None, f"{script} finished before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    return int(json.loads(state.read_text())["epochs_done"])


# The schedule is pinned (learning rate, constant fine-tune): the tests' measured figures belong to these models.
PRUNED_RUN_CONFIG = textwrap.dedent("""
    seed: 5
    data: {batch_size: 64, shuffle_buffer: 2000}
    model: {hidden_units: [32, 16]}
    train: {epochs: 2, early_stopping_patience: 0}
    prune: {targets: [0.5], epochs: 5, warmup_epochs: 1, pruning_epochs: 2, learning_rate: 0.0005,
            finetune_lr: constant}
    analysis: {samples: 200, n_bins: 3, bootstrap: 20}
""")


def _build_pruned_run(root: Path) -> None:
    (root / "config.yaml").write_text(PRUNED_RUN_CONFIG)
    make_shard(root / "data.h5", n=3000, seed=9)
    for script, extra in (("ptq/trainModel.py", ["--data", str(root / "data.h5")]), ("prune/train_model_prune.py", [])):
        proc = subprocess.run([sys.executable, str(ROOT / script), "--config", str(root / "config.yaml"),
                               "--run-dir", str(root / "run"), *extra], cwd=ROOT, capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr[-3000:]


@pytest.fixture(scope="session")
def pruned_run(tmp_path_factory):
    """A tiny finished run (baseline and prune_0.50), built once for all workers; copy it before changing it."""
    return built_once(tmp_path_factory, "pruned_run", _build_pruned_run)


@pytest.fixture
def run(pruned_run, tmp_path):
    """A private copy of the tiny finished run, its config beside it."""
    shutil.copytree(pruned_run / "run", tmp_path / "run")
    shutil.copy(pruned_run / "config.yaml", tmp_path / "config.yaml")
    return tmp_path / "run"


PLATEAU_CONFIG = textwrap.dedent("""
    seed: 7
    data: {batch_size: 32, shuffle_buffer: 2000}
    model: {hidden_units: [32, 16]}
    train: {epochs: 30, learning_rate: 0.01, early_stopping_patience: 2, reduce_lr_patience: 1,
            reduce_lr_factor: 0.5}
    prune: {targets: [0.5], epochs: 5, warmup_epochs: 1, pruning_epochs: 2}
""")


@pytest.fixture(scope="session")
def plateau_run(tmp_path_factory):
    """A tiny baseline whose validation loss stops improving within a few epochs:
    its target (true/reference) is noise the inputs cannot predict, 480 training
    events. Pretraining reduces the learning rate and stops early long before
    train.epochs. Built once for all workers; copy it before changing it."""
    return built_once(tmp_path_factory, "plateau_run", _build_plateau_run)


def _build_plateau_run(root: Path) -> None:
    (root / "config.yaml").write_text(PLATEAU_CONFIG)
    n = 600
    rng = np.random.default_rng(21)
    true = (rng.permutation(n) + 1) * 0.01
    make_shard(root / "data.h5", n=n, seed=21, target=true, reference=true * rng.uniform(0.5, 1.5, n),
               inputs=rng.normal(size=(n, 4)).astype(np.float32))
    proc = subprocess.run([sys.executable, str(ROOT / "ptq/trainModel.py"), "--config", str(root / "config.yaml"),
                           "--run-dir", str(root / "run"), "--data", str(root / "data.h5")], cwd=ROOT,
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]


def saved_model_val_mae(stage: Path) -> float:
    """A stage's saved model.h5's mean absolute error on the validation split
    (the stage's config, the run's standardisation), recomputed outside the fit
    loop; comparable with history.csv's val_loss for train.loss mae."""
    from hepprune.core import config as config_mod
    from hepprune.core import targets
    from hepprune.core.backend import keras
    from hepprune.data.prepare import prepare_data

    cfg = config_mod.load(stage / "config.yaml")
    assert cfg.train.loss == "mae" and cfg.task == "regression"
    model = keras.models.load_model(str(stage / "model.h5"), compile=False)
    with prepare_data(cfg, stage.parent / "baseline") as prepared:  # its saved standardisation
        errors = [np.abs(np.asarray(model.predict_on_batch(x), np.float64).reshape(-1)
                         - targets.encode(true, ref, cfg.data))
                  for x, true, ref in prepared.batches("val", 1024)]
    return float(np.concatenate(errors).mean())


SYNTH = ROOT / "tests/data/synth"  # canned C-synthesis reports, and a stand-in vitis-run that writes them


def install_stand_in_vitis(bin_dir: Path) -> Path:
    """Executables ``vitis-run`` (tests/data/synth/vitis_run_stand_in.py) and
    ``vitis_hls`` (which hls4ml 1.3 never calls: it logs and fails) in
    ``bin_dir``, to put first on PATH; returns the JSON-lines log of their calls."""
    bin_dir.mkdir(parents=True, exist_ok=True)
    log = bin_dir / "calls.jsonl"
    stand_in = SYNTH / "vitis_run_stand_in.py"
    scripts = {
        "vitis-run": f"#!/bin/sh\nSTAND_IN_LOG='{log}' exec '{sys.executable}' '{stand_in}' \"$@\"\n",
        "vitis_hls": f"#!/bin/sh\necho '{{\"tool\": \"vitis_hls\"}}' >> '{log}'\nexit 1\n",
    }
    for name, text in scripts.items():
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    return log


def make_class_shard(path, n=2000, n_classes=3, n_features=6, image=False, seed=0):
    """A small classification shard: class-dependent feature means (learnable,
    not trivially separable), optionally with an 8x8x1 image view."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, n_classes, n)
    centres = rng.normal(scale=1.5, size=(n_classes, n_features))
    x = (centres[labels] + rng.normal(size=(n, n_features))).astype(np.float32)
    kwargs = {}
    if image:
        pattern = rng.normal(size=(n_classes, 8, 8, 1))
        kwargs.update(image=(pattern[labels] + rng.normal(scale=1.0, size=(n, 8, 8, 1))).astype(np.float32),
                      image_layers=["pixels"])
    return write_shard(path, inputs=x, target=labels.astype(np.float32), reference=np.zeros(n, np.float32),
                       feature_names=[f"f{i}" for i in range(n_features)], target_name="class",
                       target_unit="", reference_name="none", source="test", parameters={"seed": seed},
                       class_names=[f"c{k}" for k in range(n_classes)], chunk_bytes=4096, **kwargs)
