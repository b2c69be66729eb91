"""The finished models of a run directory and the held-out events to compare them on.

Later stages (the pruning analysis, the bit-width scan) evaluate models on
the baseline's dataset, split and standardisation, so they read the run's
settings from ``RUN/baseline/config.yaml`` here rather than trusting their
own config's data section.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path

import numpy as np
from hepprune.data import loader
from hepprune.ptq import training

from hepprune.core import artifacts
from hepprune.core import config as config_mod
from hepprune.core.config import Config
from hepprune.core.errors import ConfigError, RunError

log = logging.getLogger(__name__)


def load_baseline_config(run_dir: Path) -> Config:
    stage = Path(run_dir) / training.BASELINE
    model = stage / training.MODEL_FILE
    if not artifacts.is_complete(stage) or not model.is_file():
        raise RunError(f"missing baseline: {model} not found or unfinished; run ptq/trainModel.py "
                       f"--run-dir {run_dir} first")
    return config_mod.load(stage / training.CONFIG_FILE)


def resolve_run_config(cfg: Config, run_dir: Path, data: str | None = None) -> Config:
    """``cfg`` with the task and the data, model and train sections of the run's baseline,
    so every later stage sees the same split, standardisation, target
    transform and loss. ``data`` may point at the same dataset elsewhere."""
    base = load_baseline_config(run_dir)
    if (replace(cfg.data, path="") != replace(base.data, path="")) and cfg.data != config_mod.DataConfig():
        log.warning("the config's data section differs from the baseline's; using the baseline's "
                    "(same split, standardisation and target transform)")
    path = data if data is not None else base.data.path
    return replace(cfg, model=base.model, train=base.train, task=base.task,
                   data=replace(base.data, path=str(Path(path).expanduser().absolute())))


def finished_models(run_dir: Path, names: list[str] | None = None) -> list[tuple[str, Path]]:
    """(name, stage dir) of every finished model in the run (a stage directory
    with model.h5 and metrics.json), baseline first; only ``names`` if given."""
    run_dir = Path(run_dir)
    stages = sorted(p for p in run_dir.glob("*") if p.is_dir() and p.name != training.BASELINE)
    found = [(s.name, s) for s in [run_dir / training.BASELINE, *stages]
             if artifacts.is_complete(s) and (s / training.MODEL_FILE).is_file()]
    if not found:
        raise RunError(f"{run_dir} holds no finished model (no baseline/ or prune_*/ with model.h5 and "
                       "metrics.json); run ptq/trainModel.py and prune/train_model_prune.py first")
    if names:
        available = [n for n, _ in found]
        unknown = [n for n in names if n not in available]
        if unknown:
            raise ConfigError(f"unknown model '{unknown[0]}'; models in {run_dir}: {', '.join(available)}")
        found = [(n, p) for n, p in found if n in names]
    return found


def parse_models(text: str | None) -> list[str] | None:
    """``--models a,b``: the names, or None when the option is absent."""
    if text is None:
        return None
    names = [n.strip() for n in text.split(",") if n.strip()]
    if not names:
        raise ConfigError(f"--models expects comma-separated model names like baseline,prune_0.50, got '{text}'")
    return names


def parse_samples(text: str | None, default: int) -> int | None:
    """``--samples N|all``: a positive count, or None for the whole test split."""
    if text is None:
        return default
    if text == "all":
        return None
    try:
        n = int(text)
    except ValueError:
        n = 0
    if n < 1:
        raise ConfigError(f"--samples must be a positive integer or 'all', got '{text}'")
    return n


CHUNK_EVENTS = 1 << 18  # events held at once by a streamed pass: ~55 MB of calorimeter inputs


class HeldOutEvents:
    """The first ``samples`` test events in file order (all if None), as
    (raw inputs, true, reference) chunks of at most ``chunk_events`` events.
    Every iteration reads them from the file again, so a pass over the whole
    test split holds one chunk of inputs at a time, never the split."""

    def __init__(self, prepared: training.Prepared, samples: int | None, chunk_events: int | None = None):
        available = loader.n_events(prepared.splits["test"])
        if samples is not None and samples > available:
            raise ConfigError(f"--samples {samples} is larger than the test split ({available} events); "
                              "use a smaller number or 'all'")
        self.prepared, self.n = prepared, available if samples is None else samples
        self.chunk_events = chunk_events or CHUNK_EVENTS

    def __len__(self) -> int:
        return self.n

    def __iter__(self):
        parts, held, n = [], 0, 0
        batch = min(8192, self.chunk_events)
        for x, t, r in loader.iter_batches(self.prepared.reader, self.prepared.splits["test"], batch):
            take = min(len(t), self.n - n)
            parts.append((x[:take].copy(), t[:take].astype(np.float64), r[:take].astype(np.float64)))
            held, n = held + take, n + take
            if held >= self.chunk_events or n >= self.n:
                yield tuple(np.concatenate(a) for a in zip(*parts))
                parts, held = [], 0
            if n >= self.n:
                return

    def inputs(self) -> "Mapped":
        """The raw inputs alone, re-iterable like the chunks."""
        return Mapped(self, lambda chunk: chunk[0])


class Mapped:
    """``fn`` applied to every item of a re-iterable ``source``, lazily, on every pass."""

    def __init__(self, source, fn):
        self.source, self.fn = source, fn

    def __iter__(self):
        return (self.fn(item) for item in self.source)


def test_events(prepared: training.Prepared, samples: int | None):
    """(raw inputs, true, reference) arrays of the first ``samples`` test events
    in file order (all if None), read block by block."""
    x, t, r = zip(*HeldOutEvents(prepared, samples))
    return np.concatenate(x), np.concatenate(t), np.concatenate(r)
