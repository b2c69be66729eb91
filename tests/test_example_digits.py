"""examples/digits_cnn: a small CNN on real handwritten digits, pruned 0.5 -> 0.8 and 0.3 -> 0.8."""

import json
import subprocess
import sys

import h5py
import numpy as np
import pytest
from conftest import ROOT

pytestmark = pytest.mark.slow


def test_digits_converter_writes_the_schema(tmp_path, run_cli):
    run_cli("data/convert_digits.py", "--out", tmp_path, check_ok=True)
    from hepprune.data.schema import open_dataset

    info = open_dataset(tmp_path / "digits.h5")
    assert info.n_events == 1797 and info.image_shape == (8, 8, 1) and info.class_names == tuple("0123456789")
    with h5py.File(tmp_path / "digits.h5") as f:
        labels, image, flat = f["target"][:], f["image"][:], f["inputs"][:]
    assert set(np.unique(labels)) == set(range(10))
    np.testing.assert_array_equal(image.reshape(len(image), -1), flat)
    assert 0 <= image.min() and image.max() <= 16


def test_digits_example_runs_and_compares_with_the_dense_model(tmp_path):
    proc = subprocess.run([sys.executable, "examples/digits_cnn/run.py", "--out", str(tmp_path), "--tiny"], cwd=ROOT,
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:] + proc.stdout[-2000:]
    rows = json.loads((tmp_path / "digits_pruning.json").read_text())
    assert [r["model"] for r in rows] == ["dense", "pruned 0.5 -> 0.8", "pruned 0.3 -> 0.8"]
    dense, *pruned = rows
    assert dense["accuracy"] > 0.5  # ten classes: chance is 0.1, even after 3 epochs
    for r in pruned:
        assert abs(r["sparsity"] - 0.8) <= 0.01
        assert r["gzip_bytes"] < 0.75 * dense["gzip_bytes"]
        assert r["accuracy"] > 0.5 and abs(r["hls_accuracy"] - r["accuracy"]) <= 0.05
    for start in ("0.5", "0.3"):
        schedule = json.loads((tmp_path / f"init{start}/prune_0.80/schedule.json").read_text())
        assert schedule["initial_sparsity"] == float(start)
    assert "pruned 0.3 -> 0.8" in proc.stdout
