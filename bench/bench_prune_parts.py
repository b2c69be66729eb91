"""Benchmark: which part of tfmot's pruning wrapper costs training time.

    python bench/bench_prune_parts.py [--events 200000] [--rounds 21] [--batch-size 512]

The demo MLP, dense and wrapped, with tfmot's ``PruneLowMagnitude.call``
replaced by variants that leave out one piece of its per-step bookkeeping, or
move the mask update to a host-side per-batch callback. Epochs interleaved,
CPU time, one thread; ratio of medians (and of minima) to dense, in one run.
A diagnosis of tfmot's own per-layer wrapper for docs/BENCHMARKS.md (the
pruning sweep does this bookkeeping once per step, prune/shared_step.py),
not a way to train: some variants never update the masks.
"""

if __package__ in (None, ""):  # run as `python bench/bench_prune_parts.py`: import from the checkout
    import pathlib
    import sys

    sys.path[0] = str(pathlib.Path(__file__).resolve().parents[1])

import argparse
import json
import time

import numpy as np


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--events", type=int, default=200_000)
    p.add_argument("--rounds", type=int, default=21)
    p.add_argument("--batch-size", type=int, default=512)
    args = p.parse_args()

    from hepprune.core.backend import keras, tf, tfmot

    tf.config.threading.set_intra_op_parallelism_threads(1)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    from tensorflow.python.ops import control_flow_util_v2
    from tensorflow_model_optimization.python.core.sparsity.keras import pruning_wrapper

    from hepprune.core.config import ModelConfig, PruneConfig
    from hepprune.core.models import build_model
    from hepprune.data.calorimeter import CalorimeterParams, generate_events
    from hepprune.prune.pruning import prunable_layers, wrap_for_pruning
    from hepprune.prune.schedule import derive_schedule

    ev = generate_events(args.events, CalorimeterParams(), np.random.default_rng(0))
    x = ((ev["inputs"] - ev["inputs"].mean(0)) / (ev["inputs"].std(0) + 1e-6)).astype(np.float32)
    y = (ev["target"] / np.maximum(ev["reference"], 1.0)).astype(np.float32)
    steps = args.events // args.batch_size
    ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(args.batch_size, drop_remainder=True)
    ds = ds.cache().repeat().prefetch(tf.data.AUTOTUNE)
    shipped = pruning_wrapper.PruneLowMagnitude.call

    def variant_call(assert_step=True, mask_update=True, lower=True):
        """tfmot's call (pruning_wrapper.py, 0.8) with pieces switchable."""
        def call(self, inputs, training=None, **kwargs):
            self.add_update(self.pruning_step.assign(self.pruning_step + 1))
            if mask_update:
                deps = [tf.debugging.assert_greater_equal(self.pruning_step, np.int64(1))] if assert_step else []
                control_flow_util_v2._DISABLE_LOWER_USING_SWITCH_MERGE = not lower
                with tf.control_dependencies(deps):
                    self.add_update(self.pruning_obj.conditional_mask_update())
                control_flow_util_v2._DISABLE_LOWER_USING_SWITCH_MERGE = False
            self.add_update(self.pruning_obj.weight_mask_op())
            return self.layer.call(inputs)
        return call

    class HostMaskUpdate(keras.callbacks.Callback):
        """Mask updates decided in Python before each batch: no per-step If in the graph."""

        def __init__(self, schedule):
            super().__init__()
            self._supports_tf_logs = True
            self.schedule = schedule

        def on_train_begin(self, logs=None):
            layers = [w for w in self.model.layers if isinstance(w, pruning_wrapper.PruneLowMagnitude)]
            self.step = int(layers[0].pruning_step.numpy())

            @tf.function
            def update():  # at the step the coming batch will count
                for w in layers:
                    w.pruning_step.assign_add(1)
                    w.pruning_obj.conditional_mask_update()
                    w.pruning_step.assign_sub(1)
            self.update = update

        def on_train_batch_begin(self, batch, logs=None):
            self.step += 1
            s = self.schedule
            if s.begin_step <= self.step <= s.end_step and (self.step - s.begin_step) % s.frequency == 0:
                self.update()

    variants = {
        "dense": None,
        "tfmot": shipped,
        "no_assert": variant_call(assert_step=False),
        "cond_not_lowered": variant_call(lower=False),
        "no_mask_update": variant_call(assert_step=False, mask_update=False),
        "host_callback": variant_call(assert_step=False, mask_update=False),
    }
    cfg = PruneConfig(epochs=args.rounds + 1, warmup_epochs=0, pruning_epochs=args.rounds + 1,
                      granularity="unstructured", targets=[0.5])
    schedule = derive_schedule(cfg, 0.5, steps)

    def build(name: str):
        keras.utils.set_random_seed(0)
        model = build_model(ModelConfig(hidden_units=[32, 16, 8]), (x.shape[1],))
        callbacks = []
        if name != "dense":
            pruning_wrapper.PruneLowMagnitude.call = variants[name]  # traced by the warm-up fit below
            model = wrap_for_pruning(model, prunable_layers(model), schedule, cfg, shared_step=False)
            callbacks.append(tfmot.sparsity.keras.UpdatePruningStep())
            if name == "host_callback":
                callbacks.append(HostMaskUpdate(schedule))
        model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="mae")
        model.fit(ds, epochs=1, steps_per_epoch=steps, verbose=0, callbacks=callbacks)
        pruning_wrapper.PruneLowMagnitude.call = shipped
        return model, callbacks

    models = {v: build(v) for v in variants}
    cpu = {v: [] for v in variants}
    for r in range(args.rounds):
        for v, (model, callbacks) in models.items():
            c0 = time.process_time()
            model.fit(ds, epochs=r + 2, initial_epoch=r + 1, steps_per_epoch=steps, verbose=0, callbacks=callbacks)
            cpu[v].append(time.process_time() - c0)
    med = {v: float(np.median(t)) for v, t in cpu.items()}
    low = {v: float(np.min(t)) for v, t in cpu.items()}
    print(json.dumps({"events": args.events, "batch_size": args.batch_size, "rounds": args.rounds,
                      "dense_cpu_ms_per_step": round(1000 * med["dense"] / steps, 3),
                      "cpu_over_dense_median": {v: round(med[v] / med["dense"], 3) for v in variants},
                      "cpu_over_dense_min": {v: round(low[v] / low["dense"], 3) for v in variants}}, indent=2))


if __name__ == "__main__":
    main()
