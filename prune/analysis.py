"""Side-by-side physics and cost comparison of the baseline and pruned models.

Every model is evaluated on the same held-out test events (the first
``analysis.samples`` of the test split in file order, or all of them), next
to the raw reference estimator, so the table shows what the network gains
and what pruning costs. Writes ``RUN/analysis/``: summary.json, summary.csv,
report.md and plots/.
"""

from __future__ import annotations

import csv
import io
import logging
import time
from pathlib import Path

import numpy as np

from data import artifacts, loader, targets
from data.config import Config
from data.errors import ConfigError, RunError
from ptq import metrics as phys
from ptq import training
from prune.firmware import WEIGHTED_LAYERS, firmware_cost

log = logging.getLogger(__name__)

STAGE = "analysis"
REFERENCE = "reference"
CSV_FIELDS = ("name", "sparsity", "response_median", "response_median_err", "response_mean", "response_mean_err",
              "resolution_q68", "resolution_q68_err", "resolution_std", "resolution_iqr", "response_shift",
              "resolution_shift", "params", "nonzero_params", "h5_bytes", "gzip_bytes", "tflite_bytes",
              "tflite_quant_bytes", "multipliers", "dsp", "hls_max_abs_diff", "hls_response_median")


def discover_models(run_dir: Path, names: list[str] | None = None) -> list[tuple[str, Path]]:
    """(name, stage dir) of the finished baseline and pruned models, baseline first."""
    found = []
    for stage in [run_dir / training.BASELINE, *sorted(run_dir.glob("prune_*"))]:
        if artifacts.is_complete(stage) and (stage / training.MODEL_FILE).is_file():
            found.append((stage.name, stage))
    if not found:
        raise RunError(f"{run_dir} holds no finished model (no baseline/ or prune_*/ with model.h5 and "
                       "metrics.json); run ptq/trainModel.py and prune/train_model_prune.py first")
    if names:
        available = [n for n, _ in found]
        unknown = [n for n in names if n not in available]
        if unknown:
            raise ConfigError(f"unknown model '{unknown[0]}'; models in {run_dir}: {', '.join(available)}")
        found = [(n, p) for n, p in found if n in names]
    return found


def test_events(prepared: training.Prepared, cfg: Config, samples: int | None):
    """(raw inputs, true, reference) of the first ``samples`` test events in
    file order (all if None), read block by block."""
    blocks = prepared.splits["test"]
    available = loader.n_events(blocks)
    if samples is not None and samples > available:
        raise ConfigError(f"--samples {samples} is larger than the test split ({available} events); "
                          "use a smaller number or 'all'")
    want = available if samples is None else samples
    xs, ts, rs, n = [], [], [], 0
    for x, t, r in loader.iter_batches(prepared.reader, blocks, 8192):
        take = min(len(t), want - n)
        xs.append(x[:take].copy())
        ts.append(t[:take])
        rs.append(r[:take])
        n += take
        if n >= want:
            break
    return np.concatenate(xs), np.concatenate(ts).astype(np.float64), np.concatenate(rs).astype(np.float64)


def layer_sparsity(model) -> dict[str, float]:
    return {layer.name: float(np.mean(layer.get_weights()[0] == 0)) for layer in model.layers
            if type(layer).__name__ in WEIGHTED_LAYERS}


def tflite_sizes(model) -> tuple[int, int]:
    """Bytes of the float and the dynamic-range quantised TFLite model."""
    from data.backend import tf

    sizes = []
    for quantize in (False, True):
        converter = tf.lite.TFLiteConverter.from_keras_model(model)
        if quantize:
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
        sizes.append(len(converter.convert()))
    return sizes[0], sizes[1]


def hls_simulate(model, std: loader.Standardization, x_raw: np.ndarray, true: np.ndarray, ref: np.ndarray,
                 cfg: Config, out_dir: Path) -> dict:
    """Fold the standardisation into the first layer, export to hls4ml in
    ``out_dir``, C-simulate the raw inputs and compare with Keras."""
    from prune import hls_bridge

    folded = hls_bridge.fold_standardization(model, std.mean, std.std)
    precisions = hls_bridge.raw_input_precisions(folded, x_raw, folded.input_names[0])
    graph = hls_bridge.convert(folded, out_dir, cfg.hls, precisions)
    graph.compile()
    y_hls = hls_bridge.csim_predict(graph, x_raw).reshape(-1)
    y_keras = np.concatenate([np.asarray(folded.predict_on_batch(x_raw[i:i + 8192])).reshape(-1)
                              for i in range(0, len(x_raw), 8192)])
    hls_phys = phys.response_metrics(targets.decode(y_hls, ref, cfg.data), true)
    return {"hls_max_abs_diff": float(np.abs(y_hls - y_keras).max()),
            "hls_response_median": hls_phys["response_median"], "hls_resolution_q68": hls_phys["resolution_q68"],
            "hls_dir": str(out_dir), "hls_precisions": precisions}


def analyse(cfg: Config, run_dir: Path, *, samples: int | None, names: list[str] | None = None) -> dict:
    """Evaluate every model; return the summary (also what summary.json holds)."""
    from data.backend import keras

    models = discover_models(run_dir, names)
    prepared = training.prepare_data(cfg, run_dir / training.BASELINE)
    x_raw, true, ref = test_events(prepared, cfg, samples)
    prepared.reader.close()
    x = prepared.standardization.apply(x_raw.copy())
    a = cfg.analysis
    edges = np.asarray(a.bins, np.float64) if a.bins else phys.quantile_bins(true, a.n_bins)
    log.info("comparing %d model(s) on %d held-out test events", len(models), len(true))

    entries = []
    reference = {"name": REFERENCE, **phys.response_metrics_with_errors(ref, true, n_bootstrap=a.bootstrap,
                                                                        seed=cfg.seed),
                 "binned": phys.binned_metrics(ref, true, edges, n_bootstrap=a.bootstrap, seed=cfg.seed)}
    for name, stage in models:
        t0 = time.time()
        model = keras.models.load_model(str(stage / training.MODEL_FILE), compile=False)
        stage_metrics = artifacts.read_json(stage / artifacts.METRICS_FILE)
        pred = np.concatenate([targets.decode(model.predict_on_batch(x[i:i + 8192]), ref[i:i + 8192], cfg.data)
                               for i in range(0, len(x), 8192)])
        tfl, tfl_q = tflite_sizes(model)
        cost = firmware_cost(model, cfg.hls)
        entry = {
            "name": name,
            "sparsity": float(stage_metrics.get("achieved_sparsity", 0.0)),
            **phys.response_metrics_with_errors(pred, true, n_bootstrap=a.bootstrap, seed=cfg.seed),
            **training.size_metrics(model, stage / training.MODEL_FILE),
            "tflite_bytes": tfl, "tflite_quant_bytes": tfl_q,
            "multipliers": cost["multipliers"], "dsp": cost["dsp"], "firmware": cost,
            "layer_sparsity": layer_sparsity(model),
            "binned": phys.binned_metrics(pred, true, edges, n_bootstrap=a.bootstrap, seed=cfg.seed),
            "ratio": (pred / true).astype(np.float32),  # for plots; dropped before writing
        }
        if cfg.hls.simulate:
            entry.update(hls_simulate(model, prepared.standardization, x_raw, true, ref, cfg,
                                      run_dir / "hls4ml" / name))
        entries.append(entry)
        log.info("%s: response %.4f, resolution %.4f, %d multipliers, hls max |diff| %s (%.1f s)", name,
                 entry["response_median"], entry["resolution_q68"], entry["multipliers"],
                 f"{entry['hls_max_abs_diff']:.4g}" if "hls_max_abs_diff" in entry else "-", time.time() - t0)
    base = next((e for e in entries if e["name"] == training.BASELINE), None)
    for e in entries:
        e["response_shift"] = e["response_median"] - base["response_median"] if base else None
        e["resolution_shift"] = (e["resolution_q68"] / base["resolution_q68"] - 1) if base else None
    reference["ratio"] = (ref / true).astype(np.float32)
    return {"samples": int(len(true)), "bins": edges.tolist(), "target_name": prepared.reader.info.target_name,
            "target_unit": prepared.reader.info.target_unit, "models": entries, "reference": reference}


def write_outputs(summary: dict, out: Path) -> None:
    """summary.json, summary.csv, report.md and plots/, metrics.json last."""
    from prune import report

    out.mkdir(parents=True, exist_ok=True)
    report.plots(summary, out / "plots")
    clean = {**summary, "models": [{k: v for k, v in m.items() if k != "ratio"} for m in summary["models"]],
             "reference": {k: v for k, v in summary["reference"].items() if k != "ratio"}}
    artifacts.write_json(out / "summary.json", clean)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=CSV_FIELDS, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(clean["models"])
    artifacts.write_text(out / "summary.csv", buf.getvalue())
    artifacts.write_text(out / "report.md", report.markdown(clean))
    artifacts.write_metrics(out, {"stage": STAGE, "samples": summary["samples"],
                                  "models": [m["name"] for m in clean["models"]]})
