"""The regression task: a value per event, judged by pred/true.

*Response* is the median of pred/true and *resolution* half its 15.9-84.1 %
width (q68), on held-out events, beside the raw reference estimator the
network has to beat; the analysis also bins them in the true value.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from hepprune.core import metrics as phys
from hepprune.core import targets
from hepprune.core.errors import ConfigError
from hepprune.core.fixedpoint import rounding_advice
from hepprune.core.results import Evaluation
from hepprune.core.task.base import Analysis, Task, name_width, pyplot, save_figure, text_table, tolerance_warning

REFERENCE = "reference"

log = logging.getLogger(__name__)


def _pm(m: dict[str, Any], key: str, digits: int = 4) -> str:
    err = m.get(f"{key}_err")
    return f"{m[key]:.{digits}f}" + (f" ± {err:.{digits}f}" if err is not None else "")


def _shift(v: float | None, pct: bool = False) -> str:
    if v is None:
        return "-"
    return f"{100 * v:+.1f} %" if pct else f"{v:+.4f}"


def _shift_pm(m: dict[str, Any], key: str) -> str:
    """'+0.0012 ± 0.0004' (response) or '+4.1 ± 1.2 %' (resolution), **beyond** when it fails."""
    v, err = m.get(key), m.get(f"{key}_err")
    if v is None:
        return "-"
    pct = key == "resolution_shift"
    text = (f"{100 * v:+.1f}" + (f" ± {100 * err:.1f}" if err is not None else "") + " %") if pct else \
        (f"{v:+.4f}" + (f" ± {err:.4f}" if err is not None else ""))
    beyond = m.get(key.replace("_shift", "_beyond"))
    return text + (" **beyond**" if beyond else "")


def physics_verdict(m: dict[str, Any], a: Any) -> dict[str, Any]:
    """Marks each shift (overall and per bin) beyond its tolerance by more than
    ``a.significance`` sigma (``response_beyond``, ``resolution_beyond``) and
    sums up: ``{"ok": no shift beyond, "beyond": what failed, readable}``."""
    failed = []
    for where, row in [("overall", m), *((f"{b['low']:.4g}-{b['high']:.4g}", b) for b in m["binned"]
                                        if b["n_events"])]:
        for key, tol, two_sided in (("response", a.response_tolerance, True),
                                    ("resolution", a.resolution_tolerance, False)):
            shift, err = row.get(f"{key}_shift"), row.get(f"{key}_shift_err")
            row[f"{key}_beyond"] = phys.beyond_tolerance(shift, err, tol, a.significance, two_sided=two_sided)
            if row[f"{key}_beyond"]:
                value = _shift_pm({f"{key}_shift": shift, f"{key}_shift_err": err}, f"{key}_shift")
                failed.append(f"{key} {where}: {value}")
    return {"ok": not failed, "beyond": failed, "response_tolerance": a.response_tolerance,
            "resolution_tolerance": a.resolution_tolerance, "significance": a.significance}


class Regression(Task):
    name = "regression"
    CSV_FIELDS = ("name", "sparsity", "response_median", "response_median_err", "response_mean", "response_mean_err",
                  "resolution_q68", "resolution_q68_err", "resolution_std", "resolution_iqr", "response_shift",
                  "response_shift_err", "resolution_shift", "resolution_shift_err", "physics_ok", "params",
                  "nonzero_params", "h5_bytes", "gzip_bytes", "tflite_bytes", "tflite_quant_bytes", "multipliers",
                  "dsp", "bram_18k", "hls_max_abs_diff", "hls_response_median",
                  "hls_response_shift", "synth_dsp", "synth_lut", "synth_ff", "synth_bram_18k",
                  "synth_latency_max_cycles", "rtl_lut", "rtl_ff", "rtl_carry", "rtl_dsp", "rtl_lut_estimate",
                  "rtl_latency_cycles", "rtl_events_differing", "rtl_tool")

    # ------------------------------------------------------------ the data
    def bad_targets(self, true: np.ndarray, n_classes: int) -> tuple[np.ndarray, str] | None:
        """The response pred/true, and the log transform, need a positive target."""
        bad = ~(true > 0)
        if bad.any():
            return bad, "is not positive; the response pred/true divides by it"
        return None

    def encode(self, true: np.ndarray, reference: np.ndarray) -> np.ndarray:
        return targets.encode(true, reference, self.cfg.data)

    def decode(self, output: np.ndarray, reference: np.ndarray) -> np.ndarray:
        return targets.decode(output, reference, self.cfg.data)

    # ------------------------------------------------------------ the model
    def outputs(self, n_classes: int) -> int:
        return 1

    def loss(self, train: Any) -> Any:
        from hepprune.core.backend import keras  # noqa: PLC0415 - deferred: TensorFlow, only where a model is built

        if train.loss == "huber":
            return keras.losses.Huber(delta=train.huber_delta)
        if train.loss == "mae":
            return keras.losses.MeanAbsoluteError()
        return keras.losses.MeanSquaredError()

    def check_outputs(self, units: int, n_classes: int, where: str) -> None:
        if units != 1:
            raise ConfigError(f"{where} has {units} outputs; a regression model needs one")

    # ------------------------------------------------------------ the metrics
    def metrics(self, pred: np.ndarray, true: np.ndarray, class_names: tuple[str, ...]) -> dict[str, Any]:
        return phys.response_metrics(pred, true)

    def reference_metrics(self, ref: np.ndarray, true: np.ndarray) -> dict[str, Any] | None:
        return phys.response_metrics(ref, true)

    def headline(self, test: dict[str, Any]) -> str:
        return f"response {test['response_median']:.4f}, resolution {test['resolution_q68']:.4f}"

    def evaluation(self, test: dict[str, Any], reference: dict[str, Any] | None) -> Evaluation:
        return Evaluation(self.name, test, reference, self.cfg.data.target_transform, self.cfg.train.loss)

    # ------------------------------------------------------------ the analysis
    def _with_errors(self, pred: np.ndarray, true: np.ndarray, edges: np.ndarray) -> dict[str, Any]:
        a, seed = self.cfg.analysis, self.cfg.seed
        return {**phys.response_metrics_with_errors(pred, true, n_bootstrap=a.bootstrap, seed=seed),
                "binned": phys.binned_metrics(pred, true, edges, n_bootstrap=a.bootstrap, seed=seed)}

    def begin_analysis(self, true: np.ndarray, reference: np.ndarray, dataset: dict[str, Any]) -> Analysis:
        a = self.cfg.analysis
        edges = np.asarray(a.bins, np.float64) if a.bins else phys.quantile_bins(true, a.n_bins)
        if not ((true >= edges[0]) & (true <= edges[-1])).any():
            raise ConfigError(f"analysis.bins {a.bins} hold none of the {len(true)} test events (the true "
                              f"{dataset['target_name']} spans {true.min():.4g} to {true.max():.4g} "
                              f"{dataset['target_unit']})")
        if edges[0] == edges[-1]:
            log.warning("every true %s in the %d test events is %.6g %s: one bin", dataset["target_name"],
                        len(true), edges[0], dataset["target_unit"])
        edges, merged = phys.merge_sparse_bins(true, edges)
        if merged:
            log.warning("bins with fewer than %d test events merged (analysis.%s): %s", phys.MIN_BIN_EVENTS,
                        "bins" if a.bins else "n_bins", "; ".join(merged))
        inside = int(np.count_nonzero(phys.bin_index(true, edges) >= 0))
        if inside < phys.MIN_BIN_EVENTS:
            log.warning("only %d test events fall in the bins: binned response and resolution are not "
                        "meaningful (use more --samples or a larger test split)", inside)
        analysis = Analysis(int(len(true)), true, reference,
                            info={"bins": edges.tolist(), "target_name": dataset["target_name"],
                                  "target_unit": dataset["target_unit"]})
        analysis.info[REFERENCE] = {"name": REFERENCE, **self._with_errors(reference, true, edges)}
        analysis.outputs[REFERENCE] = np.asarray(reference, np.float64) / true
        return analysis

    def model_metrics(self, analysis: Analysis, name: str, outputs: np.ndarray) -> dict[str, Any]:
        pred = self.decode(outputs, analysis.reference)
        analysis.outputs[name] = np.asarray(pred, np.float64).reshape(-1) / analysis.true  # paired shifts, plots
        return self._with_errors(pred, analysis.true, np.asarray(analysis.info["bins"]))

    def firmware_agreement(self, analysis: Analysis, name: str, y_hls: np.ndarray,
                           y_keras: np.ndarray) -> dict[str, Any]:
        """The firmware's response against the Keras model's on the same events."""
        true, ref, tolerance = analysis.true, analysis.reference, self.cfg.ptq.tolerance
        hls = phys.response_metrics(self.decode(y_hls.reshape(-1), ref), true)
        keras_median = phys.response_metrics(self.decode(y_keras.reshape(-1), ref), true)["response_median"]
        shift = hls["response_median"] / keras_median - 1 if keras_median else None  # None: a dead model
        ok = shift is not None and abs(shift) <= tolerance
        if not ok:
            off = f"{100 * shift:+.1f} % off" if shift is not None else "not comparable with"
            tolerance_warning(name, f"response is {off} the Keras model's at {self.cfg.hls.precision}", self.cfg,
                              rounding_advice(self.cfg.hls.precision))
        return {"hls_response_median": hls["response_median"], "hls_resolution_q68": hls["resolution_q68"],
                "hls_response_shift": shift, "hls_response_ok": ok}

    def compare(self, analysis: Analysis, baseline: str) -> None:
        """Each model's shifts against the baseline, paired on the same events,
        overall and per bin, and whether any exceeds its tolerance by more than
        analysis.significance standard errors (``physics``)."""
        a = self.cfg.analysis
        base = analysis.outputs.get(baseline)
        idx = phys.bin_index(analysis.true, np.asarray(analysis.info["bins"]))
        for r in analysis.rows:
            m = r.metrics
            if base is None:
                m.update(response_shift=None, resolution_shift=None)
                continue
            ratio = analysis.outputs[r.name]
            m.update(phys.paired_shifts(ratio, base, n_bootstrap=a.bootstrap, seed=self.cfg.seed))
            for b, row in enumerate(m["binned"]):
                if row["n_events"]:
                    sel = idx == b
                    row.update(phys.paired_shifts(ratio[sel], base[sel], n_bootstrap=a.bootstrap,
                                                  seed=self.cfg.seed + 1 + b))
            m["physics"] = physics_verdict(m, a)

    def _tolerance_note(self) -> str:
        a = self.cfg.analysis
        return (f"Shifts are against the baseline on the same events, ± a paired bootstrap error; **beyond** marks "
                f"one that exceeds its tolerance (response ±{a.response_tolerance:g}, resolution "
                f"+{100 * a.resolution_tolerance:g} %; analysis.response_tolerance, analysis.resolution_tolerance) "
                f"by more than {a.significance:g}σ.")

    def csv_row(self, row: dict[str, Any]) -> dict[str, Any]:
        synth = row.get("synthesis", {})
        silicon = row.get("silicon") or {}
        rtl = {f"rtl_{k.lower()}": silicon[k] for k in ("LUT", "FF", "CARRY", "DSP") if k in silicon}
        if silicon:  # the RTL stage's synthesis (rtl/synthesize_rtl.py)
            rtl.update(rtl_lut_estimate=silicon.get("lut_estimate", {}).get("total"),
                       rtl_latency_cycles=silicon.get("latency_cycles"),
                       rtl_events_differing=sum(silicon.get("events_differing", {}).values()),
                       rtl_tool=f"{silicon['tool']}, {silicon['family']}")
        physics = row.get("physics")
        return {**row, "physics_ok": physics["ok"] if physics else None,
                **{f"synth_{k.lower()}": v for k, v in synth.get("totals", {}).items()},
                "synth_latency_max_cycles": synth.get("latency_max_cycles"), **rtl}

    def verdicts(self, summary: dict[str, Any]) -> list[str]:
        return [line.replace("**", "") for line in verdict_lines(summary["models"]) if line]

    def table(self, summary: dict[str, Any]) -> str:
        rows = [[m["name"], f"{m['sparsity']:.3f}", f"{m['response_median']:.4f}", f"{m['resolution_q68']:.4f}",
                 str(m["multipliers"]), str(m["gzip_bytes"]),
                 *((f"{m['hls_max_abs_diff']:.4g}", f"{m['hls_response_median']:.4f}") if "hls_max_abs_diff" in m
                   else ("-", "-"))] for m in summary["models"]]
        ref = summary[REFERENCE]
        rows.append(["raw ref.", "-", f"{ref['response_median']:.4f}", f"{ref['resolution_q68']:.4f}"])
        return text_table([("model", name_width(summary["models"])), ("sparsity", 9),
                           ("response", 10), ("resolution", 12), ("multipliers", 13),
                           ("gzip bytes", 12), ("hls max |d|", 13), ("hls response", 14)], rows)

    def markdown(self, summary: dict[str, Any]) -> str:
        unit = summary["target_unit"]
        models = summary["models"]
        synthesised = any("synthesis" in m for m in models)  # real vendor numbers beside the estimates
        ref = summary[REFERENCE]
        first = models[0]["firmware"]
        lines = [
            "# Pruned-model comparison",
            "",
            f"{summary['samples']} held-out test events. Response = median of pred/true; resolution = half the "
            "15.9-84.1 % width of pred/true (q68), also as std and IQR/1.349; ± are bootstrap standard errors. "
            "Multipliers: hls4ml's count after pruning "
            f"({first.get('strategy', 'latency')} strategy, {reuse_label(first)}, {first['precision']}); "
            "DSP and BRAM18K are estimates without vendor tools.",
            "",
            "## Physics",
            "",
            self._tolerance_note(),
            "",
            *verdict_lines(models),
            "| model | sparsity | response | resolution (q68) | std | IQR/1.349 | response shift | resolution shift |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for m in models:
            lines.append(f"| {m['name']} | {m['sparsity']:.3f} | {_pm(m, 'response_median')} | "
                         f"{_pm(m, 'resolution_q68')} | {m['resolution_std']:.4f} | {m['resolution_iqr']:.4f} | "
                         f"{_shift_pm(m, 'response_shift')} | {_shift_pm(m, 'resolution_shift')} |")
        lines.append(f"| raw {ref.get('name', REFERENCE)} | - | {_pm(ref, 'response_median')} | "
                     f"{_pm(ref, 'resolution_q68')} | {ref['resolution_std']:.4f} | "
                     f"{ref['resolution_iqr']:.4f} | - | - |")
        lines += size_table(models, synthesised)
        lines += silicon_table(models)
        if any("hls_max_abs_diff" in m for m in models):
            lines += ["", "## hls4ml C simulation", "",
                      "Firmware inputs: *raw* where the input standardisation is folded into the first layer, "
                      "*standardised* where it cannot be (a CNN, a branched input). Max |Δ| is between the C "
                      "simulation and Keras on the network output; the response shift is the firmware's "
                      "response relative to the Keras model's, and **check** marks one beyond ptq.tolerance "
                      "(try ptq/bitwidth_scan.py, or AP_RND rounding in hls.precision).", "",
                      "| model | inputs | max abs Δ | hls response | hls resolution (q68) | Keras response | "
                      "response shift | project |",
                      "|---|---|---|---|---|---|---|---|"]
            for m in models:
                if "hls_max_abs_diff" in m:
                    flag = "" if m.get("hls_response_ok", True) else " **check**"
                    lines.append(f"| {m['name']} | {m.get('hls_inputs', '-')} | {m['hls_max_abs_diff']:.4g} | "
                                 f"{m['hls_response_median']:.4f} | {m['hls_resolution_q68']:.4f} | "
                                 f"{m['response_median']:.4f} | {_shift(m.get('hls_response_shift'), pct=True)}"
                                 f"{flag} | {m['hls_dir']} |")
        lines += qat_table(models)
        lines += multiplier_table(models)
        bins = summary["bins"]
        header = "| model | " + " | ".join(f"{lo:.3g}-{hi:.3g}" for lo, hi in zip(bins[:-1], bins[1:])) + " |"
        rule = "|---|" + "---|" * (len(bins) - 1)
        for key, title in (("resolution_q68", "Resolution (q68)"), ("response_median", "Response (median)")):
            lines += ["", f"## {title} in bins of {summary['target_name']} [{unit}]", "", header, rule]
            for m in [*models, {**ref, "name": f"raw {ref.get('name', REFERENCE)}"}]:
                cells = [_pm(b, key, 3) if b["n_events"] else "-" for b in m["binned"]]
                lines.append(f"| {m['name']} | " + " | ".join(cells) + " |")
        for key, title in (("resolution_shift", "Resolution shift"), ("response_shift", "Response shift")):
            shifted = [m for m in models if any(key in b for b in m["binned"])]
            if not shifted:
                continue
            lines += ["", f"## {title} against the baseline in bins of {summary['target_name']} [{unit}], paired",
                      "", header, rule]
            for m in shifted:
                lines.append(f"| {m['name']} | " + " | ".join(_shift_pm(b, key) if b["n_events"] else "-"
                                                              for b in m["binned"]) + " |")
        lines += ["", "Events per bin: " + ", ".join(str(b["n_events"]) for b in models[0]["binned"])
                  + f" (bins with fewer than {phys.MIN_BIN_EVENTS} are merged with a neighbour)."]
        lines += ["", "Plots: plots/response_vs_true.png, plots/resolution_vs_true.png, plots/ratio_hist.png, "
                  "plots/layer_sparsity.png, plots/size_vs_sparsity.png"
                  + (f", plots/{RESOLUTION_VS_LUTS}" if any(m.get("silicon") for m in models) else ""), ""]
        return "\n".join(lines)

    def plots(self, analysis: Analysis, summary: dict[str, Any], out: Path) -> list[str]:
        plt = pyplot()
        models, ref = summary["models"], summary[REFERENCE]
        centres = 0.5 * (np.asarray(summary["bins"][:-1]) + np.asarray(summary["bins"][1:]))
        xlabel = f"{summary['target_name']} [{summary['target_unit']}]"
        for key, ylabel, name in (("response_median", "median pred/true", "response_vs_true.png"),
                                  ("resolution_q68", "resolution (q68 of pred/true)", "resolution_vs_true.png")):
            fig, ax = plt.subplots(figsize=(6.5, 4.5))
            for m in [*models, {**ref, "name": "raw reference"}]:
                rows = m["binned"]
                ok = [i for i, b in enumerate(rows) if b["n_events"]]
                ax.errorbar(centres[ok], [rows[i][key] for i in ok], yerr=[rows[i].get(f"{key}_err", 0) for i in ok],
                            marker="o", capsize=2, label=m["name"],
                            linestyle="--" if m["name"] == "raw reference" else "-")
            ax.set(xlabel=xlabel, ylabel=ylabel, xscale="log", yscale="log")  # the raw reference is far off
            if key == "response_median":
                ax.axhline(1.0, color="grey", lw=0.8)
            ax.grid(alpha=0.3)
            ax.legend(fontsize=8)
            save_figure(fig, out / name)

        fig, ax = plt.subplots(figsize=(6.5, 4.5))
        bins = np.linspace(0, 2.5, 101)
        for m in models:
            ax.hist(np.clip(analysis.outputs[m["name"]], bins[0], bins[-1]), bins=bins, histtype="step",
                    label=m["name"])
        ax.hist(np.clip(analysis.outputs[REFERENCE], bins[0], bins[-1]), bins=bins, histtype="stepfilled",
                alpha=0.2, color="grey", label="raw reference")
        ax.set(xlabel="pred / true", ylabel="events")
        ax.legend(fontsize=8)
        save_figure(fig, out / "ratio_hist.png")
        layer_sparsity_plot(models, out / "layer_sparsity.png")

        fig, ax = plt.subplots(figsize=(6.5, 4.5))
        ax2 = ax.twinx()
        settings = sorted({m.get("bits") for m in models}, key=lambda b: (b is not None, -(b or 0)))
        for k, bits in enumerate(settings):  # one line per bit setting (float, then QAT, widest first)
            order = sorted((m for m in models if m.get("bits") == bits), key=lambda m: m["sparsity"])
            s = [m["sparsity"] for m in order]
            tag = "" if len(settings) == 1 else (" (float)" if bits is None else f" ({bits}-bit QAT)")
            style = "-" if bits is None else ":"
            ax.plot(s, [m["gzip_bytes"] for m in order], "o" + style, color=f"C{2 * k}", label="gzip bytes" + tag)
            ax.plot(s, [m["tflite_quant_bytes"] for m in order], "s" + style, color=f"C{2 * k + 1}",
                    label="TFLite quant. bytes" + tag)
            ax2.plot(s, [m["multipliers"] for m in order], "^" + style, color="C3", label="multipliers" + tag)
        ax.set(xlabel="achieved sparsity", ylabel="bytes")
        ax2.set_ylabel("multipliers (hls4ml Latency)")
        ax.legend(loc="upper center", fontsize=8)
        ax2.legend(loc="upper right", fontsize=8)
        save_figure(fig, out / "size_vs_sparsity.png")
        names = ["response_vs_true.png", "resolution_vs_true.png", "ratio_hist.png", "layer_sparsity.png",
                 "size_vs_sparsity.png"]
        if resolution_vs_luts(models, out / RESOLUTION_VS_LUTS):
            names.append(RESOLUTION_VS_LUTS)
        return names


def verdict_lines(models: list[dict[str, Any]]) -> list[str]:
    """One line per model judged against the baseline: within tolerance everywhere, or what is beyond."""
    judged = [m for m in models if m.get("physics")]
    lines = []
    for m in judged:
        v = m["physics"]
        lines.append(f"- {m['name']}: " + ("within tolerance (at 2σ) overall and in every bin" if v["ok"]
                                           else "**beyond** tolerance: " + "; ".join(v["beyond"])))
    return [*lines, ""] if lines else []


def size_table(models: list[dict[str, Any]], synthesised: bool) -> list[str]:
    """The size and firmware-cost table, with the vendor's figures where a synthesis ran."""
    lines = ["", "## Size and firmware cost", "",
             "| model | params | nonzero | HDF5 bytes | gzip bytes | TFLite bytes | TFLite quant. bytes | "
             "multipliers | est. DSPs | est. BRAM18K |" + (" synth. DSP | synth. LUT | synth. FF | synth. BRAM18K |"
                                                         if synthesised else ""),
             "|---|---|---|---|---|---|---|---|---|---|" + ("---|---|---|---|" if synthesised else "")]
    for m in models:
        synth = m.get("synthesis", {}).get("totals")
        real = (" " + " | ".join(str(synth[k]) for k in ("DSP", "LUT", "FF", "BRAM_18K")) + " |" if synth
                else " - | - | - | - |") if synthesised else ""
        lines.append(f"| {m['name']} | {m['params']} | {m['nonzero_params']} | {m['h5_bytes']} | {m['gzip_bytes']} | "
                     f"{m['tflite_bytes']} | {m['tflite_quant_bytes']} | {m['multipliers']} | {m['dsp']} | "
                     f"{m['bram_18k']} |{real}")
    if synthesised:
        lines += ["", "## C synthesis (vendor report)", "",
                  "| model | tool | part | DSP | LUT | FF | BRAM18K | latency (cycles) | interval | clock est. (ns) |",
                  "|---|---|---|---|---|---|---|---|---|---|"]
        for m in models:
            if "synthesis" in m:
                r, t = m["synthesis"], m["synthesis"]["totals"]
                lines.append(f"| {m['name']} | {r['tool']} {r['version']} | {r['part']} | {t['DSP']} | {t['LUT']} | "
                             f"{t['FF']} | {t['BRAM_18K']} | {r['latency_min_cycles']}-{r['latency_max_cycles']} | "
                             f"{r['interval_min']}-{r['interval_max']} | {r['clock_estimated_ns']} |")
    return lines


RESOLUTION_VS_LUTS = "resolution_vs_luts.png"


def point_label(m: dict[str, Any]) -> str:
    """A model as its sparsity and bits: '0.75, 8 bit' (QAT) or '0.75, W=16' (float at the RTL stage's width)."""
    precision = m["silicon"].get("precision", "")
    bits = f"{m['bits']} bit" if m.get("bits") else precision.replace("ap_fixed<", "W=").replace(",I>", "")
    return f"{m['sparsity']:.2f}, {bits}"


def resolution_vs_luts(models: list[dict[str, Any]], path: Path) -> bool:
    """Resolution against synthesised LUTs, one labelled point per model the RTL
    stage built; False (no plot) when it built none."""
    built = [m for m in models if m.get("silicon")]
    if not built:
        return False
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    for k, m in enumerate(built):
        ax.errorbar(m["silicon"]["LUT"], m["resolution_q68"], yerr=m.get("resolution_q68_err", 0), marker="o",
                    color=f"C{k % 10}", capsize=2)
        ax.annotate(point_label(m), (m["silicon"]["LUT"], m["resolution_q68"]), textcoords="offset points",
                    xytext=(5, 4), fontsize=8)
    ax.set(xlabel=f"LUTs ({built[0]['silicon']['tool'].split(' (')[0]}, {built[0]['silicon']['family']})",
           ylabel="resolution (q68 of pred/true)", xscale="log")
    ax.grid(alpha=0.3)
    ax.set_title("each model: sparsity, bits")
    save_figure(fig, path)
    return True


def silicon_table(models: list[dict[str, Any]]) -> list[str]:
    """The RTL stage's synthesis (rtl/synthesize_rtl.py) beside the estimates, where it ran."""
    built = [m for m in models if m.get("silicon")]
    if not built:
        return []
    lines = ["", "## Open-source silicon: distributed arithmetic, synthesised", "",
             "The RTL stage's firmware: hls4ml's distributed-arithmetic strategy (da4ml shift-and-add constant "
             "products: a pruned weight costs nothing, no multiplier is built), traced whole into Verilog, "
             "simulated by Verilator and synthesised by Yosys (synth_xilinx). Estimates: DSPs are the "
             "analysis's (hls4ml Latency multipliers, for weights of hls.dsp_min_bits or more); LUTs are the "
             "distributed-arithmetic model of ptq/firmware.py at the same types. Differing events: Verilator "
             "against the distributed-arithmetic C simulation (and QKeras), which must be 0.", "",
             "| model | precision | est. DSP | synth. DSP | est. LUT | synth. LUT | synth. FF | synth. carry | "
             "pipeline | differing events | synthesised with |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for m in built:
        s = m["silicon"]
        differ = sum(s.get("events_differing", {}).values())
        lines.append(f"| {m['name']} | {s.get('precision', '-')} | {m['dsp']} | {s['DSP']} | "
                     f"{s.get('lut_estimate', {}).get('total', '-')} | {s['LUT']} | {s['FF']} | {s['CARRY']} | "
                     f"{s.get('latency_cycles', '-')} cycles at {s.get('clock_mhz', 0):g} MHz | "
                     f"{differ}{' **check**' if differ else ''} of {s.get('samples', '-')} | "
                     f"{s['tool']}, {s['family']} |")
    layers = list(built[0]["silicon"].get("layers", {}))
    if layers:
        lines += ["", "### Synthesised LUTs per layer (each layer on its own, combinational)", "",
                  "| model | " + " | ".join(layers) + " |", "|---|" + "---|" * len(layers)]
        for m in built:
            per = m["silicon"].get("layers", {})
            lines.append(f"| {m['name']} | " + " | ".join(str(per.get(n, {}).get("LUT", "-")) for n in layers) + " |")
    return lines


def reuse_label(firmware: dict[str, Any]) -> str:
    """The reuse factor as hls4ml uses it: where it replaced the configured one
    (not valid for a layer), the per-layer factors it chose."""
    used = [v.get("reuse_factor", firmware["reuse_factor"]) for v in firmware["layers"].values()]
    if all(rf == firmware["reuse_factor"] for rf in used):
        return f"RF {firmware['reuse_factor']}"
    return f"RF {firmware['reuse_factor']} configured, hls4ml uses {', '.join(map(str, used))} per layer"


def quantiser_widths(quantisers: dict[str, Any] | None) -> str:
    """'weights / activations' bit widths of a QAT model, e.g. '8 / 10' (the
    input quantiser apart; per-layer overrides listed comma-separated)."""
    from hepprune.core.qat import INPUT_QUANT  # noqa: PLC0415 - deferred: qat imports tf_keras

    if not quantisers:
        return "-"

    def widths(kind: str) -> str:
        found = sorted({q[kind][0] for name, q in quantisers.items() if kind in q and name != INPUT_QUANT})
        return ",".join(map(str, found)) or "-"

    return f"{widths('weight')} / {widths('activation')}"


def qat_table(models: list[dict[str, Any]]) -> list[str]:
    """QAT models: their firmware must equal the QKeras model on every event compared."""
    qat = [m for m in models if "hls_events_differing" in m]
    if not qat:
        return []
    lines = ["", "## Quantisation-aware models: firmware against the QKeras model", "",
             "Every value of a QAT model is on a fixed-point grid, so its C simulation must equal the QKeras "
             "model bit for bit on every event compared; **check** marks one that does not, with the first "
             "layer whose output differs. Weights narrower than hls.dsp_min_bits are multiplied in LUTs.", "",
             "| model | bits | weights / activations | events differing | first differing layer | DSP (est.) |",
             "|---|---|---|---|---|---|"]
    for m in qat:
        flag = " **check**" if m["hls_events_differing"] else ""
        lines.append(f"| {m['name']} | {m.get('bits', '-')} | {quantiser_widths(m.get('quantisers'))} | "
                     f"{m['hls_events_differing']}{flag} | "
                     f"{m.get('hls_first_disagreeing_layer', '-')} | {m['dsp']} |")
    return lines


def multiplier_table(models: list[dict[str, Any]]) -> list[str]:
    layers = models[0]["firmware"]["layers"]
    lines = ["", "### Multipliers per layer", "", "| model | " + " | ".join(layers) + " |",
             "|---|" + "---|" * len(layers)]
    for m in models:
        lines.append(f"| {m['name']} | " + " | ".join(str(v["multipliers"]) for v in m["firmware"]["layers"].values())
                     + " |")
    return lines


def layer_sparsity_plot(models: list[dict[str, Any]], path: Path) -> None:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    layer_names = list(models[0]["layer_sparsity"])
    width = 0.8 / len(models)
    for i, m in enumerate(models):
        ax.bar(np.arange(len(layer_names)) + i * width, [m["layer_sparsity"].get(n, 0) for n in layer_names],
               width=width, label=m["name"])
    ax.set_xticks(np.arange(len(layer_names)) + 0.4 - width / 2, layer_names)
    ax.set(ylabel="fraction of zero weights", ylim=(0, 1))
    ax.legend(fontsize=8)
    save_figure(fig, path)
