"""Target transforms: what the network regresses, and how to get energy back.

``ratio``  t = true / max(reference, floor): the network learns a correction
           factor to the raw estimator, of order 1 across the whole spectrum.
``log``    t = log(true): scale-free, but the network must rebuild the energy
           scale from the inputs.
``none``   t = true / scale.

For ``task: classification`` the target is the class index and passes
through unchanged (hepprune.core.task.Classification).
"""

from __future__ import annotations

import numpy as np

from hepprune.core.config import DataConfig


def encode(true: np.ndarray, reference: np.ndarray, cfg: DataConfig) -> np.ndarray:
    t: np.ndarray
    if cfg.target_transform == "ratio":
        t = (true / np.maximum(reference, cfg.reference_floor)).astype(np.float32)
    elif cfg.target_transform == "log":
        t = np.log(true).astype(np.float32)
    else:
        t = (true / cfg.target_scale).astype(np.float32)
    return t


def decode(t: np.ndarray, reference: np.ndarray, cfg: DataConfig) -> np.ndarray:
    """Predicted true value (target units) from the network output ``t``."""
    t = np.asarray(t, dtype=np.float64).reshape(-1)
    out: np.ndarray
    if cfg.target_transform == "ratio":
        out = t * np.maximum(reference, cfg.reference_floor)
    elif cfg.target_transform == "log":
        out = np.exp(np.clip(t, -50.0, 50.0))
    else:
        out = t * cfg.target_scale
    return out
