"""Benchmark: training straight from each HDF5 layout class (data.layout) vs the in-memory ceiling.

    python bench/bench_layouts.py [--events 1000000] [--epochs 4] [--out /tmp/hepprune-bench]

The same calorimeter events (1 M, 52 features) are written in each layout a
user's file may have, as h5py and pandas write them by default (h5py's
automatic chunks, a few KiB to a few hundred KiB), then trained on with the
demo MLP, batch 512, streamed through data.layout. For each layout: events/s
of training over the in-memory ceiling (measured before and after the
layouts in the same run, averaged), the read rate of the statistics pass
(what the slow-layout warning measures), and the CPU the input pipeline
alone costs per event (its tf.data dataset drained in C++, no training).
Then data/repack.py's throughput on the gzip file, and the repacked file
trained on like the others. Results go to stdout as JSON; copy them to
docs/BENCHMARKS.md.
"""

if __package__ in (None, ""):  # run as `python bench/bench_layouts.py`: import from the checkout
    import pathlib
    import sys

    sys.path[0] = str(pathlib.Path(__file__).resolve().parents[1])

import argparse
import json
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(1, str(ROOT / "bench"))

from bench_loader import _epoch_seconds, _model  # noqa: E402 - after the checkout is on sys.path


def write_layouts(src: str, out: Path) -> dict[str, tuple[str, dict]]:
    """{layout class: (file, data.layout)} with the events of the hepprune shard ``src``."""
    import pandas as pd

    with h5py.File(src) as f:
        x, true, ref = f["inputs"][()], f["target"][()], f["reference"][()]
        names = [n.decode() if isinstance(n, bytes) else str(n) for n in f.attrs["feature_names"]]
    out.mkdir(parents=True, exist_ok=True)
    files: dict[str, tuple[str, dict]] = {"hepprune schema (2 MiB chunks)": (src, {})}

    def h5(name: str, write) -> str:
        path = out / f"{name}.h5"
        if not path.exists():
            with h5py.File(path.with_suffix(".tmp"), "w") as g:
                write(g)
            path.with_suffix(".tmp").rename(path)
        return str(path)

    def array(**kw):
        def write(g):
            g.create_dataset("X", data=x, **kw).attrs["feature_names"] = names
            g.create_dataset("y", data=true, **kw)
            g.create_dataset("raw", data=ref, **kw)
        return write

    arr = {"format": "array", "inputs": "X", "target": "y", "reference": "raw"}
    files["array, contiguous"] = (h5("array_contiguous", array()), arr)
    files["array, h5py auto chunks"] = (h5("array_chunked", array(chunks=True)), arr)
    files["array, lzf, auto chunks"] = (h5("array_lzf", array(chunks=True, compression="lzf")), arr)

    def columns(g):
        for j, name in enumerate(names):
            g.create_dataset(f"ev/{name}", data=x[:, j], chunks=True)
        g.create_dataset("ev/true", data=true, chunks=True)
        g.create_dataset("ev/raw", data=ref, chunks=True)
    files["columns (one dataset per feature), auto chunks"] = (
        h5("columns", columns), {"format": "columns", "inputs": "ev", "features": names, "target": "true",
                                 "reference": "raw"})

    def compound(g):
        rec = np.empty(len(true), dtype=[*[(n, "f4") for n in names], ("true", "f4"), ("raw", "f4")])
        for j, name in enumerate(names):
            rec[name] = x[:, j]
        rec["true"], rec["raw"] = true, ref
        g.create_dataset("events", data=rec, chunks=True)
    files["compound, auto chunks"] = (h5("compound", compound), {"format": "compound", "inputs": "events",
                                                                   "features": names, "target": "true",
                                                                   "reference": "raw"})
    table = out / "pandas_table.h5"
    if not table.exists():
        frame = pd.DataFrame({**{n: x[:, j] for j, n in enumerate(names)}, "true": true, "raw": ref})
        frame.to_hdf(table.with_suffix(".tmp"), key="ev", format="table")
        table.with_suffix(".tmp").rename(table)
    files["pandas table (PyTables chunks)"] = (str(table), {"format": "pandas", "inputs": "ev", "features": names,
                                                            "target": "true", "reference": "raw"})
    files["array, gzip, auto chunks (slow)"] = (h5("array_gzip", array(chunks=True, compression="gzip")), arr)
    return files


def _cfg(path: str, layout: dict):
    from hepprune.core.config import from_dict

    return from_dict({"data": {"path": path, "batch_size": 512, "shuffle_buffer": 131072,
                               **({"layout": layout} if layout else {})},
                      "model": {"hidden_units": [32, 16, 8]}})


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def measure(path: str, layout: dict, epochs: int, ceiling_ds=None) -> dict:
    """Streamed training on one layout; with ``ceiling_ds`` the in-memory ceiling instead."""
    from hepprune.data import loader
    from hepprune.data.schema import open_dataset

    cfg = _cfg(path, layout)
    info = open_dataset(path, cfg.data.layout)
    reader = loader.Reader(info)
    splits = loader.split_blocks(info, cfg.data.val_fraction, cfg.data.test_fraction)
    rate = loader.ReadRate()
    for block in loader.all_blocks(info):  # the statistics pass's read rate, as the warning measures it
        rate.read(reader, block)
    stats = loader.scan(reader, splits, cfg.data)
    train = splits["train"]
    n, steps = loader.n_events(train), loader.steps(loader.n_events(train), cfg.data.batch_size)
    if ceiling_ds is not None:
        t = _epoch_seconds(_model(cfg, reader.input_shape), ceiling_ds(reader, train, stats, cfg), steps, epochs)
        return {"events_per_s": round(n / t)}
    cpu = []
    for epoch in range(3):  # the pipeline alone: drained in C++, no training step
        ds = loader.as_tf_dataset(reader, train, cfg.data, stats, seed=1, epochs=range(epoch, epoch + 1))
        c0, t0 = _cpu(), time.perf_counter()
        ds.reduce(0, lambda count, *batch: count + 1)
        cpu.append((_cpu() - c0, time.perf_counter() - t0))
    c, w = sorted(cpu)[1]
    ds = loader.as_tf_dataset(reader, train, cfg.data, stats, seed=1, epochs=range(epochs))
    t = _epoch_seconds(_model(cfg, reader.input_shape), ds, steps, epochs)
    reader.close()
    return {"events_per_s": round(n / t), "read_mb_per_s": round(rate.mb_per_s),
            "pipeline_ns_cpu_per_event": round(c / n * 1e9), "pipeline_cores_busy": round(c / w, 2),
            "block_events": info.shards[0].chunk_rows}


def in_memory(reader, train, stats, cfg):
    from hepprune.core import targets
    from hepprune.core.backend import tf
    from hepprune.data import loader

    xs, ts = [], []
    for x, true, ref in loader.iter_batches(reader, train, 65536, standardization=stats):
        xs.append(x)
        ts.append(targets.encode(true, ref, cfg.data))
    return (tf.data.Dataset.from_tensor_slices((np.concatenate(xs), np.concatenate(ts)))
            .batch(cfg.data.batch_size).repeat().prefetch(4))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--events", type=int, default=1_000_000)
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--out", default="/tmp/hepprune-bench")
    args = p.parse_args()
    out = Path(args.out)
    data = out / f"n{args.events}"
    if not list(data.glob("shard_*.h5")):
        subprocess.run([sys.executable, str(ROOT / "data/make_dataset.py"), "--out", str(data), "--events",
                        str(args.events), "--seed", "7"], check=True)
    src = str(sorted(data.glob("shard_*.h5"))[0])
    files = write_layouts(src, out / f"layouts{args.events}")

    from hepprune.data.repack import repack
    from hepprune.data.schema import open_dataset

    gz_path, gz_layout = files["array, gzip, auto chunks (slow)"]
    fast = out / f"layouts{args.events}/repacked"
    shutil.rmtree(fast, ignore_errors=True)
    packed = repack(open_dataset(gz_path, _cfg(gz_path, gz_layout).data.layout), fast)
    files["gzip file after data/repack.py"] = (str(fast / "shard_00000.h5"), {})

    ceiling = [measure(src, {}, args.epochs, ceiling_ds=in_memory)["events_per_s"]]
    rows = {name: measure(path, layout, args.epochs) for name, (path, layout) in files.items()}
    ceiling.append(measure(src, {}, args.epochs, ceiling_ds=in_memory)["events_per_s"])
    mean = sum(ceiling) / len(ceiling)
    for row in rows.values():
        row["over_ceiling"] = round(row["events_per_s"] / mean, 3)
    print(json.dumps({"ceiling_events_per_s": ceiling, "layouts": rows,
                      "repack": {"events": packed.n_events, "seconds": round(packed.seconds, 2),
                                 "events_per_s": round(packed.n_events / packed.seconds),
                                 "mb_per_s": round(packed.mb_per_s)}}, indent=2))


if __name__ == "__main__":
    main()
