"""prune/analyze_prune.py as a user runs it, on a tiny baseline and one pruned model."""

import csv
import re
import json
import shutil
import subprocess
import sys
import textwrap

import pytest

from conftest import ROOT, assert_one_line_error, make_shard

pytestmark = pytest.mark.slow

CONFIG = textwrap.dedent("""
    seed: 5
    data: {batch_size: 64, shuffle_buffer: 2000}
    model: {hidden_units: [32, 16]}
    train: {epochs: 2, early_stopping_patience: 0}
    prune: {targets: [0.5], epochs: 5, warmup_epochs: 1, pruning_epochs: 2}
    analysis: {samples: 200, n_bins: 3, bootstrap: 20}
""")
KEYS = ("name", "sparsity", "response_median", "response_mean", "resolution_q68", "resolution_std", "params",
        "nonzero_params", "h5_bytes", "gzip_bytes", "tflite_bytes", "tflite_quant_bytes", "multipliers")


@pytest.fixture(scope="module")
def pruned_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("analysis")
    (root / "config.yaml").write_text(CONFIG)
    make_shard(root / "data.h5", n=3000, seed=9)
    for script, extra in (("ptq/trainModel.py", ["--data", str(root / "data.h5")]), ("prune/train_model_prune.py", [])):
        proc = subprocess.run([sys.executable, str(ROOT / script), "--config", str(root / "config.yaml"),
                               "--run-dir", str(root / "run"), *extra], cwd=ROOT, capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr[-3000:]
    return root


@pytest.fixture
def run(pruned_run, tmp_path):
    shutil.copytree(pruned_run / "run", tmp_path / "run")
    shutil.copy(pruned_run / "config.yaml", tmp_path / "config.yaml")
    return tmp_path / "run"


def _analyse(run_cli, run, *args, check_ok=True):
    return run_cli("prune/analyze_prune.py", "--config", run.parent / "config.yaml", "--run-dir", run, *args,
                   check_ok=check_ok)


def test_analysis_writes_summary_report_and_plots(run, run_cli):
    proc = _analyse(run_cli, run)
    out = run / "analysis"
    summary = json.loads((out / "summary.json").read_text())
    assert summary["samples"] == 200 and len(summary["bins"]) == 4
    names = [m["name"] for m in summary["models"]]
    assert names == ["baseline", "prune_0.50"]
    for m in summary["models"]:
        assert set(KEYS) <= set(m), set(KEYS) - set(m)
        assert m["response_median_err"] > 0 and len(m["binned"]) == 3
        assert sum(b["n_events"] for b in m["binned"]) == 200
    base, pruned = summary["models"]
    assert base["sparsity"] == 0 and abs(pruned["sparsity"] - 0.5) <= 0.01
    assert pruned["nonzero_params"] < base["nonzero_params"] and pruned["gzip_bytes"] < base["gzip_bytes"]
    # fc1 4x32 and fc2 32x16 at half sparsity, the 16-weight output layer dense.
    assert base["multipliers"] == 128 + 512 + 16
    assert pruned["multipliers"] == 64 + 256 + 16
    assert base["response_shift"] == 0 and pruned["response_shift"] is not None
    assert {"response_median", "resolution_q68"} <= set(summary["reference"])
    rows = list(csv.DictReader((out / "summary.csv").open()))
    assert [r["name"] for r in rows] == names and rows[1]["multipliers"] == str(pruned["multipliers"])
    report = (out / "report.md").read_text()
    assert "| prune_0.50 |" in report and "raw reference" in report and "multipliers" in report
    for plot in ("response_vs_true", "resolution_vs_true", "ratio_hist", "layer_sparsity", "size_vs_sparsity"):
        assert (out / f"plots/{plot}.png").stat().st_size > 5000, plot
    assert (out / "metrics.json").is_file()
    assert "prune_0.50" in proc.stdout
    # hls4ml C simulation of each model, on raw inputs (standardisation folded in).
    for m in summary["models"]:
        assert m["hls_max_abs_diff"] < 0.05, m["hls_max_abs_diff"]  # ap_fixed<16,6>: 10 fractional bits
        assert abs(m["hls_response_median"] - m["response_median"]) < 0.05
        params_h = (run / "hls4ml" / m["name"] / "firmware/parameters.h").read_text()
        zeros = [int(z) for z in re.findall(r"n_zeros = (\d+);", params_h)]  # hls4ml's own count, per layer
        assert zeros == [layer["zeros"] for layer in m["firmware"]["layers"].values()]
    assert "hls4ml C simulation" in report


def test_all_samples_and_model_selection(run, run_cli):
    _analyse(run_cli, run, "--samples", "all", "--models", "prune_0.50", "--no-hls")
    summary = json.loads((run / "analysis/summary.json").read_text())
    assert summary["samples"] == 300  # the whole test split: 10 % of 3000
    assert [m["name"] for m in summary["models"]] == ["prune_0.50"]
    assert summary["models"][0]["response_shift"] is None  # no baseline to compare with


@pytest.mark.parametrize("args, fragment", [
    (["--samples", "301"], "larger than the test split (300 events)"),
    (["--samples", "0"], "positive integer or 'all'"),
    (["--models", "baseline,prune_0.90"], "unknown model 'prune_0.90'; models in"),
])
def test_bad_input(run, run_cli, args, fragment):
    assert_one_line_error(_analyse(run_cli, run, *args, check_ok=False), fragment)
    assert not (run / "analysis").exists()


def test_run_with_no_models(tmp_path, run_cli):
    (tmp_path / "config.yaml").write_text(CONFIG)
    (tmp_path / "run").mkdir()
    proc = run_cli("prune/analyze_prune.py", "--config", tmp_path / "config.yaml", "--run-dir", tmp_path / "run")
    assert_one_line_error(proc, "holds no finished model")


def test_folded_standardisation_gives_the_same_output_on_raw_inputs():
    import numpy as np

    from data.backend import keras
    from prune.hls_bridge import fold_standardization

    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((5,), name="inputs"), keras.layers.Dense(8, name="fc1"),
                              keras.layers.Activation("relu"), keras.layers.Dense(1, name="output")])
    w = model.get_layer("fc1").get_weights()
    w[0][1, :] = 0  # pruned weights must stay pruned
    model.get_layer("fc1").set_weights(w)
    rng = np.random.default_rng(1)
    mean, std = rng.normal(50, 20, 5).astype("f4"), rng.uniform(0.5, 30, 5).astype("f4")
    raw = (mean + std * rng.normal(size=(300, 5))).astype("f4")
    folded = fold_standardization(model, mean, std)
    np.testing.assert_allclose(folded.predict(raw, verbose=0), model.predict((raw - mean) / std, verbose=0),
                               rtol=1e-4, atol=1e-4)
    assert (folded.get_layer("fc1").get_weights()[0][1] == 0).all()


def test_a_layer_hls4ml_cannot_convert_is_named(tmp_path):
    from data.backend import keras
    from data.config import HlsConfig
    from data.errors import HepPruneError
    from prune.hls_bridge import convert

    model = keras.Sequential([keras.Input((4,), name="inputs"), keras.layers.Dense(4, name="fc1"),
                              keras.layers.Lambda(lambda t: 2 * t, name="doubler"),
                              keras.layers.Dense(1, name="output")])
    with pytest.raises(HepPruneError, match="hls4ml cannot convert layer doubler \\(Lambda\\)"):
        convert(model, tmp_path / "prj", HlsConfig())
