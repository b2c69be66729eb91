"""Pretrain the dense baseline: ``python ptq/trainModel.py --config FILE --run-dir RUN``.

Writes ``RUN/baseline/`` (model.h5, standardization.json, config.yaml,
history.csv, tensorboard/, checkpoint/, metrics.json). Rerunning the same
command after a kill resumes from the last completed epoch.
"""

if __package__ in (None, ""):  # `python ptq/trainModel.py`: the working directory, not this folder, on sys.path
    import os
    import sys

    sys.path[0] = os.getcwd()

import logging
import sys
from collections.abc import Sequence

from hepprune.core import config as config_mod
from hepprune.core import distribute
from hepprune.core.cli import ArgumentParser, run
from hepprune.core.runs import resolve_config
from hepprune.core.task import task_of
from hepprune.ptq.training import train_baseline

log = logging.getLogger("hepprune.train")


def parse_args(argv: Sequence[str] | None):
    p = ArgumentParser(prog="trainModel.py", description=__doc__.splitlines()[0])
    p.add_argument("--config", required=True, help="experiment YAML (see configs/demo.yaml)")
    p.add_argument("--run-dir", required=True, help="run directory; the baseline goes to RUN/baseline")
    p.add_argument("--data", help="HDF5 file or glob, overriding data.path")
    p.add_argument("--epochs", type=int, help="override train.epochs")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override any config key, e.g. --set train.loss=mse (repeatable)")
    p.add_argument("--overwrite", action="store_true", help="discard an existing RUN/baseline first")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    # Config and paths are validated before TensorFlow is imported.
    cfg = resolve_config(config_mod.load(args.config, args.overrides), "pretrain", data=args.data, epochs=args.epochs)
    distribute.start(cfg)  # joins the other workers before TensorFlow runs anything
    metrics = train_baseline(cfg, args.run_dir, overwrite=args.overwrite)
    if metrics is None:  # a non-chief worker of a multi-worker step
        return 0
    log.info("wrote %s/baseline (val_loss %.5g, test %s)", args.run_dir, metrics["val_loss"],
             task_of(cfg).headline(metrics["test"]))
    return 0


def cli() -> None:
    sys.exit(run(main))


if __name__ == "__main__":
    cli()
