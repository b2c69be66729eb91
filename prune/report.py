"""report.md and plots/ of the analysis: tables to paste into slides, PNGs to look at."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from hepprune.core import artifacts


def _pm(m: dict, key: str, digits: int = 4) -> str:
    err = m.get(f"{key}_err")
    return f"{m[key]:.{digits}f}" + (f" ± {err:.{digits}f}" if err is not None else "")


def _shift(v, pct: bool = False) -> str:
    if v is None:
        return "-"
    return f"{100 * v:+.1f} %" if pct else f"{v:+.4f}"


def markdown(summary: dict) -> str:
    unit = summary["target_unit"]
    synthesised = any("synthesis" in m for m in summary["models"])  # real vendor numbers beside the estimates
    ref = summary["reference"]
    lines = [
        "# Pruned-model comparison",
        "",
        f"{summary['samples']} held-out test events. Response = median of pred/true; resolution = half the "
        "15.9-84.1 % width of pred/true (q68), also as std and IQR/1.349; ± are bootstrap standard errors. "
        "Shifts are relative to the baseline. Multipliers: hls4ml's count after pruning "
        f"({summary['models'][0]['firmware'].get('strategy', 'latency')} strategy, "
        f"RF {summary['models'][0]['firmware']['reuse_factor']}, {summary['models'][0]['firmware']['precision']}); "
        "DSP and BRAM18K are estimates without vendor tools.",
        "",
        "## Physics",
        "",
        "| model | sparsity | response | resolution (q68) | std | IQR/1.349 | response shift | resolution shift |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for m in summary["models"]:
        lines.append(f"| {m['name']} | {m['sparsity']:.3f} | {_pm(m, 'response_median')} | "
                     f"{_pm(m, 'resolution_q68')} | {m['resolution_std']:.4f} | {m['resolution_iqr']:.4f} | "
                     f"{_shift(m['response_shift'])} | {_shift(m['resolution_shift'], pct=True)} |")
    lines.append(f"| raw {ref.get('name', 'reference')} | - | {_pm(ref, 'response_median')} | "
                 f"{_pm(ref, 'resolution_q68')} | {ref['resolution_std']:.4f} | {ref['resolution_iqr']:.4f} | - | - |")
    lines += ["", "## Size and firmware cost", "",
              "| model | params | nonzero | HDF5 bytes | gzip bytes | TFLite bytes | TFLite quant. bytes | "
              "multipliers | est. DSPs | est. BRAM18K |" + (" synth. DSP | synth. LUT | synth. FF | synth. BRAM18K |"
                                                              if synthesised else ""),
              "|---|---|---|---|---|---|---|---|---|---|" + ("---|---|---|---|" if synthesised else "")]
    for m in summary["models"]:
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
        for m in summary["models"]:
            if "synthesis" in m:
                r, t = m["synthesis"], m["synthesis"]["totals"]
                lines.append(f"| {m['name']} | {r['tool']} {r['version']} | {r['part']} | {t['DSP']} | {t['LUT']} | "
                             f"{t['FF']} | {t['BRAM_18K']} | {r['latency_min_cycles']}-{r['latency_max_cycles']} | "
                             f"{r['interval_min']}-{r['interval_max']} | {r['clock_estimated_ns']} |")
    if any("hls_max_abs_diff" in m for m in summary["models"]):
        lines += ["", "## hls4ml C simulation", "",
                  "Firmware inputs: *raw* where the input standardisation is folded into the first layer, "
                  "*standardised* where it cannot be (a CNN, a branched input). Max |Δ| is between the C "
                  "simulation and Keras on the network output; the response shift is the firmware's "
                  "response relative to the Keras model's, and **check** marks one beyond ptq.tolerance "
                  "(try ptq/bitwidth_scan.py, or AP_RND rounding in hls.precision).", "",
                  "| model | inputs | max abs Δ | hls response | hls resolution (q68) | Keras response | "
                  "response shift | project |",
                  "|---|---|---|---|---|---|---|---|"]
        for m in summary["models"]:
            if "hls_max_abs_diff" in m:
                flag = "" if m.get("hls_response_ok", True) else " **check**"
                lines.append(f"| {m['name']} | {m.get('hls_inputs', '-')} | {m['hls_max_abs_diff']:.4g} | "
                             f"{m['hls_response_median']:.4f} | {m['hls_resolution_q68']:.4f} | "
                             f"{m['response_median']:.4f} | {_shift(m.get('hls_response_shift'), pct=True)}{flag} | "
                             f"{m['hls_dir']} |")
    lines += ["", "### Multipliers per layer", "",
              "| model | " + " | ".join(summary["models"][0]["firmware"]["layers"]) + " |",
              "|---|" + "---|" * len(summary["models"][0]["firmware"]["layers"])]
    for m in summary["models"]:
        lines.append(f"| {m['name']} | " + " | ".join(str(v["multipliers"]) for v in m["firmware"]["layers"].values())
                     + " |")
    lines += ["", f"## Resolution (q68) in bins of {summary['target_name']} [{unit}]", "",
              "| model | " + " | ".join(f"{lo:.3g}-{hi:.3g}" for lo, hi in zip(summary["bins"][:-1],
                                                                           summary["bins"][1:])) + " |",
              "|---|" + "---|" * (len(summary["bins"]) - 1)]
    for m in [*summary["models"], {**ref, "name": f"raw {ref.get('name', 'reference')}"}]:
        cells = [_pm(b, "resolution_q68", 3) if b["n_events"] else "-" for b in m["binned"]]
        lines.append(f"| {m['name']} | " + " | ".join(cells) + " |")
    lines += ["", f"## Response (median) in bins of {summary['target_name']} [{unit}]", "",
              "| model | " + " | ".join(f"{lo:.3g}-{hi:.3g}" for lo, hi in zip(summary["bins"][:-1],
                                                                           summary["bins"][1:])) + " |",
              "|---|" + "---|" * (len(summary["bins"]) - 1)]
    for m in [*summary["models"], {**ref, "name": f"raw {ref.get('name', 'reference')}"}]:
        cells = [_pm(b, "response_median", 3) if b["n_events"] else "-" for b in m["binned"]]
        lines.append(f"| {m['name']} | " + " | ".join(cells) + " |")
    lines += ["", "Plots: plots/response_vs_true.png, plots/resolution_vs_true.png, plots/ratio_hist.png, "
              "plots/layer_sparsity.png, plots/size_vs_sparsity.png", ""]
    return "\n".join(lines)


def plots(summary: dict, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    models = summary["models"]
    ref = summary["reference"]
    centres = 0.5 * (np.asarray(summary["bins"][:-1]) + np.asarray(summary["bins"][1:]))
    xlabel = f"{summary['target_name']} [{summary['target_unit']}]"

    def save(fig, name):
        fig.tight_layout()
        with artifacts.atomic_path(out / name) as tmp:
            fig.savefig(tmp, format="png", dpi=110)
        plt.close(fig)

    for key, ylabel, name in (("response_median", "median pred/true", "response_vs_true.png"),
                              ("resolution_q68", "resolution (q68 of pred/true)", "resolution_vs_true.png")):
        fig, ax = plt.subplots(figsize=(6.5, 4.5))
        for m in [*models, {**ref, "name": "raw reference"}]:
            rows = m["binned"]
            ok = [i for i, b in enumerate(rows) if b["n_events"]]
            ax.errorbar(centres[ok], [rows[i][key] for i in ok], yerr=[rows[i].get(f"{key}_err", 0) for i in ok],
                        marker="o", capsize=2, label=m["name"], linestyle="--" if m["name"] == "raw reference" else "-")
        ax.set(xlabel=xlabel, ylabel=ylabel, xscale="log", yscale="log")  # the raw reference is far off
        if key == "response_median":
            ax.axhline(1.0, color="grey", lw=0.8)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        save(fig, name)

    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    bins = np.linspace(0, 2.5, 101)
    for m in models:
        ax.hist(np.clip(m["ratio"], bins[0], bins[-1]), bins=bins, histtype="step", label=m["name"])
    ax.hist(np.clip(ref["ratio"], bins[0], bins[-1]), bins=bins, histtype="stepfilled", alpha=0.2,
            color="grey", label="raw reference")
    ax.set(xlabel="pred / true", ylabel="events")
    ax.legend(fontsize=8)
    save(fig, "ratio_hist.png")

    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    layer_names = list(models[0]["layer_sparsity"])
    width = 0.8 / len(models)
    for i, m in enumerate(models):
        ax.bar(np.arange(len(layer_names)) + i * width, [m["layer_sparsity"].get(n, 0) for n in layer_names],
               width=width, label=m["name"])
    ax.set_xticks(np.arange(len(layer_names)) + 0.4 - width / 2, layer_names)
    ax.set(ylabel="fraction of zero weights", ylim=(0, 1))
    ax.legend(fontsize=8)
    save(fig, "layer_sparsity.png")

    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    order = sorted(models, key=lambda m: m["sparsity"])
    s = [m["sparsity"] for m in order]
    ax.plot(s, [m["gzip_bytes"] for m in order], "o-", label="gzip bytes")
    ax.plot(s, [m["tflite_quant_bytes"] for m in order], "s-", label="TFLite quant. bytes")
    ax.set(xlabel="achieved sparsity", ylabel="bytes")
    ax2 = ax.twinx()
    ax2.plot(s, [m["multipliers"] for m in order], "^-", color="C3", label="multipliers")
    ax2.set_ylabel("multipliers (hls4ml Latency)")
    ax.legend(loc="upper center", fontsize=8)
    ax2.legend(loc="upper right", fontsize=8)
    save(fig, "size_vs_sparsity.png")
