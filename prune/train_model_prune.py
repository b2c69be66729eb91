"""Prune the baseline to each target sparsity: ``python prune/train_model_prune.py --config FILE --run-dir RUN``.

For each target writes ``RUN/prune_<target>/`` (model.h5 stripped, the
checkpoint and model with pruning wrappers, history.csv, tensorboard/,
schedule.json, metrics.json). One target can run alone (``--targets 0.5``),
e.g. as one SLURM array task. Rerunning after a kill resumes.
"""

# `python prune/train_model_prune.py`: the working directory, not this folder, on sys.path
if __package__ in (None, ""):
    import os
    import sys

    sys.path[0] = os.getcwd()

import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from hepprune.core import config as config_mod
from hepprune.core import distribute
from hepprune.core.cli import ArgumentParser, parse_bits, parse_targets, run
from hepprune.core.errors import ConfigError
from hepprune.core.runs import format_target, resolve_config, sweep
from hepprune.core.task import task_of
from hepprune.prune import plan

log = logging.getLogger("hepprune.prune")


def main(argv: Sequence[str] | None = None) -> int:
    p = ArgumentParser(prog="train_model_prune.py", description=__doc__.splitlines()[0])
    p.add_argument("--config", required=True, help="experiment YAML; its prune section drives the sweep")
    p.add_argument("--run-dir", required=True, help="run directory holding baseline/ from ptq/trainModel.py")
    p.add_argument("--targets", help="comma-separated target sparsities, overriding prune.targets; 0 selects "
                   "the dense reference of each QAT bit setting")
    p.add_argument("--bits", help="comma-separated bit settings to train, 'float' and/or integers, overriding "
                   "float plus qat.bits (e.g. --bits 6)")
    p.add_argument("--data", help="HDF5 file or glob; default: the baseline's dataset")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override any config key, e.g. --set prune.epochs=12 (repeatable)")
    p.add_argument("--overwrite", action="store_true", help="discard existing prune_<target> directories first")
    args = p.parse_args(argv)
    cfg = config_mod.load(args.config, args.overrides)

    targets = parse_targets(args.targets, allow_zero=True) if args.targets else None
    settings = parse_bits(args.bits) if args.bits else None
    if targets and any(targets):
        raw = cfg.to_dict()
        cfg = config_mod.from_dict({**raw, "prune": {**raw["prune"], "targets": [t for t in targets if t]}})
    if settings is not None and any(b is not None for b in settings):
        raw = cfg.to_dict()
        cfg = config_mod.from_dict({**raw, "qat": {**raw["qat"], "bits": [b for b in settings if b is not None]}})
    if targets and not any(targets) and settings is not None and None in settings:
        raise ConfigError("--targets 0 at --bits float is the baseline itself; target 0 selects the dense "
                          "reference of a QAT bit setting")
    pairs = sweep(cfg, targets, settings)
    if not pairs:
        raise ConfigError("nothing to train: target 0 selects the dense reference of a QAT bit setting, and no "
                          "setting is given (qat.bits or --bits)")
    run_dir = Path(args.run_dir)
    cfg = resolve_config(cfg, "prune", run_dir=run_dir, data=args.data)
    distribute.start(cfg)  # joins the other workers before TensorFlow runs anything
    plan.refuse_early(cfg, run_dir)  # bad layer choices or targets, from model.h5 without TensorFlow
    from hepprune.prune import pruning  # noqa: PLC0415 - deferred: TensorFlow: after the config check

    pruning.check_sweep(cfg, run_dir, pairs)  # refuse before the first model trains
    rows = [pruning.prune_target(cfg, run_dir, t, b, overwrite=args.overwrite) for t, b in pairs]
    for m in filter(None, rows):  # None: a non-chief worker of a multi-worker step
        log.info("%s: target %s achieved %.4f, test %s, gzip %d bytes", m["stage"],
                 format_target(m["target_sparsity"]),
                 m["achieved_sparsity"], task_of(cfg).headline(m["test"]), m["gzip_bytes"])
    return 0


def cli() -> None:
    sys.exit(run(main))


if __name__ == "__main__":
    cli()
