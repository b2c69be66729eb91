"""Physics metrics of an energy estimator, from pred/true ratios.

response   the median (and mean) of pred/true: 1 means unbiased.
resolution half the 15.9-84.1 % interquantile width of pred/true, the
           Gaussian-equivalent sigma that is robust to tails (``q68``).
"""

from __future__ import annotations

import numpy as np


def response_metrics(pred: np.ndarray, true: np.ndarray) -> dict:
    ratio = np.asarray(pred, np.float64).reshape(-1) / np.asarray(true, np.float64).reshape(-1)
    if ratio.size == 0:
        raise ValueError("no events to compute a response from")
    q16, q50, q84 = np.quantile(ratio, [0.159, 0.5, 0.841])
    return {
        "n_events": int(ratio.size),
        "response_median": float(q50),
        "response_mean": float(ratio.mean()),
        "resolution_q68": float((q84 - q16) / 2),
    }
