"""One-shot sensitivity scan: prune the baseline without retraining.

At each fraction k (0, 10, ..., 90, 95 % by default) every selected layer is
pruned in one shot, by weight magnitude and by neuron (kernel-column L2
norm), and the validation loss and pred/true response and resolution are
measured on the validation split (the test split stays held out). A cheap
look at how much each layer can lose before the expensive sweep.
"""

from __future__ import annotations

import csv
import io
import logging
from pathlib import Path

import numpy as np

from hepprune.core import artifacts
from hepprune.core.config import Config
from hepprune.core.errors import ConfigError
from hepprune.core.evaluation import evaluate
from hepprune.core.results import SensitivityResult
from hepprune.core.runs import BASELINE, MODEL_FILE, SENSITIVITY
from hepprune.core.task import task_of
from hepprune.data.prepare import prepare_data

log = logging.getLogger(__name__)

DEFAULT_POINTS = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95)
STAGE = SENSITIVITY
COLUMNS = ("granularity", "sparsity", "achieved_sparsity", "nonzero_params", "val_loss", "response_median",
           "resolution_q68")


def magnitude_mask(kernel: np.ndarray, sparsity: float) -> np.ndarray:
    """Keep the round(n * (1 - sparsity)) largest |w|, as tfmot rounds."""
    flat = np.abs(kernel).reshape(-1)
    keep = int(round(flat.size * (1 - sparsity)))
    mask = np.zeros(flat.size, bool)
    mask[np.argsort(-flat, kind="stable")[:keep]] = True
    return mask.reshape(kernel.shape)


def _pruned_copy(base_weights, model, layers, granularity: str, sparsity: float):
    from hepprune.prune.neuron import apply_masks, keep_mask  # noqa: PLC0415 - deferred: TensorFlow and tfmot

    model.set_weights(base_weights)
    if sparsity == 0:
        return model
    if granularity == "neuron":
        apply_masks(model, {n: keep_mask(model.get_layer(n).get_weights()[0], sparsity) for n in layers})
    else:
        for name in layers:
            layer = model.get_layer(name)
            w = layer.get_weights()
            w[0] = w[0] * magnitude_mask(w[0], sparsity)
            layer.set_weights(w)
    return model


def scan(cfg: Config, run_dir: Path, points=DEFAULT_POINTS) -> list[dict]:
    from hepprune.core.models import load_model  # noqa: PLC0415 - deferred: TensorFlow, after the config is checked
    from hepprune.prune import pruning  # noqa: PLC0415 - deferred: TensorFlow, after the config is checked

    if any(not 0 <= p < 1 for p in points):
        raise ConfigError(f"sensitivity points must be in [0, 1), got {list(points)}")
    baseline = run_dir / BASELINE
    with prepare_data(cfg, baseline) as prepared:
        return _scan(cfg, prepared, load_model(baseline / MODEL_FILE, cfg.model), points, pruning)


def _scan(cfg: Config, prepared, model, points, pruning) -> list[dict]:
    task = task_of(cfg)
    model.compile(loss=task.loss(cfg.train))
    layers = pruning.select_layers(model, cfg.prune.include, cfg.prune.exclude)
    granularities = ["weight", "neuron"]
    try:
        from hepprune.prune.neuron import check_supported  # noqa: PLC0415 - deferred: tfmot, only for the neuron scan

        check_supported(model, layers)
    except ConfigError as exc:
        log.warning("neuron scan skipped: %s", exc)
        granularities = ["weight"]
    base_weights = model.get_weights()
    val_ds = prepared.validation(cfg)
    rows = []
    for granularity in granularities:
        for k in points:
            pruned = _pruned_copy(base_weights, model, layers, granularity, k)
            counts = pruning.kernel_sparsity(pruned, layers)
            phys, _ = evaluate(pruned, prepared.batches("val"), task, prepared.class_names)
            rows.append({
                "granularity": granularity, "sparsity": k,
                "achieved_sparsity": sum(z for z, _ in counts.values()) / sum(s for _, s in counts.values()),
                "nonzero_params": int(sum(np.count_nonzero(w) for w in pruned.get_weights())),
                "val_loss": float(pruned.evaluate(val_ds, verbose=0)),
                "response_median": phys["response_median"], "resolution_q68": phys["resolution_q68"],
            })
            log.info("%s %.0f%%: val_loss %.5g, resolution %.4f", granularity, 100 * k, rows[-1]["val_loss"],
                     rows[-1]["resolution_q68"])
    return rows


def write_outputs(rows: list[dict], out: Path, baseline_val_loss: float) -> SensitivityResult:
    """sensitivity.csv, .json and .png; returns the stage's metrics (written last, by the caller)."""
    out.mkdir(parents=True, exist_ok=True)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=COLUMNS)
    writer.writeheader()
    writer.writerows(rows)
    artifacts.write_text(out / "sensitivity.csv", buf.getvalue())
    artifacts.write_json(out / "sensitivity.json", {"rows": rows})
    _plot(rows, out / "sensitivity.png")
    return SensitivityResult(len(rows), baseline_val_loss, sorted({r["granularity"] for r in rows}))


def _plot(rows: list[dict], path: Path) -> None:
    import matplotlib  # noqa: PLC0415 - deferred: matplotlib loads only where a plot is drawn

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415 - deferred: matplotlib, after its backend is chosen

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for granularity in sorted({r["granularity"] for r in rows}):
        sel = [r for r in rows if r["granularity"] == granularity]
        x = [100 * r["sparsity"] for r in sel]
        axes[0].plot(x, [r["val_loss"] for r in sel], "o-", label=f"{granularity} pruning")
        axes[1].plot(x, [r["resolution_q68"] for r in sel], "o-", label=f"{granularity} pruning")
    axes[0].set(xlabel="pruned fraction [%]", ylabel="validation loss", yscale="log",
                title="One-shot pruning, no retraining")
    axes[1].set(xlabel="pruned fraction [%]", ylabel="pred/true resolution (q68)")
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    with artifacts.atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
