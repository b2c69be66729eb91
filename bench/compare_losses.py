"""Which loss and target transform train best on the demo data?

    python bench/compare_losses.py [--data 'runs/demo/data/shard_*.h5'] [--out /tmp/hepprune-losses]

Trains the demo config once per (loss, target_transform) pair with the real
ptq/trainModel.py and prints the held-out response and resolution of each:
the evidence behind the defaults in hepprune/core/config.py (see docs/training.md).
"""

import argparse
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default=str(ROOT / "runs/demo/data/shard_*.h5"))
    p.add_argument("--config", default=str(ROOT / "configs/demo.yaml"))
    p.add_argument("--out", default="/tmp/hepprune-losses")
    args = p.parse_args()
    rows = []
    for transform in ("ratio", "log"):
        for loss in ("huber", "mse", "mae"):
            run = Path(args.out) / f"{transform}_{loss}"
            subprocess.run([sys.executable, str(ROOT / "ptq/trainModel.py"), "--config", args.config,
                            "--run-dir", str(run), "--data", args.data, "--overwrite",
                            "--set", f"train.loss={loss}", "--set", f"data.target_transform={transform}"],
                           check=True, capture_output=True)
            m = json.loads((run / "baseline/metrics.json").read_text())
            rows.append((transform, loss, m["test"]["response_median"], m["test"]["resolution_q68"],
                         m["epochs_run"]))
    print("| target_transform | loss | test response (median) | test resolution (q68) | epochs |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(f"| {r[0]} | {r[1]} | {r[2]:.4f} | {r[3]:.4f} | {r[4]} |")


if __name__ == "__main__":
    main()
