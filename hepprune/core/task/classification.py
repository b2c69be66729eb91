"""The classification task: class probabilities per event, judged by
accuracy and the one-vs-rest ROC AUC of every class."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from hepprune.core.classification import classification_metrics, roc_curve
from hepprune.core.errors import ConfigError, DataError
from hepprune.core.fixedpoint import rounding_advice
from hepprune.core.task.base import Analysis, Task, name_width, pyplot, save_figure, text_table, tolerance_warning
from hepprune.core.task.regression import layer_sparsity_plot, multiplier_table, size_table


class Classification(Task):
    name = "classification"
    CSV_FIELDS = ("name", "sparsity", "accuracy", "auc_mean", "params", "nonzero_params", "h5_bytes", "gzip_bytes",
                  "tflite_bytes", "tflite_quant_bytes", "multipliers", "dsp", "bram_18k", "hls_accuracy",
                  "hls_agreement", "hls_accuracy_shift", "hls_max_abs_diff")

    # ------------------------------------------------------------ the data
    def check_dataset(self, class_names: tuple[str, ...], path: str) -> None:
        if not class_names:
            raise DataError(f"task=classification needs the dataset's class_names file attribute (the target is "
                            f"an index into it); {path} has none")

    def bad_targets(self, true: np.ndarray, n_classes: int) -> tuple[np.ndarray, str] | None:
        bad = (true != np.round(true)) | (true < 0) | (true >= n_classes)
        if bad.any():
            return bad, (f"is not a class index in 0..{n_classes - 1} (the class_names attribute lists "
                         f"{n_classes})")
        return None

    def encode(self, true: np.ndarray, reference: np.ndarray) -> np.ndarray:
        return true.astype(np.float32)  # the class index; sparse categorical cross-entropy

    def decode(self, output: np.ndarray, reference: np.ndarray) -> np.ndarray:
        return np.asarray(output)  # class probabilities

    # ------------------------------------------------------------ the model
    def outputs(self, n_classes: int) -> int:
        return n_classes

    def output_activation(self) -> str | None:
        return "softmax"

    def loss(self, train: Any) -> Any:
        from hepprune.core.backend import keras  # noqa: PLC0415 - deferred: TensorFlow, only where a model is built

        return keras.losses.SparseCategoricalCrossentropy()

    def check_outputs(self, units: int, n_classes: int, where: str) -> None:
        if units != n_classes:
            raise ConfigError(f"{where} has {units} output(s) but the dataset has {n_classes} classes; a "
                              "classification model needs one softmax output per class")

    # ------------------------------------------------------------ the metrics
    def metrics(self, pred: np.ndarray, true: np.ndarray, class_names: tuple[str, ...]) -> dict[str, Any]:
        return classification_metrics(pred, true, class_names)

    def headline(self, test: dict[str, Any]) -> str:
        return f"accuracy {test['accuracy']:.4f}, mean AUC {test['auc_mean']:.4f}"

    def refuse_pred_true(self, command: str) -> None:
        raise ConfigError(f"{command} compares pred/true response and resolution; it does not support "
                          "task=classification yet (prune/analyze_prune.py compares classifiers)")

    # ------------------------------------------------------------ the analysis
    def begin_analysis(self, true: np.ndarray, reference: np.ndarray, dataset: dict[str, Any]) -> Analysis:
        return Analysis(int(len(true)), true, reference, info={"class_names": list(dataset["class_names"])})

    def model_metrics(self, analysis: Analysis, name: str, outputs: np.ndarray) -> dict[str, Any]:
        classes, labels = analysis.info["class_names"], analysis.true
        return {**classification_metrics(outputs, labels, tuple(classes)),
                "roc": {c: [a.tolist() for a in roc_curve(outputs[:, k], labels == k, points=51)]
                        for k, c in enumerate(classes)}}

    def firmware_agreement(self, analysis: Analysis, name: str, y_hls: np.ndarray,
                           y_keras: np.ndarray) -> dict[str, Any]:
        """The firmware's accuracy against the Keras model's on the same events."""
        labels = analysis.true
        hls_right = int((y_hls.argmax(axis=1) == labels).sum())
        hls_accuracy = hls_right / len(labels)
        # From counts: a difference of two means is 0.010000000000000009 for 3 events in 300.
        shift = (hls_right - int((y_keras.argmax(axis=1) == labels).sum())) / len(labels)
        ok = abs(shift) <= self.cfg.ptq.tolerance
        if not ok:
            tolerance_warning(name, f"accuracy is {shift:+.4f} off the Keras model's at {self.cfg.hls.precision}",
                              self.cfg, rounding_advice(self.cfg.hls.precision))
        return {"hls_accuracy": hls_accuracy, "hls_agreement": float((y_hls.argmax(axis=1) ==
                                                                      y_keras.argmax(axis=1)).mean()),
                "hls_accuracy_shift": shift, "hls_accuracy_ok": ok}

    def compare(self, analysis: Analysis, baseline: str) -> None:
        base = next((r.metrics for r in analysis.rows if r.name == baseline), None)
        for r in analysis.rows:
            r.metrics["accuracy_shift"] = r.metrics["accuracy"] - base["accuracy"] if base else None

    def table(self, summary: dict[str, Any]) -> str:
        rows = [[m["name"], f"{m['sparsity']:.3f}", f"{m['accuracy']:.4f}", f"{m['auc_mean']:.4f}",
                 str(m["multipliers"]), str(m["gzip_bytes"]),
                 *((f"{m['hls_accuracy']:.4f}", f"{m['hls_agreement']:.4f}") if "hls_accuracy" in m else ("-", "-"))]
                for m in summary["models"]]
        return text_table([("model", name_width(summary["models"])), ("sparsity", 9),
                           ("accuracy", 10), ("mean AUC", 10), ("multipliers", 13),
                           ("gzip bytes", 12), ("hls accuracy", 14), ("hls agree", 11)], rows)

    def markdown(self, summary: dict[str, Any]) -> str:
        classes, models = summary["class_names"], summary["models"]
        lines = [f"# Model comparison (classification, {summary['samples']} held-out test events)", "",
                 "The hls accuracy is the C-simulated firmware's; its shift is relative to the Keras model's "
                 "accuracy on the same events, and **check** marks one beyond ptq.tolerance "
                 "(try ptq/bitwidth_scan.py, or AP_RND rounding in hls.precision).", "",
                 "| model | sparsity | accuracy | mean AUC | " + " | ".join(f"AUC {c}" for c in classes)
                 + " | gzip bytes | multipliers | hls accuracy | hls agreement | hls accuracy shift |",
                 "|---" * (9 + len(classes)) + "|"]
        for m in models:
            if "hls_accuracy" in m:
                flag = "" if m.get("hls_accuracy_ok", True) else " **check**"
                hls = f"{m['hls_accuracy']:.4f} | {m['hls_agreement']:.4f} | {m['hls_accuracy_shift']:+.4f}{flag}"
            else:
                hls = "- | - | -"
            lines.append(f"| {m['name']} | {m['sparsity']:.3f} | {m['accuracy']:.4f} | {m['auc_mean']:.4f} | "
                         + " | ".join(f"{m['auc'][c]:.4f}" for c in classes)
                         + f" | {m['gzip_bytes']} | {m['multipliers']} | {hls} |")
        lines += size_table(models, any("synthesis" in m for m in models))
        lines += multiplier_table(models)
        lines += ["", "Plots: plots/roc.png (one panel per class, every model overlaid), plots/layer_sparsity.png.",
                  ""]
        return "\n".join(lines)

    def plots(self, analysis: Analysis, summary: dict[str, Any], out: Path) -> list[str]:
        plt = pyplot()
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
        save_figure(fig, out / "roc.png", dpi=90)
        layer_sparsity_plot(summary["models"], out / "layer_sparsity.png")
        return ["roc.png", "layer_sparsity.png"]
