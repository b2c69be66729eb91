"""A model's predictions and metrics on held-out events.

The events come from the data layer as ``(standardised inputs, true,
reference)`` batches; the task turns network outputs into what its metrics
compare (energies for a regression, class probabilities for a classifier).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np

from hepprune.core.task import Task

Batch = tuple[np.ndarray, np.ndarray, np.ndarray]


def predict(model: Any, batches: Iterable[Batch], task: Task) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(predictions, true, reference) over every batch, unshuffled."""
    preds, trues, refs = [], [], []
    for x, true, ref in batches:
        preds.append(task.decode(model.predict_on_batch(x), ref))
        trues.append(true)
        refs.append(ref)
    return np.concatenate(preds), np.concatenate(trues), np.concatenate(refs)


def evaluate(model: Any, batches: Iterable[Batch], task: Task,
             class_names: tuple[str, ...]) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """(the model's metrics, the raw reference's or None) on the batches."""
    pred, true, ref = predict(model, batches, task)
    return task.metrics(pred, true, class_names), task.reference_metrics(ref, true)
