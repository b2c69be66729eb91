"""Physics metrics against hand-computed values on known arrays."""

import numpy as np
import pytest

from hepprune.core.metrics import (
    beyond_tolerance,
    binned_metrics,
    merge_sparse_bins,
    paired_shifts,
    quantile_bins,
    response_metrics,
    response_metrics_with_errors,
)


def test_hand_computed_values():
    true = np.full(5, 10.0)
    pred = np.array([8.0, 9.0, 10.0, 11.0, 14.0])  # ratios 0.8, 0.9, 1.0, 1.1, 1.4
    m = response_metrics(pred, true)
    assert m["n_events"] == 5
    assert m["response_median"] == pytest.approx(1.0)
    assert m["response_mean"] == pytest.approx(1.04)
    assert m["resolution_std"] == pytest.approx(np.sqrt(np.mean((np.array([0.8, 0.9, 1.0, 1.1, 1.4]) - 1.04) ** 2)))
    # numpy's linear quantiles: q(0.159) = 0.8 + 0.636 * 0.1, q(0.841) = 1.1 + 0.364 * 0.3
    assert m["resolution_q68"] == pytest.approx(((1.1 + 0.364 * 0.3) - (0.8 + 0.636 * 0.1)) / 2)
    assert m["resolution_iqr"] == pytest.approx((1.1 - 0.9) / 1.349)


def test_gaussian_resolutions_agree_and_errors_are_statistical():
    rng = np.random.default_rng(0)
    true = rng.uniform(10, 100, 40000)
    pred = true * rng.normal(1.02, 0.1, true.size)
    m = response_metrics_with_errors(pred, true, n_bootstrap=100)
    for key in ("resolution_q68", "resolution_std", "resolution_iqr"):
        assert m[key] == pytest.approx(0.1, rel=0.03)
    assert m["response_median"] == pytest.approx(1.02, abs=0.003)
    # The bootstrap error of a mean is sigma / sqrt(N).
    assert m["response_mean_err"] == pytest.approx(0.1 / np.sqrt(true.size), rel=0.2)
    small = response_metrics_with_errors(pred[:400], true[:400], n_bootstrap=100)
    assert small["resolution_q68_err"] > 5 * m["resolution_q68_err"]


def test_binned_metrics_follow_the_truth():
    rng = np.random.default_rng(1)
    true = rng.uniform(1, 100, 20000)
    pred = true * rng.normal(1.0, 1.0 / np.sqrt(true))  # stochastic term 100 %/sqrt(E)
    edges = quantile_bins(true, 4)
    assert len(edges) == 5 and edges[0] == true.min() and edges[-1] == true.max()
    rows = binned_metrics(pred, true, edges, n_bootstrap=20)
    assert sum(r["n_events"] for r in rows) == true.size
    assert all(abs(r["n_events"] - 5000) <= 1 for r in rows)
    widths = [r["resolution_q68"] for r in rows]
    assert widths == sorted(widths, reverse=True)  # resolution improves with energy
    fixed = binned_metrics(pred, true, np.array([0.0, 50.0, 1000.0, 2000.0]), n_bootstrap=0)
    assert fixed[2]["n_events"] == 0 and "response_median" not in fixed[2]
    assert fixed[0]["n_events"] + fixed[1]["n_events"] == true.size


def test_paired_shift_errors_are_much_smaller_than_either_models_error():
    """Two models that share most of their per-event error: the paired error on
    the shift is far below each model's own bootstrap error, and it covers the
    shift the second model really has (2 % wider, response +0.001)."""
    rng = np.random.default_rng(3)
    n = 20000
    common = rng.normal(0, 0.1, n)
    base = 1 + common
    model = 1.001 + 1.02 * common + rng.normal(0, 0.005, n)
    s = paired_shifts(model, base, n_bootstrap=200, seed=1)
    own = response_metrics_with_errors(base, np.ones(n), n_bootstrap=200)
    assert s["response_shift_err"] < own["response_median_err"] / 3  # 3.6x smaller measured
    assert s["resolution_shift_err"] < own["resolution_q68_err"] / own["resolution_q68"] / 2.5  # 2.9x
    assert abs(s["response_shift"] - 0.001) < 3 * s["response_shift_err"] + 1e-4
    assert abs(s["resolution_shift"] - 0.02) < 3 * s["resolution_shift_err"]
    same = paired_shifts(base, base, n_bootstrap=50)
    assert same == {"response_shift": 0.0, "resolution_shift": 0.0, "response_shift_err": 0.0,
                    "resolution_shift_err": 0.0}
    unpaired = paired_shifts(model, rng.permutation(base), n_bootstrap=200, seed=1)  # events out of order
    assert unpaired["response_shift_err"] > 4 * s["response_shift_err"]  # 5.3x measured
    assert unpaired["resolution_shift_err"] > 3 * s["resolution_shift_err"]  # 3.6x
    with pytest.raises(ValueError, match="same events"):
        paired_shifts(model[:10], base, n_bootstrap=0)


def test_a_shift_fails_only_beyond_its_tolerance_by_more_than_the_significance():
    assert not beyond_tolerance(0.03, 0.006, 0.02, 2.0, two_sided=False)  # 0.01 over, within 2 sigma
    assert beyond_tolerance(0.03, 0.004, 0.02, 2.0, two_sided=False)  # 0.01 over, 2.5 sigma
    assert not beyond_tolerance(-0.5, 0.0, 0.02, 2.0, two_sided=False)  # a narrower resolution is no failure
    assert beyond_tolerance(-0.005, 0.0005, 0.003, 2.0, two_sided=True)  # response too low
    assert not beyond_tolerance(0.0, None, 0.0, 2.0, two_sided=True)
    assert beyond_tolerance(None, None, 0.02, 2.0, two_sided=True)  # not comparable


def test_sparse_bins_are_merged_and_a_constant_target_is_one_bin():
    true = np.concatenate([np.full(100, 5.0), np.full(30, 15.0), np.full(3, 25.0), np.full(50, 35.0)])
    edges, merged = merge_sparse_bins(true, np.array([0.0, 10, 20, 30, 40, 50]))
    assert edges.tolist() == [0.0, 10, 30, 50]
    assert len(merged) == 2  # 40-50 (empty) and 20-30 (3 events)
    counts = [r["n_events"] for r in binned_metrics(true, true, edges, n_bootstrap=0)]
    assert min(counts) >= 20 and sum(counts) == true.size
    few, _ = merge_sparse_bins(true[:6], quantile_bins(true[:6], 5))
    assert len(few) == 2  # 6 events: one bin
    fixed = quantile_bins(np.full(50, 6.5), 5)
    assert fixed.tolist() == [6.5, 6.5]
    rows = binned_metrics(np.full(50, 6.0), np.full(50, 6.5), fixed, n_bootstrap=0)
    assert len(rows) == 1 and rows[0]["n_events"] == 50


def test_empty_input_is_an_error():
    with pytest.raises(ValueError):
        response_metrics(np.array([]), np.array([]))


def test_multiplier_count_for_a_layer_with_known_zeros():
    from hepprune.ptq.firmware import layer_multipliers

    kernel = np.ones((10, 8), np.float32)  # 80 weights
    kernel.flat[:30] = 0.0  # 30 zeros
    assert layer_multipliers(kernel, 1) == 50
    assert layer_multipliers(kernel, 4) == 20 - 7  # ceil(80/4) - 30 // 4
    assert layer_multipliers(kernel, 3) == 27 - 10  # ceil(80/3) - 30 // 3
    assert layer_multipliers(np.zeros((4, 4)), 1) == 0


def test_firmware_cost_of_a_model():
    from hepprune.core.backend import keras
    from hepprune.core.config import HlsConfig
    from hepprune.ptq.firmware import firmware_cost

    model = keras.Sequential([keras.Input((6,)), keras.layers.Dense(4, name="fc1"),
                              keras.layers.Activation("relu"), keras.layers.Dense(1, name="output")])
    w = model.get_layer("fc1").get_weights()
    w[0][:3, :] = 0  # 12 of 24 weights
    model.get_layer("fc1").set_weights(w)
    cost = firmware_cost(model, HlsConfig())
    assert cost["layers"]["fc1"]["multipliers"] == 12 and cost["layers"]["output"]["multipliers"] == 4
    assert cost["multipliers"] == 16 and cost["dsp"] == 16  # 16-bit weights use DSPs
    narrow = firmware_cost(model, HlsConfig(precision="ap_fixed<8,3>"))
    assert narrow["multipliers"] == 16 and narrow["dsp"] == 0
    # The export widened fc1's weights (a raw-input first layer): those multipliers need DSPs again.
    widened = firmware_cost(model, HlsConfig(precision="ap_fixed<8,3>"),
                            {"fc1": {"Precision": {"weight": "ap_fixed<18,2>"}}, "input_1": {"Precision": {}}})
    assert widened["layers"]["fc1"]["dsp"] == 12 and widened["layers"]["output"]["dsp"] == 0 and widened["dsp"] == 12


def test_the_cost_uses_the_reuse_factors_hls4ml_really_uses(tmp_path):
    """RF 7 divides no layer of the demo-shaped MLP: hls4ml takes 4 for fc1 and 8
    for the rest, and the multipliers, BRAM and the report follow it, not 7."""
    from hepprune.core.backend import keras
    from hepprune.core.config import HlsConfig
    from hepprune.core.task.regression import reuse_label
    from hepprune.ptq import hls_bridge
    from hepprune.ptq.firmware import firmware_cost

    model = keras.Sequential([keras.Input((52,), name="inputs"), keras.layers.Dense(32, name="fc1"),
                              keras.layers.Activation("relu"), keras.layers.Dense(16, name="fc2"),
                              keras.layers.Activation("relu"), keras.layers.Dense(8, name="fc3"),
                              keras.layers.Activation("relu"), keras.layers.Dense(1, name="output")])
    hls = HlsConfig(reuse_factor=7, strategy="resource")
    used = hls_bridge.reuse_factors(hls_bridge.convert(model, tmp_path / "rf7", hls))
    assert used == {"fc1": 4, "fc2": 8, "fc3": 8, "output": 8}
    cost = firmware_cost(model, hls, None, used)
    assert {k: v["multipliers"] for k, v in cost["layers"].items()} == {"fc1": 416, "fc2": 64, "fc3": 16, "output": 1}
    assert cost["layers"]["fc1"]["bram_18k"] == firmware_cost(model, HlsConfig(reuse_factor=4, strategy="resource"))[
        "layers"]["fc1"]["bram_18k"]
    assert reuse_label(cost) == "RF 7 configured, hls4ml uses 4, 8, 8, 8 per layer"
    assert reuse_label(firmware_cost(model, HlsConfig())) == "RF 1"


def test_firmware_cost_counts_conv1d_and_custom_prunable_layers():
    from examples.user_model.models import ScaledDense
    from hepprune.core.backend import keras
    from hepprune.core.config import HlsConfig
    from hepprune.ptq.firmware import firmware_cost

    model = keras.Sequential([keras.Input((8, 2)), keras.layers.Conv1D(3, 3, name="conv1"),
                              keras.layers.Flatten(), ScaledDense(5, name="scaled"),
                              keras.layers.Dense(1, name="output")])
    w = model.get_layer("scaled").get_weights()
    w[0][:2, :] = 0  # 10 of the 90 kernel weights; the scale is not multiplied in the count
    model.get_layer("scaled").set_weights(w)
    layers = firmware_cost(model, HlsConfig())["layers"]
    assert layers["conv1"]["multipliers"] == 3 * 2 * 3
    assert layers["scaled"] == {"weights": 90, "zeros": 10, "reuse_factor": 1, "multipliers": 80, "dsp": 80,
                                "bram_18k": 0}


def test_plain_resource_keeps_zero_multipliers_and_stores_weights_in_bram():
    from hepprune.ptq.firmware import layer_bram18, layer_multipliers

    kernel = np.ones((64, 32), np.float32)  # 2048 weights
    kernel.flat[:1024] = 0.0
    assert layer_multipliers(kernel, 4, drops_zeros=False) == 512  # zeros still multiplied
    assert layer_multipliers(kernel, 4) == 512 - 256
    # RF 4: a ROM 4 deep whose words hold 512 16-bit weights = 8192 bits -> 228 BRAM18K of 36 bits.
    assert layer_bram18(2048, 16, 4, "resource") == 228
    # RF 1024: 2 weights per word (32 bits -> 1 BRAM wide), 1024 deep -> 2 BRAM18K deep.
    assert layer_bram18(2048, 16, 1024, "resource") == 2
    assert layer_bram18(2048, 16, 4, "resource_unrolled") == 0 and layer_bram18(2048, 16, 1, "resource") == 0


def test_csd_digits_are_the_non_adjacent_form():
    from hepprune.ptq.firmware import csd_digits

    def naf_digits(n):  # the textbook recoding, one digit at a time
        n, count = abs(n), 0
        while n:
            if n & 1:
                n -= 2 - (n & 3)
                count += 1
            n >>= 1
        return count

    values = np.arange(-3000, 3001)
    assert list(csd_digits(values)) == [naf_digits(int(v)) for v in values]
    assert list(csd_digits(np.array([0, 7, 15, 85, -96]))) == [0, 2, 2, 4, 2]  # 7 = 8 - 1, 85 = 64+16+4+1


def test_da_lut_estimate_counts_digits_and_shares_more_at_high_fan_in():
    from hepprune.ptq.firmware import DA_LUTS_BOUNDS, DA_LUTS_FIT, da_lut_estimate

    kernel = np.array([[0.75, 0.0], [0.5, -0.125]])  # on a 3-fractional-bit grid: 6, 0 / 4, -1 -> 2+0+1+1 digits
    est = da_lut_estimate({"fc": (kernel, 3, 10)})
    fan_in = 3 / 2
    factor = min(DA_LUTS_FIT[0] - DA_LUTS_FIT[1] * np.log2(fan_in), DA_LUTS_BOUNDS[1])
    assert est == {"fc": round(factor * 4 * 10)}
    dense = np.ones((64, 4))
    sparse = dense.copy()
    sparse[8:] = 0  # fan-in 8 instead of 64
    per_digit = [da_lut_estimate({"fc": (k, 0, 10)})["fc"] / np.count_nonzero(k) for k in (dense, sparse)]
    assert per_digit[0] < per_digit[1]  # more sharing where each output sums more weights


def test_classification_metrics_hand_computed():
    """Accuracy and one-vs-rest ROC AUC (Mann-Whitney, ties count half) on
    arrays small enough to count the pairs by hand."""
    from hepprune.core.classification import classification_metrics, roc_curve

    probs = np.array([[0.9, 0.1], [0.6, 0.4], [0.65, 0.35], [0.2, 0.8]])
    labels = np.array([0, 0, 1, 1])
    m = classification_metrics(probs, labels, ("a", "b"))
    assert m["n_events"] == 4
    assert m["accuracy"] == pytest.approx(0.75)  # event 2 (0.65 vs 0.35) is wrong
    # class b: positives score 0.35, 0.8; negatives 0.1, 0.4. Of the 4 pairs the
    # positive wins 3 (0.35 > 0.1, 0.8 > 0.1, 0.8 > 0.4): AUC 3/4. Class a mirrors it.
    assert m["auc"] == {"a": pytest.approx(0.75), "b": pytest.approx(0.75)}
    assert m["auc_mean"] == pytest.approx(0.75)
    # A tie between a positive and a negative counts half: pairs won 1 + 0.5 of 2.
    tie = classification_metrics(np.array([[0.5, 0.5], [0.5, 0.5], [0.9, 0.1]]), np.array([1, 0, 0]), ("a", "b"))
    assert tie["auc"]["b"] == pytest.approx(0.75)
    # A class absent from the labels has no AUC, and the mean skips it.
    absent = classification_metrics(np.array([[0.7, 0.2, 0.1], [0.1, 0.8, 0.1]]), np.array([0, 1]), ("a", "b", "c"))
    assert np.isnan(absent["auc"]["c"]) and absent["auc_mean"] == pytest.approx(1.0)
    # The ROC runs from (0, 0) to (1, 1); a perfect score reaches TPR 1 at FPR 0.
    fpr, tpr = roc_curve(np.array([0.1, 0.2, 0.8, 0.9]), np.array([False, False, True, True]))
    assert (fpr[0], tpr[0], fpr[-1], tpr[-1]) == (0.0, 0.0, 1.0, 1.0)
    assert np.any((fpr == 0) & (tpr == 1))
    assert np.all(np.diff(fpr) >= 0) and np.all(np.diff(tpr) >= 0)


def test_the_verdict_marks_each_shift_beyond_tolerance_overall_and_per_bin():
    from hepprune.core.config import AnalysisConfig
    from hepprune.core.task.regression import physics_verdict

    ok_bin = {"low": 1.0, "high": 10.0, "n_events": 500, "response_shift": 0.001, "response_shift_err": 0.001,
              "resolution_shift": 0.03, "resolution_shift_err": 0.01}  # 1 % over, at 1 sigma: within
    bad_bin = {"low": 10.0, "high": 40.0, "n_events": 500, "response_shift": -0.002, "response_shift_err": 0.0005,
               "resolution_shift": 0.45, "resolution_shift_err": 0.05}
    m = {"response_shift": 0.0, "response_shift_err": 0.0004, "resolution_shift": 0.01, "resolution_shift_err": 0.004,
         "binned": [ok_bin, bad_bin, {"low": 40.0, "high": 90.0, "n_events": 0}]}
    v = physics_verdict(m, AnalysisConfig())
    assert v["ok"] is False and v["beyond"] == ["resolution 10-40: +45.0 ± 5.0 %"]
    assert bad_bin["resolution_beyond"] and not bad_bin["response_beyond"] and not ok_bin["resolution_beyond"]
    assert not m["resolution_beyond"] and not m["response_beyond"]
    assert physics_verdict(m, AnalysisConfig(resolution_tolerance=0.5))["ok"] is True
    m["response_shift"] = 0.005  # 0.002 beyond 0.003 at 5 sigma
    assert physics_verdict(m, AnalysisConfig(resolution_tolerance=0.5))["beyond"][0].startswith("response overall")


def test_samples_default_to_the_whole_test_split():
    from hepprune.core.cli import parse_samples

    assert parse_samples(None, 0) is None and parse_samples(None, 300) == 300
    assert parse_samples("all", 300) is None and parse_samples("50", 0) == 50
