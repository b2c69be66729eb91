"""ptq/bitwidth_scan.py: the post-training quantisation scan, as a user runs it."""

import csv
import json
import subprocess
from types import SimpleNamespace

import numpy as np
import pytest
from conftest import assert_one_line_error


def test_int_bits_are_the_narrowest_that_hold_the_value():
    from hepprune.core.fixedpoint import int_bits

    # ap_fixed<W,I> holds [-2^(I-1), 2^(I-1)).
    assert int_bits(0.9) == 1  # [-1, 1)
    assert int_bits(1.0) == 2  # 1 itself needs [-2, 2)
    assert int_bits(3.5) == 3
    assert int_bits(500.0) == 10  # [-512, 512)
    assert int_bits(0.05) == -3  # [-1/16, 1/16): small weights spend no bit on range
    for v in (0.01, 0.3, 7.9, 1e4):
        i = int_bits(v)
        assert 2.0 ** (i - 2) <= v < 2.0 ** (i - 1)


def test_width_precisions_follow_each_layer_range():
    from hepprune.ptq.quantization import width_precisions

    ranges = {"inputs": {"result": 100.0}, "fc1": {"weight": 0.05, "bias": 3.0, "result": 40.0}}
    p = width_precisions(ranges, 12)
    assert p["inputs"] == {"Precision": {"result": "ap_fixed<12,8,AP_RND,AP_SAT>"}}  # 1.25 * 100 < 128
    assert p["fc1"]["Precision"] == {"weight": "ap_fixed<12,-3,AP_RND,AP_SAT>", "bias": "ap_fixed<12,3,AP_RND,AP_SAT>",
                                     "result": "ap_fixed<12,7,AP_RND,AP_SAT>",  # 1.25 * 40 < 64
                                     "accum": "auto"}  # hls4ml's exact sum type: sums add no error
    # A range wider than the width saturates rather than asking ap_fixed for I > W.
    assert width_precisions(ranges, 6)["inputs"]["Precision"]["result"] == "ap_fixed<6,6,AP_RND,AP_SAT>"


@pytest.mark.parametrize("ok, chosen", [
    ([False, False, True, True, True], 10),
    ([True, False, True, True, True], 10),  # a lucky narrow width below a failing one is not trusted
    ([True, True, True, True, True], 6),
    ([True, True, True, True, False], None),
])
def test_chosen_width_is_the_smallest_from_which_all_wider_pass(ok, chosen):
    from hepprune.ptq.quantization import choose_width

    rows = [{"width": w, "within_tolerance": o} for w, o in zip([6, 8, 10, 12, 14], ok, strict=True)]
    assert choose_width(rows) == chosen


def test_tolerance_is_relative_to_float_and_ignores_better_resolution():
    from hepprune.ptq.quantization import within_tolerance

    ref = {"response_median": 1.0, "resolution_q68": 0.10}
    assert within_tolerance({"response_median": 1.009, "resolution_q68": 0.1009}, ref, 0.01)
    assert not within_tolerance({"response_median": 0.985, "resolution_q68": 0.10}, ref, 0.01)
    assert not within_tolerance({"response_median": 1.0, "resolution_q68": 0.102}, ref, 0.01)
    assert within_tolerance({"response_median": 1.0, "resolution_q68": 0.05}, ref, 0.01)


@pytest.mark.slow
def test_scan_writes_the_scan_and_the_chosen_project(run, run_cli):
    proc = run_cli("ptq/bitwidth_scan.py", "--config", run.parent / "config.yaml", "--run-dir", run,
                   "--models", "prune_0.50", "--widths", "4,10,18", check_ok=True)
    out = run / "ptq" / "prune_0.50"
    scan = json.loads((out / "scan.json").read_text())
    assert [r["width"] for r in scan["widths"]] == [4, 10, 18]
    assert scan["samples"] == 200 and scan["model"] == "prune_0.50"
    w4, w10, w18 = scan["widths"]
    # 18 bits with ranges from the data reproduce Keras closely; 4 bits cannot.
    assert w18["max_abs_diff"] < 0.01 and w18["within_tolerance"]
    assert w4["max_abs_diff"] > 10 * w18["max_abs_diff"] and not w4["within_tolerance"]
    assert abs(w18["response_median"] - scan["float"]["response_median"]) < 0.005
    assert scan["chosen_width"] in (10, 18)
    assert scan["chosen_width"] == (10 if w10["within_tolerance"] else 18)
    # Every width emulated without a compiler; the chosen one compiled and C-simulated, equal on every event.
    assert scan["method"] == "emulation"
    assert scan["emulation_check"] == {"width": scan["chosen_width"], "events": 200, "events_differing": 0}
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["chosen_width"] == scan["chosen_width"]
    assert metrics["precision"].startswith(f"ap_fixed<{scan['chosen_width']},")
    rows = list(csv.DictReader((out / "scan.csv").open()))
    assert [int(r["width"]) for r in rows] == [4, 10, 18]
    assert (out / "scan.png").stat().st_size > 5000
    # The chosen project is written for synthesis, with the per-layer types of the chosen width.
    defines = (out / "hls4ml/firmware/defines.h").read_text()
    assert f"ap_fixed<{scan['chosen_width']}," in defines
    assert not list(out.glob(".scan.*")), "the scan's scratch projects are removed"
    assert "prune_0.50" in proc.stdout and "chosen W" in proc.stdout
    assert not (run / "ptq" / "baseline").exists()


@pytest.mark.parametrize("args, fragment", [
    (["--models", "prune_0.90"], "unknown model 'prune_0.90'; models in"),
    (["--widths", "8,x"], "--widths expects comma-separated integers"),
    (["--widths", "12,8"], "ptq.widths must be increasing integers"),
    (["--samples", "5000"], "larger than the test split"),
])
def test_bad_input(run, run_cli, args, fragment):
    proc = run_cli("ptq/bitwidth_scan.py", "--config", run.parent / "config.yaml", "--run-dir", run, *args)
    assert_one_line_error(proc, fragment)
    assert not (run / "ptq").exists()


def test_layer_ranges_are_the_largest_magnitudes_seen():
    from hepprune.core.backend import keras
    from hepprune.ptq.quantization import layer_ranges

    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((3,), name="inputs"), keras.layers.Dense(2, name="fc1"),
                              keras.layers.Activation("relu", name="act"), keras.layers.Dense(1, name="output")])
    x = np.array([[1.0, -2.0, 3.0], [-4.0, 0.5, 0.0]], np.float32)
    w, b = model.get_layer("fc1").get_weights()
    r = layer_ranges(model, x)
    assert r["inputs"]["result"] == 4.0
    assert r["fc1"]["weight"] == pytest.approx(np.abs(w).max()) and r["fc1"]["bias"] == 0.0
    assert r["fc1"]["result"] == pytest.approx(np.abs(x @ w + b).max(), rel=1e-6)
    assert r["act"] == {"result": pytest.approx(np.maximum(x @ w + b, 0).max(), rel=1e-6)}


def test_an_abort_inside_the_c_simulation_is_an_error_not_a_crash(tmp_path):
    """ap_types asserts abort the process that runs the simulation library; the
    workers take that, and the caller gets a CsimError it can report."""
    from hepprune.ptq.hls_bridge import CsimError, csim_predict

    firmware = tmp_path / "firmware"
    firmware.mkdir()
    src = tmp_path / "lib.c"
    src.write_text("#include <stdlib.h>\n"
                   "void hepprune_float(float *x, float *y) { if (x[0] > 1) abort(); y[0] = 2 * x[0]; }\n")
    subprocess.run(["gcc", "-shared", "-fPIC", "-o", str(firmware / "hepprune-s1.so"), str(src)], check=True)
    config = SimpleNamespace(get_output_dir=lambda: str(tmp_path), get_project_name=lambda: "hepprune",
                             get_config_value=lambda key: "s1")
    graph = SimpleNamespace(config=config, get_output_variables=lambda: [SimpleNamespace(size=lambda: 1)])
    x = np.zeros((3000, 2), np.float32)
    x[:, 0] = 0.5
    np.testing.assert_array_equal(csim_predict(graph, x, processes=2)[:, 0], 1.0)
    x[2500, 0] = 5.0
    with pytest.raises(CsimError, match="aborted"):
        csim_predict(graph, x, processes=2)


def with_biases(model, rng):
    for layer in model.layers:
        if len(layer.get_weights()) == 2:
            kernel, bias = layer.get_weights()
            layer.set_weights([kernel, rng.normal(scale=0.5, size=bias.shape).astype(bias.dtype)])


def test_the_numpy_emulation_equals_the_c_simulation_bit_for_bit(tmp_path):
    """The scan's compiler-free emulation against the compiled C simulation: a
    float model (one activation split off by hls4ml, one a layer of its own) at
    narrow and wide scan widths on inputs beyond the ranges the types were
    sized for (values round and saturate), and a QAT model (AP_RND_CONV)."""
    from hepprune.core import qat
    from hepprune.core.backend import keras
    from hepprune.core.config import HlsConfig, ModelConfig, QatConfig
    from hepprune.core.models import build_model
    from hepprune.ptq import emulate, hls_bridge
    from hepprune.ptq.csim_build import compile_graph
    from hepprune.ptq.quantization import width_setting
    from hepprune.ptq.ranges import layer_ranges

    keras.utils.set_random_seed(3)
    model = keras.Sequential([keras.Input((4,), name="inputs"), keras.layers.Dense(8, activation="relu", name="fc1"),
                              keras.layers.Dense(4, name="fc2"), keras.layers.Activation("relu", name="act2"),
                              keras.layers.Dense(1, name="output")])
    rng = np.random.default_rng(3)
    x = rng.normal(size=(3000, 4)).astype(np.float32)
    with_biases(model, rng)  # untrained layers have zero biases, which would leave the bias path untested
    ranges = layer_ranges(model, x)
    for width in (5, 9, 14):
        default, precisions = width_setting(ranges, width)
        graph = hls_bridge.convert(model, tmp_path / f"w{width}", HlsConfig(precision=default), precisions)
        compile_graph(graph)
        y_csim = hls_bridge.csim_predict(graph, 3 * x)
        np.testing.assert_array_equal(emulate.emulate(graph, 3 * x), y_csim)
        if width == 5:
            assert np.abs(y_csim - model.predict(3 * x, verbose=0)).max() > 0.1  # the types did act

    quantised = qat.quantise(build_model(ModelConfig(hidden_units=[8]), (4,)), 6, QatConfig())
    with_biases(quantised, rng)
    graph = hls_bridge.convert(quantised, tmp_path / "qat", HlsConfig(), hls_bridge.qat_precisions(quantised))
    compile_graph(graph)
    np.testing.assert_array_equal(emulate.emulate(graph, x), hls_bridge.csim_predict(graph, x))

    squash = keras.Sequential([keras.Input((4,), name="inputs"), keras.layers.Dense(2, activation="tanh", name="fc")])
    with pytest.raises(emulate.Unsupported, match=r"fc_tanh \(Activation 'tanh'\)"):
        emulate.emulate(hls_bridge.convert(squash, tmp_path / "tanh", HlsConfig()), x)
