"""Benchmark: streamed HDF5 training throughput vs the in-memory ceiling, and peak RSS.

    python bench/bench_loader.py [--events 1000000] [--epochs 3] [--out /tmp/hepprune-bench]

In one run, on the same model and batch size:
- *ceiling*: ``tf.data.Dataset.from_tensor_slices`` over arrays already in
  memory, no shuffling: the compute ceiling of the training step;
- *streamed*: the project's pipeline (chunk reads in shuffled order, bounded
  shuffle buffer, numpy batches, prefetch) over the same events on disk;
- peak RSS of a streamed training process for N and 4N events.

Figures are ratios measured in the same run, because these machines are
shared and noisy. Results go to stdout as JSON; copy them to docs/BENCHMARKS.md.
"""

if __package__ in (None, ""):  # run as `python bench/bench_loader.py`: import from the checkout
    import pathlib
    import sys

    sys.path[0] = str(pathlib.Path(__file__).resolve().parents[1])

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def make_data(out: Path, events: int) -> str:
    if not list(out.glob("shard_*.h5")):
        subprocess.run([sys.executable, str(ROOT / "data/make_dataset.py"), "--out", str(out), "--events",
                        str(events), "--seed", "7"], check=True)
    return str(out / "shard_*.h5")


def _setup(pattern: str):
    from hepprune.core.config import from_dict
    from hepprune.data import loader
    from hepprune.data.schema import open_dataset

    cfg = from_dict({"data": {"path": pattern, "batch_size": 512, "shuffle_buffer": 131072},
                     "model": {"hidden_units": [32, 16, 8]}})
    info = open_dataset(pattern)
    reader = loader.Reader(info)
    splits = loader.split_blocks(info, cfg.data.val_fraction, cfg.data.test_fraction)
    stats = loader.scan(reader, splits, cfg.data)
    return cfg, reader, splits["train"], stats


def _model(cfg, input_shape):
    from hepprune.core.backend import keras
    from hepprune.core.models import build_model

    keras.utils.set_random_seed(0)
    model = build_model(cfg.model, input_shape)
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="mse")
    return model


def _epoch_seconds(model, ds, steps: int, epochs: int) -> float:
    """Median wall time of epochs 2..N (epoch 1 pays for tracing)."""
    from hepprune.core.backend import keras

    times = []

    class Timer(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.t0 = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            times.append(time.perf_counter() - self.t0)

    model.fit(ds, epochs=epochs, steps_per_epoch=steps, verbose=0, callbacks=[Timer()])
    later = sorted(times[1:])
    return later[len(later) // 2]


def throughput(pattern: str, epochs: int) -> dict:
    import numpy as np

    from hepprune.core import targets
    from hepprune.core.backend import tf
    from hepprune.data import loader

    cfg, reader, train, stats = _setup(pattern)
    n = loader.n_events(train)
    steps = loader.steps(n, cfg.data.batch_size)

    # Ceiling: the same (standardised) events already in memory, in file order.
    xs, ts = [], []
    for x, true, ref in loader.iter_batches(reader, train, 65536, standardization=stats):
        xs.append(x.copy())
        ts.append(targets.encode(true, ref, cfg.data))
    x_mem, t_mem = np.concatenate(xs), np.concatenate(ts)
    mem_ds = tf.data.Dataset.from_tensor_slices((x_mem, t_mem)).batch(cfg.data.batch_size).repeat().prefetch(4)
    t_ceiling = _epoch_seconds(_model(cfg, reader.input_shape), mem_ds, steps, epochs)
    del mem_ds, x_mem, t_mem

    stream_ds = loader.as_tf_dataset(reader, train, cfg.data, stats, seed=1, epochs=range(epochs))
    t_stream = _epoch_seconds(_model(cfg, reader.input_shape), stream_ds, steps, epochs)
    return {"train_events": n, "batch_size": cfg.data.batch_size, "steps_per_epoch": steps,
            "ceiling_events_per_s": round(n / t_ceiling), "streamed_events_per_s": round(n / t_stream),
            "streamed_over_ceiling": round(t_ceiling / t_stream, 3)}


def rss_child(pattern: str) -> None:
    """One streamed training epoch; prints the process's peak RSS in MiB."""
    from hepprune.data import loader

    cfg, reader, train, stats = _setup(pattern)
    model = _model(cfg, reader.input_shape)
    ds = loader.as_tf_dataset(reader, train, cfg.data, stats, seed=1, epochs=range(1))
    model.fit(ds, epochs=1, steps_per_epoch=loader.steps(loader.n_events(train), cfg.data.batch_size),
              verbose=0)
    print(json.dumps({"peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--events", type=int, default=1_000_000)
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--out", default="/tmp/hepprune-bench")
    p.add_argument("--rss-child", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.rss_child:
        rss_child(args.rss_child)
        return
    out = Path(args.out)
    small = make_data(out / f"n{args.events}", args.events)
    large = make_data(out / f"n{4 * args.events}", 4 * args.events)
    result = {"throughput": throughput(small, args.epochs)}
    rss = {}
    for label, pattern in (("N", small), ("4N", large)):
        proc = subprocess.run([sys.executable, __file__, "--rss-child", pattern], check=True,
                              capture_output=True, text=True)
        rss[label] = json.loads(proc.stdout.strip().splitlines()[-1])["peak_rss_mib"]
    result["peak_rss_mib"] = {"events_N": args.events, **{k: round(v, 1) for k, v in rss.items()},
                              "growth_4x": round(rss["4N"] / rss["N"] - 1, 4)}
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
