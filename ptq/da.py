"""Distributed-arithmetic firmware of a model, and its LUT cost without building it.

Float models go to a fixed width W (per-layer ap_fixed<W,I>, I from each
layer's ranges, as the bit-width scan chooses them) with every weight put on
its grid first: distributed arithmetic builds the values it is given, and
off the grid it costs about five times more. QAT models keep their trained
quantisers' types. The RTL stage builds this firmware; the frontier search
only estimates its LUTs (:func:`hepprune.ptq.firmware.da_lut_estimate`),
from an hls4ml graph that is converted but never compiled.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from hepprune.core.config import HlsConfig
from hepprune.core.errors import HepPruneError
from hepprune.core.fixedpoint import parse_fixed, quantise
from hepprune.ptq import emulate, firmware, hls_bridge
from hepprune.ptq.quantization import width_setting
from hepprune.ptq.ranges import layer_ranges


@dataclass
class DaModel:
    """A model as its distributed-arithmetic firmware holds it."""

    exported: Any  # the Keras model hls4ml converts (standardisation folded in where it can be)
    x_in: np.ndarray  # the firmware's inputs for the given events
    hls: HlsConfig  # its default precision (the width's, for a float model)
    precisions: dict  # per-layer hls4ml types
    label: str  # "ap_fixed<W,I>", or "trained" (QAT)


def on_grid(model: Any, precisions: dict) -> Any:
    """``model`` with every weight and bias rounded to its layer's type: the
    values the firmware holds, which distributed arithmetic must be given."""
    for layer in model.layers:
        slots = precisions.get(layer.name, {}).get("Precision", {})
        weights = layer.get_weights()
        if not weights or "weight" not in slots:
            continue
        kinds = ("weight", "bias")[:len(weights)]
        types = [parse_fixed(slots.get(kind, slots["weight"])) for kind in kinds]
        layer.set_weights([quantise(w.astype(np.float64), t).astype(w.dtype) if t else w
                           for w, t in zip(weights, types)])
    return model


def da_model(model: Any, std: Any, x_raw: np.ndarray, hls: HlsConfig, width: int | None) -> DaModel:
    """The firmware's view of ``model`` at ``width`` (None: a QAT model's trained types)."""
    exported, to_input, qat_types = hls_bridge.firmware_model(model, std, [x_raw])
    x_in = to_input(x_raw)
    if width is None:
        return DaModel(exported, x_in, hls, qat_types or {}, "trained")
    default, precisions = width_setting(layer_ranges(exported, x_in), width)
    return DaModel(on_grid(exported, precisions), x_in, replace(hls, precision=default), precisions,
                   f"ap_fixed<{width},I>")


def dense_layers(graph: Any, error: type[HepPruneError] = emulate.Unsupported
                 ) -> dict[str, tuple[np.ndarray, int, int]]:
    """Each Dense layer's (kernel on its grid, the weight type's fractional
    bits, the width of the values it takes): what the LUT estimate needs."""
    out = {}
    before = None
    for layer in graph.get_layers():
        if layer.class_name == "Dense" and before is not None:
            kernel = emulate.weights_on_grid(layer, "weight", error)
            assert kernel is not None
            frac = emulate.fixed_of(layer.get_weights("weight").type.precision, f"layer {layer.name} weight",
                                    error).fractional
            out[layer.name] = (kernel.reshape(-1, kernel.shape[-1]), frac, before.width)
        before = emulate.result_type(layer, error)
    return out


def lut_estimate(m: DaModel) -> dict[str, Any]:
    """{"layers": LUTs per Dense layer, "total"} of ``m``'s distributed-arithmetic firmware."""
    with tempfile.TemporaryDirectory(prefix="hepprune-da-") as work:  # converted, never compiled
        graph = hls_bridge.convert(m.exported, Path(work), m.hls, m.precisions)
        emulate.check_layers(list(graph.get_layers()))
        layers = firmware.da_lut_estimate(dense_layers(graph))
    return {"layers": layers, "total": sum(layers.values())}
