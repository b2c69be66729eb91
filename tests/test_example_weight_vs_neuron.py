"""examples/weight_vs_neuron: weight vs neuron pruning of the same baseline, with plots."""

import csv
import json
import subprocess
import sys

import pytest
from conftest import ROOT

pytestmark = pytest.mark.slow


def test_weight_vs_neuron_example_runs(tmp_path):
    proc = subprocess.run([sys.executable, "examples/weight_vs_neuron/run.py", "--out", str(tmp_path), "--tiny"],
                          cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:] + proc.stdout[-2000:]
    rows = json.loads((tmp_path / "weight_vs_neuron.json").read_text())
    assert [(r["method"], r["target"]) for r in rows] == [("dense", 0.0), ("weight", 0.5), ("weight", 0.75),
                                                          ("neuron", 0.5), ("neuron", 0.75)]
    for r in rows[1:]:
        assert abs(r["sparsity"] - r["target"]) <= 0.01
    by = {(r["method"], r["target"]): r for r in rows}
    for target in (0.5, 0.75):
        # neuron pruning exports a physically smaller model; weight pruning keeps the shape
        assert by["neuron", target]["params"] < by["weight", target]["params"] == rows[0]["params"]
    with open(tmp_path / "weight_vs_neuron.csv") as f:
        assert len(list(csv.DictReader(f))) == 5
    assert (tmp_path / "weight_vs_neuron.png").stat().st_size > 5000
    assert (tmp_path / "weight/sensitivity/sensitivity.png").is_file()
    base_w = json.loads((tmp_path / "weight/baseline/metrics.json").read_text())
    base_n = json.loads((tmp_path / "neuron/baseline/metrics.json").read_text())
    assert base_w == base_n  # both methods start from the same dense model
