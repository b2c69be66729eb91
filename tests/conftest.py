"""Shared test helpers: tiny real HDF5 files and a CLI runner."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
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


PRUNED_RUN_CONFIG = textwrap.dedent("""
    seed: 5
    data: {batch_size: 64, shuffle_buffer: 2000}
    model: {hidden_units: [32, 16]}
    train: {epochs: 2, early_stopping_patience: 0}
    prune: {targets: [0.5], epochs: 5, warmup_epochs: 1, pruning_epochs: 2}
    analysis: {samples: 200, n_bins: 3, bootstrap: 20}
""")


@pytest.fixture(scope="session")
def pruned_run(tmp_path_factory):
    """A tiny finished run (baseline and prune_0.50), built once; copy it before changing it."""
    root = tmp_path_factory.mktemp("analysis")
    (root / "config.yaml").write_text(PRUNED_RUN_CONFIG)
    make_shard(root / "data.h5", n=3000, seed=9)
    for script, extra in (("ptq/trainModel.py", ["--data", str(root / "data.h5")]), ("prune/train_model_prune.py", [])):
        proc = subprocess.run([sys.executable, str(ROOT / script), "--config", str(root / "config.yaml"),
                               "--run-dir", str(root / "run"), *extra], cwd=ROOT, capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr[-3000:]
    return root


@pytest.fixture
def run(pruned_run, tmp_path):
    """A private copy of the tiny finished run, its config beside it."""
    shutil.copytree(pruned_run / "run", tmp_path / "run")
    shutil.copy(pruned_run / "config.yaml", tmp_path / "config.yaml")
    return tmp_path / "run"


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
