"""Metrics of a classifier (``task: classification``), in place of pred/true.

accuracy   fraction of events whose highest-probability class is the true one.
auc        per class, the one-vs-rest ROC AUC of that class's probability:
           the chance that a random event of the class scores above a random
           event of another class (ties count half). ``auc_mean`` averages them.
roc        per class, the curve (false-positive rate, true-positive rate).
"""

from __future__ import annotations

from typing import Any

import numpy as np


def _auc(score: np.ndarray, positive: np.ndarray) -> float:
    """Mann-Whitney form of the ROC AUC, with average ranks for ties."""
    n_pos, n_neg = int(positive.sum()), int((~positive).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = np.argsort(score, kind="mergesort")
    ranks = np.empty(len(score), np.float64)
    sorted_score = score[order]
    # average rank of each run of equal scores
    starts = np.r_[0, np.flatnonzero(np.diff(sorted_score)) + 1]
    ends = np.r_[starts[1:], len(score)]
    for a, b in zip(starts, ends):
        ranks[order[a:b]] = (a + b + 1) / 2
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def roc_curve(score: np.ndarray, positive: np.ndarray, points: int = 201) -> tuple[np.ndarray, np.ndarray]:
    """(false-positive rate, true-positive rate) at ``points`` score thresholds."""
    thresholds = np.quantile(score, np.linspace(1, 0, points))
    pos, neg = max(1, int(positive.sum())), max(1, int((~positive).sum()))
    tpr = np.array([(score[positive] >= t).sum() / pos for t in thresholds])
    fpr = np.array([(score[~positive] >= t).sum() / neg for t in thresholds])
    return np.r_[0.0, fpr, 1.0], np.r_[0.0, tpr, 1.0]


def classification_metrics(probs: np.ndarray, labels: np.ndarray,
                           class_names: tuple[str, ...]) -> dict[str, Any]:
    probs = np.asarray(probs, np.float64).reshape(len(labels), -1)
    labels = np.asarray(labels).astype(np.int64).reshape(-1)
    if labels.size == 0:
        raise ValueError("no events to compute an accuracy from")
    auc = {name: _auc(probs[:, k], labels == k) for k, name in enumerate(class_names)}
    finite = [v for v in auc.values() if np.isfinite(v)]
    return {"n_events": int(labels.size), "accuracy": float((probs.argmax(axis=1) == labels).mean()),
            "auc_mean": float(np.mean(finite)) if finite else float("nan"), "auc": auc}


def headline(test: dict[str, Any]) -> str:
    """One log line's worth of a model's test metrics, for either task."""
    if "accuracy" in test:
        return f"accuracy {test['accuracy']:.4f}, mean AUC {test['auc_mean']:.4f}"
    return f"response {test['response_median']:.4f}, resolution {test['resolution_q68']:.4f}"
