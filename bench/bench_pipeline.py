"""Benchmark: the input pipeline's own CPU per event, without training.

    python bench/bench_pipeline.py [--data GLOB] [--root CHECKOUT]

Over the training split of the 1 M-event bench dataset (bench_loader.py
writes it): the numpy side (``iter_windows``: read, shuffle, standardise)
iterated in Python, and the whole ``tf.data`` pipeline drained by
``Dataset.reduce`` in C++. Each is timed over three epochs; the median is
printed as events/s, cores busy and ns of CPU (user + system) per event.
``--root`` imports hepprune from another checkout instead (its folders
linked as a package: ``ln -s ../data hepprune/data``, ...), to alternate old
and new code in one session.
"""

import argparse
import resource
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default="/tmp/hepprune-bench/n1000000/shard_*.h5")
    p.add_argument("--root", default=str(ROOT))
    args = p.parse_args()
    sys.path.insert(0, args.root)
    from hepprune.core.config import from_dict
    from hepprune.data import loader
    from hepprune.data.schema import open_dataset

    cfg = from_dict({"data": {"path": args.data, "batch_size": 512, "shuffle_buffer": 131072}})
    info = open_dataset(args.data)
    reader = loader.Reader(info)
    splits = loader.split_blocks(info, 0.1, 0.1)
    stats = loader.scan(reader, splits, cfg.data)
    train = splits["train"]
    n = loader.n_events(train)
    print(f"hepprune from {loader.__file__}")
    for mode in ("numpy", "tf"):
        runs = []
        for epoch in range(3):
            c0, t0 = cpu(), time.perf_counter()
            if mode == "numpy":
                for _ in loader.iter_windows(reader, train, 512, shuffle_buffer=131072,
                                             rng=loader.epoch_rng(1, epoch), standardization=stats):
                    pass
            else:
                ds = loader.as_tf_dataset(reader, train, cfg.data, stats, seed=1, epochs=range(epoch, epoch + 1))
                ds.reduce(0, lambda count, *batch: count + 1)
            runs.append((time.perf_counter() - t0, cpu() - c0))
        wall, used = sorted(runs)[1]
        print(f"{mode}: {n / wall / 1e6:.2f} M events/s, {used / wall:.2f} cores busy, "
              f"{used / n * 1e9:.0f} ns CPU per event")


if __name__ == "__main__":
    main()
