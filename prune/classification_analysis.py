"""The model comparison for ``task: classification``: accuracy, per-class ROC
AUC and overlaid ROC curves take the place of pred/true.

Same shape as :mod:`prune.analysis` (same held-out events, sizes, firmware
cost, hls4ml export); the hls4ml C simulation's accuracy is compared with
Keras', and ``hls_agreement`` is the fraction of events where both pick the
same class. Writes ``RUN/analysis/``: summary.json, summary.csv, report.md,
plots/roc.png and metrics.json.
"""

from __future__ import annotations

import csv
import io
import logging
import time
from pathlib import Path

import numpy as np

from hepprune.core import artifacts
from hepprune.core.classification import classification_metrics, roc_curve
from hepprune.core.config import Config
from hepprune.core.runs import BASELINE, finished_models
from hepprune.data.prepare import HeldOutEvents, prepare_data
from hepprune.prune.analysis import (
    STAGE,
    export_and_simulate,
    load_and_describe,
    predict,
)

log = logging.getLogger(__name__)

CSV_FIELDS = ("name", "sparsity", "accuracy", "auc_mean", "params", "nonzero_params", "h5_bytes", "gzip_bytes",
              "tflite_bytes", "tflite_quant_bytes", "multipliers", "dsp", "bram_18k", "hls_accuracy",
              "hls_agreement", "hls_max_abs_diff")


def analyse(cfg: Config, run_dir: Path, *, samples: int | None, names: list[str] | None = None,
            synth_tool: str | None = None) -> dict:
    models = finished_models(run_dir, names)
    with prepare_data(cfg, run_dir / BASELINE) as prepared:
        return _analyse(cfg, run_dir, prepared, models, samples, synth_tool)


def _analyse(cfg, run_dir, prepared, models, samples, synth_tool) -> dict:
    chunks = HeldOutEvents(prepared, samples)  # read a chunk at a time, on every pass
    std, classes = prepared.standardization, prepared.class_names
    labels = np.concatenate([t for _, t, _ in chunks])
    log.info("comparing %d model(s) on %d held-out test events, %d classes", len(models), len(labels), len(classes))
    entries = []
    for name, stage in models:
        t0 = time.time()
        model, entry = load_and_describe(name, stage, cfg)
        probs = np.concatenate([predict(model, std.apply(x.copy())) for x, _, _ in chunks])
        entry.update({
            **classification_metrics(probs, labels, classes),
            "roc": {c: [a.tolist() for a in roc_curve(probs[:, k], labels == k, points=51)]
                    for k, c in enumerate(classes)},
        })
        if cfg.hls.simulate:
            y_hls, y_keras, extras = export_and_simulate(model, std, chunks.inputs(), cfg, run_dir / "hls4ml" / name,
                                                         synth_tool)
            entry.update(extras)
            entry["hls_accuracy"] = float((y_hls.argmax(axis=1) == labels).mean())
            entry["hls_agreement"] = float((y_hls.argmax(axis=1) == y_keras.argmax(axis=1)).mean())
        entries.append(entry)
        log.info("%s: accuracy %.4f, mean AUC %.4f, %d multipliers, hls accuracy %s (%.1f s)", name,
                 entry["accuracy"], entry["auc_mean"], entry["multipliers"],
                 f"{entry['hls_accuracy']:.4f}" if "hls_accuracy" in entry else "-", time.time() - t0)
    base = next((e for e in entries if e["name"] == BASELINE), None)
    for e in entries:
        e["accuracy_shift"] = e["accuracy"] - base["accuracy"] if base else None
    return {"task": "classification", "samples": int(len(labels)), "class_names": list(classes), "models": entries}


def markdown(summary: dict) -> str:
    lines = [f"# Model comparison (classification, {summary['samples']} held-out test events)", "",
             "| model | sparsity | accuracy | mean AUC | " + " | ".join(f"AUC {c}" for c in summary["class_names"])
             + " | gzip bytes | multipliers | hls accuracy | hls agreement |",
             "|---" * (8 + len(summary["class_names"])) + "|"]
    for m in summary["models"]:
        hls = (f"{m['hls_accuracy']:.4f} | {m['hls_agreement']:.4f}" if "hls_accuracy" in m else "- | -")
        lines.append(f"| {m['name']} | {m['sparsity']:.3f} | {m['accuracy']:.4f} | {m['auc_mean']:.4f} | "
                     + " | ".join(f"{m['auc'][c]:.4f}" for c in summary["class_names"])
                     + f" | {m['gzip_bytes']} | {m['multipliers']} | {hls} |")
    lines += ["", "ROC curves: plots/roc.png (one panel per class, every model overlaid).", ""]
    return "\n".join(lines)


def plot_roc(summary: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    classes = summary["class_names"]
    cols = min(len(classes), 5)
    rows = -(-len(classes) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 3.0 * rows), squeeze=False)
    for k, c in enumerate(classes):
        ax = axes[k // cols][k % cols]
        for m in summary["models"]:
            fpr, tpr = m["roc"][c]
            ax.plot(fpr, tpr, label=f"{m['name']} ({m['auc'][c]:.3f})", lw=1)
        ax.plot([0, 1], [0, 1], ":", color="grey", lw=0.8)
        ax.set_title(f"class {c}", fontsize=9)
        ax.set_xlabel("false-positive rate", fontsize=8)
        ax.set_ylabel("true-positive rate", fontsize=8)
        ax.legend(fontsize=6, loc="lower right")
    for k in range(len(classes), rows * cols):
        axes[k // cols][k % cols].axis("off")
    fig.tight_layout()
    with artifacts.atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=90)
    plt.close(fig)


def write_outputs(summary: dict, out: Path) -> dict:
    """summary.json, summary.csv, report.md and plots/roc.png; returns the stage's metrics (written last, by the caller)."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "plots").mkdir(exist_ok=True)
    plot_roc(summary, out / "plots" / "roc.png")
    artifacts.write_json(out / "summary.json", summary)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=CSV_FIELDS, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(summary["models"])
    artifacts.write_text(out / "summary.csv", buf.getvalue())
    artifacts.write_text(out / "report.md", markdown(summary))
    return {"stage": STAGE, "task": summary["task"], "samples": summary["samples"],
            "models": [m["name"] for m in summary["models"]]}
