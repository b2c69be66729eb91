"""Bring your own model and task: builders, .h5 files, custom layers,
classification and image CNNs, each through pretrain -> prune -> analyze ->
hls4ml C simulation, as a user runs them (the real CLIs)."""

import json
import textwrap

import h5py
import numpy as np
import pytest
from conftest import assert_one_line_error, make_class_shard, make_shard

from hepprune.core.config import PtqConfig

pytestmark = pytest.mark.slow

BASE = textwrap.dedent("""
    seed: 3
    data: {batch_size: 64, shuffle_buffer: 2000}
    train: {epochs: 3, early_stopping_patience: 0}
    prune: {targets: [0.5], epochs: 4, warmup_epochs: 1, pruning_epochs: 2}
    analysis: {samples: 300, n_bins: 3, bootstrap: 0}
""")
MODELS = "examples.user_model.models"


def _write(tmp_path, extra: str):
    """BASE plus ``extra``; a section ``extra`` gives replaces BASE's (a key given twice is an error)."""
    extra = textwrap.dedent(extra)
    given = {line.split(":")[0] for line in extra.splitlines() if line and not line[0].isspace()}
    base = "".join(line + "\n" for line in BASE.splitlines() if line.split(":")[0] not in given)
    (tmp_path / "c.yaml").write_text(base + extra)
    return tmp_path / "c.yaml"


def _chain(tmp_path, run_cli, config, data, *, hls=True):
    """pretrain -> prune -> analyze, as a user runs them; the analysis summary."""
    run = tmp_path / "run"
    run_cli("ptq/trainModel.py", "--config", config, "--run-dir", run, "--data", data, check_ok=True)
    run_cli("prune/train_model_prune.py", "--config", config, "--run-dir", run, check_ok=True)
    proc = run_cli("prune/analyze_prune.py", "--config", config, "--run-dir", run, *([] if hls else ["--no-hls"]),
                   check_ok=True)
    pruned = json.loads((run / "prune_0.50/metrics.json").read_text())
    assert abs(pruned["achieved_sparsity"] - 0.5) <= 0.01
    assert all(abs(v["achieved"] - 0.5) <= 0.01 for v in pruned["layers"].values())
    summary = json.loads((run / "analysis/summary.json").read_text())
    assert [m["name"] for m in summary["models"]] == ["baseline", "prune_0.50"]
    return run, summary, proc.stdout


def _fit_and_save(builder, x, y, path, loss, epochs=3):
    """A user's pretrained model, trained outside hepprune on raw inputs."""
    from hepprune.core.backend import keras

    keras.utils.set_random_seed(0)
    model = builder(x.shape[1:], 1 if loss == "mae" else int(y.max()) + 1)
    model.compile(optimizer=keras.optimizers.Adam(3e-3), loss=loss)
    model.fit(x, y, batch_size=64, epochs=epochs, verbose=0)
    model.save(str(path), save_format="h5")
    return model


def _read(path, key="inputs"):
    with h5py.File(path, "r") as f:
        return f[key][:], f["target"][:], f["reference"][:]


# ------------------------------------------------------------------ regression


def test_builder_functional_two_branch_regression(tmp_path, run_cli):
    make_shard(tmp_path / "d.h5", n=3000, seed=4)
    config = _write(tmp_path, f"model: {{builder: '{MODELS}:two_branch'}}\n")
    run, summary, _ = _chain(tmp_path, run_cli, config, tmp_path / "d.h5")
    pruned = json.loads((run / "prune_0.50/metrics.json").read_text())
    assert set(pruned["layers"]) == {"wide", "narrow", "mix"}  # the output layer stays dense
    for m in summary["models"]:
        # the input feeds two branches, so the standardisation cannot be folded
        assert m["hls_inputs"] == "standardised"
        # measured 0.0061 and 0.0058, response shifts -0.10 % and -0.17 % (default rounding precision)
        assert m["hls_max_abs_diff"] < 0.012, m["hls_max_abs_diff"]
        assert abs(m["hls_response_median"] - m["response_median"]) < 0.004
        assert m["hls_response_ok"] is True and abs(m["hls_response_shift"]) <= PtqConfig().tolerance


def test_from_file_regression_is_the_baseline_untrained(tmp_path, run_cli):
    from examples.user_model.models import two_branch

    make_shard(tmp_path / "d.h5", n=3000, seed=4)
    x, true, ref = _read(tmp_path / "d.h5")
    user = _fit_and_save(two_branch, x, true / np.maximum(ref, 1.0), tmp_path / "user.h5", "mae")
    config = _write(tmp_path, f"""
        data: {{batch_size: 64, shuffle_buffer: 2000, standardize: false}}
        model: {{from_file: '{tmp_path / "user.h5"}'}}
    """)
    run, summary, _ = _chain(tmp_path, run_cli, config, tmp_path / "d.h5")
    base = json.loads((run / "baseline/metrics.json").read_text())
    assert base["epochs_run"] == 0 and base["from_file"] == str((tmp_path / "user.h5").resolve())
    assert not (run / "baseline/checkpoint").exists()  # nothing was trained
    from hepprune.core.backend import keras

    adopted = keras.models.load_model(str(run / "baseline/model.h5"), compile=False)
    for a, b in zip(adopted.get_weights(), user.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    assert summary["models"][0]["response_median"] == pytest.approx(base["test"]["response_median"], abs=0.05)
    for m in summary["models"]:
        # raw inputs (standardize: false): measured 0.0060 and 0.0064, response shifts +0.12 % and +0.22 %
        assert m["hls_inputs"] == "raw"
        assert m["hls_max_abs_diff"] < 0.013, m["hls_max_abs_diff"]
        assert abs(m["hls_response_median"] - m["response_median"]) < 0.005
        assert m["hls_response_ok"] is True and abs(m["hls_response_shift"]) <= PtqConfig().tolerance


# -------------------------------------------------------------- classification


def test_builtin_classification_accuracy_auc_and_hls(tmp_path, run_cli):
    make_class_shard(tmp_path / "d.h5", n=3000, n_classes=3)
    config = _write(tmp_path, "task: classification\nmodel: {hidden_units: [16, 8]}\n")
    run, summary, stdout = _chain(tmp_path, run_cli, config, tmp_path / "d.h5")
    base = json.loads((run / "baseline/metrics.json").read_text())
    assert base["task"] == "classification" and base["test"]["accuracy"] > 0.6  # chance is 0.33
    assert set(base["test"]["auc"]) == {"c0", "c1", "c2"}
    assert summary["class_names"] == ["c0", "c1", "c2"]
    for m in summary["models"]:
        assert m["accuracy"] > 0.6 and 0.5 < m["auc_mean"] <= 1
        assert abs(m["hls_accuracy"] - m["accuracy"]) <= 0.03 and m["hls_agreement"] >= 0.95
        assert len(m["roc"]["c0"][0]) == len(m["roc"]["c0"][1])
    assert (run / "analysis/plots/roc.png").stat().st_size > 1000
    assert "accuracy" in (run / "analysis/report.md").read_text()
    assert "hls accuracy" in stdout and "response" not in stdout
    # The firmware-agreement flag: the C simulation's accuracy against Keras's, on the same events.
    for m in summary["models"]:
        assert m["hls_accuracy_ok"] and abs(m["hls_accuracy_shift"]) <= 0.01, m["hls_accuracy_shift"]
    assert "**check** |" not in (run / "analysis/report.md").read_text()
    # Too few bits: the firmware's accuracy drops, and the analysis says so and where.
    proc = run_cli("prune/analyze_prune.py", "--config", config, "--run-dir", run, "--models", "baseline",
                   "--set", "hls.precision=ap_fixed<5,2>", check_ok=True)
    (m,) = json.loads((run / "analysis/summary.json").read_text())["models"]
    assert not m["hls_accuracy_ok"] and m["hls_accuracy_shift"] < -0.01, m["hls_accuracy_shift"]
    assert "baseline: the firmware's accuracy is" in proc.stderr and "more than ptq.tolerance=0.01" in proc.stderr
    assert "**check** |" in (run / "analysis/report.md").read_text()
    # The frontier judges response and resolution per bin: a classifier is refused at the door.
    proc = run_cli("prune/frontier.py", "--config", config, "--run-dir", run)
    assert_one_line_error(proc, "frontier.py", "classification")
    assert not (run / "frontier").exists()


def test_builder_cnn_classification_on_images(tmp_path, run_cli):
    make_class_shard(tmp_path / "d.h5", n=3000, n_classes=3, image=True)
    config = _write(tmp_path, f"task: classification\nmodel: {{type: cnn, builder: '{MODELS}:small_cnn'}}\n")
    run, summary, _ = _chain(tmp_path, run_cli, config, tmp_path / "d.h5")
    pruned = json.loads((run / "prune_0.50/metrics.json").read_text())
    assert {"conv1", "conv2", "fc1"} <= set(pruned["layers"])
    for m in summary["models"]:
        assert m["accuracy"] > 0.6
        assert m["hls_agreement"] >= 0.95 and abs(m["hls_accuracy"] - m["accuracy"]) <= 0.03


def test_from_file_classification(tmp_path, run_cli):
    from examples.user_model.models import two_branch

    make_class_shard(tmp_path / "d.h5", n=3000, n_classes=3)
    x, labels, _ = _read(tmp_path / "d.h5")
    _fit_and_save(two_branch, x, labels, tmp_path / "user.h5", "sparse_categorical_crossentropy")
    config = _write(tmp_path, f"""
        task: classification
        data: {{batch_size: 64, shuffle_buffer: 2000, standardize: false}}
        model: {{from_file: '{tmp_path / "user.h5"}'}}
    """)
    run, summary, _ = _chain(tmp_path, run_cli, config, tmp_path / "d.h5")
    assert json.loads((run / "baseline/metrics.json").read_text())["epochs_run"] == 0
    for m in summary["models"]:
        assert m["accuracy"] > 0.6 and m["hls_agreement"] >= 0.95


# ---------------------------------------------------------------- custom layers


def test_custom_prunable_layer_is_pruned_and_unconvertible_layer_is_named(tmp_path, run_cli):
    make_shard(tmp_path / "d.h5", n=3000, seed=4)
    config = _write(tmp_path, f"""
        model:
          builder: '{MODELS}:with_custom_layer'
          custom_objects: ['{MODELS}:ScaledDense', '{MODELS}:FeatureScale']
    """)
    run = tmp_path / "run"
    run_cli("ptq/trainModel.py", "--config", config, "--run-dir", run, "--data", tmp_path / "d.h5", check_ok=True)
    proc = run_cli("prune/train_model_prune.py", "--config", config, "--run-dir", run, check_ok=True)
    assert "feature_scale (FeatureScale) cannot be pruned by tfmot; it stays dense" in proc.stderr
    pruned = json.loads((run / "prune_0.50/metrics.json").read_text())
    assert set(pruned["layers"]) == {"scaled", "fc"}
    assert abs(pruned["layers"]["scaled"]["achieved"] - 0.5) <= 0.01  # the custom layer's kernel
    proc = run_cli("prune/analyze_prune.py", "--config", config, "--run-dir", run)
    assert_one_line_error(proc, "hls4ml cannot convert layer feature_scale (FeatureScale)")
    run_cli("prune/analyze_prune.py", "--config", config, "--run-dir", run, "--no-hls", check_ok=True)


# -------------------------------------------------------------------- bad input


@pytest.mark.parametrize("model, fragments", [
    ("{builder: 'no_such_module:build'}", ["model.builder", "cannot import module 'no_such_module'"]),
    (f"{{builder: '{MODELS}:nothing_here'}}", ["model.builder", "has no attribute 'nothing_here'"]),
    (f"{{builder: '{MODELS}:_head'}}", ["model.builder", "_head((4,), 1) raised ValueError"]),
    (f"{{builder: '{MODELS}:subclassed'}}", ["subclassed model (Subclassed)", "Sequential or the functional API"]),
    ("{builder: 'builtins:print'}", ["model.builder builtins:print must give a tf_keras model, got builtins.NoneType"]),
])
def test_bad_builder_is_one_line(tmp_path, run_cli, model, fragments):
    make_shard(tmp_path / "d.h5", n=600)
    config = _write(tmp_path, f"model: {model}\n")
    proc = run_cli("ptq/trainModel.py", "--config", config, "--run-dir", tmp_path / "run", "--data", tmp_path / "d.h5")
    assert_one_line_error(proc, *fragments)
    assert not (tmp_path / "run/baseline/model.h5").exists()


def test_bad_model_files_are_one_line(tmp_path, run_cli):
    from examples.user_model.models import two_branch, with_custom_layer

    make_shard(tmp_path / "d.h5", n=600, n_features=4)
    make_class_shard(tmp_path / "c.h5", n=600, n_classes=3, n_features=4)
    two_branch((5,), 1).save(str(tmp_path / "wide.h5"), save_format="h5")
    two_branch((4,), 2).save(str(tmp_path / "two_classes.h5"), save_format="h5")
    with_custom_layer((4,), 1).save(str(tmp_path / "custom.h5"), save_format="h5")
    cases = [
        ("d.h5", "", "wide.h5", ["takes inputs of shape (5,) but the dataset gives (4,)"]),
        ("c.h5", "task: classification\n", "two_classes.h5", ["has 2 output(s) but the dataset has 3 classes"]),
        ("d.h5", "", "custom.h5", ["cannot load", "model.custom_objects"]),
        ("d.h5", "", "missing.h5", ["model.from_file", "not found"]),
    ]
    for data, task, h5, fragments in cases:
        config = _write(tmp_path, f"{task}model: {{from_file: '{tmp_path / h5}'}}\n")
        proc = run_cli("ptq/trainModel.py", "--config", config, "--run-dir", tmp_path / "run", "--data",
                       tmp_path / data)
        assert_one_line_error(proc, *fragments)
        assert not (tmp_path / "run/baseline").exists()


def test_labels_that_are_not_class_indices_are_refused(tmp_path, run_cli):
    make_class_shard(tmp_path / "c.h5", n=600, n_classes=3)
    with h5py.File(tmp_path / "c.h5", "r+") as f:
        f["target"][5] = 3.0  # only classes 0..2 exist
    config = _write(tmp_path, "task: classification\n")
    proc = run_cli("ptq/trainModel.py", "--config", config, "--run-dir", tmp_path / "run", "--data", tmp_path / "c.h5")
    assert_one_line_error(proc, "target 3 at event 5 is not a class index in 0..2")


def test_classification_needs_class_names(tmp_path, run_cli):
    make_shard(tmp_path / "d.h5", n=600)
    config = _write(tmp_path, "task: classification\n")
    proc = run_cli("ptq/trainModel.py", "--config", config, "--run-dir", tmp_path / "run", "--data", tmp_path / "d.h5")
    assert_one_line_error(proc, "task=classification needs the dataset's class_names file attribute")
