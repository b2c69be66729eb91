"""The pruning bookkeeping done once per training step for the whole model.

tfmot's wrapper does its bookkeeping in every wrapped layer on every batch:
it advances its own step counter, checks it, evaluates the schedule and
runs a conditional mask update, some 50 small graph ops per layer. For the
demo MLP that fixed cost was 13-18 % of a 0.8-1.1 ms training step
(docs/BENCHMARKS.md). Every wrapper of a model has the same schedule and
the same step, so :func:`install` does the bookkeeping once, in the
model's train step: advance every wrapper's counter to the same value,
evaluate the schedule, and under one ``tf.cond`` update every layer's mask
with that layer's own mask computation. The wrappers then only apply their
masks. Steps, masks and weights are those of tfmot's per-layer path, bit
for bit (tests/test_pruning.py).

Single process only: under a distribution strategy tfmot updates masks
through a cross-replica merge, so multi-worker training keeps tfmot's
per-layer wrapper (``prune.pruning.wrap_for_pruning(shared_step=False)``).
"""

from __future__ import annotations

__all__ = ["PruneLowMagnitude", "install", "wrap"]

import inspect
import json
import threading

import numpy as np

from hepprune.core.backend import (  # first: it selects Keras 2 before TensorFlow or tfmot is imported
    tf,
    tfmot,  # noqa: F401 - the package, imported as the backend does it (without Keras 3)
)

# isort: split
# Subclassing needs tfmot's module itself, not the public alias; setup.cfg
# pins tfmot <0.9, whose private Pruning API update_masks uses.
from tensorflow_model_optimization.python.core.sparsity.keras import pruning_wrapper

_MISSING_CALLBACK = pruning_wrapper.PruneLowMagnitude._PRUNE_CALLBACK_ERROR_MSG
_NOT_INSTALLED = ("layer {name} is pruned by its model's train step (prune.shared_step.install), but it is "
                  "being trained some other way; its masks would never change. Train the model that "
                  "prune.pruning.wrap_for_pruning returned with model.fit, or wrap with shared_step=False")
_tracing = threading.local()  # set while an installed train step traces Keras' step


def check_stepped(layer, training) -> None:
    """Refuse (at trace time, so at no cost per step) to train a wrapper whose
    bookkeeping is not being done: it would silently never prune."""
    if training is True and not getattr(_tracing, "active", False):
        raise RuntimeError(_NOT_INSTALLED.format(name=layer.name))


class PruneLowMagnitude(pruning_wrapper.PruneLowMagnitude):
    """tfmot's magnitude-pruning wrapper whose forward pass only applies the
    mask; the model's train step (:func:`install`) advances its step and
    updates its mask.

    It keeps tfmot's class name on purpose: the layer names, the variable
    names in TensorBoard tags and the ``class_name`` in a saved HDF5 file
    are tfmot's, so the saved model loads under ``prune_scope()`` as tfmot's
    own wrapper, with tfmot's per-layer bookkeeping.
    """

    stepped_by_model = True

    def __init__(self, layer, **kwargs):
        if kwargs.get("sparsity_m_by_n"):  # tfmot updates m-by-n masks at step 1 only; not done here
            raise ValueError("sparsity_m_by_n is not supported by the shared pruning step")
        super().__init__(layer, **kwargs)

    def call(self, inputs, training=None, **kwargs):
        check_stepped(self, training)
        self.add_update(self.pruning_obj.weight_mask_op())  # weights = weights * mask, as tfmot does
        if "training" in inspect.getfullargspec(self.layer.call).args:
            return self.layer.call(inputs, training=training, **kwargs)
        return self.layer.call(inputs, **kwargs)

    def update_masks(self) -> list:
        """tfmot's mask update for this layer at its current step (the body of
        ``Pruning.conditional_mask_update``, tfmot 0.8, without its cond)."""
        pruning = self.pruning_obj
        ops = []
        for weight, mask, threshold in pruning._pruning_vars:
            new_threshold, new_mask = pruning._maybe_update_block_mask(weight)
            ops += [threshold.assign(new_threshold), mask.assign(new_mask)]
        return ops


def wrap(layer, pruning_schedule, block_size):
    """``tfmot.sparsity.keras.prune_low_magnitude(layer, ...)`` with this module's wrapper."""
    return PruneLowMagnitude(layer, pruning_schedule=pruning_schedule, block_size=block_size)


def _schedule_key(schedule) -> str:
    return json.dumps({"class": type(schedule).__name__, **schedule.get_config()}, sort_keys=True, default=str)


def install(model) -> None:
    """Make ``model.fit`` do the pruning bookkeeping of every wrapper that
    is ``stepped_by_model``, once per training step, before the forward pass.

    The n-th batch is step n for every wrapper, as in tfmot. tfmot's
    wrappers need the ``UpdatePruningStep`` callback, which starts their
    counters at 0, and refuse to train without it; so does this step.
    Installing again replaces the step (it never counts a batch twice).
    """
    if tf.distribute.has_strategy() or getattr(model, "_distribution_strategy", None) is not None:
        raise ValueError("the shared pruning step is single-process; under a distribution strategy "
                         "wrap with shared_step=False")
    wrappers = [m for m in model.submodules if getattr(m, "stepped_by_model", False)]
    if not wrappers:
        raise ValueError(f"model {model.name} has no wrapper for the shared pruning step")
    if len({_schedule_key(w.pruning_schedule) for w in wrappers}) != 1:
        raise ValueError("shared pruning step: the wrapped layers have different pruning schedules")
    schedule = wrappers[0].pruning_schedule
    keras_train_step = type(model).train_step.__get__(model)  # the class's step, never a previous install

    def update_all():
        with tf.control_dependencies([op for w in wrappers for op in w.update_masks()]):
            return tf.constant(True)

    def train_step(data):
        step = wrappers[0].pruning_step + 1
        with tf.control_dependencies([tf.debugging.assert_greater_equal(step, np.int64(1),
                                                                        message=_MISSING_CALLBACK)]):
            for w in wrappers:
                w.pruning_step.assign(step)
        # Program order orders the variable accesses: the masks are updated
        # after the counters advance and before the forward pass applies them.
        tf.cond(schedule(step)[0], update_all, lambda: tf.constant(False))
        _tracing.active = True
        try:
            return keras_train_step(data)
        finally:
            _tracing.active = False

    model.train_step = train_step  # an instance attribute: the model keeps its class, config and saving
