"""Firmware cost without vendor tools: multipliers after pruning, DSPs, BRAM.

hls4ml's Latency strategy unrolls every multiplication of a layer and drops
those by a zero weight; it writes, in parameters.h,
``multiplier_limit = DIV_ROUNDUP(n_in * n_out, reuse_factor) - n_zeros / reuse_factor``
(C++ integer division; for Conv2D n_in * n_out is the kernel size).
``resource_unrolled`` hard-codes the weights in the same way and drops zeros
too. Plain Resource (RF > 1) keeps every multiplier, DIV_ROUNDUP(n_in * n_out, RF),
and stores the weights in a ROM of depth RF whose words hold that many
weights (``ARRAY_RESHAPE block factor``, ``ROM_nP_BRAM``), i.e. BRAM18K
blocks of 36 bits x 512 words. Narrow weights are multiplied in LUTs rather
than DSPs, so the DSP estimate is zero below ``dsp_min_bits``.
"""

from __future__ import annotations

import math

import numpy as np

from hepprune.core.config import HlsConfig
from hepprune.core.fixedpoint import precision_bits

WEIGHTED_LAYERS = ("Dense", "Conv1D", "Conv2D")
BRAM18_BITS, BRAM18_DEPTH = 36, 512  # the widest BRAM18K aspect ratio


def layer_multipliers(kernel: np.ndarray, reuse_factor: int, drops_zeros: bool = True) -> int:
    block_factor = math.ceil(np.asarray(kernel).size / reuse_factor)
    if not drops_zeros:
        return block_factor
    return block_factor - int(np.count_nonzero(np.asarray(kernel) == 0)) // reuse_factor


def layer_bram18(n_weights: int, weight_bits: int, reuse_factor: int, strategy: str) -> int:
    """BRAM18K blocks holding a layer's weights: only plain Resource at RF > 1
    keeps them in a ROM; the other strategies hard-code them in logic."""
    if strategy != "resource" or reuse_factor <= 1:
        return 0
    block_factor = math.ceil(n_weights / reuse_factor)
    return math.ceil(block_factor * weight_bits / BRAM18_BITS) * math.ceil(reuse_factor / BRAM18_DEPTH)


def weighted_kernels(model) -> dict[str, np.ndarray]:
    """Layer name -> the weights its multipliers use: the kernel of a Dense or
    convolution, the prunable weights of a custom tfmot ``PrunableLayer``."""
    out = {}
    for layer in model.layers:
        if type(layer).__name__ in WEIGHTED_LAYERS:
            out[layer.name] = np.asarray(layer.kernel.numpy())
        elif hasattr(layer, "get_prunable_weights") and layer.get_prunable_weights():
            out[layer.name] = np.concatenate([np.asarray(w.numpy()).ravel() for w in layer.get_prunable_weights()])
    return out


def firmware_cost(model, hls: HlsConfig, layer_precisions: dict | None = None,
                  reuse_factors: dict[str, int] | None = None) -> dict:
    """Per-layer and total multipliers, estimated DSPs and BRAM18Ks of a tf_keras
    model; ``layer_precisions`` (hls4ml LayerName settings, as the export used)
    override a layer's weight width, which decides DSP or LUT multipliers, and
    ``reuse_factors`` (read back from the converted model) the configured RF."""
    default_bits = precision_bits(hls.precision)
    assert default_bits is not None, hls.precision  # HlsConfig refuses any other
    default_width = default_bits[0]
    drops_zeros = hls.strategy != "resource"
    layers = {}
    for name, kernel in weighted_kernels(model).items():
        weight = (layer_precisions or {}).get(name, {}).get("Precision", {}).get("weight")
        weight_bits = precision_bits(weight) if weight else None
        width = weight_bits[0] if weight_bits else default_width
        rf = (reuse_factors or {}).get(name, hls.reuse_factor)
        mults = layer_multipliers(kernel, rf, drops_zeros)
        layers[name] = {"weights": int(kernel.size), "zeros": int(np.count_nonzero(kernel == 0)),
                        "reuse_factor": rf, "multipliers": mults, "dsp": mults if width >= hls.dsp_min_bits else 0,
                        "bram_18k": layer_bram18(kernel.size, width, rf, hls.strategy)}
    return {"reuse_factor": hls.reuse_factor, "precision": hls.precision, "strategy": hls.strategy,
            "layers": layers, "multipliers": sum(v["multipliers"] for v in layers.values()),
            "dsp": sum(v["dsp"] for v in layers.values()), "bram_18k": sum(v["bram_18k"] for v in layers.values())}


# Distributed arithmetic (hls4ml's distributed_arithmetic strategy, da4ml): each
# constant product is a sum of shifted inputs, one adder per nonzero digit of
# the weight in canonical signed digits (CSD), each about as wide as the input
# (one LUT per bit on a carry chain). da4ml shares common subexpressions
# between a layer's outputs, and the more nonzero weights an output sums (its
# fan-in), the more it shares: LUTs per digit-bit fall with log2(fan-in).
# DA_LUTS_FIT is (a, b) of a - b * log2(fan-in), fitted to Yosys on 21 layers of
# six networks (docs/BENCHMARKS.md, "Firmware cost: estimate against Yosys").
DA_LUTS_FIT = (1.31, 0.117)
DA_LUTS_BOUNDS = (0.4, 1.2)  # outside the fitted fan-ins (1 to 52), the factor is held at these


def csd_digits(values: np.ndarray) -> np.ndarray:
    """Nonzero digits of each integer in canonical signed-digit (non-adjacent) form."""
    n = np.abs(np.asarray(values, dtype=np.int64))
    half = n >> 1
    three_halves = n + half
    changed = half ^ three_halves
    return (np.bitwise_count(three_halves & changed) + np.bitwise_count(half & changed)).astype(np.int64)


def da_lut_estimate(layers: dict[str, tuple[np.ndarray, int, int]]) -> dict[str, int]:
    """LUTs of distributed-arithmetic firmware per layer: ``layers`` maps each
    Dense layer to (kernel (inputs x outputs) on its grid, its fractional
    bits, input width in bits); zero weights cost nothing."""
    a, b = DA_LUTS_FIT
    out = {}
    for name, (kernel, frac, input_bits) in layers.items():
        scaled = np.rint(np.ldexp(np.asarray(kernel, np.float64), frac))
        digits = int(csd_digits(scaled).sum())
        fan_in = np.count_nonzero(scaled) / max(scaled.shape[-1], 1)  # nonzero weights per output
        factor = float(np.clip(a - b * np.log2(max(fan_in, 1.0)), *DA_LUTS_BOUNDS))
        out[name] = int(round(factor * digits * input_bits))
    return out
