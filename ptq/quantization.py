"""Post-training quantisation scan: the narrowest ap_fixed<W,I> a model tolerates.

A scan varies one number, the total width W. Each layer's integer bits I
come from the ranges that layer really sees on held-out events (weights,
biases, outputs), so no bit is spent on range a layer never uses and the
rest of the W bits are fractional; accumulators get hls4ml's exact type.
Every W is exported with hls4ml and C-simulated, bit-accurately, on the
same events. The chosen W is the smallest from which every wider W
keeps response and resolution within a relative tolerance of the float
model (a lucky narrow width below a failing one is not trusted).
"""

from __future__ import annotations

import csv
import io
import logging
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from hepprune.core import artifacts, lifecycle, qat, targets
from hepprune.core import metrics as phys
from hepprune.core.config import Config
from hepprune.core.errors import RunError
from hepprune.core.fixedpoint import HEADROOM, fixed, int_bits
from hepprune.core.models import load_model
from hepprune.core.results import ScanResult
from hepprune.core.runs import BASELINE, MODEL_FILE, PTQ, config_text, finished_models
from hepprune.data.prepare import prepare_data, test_events
from hepprune.ptq import csim_build, emulate, hls_bridge
from hepprune.ptq.ranges import layer_ranges

log = logging.getLogger(__name__)

def width_precisions(ranges: dict[str, dict[str, float]], width: int) -> dict:
    """hls4ml ``LayerName`` precisions at total width ``width`` for every stored
    value (inputs, weights, biases, layer outputs). Accumulators are left to
    hls4ml's exact type inference ("auto"), so the sums add no error of their own."""
    out = {}
    for name, r in ranges.items():
        p = {key: fixed(width, int_bits(v if key in ("weight", "bias") else HEADROOM * v)) for key, v in r.items()}
        if "weight" in r:
            p["accum"] = "auto"
            # hls4ml splits a Dense layer's activation off as <name>_linear or <name>_relu; without its own
            # type it would take the model default and round the layer's output to that.
            for split in (f"{name}_linear", f"{name}_relu"):
                out[split] = {"Precision": {"result": p["result"]}}
        out[name] = {"Precision": p}
    return out


def width_setting(ranges: dict[str, dict[str, float]], width: int) -> tuple[str, dict]:
    """(hls4ml default precision, LayerName precisions) of one scan point: every
    layer at ``width`` bits, and the default, which layers hls4ml adds itself
    (a linear output activation) take, wide enough for the largest output."""
    output_bits = int_bits(HEADROOM * max(r["result"] for r in ranges.values()))
    return fixed(width, output_bits), width_precisions(ranges, width)


def within_tolerance(row: dict, reference: dict, tolerance: float) -> bool:
    """Response and resolution within ``tolerance`` (relative) of the float model;
    a better resolution is never a failure."""
    return (abs(row["response_median"] / reference["response_median"] - 1) <= tolerance
            and row["resolution_q68"] <= reference["resolution_q68"] * (1 + tolerance))


def choose_width(rows: list[dict]) -> int | None:
    """The smallest width from which every wider one is within tolerance too."""
    chosen = None
    for row in sorted(rows, key=lambda r: -r["width"]):
        if not row["within_tolerance"]:
            break
        chosen = row["width"]
    return chosen


def scan(folded, x_raw: np.ndarray, true: np.ndarray, ref: np.ndarray, cfg: Config, work_dir: Path,
         widths: list[int]) -> dict:
    """Evaluate the firmware of ``folded`` (the model as exported, taking
    ``x_raw``) at every width; return the float metrics, one row per width and
    the chosen width (None if no width is within tolerance).

    Each width is converted with hls4ml and emulated bit-exactly in numpy
    (:mod:`hepprune.ptq.emulate`), no compiler needed; only the chosen width
    is compiled and C-simulated, and the two must agree on every event
    (``emulation_check``). A graph the emulation cannot express is compiled
    and C-simulated at every width, as before."""
    ranges = layer_ranges(folded, x_raw)
    y_float = np.asarray(folded.predict(x_raw, batch_size=8192, verbose=0), np.float64).reshape(-1)
    float_metrics = phys.response_metrics(targets.decode(y_float, ref, cfg.data), true)

    def convert(width: int):
        default, precisions = width_setting(ranges, width)
        return hls_bridge.convert(folded, work_dir / f"w{width}", replace(cfg.hls, precision=default), precisions)

    graphs = {width: convert(width) for width in widths}
    outputs: dict[int, np.ndarray | None] = {}
    try:
        for width, graph in graphs.items():
            outputs[width] = emulate.emulate(graph, x_raw).reshape(-1)
        method = "emulation"
    except emulate.Unsupported as exc:
        log.info("%s; compiling and C-simulating every width", exc)
        method = "C simulation"
        outputs = _compiled_outputs(graphs, x_raw)
    rows: list[dict[str, Any]] = []
    for width, y in outputs.items():
        if y is None:
            rows.append({"width": width, "response_median": None, "response_mean": None, "resolution_q68": None,
                         "resolution_std": None, "max_abs_diff": None, "within_tolerance": False,
                         "error": "C simulation aborted"})
            continue
        m = phys.response_metrics(targets.decode(y, ref, cfg.data), true)
        row = {"width": width, "response_median": m["response_median"], "response_mean": m["response_mean"],
               "resolution_q68": m["resolution_q68"], "resolution_std": m["resolution_std"],
               "max_abs_diff": float(np.abs(y - y_float).max())}
        row["within_tolerance"] = within_tolerance(row, float_metrics, cfg.ptq.tolerance)
        rows.append(row)
        log.info("ap_fixed<%d,I>: response %.4f, resolution %.4f, max |diff| %.3g%s", width, row["response_median"],
                 row["resolution_q68"], row["max_abs_diff"], "" if row["within_tolerance"] else " (outside tolerance)")
    chosen = choose_width(rows)
    default, precisions = width_setting(ranges, chosen) if chosen else (None, None)
    result = {"float": float_metrics, "widths": rows, "chosen_width": chosen, "tolerance": cfg.ptq.tolerance,
              "ranges": ranges, "precisions": precisions, "default_precision": default, "method": method}
    if method == "emulation" and chosen:
        result["emulation_check"] = check_emulation(graphs[chosen], x_raw, outputs[chosen], chosen)
    return result


def check_emulation(graph, x: np.ndarray, emulated: np.ndarray | None, width: int) -> dict:
    """Compile and C-simulate the chosen point: its emulation must equal the C
    simulation on every event; a disagreement is an error, never a silent pick."""
    csim_build.compile_graph(graph)
    assert emulated is not None
    differing = emulate.events_differing(hls_bridge.csim_predict(graph, x), emulated)
    if differing:
        raise RunError(f"ap_fixed<{width},I>: the numpy emulation differs from the C simulation on {differing} of "
                       f"{len(x)} events; please report it (a type the emulation does not model)")
    return {"width": width, "events": int(len(x)), "events_differing": differing}


def _compiled_outputs(graphs: dict, x: np.ndarray) -> dict[int, np.ndarray | None]:
    """Every width compiled (g++ in subprocesses: two threads keep both cores busy) and C-simulated."""
    with ThreadPoolExecutor(max_workers=2) as pool:
        list(pool.map(csim_build.compile_graph, graphs.values()))
    outputs: dict[int, np.ndarray | None] = {}
    for width, graph in graphs.items():
        try:
            outputs[width] = hls_bridge.csim_predict(graph, x).reshape(-1)
        except hls_bridge.CsimError as exc:
            log.warning("ap_fixed<%d,I>: %s; counted as outside tolerance", width, exc)
            outputs[width] = None
    return outputs


# ------------------------------------------------------------ run directory

STAGE = PTQ
CSV_FIELDS = ("width", "response_median", "response_mean", "resolution_q68", "resolution_std", "max_abs_diff",
              "within_tolerance")


def scan_models(cfg: Config, run_dir: Path, *, samples: int | None, names: list[str] | None = None) -> dict:
    """Scan every selected model of the run; write RUN/ptq/<model>/ for each
    as soon as it is done, so a killed job keeps the finished models."""
    models = finished_models(run_dir, names)
    with prepare_data(cfg, run_dir / BASELINE) as prepared:
        x_raw, true, ref = test_events(prepared, samples)
        std = prepared.standardization
    results: dict[str, dict] = {}
    for name, model_dir in models:
        if qat.file_has_qkeras_layers(model_dir / MODEL_FILE):  # its types were trained, not chosen after
            bits = artifacts.read_json(model_dir / artifacts.METRICS_FILE).get("bits")
            log.info("%s: trained with quantisation (%s bits); no bit-width scan needed", name, bits)
            results[name] = {"qat_bits": bits}
            continue
        with lifecycle.stage(run_dir / STAGE / name, config_text(cfg), overwrite=True) as stage:
            stage.acquire()
            results[name] = _scan_model(cfg, name, load_model(model_dir / MODEL_FILE, cfg.model), std, x_raw,
                                        true, ref, stage)
    return results


def _scan_model(cfg: Config, name: str, model, std, x_raw: np.ndarray, true: np.ndarray, ref: np.ndarray,
                stage: lifecycle.Stage) -> dict:
    # The standardisation folded into a first Dense layer (raw inputs), or standardised inputs.
    exported, to_input, _ = hls_bridge.firmware_model(model, std, [x_raw])
    x_in = to_input(x_raw)
    out = stage.path
    stage.begin()
    log.info("%s: scanning widths %s on %d test events", name, cfg.ptq.widths, len(true))
    with tempfile.TemporaryDirectory(prefix=".scan.", dir=out) as work:
        result = scan(exported, x_in, true, ref, cfg, Path(work), cfg.ptq.widths)
    result.update(model=name, samples=int(len(true)))
    if result["chosen_width"]:  # the project to synthesise: written, not compiled
        hls = replace(cfg.hls, precision=result["default_precision"])
        hls_bridge.convert(exported, out / "hls4ml", hls, result["precisions"]).write()
    stage.finish(write_scan(result, out))
    if result["chosen_width"] is None:
        log.warning("%s: no width in %s is within tolerance %g of float; widen ptq.widths", name,
                    cfg.ptq.widths, cfg.ptq.tolerance)
    return result


def write_scan(result: dict, out: Path) -> ScanResult:
    """scan.json, scan.csv and scan.png; returns the stage's metrics (written last, by the caller)."""
    artifacts.write_json(out / "scan.json", result)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=CSV_FIELDS)
    writer.writeheader()
    writer.writerows({k: r[k] for k in CSV_FIELDS} for r in result["widths"])
    artifacts.write_text(out / "scan.csv", buf.getvalue())
    plot(result, out / "scan.png")
    return ScanResult(result["model"], result["chosen_width"], result["default_precision"], result["tolerance"],
                      result["float"], result["samples"])


def plot(result: dict, path: Path) -> None:
    import matplotlib  # noqa: PLC0415 - deferred: matplotlib loads only where a plot is drawn

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415 - deferred: matplotlib, after its backend is chosen

    rows = [r for r in result["widths"] if r["response_median"] is not None]  # not the aborted ones
    ref, tol = result["float"], result["tolerance"]
    w = [r["width"] for r in rows]
    fig, axes = plt.subplots(2, 1, figsize=(6.5, 6), sharex=True)
    for ax, key, label in ((axes[0], "response_median", "median pred/true"),
                           (axes[1], "resolution_q68", "resolution (q68 of pred/true)")):
        ax.plot(w, [r[key] for r in rows], "o-", label="hls4ml C simulation")
        ax.axhline(ref[key], color="k", lw=1, label="float (Keras)")
        if key == "response_median":
            ax.axhspan(ref[key] * (1 - tol), ref[key] * (1 + tol), color="grey", alpha=0.2, label="tolerance")
        else:
            ax.axhspan(0, ref[key] * (1 + tol), color="grey", alpha=0.2, label="tolerance")
            ax.set_ylim(0, max(ref[key] * 2, min(max((r[key] for r in rows), default=0), ref[key] * 5)))
        if result["chosen_width"]:
            ax.axvline(result["chosen_width"], color="C3", ls="--", lw=1, label=f"chosen W={result['chosen_width']}")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    axes[0].set_title(f"{result['model']}: ap_fixed<W,I>, I per layer from its ranges")
    axes[1].set_xlabel("total bits W")
    fig.tight_layout()
    with artifacts.atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
