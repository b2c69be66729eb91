"""A CNN regression through the whole chain, as a user runs it: the
calorimeter's (5, 5, 2) image view, pretrained, pruned (Conv2D and Dense
kernels) and analysed with hls4ml C simulation."""

import json
import textwrap

import pytest

pytestmark = pytest.mark.slow

CONFIG = textwrap.dedent("""
    seed: 4
    data: {batch_size: 128, shuffle_buffer: 4000}
    model: {type: cnn, conv_filters: [4], kernel_size: 3, hidden_units: [16]}
    train: {epochs: 4, early_stopping_patience: 0}
    prune: {targets: [0.5], epochs: 4, warmup_epochs: 1, pruning_epochs: 2}
    analysis: {samples: 300, n_bins: 3, bootstrap: 10}
""")


def test_cnn_regression_pretrains_prunes_and_simulates_in_hls(tmp_path, run_cli):
    run_cli("data/make_dataset.py", "--out", tmp_path / "data", "--events", 12000, "--shards", 1, "--seed", 3,
            "--image", check_ok=True)
    (tmp_path / "config.yaml").write_text(CONFIG)
    common = ("--config", tmp_path / "config.yaml", "--run-dir", tmp_path / "run")
    run_cli("ptq/trainModel.py", *common, "--data", str(tmp_path / "data/*.h5"), check_ok=True)
    run_cli("prune/train_model_prune.py", *common, check_ok=True)
    run_cli("prune/analyze_prune.py", *common, check_ok=True)

    base = json.loads((tmp_path / "run/baseline/metrics.json").read_text())
    pruned = json.loads((tmp_path / "run/prune_0.50/metrics.json").read_text())
    # The conv kernel and the hidden Dense are pruned; the output layer is not.
    assert set(pruned["layers"]) == {"conv1", "fc1"}, pruned["layers"]
    assert all(abs(v["achieved"] - 0.5) <= 0.01 for v in pruned["layers"].values())
    # It learned the energy: a response near 1 and a resolution better than the raw sum's.
    for m in (base, pruned):
        assert 0.9 < m["test"]["response_median"] < 1.1
        assert m["test"]["resolution_q68"] < m["reference"]["resolution_q68"]

    summary = json.loads((tmp_path / "run/analysis/summary.json").read_text())
    assert [m["name"] for m in summary["models"]] == ["baseline", "prune_0.50"]
    for m in summary["models"]:
        # A CNN's standardisation cannot be folded into its first layer, so the
        # firmware takes standardised inputs (and says so); rounded and
        # saturating ap_fixed<16,6>, it predicts what Keras does.
        assert m["hls_inputs"] == "standardised"
        assert m["hls_max_abs_diff"] < 0.05, m["hls_max_abs_diff"]
        assert abs(m["hls_response_shift"]) <= 0.01 and m["hls_response_ok"], m["hls_response_shift"]
    base_m, pruned_m = summary["models"]
    assert pruned_m["multipliers"] < base_m["multipliers"]
    report = (tmp_path / "run/analysis/report.md").read_text()
    assert "| baseline | standardised |" in report and "% **check** |" not in report

    # hls4ml's plain ap_fixed<16,6> truncates every product: the bias adds up
    # over the convolution's many terms and shifts the response, which the
    # analysis flags (log warning, report mark) instead of passing it on.
    proc = run_cli("prune/analyze_prune.py", *common, "--models", "baseline", "--set", "hls.precision=ap_fixed<16,6>",
                   check_ok=True)
    (trunc,) = json.loads((tmp_path / "run/analysis/summary.json").read_text())["models"]
    assert trunc["hls_response_shift"] < -0.01 and not trunc["hls_response_ok"]
    assert "baseline: the firmware's response is" in proc.stderr and "AP_RND,AP_SAT" in proc.stderr
    assert "% **check** |" in (tmp_path / "run/analysis/report.md").read_text()
