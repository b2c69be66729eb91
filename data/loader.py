"""Streamed input pipeline: never holds the dataset, reads whole chunks.

Why this shape: on this hardware whole-chunk HDF5 reads in shuffled order run
at GB/s, while per-sample random reads are ~1000x slower and per-element
tf.data shuffles 10x slower. So an epoch is:

1. the split's *blocks* (chunk-aligned event ranges of one shard) in an order
   drawn from ``(seed, epoch)``;
2. blocks gathered into a window of about ``shuffle_buffer`` events, permuted
   with numpy and standardised in place;
3. numpy batch slices of the window, the tail carried into the next window,
   so each training event appears exactly once per epoch;
4. a ``tf.data`` generator with prefetch on top (:func:`as_tf_dataset`).

The split is deterministic: the first ``1 - val - test`` of each shard trains,
the next ``val`` validates and the last ``test`` is held out. The held-out
events are never read by training.
"""

from __future__ import annotations

import itertools
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import h5py
import numpy as np

from hepprune.core import targets
from hepprune.core.config import DataConfig
from hepprune.core.errors import DataError
from hepprune.data.layout import Handles
from hepprune.data.schema import DatasetInfo

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class Block:
    shard: int
    start: int
    stop: int

    @property
    def size(self) -> int:
        return self.stop - self.start


def _blocks(index: int, chunk: int, lo: int, hi: int) -> list[Block]:
    """Events [lo, hi) of one shard cut at its chunk boundaries."""
    cuts = [lo, *range((lo // chunk + 1) * chunk, hi, chunk), hi]
    return [Block(index, a, b) for a, b in zip(cuts[:-1], cuts[1:]) if b > a]


def all_blocks(info: DatasetInfo) -> list[Block]:
    return [b for i, s in enumerate(info.shards) for b in _blocks(i, s.chunk_rows, 0, s.n_events)]


def split_blocks(info: DatasetInfo, val_fraction: float, test_fraction: float) -> dict[str, list[Block]]:
    """Chunk-aligned blocks of each split; an empty split is an error."""
    out: dict[str, list[Block]] = {s: [] for s in SPLITS}
    for i, shard in enumerate(info.shards):
        n = shard.n_events
        n_test = int(round(n * test_fraction))
        n_val = int(round(n * val_fraction))
        bounds = {"train": (0, n - n_val - n_test), "val": (n - n_val - n_test, n - n_test),
                  "test": (n - n_test, n)}
        for split, (lo, hi) in bounds.items():
            out[split].extend(_blocks(i, shard.chunk_rows, lo, hi))
    for split in SPLITS:
        if not out[split]:
            raise DataError(f"the {split} split is empty: {info.n_events} events with "
                            f"val_fraction={val_fraction:g}, test_fraction={test_fraction:g}; "
                            "use more events or larger fractions")
    return out


def n_events(blocks: list[Block]) -> int:
    return sum(b.size for b in blocks)


class Reader:
    """Whole-block reads from the shards, file handles kept open."""

    def __init__(self, info: DatasetInfo, view: str = "flat"):
        self.info = info
        self.key = "image" if view == "image" else "inputs"
        self.input_shape = info.input_shape(view)
        self._files: dict[int, Handles] = {}

    def _file(self, shard: int) -> Handles:
        if shard not in self._files:
            path = self.info.shards[shard].path
            try:
                self._files[shard] = Handles(h5py.File(path, "r"))
            except OSError as exc:
                raise DataError(f"{path}: cannot open ({exc.__class__.__name__})") from None
        return self._files[shard]

    def read(self, block: Block) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """A block as new arrays (x, true, reference)."""
        out = (np.empty((block.size, *self.input_shape), np.float32), np.empty(block.size, np.float32),
               np.empty(block.size, np.float32))
        self.read_into(block, out, 0)
        return out

    def read_into(self, block: Block, out: tuple[np.ndarray, np.ndarray, np.ndarray], at: int) -> None:
        """A block into rows at.. of preallocated arrays: no array per read."""
        f = self._file(block.shard)
        try:
            if self.key == "inputs":  # the layout: hepprune's schema or a file of your own, read in place
                self.info.layout.read_into(f, block.start, block.stop, out, at)
                return
            src, dst = np.s_[block.start:block.stop], np.s_[at:at + block.size]
            for name, arr in zip((self.key, "target", "reference"), out):
                f[name].read_direct(arr, src, dst)
        except OSError as exc:  # a damaged file, or a compression filter this h5py lacks (blosc, zstd)
            raise DataError(f"{self.info.shards[block.shard].path}: cannot read events {block.start}-{block.stop} "
                            f"({exc}); a filter other than gzip or lzf needs its plugin (pip install "
                            "hdf5plugin, then import it), else repack the file where it can be read") from None

    def close(self) -> None:
        for handles in self._files.values():
            handles.file.close()
        self._files.clear()

    def __enter__(self) -> Reader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


@dataclass(frozen=True)
class Standardization:
    """Per-feature mean and std of the training inputs (the model sees (x-mean)/std)."""

    mean: np.ndarray
    std: np.ndarray
    feature_names: tuple[str, ...]
    n_events: int

    def apply(self, x: np.ndarray) -> np.ndarray:
        x -= self.mean
        x *= 1.0 / self.std
        return x

    def to_dict(self) -> dict:
        return {"feature_names": list(self.feature_names), "n_events": self.n_events,
                "shape": list(self.mean.shape), "mean": self.mean.reshape(-1).tolist(),
                "std": self.std.reshape(-1).tolist()}

    @classmethod
    def from_dict(cls, d: dict) -> Standardization:
        shape = tuple(d["shape"])
        return cls(np.asarray(d["mean"], np.float32).reshape(shape),
                   np.asarray(d["std"], np.float32).reshape(shape),
                   tuple(d["feature_names"]), int(d["n_events"]))


def check_finite(reader: Reader, block: Block, arrays) -> None:
    for name, arr in zip((reader.key, "target", "reference"), arrays):
        if not np.isfinite(arr).all():
            bad = block.start + int(np.flatnonzero(~np.isfinite(arr.reshape(len(arr), -1)).all(1))[0])
            raise DataError(f"{reader.info.shards[block.shard].path}: NaN or Inf in '{name}' "
                            f"at event {bad}")


EXTREME_FACTOR = 1000.0  # a value this many times the bulk's width beyond it is not physics
BULK_QUANTILES = (0.001, 0.999)
BULK_EVENTS = 10000  # events the bulk of each feature is measured on (the first read)


class ExtremeValues:
    """Counts, per input feature, finite values absurdly far outside the bulk:
    more than EXTREME_FACTOR times the 0.1-99.9 % width beyond it (a 1e30 in a
    few events, a unit error). The bulk is measured on the first events seen;
    one such value can dominate a feature's std and so its standardisation."""

    def __init__(self, names: tuple[str, ...]):
        self.names = names
        self.low: np.ndarray | None = None
        self.high: np.ndarray | None = None
        self.sample: list[np.ndarray] = []
        self.held = 0
        self.counts: np.ndarray | None = None
        self.examples: np.ndarray | None = None

    def update(self, x: np.ndarray) -> None:
        x = np.asarray(x, np.float64).reshape(len(x), -1)
        if self.low is None:
            self.sample.append(x)
            self.held += len(x)
            if self.held < BULK_EVENTS:
                return
            self._set_bulk()
            x = np.concatenate(self.sample)
            self.sample = []
        self._count(x)

    def _set_bulk(self) -> None:
        bulk = np.concatenate(self.sample)
        q_low, q_high = np.quantile(bulk, BULK_QUANTILES, axis=0)
        width = np.maximum(q_high - q_low, np.maximum(np.abs(q_low), np.abs(q_high)))
        # A feature whose bulk is one value (a zero-suppressed tower): its largest magnitude is its scale.
        largest = np.abs(bulk).max(axis=0)
        width = np.where(width > 0, width, np.where(largest > 0, largest, 1.0))
        self.low, self.high = q_low - EXTREME_FACTOR * width, q_high + EXTREME_FACTOR * width
        self.counts = np.zeros(bulk.shape[1], np.int64)
        self.examples = np.zeros(bulk.shape[1])

    def _count(self, x: np.ndarray) -> None:
        assert self.low is not None and self.high is not None and self.counts is not None
        assert self.examples is not None
        outside = (x < self.low) | (x > self.high)
        hits = outside.sum(axis=0)
        for j in np.flatnonzero(hits):
            if not self.counts[j]:
                self.examples[j] = x[np.flatnonzero(outside[:, j])[0], j]
        self.counts += hits

    def found(self) -> dict[str, tuple[int, float]]:
        """{feature: (count, an example value)} of the features with extreme values."""
        if self.low is None and self.sample:  # fewer events than BULK_EVENTS: measure on all of them
            self._set_bulk()
            held, self.sample = np.concatenate(self.sample), []
            self._count(held)
        counts, examples = self.counts, self.examples
        if counts is None or examples is None:
            return {}
        names = self.names if len(self.names) == len(counts) else \
            tuple(f"{self.names[0]}[{j}]" for j in range(len(counts)))
        return {names[j]: (int(counts[j]), float(examples[j])) for j in np.flatnonzero(counts)}


def describe_extremes(found: dict[str, tuple[int, float]]) -> str:
    return "; ".join(f"{name}: {n} value(s), e.g. {v:.3g}" for name, (n, v) in found.items())


# Decoded MB/s below which reading costs more than half a core to feed training
# at the demo's pace (520 k events/s x 212 bytes = 110 MB/s on 2 cores):
# gzip (~180 MB/s) is below, uncompressed (GB/s) above; lzf (200-300 MB/s on
# poorly compressible floats) near it, and repacking gains it 5-15 % too.
SLOW_READ_MB_S = 220.0
MEASURED_BYTES = 16 * 1024 * 1024  # the least read before a rate is worth a warning


class ReadRate:
    """How fast the loader decodes a dataset, measured over one full pass (the
    statistics scan, which reads every event once anyway). Uncompressed or
    lzf files in whole chunks decode at GB/s; gzip at ~200 MB/s, and a
    training epoch then waits for its reads."""

    def __init__(self) -> None:
        self.bytes, self.seconds = 0, 0.0

    def read(self, reader: Reader, block: Block) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``reader.read(block)``, timed."""
        t0 = time.perf_counter()
        arrays = reader.read(block)
        self.seconds += time.perf_counter() - t0
        self.bytes += sum(a.nbytes for a in arrays)
        return arrays

    @property
    def mb_per_s(self) -> float:
        return self.bytes / max(self.seconds, 1e-9) / 1e6

    def warn_if_slow(self, info: DatasetInfo) -> None:
        if self.bytes < MEASURED_BYTES or self.mb_per_s >= SLOW_READ_MB_S:
            return
        log.warning("slow layout: %s decodes at %.0f MB/s (%s), below the %.0f MB/s that keeps training fed; "
                    "rewrite it once into the fast layout (streamed, bounded memory): python data/repack.py "
                    "--config CONFIG --out DIR", info.shards[0].path + (" ..." if len(info.shards) > 1 else ""),
                    self.mb_per_s, describe_storage(info), SLOW_READ_MB_S)


def describe_storage(info: DatasetInfo) -> str:
    """How the first shard stores what the loader reads: its filters and chunk sizes."""
    parts = []
    with h5py.File(info.shards[0].path, "r") as f:
        for name in info.layout.datasets:
            ds = f[name]
            row = ds.dtype.itemsize * int(np.prod(ds.shape[1:], dtype=np.int64))
            chunks = f"chunks of {ds.chunks[0]} events ({ds.chunks[0] * row // 1024} KiB)" if ds.chunks \
                else "contiguous"
            parts.append(f"{name.lstrip('/')}: {ds.compression or 'uncompressed'}, {chunks}")
    return "; ".join(parts[:4]) + (f"; +{len(parts) - 4} more datasets" if len(parts) > 4 else "")


def scan(reader: Reader, splits: dict[str, list[Block]], cfg: DataConfig,
         bad_targets: Callable[[np.ndarray], tuple[np.ndarray, str] | None] | None = None) -> Standardization:
    """One streaming pass over every split: refuse non-finite values and
    targets the task cannot use (``bad_targets`` gives their mask and why),
    and compute the standardisation from the training split only (Chan's
    pairwise mean/variance update in float64, so large datasets stay exact)."""
    count, mean, m2 = 0, None, None
    names = reader.info.feature_names if reader.key == "inputs" else ("image",)
    extremes = ExtremeValues(names)
    rate = ReadRate()
    for split in SPLITS:
        for block in splits[split]:
            x, true, ref = arrays = rate.read(reader, block)
            check_finite(reader, block, arrays)
            problem = bad_targets(true) if bad_targets is not None else None
            if problem is not None:
                bad, why = problem
                raise DataError(f"{reader.info.shards[block.shard].path}: target {true[bad][0]:g} at event "
                                f"{block.start + int(np.flatnonzero(bad)[0])} {why}")
            if split != "train":
                continue
            extremes.update(x)
            xb = x.astype(np.float64)
            nb, mb = len(xb), xb.mean(axis=0)
            m2b = ((xb - mb) ** 2).sum(axis=0)
            if mean is None:
                count, mean, m2 = nb, mb, m2b
            else:
                delta, total = mb - mean, count + nb
                mean = mean + delta * nb / total
                m2 = m2 + m2b + delta ** 2 * count * nb / total
                count = total
    assert mean is not None and m2 is not None  # split_blocks refuses an empty training split
    rate.warn_if_slow(reader.info)
    std = np.sqrt(m2 / count)
    found = extremes.found()
    if found:
        log.warning("extreme input values in the training split, far outside each feature's bulk (%s); they "
                    "dominate the standardisation of those features: check the dataset with "
                    "data/validate_dataset.py --values", describe_extremes(found))
    # A feature that never varies (e.g. an always zero-suppressed tower) must
    # not divide by zero; it then passes through centred, and carries no information.
    constant = std <= 1e-12
    if constant.any():
        flat = np.flatnonzero(constant.reshape(-1))
        what = ([names[i] for i in flat] if reader.key == "inputs" and len(names) == constant.size
                else [f"{names[0]}[{i}]" for i in flat])
        log.warning("%d input feature(s) never vary in the %d training events: %s%s; they are centred, not "
                    "scaled, and carry no information", len(what), count, ", ".join(what[:10]),
                    f" (+{len(what) - 10} more)" if len(what) > 10 else "")
    std = np.where(constant, 1.0, std)
    if not cfg.standardize:  # identity: the network sees raw inputs
        mean, std = np.zeros_like(mean), np.ones_like(std)
    return Standardization(mean.astype(np.float32), std.astype(np.float32), tuple(names), count)


def iter_windows(
    reader: Reader,
    blocks: list[Block],
    batch_size: int,
    *,
    shuffle_buffer: int = 0,
    rng: np.random.Generator | None = None,
    standardization: Standardization | None = None,
) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Yield ``(x, true, reference)`` windows covering ``blocks`` exactly once.

    Every window but the last holds a whole number of batches. With ``rng``
    the block order and the order within each window of about
    ``shuffle_buffer`` events are shuffled; without it, file order is kept
    (evaluation). Memory is bounded by the window, not the dataset.
    """
    order = list(blocks)
    if rng is not None:
        order = [order[i] for i in rng.permutation(len(order))]
    window_target = max(shuffle_buffer, batch_size) if rng is not None else batch_size
    # One gather buffer for the whole pass: blocks are read straight into it
    # (HDF5 writes in place), the window is permuted out of it into a new
    # array and standardised there, in place. The carry (under a batch) goes
    # back to the buffer's front, raw, to be shuffled into the next window.
    # The output is new every window: tf.data may hold it without a copy.
    cap = window_target + max((b.size for b in order), default=0) + batch_size
    buf = (np.empty((cap, *reader.input_shape), np.float32), np.empty(cap, np.float32), np.empty(cap, np.float32))
    fill = carried = 0  # events in the buffer; of them, carried over from the last window

    def flush(final: bool):
        nonlocal fill, carried
        if rng is not None:
            perm = rng.permutation(fill)
            x, t, r = (np.take(b[:fill], perm, axis=0) for b in buf)
        else:
            x, t, r = (b[:fill].copy() for b in buf)
        n_full = fill if final else (fill // batch_size) * batch_size
        for b, part in zip(buf, (x, t, r)):
            b[:fill - n_full] = part[n_full:]
        fill = carried = fill - n_full
        if n_full:
            if standardization is not None:
                standardization.apply(x[:n_full])
            yield x[:n_full], t[:n_full], r[:n_full]

    for block in order:
        reader.read_into(block, buf, fill)
        fill += block.size
        if fill - carried >= window_target:  # a window is window_target new events, as it always was
            yield from flush(final=False)
    if fill:
        yield from flush(final=True)


def iter_batches(reader: Reader, blocks: list[Block], batch_size: int, **kwargs
                 ) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Yield ``(x, true, reference)`` batches; only the epoch's last may be short.
    Arguments as for :func:`iter_windows`."""
    for x, t, r in iter_windows(reader, blocks, batch_size, **kwargs):
        for i in range(0, len(t), batch_size):
            yield x[i:i + batch_size], t[i:i + batch_size], r[i:i + batch_size]


def worker_blocks(blocks: list[Block], worker: int, workers: int,
                  rng: np.random.Generator | None = None) -> list[Block]:
    """One worker's share of ``blocks``: the ``worker``-th of ``workers``
    equal slices of the (shuffled, with ``rng``) block order, a block cut
    where a slice ends. So the workers of a step read disjoint, contiguous
    pieces that together cover the split, and their event counts differ by
    at most one."""
    order = list(blocks)
    if rng is not None:
        order = [order[i] for i in rng.permutation(len(order))]
    total = n_events(order)
    lo, hi = total * worker // workers, total * (worker + 1) // workers
    share, pos = [], 0
    for b in order:
        a, z = max(lo, pos), min(hi, pos + b.size)
        if a < z:
            share.append(Block(b.shard, b.start + a - pos, b.start + z - pos))
        pos += b.size
    return share


def iter_worker_windows(reader: Reader, blocks: list[Block], batch_size: int, n_batches: int, *,
                        worker: int, workers: int, rng: np.random.Generator | None = None,
                        shuffle_buffer: int = 0, standardization: Standardization | None = None
                        ) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Exactly ``n_batches`` full batches of ``batch_size`` from this worker's
    share of ``blocks``, in windows of whole batches.

    Why exactly: every step of a multi-worker strategy is a collective, so
    all workers must run the same number of steps although their shares
    differ by an event and rarely fill the last batch. A worker whose share
    runs out continues with its share again (less than a batch of repeats).
    """
    mine = worker_blocks(blocks, worker, workers, rng)
    if not mine:
        raise DataError(f"{n_events(blocks)} events cannot be shared by {workers} workers; use fewer workers")
    need = n_batches * batch_size
    carry: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
    while need > 0:
        for x, true, ref in iter_windows(reader, mine, batch_size, shuffle_buffer=shuffle_buffer, rng=rng,
                                         standardization=standardization):
            if carry is not None:
                x, true, ref = (np.concatenate([c, w]) for c, w in zip(carry, (x, true, ref)))
                carry = None
            n = min(len(true) // batch_size * batch_size, need)
            if n:
                yield x[:n], true[:n], ref[:n]
                need -= n
            if need == 0:
                return
            if n < len(true):
                carry = x[n:], true[n:], ref[n:]


def epoch_rng(seed: int, epoch: int) -> np.random.Generator:
    """The data order of an epoch depends only on (seed, epoch), so a resumed
    run sees exactly the batches an uninterrupted one would."""
    return np.random.default_rng([seed, epoch])


def steps(n: int, batch_size: int) -> int:
    return -(-n // batch_size)


def as_tf_dataset(reader: Reader, blocks: list[Block], cfg: DataConfig, standardization: Standardization,
                  *, seed: int | None = None, epochs: range | None = None,
                  shard: tuple[int, int, int] | None = None,
                  encode: Callable[[np.ndarray, np.ndarray], np.ndarray] | None = None):
    """A ``tf.data.Dataset`` of ``(x, t)`` batches with ``t`` the encoded target.

    For training pass ``seed`` and the ``epochs`` to produce: the generator
    then yields those epochs back to back (use ``steps_per_epoch``), each
    shuffled by :func:`epoch_rng`. Without ``seed`` one unshuffled pass.

    With ``shard=(worker, workers, steps)`` (multi-worker training) the
    dataset is this worker's endless stream: each epoch (from
    ``epochs.start``) is ``steps`` batches of ``batch_size / workers`` events
    from its share of the blocks (:func:`iter_worker_windows`), grouped
    ``workers`` at a time into ``batch_size`` rows, because the strategy
    splits every element into ``workers`` per-step pieces. Use
    ``steps_per_epoch=steps`` (``validation_steps`` for validation).

    Python runs once per shuffle window, not once per batch: a window is
    yielded as a (k, batch, ...) tensor and split into batches by ``unbatch``
    in C++, while the prefetch in between builds the next window. A
    per-batch generator measured 0.66x the in-memory ceiling here.
    """
    from hepprune.core.backend import tf  # noqa: PLC0415 - deferred: TensorFlow; the numpy side runs without it

    bs = cfg.batch_size
    encode = encode or (lambda true, ref: targets.encode(true, ref, cfg))

    def generate():
        for epoch in (epochs if seed is not None else [None]):
            rng = epoch_rng(seed, epoch) if seed is not None else None
            for x, true, ref in iter_windows(reader, blocks, bs, shuffle_buffer=cfg.shuffle_buffer, rng=rng,
                                             standardization=standardization):
                t = encode(true, ref)
                n_full = (len(t) // bs) * bs
                if n_full:
                    yield x[:n_full].reshape(-1, bs, *x.shape[1:]), t[:n_full].reshape(-1, bs)
                if n_full < len(t):  # the epoch's short last batch
                    yield x[None, n_full:], t[None, n_full:]

    spec = (tf.TensorSpec((None, None, *reader.input_shape), tf.float32),
            tf.TensorSpec((None, None), tf.float32))
    if shard is not None:
        return _worker_dataset(reader, blocks, cfg, standardization, seed, epochs, shard, spec, encode)
    return (tf.data.Dataset.from_generator(generate, output_signature=spec)
            .prefetch(1).unbatch().prefetch(tf.data.AUTOTUNE))


def _worker_dataset(reader, blocks, cfg, standardization, seed, epochs, shard, spec, encode):
    from hepprune.core.backend import tf  # noqa: PLC0415 - deferred: TensorFlow; the numpy side runs without it

    worker, workers, n_steps = shard
    if cfg.batch_size % workers:
        raise DataError(f"data.batch_size {cfg.batch_size} is not divisible by the {workers} workers; "
                        "choose a batch size that is")
    local = cfg.batch_size // workers
    first = epochs.start if epochs is not None else 0

    def generate():
        for epoch in itertools.count(first):
            rng = epoch_rng(seed, epoch) if seed is not None else None
            for x, true, ref in iter_worker_windows(reader, blocks, local, n_steps, worker=worker, workers=workers,
                                                    rng=rng, shuffle_buffer=cfg.shuffle_buffer,
                                                    standardization=standardization):
                t = encode(true, ref)
                yield x.reshape(-1, local, *x.shape[1:]), t.reshape(-1, local)

    def regroup(x, t):  # (workers, local, ...) -> (batch_size, ...)
        return tf.reshape(x, (cfg.batch_size, *reader.input_shape)), tf.reshape(t, (cfg.batch_size,))

    options = tf.data.Options()
    # Each worker already reads only its own share; the strategy must not shard again.
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.OFF
    return (tf.data.Dataset.from_generator(generate, output_signature=spec)
            .prefetch(1).unbatch().batch(workers, drop_remainder=True).map(regroup)
            .prefetch(tf.data.AUTOTUNE).with_options(options))
