"""Prune a small CNN on real handwritten digits two ways: ``python examples/digits_cnn/run.py --out DIR``.

A classic pruning study (magnitude pruning of an MNIST CNN, comparing
accuracy and gzip size with the dense model) on data available offline:
scikit-learn's 8x8 digits. The dense CNN is pretrained once, then pruned to
80 % sparsity with the polynomial schedule starting at 50 % and at 30 %.
Every step is the project's own command; this script only strings them
together and prints the comparison (also in DIR/digits_pruning.json/.csv).
``--tiny`` runs a few epochs, for tests.
"""

from __future__ import annotations

import csv
import json
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))  # for examples._steps

from examples._steps import overrides, parse_args, step  # noqa: E402

CONFIG = Path(__file__).resolve().parent / "config.yaml"
STARTS = (0.5, 0.3)
TINY = ["train.epochs=3", "prune.epochs=4", "prune.warmup_epochs=1", "prune.pruning_epochs=2"]


def main() -> int:
    args = parse_args(__doc__)
    out = args.out
    sets = overrides(args.tiny, TINY)
    runs = {start: out / f"init{start:g}" for start in STARTS}
    first = runs[STARTS[0]]

    step("convert", "data/convert_digits.py", "--out", out / "data")
    step("pretrain", "ptq/trainModel.py", "--config", CONFIG, "--run-dir", first, "--data", out / "data/digits.h5",
         "--overwrite", *sets)
    for start, run in runs.items():
        if run != first:  # the same dense baseline for both schedules
            shutil.rmtree(run, ignore_errors=True)
            shutil.copytree(first / "baseline", run / "baseline")
        step(f"prune from {start:g}", "prune/train_model_prune.py", "--config", CONFIG, "--run-dir", run,
             "--overwrite", "--set", f"prune.initial_sparsity={start}", *sets)
        step(f"analyze from {start:g}", "prune/analyze_prune.py", "--config", CONFIG, "--run-dir", run,
             "--samples", "all", *(["--models", "prune_0.80"] if run != first else []))

    rows = []
    for start, run in runs.items():
        summary = json.loads((run / "analysis/summary.json").read_text())
        for m in summary["models"]:
            rows.append({"model": "dense" if m["name"] == "baseline" else f"pruned {start:g} -> 0.8",
                         "sparsity": round(m["sparsity"], 4), "accuracy": round(m["accuracy"], 4),
                         "hls_accuracy": round(m["hls_accuracy"], 4) if "hls_accuracy" in m else None,
                         "gzip_bytes": m["gzip_bytes"], "nonzero_params": m["nonzero_params"],
                         "test_events": summary["samples"]})
    dense = rows[0]["gzip_bytes"]
    for r in rows:
        r["gzip_vs_dense"] = round(r["gzip_bytes"] / dense, 3)
    (out / "digits_pruning.json").write_text(json.dumps(rows, indent=2))
    with open(out / "digits_pruning.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    print(f"\n{'model':<20}{'sparsity':>9}{'accuracy':>10}{'hls acc.':>10}{'gzip bytes':>12}{'vs dense':>10}")
    for r in rows:
        hls = f"{r['hls_accuracy']:.4f}" if r["hls_accuracy"] is not None else "-"
        print(f"{r['model']:<20}{r['sparsity']:>9.3f}{r['accuracy']:>10.4f}{hls:>10}{r['gzip_bytes']:>12}"
              f"{r['gzip_vs_dense']:>10.3f}")
    print(f"\n{rows[0]['test_events']} held-out test images; wrote {out}/digits_pruning.json and .csv; "
          f"per-run reports in {', '.join(str(r / 'analysis/report.md') for r in runs.values())}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
