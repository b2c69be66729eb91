"""Quantisation-aware pruning: a tiny QKeras model trained, pruned with tfmot,
exported with hls4ml and C-simulated bit for bit against the QKeras model,
through the real CLIs; resume after a kill; bad input at the door."""

import json
import shutil
import subprocess
import sys
import textwrap

import h5py
import numpy as np
import pytest
from conftest import ROOT, assert_one_line_error, kill_mid_training, make_shard

pytestmark = pytest.mark.slow

CONFIG = textwrap.dedent("""
    seed: 3
    data: {batch_size: 64, shuffle_buffer: 2000}
    model: {hidden_units: [16, 8]}
    train: {epochs: 3, early_stopping_patience: 0}
    prune: {targets: [0.5], epochs: 4, warmup_epochs: 1, pruning_epochs: 2}
    analysis: {samples: 300, n_bins: 3, bootstrap: 0}
    qat: {bits: [6]}
""")
QAT = ("prune_0.00_q6", "prune_0.50_q6")


def _cli(script, *args):
    return subprocess.run([sys.executable, str(ROOT / script), *map(str, args)], cwd=ROOT, capture_output=True,
                          text=True)


@pytest.fixture(scope="module")
def qat_run(tmp_path_factory):
    """Baseline, the 6-bit sweep (dense reference and 0.5) and their analysis on
    the whole test split (300 events), built once; copy it before changing it."""
    root = tmp_path_factory.mktemp("qat")
    (root / "config.yaml").write_text(CONFIG)
    make_shard(root / "data.h5", n=3000, seed=4)
    for script, extra in (("ptq/trainModel.py", ["--data", root / "data.h5"]),
                          ("prune/train_model_prune.py", ["--bits", "6"]),
                          ("prune/analyze_prune.py", ["--samples", "all", "--models", ",".join(QAT)])):
        proc = _cli(script, "--config", root / "config.yaml", "--run-dir", root / "run", *extra)
        assert proc.returncode == 0, proc.stderr[-3000:]
    return root


def _weights(path):
    out = {}
    with h5py.File(path, "r") as f:
        f["model_weights"].visititems(lambda name, obj: out.update({name: obj[()]}) if hasattr(obj, "shape") else None)
    return out


def test_the_qat_sweep_prunes_the_qkeras_model_and_its_firmware_is_bit_exact(qat_run):
    run = qat_run / "run"
    assert sorted(p.name for p in run.glob("prune_*")) == list(QAT)  # --bits 6: no float model
    dense, pruned = (json.loads((run / name / "metrics.json").read_text()) for name in QAT)
    assert dense["bits"] == pruned["bits"] == 6 and dense["achieved_sparsity"] == 0 and dense["layers"] == {}
    assert set(pruned["layers"]) == {"fc1", "fc2"}  # the output layer stays dense, QActivations hold nothing
    assert all(abs(v["achieved"] - 0.5) <= 0.01 for v in pruned["layers"].values())
    assert pruned["quantisers"]["fc1"] == {"weight": [6, 0], "bias": [6, 0]}
    assert pruned["quantisers"]["fc1_act"] == {"activation": [6, 2]}
    assert pruned["quantisers"]["input_quant"] == {"activation": [12, 3]}
    assert pruned["epochs_run"] == 4  # never stops early
    assert list((run / "prune_0.50_q6/tensorboard/sparsity").glob("events.out.tfevents.*"))

    # The saved model is QKeras; its quantised kernels are on the 6-bit grid, pruned ones zero.
    from hepprune.core import qat
    from hepprune.core.backend import keras

    model = keras.models.load_model(str(run / "prune_0.50_q6/model.h5"), compile=False,
                                    custom_objects=qat.custom_objects())
    assert qat.is_quantised(model)
    for name in ("fc1", "fc2"):
        layer = model.get_layer(name)
        kernel = layer.kernel.numpy()
        steps = np.asarray(layer.kernel_quantizer_internal(kernel)) * 32  # 5 fractional bits
        np.testing.assert_array_equal(steps, np.round(steps))
        assert steps.min() >= -32 and steps.max() <= 31
        assert np.count_nonzero(steps == 0) >= np.count_nonzero(kernel == 0) == kernel.size // 2

    summary = json.loads((run / "analysis/summary.json").read_text())
    assert summary["samples"] == 300
    rows = {m["name"]: m for m in summary["models"]}
    assert list(rows) == list(QAT)
    for name in QAT:
        m = rows[name]
        assert m["bits"] == 6
        assert m["hls_events_differing"] == 0 and m["hls_max_abs_diff"] == 0.0  # bit for bit, all 300 events
        assert m["hls_inputs"] == "standardised"
        assert m["hls_precisions"]["fc1"]["Precision"]["weight"] == "ap_fixed<6,1>"
        assert m["hls_precisions"]["fc1_act"]["Precision"]["result"] == "ap_ufixed<6,2,AP_RND_CONV,AP_SAT>"
        assert m["hls_precisions"]["inputs"]["Precision"]["result"] == "ap_fixed<12,4,AP_RND_CONV,AP_SAT>"
        assert m["dsp"] == 0  # 6-bit weights: LUT multipliers
    assert rows["prune_0.50_q6"]["multipliers"] < rows["prune_0.00_q6"]["multipliers"]
    report = (run / "analysis/report.md").read_text()
    qat_rows = [line for line in report.split("## Quantisation-aware models")[1].splitlines() if "_q6 | 6 |" in line]
    assert qat_rows == ["| prune_0.00_q6 | 6 | 6 / 6 | 0 | - | 0 |", "| prune_0.50_q6 | 6 | 6 / 6 | 0 | - | 0 |"]


def test_a_firmware_that_differs_from_the_qkeras_model_is_flagged_naming_the_layer(qat_run, tmp_path, monkeypatch,
                                                                                   caplog):
    """Without the activation's type, hls4ml keeps fc2's ReLU at its default
    precision instead of requantising to 6 bits: the C simulation leaves the
    QKeras model, the count says on how many events, and the trace names fc2_act."""
    from hepprune.prune import analyze_prune
    from hepprune.ptq import hls_bridge

    run = tmp_path / "run"
    shutil.copytree(qat_run / "run", run)
    exact = hls_bridge.qat_precisions

    def without_fc2_act(model):
        precisions = exact(model)
        del precisions["fc2_act"]
        return precisions

    monkeypatch.setattr(hls_bridge, "qat_precisions", without_fc2_act)
    assert analyze_prune.main(["--config", str(qat_run / "config.yaml"), "--run-dir", str(run),
                               "--models", "prune_0.50_q6", "--samples", "all"]) == 0
    m = json.loads((run / "analysis/summary.json").read_text())["models"][0]
    assert m["hls_events_differing"] > 0 and m["hls_first_disagreeing_layer"] == "fc2_act"
    assert any("prune_0.50_q6: the C simulation differs from the QKeras model on" in r.message
               and "fc2_act" in r.message for r in caplog.records if r.levelname == "WARNING")
    report = (run / "analysis/report.md").read_text()
    assert f"| prune_0.50_q6 | 6 | 6 / 6 | {m['hls_events_differing']} **check** | fc2_act |" in report


def test_a_qat_sweep_killed_mid_training_resumes_to_the_same_model(qat_run, tmp_path):
    # Small batches and a short settle: a kill lands inside the ramp (at batch 16 a whole epoch once
    # passed within the settle time, so the kill came after the last epoch).
    slow = tmp_path / "slow.yaml"
    slow.write_text(CONFIG.replace("batch_size: 64", "batch_size: 8"))
    runs = {}
    for name in ("straight", "killed"):
        runs[name] = tmp_path / name
        runs[name].mkdir()
        shutil.copytree(qat_run / "run/baseline", runs[name] / "baseline")
    args = ["--config", slow, "--bits", "6", "--targets", "0.5"]
    proc = _cli("prune/train_model_prune.py", *args, "--run-dir", runs["straight"])
    assert proc.returncode == 0, proc.stderr[-3000:]

    stage = runs["killed"] / "prune_0.50_q6"
    state = stage / "checkpoint/state.json"
    done = kill_mid_training("prune/train_model_prune.py", [*args, "--run-dir", runs["killed"]], state, settle=0.05)
    assert 2 <= done < 4 and not (stage / "metrics.json").exists()

    resumed = _cli("prune/train_model_prune.py", *args, "--run-dir", runs["killed"])
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "after epoch" in resumed.stderr
    a, b = (_weights(r / "prune_0.50_q6/model.h5") for r in (runs["straight"], runs["killed"]))
    assert sorted(a) == sorted(b) and len(a) >= 6
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)
    ma, mb = (json.loads((r / "prune_0.50_q6/metrics.json").read_text()) for r in (runs["straight"], runs["killed"]))
    assert ma["test"] == mb["test"] and ma["val_loss"] == mb["val_loss"]


@pytest.mark.parametrize("sets, fragment", [
    (["qat.bits=[1]"], "qat.bits: every bit setting must be an integer from 2 to 32, got 1"),
    (["qat.bits=[33]"], "qat.bits: every bit setting must be an integer from 2 to 32, got 33"),
    (["qat.bits=[6]", "qat.weight_integer=6"], "qat.weight_integer = 6 does not fit in 6 bits (one is the sign)"),
    (["qat.bits=[4]", "qat.layers={fc1: {activation_integer: 5}}"],
     "qat.layers.fc1.activation_integer = 5 does not fit in 4 bits"),
    (["qat.activation_bits=1"], "qat.activation_bits must be 0 (the bit setting's b) or an integer from 2 to 32"),
    (["qat.bits=[8]", "qat.activation_bits=4", "qat.activation_integer=5"],
     "qat.activation_integer = 5 does not fit in 4 bits; at most 4"),
    (["qat.weight_quantizer=quantized_po2"], "qat.weight_quantizer must be one of quantized_bits"),
    (["qat.bits=[6, 8, 6]"], "qat.bits: 6 is listed twice"),
    (["qat.layers={fc1: {bitz: 4}}"], "unknown config key 'qat.layers.fc1.bitz'"),
])
def test_bad_qat_settings_are_refused_at_the_door(qat_run, tmp_path, sets, fragment):
    args = [arg for s in sets for arg in ("--set", s)]
    proc = _cli("prune/train_model_prune.py", "--config", qat_run / "config.yaml", "--run-dir", tmp_path / "run",
                *args)
    assert_one_line_error(proc, fragment)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("args, fragment", [
    (["--bits", "6,6"], "--bits lists a setting twice"),
    (["--bits", "6b"], "--bits expects comma-separated bit settings"),
    (["--targets", "0", "--bits", "float"], "--targets 0 at --bits float is the baseline itself"),
])
def test_bad_sweep_options_are_one_line(qat_run, tmp_path, args, fragment):
    run = tmp_path / "run"
    shutil.copytree(qat_run / "run/baseline", run / "baseline")
    proc = _cli("prune/train_model_prune.py", "--config", qat_run / "config.yaml", "--run-dir", run, *args)
    assert_one_line_error(proc, fragment)
    assert sorted(p.name for p in run.iterdir()) == ["baseline"]


def test_a_model_qkeras_cannot_quantise_is_named_before_training(tmp_path):
    """model.from_file with a tanh activation: refused by name, before any training."""
    from hepprune.core.backend import keras

    make_shard(tmp_path / "d.h5", n=600, seed=4)
    keras.utils.set_random_seed(0)
    user = keras.Sequential([keras.Input((4,), name="inputs"), keras.layers.Dense(8, name="fc1"),
                             keras.layers.Activation("tanh", name="squash"), keras.layers.Dense(1, name="output")])
    user.save(str(tmp_path / "user.h5"), save_format="h5")
    config = tmp_path / "c.yaml"
    config.write_text(CONFIG.replace("model: {hidden_units: [16, 8]}",
                                     f"model: {{from_file: '{tmp_path / 'user.h5'}'}}"))
    adopt = _cli("ptq/trainModel.py", "--config", config, "--run-dir", tmp_path / "run", "--data", tmp_path / "d.h5")
    assert adopt.returncode == 0, adopt.stderr[-3000:]
    proc = _cli("prune/train_model_prune.py", "--config", config, "--run-dir", tmp_path / "run")
    assert_one_line_error(proc, "qat: cannot quantise layer squash (Activation 'tanh')")
    assert sorted(p.name for p in (tmp_path / "run").iterdir() if not p.name.startswith(".")) == ["baseline"]


def test_classification_with_qat_is_refused_at_the_door(qat_run, tmp_path):
    proc = _cli("ptq/trainModel.py", "--config", qat_run / "config.yaml", "--run-dir", tmp_path / "run",
                "--data", qat_run / "data.h5", "--set", "task=classification")
    assert_one_line_error(proc, "qat.bits: quantisation-aware training is for regression")
    assert not (tmp_path / "run").exists()


def test_the_quantised_cnn_is_bit_exact_in_hls4ml(tmp_path):
    """The built-in CNN (QConv2D, pooling, flatten, QDense), trained briefly at 6 bits, C-simulated
    through io_stream as CNNs are synthesised: equal to the QKeras model on every event."""
    from hepprune.core import qat
    from hepprune.core.backend import keras
    from hepprune.core.config import HlsConfig, ModelConfig, QatConfig
    from hepprune.core.models import build_model
    from hepprune.ptq import hls_bridge
    from hepprune.ptq.csim_build import compile_graph

    keras.utils.set_random_seed(0)
    cnn = build_model(ModelConfig(type="cnn", conv_filters=[4, 8], pool_size=2, hidden_units=[8]), (8, 8, 1))
    model = qat.quantise(cnn, 6, QatConfig())
    assert [type(layer).__name__ for layer in model.layers][:4] == ["QActivation", "QConv2D", "QActivation",
                                                                    "MaxPooling2D"]
    x = np.random.default_rng(0).normal(size=(600, 8, 8, 1)).astype(np.float32)
    model.compile(optimizer="adam", loss="mae")
    model.fit(x, x.mean(axis=(1, 2, 3)) + 1, epochs=2, verbose=0)
    precisions = hls_bridge.qat_precisions(model)
    assert precisions["pool1"]["Precision"]["result"] == "ap_ufixed<6,2,AP_RND_CONV,AP_SAT>"  # passes on conv1_act's
    graph = hls_bridge.convert(model, tmp_path / "cnn", HlsConfig(io_type="io_stream"), precisions)
    compile_graph(graph)
    y_hls = hls_bridge.csim_predict(graph, x)
    y_keras = model.predict(x, verbose=0).astype(np.float64)
    np.testing.assert_array_equal(y_hls, y_keras)


def test_narrow_weights_with_wider_activations_stay_bit_exact(tmp_path):
    """qat.activation_bits: 8-bit weights, 10-bit ReLUs, an output layer whose own
    bits override both; the export carries each width and C-simulates bit for bit."""
    from hepprune.core import qat
    from hepprune.core.backend import keras
    from hepprune.core.config import HlsConfig, ModelConfig, QatConfig
    from hepprune.core.models import build_model
    from hepprune.ptq import hls_bridge
    from hepprune.ptq.csim_build import compile_graph

    keras.utils.set_random_seed(1)
    mlp = build_model(ModelConfig(hidden_units=[8, 4]), (4,))
    model = qat.quantise(mlp, 8, QatConfig(activation_bits=10, activation_integer=3,
                                           layers={"output": {"bits": 12, "bias_integer": 2}}))
    widths = {layer.name: layer.get_quantization_config() for layer in model.layers}
    assert "quantized_bits(8,0" in widths["fc1"]["kernel_quantizer"]
    assert "quantized_relu(10,3" in widths["fc1_act"]
    assert "quantized_bits(12,2" in widths["output"]["bias_quantizer"]
    x = np.random.default_rng(1).normal(size=(500, 4)).astype(np.float32)
    model.compile(optimizer="adam", loss="mae")
    model.fit(x, x.sum(axis=1) + 1, epochs=2, verbose=0)
    precisions = hls_bridge.qat_precisions(model)
    assert precisions["fc1"]["Precision"]["weight"] == "ap_fixed<8,1>"
    assert precisions["fc1_act"]["Precision"]["result"] == "ap_ufixed<10,3,AP_RND_CONV,AP_SAT>"
    graph = hls_bridge.convert(model, tmp_path / "mlp", HlsConfig(), precisions)
    compile_graph(graph)
    np.testing.assert_array_equal(hls_bridge.csim_predict(graph, x), model.predict(x, verbose=0).astype(np.float64))


def test_the_report_labels_weight_and_activation_widths_apart():
    from hepprune.core.task.regression import quantiser_widths

    quantisers = {"input_quant": {"activation": [12, 3]}, "fc1": {"weight": [8, 0], "bias": [8, 0]},
                  "fc1_act": {"activation": [10, 3]}, "output": {"weight": [12, 0], "bias": [12, 2]}}
    assert quantiser_widths(quantisers) == "8,12 / 10"  # the input's 12 bits are its own type, not a ReLU's
    assert quantiser_widths(None) == "-"
