"""A user's pretrained ``.h5`` pruned and exported: ``python examples/user_h5/run.py --out DIR``.

1. ``data/make_dataset.py``: the calorimeter dataset;
2. ``make_user_model.py``: stands in for your own training script and writes ``DIR/user_model.h5``;
3. ``ptq/trainModel.py`` with ``model.from_file``: adopts it as ``DIR/run/baseline`` (checked
   against the dataset, evaluated, nothing trained);
4. ``prune/train_model_prune.py``: prunes it to 0.5 and 0.75;
5. ``prune/analyze_prune.py``: compares the models and exports each to hls4ml (C simulation),
   projects in ``DIR/run/hls4ml/<model>/``;
6. ``ptq/summarize_run.py``: the table.

``--tiny`` is a few epochs on few events (tests).
"""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(ROOT))  # for examples._steps

from examples._steps import overrides, parse_args, step  # noqa: E402

TINY = ["data.batch_size=128", "data.shuffle_buffer=4096", "prune.epochs=4", "prune.warmup_epochs=1",
        "prune.pruning_epochs=2", "analysis.samples=300"]


def main() -> int:
    args = parse_args(__doc__)
    out = args.out
    sets = overrides(args.tiny, TINY)
    user_h5 = out / "user_model.h5"
    run = out / "run"

    step("dataset", "data/make_dataset.py", "--out", out / "data", "--events", "12000" if args.tiny else "200000",
         "--seed", "2")
    data = out / "data" / "shard_*.h5"
    step("your training", HERE / "make_user_model.py", "--data", data, "--out", user_h5,
         "--epochs", "3" if args.tiny else "15")
    common = ["--config", HERE / "config.yaml", "--run-dir", run, "--set", f"model.from_file={user_h5}", *sets]
    step("adopt as baseline", "ptq/trainModel.py", *common, "--data", data, "--overwrite")
    step("prune", "prune/train_model_prune.py", *common, "--overwrite")
    step("analyze + hls4ml", "prune/analyze_prune.py", *common)
    step("summary", "ptq/summarize_run.py", run)
    print(f"\nhls4ml projects (C-simulated; synthesise with --synth where Vitis HLS is installed): {run / 'hls4ml'}/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
