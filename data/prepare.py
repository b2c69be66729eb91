"""A run's dataset, ready for a stage: opened, split, checked and standardised.

Every stage that reads events starts here: pretraining (which computes the
standardisation), pruning, the analysis and the scans (which reuse the
baseline's). :class:`Prepared` is a context manager so its HDF5 files are
closed however the stage ends.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from hepprune.core import artifacts
from hepprune.core.config import Config
from hepprune.core.distribute import Worker
from hepprune.core.errors import ConfigError, DataError
from hepprune.core.fit import FitData
from hepprune.core.runs import STANDARDIZATION_FILE
from hepprune.core.task import task_of
from hepprune.data import loader
from hepprune.data.schema import open_dataset

log = logging.getLogger(__name__)

Events = tuple[np.ndarray, np.ndarray, np.ndarray]  # (inputs, true, reference)


@dataclass
class Prepared:
    """The opened dataset, its splits and its standardisation."""

    reader: loader.Reader
    splits: dict[str, list[loader.Block]]
    standardization: loader.Standardization

    @property
    def class_names(self) -> tuple[str, ...]:
        return self.reader.info.class_names

    @property
    def n_outputs(self) -> int:
        return len(self.class_names) or 1

    def events(self) -> dict[str, int]:
        return {s: loader.n_events(b) for s, b in self.splits.items()}

    def steps_per_epoch(self, cfg: Config) -> int:
        return loader.steps(loader.n_events(self.splits["train"]), cfg.data.batch_size)

    def batches(self, split: str, batch_size: int = 8192) -> Iterator[Events]:
        """Standardised (x, true, reference) batches of a split, in file order."""
        return loader.iter_batches(self.reader, self.splits[split], batch_size, standardization=self.standardization)

    def validation(self, cfg: Config) -> Any:
        """The validation split as one unshuffled tf.data pass (model.evaluate's input)."""
        return loader.as_tf_dataset(self.reader, self.splits["val"], cfg.data, self.standardization,
                                    encode=task_of(cfg).encode)

    def fit_data(self, cfg: Config, worker: Worker) -> Callable[[int, int], FitData]:
        """The training and validation datasets from a start epoch to an end
        epoch, for :func:`hepprune.core.fit.fit_resumable`."""

        task = task_of(cfg)

        def make(start: int, epochs: int) -> FitData:
            train_blocks, val_blocks = self.splits["train"], self.splits["val"]
            steps = self.steps_per_epoch(cfg)
            extra: dict[str, Any] = {}
            shards: tuple[Any, Any] = (None, None)
            if worker.distributed:  # fixed step counts on every worker: each step is a collective
                val_steps = loader.steps(loader.n_events(val_blocks), cfg.data.batch_size)
                shards = ((worker.index, worker.workers, steps), (worker.index, worker.workers, val_steps))
                extra["validation_steps"] = val_steps
            train = loader.as_tf_dataset(self.reader, train_blocks, cfg.data, self.standardization, seed=cfg.seed,
                                         epochs=range(start, epochs), shard=shards[0], encode=task.encode)
            val = loader.as_tf_dataset(self.reader, val_blocks, cfg.data, self.standardization, shard=shards[1],
                                       encode=task.encode)
            return FitData(train, val, steps, extra)

        return make

    def close(self) -> None:
        self.reader.close()

    def __enter__(self) -> Prepared:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _check_same_inputs(std: loader.Standardization, reader: loader.Reader, saved: Path) -> None:
    """A dataset given to a later stage (``--data``) must have the inputs the
    run's model was trained on, or the model would fail deep inside TensorFlow."""
    info = reader.info
    if reader.key == "inputs":
        have, want = tuple(info.feature_names), tuple(std.feature_names)
        if have != want:
            diff = next((f"'{w}' vs '{h}'" for w, h in zip(want, have) if w != h), "")
            raise DataError(f"{info.shards[0].path} has {len(have)} input features, the run was trained on "
                            f"{len(want)} ({saved}){'; first difference: ' + diff if diff else ''}; "
                            "use the baseline's dataset or one with the same features")
    elif np.shape(std.mean) != tuple(info.image_shape or ()):
        raise DataError(f"{info.shards[0].path} has images of shape {info.image_shape}, which the run's "
                        f"standardisation ({saved}) does not fit; use the baseline's dataset")


def prepare_data(cfg: Config, stage_dir: Path | None = None) -> Prepared:
    """Validate the dataset, split it, and scan it once for values the task
    cannot use and for the standardisation (reused from ``stage_dir`` when a
    run already computed it)."""
    info = open_dataset(cfg.data.path, cfg.data.layout)
    task = task_of(cfg)
    task.check_dataset(info.class_names, info.shards[0].path)
    view = "image" if cfg.model.type == "cnn" else "flat"
    reader = loader.Reader(info, view)
    try:
        splits = loader.split_blocks(info, cfg.data.val_fraction, cfg.data.test_fraction)
        saved = stage_dir / STANDARDIZATION_FILE if stage_dir else None
        if saved is not None and saved.is_file():
            std = loader.Standardization.from_dict(artifacts.read_json(saved))
            _check_same_inputs(std, reader, saved)
        else:
            log.info("scanning %d events in %d shard(s) for NaN/Inf and input statistics",
                     info.n_events, len(info.shards))
            std = loader.scan(reader, splits, cfg.data, lambda true: task.bad_targets(true, len(info.class_names)))
    except BaseException:
        reader.close()
        raise
    log.info("split: %s events", ", ".join(f"{s} {loader.n_events(b)}" for s, b in splits.items()))
    return Prepared(reader, splits, std)


CHUNK_EVENTS = 1 << 18  # events held at once by a streamed pass: ~55 MB of calorimeter inputs


class HeldOutEvents:
    """The first ``samples`` test events in file order (all if None), as
    (raw inputs, true, reference) chunks of at most ``chunk_events`` events.
    Every iteration reads them from the file again, so a pass over the whole
    test split holds one chunk of inputs at a time, never the split."""

    def __init__(self, prepared: Prepared, samples: int | None, chunk_events: int | None = None):
        available = loader.n_events(prepared.splits["test"])
        if samples is not None and samples > available:
            raise ConfigError(f"--samples {samples} is larger than the test split ({available} events); "
                              "use a smaller number or 'all'")
        self.prepared, self.n = prepared, available if samples is None else samples
        self.chunk_events = chunk_events or CHUNK_EVENTS

    def __len__(self) -> int:
        return self.n

    def __iter__(self) -> Iterator[Events]:
        parts: list[Events] = []
        held, n = 0, 0
        batch = min(8192, self.chunk_events)
        for x, t, r in loader.iter_batches(self.prepared.reader, self.prepared.splits["test"], batch):
            take = min(len(t), self.n - n)
            parts.append((x[:take].copy(), t[:take].astype(np.float64), r[:take].astype(np.float64)))
            held, n = held + take, n + take
            if held >= self.chunk_events or n >= self.n:
                xs, ts, rs = zip(*parts)
                yield np.concatenate(xs), np.concatenate(ts), np.concatenate(rs)
                parts, held = [], 0
            if n >= self.n:
                return

    def inputs(self) -> Mapped:
        """The raw inputs alone, re-iterable like the chunks."""
        return Mapped(self, lambda chunk: chunk[0])


class Mapped:
    """``fn`` applied to every item of a re-iterable ``source``, lazily, on every pass."""

    def __init__(self, source: Iterable[Any], fn: Callable[[Any], Any]):
        self.source, self.fn = source, fn

    def __iter__(self) -> Iterator[Any]:
        return (self.fn(item) for item in self.source)


def test_events(prepared: Prepared, samples: int | None) -> Events:
    """(raw inputs, true, reference) arrays of the first ``samples`` test events
    in file order (all if None), read block by block."""
    x, t, r = zip(*HeldOutEvents(prepared, samples))
    return np.concatenate(x), np.concatenate(t), np.concatenate(r)
