"""A finished run on TensorBoard's HParams dashboard.

Each pruned or quantised run writes one session into
``<stage>/tensorboard/hparams``: its hyperparameters (target, bits,
granularity, schedule, ...) and its final metrics as scalars at step 0. A
TensorBoard over the run directory then shows a sweep as one table and
parallel-coordinates view, next to the sparsity curves users already watch.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from hepprune.core.backend import tf

HPARAMS_DIR = "hparams"  # under a stage's tensorboard/
PREFIX = "final/"  # the metrics' scalar tags


def final_metrics(test: dict[str, Any], base_test: dict[str, Any] | None, sparsity: float,
                  cost: dict[str, Any]) -> dict[str, float]:
    """The run's final figures: every numeric test metric, the shifts against
    the baseline's test metrics (response: difference; resolution: relative),
    the achieved sparsity and the estimated firmware cost."""
    out = {k: float(v) for k, v in test.items()
           if isinstance(v, (int, float)) and not isinstance(v, bool) and k != "n_events"}
    if base_test and "response_median" in test and "response_median" in base_test:
        out["response_shift"] = test["response_median"] - base_test["response_median"]
        if base_test.get("resolution_q68"):
            out["resolution_shift"] = test["resolution_q68"] / base_test["resolution_q68"] - 1
    out.update(sparsity=float(sparsity), multipliers=float(cost["multipliers"]), dsp_estimate=float(cost["dsp"]))
    return out


def log_session(tensorboard_dir: Path, trial: str, hparams: dict[str, bool | int | float | str],
                metrics: dict[str, float]) -> Path:
    """Write one HParams session (rewritten whole if a killed run left one)."""
    from tensorboard.plugins.hparams import api as hp  # noqa: PLC0415 - deferred: only a finishing run needs it

    path = tensorboard_dir / HPARAMS_DIR
    shutil.rmtree(path, ignore_errors=True)
    writer = tf.summary.create_file_writer(str(path))
    with writer.as_default():
        # The experiment names its metrics, so the dashboard shows these and not every curve of the run.
        hp.hparams_config(hparams=[hp.HParam(k) for k in hparams],
                          metrics=[hp.Metric(PREFIX + k, display_name=k) for k in metrics])
        hp.hparams(hparams, trial_id=trial)
        for k, v in metrics.items():
            tf.summary.scalar(PREFIX + k, v, step=0)
    writer.close()
    return path
