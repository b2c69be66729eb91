"""The ranges a model's values really take, per hls4ml precision slot.

Both the bit-width scan (integer bits per layer) and the hls4ml export
(widening layers that would overflow the default type) size fixed-point
types from these ranges.
"""

from __future__ import annotations

import numpy as np

from hepprune.core.backend import keras


def layer_ranges(model, x: np.ndarray) -> dict[str, dict[str, float]]:
    """Largest magnitude per hls4ml precision slot, per hls4ml layer, on inputs
    ``x``: ``result`` (every layer's output, and the input layer's; for a
    layer with a fused activation its pre-activation, the activation being a
    layer of its own in hls4ml), and ``weight`` and ``bias`` for Dense and
    Conv2D layers."""
    layers = [layer for layer in model.layers if not isinstance(layer, keras.layers.InputLayer)]
    probe = keras.Model(model.inputs, [layer.output for layer in layers])
    values = probe.predict(x, batch_size=8192, verbose=0)
    values = values if isinstance(values, list) else [values]
    pre = preactivation_ranges(model, x)
    ranges = {model.input_names[0]: {"result": float(np.abs(x).max())}}
    for layer, out in zip(layers, values):
        r = {"result": float(np.abs(out).max())}
        if type(layer).__name__ in ("Dense", "Conv2D"):
            w = layer.get_weights()[0]
            b = layer.get_weights()[1] if layer.use_bias else np.zeros(1)
            r.update(weight=float(np.abs(w).max()), bias=float(np.abs(b).max()))
        if layer.name in pre:  # hls4ml splits a fused activation off as <name>_<activation>
            ranges[f"{layer.name}_{layer.get_config()['activation']}"] = {"result": r["result"]}
            r["result"] = pre[layer.name]
        ranges[layer.name] = r
    return ranges


def layer_ranges_over(model, x_chunks) -> dict[str, dict[str, float]]:
    """:func:`layer_ranges` over every array of inputs in ``x_chunks``: the largest of each."""
    merged: dict[str, dict[str, float]] = {}
    for x in x_chunks:
        for name, slots in layer_ranges(model, x).items():
            into = merged.setdefault(name, {})
            for slot, value in slots.items():
                into[slot] = max(into.get(slot, 0.0), value)
    return merged


def preactivation_ranges(model, x: np.ndarray) -> dict[str, float]:
    """Largest |pre-activation| of each layer with a fused activation
    (Dense(..., activation="relu")): hls4ml stores it in the layer's own
    result type before its separate activation layer, and a ReLU output
    hides how negative it gets."""
    fused = [layer for layer in model.layers
             if layer.weights and layer.get_config().get("activation") not in (None, "linear")]
    if not fused:
        return {}
    inputs = keras.Model(model.inputs, [layer.input for layer in fused]).predict(x, batch_size=8192, verbose=0)
    inputs = inputs if isinstance(inputs, list) else [inputs]
    out = {}
    for layer, i in zip(fused, inputs):
        linear = type(layer).from_config({**layer.get_config(), "activation": "linear"})
        linear.build(i.shape)
        linear.set_weights(layer.get_weights())
        out[layer.name] = float(np.abs(np.asarray(linear(i))).max())
    return out
