"""prune/analyze_prune.py as a user runs it, on a tiny baseline and one pruned model."""

import csv
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import PRUNED_RUN_CONFIG as CONFIG
from conftest import ROOT, assert_one_line_error

from hepprune.core.config import PtqConfig

pytestmark = pytest.mark.slow

KEYS = ("name", "sparsity", "response_median", "response_mean", "resolution_q68", "resolution_std", "params",
        "nonzero_params", "h5_bytes", "gzip_bytes", "tflite_bytes", "tflite_quant_bytes", "multipliers")


def _analyse(run_cli, run, *args, check_ok=True):
    return run_cli("prune/analyze_prune.py", "--config", run.parent / "config.yaml", "--run-dir", run, *args,
                   check_ok=check_ok)


@pytest.fixture(scope="module")
def analysed(pruned_run, tmp_path_factory):
    """The tiny run analysed as by default (both models, hls4ml C simulation):
    (run directory, the command's stdout), read by the tests below."""
    root = tmp_path_factory.mktemp("analysed")
    shutil.copytree(pruned_run / "run", root / "run")
    shutil.copy(pruned_run / "config.yaml", root / "config.yaml")
    proc = subprocess.run([sys.executable, str(ROOT / "prune/analyze_prune.py"), "--config", str(root / "config.yaml"),
                           "--run-dir", str(root / "run")], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return root / "run", proc.stdout


def test_analysis_writes_summary_report_and_plots(analysed):
    run, stdout = analysed
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
    # Shifts are paired: on the same events, with one set of resamples for both models.
    assert base["response_shift_err"] == 0 and base["physics"]["ok"] is True
    assert pruned["resolution_shift_err"] > 0 and pruned["response_shift_err"] > 0
    assert pruned["resolution_shift"] == pytest.approx(pruned["resolution_q68"] / base["resolution_q68"] - 1)
    assert all("resolution_shift_err" in b and "response_beyond" in b for b in pruned["binned"])
    assert pruned["physics"]["ok"] == (not pruned["physics"]["beyond"])
    assert {"response_median", "resolution_q68"} <= set(summary["reference"])
    rows = list(csv.DictReader((out / "summary.csv").open()))
    assert [r["name"] for r in rows] == names and rows[1]["multipliers"] == str(pruned["multipliers"])
    report = (out / "report.md").read_text()
    assert "| prune_0.50 |" in report and "raw reference" in report and "multipliers" in report
    shift = f"{100 * pruned['resolution_shift']:+.1f} ± {100 * pruned['resolution_shift_err']:.1f} %"
    assert shift in report and "Resolution shift against the baseline in bins" in report
    assert "- prune_0.50: " in report and "against the baseline (paired" in stdout.lower()
    assert rows[1]["physics_ok"] == str(pruned["physics"]["ok"])
    for plot in ("response_vs_true", "resolution_vs_true", "ratio_hist", "layer_sparsity", "size_vs_sparsity"):
        assert (out / f"plots/{plot}.png").stat().st_size > 5000, plot
    assert (out / "metrics.json").is_file()
    assert "prune_0.50" in stdout
    # hls4ml C simulation of each model, on raw inputs (standardisation folded in).
    # The default precision rounds and saturates: measured max |diff| 0.0061 (baseline)
    # and 0.0034 (prune_0.50), response shifts +0.08 % and +0.09 %. A truncating
    # ap_fixed<16,6> gives 0.041 and 0.023, shifts -2.3 % and -1.4 %, and the **check** flag.
    tolerance = PtqConfig().tolerance  # the config leaves ptq.tolerance at its default
    for m in summary["models"]:
        assert m["hls_max_abs_diff"] < 0.012, m["hls_max_abs_diff"]  # ap_fixed<16,6>: 10 fractional bits
        assert abs(m["hls_response_median"] - m["response_median"]) < 0.002
        assert m["hls_response_ok"] is True and abs(m["hls_response_shift"]) <= tolerance, m["hls_response_shift"]
        params_h = (run / "hls4ml" / m["name"] / "firmware/parameters.h").read_text()
        zeros = [int(z) for z in re.findall(r"n_zeros = (\d+);", params_h)]  # hls4ml's own count, per layer
        assert zeros == [layer["zeros"] for layer in m["firmware"]["layers"].values()]
    assert "hls4ml C simulation" in report and "% **check** |" not in report  # the flag, not the legend
    assert all(abs(float(r["hls_response_shift"])) <= tolerance for r in rows)


@pytest.fixture(scope="module")
def resource_all_samples(pruned_run, tmp_path_factory):
    """One analysis without hls4ml of prune_0.50 alone on the whole test split,
    with the plain resource strategy at reuse factor 4 (firmware estimates only),
    read by the two tests below."""
    root = tmp_path_factory.mktemp("resource_all_samples")
    shutil.copytree(pruned_run / "run", root / "run")
    shutil.copy(pruned_run / "config.yaml", root / "config.yaml")
    proc = subprocess.run([sys.executable, str(ROOT / "prune/analyze_prune.py"), "--config", str(root / "config.yaml"),
                           "--run-dir", str(root / "run"), "--samples", "all", "--models", "prune_0.50", "--no-hls",
                           "--set", "hls.strategy=resource", "--set", "hls.reuse_factor=4"],
                          cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return root / "run"


def test_all_samples_and_model_selection(resource_all_samples):
    summary = json.loads((resource_all_samples / "analysis/summary.json").read_text())
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


@pytest.mark.parametrize("n, target, warning, bins", [
    (80, None, "bins with fewer than 20 test events merged", 1),  # an 8-event test split, 3 bins asked for
    (3000, 50.0, "every true E_true in the 300 test events is 50 GeV: one bin", 1),  # a fixed beam energy
])
def test_sparse_bins_are_merged_and_a_constant_target_is_one_bin(tmp_path, run_cli, n, target, warning, bins):
    """Never a bin of a handful of events reported as a resolution (nor 0 +- 0), never a traceback."""
    from conftest import make_shard

    (tmp_path / "config.yaml").write_text(CONFIG)
    extra = {} if target is None else {"target": np.full(n, target)}
    make_shard(tmp_path / "data.h5", n=n, seed=9, **extra)
    run = tmp_path / "run"
    run_cli("ptq/trainModel.py", "--config", tmp_path / "config.yaml", "--run-dir", run, "--data",
            tmp_path / "data.h5", check_ok=True)
    proc = run_cli("prune/analyze_prune.py", "--config", tmp_path / "config.yaml", "--run-dir", run, "--no-hls",
                   "--samples", "all", check_ok=True)
    assert warning in proc.stderr, proc.stderr[-2000:]
    (base,) = json.loads((run / "analysis/summary.json").read_text())["models"]
    assert len(base["binned"]) == bins and base["binned"][0]["n_events"] == base["n_events"]
    assert base["binned"][0]["resolution_q68"] == pytest.approx(base["resolution_q68"])


def test_folded_standardisation_gives_the_same_output_on_raw_inputs():
    from hepprune.core.backend import keras
    from hepprune.ptq.hls_bridge import fold_standardization

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
    from hepprune.core.backend import keras
    from hepprune.core.config import HlsConfig
    from hepprune.core.errors import HepPruneError
    from hepprune.ptq.hls_bridge import convert

    model = keras.Sequential([keras.Input((4,), name="inputs"), keras.layers.Dense(4, name="fc1"),
                              keras.layers.Lambda(lambda t: 2 * t, name="doubler"),
                              keras.layers.Dense(1, name="output")])
    with pytest.raises(HepPruneError, match="hls4ml cannot convert layer doubler \\(Lambda\\)"):
        convert(model, tmp_path / "prj", HlsConfig())


def test_synth_without_a_vendor_tool_is_refused_up_front(run, run_cli):
    from hepprune.ptq.synthesis import find_hls_tool

    if find_hls_tool() is not None:
        pytest.skip("vitis_hls or vivado_hls is on PATH here; --synth would really run")
    assert_one_line_error(_analyse(run_cli, run, "--synth", check_ok=False), "--synth needs vitis_hls or vivado_hls")
    assert_one_line_error(_analyse(run_cli, run, "--synth", "--no-hls", check_ok=False),
                          "--synth needs the hls4ml export")
    assert not (run / "analysis").exists() and not (run / "hls4ml").exists()


def test_synth_puts_the_vendor_figures_in_every_output(run, run_cli, tmp_path, monkeypatch):
    """--synth end to end: the export is C-simulated and then built by hls4ml's
    Vitis backend, which runs the stand-in vitis-run (first on PATH) in the
    project; the report it writes, with this config's part and clock, reaches
    summary.json, summary.csv and report.md."""
    from conftest import SYNTH, install_stand_in_vitis

    from hepprune.ptq.synthesis import parse_report

    log = install_stand_in_vitis(tmp_path / "bin")
    monkeypatch.setenv("PATH", os.pathsep.join([str(tmp_path / "bin"), os.environ["PATH"]]))
    _analyse(run_cli, run, "--synth", "--models", "prune_0.50", "--set", "hls.part=xcvu9p-flga2104-2L-e",
             "--set", "hls.clock_period=4.0")
    project = run / "hls4ml/prune_0.50"
    (call,) = [json.loads(line) for line in log.read_text().splitlines()]
    assert call["tool"] == "vitis-run" and Path(call["cwd"]).resolve() == project.resolve()
    assert (call["opt"]["csim"], call["opt"]["synth"], call["opt"]["export"]) == ("0", "1", "0")
    assert call["project"]["part"] == "xcvu9p-flga2104-2L-e"

    out = run / "analysis"
    (m,) = json.loads((out / "summary.json").read_text())["models"]
    assert m["hls_max_abs_diff"] < 0.007  # C-simulated as without --synth
    assert m["synthesis"] == {**parse_report(SYNTH / "vitis"), "part": "xcvu9p-flga2104-2L-e", "clock_target_ns": 4.0}
    assert m["synthesis"]["totals"] == {"DSP": 38, "LUT": 5873, "FF": 2145, "BRAM_18K": 0, "URAM": 0}
    assert len(m["synthesis"]["layers"]) == 3  # per-layer rows from the .rpt
    assert sum(layer["LUT"] for layer in m["synthesis"]["layers"].values()) == 4211 + 416 + 1086
    (row,) = list(csv.DictReader((out / "summary.csv").open()))
    assert {k: row[k] for k in ("synth_dsp", "synth_lut", "synth_ff", "synth_bram_18k", "synth_latency_max_cycles")} \
        == {"synth_dsp": "38", "synth_lut": "5873", "synth_ff": "2145", "synth_bram_18k": "0",
            "synth_latency_max_cycles": "4"}
    md = (out / "report.md").read_text()
    assert "## C synthesis (vendor report)" in md
    assert "| prune_0.50 | vitis_hls 2023.2 | xcvu9p-flga2104-2L-e | 38 | 5873 | 2145 | 0 | 4-4 | 1-1 | 3.412 |" in md
    assert "synth. DSP | synth. LUT | synth. FF | synth. BRAM18K |" in md
    assert any(line.startswith("| prune_0.50 |") and line.endswith("| 38 | 5873 | 2145 | 0 |")
               for line in md.splitlines())  # beside the estimates in the firmware-cost table


def test_report_shows_the_vendor_synthesis_table(analysed):
    from hepprune.core import config
    from hepprune.core.task import task_of
    from hepprune.ptq.synthesis import parse_report

    run, _ = analysed
    summary = json.loads((run / "analysis/summary.json").read_text())
    canned = parse_report(ROOT / "tests/data/synth/vitis")
    summary["models"][1]["synthesis"] = canned
    md = task_of(config.load(None)).markdown(summary)
    assert "## C synthesis (vendor report)" in md
    assert "| prune_0.50 | vitis_hls 2023.2 | xcvu13p-flga2577-2-e | 38 | 5873 | 2145 | 0 | 4-4 | 1-1 | 3.412 |" in md
    assert "| baseline | vitis_hls" not in md  # only models that were synthesised
    # The vendor totals also sit beside the estimates in the firmware-cost table.
    row = next(line for line in md.splitlines()
               if line.startswith("| prune_0.50 |") and "| 38 | 5873 | 2145 | 0 |" in line)
    assert row.endswith("| 38 | 5873 | 2145 | 0 |")
    assert any(line.startswith("| baseline |") and line.endswith("| - | - | - | - |") for line in md.splitlines())


def test_plain_resource_strategy_keeps_zero_multipliers_and_uses_bram(resource_all_samples):
    run = resource_all_samples
    (m,) = json.loads((run / "analysis/summary.json").read_text())["models"]
    # fc1 4x32, fc2 32x16, output 16x1 at RF 4: ceil(n/4) multipliers each, pruned zeros included.
    assert m["multipliers"] == 32 + 128 + 4
    # ROM words of n/4 16-bit weights, 4 deep: ceil(32*16/36) + ceil(128*16/36) + ceil(4*16/36) BRAM18K.
    assert m["bram_18k"] == 15 + 57 + 2
    assert "| est. BRAM18K |" in (run / "analysis/report.md").read_text()


def test_analysis_reads_the_test_split_a_chunk_at_a_time_with_the_same_result(run, monkeypatch):
    """--samples all must not hold the split's inputs: the events come in chunks, and
    the result (physics, firmware precisions, C simulation) does not depend on the chunking."""
    from hepprune.core import config as config_mod
    from hepprune.core.results import to_json
    from hepprune.core.runs import resolve_config
    from hepprune.data import prepare
    from hepprune.prune import analysis

    cfg = resolve_config(config_mod.load(run.parent / "config.yaml"), "analysis", run_dir=run)
    with prepare.prepare_data(cfg, run / "baseline") as prepared:
        chunks = [c for c in prepare.HeldOutEvents(prepared, None, chunk_events=64)]
        assert [len(t) for _, t, _ in chunks] == [64, 64, 64, 64, 44]  # the 300 test events
        whole = prepare.test_events(prepared, None)
        for a, b in zip(whole, (np.concatenate(p) for p in zip(*chunks, strict=True)), strict=True):
            np.testing.assert_array_equal(a, b)

    def summary(chunk_events):
        monkeypatch.setattr(prepare, "CHUNK_EVENTS", chunk_events)
        out = to_json(analysis.analyse(cfg, run, samples=None, names=["prune_0.50"]).rows[0])
        return {k: out[k] for k in ("response_median", "resolution_q68", "hls_max_abs_diff", "hls_precisions",
                                    "hls_response_median", "multipliers")}

    assert summary(100) == summary(1 << 18)


def test_resource_unrolled_with_reuse_and_io_stream_simulate_like_keras(run, run_cli):
    """The firmware variants a user picks for RF > 1 and streaming I/O
    (resource_unrolled, io_stream) C-simulate to the Keras predictions, and
    resource_unrolled still drops the pruned weights' multipliers. RF 3 divides
    no layer, so hls4ml uses 2 everywhere: the cost and the report follow it."""
    _analyse(run_cli, run, "--models", "prune_0.50", "--set", "hls.strategy=resource_unrolled",
             "--set", "hls.reuse_factor=3", "--set", "hls.io_type=io_stream")
    (m,) = json.loads((run / "analysis/summary.json").read_text())["models"]
    # Measured 0.0034 and a response shift of +0.09 %, as for latency (truncating: 0.023, -1.4 %).
    assert m["hls_max_abs_diff"] < 0.007, m["hls_max_abs_diff"]  # ap_fixed<16,6>, as for latency
    assert abs(m["hls_response_median"] - m["response_median"]) < 0.002
    assert m["hls_response_ok"] is True and abs(m["hls_response_shift"]) <= PtqConfig().tolerance
    # The nonzero weights (64 + 256 + 16 at half sparsity, output layer dense), each multiplier used twice.
    assert m["multipliers"] == 32 + 128 + 8
    assert {k: v["reuse_factor"] for k, v in m["firmware"]["layers"].items()} == {"fc1": 2, "fc2": 2, "output": 2}
    assert "RF 3 configured, hls4ml uses 2, 2, 2 per layer" in (run / "analysis/report.md").read_text()
    project = run / "hls4ml/prune_0.50"
    params_h = (project / "firmware/parameters.h").read_text()
    assert "reuse_factor = 2;" in params_h and "strategy = nnet::resource_unrolled;" in params_h
    assert "hls::stream<input_t> &inputs" in (project / "firmware/hepprune.cpp").read_text()
