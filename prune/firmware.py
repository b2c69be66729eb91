"""Firmware cost without vendor tools: multipliers after pruning, DSP estimate.

hls4ml's Latency strategy unrolls every multiplication of a layer and drops
those by a zero weight; it writes, in parameters.h,
``multiplier_limit = DIV_ROUNDUP(n_in * n_out, reuse_factor) - n_zeros / reuse_factor``
(C++ integer division; for Conv2D n_in * n_out is the kernel size). The
same count is computed here from the weights, per layer and in total. Narrow
weights are multiplied in LUTs rather than DSPs, so the DSP estimate is zero
below ``dsp_min_bits``.
"""

from __future__ import annotations

import math

import numpy as np

from data.config import HlsConfig, precision_bits

WEIGHTED_LAYERS = ("Dense", "Conv2D")


def layer_multipliers(kernel: np.ndarray, reuse_factor: int) -> int:
    n_zeros = int(np.count_nonzero(np.asarray(kernel) == 0))
    return math.ceil(kernel.size / reuse_factor) - n_zeros // reuse_factor


def firmware_cost(model, hls: HlsConfig) -> dict:
    """Per-layer and total multipliers and estimated DSPs of a tf_keras model."""
    width, _ = precision_bits(hls.precision)
    uses_dsp = width >= hls.dsp_min_bits
    layers = {}
    for layer in model.layers:
        if type(layer).__name__ not in WEIGHTED_LAYERS:
            continue
        kernel = layer.get_weights()[0]
        mults = layer_multipliers(kernel, hls.reuse_factor)
        layers[layer.name] = {"weights": int(kernel.size), "zeros": int(np.count_nonzero(kernel == 0)),
                              "multipliers": mults, "dsp": mults if uses_dsp else 0}
    return {"reuse_factor": hls.reuse_factor, "precision": hls.precision, "layers": layers,
            "multipliers": sum(v["multipliers"] for v in layers.values()),
            "dsp": sum(v["dsp"] for v in layers.values())}
