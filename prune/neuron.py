"""Neuron (structured) pruning: remove whole output units of Dense layers.

Units are ranked by the L2 norm of their kernel column and the smallest
fraction is masked, on the same tfmot schedule (steps, frequency, ramp) as
weight pruning, so the sparsity guarantees carry over. tfmot itself only
ranks single weights or blocks by magnitude, hence this small wrapper. After
training, :func:`shrink_model` builds a physically smaller model: the pruned
layer loses the units and the next weighted layer loses the matching inputs.
A masked unit can still emit a constant (a BatchNormalization shift, or
sigmoid(0) = 0.5); that constant's contribution is folded into the next
layer's bias, so the smaller model predicts exactly what the masked one does.
"""

from __future__ import annotations

import logging

import numpy as np

from hepprune.core.backend import keras, tf
from hepprune.core.errors import ConfigError
from hepprune.prune import plan
from hepprune.prune.shared_step import check_stepped

log = logging.getLogger(__name__)

def keep_mask(kernel: np.ndarray, sparsity: float) -> np.ndarray:
    """True for the output units (last axis) to keep: all but the
    ``round(sparsity * units)`` with the smallest column L2 norm."""
    norms = np.sqrt((kernel.reshape(-1, kernel.shape[-1]).astype(np.float64) ** 2).sum(axis=0))
    k = int(round(sparsity * norms.size))
    mask = np.ones(norms.size, bool)
    mask[np.argsort(norms, kind="stable")[:k]] = False
    return mask


class NeuronPruned(keras.layers.Wrapper):
    """Masks a Dense layer's output units on a tfmot pruning schedule.

    Like tfmot's wrapper, it counts its own training steps (1-based) and
    re-applies the mask before every forward pass; mask and step are layer
    weights, so they are checkpointed and a resumed run continues exactly.
    """

    def __init__(self, layer, pruning_schedule, *, stepped_by_model: bool = False, **kwargs):
        super().__init__(layer, **kwargs)
        self.pruning_schedule = pruning_schedule
        # True: prune.shared_step advances the step and updates the mask, once for the model.
        self.stepped_by_model = stepped_by_model

    def build(self, input_shape):
        super().build(input_shape)
        units = int(self.layer.kernel.shape[-1])
        self.mask = self.add_weight(name="neuron_mask", shape=(units,), initializer="ones", trainable=False)
        self.pruning_step = self.add_weight(name="pruning_step", shape=(), dtype=tf.int64,
                                            initializer="zeros", trainable=False)

    def _update_mask(self, sparsity):
        norms = tf.norm(tf.reshape(self.layer.kernel, (-1, tf.shape(self.layer.kernel)[-1])), axis=0)
        units = tf.shape(norms)[0]
        k = tf.cast(tf.round(sparsity * tf.cast(units, tf.float32)), tf.int32)
        drop = tf.argsort(norms, stable=True)[:k]
        mask = tf.tensor_scatter_nd_update(tf.ones_like(norms), drop[:, None], tf.zeros_like(drop, norms.dtype))
        self.mask.assign(mask)
        return tf.constant(True)

    def update_masks(self) -> list:
        """The mask update at the current step (prune.shared_step calls it when the schedule says)."""
        return [self._update_mask(self.pruning_schedule(self.pruning_step)[1])]

    def call(self, inputs, training=None):
        if self.stepped_by_model:
            check_stepped(self, training)
        elif training:
            self.pruning_step.assign_add(1)
            should, sparsity = self.pruning_schedule(self.pruning_step)
            tf.cond(should, lambda: self._update_mask(sparsity), lambda: tf.constant(False))
        self.layer.kernel.assign(self.layer.kernel * self.mask)
        if self.layer.use_bias:
            self.layer.bias.assign(self.layer.bias * self.mask)
        return self.layer(inputs)

    def compute_output_shape(self, input_shape):
        return self.layer.compute_output_shape(input_shape)


def check_supported(model, layers: list[str]) -> None:
    """Neuron pruning needs a Sequential chain of Dense layers with only
    element-wise layers between a pruned layer and the next Dense
    (:func:`prune.plan.check_neuron_supported`)."""
    plan.check_neuron_supported(type(model).__name__, isinstance(model, keras.Sequential),
                                [(layer.name, type(layer).__name__) for layer in model.layers], layers)


def _next_dense(model, name: str):
    """(elementwise layers in between, the next Dense) after ``name``."""
    between, nxt = plan.next_dense([(layer.name, type(layer).__name__) for layer in model.layers], name)
    return [model.layers[i] for i in between], model.layers[nxt]


def apply_masks(model, masks: dict[str, np.ndarray]) -> None:
    """Zero the kernel columns and biases of masked units, in place."""
    for name, keep in masks.items():
        layer = model.get_layer(name)
        weights = layer.get_weights()
        weights[0] = weights[0] * keep
        if layer.use_bias:
            weights[1] = weights[1] * keep
        layer.set_weights(weights)


def shrink_model(model, masks: dict[str, np.ndarray]):
    """A physically smaller Sequential model with the same predictions as
    ``model`` after :func:`apply_masks`."""
    check_supported(model, list(masks))
    new_weights: dict[str, list[np.ndarray]] = {layer.name: layer.get_weights() for layer in model.layers}
    units: dict[str, int] = {}
    for name, keep in masks.items():
        layer = model.get_layer(name)
        between, nxt = _next_dense(model, name)
        w = new_weights[name]
        # The constant each removed unit still passes on, through the elementwise layers.
        const = np.zeros((1, keep.size), np.float32)
        for mid in between:
            const = mid(const, training=False).numpy()
        dropped = ~keep
        nk = new_weights[nxt.name]
        if nxt.use_bias:
            nk[1] = nk[1] + const[0, dropped] @ nk[0][dropped]
        elif np.any(const[0, dropped] != 0):
            raise ConfigError(f"neuron pruning of {name}: {nxt.name} has no bias to absorb the removed "
                              "units' constant output")
        nk[0] = nk[0][keep]
        w[0] = w[0][:, keep]
        if layer.use_bias:
            w[1] = w[1][keep]
        for mid in between:
            if type(mid).__name__ == "BatchNormalization":
                new_weights[mid.name] = [p[keep] for p in new_weights[mid.name]]
        units[name] = int(keep.sum())

    config = model.get_config()
    for layer_cfg in config["layers"]:
        name = layer_cfg["config"].get("name")
        if name in units:
            layer_cfg["config"]["units"] = units[name]
    smaller = keras.Sequential.from_config(config)
    for layer in smaller.layers:
        layer.set_weights(new_weights[layer.name])
    return smaller
