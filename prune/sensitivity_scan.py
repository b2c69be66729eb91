"""One-shot sensitivity scan of the baseline: ``python prune/sensitivity_scan.py --config FILE --run-dir RUN``.

Prunes RUN/baseline without retraining at 0, 10, ..., 90 and 95 %, by weight
magnitude and by whole neurons, and writes RUN/sensitivity/ (sensitivity.csv,
sensitivity.json, sensitivity.png, metrics.json). Layers follow the config's
prune.include / prune.exclude, as in the sweep.
"""

if __package__ in (None, ""):  # `python prune/sensitivity_scan.py`: the working directory, not this folder, on sys.path
    import os
    import sys

    sys.path[0] = os.getcwd()

import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from hepprune.core import artifacts, lifecycle
from hepprune.core import config as config_mod
from hepprune.core.cli import ArgumentParser, run
from hepprune.core.errors import ConfigError
from hepprune.core.runs import BASELINE, SENSITIVITY, config_text, resolve_config
from hepprune.core.task import task_of
from hepprune.prune import sensitivity

log = logging.getLogger("hepprune.sensitivity")


def _points(text: str) -> list[float]:
    try:
        values = [float(v) / 100 for v in text.split(",") if v.strip()]
    except ValueError:
        raise ConfigError(f"--points expects comma-separated percentages like 0,50,90, got '{text}'") from None
    if not values or any(not 0 <= v < 1 for v in values):
        raise ConfigError(f"--points: percentages must be in [0, 100), got '{text}'")
    return sorted(values)


def main(argv: Sequence[str] | None = None) -> int:
    p = ArgumentParser(prog="sensitivity_scan.py", description=__doc__.splitlines()[0])
    p.add_argument("--config", required=True)
    p.add_argument("--run-dir", required=True)
    p.add_argument("--data", help="HDF5 file or glob; default: the baseline's dataset")
    p.add_argument("--points", help="pruned percentages, default 0,10,...,90,95")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    args = p.parse_args(argv)
    cfg = config_mod.load(args.config, args.overrides)
    points = _points(args.points) if args.points else sensitivity.DEFAULT_POINTS
    run_dir = Path(args.run_dir)
    cfg = resolve_config(cfg, "sensitivity", run_dir=run_dir, data=args.data)
    task_of(cfg).refuse_pred_true("sensitivity_scan.py")
    out = run_dir / SENSITIVITY
    with lifecycle.stage(out, config_text(cfg), overwrite=True) as stage:
        stage.acquire()
        rows = sensitivity.scan(cfg, run_dir, points)
        baseline = artifacts.read_json(run_dir / BASELINE / artifacts.METRICS_FILE)
        stage.begin()
        stage.finish(sensitivity.write_outputs(rows, out, baseline["val_loss"]))
    print(f"\n{'granularity':<12}{'pruned %':>9}{'val_loss':>12}{'response':>10}{'resolution':>12}")
    for r in rows:
        print(f"{r['granularity']:<12}{100 * r['sparsity']:>9.0f}{r['val_loss']:>12.5g}"
              f"{r['response_median']:>10.4f}{r['resolution_q68']:>12.4f}")
    print(f"\nwrote {out}/sensitivity.csv, sensitivity.json, sensitivity.png")
    return 0


def cli() -> None:
    sys.exit(run(main))


if __name__ == "__main__":
    cli()
