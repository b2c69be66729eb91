"""The comparison of a run's models: the baseline and every pruned model, side by side.

Every model is evaluated on the same held-out test events (the first
``analysis.samples`` of the test split in file order, or all of them), then
exported to hls4ml and C-simulated on them. What is compared, tabulated and
plotted is the task's (:mod:`hepprune.core.task`): response and resolution
beside the raw reference for a regression, accuracy and ROC AUC for a
classifier. Writes ``RUN/analysis/`` (summary.json, summary.csv, report.md,
plots/) and ``RUN/hls4ml/<model>/``.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from hepprune.core import artifacts
from hepprune.core.backend import tf, without_keras_3
from hepprune.core.config import Config
from hepprune.core.fit import size_metrics
from hepprune.core.models import load_model
from hepprune.core.qat import is_quantised
from hepprune.core.results import ModelRow, Size
from hepprune.core.runs import BASELINE, HLS, MODEL_FILE, RTL, finished_models
from hepprune.core.task import Analysis, task_of
from hepprune.data import loader
from hepprune.data.prepare import HeldOutEvents, Mapped, prepare_data
from hepprune.ptq import csim_build, hls_bridge, synthesis
from hepprune.ptq.firmware import firmware_cost, weighted_kernels

log = logging.getLogger(__name__)


def layer_sparsity(model) -> dict[str, float]:
    return {name: float(np.mean(kernel == 0)) for name, kernel in weighted_kernels(model).items()}


def tflite_sizes(model) -> tuple[int, int]:
    """Bytes of the float and the dynamic-range quantised TFLite model."""
    sizes = []
    for quantize in (False, True):
        converter = tf.lite.TFLiteConverter.from_keras_model(model)
        if quantize:
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
        with without_keras_3():  # the converter's Keras 3 check would import Keras 3 (~2 s)
            sizes.append(len(converter.convert()))
    return sizes[0], sizes[1]


def predict(model, x: np.ndarray, batch: int = 8192) -> np.ndarray:
    """Keras outputs, one row per event, in batches."""
    return np.concatenate([np.asarray(model.predict_on_batch(x[i:i + batch])).reshape(len(x[i:i + batch]), -1)
                           for i in range(0, len(x), batch)])


@dataclass
class Export:
    """An hls4ml export, C-simulated on the analysis events."""

    y_hls: np.ndarray  # firmware outputs, one row per event
    y_keras: np.ndarray  # Keras outputs of the same exported model
    hls: dict[str, Any]  # the project, its precisions and inputs, max |hls - Keras|
    cost: dict[str, Any]  # the firmware cost with the export's per-layer weight widths
    synthesis: dict[str, Any] | None = None  # the vendor report, with --synth


def export_and_simulate(model, std: loader.Standardization, x_chunks, cfg: Config, out_dir: Path,
                        synth_tool: str | None = None) -> Export:
    """Export to hls4ml in ``out_dir`` and C-simulate; with ``synth_tool``,
    also C-synthesise the project and read its report. ``x_chunks``: the raw
    test inputs as re-iterable arrays (a chunk at a time)."""
    exported, to_input, raw_precisions = hls_bridge.firmware_model(model, std, x_chunks)
    x_in = Mapped(x_chunks, to_input)
    quantised = is_quantised(exported)  # QAT: every type is the quantisers', none is widened
    precisions = raw_precisions if quantised else \
        hls_bridge.widen_overflowing(exported, x_in, raw_precisions, cfg.hls.precision)
    backend = synthesis.backend_for(synth_tool) if synth_tool else hls_bridge.BACKEND
    graph = hls_bridge.convert(exported, out_dir, cfg.hls, precisions, backend=backend)
    csim_build.compile_graph(graph)
    hls_parts, keras_parts = [], []
    for x in x_in:
        hls_parts.append(hls_bridge.csim_predict(graph, x.reshape(len(x), -1)).reshape(len(x), -1))
        keras_parts.append(predict(exported, x))
    y_hls, y_keras = np.concatenate(hls_parts), np.concatenate(keras_parts)
    hls = {"hls_dir": str(out_dir), "hls_precisions": precisions or {},
           "hls_inputs": "standardised" if quantised or raw_precisions is None else "raw",
           "hls_max_abs_diff": float(np.abs(y_hls - y_keras).max())}
    if quantised:  # the firmware must equal the QKeras model on every event, bit for bit
        differing = np.flatnonzero(np.any(y_hls != y_keras, axis=1))
        hls["hls_events_differing"] = int(len(differing))
        if len(differing):
            first = np.concatenate(list(x_in))[differing[0]]
            layer = hls_bridge.first_disagreeing_layer(exported, first, cfg.hls, precisions, out_dir / "trace")
            hls["hls_first_disagreeing_layer"] = layer
            log.warning("%s: the C simulation differs from the QKeras model on %d of %d events; the first "
                        "layer whose output differs is %s", out_dir.name, len(differing), len(y_hls), layer)
    # The cost again, with the export's per-layer weight widths: a widened layer may need DSPs.
    return Export(y_hls, y_keras, hls, firmware_cost(model, cfg.hls, precisions, hls_bridge.reuse_factors(graph)),
                  synthesis.run_synthesis(graph, out_dir) if synth_tool else None)


def _with_cost(row: ModelRow, cost: dict[str, Any]) -> None:
    row.firmware, row.multipliers, row.dsp, row.bram_18k = cost, cost["multipliers"], cost["dsp"], cost["bram_18k"]


SILICON_KEYS = ("precision", "samples", "events_differing", "clock_mhz", "latency_cycles", "lut_estimate",
                "da4ml_cost")


def silicon(run_dir: Path, name: str) -> dict[str, Any] | None:
    """The RTL stage's synthesised figures of a model (RUN/rtl/<model>/), if it finished."""
    stage = run_dir / RTL / name
    if not artifacts.is_complete(stage):
        return None
    m = artifacts.read_json(stage / artifacts.METRICS_FILE)
    return {**{k: m[k] for k in SILICON_KEYS if k in m}, **m["synthesis"], "tools": m.get("tools", {})}


def load_and_describe(name: str, stage: Path, cfg: Config) -> tuple[Any, ModelRow]:
    """(model, its row with what every task reports: sparsity, sizes, firmware cost)."""
    model = load_model(stage / MODEL_FILE, cfg.model)
    stage_metrics = artifacts.read_json(stage / artifacts.METRICS_FILE)
    tfl, tfl_q = tflite_sizes(model)
    row = ModelRow(name=name, sparsity=float(stage_metrics.get("achieved_sparsity", 0.0)),
                   bits=stage_metrics.get("bits"), quantisers=stage_metrics.get("quantisers"),
                   size=size_metrics(model, (stage / MODEL_FILE).read_bytes()), tflite_bytes=tfl,
                   tflite_quant_bytes=tfl_q, layer_sparsity=layer_sparsity(model))
    _with_cost(row, firmware_cost(model, cfg.hls))
    return model, row


def _begin(task: Any, prepared: Any, samples: int | None) -> tuple[HeldOutEvents, Analysis]:
    """The held-out events (re-read a chunk at a time on every pass: ``--samples all``
    never holds the split's inputs) and the task's analysis of their true values."""
    chunks = HeldOutEvents(prepared, samples)
    info = prepared.reader.info
    true = np.concatenate([t for _, t, _ in chunks])
    ref = np.concatenate([r for _, _, r in chunks])
    return chunks, task.begin_analysis(true, ref, {"target_name": info.target_name,
                                                   "target_unit": info.target_unit, "class_names": info.class_names})


def _outputs(model: Any, chunks: HeldOutEvents, std: loader.Standardization) -> np.ndarray:
    return np.concatenate([predict(model, std.apply(x.copy())) for x, _, _ in chunks])


def physics(cfg: Config, run_dir: Path, names: list[str], *, samples: int | None = None) -> dict[str, dict[str, Any]]:
    """The baseline's and each named model's task metrics on the held-out test
    events, with the paired shifts and verdict against the baseline; no
    export, no sizes: what the frontier search judges a candidate by."""
    task = task_of(cfg)
    with prepare_data(cfg, run_dir / BASELINE) as prepared:
        chunks, analysis = _begin(task, prepared, samples)
        for name in dict.fromkeys([BASELINE, *names]):
            model = load_model(run_dir / name / MODEL_FILE, cfg.model)
            row = ModelRow(name=name, sparsity=0.0, size=Size(0, 0, 0, 0))
            row.metrics = task.model_metrics(analysis, name, _outputs(model, chunks, prepared.standardization))
            analysis.rows.append(row)
    task.compare(analysis, BASELINE)
    return {r.name: r.metrics for r in analysis.rows}


def analyse(cfg: Config, run_dir: Path, *, samples: int | None, names: list[str] | None = None,
            synth_tool: str | None = None) -> Analysis:
    """Evaluate every model; ``synth_tool`` (vitis_hls or vivado_hls) adds C
    synthesis to the hls4ml export."""
    models = finished_models(run_dir, names)
    task = task_of(cfg)
    with prepare_data(cfg, run_dir / BASELINE) as prepared:
        chunks, analysis = _begin(task, prepared, samples)  # the per-event outputs kept are small
        std = prepared.standardization
        log.info("comparing %d model(s) on %d held-out test events", len(models), len(analysis.true))
        for name, stage in models:
            t0 = time.time()
            model, row = load_and_describe(name, stage, cfg)
            row.metrics = task.model_metrics(analysis, name, _outputs(model, chunks, std))
            if cfg.hls.simulate:
                export = export_and_simulate(model, std, chunks.inputs(), cfg, run_dir / HLS / name, synth_tool)
                _with_cost(row, export.cost)
                row.synthesis = export.synthesis
                row.hls = {**export.hls, **task.firmware_agreement(analysis, name, export.y_hls, export.y_keras)}
            row.silicon = silicon(run_dir, name)
            analysis.rows.append(row)
            log.info("%s: %s, %d multipliers, hls max |diff| %s (%.1f s)", name, task.headline(row.metrics),
                     row.multipliers, f"{row.hls['hls_max_abs_diff']:.4g}" if row.hls else "-", time.time() - t0)
    task.compare(analysis, BASELINE)
    return analysis
