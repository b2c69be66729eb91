"""The RTL stage: every model as distributed-arithmetic firmware, Verilog,
Verilator simulation and Yosys synthesis, without vendor tools.

Its own stage (``RUN/rtl/<model>/``), not part of the analysis: it needs the
baseline's chosen width from the bit-width scan, it runs tools the analysis
does not (Verilator, Yosys) for minutes per model, and a cluster runs it as
its own job. The analysis reads its ``metrics.json`` files and shows the
synthesised figures beside its estimates.

Per model:

* float models at the baseline's chosen width W (``rtl.width`` overrides),
  with the bit-width scan's per-layer ap_fixed<W,I>, weights put on their
  grid first (distributed arithmetic builds the values it is given); QAT
  models with their trained quantisers' types;
* the hls4ml project with ``strategy: distributed_arithmetic``
  (``hls4ml_da/``), C-simulated on the held-out events;
* the whole network traced into da4ml and written as Verilog, combinational
  and pipelined for ``rtl.clock_mhz`` (``verilog/``), each simulated by
  Verilator and compared bit for bit with that C simulation (and with the
  QKeras model for QAT models);
* Yosys ``synth_xilinx`` of the pipelined network and, with
  ``rtl.per_layer``, of each layer on its own (combinational).
"""

from __future__ import annotations

import logging
import math
import shutil
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from hepprune.core import artifacts, lifecycle, qat
from hepprune.core.config import Config
from hepprune.core.errors import HepPruneError, RunError
from hepprune.core.fixedpoint import quantise
from hepprune.core.models import load_model
from hepprune.core.results import RtlResult
from hepprune.core.runs import BASELINE, MODEL_FILE, PTQ, RTL, config_text, finished_models
from hepprune.data.prepare import prepare_data, test_events
from hepprune.ptq import csim_build, da, emulate, firmware, hls_bridge
from hepprune.rtl import synth, tools, trace
from hepprune.rtl.trace import RtlError

log = logging.getLogger(__name__)

STAGE = RTL
# One adder level (a carry chain of a few tens of bits plus routing) per
# nanosecond on UltraScale+: da4ml counts latency in adder levels, so a clock
# period of T ns allows floor(T) levels per pipeline stage.
NS_PER_ADDER_LEVEL = 1.0


def pipeline_cut(clock_mhz: float) -> int:
    """Adder levels per pipeline stage at ``clock_mhz``; refused where not even one fits."""
    period = 1000.0 / clock_mhz
    levels = math.floor(period / NS_PER_ADDER_LEVEL + 1e-9)
    if levels < 1:
        raise RtlError(f"rtl.clock_mhz={clock_mhz:g}: a period of {period:.3g} ns is shorter than one adder level "
                       f"(~{NS_PER_ADDER_LEVEL:g} ns), so no pipeline depth meets it; use rtl.clock_mhz <= "
                       f"{1000 / NS_PER_ADDER_LEVEL:g}")
    return levels


def check_settings(cfg: Config) -> int:
    """The pipeline cut, after refusing what distributed arithmetic cannot build."""
    if cfg.hls.reuse_factor > 1:
        raise RtlError(f"hls.reuse_factor={cfg.hls.reuse_factor}: distributed arithmetic is fully parallel "
                       "(each constant product built once, in adders); run the RTL stage with "
                       "--set hls.reuse_factor=1")
    return pipeline_cut(cfg.rtl.clock_mhz)


def baseline_width(cfg: Config, run_dir: Path) -> int:
    """rtl.width, or the width the bit-width scan chose for the baseline."""
    if cfg.rtl.width:
        return cfg.rtl.width
    scan = run_dir / PTQ / BASELINE
    metrics = artifacts.read_json(scan / artifacts.METRICS_FILE) if artifacts.is_complete(scan) else None
    if metrics is None:
        raise RunError(f"rtl.width=0 takes the baseline's chosen width, but {scan} holds no finished bit-width "
                       f"scan; run ptq/bitwidth_scan.py --run-dir {run_dir} --models baseline first, or set "
                       "rtl.width")
    if not metrics.get("chosen_width"):
        raise RunError(f"the bit-width scan in {scan} chose no width (none was within tolerance); set rtl.width")
    return int(metrics["chosen_width"])


def build_model_rtl(cfg: Config, name: str, model: Any, std: Any, x_raw: np.ndarray, width: int | None,
                    out: Path) -> RtlResult:
    """Everything of one model in ``out``; ``width`` None for a QAT model (its trained types)."""
    t0 = time.time()
    out = out.resolve()  # da4ml changes the working directory (see below): no relative path may remain
    cut = check_settings(cfg)
    m = da.da_model(model, std, x_raw, cfg.hls, width)
    exported, x_in, hls, precisions, label = m.exported, m.x_in, m.hls, m.precisions, m.label

    graph = hls_bridge.convert(exported, out / "hls4ml_da", replace(hls, strategy="distributed_arithmetic"),
                               precisions)
    with tempfile.TemporaryDirectory(prefix=".latency.", dir=out) as work:  # traced, never compiled
        latency = hls_bridge.convert(exported, Path(work), hls, precisions)
        pieces = trace.trace_layers(latency, per_layer=cfg.rtl.per_layer)
        estimate = firmware.da_lut_estimate(da.dense_layers(latency, RtlError))
    network = pieces[0][1]
    x_grid = quantise(np.asarray(x_in, np.float64).reshape(len(x_in), -1), trace.input_type(graph))

    verilog = out / "verilog"
    flat = synth.emit(network, verilog / "combinational")
    piped = synth.emit(network, verilog / "pipelined", latency_cutoff=cut, clock_period_ns=1000 / cfg.rtl.clock_mhz)
    parts = {layer: synth.emit(comb, verilog / "layers" / layer) for layer, comb in pieces[1:]}

    def c_simulate() -> np.ndarray:
        csim_build.compile_graph(graph)
        return hls_bridge.csim_predict(graph, x_in).reshape(len(x_in), -1)

    # The C simulation's build and the Yosys runs go to a second thread while this one builds the
    # Verilator emulators: each is a tool process, so both cores stay busy. da4ml changes the working
    # directory while it builds and simulates (process-wide), so it stays in this thread, and the
    # others use absolute paths only.
    with ThreadPoolExecutor(max_workers=1) as pool:
        csim = pool.submit(c_simulate)
        synthesised = pool.submit(synth.synthesise, piped.path, cfg.rtl.family)
        per_layer = {layer: pool.submit(synth.synthesise, rtl.path, cfg.rtl.family) for layer, rtl in parts.items()}
        flat.build()
        piped.build()
        y_csim = csim.result()
        events = {"combinational": emulate.events_differing(flat.predict(x_grid), y_csim),
                  "pipelined": emulate.events_differing(piped.predict(x_grid), y_csim)}
        total = synthesised.result()
        layers = {layer: {k: v for k, v in job.result().items() if k in synth.CELL_GROUPS}
                  for layer, job in per_layer.items()}
    if width is None:  # QAT: the firmware must equal the QKeras model too
        y_keras = np.asarray(exported.predict(x_in, batch_size=8192, verbose=0))
        events["qkeras"] = emulate.events_differing(y_keras, y_csim)
    for what, n in events.items():
        if n:
            log.warning("%s: the %s output differs from the distributed-arithmetic C simulation on %d of %d "
                        "events", name, what, n, len(x_in))
    synthesis = {**total, "layers": layers, "top": synth.TOP, "pipelined": True}
    lut_estimate = {"total": sum(estimate.values()), "layers": estimate}
    versions = {"da4ml": tools.da4ml_version(), "verilator": tools.verilator().version,
                "yosys": tools.yosys().version, "hls4ml": hls_bridge.version()}
    log.info("%s: %d LUT, %d FF, %d carry, %d DSP; %d-cycle pipeline at %g MHz; Verilator vs C simulation: %s "
             "(%.0f s)", name, total["LUT"], total["FF"], total["CARRY"], total["DSP"], piped.latency_cycles,
             cfg.rtl.clock_mhz, ", ".join(f"{k} {v} differ" for k, v in events.items()), time.time() - t0)
    return RtlResult(model=name, precision=label, samples=int(len(x_in)), events_differing=events,
                     clock_mhz=cfg.rtl.clock_mhz, latency_cycles=piped.latency_cycles, synthesis=synthesis,
                     lut_estimate=lut_estimate, da4ml_cost=float(network.cost), tools=versions,
                     seconds=round(time.time() - t0, 1))


def rtl_models(cfg: Config, run_dir: Path, *, samples: int | None, names: list[str] | None = None,
               overwrite: bool = False) -> dict[str, dict]:
    """The RTL stage of every selected model; RUN/rtl/<model>/ is written as
    soon as a model is done, and a finished one is kept unless ``overwrite``."""
    run_dir = Path(run_dir).resolve()  # absolute: da4ml changes the working directory while it works
    models = finished_models(run_dir, names)
    quantised = {n: qat.file_has_qkeras_layers(p / MODEL_FILE) for n, p in models}
    width = baseline_width(cfg, run_dir) if not all(quantised.values()) else None
    check_settings(cfg)
    tools.verilator(), tools.yosys(), tools.da4ml_version()  # a missing tool, before any work
    with prepare_data(cfg, run_dir / BASELINE) as prepared:
        x_raw, _, _ = test_events(prepared, samples)
        std = prepared.standardization
    results: dict[str, dict] = {}
    for name, model_dir in models:
        with lifecycle.stage(run_dir / STAGE / name, config_text(cfg), overwrite=overwrite) as stage:
            done = stage.finished()
            if done is not None:
                results[name] = done
                continue
            stage.begin()
            for leftover in ("hls4ml_da", "verilog"):  # a killed run's partial files
                shutil.rmtree(stage.path / leftover, ignore_errors=True)
            model = load_model(model_dir / MODEL_FILE, cfg.model)
            try:
                result = build_model_rtl(cfg, name, model, std, x_raw, None if quantised[name] else width,
                                         stage.path)
            except HepPruneError:  # a model the path cannot build: leave nothing of it behind
                shutil.rmtree(stage.path, ignore_errors=True)
                raise
            results[name] = stage.finish(result)
    return results
