"""Rewrite HDF5 files into the fast layout: ``python data/repack.py --config FILE --out DIR``.

Reads the config's ``data.path`` through its ``data.layout`` (any layout,
compressed or in small chunks) and writes hepprune's own schema,
uncompressed, in ~2 MiB chunks, which streams at GB/s. Shard k of the input
becomes ``DIR/shard_<k>.h5`` with the same events in the same order, so the
train/validation/test split (by position within each shard) is the same.
Streamed block by block: memory is one block, never a file. A file in
hepprune's schema keeps its ``image`` view and ``aux/`` extras. Every output is
written atomically; if any input fails, the outputs of this run are removed.
Then train with ``--set data.path='DIR/shard_*.h5' --set data.layout.format=hepprune``.
"""

if __package__ in (None, ""):  # `python data/repack.py`: the working directory, not this folder, on sys.path
    import os
    import sys

    sys.path[0] = os.getcwd()

import json
import logging
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from hepprune.core import config as config_mod
from hepprune.core.artifacts import atomic_path
from hepprune.core.cli import ArgumentParser, run
from hepprune.core.errors import ConfigError
from hepprune.data import loader
from hepprune.data.layout import chunk_rows
from hepprune.data.schema import SCHEMA_NAME, SCHEMA_VERSION, DatasetInfo, check_out_dir, open_dataset

log = logging.getLogger("hepprune.repack")


@dataclass(frozen=True)
class RepackResult:
    shards: tuple[str, ...]
    n_events: int
    bytes_read: int  # decoded bytes: inputs, target and reference as float32
    seconds: float

    @property
    def mb_per_s(self) -> float:
        return self.bytes_read / max(self.seconds, 1e-9) / 1e6


def _extras(f: h5py.File) -> list[str]:
    """A hepprune shard's datasets beside the flat view: ``image`` and ``aux/*``."""
    names = ["image"] if "image" in f else []
    if isinstance(f.get("aux"), h5py.Group):
        names += [f"aux/{name}" for name in f["aux"]]
    return names


def _like(f: h5py.File, ds: h5py.Dataset, rows: int) -> h5py.Dataset:
    """An empty uncompressed copy of ``ds``'s shape, type and attributes, chunked along events."""
    row_bytes = ds.dtype.itemsize * int(np.prod(ds.shape[1:], dtype=np.int64))
    rows = chunk_rows(row_bytes, len(ds)) if ds.ndim > 1 else rows
    new = f.create_dataset(ds.name, ds.shape, ds.dtype, chunks=(rows, *ds.shape[1:]))
    new.attrs.update(dict(ds.attrs))
    return new


def repack(info: DatasetInfo, out: Path) -> RepackResult:
    """Each shard of ``info`` rewritten as ``out/shard_<k>.h5`` in hepprune's schema."""
    check_out_dir(out)
    written: list[Path] = []
    t0, total = time.perf_counter(), 0
    n_features = len(info.feature_names)
    blocks = loader.all_blocks(info)
    try:
        with loader.Reader(info) as reader:
            for k, shard in enumerate(info.shards):
                path = out / f"shard_{k:05d}.h5"
                rows = chunk_rows(n_features * 4, shard.n_events)
                with atomic_path(path) as tmp, h5py.File(tmp, "w") as f:
                    x = f.create_dataset("inputs", (shard.n_events, n_features), np.float32,
                                         chunks=(rows, n_features))
                    t = f.create_dataset("target", (shard.n_events,), np.float32, chunks=(rows,))
                    r = f.create_dataset("reference", (shard.n_events,), np.float32, chunks=(rows,))
                    with h5py.File(shard.path, "r") as src:
                        extras = _extras(src) if info.layout.format == "hepprune" else []
                        copies = [(src[name], _like(f, src[name], rows)) for name in extras]
                        for block in (b for b in blocks if b.shard == k):
                            xb, tb, rb = reader.read(block)
                            sl = slice(block.start, block.stop)
                            x[sl], t[sl], r[sl] = xb, tb, rb
                            total += xb.nbytes + tb.nbytes + rb.nbytes
                            for old, new in copies:  # the image view and aux/ extras, block by block too
                                new[sl] = old[sl]
                    f.attrs.update({
                        "schema": SCHEMA_NAME, "schema_version": SCHEMA_VERSION,
                        "feature_names": list(info.feature_names), "target_name": info.target_name,
                        "target_unit": info.target_unit, "reference_name": info.reference_name,
                        "source": f"hepprune repack of {shard.path}",
                        "parameters": json.dumps({**info.parameters, "repacked_from": shard.path}, sort_keys=True),
                    })
                    if info.class_names:
                        f.attrs["class_names"] = list(info.class_names)
                written.append(path)
                log.info("%s: %d events from %s", path, shard.n_events, shard.path)
    except BaseException:
        for path in written:  # nothing half-written: a glob over --out must not see a partial dataset
            path.unlink(missing_ok=True)
        raise
    return RepackResult(tuple(str(p) for p in written), info.n_events, total, time.perf_counter() - t0)


def main(argv: Sequence[str] | None = None) -> int:
    p = ArgumentParser(prog="repack.py", description=__doc__.splitlines()[0])
    p.add_argument("--config", help="experiment YAML: its data.path and data.layout say what to read")
    p.add_argument("--data", help="HDF5 file or glob to read instead of data.path")
    p.add_argument("--out", required=True, help="directory for the repacked shards (must hold none yet)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key, e.g. --set data.layout.inputs=X (repeatable)")
    args = p.parse_args(argv)
    cfg = config_mod.load(args.config, args.overrides)
    pattern = args.data or cfg.data.path
    if not pattern:
        raise ConfigError("nothing to repack: give --data GLOB or a config with data.path")
    out = Path(args.out)
    check_out_dir(out)  # before any input is read
    info = open_dataset(pattern, cfg.data.layout)
    result = repack(info, out)
    print(f"repacked {result.n_events} events from {len(result.shards)} shard(s) in {result.seconds:.1f} s "
          f"({result.mb_per_s:.0f} MB/s read and written) into {out}/")
    print(f"train on them with: --set data.path='{out}/shard_*.h5' --set data.layout.format=hepprune")
    return 0


def cli() -> None:
    sys.exit(run(main))


if __name__ == "__main__":
    cli()
