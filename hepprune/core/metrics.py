"""Physics metrics of an energy estimator, from pred/true ratios.

response    the median (and mean) of pred/true: 1 means unbiased.
resolution  half the 15.9-84.1 % interquantile width of pred/true, the
            Gaussian-equivalent sigma that is robust to tails (``q68``); also
            the standard deviation and IQR/1.349 (both equal sigma for a Gaussian).
shifts      a model against the baseline on the same events: the response
            difference and the relative resolution change, with paired
            bootstrap errors (both models resampled with the same events, so
            their strong correlation cancels in the difference).
"""

from __future__ import annotations

import math

import numpy as np

Q_LOW, Q_HIGH = 0.159, 0.841
IQR_TO_SIGMA = 1.349
MIN_BIN_EVENTS = 20  # fewer events give no usable q68; such bins are merged with a neighbour
_BOOTSTRAP_BLOCK = 4_000_000  # resampled values held at once by the paired bootstrap


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
    """Bin edges holding about equal numbers of events; a single bin
    ``[v, v]`` when every true value is ``v`` (a fixed beam energy)."""
    true = np.asarray(true, np.float64)
    edges = np.unique(np.quantile(true, np.linspace(0, 1, n_bins + 1)))
    if edges.size < 2:
        return np.array([true.min(), true.min()])
    return edges


def bin_index(true: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Each event's bin; -1 outside the edges. The last bin includes its upper edge."""
    true = np.asarray(true, np.float64).reshape(-1)
    idx = np.clip(np.searchsorted(edges, true, side="right") - 1, 0, max(len(edges) - 2, 0))
    return np.where((true >= edges[0]) & (true <= edges[-1]), idx, -1)


def merge_sparse_bins(true: np.ndarray, edges: np.ndarray,
                      min_events: int = MIN_BIN_EVENTS) -> tuple[np.ndarray, list[str]]:
    """(edges whose bins each hold at least ``min_events``, what was merged).

    The sparsest bin joins its sparser neighbour until every bin is full
    enough, or one bin is left: a q68 of a handful of events (or 0 ± 0 of an
    empty bin) would read as a measurement."""
    edges = np.asarray(edges, np.float64)
    merged: list[str] = []
    while len(edges) > 2:
        idx = bin_index(true, edges)
        counts = np.bincount(idx[idx >= 0], minlength=len(edges) - 1)
        b = int(np.argmin(counts))
        if counts[b] >= min_events:
            break
        if b == 0:
            right = True
        elif b == len(counts) - 1:
            right = False
        else:
            right = counts[b + 1] < counts[b - 1]
        merged.append(f"{edges[b]:.4g}-{edges[b + 1]:.4g} ({counts[b]} events) into "
                      + (f"{edges[b + 1]:.4g}-{edges[b + 2]:.4g}" if right else f"{edges[b - 1]:.4g}-{edges[b]:.4g}"))
        edges = np.delete(edges, b + 1 if right else b)
    return edges, merged


def binned_metrics(pred: np.ndarray, true: np.ndarray, edges: np.ndarray, *, n_bootstrap: int = 200,
                   seed: int = 0) -> list[dict[str, float]]:
    """Response metrics in bins of the true value; the last bin includes its
    upper edge. Empty bins are reported with ``n_events`` 0 and no metrics."""
    true = np.asarray(true, np.float64).reshape(-1)
    pred = np.asarray(pred, np.float64).reshape(-1)
    idx = bin_index(true, edges)
    rows = []
    for b in range(len(edges) - 1):
        sel = idx == b
        row = {"low": float(edges[b]), "high": float(edges[b + 1])}
        if sel.any():
            row.update(response_metrics_with_errors(pred[sel], true[sel], n_bootstrap=n_bootstrap,
                                                    seed=seed + b))
        else:
            row["n_events"] = 0
        rows.append(row)
    return rows


def _response_resolution(ratio: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(median, q68) of pred/true along the last axis."""
    q16, q50, q84 = np.quantile(ratio, [Q_LOW, 0.5, Q_HIGH], axis=-1)
    return q50, (q84 - q16) / 2


def paired_shifts(ratio: np.ndarray, base_ratio: np.ndarray, *, n_bootstrap: int = 200,
                  seed: int = 0) -> dict[str, float | None]:
    """A model's shifts against the baseline on the same events (``ratio`` and
    ``base_ratio`` are pred/true per event, in the same order):

    response_shift    median - baseline median
    resolution_shift  q68 / baseline q68 - 1 (None when the baseline's q68 is 0)

    and ``<name>_err``, the standard deviation of each over ``n_bootstrap``
    paired resamples (one set of events drawn for both models)."""
    r = np.asarray(ratio, np.float64).reshape(-1)
    b = np.asarray(base_ratio, np.float64).reshape(-1)
    if r.shape != b.shape or r.size == 0:
        raise ValueError(f"paired shifts need the same events for both models, got {r.size} and {b.size}")
    (med, q68), (b_med, b_q68) = _response_resolution(r), _response_resolution(b)
    out: dict[str, float | None] = {"response_shift": float(med - b_med),
                                    "resolution_shift": float(q68 / b_q68 - 1) if b_q68 > 0 else None}
    if n_bootstrap:
        rng = np.random.default_rng(seed)
        d_med, d_res = [], []
        block = max(1, min(n_bootstrap, _BOOTSTRAP_BLOCK // r.size))
        for start in range(0, n_bootstrap, block):
            idx = rng.integers(0, r.size, (min(block, n_bootstrap - start), r.size))
            (m, q), (bm, bq) = _response_resolution(r[idx]), _response_resolution(b[idx])
            d_med.append(m - bm)
            with np.errstate(divide="ignore", invalid="ignore"):
                d_res.append(q / bq - 1)
        out["response_shift_err"] = float(np.std(np.concatenate(d_med), ddof=1)) if n_bootstrap > 1 else 0.0
        res = np.concatenate(d_res)
        out["resolution_shift_err"] = (float(np.std(res, ddof=1)) if n_bootstrap > 1 else 0.0) \
            if out["resolution_shift"] is not None and np.isfinite(res).all() else None
    return out


def tolerance_excess(shift: float | None, tolerance: float, *, two_sided: bool) -> float:
    """How far a shift lies beyond its tolerance (negative: inside it; infinite
    when it is not comparable: a baseline whose q68 is 0, a NaN). ``two_sided``:
    either sign counts (the response); otherwise only a growth (a narrower
    resolution is no failure)."""
    if shift is None or not np.isfinite(shift):
        return math.inf
    return (abs(shift) if two_sided else shift) - tolerance


def beyond_tolerance(shift: float | None, err: float | None, tolerance: float, sigmas: float, *,
                     two_sided: bool) -> bool:
    """Whether a shift exceeds its tolerance by more than ``sigmas`` standard
    errors (no error: by anything); one that is not comparable is never accepted."""
    excess = tolerance_excess(shift, tolerance, two_sided=two_sided)
    return excess > sigmas * (err if err is not None and np.isfinite(err) else 0.0)
