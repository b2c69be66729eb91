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

from hepprune.core import artifacts, targets
from hepprune.core import metrics as phys
from hepprune.core.config import Config
from hepprune.core.errors import ConfigError
from hepprune.core.fit import size_metrics
from hepprune.core.fixedpoint import rounding_advice
from hepprune.core.runs import ANALYSIS, BASELINE, HLS, MODEL_FILE, finished_models
from hepprune.data import loader
from hepprune.data.prepare import HeldOutEvents, Mapped, prepare_data
from hepprune.ptq import hls_bridge, synthesis
from hepprune.ptq.firmware import firmware_cost, weighted_kernels

log = logging.getLogger(__name__)

STAGE = ANALYSIS
REFERENCE = "reference"
CSV_FIELDS = ("name", "sparsity", "response_median", "response_median_err", "response_mean", "response_mean_err",
              "resolution_q68", "resolution_q68_err", "resolution_std", "resolution_iqr", "response_shift",
              "resolution_shift", "params", "nonzero_params", "h5_bytes", "gzip_bytes", "tflite_bytes",
              "tflite_quant_bytes", "multipliers", "dsp", "bram_18k", "hls_max_abs_diff", "hls_response_median",
              "hls_response_shift", "synth_dsp", "synth_lut", "synth_ff", "synth_bram_18k", "synth_latency_max_cycles")


def layer_sparsity(model) -> dict[str, float]:
    return {name: float(np.mean(kernel == 0)) for name, kernel in weighted_kernels(model).items()}


def tflite_sizes(model) -> tuple[int, int]:
    """Bytes of the float and the dynamic-range quantised TFLite model."""
    from hepprune.core.backend import tf

    sizes = []
    for quantize in (False, True):
        converter = tf.lite.TFLiteConverter.from_keras_model(model)
        if quantize:
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
        sizes.append(len(converter.convert()))
    return sizes[0], sizes[1]


def predict(model, x: np.ndarray, batch: int = 8192) -> np.ndarray:
    """Keras outputs, one row per event, in batches."""
    return np.concatenate([np.asarray(model.predict_on_batch(x[i:i + batch])).reshape(len(x[i:i + batch]), -1)
                           for i in range(0, len(x), batch)])


def export_and_simulate(model, std: loader.Standardization, x_chunks, cfg: Config, out_dir: Path,
                        synth_tool: str | None = None) -> tuple[np.ndarray, np.ndarray, dict]:
    """Export to hls4ml in ``out_dir``, C-simulate, and return (firmware
    outputs, Keras outputs of the same exported model, extras for the entry);
    with ``synth_tool``, also C-synthesise the project and read its report.
    ``x_chunks``: the raw test inputs as re-iterable arrays (a chunk at a time)."""
    exported, to_input, raw_precisions = hls_bridge.firmware_model(model, std, x_chunks)
    x_in = Mapped(x_chunks, to_input)
    precisions = hls_bridge.widen_overflowing(exported, x_in, raw_precisions, cfg.hls.precision)
    backend = synthesis.backend_for(synth_tool) if synth_tool else hls_bridge.BACKEND
    graph = hls_bridge.convert(exported, out_dir, cfg.hls, precisions, backend=backend)
    graph.compile()
    hls_parts, keras_parts = [], []
    for x in x_in:
        hls_parts.append(hls_bridge.csim_predict(graph, x.reshape(len(x), -1)).reshape(len(x), -1))
        keras_parts.append(predict(exported, x))
    y_hls, y_keras = np.concatenate(hls_parts), np.concatenate(keras_parts)
    # The cost again, with the export's per-layer weight widths: a widened layer may need DSPs.
    cost = firmware_cost(model, cfg.hls, precisions)
    extras = {"hls_dir": str(out_dir), "hls_precisions": precisions or {},
              "hls_inputs": "raw" if raw_precisions is not None else "standardised",
              "hls_max_abs_diff": float(np.abs(y_hls - y_keras).max()),
              "multipliers": cost["multipliers"], "dsp": cost["dsp"], "bram_18k": cost["bram_18k"], "firmware": cost}
    if synth_tool:
        extras["synthesis"] = synthesis.run_synthesis(graph, out_dir)
    return y_hls, y_keras, extras


def hls_simulate(model, std: loader.Standardization, x_chunks, true: np.ndarray, ref: np.ndarray,
                 cfg: Config, out_dir: Path, synth_tool: str | None = None) -> dict:
    """The hls4ml export's C simulation against Keras, and its response."""
    y_hls, y_keras, extras = export_and_simulate(model, std, x_chunks, cfg, out_dir, synth_tool)
    hls_phys = phys.response_metrics(targets.decode(y_hls.reshape(-1), ref, cfg.data), true)
    keras_phys = phys.response_metrics(targets.decode(y_keras.reshape(-1), ref, cfg.data), true)
    keras_median = keras_phys["response_median"]
    shift = hls_phys["response_median"] / keras_median - 1 if keras_median else None  # None: a dead model
    out = {**extras, "hls_response_median": hls_phys["response_median"],
           "hls_resolution_q68": hls_phys["resolution_q68"], "hls_response_shift": shift,
           "hls_response_ok": shift is not None and abs(shift) <= cfg.ptq.tolerance}
    if not out["hls_response_ok"]:
        log.warning("%s: the firmware's response is %s the Keras model's at %s (more than ptq.tolerance=%g); %s",
                    out_dir.name, f"{100 * shift:+.1f} % off" if shift is not None else "not comparable with",
                    cfg.hls.precision, cfg.ptq.tolerance, rounding_advice(cfg.hls.precision))
    return out


def load_and_describe(name: str, stage: Path, cfg: Config):
    """(model, entry with what every task reports: sparsity, sizes, firmware cost)."""
    from hepprune.core.models import load_model

    model = load_model(stage / MODEL_FILE, cfg.model)
    stage_metrics = artifacts.read_json(stage / artifacts.METRICS_FILE)
    tfl, tfl_q = tflite_sizes(model)
    cost = firmware_cost(model, cfg.hls)
    return model, {
        "name": name,
        "sparsity": float(stage_metrics.get("achieved_sparsity", 0.0)),
        **size_metrics(model, (stage / MODEL_FILE).read_bytes()),
        "tflite_bytes": tfl, "tflite_quant_bytes": tfl_q,
        "multipliers": cost["multipliers"], "dsp": cost["dsp"], "bram_18k": cost["bram_18k"], "firmware": cost,
        "layer_sparsity": layer_sparsity(model),
    }


def analyse(cfg: Config, run_dir: Path, *, samples: int | None, names: list[str] | None = None,
            synth_tool: str | None = None) -> dict:
    """Evaluate every model; return the summary (also what summary.json holds).
    ``synth_tool`` (vitis_hls or vivado_hls) adds C synthesis to the hls4ml export."""
    models = finished_models(run_dir, names)
    with prepare_data(cfg, run_dir / BASELINE) as prepared:
        return _analyse(cfg, run_dir, prepared, models, samples, synth_tool)


def _analyse(cfg, run_dir, prepared, models, samples, synth_tool) -> dict:
    # Events are read a chunk at a time on every pass (``--samples all`` never holds the
    # split's inputs); the per-event outputs (pred, true, reference) are small.
    chunks = HeldOutEvents(prepared, samples)
    std = prepared.standardization
    trues, refs = [], []
    for _, t, r in chunks:
        trues.append(t)
        refs.append(r)
    true, ref = np.concatenate(trues), np.concatenate(refs)
    a = cfg.analysis
    edges = np.asarray(a.bins, np.float64) if a.bins else phys.quantile_bins(true, a.n_bins)
    if not ((true >= edges[0]) & (true <= edges[-1])).any():
        raise ConfigError(f"analysis.bins {a.bins} hold none of the {len(true)} test events (the true "
                          f"{prepared.reader.info.target_name} spans {true.min():.4g} to {true.max():.4g} "
                          f"{prepared.reader.info.target_unit})")
    log.info("comparing %d model(s) on %d held-out test events", len(models), len(true))

    entries = []
    reference = {"name": REFERENCE, **phys.response_metrics_with_errors(ref, true, n_bootstrap=a.bootstrap,
                                                                        seed=cfg.seed),
                 "binned": phys.binned_metrics(ref, true, edges, n_bootstrap=a.bootstrap, seed=cfg.seed)}
    for name, stage in models:
        t0 = time.time()
        model, entry = load_and_describe(name, stage, cfg)
        pred = np.concatenate([targets.decode(predict(model, std.apply(x.copy())), r, cfg.data)
                               for x, _, r in chunks])
        entry.update({
            **phys.response_metrics_with_errors(pred, true, n_bootstrap=a.bootstrap, seed=cfg.seed),
            "binned": phys.binned_metrics(pred, true, edges, n_bootstrap=a.bootstrap, seed=cfg.seed),
            "ratio": (pred / true).astype(np.float32),  # for plots; dropped before writing
        })
        if cfg.hls.simulate:
            entry.update(hls_simulate(model, std, chunks.inputs(), true, ref, cfg, run_dir / HLS / name,
                                      synth_tool))
        entries.append(entry)
        log.info("%s: response %.4f, resolution %.4f, %d multipliers, hls max |diff| %s (%.1f s)", name,
                 entry["response_median"], entry["resolution_q68"], entry["multipliers"],
                 f"{entry['hls_max_abs_diff']:.4g}" if "hls_max_abs_diff" in entry else "-", time.time() - t0)
    base = next((e for e in entries if e["name"] == BASELINE), None)
    for e in entries:
        e["response_shift"] = e["response_median"] - base["response_median"] if base else None
        e["resolution_shift"] = (e["resolution_q68"] / base["resolution_q68"] - 1) if base else None
    reference["ratio"] = (ref / true).astype(np.float32)
    return {"samples": int(len(true)), "bins": edges.tolist(), "target_name": prepared.reader.info.target_name,
            "target_unit": prepared.reader.info.target_unit, "models": entries, "reference": reference}


def write_outputs(summary: dict, out: Path) -> dict:
    """summary.json, summary.csv, report.md and plots/; returns the stage's metrics (written last, by the caller)."""
    from hepprune.prune import report

    out.mkdir(parents=True, exist_ok=True)
    report.plots(summary, out / "plots")
    clean = {**summary, "models": [{k: v for k, v in m.items() if k != "ratio"} for m in summary["models"]],
             "reference": {k: v for k, v in summary["reference"].items() if k != "ratio"}}
    artifacts.write_json(out / "summary.json", clean)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=CSV_FIELDS, extrasaction="ignore")
    writer.writeheader()
    writer.writerows({**m, **{f"synth_{k.lower()}": v for k, v in m.get("synthesis", {}).get("totals", {}).items()},
                      "synth_latency_max_cycles": m.get("synthesis", {}).get("latency_max_cycles")}
                     for m in clean["models"])
    artifacts.write_text(out / "summary.csv", buf.getvalue())
    artifacts.write_text(out / "report.md", report.markdown(clean))
    return {"stage": STAGE, "samples": summary["samples"], "models": [m["name"] for m in clean["models"]]}
