"""Benchmark: training step time with tfmot pruning wrappers vs dense training.

    python bench/bench_prune.py [--events 200000] [--epochs 21] [--batch-size 512] [--hidden 32,16,8]

Same model (the demo MLP), same in-memory batches, same optimizer; the only
difference is the pruning wrappers mid-ramp: unstructured and neuron as
``prune/train_model_prune.py`` trains them (the bookkeeping done once per step
for the model, prune/shared_step.py), and unstructured with tfmot's own
per-layer wrapper (the multi-worker path). Epochs of the models are
interleaved over several rounds and the ratio of median epoch times is
reported, measured in one run. ``qat6``/``qat8``: the same unstructured
pruning of the model's QKeras copy at 6/8 bits (quantisation-aware pruning,
hepprune/core/qat.py), reported against float unstructured pruning.
Target (issue 3): wrapped <= 1.15 x dense.
"""

if __package__ in (None, ""):  # run as `python bench/bench_prune.py`: import from the checkout
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
    p.add_argument("--epochs", type=int, default=21, help="interleaved timing rounds")
    p.add_argument("--batch-size", type=int, default=512)
    p.add_argument("--hidden", default="32,16,8")
    p.add_argument("--threads", type=int, default=1,
                   help="TensorFlow intra/inter-op threads (1: CPU time is not inflated by idle spinning)")
    args = p.parse_args()

    from hepprune.core.backend import keras, tf, tfmot

    tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    tf.config.threading.set_inter_op_parallelism_threads(args.threads)
    from hepprune.core import qat
    from hepprune.core.config import ModelConfig, PruneConfig, QatConfig
    from hepprune.core.models import build_model
    from hepprune.data.calorimeter import CalorimeterParams, generate_events
    from hepprune.prune.pruning import prunable_layers, wrap_for_pruning
    from hepprune.prune.schedule import derive_schedule

    ev = generate_events(args.events, CalorimeterParams(), np.random.default_rng(0))
    x = (ev["inputs"] - ev["inputs"].mean(0)) / (ev["inputs"].std(0) + 1e-6)
    y = (ev["target"] / np.maximum(ev["reference"], 1.0)).astype(np.float32)
    steps = args.events // args.batch_size
    ds = tf.data.Dataset.from_tensor_slices((x.astype(np.float32), y)).batch(args.batch_size,
                                                                             drop_remainder=True)
    ds = ds.cache().repeat().prefetch(tf.data.AUTOTUNE)
    model_cfg = ModelConfig(hidden_units=[int(h) for h in args.hidden.split(",")])

    variants = ("dense", "unstructured", "neuron", "tfmot_per_layer", "qat8", "qat6")
    rounds = args.epochs

    def build(variant: str):
        keras.utils.set_random_seed(0)
        model = build_model(model_cfg, (x.shape[1],))
        if variant.startswith("qat"):
            model = qat.quantise(model, int(variant[3:]), QatConfig())
        callbacks = []
        if variant != "dense":
            # Mask updates all through the measured epochs: the wrappers' worst case.
            cfg = PruneConfig(epochs=rounds + 1, warmup_epochs=0, pruning_epochs=rounds + 1,
                              granularity="neuron" if variant == "neuron" else "unstructured", targets=[0.5])
            # (prunable_layers skips QActivation: a PrunableLayer with nothing to prune)
            model = wrap_for_pruning(model, prunable_layers(model), derive_schedule(cfg, 0.5, steps), cfg,
                                     shared_step=variant != "tfmot_per_layer")
            callbacks.append(tfmot.sparsity.keras.UpdatePruningStep())
        model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="mae")
        model.fit(ds, epochs=1, steps_per_epoch=steps, verbose=0, callbacks=callbacks)  # trace, warm up
        return model, callbacks

    models = {v: build(v) for v in variants}
    times = {v: [] for v in variants}
    cpu = {v: [] for v in variants}
    for r in range(rounds):
        # Interleaved, and in a rotated order each round, so machine drift and
        # position in the round hit every variant alike.
        for v in variants[r % len(variants):] + variants[:r % len(variants)]:
            model, callbacks = models[v]
            t0, c0 = time.perf_counter(), time.process_time()
            model.fit(ds, epochs=r + 2, initial_epoch=r + 1, steps_per_epoch=steps, verbose=0,
                      callbacks=callbacks)
            times[v].append(time.perf_counter() - t0)
            cpu[v].append(time.process_time() - c0)
    median = {v: float(np.median(t)) for v, t in times.items()}
    median_cpu = {v: float(np.median(t)) for v, t in cpu.items()}
    result = {"events": args.events, "batch_size": args.batch_size, "hidden": args.hidden, "rounds": rounds,
              "threads": args.threads}
    for v in variants:
        result[f"{v}_ms_per_step"] = round(1000 * median[v] / steps, 3)
        result[f"{v}_cpu_ms_per_step"] = round(1000 * median_cpu[v] / steps, 3)
        if v != "dense":
            # Ratio of medians, and the median of the per-round ratios (each
            # against the dense epoch of the same round).
            result[f"{v}_over_dense"] = round(median[v] / median["dense"], 3)
            result[f"{v}_cpu_over_dense"] = round(median_cpu[v] / median_cpu["dense"], 3)
            result[f"{v}_cpu_over_dense_paired"] = round(float(np.median(
                np.array(cpu[v]) / np.array(cpu["dense"]))), 3)
        if v.startswith("qat"):  # quantisation-aware pruning against float pruning, same rounds
            result[f"{v}_cpu_over_unstructured"] = round(median_cpu[v] / median_cpu["unstructured"], 3)
            result[f"{v}_cpu_over_unstructured_paired"] = round(float(np.median(
                np.array(cpu[v]) / np.array(cpu["unstructured"]))), 3)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
