"""Physics metrics of an energy estimator, from pred/true ratios.

response    the median (and mean) of pred/true: 1 means unbiased.
resolution  half the 15.9-84.1 % interquantile width of pred/true, the
            Gaussian-equivalent sigma that is robust to tails (``q68``); also
            the standard deviation and IQR/1.349 (both equal sigma for a Gaussian).
"""

from __future__ import annotations

import numpy as np

Q_LOW, Q_HIGH = 0.159, 0.841
IQR_TO_SIGMA = 1.349


def _ratio(pred: np.ndarray, true: np.ndarray) -> np.ndarray:
    ratio = np.asarray(pred, np.float64).reshape(-1) / np.asarray(true, np.float64).reshape(-1)
    if ratio.size == 0:
        raise ValueError("no events to compute a response from")
    return ratio


def ratio_stats(ratio: np.ndarray) -> dict[str, float]:
    q16, q25, q50, q75, q84 = np.quantile(ratio, [Q_LOW, 0.25, 0.5, 0.75, Q_HIGH])
    return {
        "response_median": float(q50),
        "response_mean": float(ratio.mean()),
        "resolution_q68": float((q84 - q16) / 2),
        "resolution_std": float(ratio.std()),
        "resolution_iqr": float((q75 - q25) / IQR_TO_SIGMA),
    }


def response_metrics(pred: np.ndarray, true: np.ndarray) -> dict[str, float]:
    ratio = _ratio(pred, true)
    return {"n_events": int(ratio.size), **ratio_stats(ratio)}


def response_metrics_with_errors(pred: np.ndarray, true: np.ndarray, *, n_bootstrap: int = 200,
                                 seed: int = 0) -> dict[str, float]:
    """:func:`response_metrics` plus ``<name>_err``: the standard deviation of
    each statistic over ``n_bootstrap`` resamples of the events."""
    ratio = _ratio(pred, true)
    out = {"n_events": int(ratio.size), **ratio_stats(ratio)}
    if n_bootstrap:
        rng = np.random.default_rng(seed)
        samples = [ratio_stats(ratio[rng.integers(0, ratio.size, ratio.size)]) for _ in range(n_bootstrap)]
        for key in list(out):
            if key != "n_events":
                out[f"{key}_err"] = float(np.std([s[key] for s in samples], ddof=1))
    return out


def quantile_bins(true: np.ndarray, n_bins: int) -> np.ndarray:
    """Bin edges holding about equal numbers of events."""
    edges = np.unique(np.quantile(np.asarray(true, np.float64), np.linspace(0, 1, n_bins + 1)))
    if edges.size < 2:
        raise ValueError("cannot make bins: every true value is the same")
    return edges


def binned_metrics(pred: np.ndarray, true: np.ndarray, edges: np.ndarray, *, n_bootstrap: int = 200,
                   seed: int = 0) -> list[dict[str, float]]:
    """Response metrics in bins of the true value; the last bin includes its
    upper edge. Empty bins are reported with ``n_events`` 0 and no metrics."""
    true = np.asarray(true, np.float64).reshape(-1)
    pred = np.asarray(pred, np.float64).reshape(-1)
    idx = np.clip(np.searchsorted(edges, true, side="right") - 1, 0, len(edges) - 2)
    inside = (true >= edges[0]) & (true <= edges[-1])
    rows = []
    for b in range(len(edges) - 1):
        sel = inside & (idx == b)
        row = {"low": float(edges[b]), "high": float(edges[b + 1])}
        if sel.any():
            row.update(response_metrics_with_errors(pred[sel], true[sel], n_bootstrap=n_bootstrap,
                                                    seed=seed + b))
        else:
            row["n_events"] = 0
        rows.append(row)
    return rows
