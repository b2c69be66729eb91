"""The run directory: its layout, the finished models in it, and the one config resolution.

A run directory holds one directory per stage (``baseline/``,
``prune_0.50/``, ``analysis/``, ``ptq/<model>/``, ...). Every stage after
pretraining evaluates models on the baseline's dataset, split,
standardisation and target transform, so :func:`resolve_config` takes those
sections from ``RUN/baseline/config.yaml`` instead of trusting the command's
own config.
"""

from __future__ import annotations

import logging
import os
from dataclasses import replace
from pathlib import Path

import yaml

from hepprune.core import artifacts
from hepprune.core import config as config_mod
from hepprune.core.config import Config
from hepprune.core.errors import ConfigError, RunError

log = logging.getLogger(__name__)

# Stage directories and the files every stage directory may hold.
BASELINE = "baseline"
ANALYSIS = "analysis"
SENSITIVITY = "sensitivity"
PTQ = "ptq"
RTL = "rtl"
HLS = "hls4ml"
SLURM = "slurm"
PRUNE_PREFIX = "prune_"
CONFIG_FILE = "config.yaml"
STANDARDIZATION_FILE = "standardization.json"
MODEL_FILE = "model.h5"
HISTORY_FILE = "history.csv"
METRICS_FILE = artifacts.METRICS_FILE

# What each command resolves its config for; see resolve_config.
STAGES = ("pretrain", "prune", "analysis", "scan", "rtl", "sensitivity", "submit")


def format_target(target: float) -> str:
    """A target sparsity as written in directory names and job arrays: two
    decimals, more only where the target has them (0.30, 0.875), so two
    different targets never share a directory."""
    two = f"{target:.2f}"
    return two if float(two) == target else repr(float(target))


def setting_label(bits: int | None) -> str:
    """A bit setting as written in stage names and tables: q6 (QKeras, 6 bits), or float."""
    return "float" if bits is None else f"q{bits}"


def prune_stage(target: float, bits: int | None = None) -> str:
    """prune_0.50 (float), prune_0.50_q6 (6-bit QAT), prune_0.00_q6 (its dense reference)."""
    return f"{PRUNE_PREFIX}{format_target(target)}" + ("" if bits is None else f"_{setting_label(bits)}")


def sweep(cfg: Config, targets: list[float] | None = None, settings: list[int | None] | None = None
          ) -> list[tuple[float, int | None]]:
    """(target, bit setting) of every model the pruning sweep trains: float at
    each target, then each QAT setting's dense reference (target 0) and
    targets. ``targets``/``settings`` select (None: the config's); a target 0
    selects the dense references alone."""
    chosen = [None, *cfg.qat.bits] if settings is None else settings
    pairs: list[tuple[float, int | None]] = []
    for bits in chosen:
        wanted = ([0.0, *cfg.prune.targets] if bits is not None else cfg.prune.targets) if targets is None \
            else targets
        pairs += [(t, bits) for t in wanted if t > 0 or bits is not None]
    return pairs


def config_text(cfg: Config) -> str:
    """The frozen config, as saved in a stage directory and compared on resume."""
    return yaml.safe_dump(cfg.to_dict(), sort_keys=True)


# Config sections read only after a model is trained (its analysis, firmware, search, jobs).
LATER_SECTIONS = ("analysis", "hls", "ptq", "rtl", "frontier", "slurm")


def prune_config_text(cfg: Config, target: float, bits: int | None) -> str:
    """A pruning stage's frozen config: its own target and bit setting only, so
    that adding a target or a setting to the sweep leaves finished stages
    finished (a float stage keeps the default qat section; a dense reference
    has no target), and none of the sections only later stages read."""
    qat = replace(cfg.qat, bits=[bits]) if bits is not None else config_mod.QatConfig()
    raw = replace(cfg, qat=qat).to_dict()
    for later in LATER_SECTIONS:  # they do not change the trained model: retuning them keeps it finished
        raw.pop(later, None)
    if target:
        raw["prune"]["targets"] = [target]
    else:
        del raw["prune"]["targets"]
    return yaml.safe_dump(raw, sort_keys=True)


def load_baseline_config(run_dir: Path) -> Config:
    stage = Path(run_dir) / BASELINE
    model = stage / MODEL_FILE
    if not artifacts.is_complete(stage) or not model.is_file():
        raise RunError(f"missing baseline: {model} not found or unfinished; run ptq/trainModel.py "
                       f"--run-dir {run_dir} first")
    return config_mod.load(stage / CONFIG_FILE)


def _absolute(path: str) -> str:
    return os.path.abspath(os.path.expanduser(path))


def resolve_config(cfg: Config, stage: str, *, run_dir: Path | None = None, data: str | None = None,
                   epochs: int | None = None) -> Config:
    """The config a command runs with, after its command-line options: what
    gets saved in its stage directory and compared on resume.

    ``pretrain`` and ``submit``: ``--data`` (or data.path, made absolute, as
    jobs run elsewhere) and ``--epochs``. Every later stage: the task and the
    data, model and train sections of the run's baseline (``--data`` may
    point at the same dataset elsewhere); ``prune`` also trains with
    ``prune.batch_size`` when set.
    """
    if stage not in STAGES:
        raise ValueError(f"unknown stage {stage!r}; stages: {', '.join(STAGES)}")
    if stage in ("pretrain", "submit"):
        path = data if data is not None else cfg.data.path
        if not path:
            raise ConfigError("no dataset given: set data.path in the config or pass --data GLOB")
        cfg = replace(cfg, data=replace(cfg.data, path=_absolute(path)))
        if epochs is not None:
            if epochs < 1:
                raise ConfigError(f"--epochs must be >= 1, got {epochs}")
            cfg = replace(cfg, train=replace(cfg.train, epochs=epochs))
        return cfg
    if run_dir is None:
        raise ValueError(f"stage {stage} resolves its config against a run directory")
    base = load_baseline_config(run_dir)
    if replace(cfg.data, path="") != replace(base.data, path="") and cfg.data != config_mod.DataConfig():
        log.warning("the config's data section differs from the baseline's; using the baseline's "
                    "(same split, standardisation and target transform)")
    path = data if data is not None else base.data.path
    cfg = replace(cfg, model=base.model, train=base.train, task=base.task,
                  data=replace(base.data, path=str(Path(path).expanduser().absolute())))
    if stage == "prune" and cfg.prune.batch_size:
        cfg = replace(cfg, data=replace(cfg.data, batch_size=cfg.prune.batch_size))
    return cfg


def finished_models(run_dir: Path, names: list[str] | None = None) -> list[tuple[str, Path]]:
    """(name, stage dir) of every finished model in the run (a stage directory
    with model.h5 and metrics.json), baseline first; only ``names`` if given."""
    run_dir = Path(run_dir)
    stages = sorted(p for p in run_dir.glob("*") if p.is_dir() and p.name != BASELINE)
    found = [(s.name, s) for s in [run_dir / BASELINE, *stages]
             if artifacts.is_complete(s) and (s / MODEL_FILE).is_file()]
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
