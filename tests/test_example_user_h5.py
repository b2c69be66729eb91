"""examples/user_h5: a user's pretrained .h5 adopted as the baseline, pruned and exported to hls4ml."""

import json
import subprocess
import sys

import numpy as np
import pytest
from conftest import ROOT

from hepprune.core.config import PtqConfig

pytestmark = pytest.mark.slow


def test_user_h5_example_runs(tmp_path):
    proc = subprocess.run([sys.executable, "examples/user_h5/run.py", "--out", str(tmp_path), "--tiny"],
                          cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:] + proc.stdout[-2000:]
    run = tmp_path / "run"
    base = json.loads((run / "baseline/metrics.json").read_text())
    assert base["epochs_run"] == 0 and base["from_file"] == str(tmp_path / "user_model.h5")

    from hepprune.core.backend import keras

    user = keras.models.load_model(str(tmp_path / "user_model.h5"), compile=False)
    adopted = keras.models.load_model(str(run / "baseline/model.h5"), compile=False)
    for a, b in zip(adopted.get_weights(), user.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    for target in ("0.50", "0.75"):
        pruned = json.loads((run / f"prune_{target}/metrics.json").read_text())
        assert abs(pruned["achieved_sparsity"] - float(target)) <= 0.01
    summary = json.loads((run / "analysis/summary.json").read_text())
    assert [m["name"] for m in summary["models"]] == ["baseline", "prune_0.50", "prune_0.75"]
    for m in summary["models"]:
        # raw-input activations overflow ap_fixed<16,6>: the widened export must follow Keras.
        # Measured max |diff| 0.023, 0.023 and 0.0058, response shifts -0.08, -0.04 and -0.14 %.
        assert m["hls_inputs"] == "raw", m["name"]
        assert m["hls_max_abs_diff"] < 0.05, (m["name"], m["hls_max_abs_diff"])
        assert abs(m["hls_response_median"] - m["response_median"]) < 0.003, m["name"]
        assert m["hls_response_ok"] is True and abs(m["hls_response_shift"]) <= PtqConfig().tolerance, m["name"]
        assert (run / "hls4ml" / m["name"] / "firmware").is_dir()
    assert "prune_0.75" in proc.stdout and "hls4ml projects" in proc.stdout
