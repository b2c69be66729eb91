"""Weight vs neuron pruning on the calorimeter dataset: ``python examples/weight_vs_neuron/run.py --out DIR``.

The same pretrained MLP is pruned two ways: by weight magnitude (tfmot,
unstructured: single weights removed, the layers keep their shape) and by
neuron (whole units with the smallest kernel-column L2 norm removed, the
exported model is physically smaller). Two views:

1. the one-shot sensitivity scan (``prune/sensitivity_scan.py``): both
   methods at 0-95 % without retraining, ``DIR/weight/sensitivity/sensitivity.png``;
2. fine-tuned sweeps at 0.5 and 0.75 (``prune/train_model_prune.py``) in
   ``DIR/weight`` and ``DIR/neuron``, compared in ``DIR/weight_vs_neuron.png``
   (test resolution, parameters and gzip size vs sparsity) and
   ``DIR/weight_vs_neuron.csv/.json``.

Every step is the project's own command; ``--tiny`` is a few epochs on few events (tests).
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
METHODS = {"weight": "unstructured", "neuron": "neuron"}
TINY = ["data.batch_size=128", "data.shuffle_buffer=4096", "train.epochs=3", "prune.epochs=4",
        "prune.warmup_epochs=1", "prune.pruning_epochs=2"]



def collect(out: Path) -> list[dict]:
    rows = []
    for method in METHODS:
        for stage in ["baseline", *sorted(p.name for p in (out / method).glob("prune_*"))]:
            m = json.loads((out / method / stage / "metrics.json").read_text())
            rows.append({"method": "dense" if stage == "baseline" else method,
                         "target": m.get("target_sparsity", 0.0), "sparsity": round(m.get("achieved_sparsity", 0.0), 4),
                         "response": round(m["test"]["response_median"], 4),
                         "resolution": round(m["test"]["resolution_q68"], 4), "params": m["params"],
                         "nonzero_params": m["nonzero_params"], "gzip_bytes": m["gzip_bytes"]})
    return [r for i, r in enumerate(rows) if r["method"] != "dense" or i == 0]  # one dense row


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib  # noqa: PLC0415 - deferred: matplotlib loads only where the plot is drawn

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415 - deferred: matplotlib, after its backend is chosen

    fig, axes = plt.subplots(1, 3, figsize=(12, 3.6))
    dense = rows[0]
    for method, marker in (("weight", "o"), ("neuron", "s")):
        pts = [dense] + [r for r in rows if r["method"] == method]
        s = [r["sparsity"] for r in pts]
        for ax, key in zip(axes, ("resolution", "params", "gzip_bytes")):
            ax.plot(s, [r[key] for r in pts], marker=marker, label=method)
    for ax, label in zip(axes, ("test resolution (q68 of pred/true)", "parameters in the exported model",
                                "gzip bytes of model.h5")):
        ax.set_xlabel("achieved sparsity")
        ax.set_ylabel(label)
        ax.legend()
    fig.suptitle("weight (magnitude) vs neuron pruning, fine-tuned")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def main() -> int:
    args = parse_args(__doc__)
    out = args.out
    sets = overrides(args.tiny, TINY)
    events = "12000" if args.tiny else "200000"

    step("dataset", "data/make_dataset.py", "--out", out / "data", "--events", events, "--seed", "1")
    data = out / "data" / "shard_*.h5"
    step("pretrain", "ptq/trainModel.py", "--config", CONFIG, "--run-dir", out / "weight", "--data", data,
         "--overwrite", *sets)
    step("sensitivity scan", "prune/sensitivity_scan.py", "--config", CONFIG, "--run-dir", out / "weight", *sets)
    shutil.rmtree(out / "neuron", ignore_errors=True)  # the same dense baseline for both methods
    shutil.copytree(out / "weight" / "baseline", out / "neuron" / "baseline")
    for method, granularity in METHODS.items():
        step(f"prune ({method})", "prune/train_model_prune.py", "--config", CONFIG, "--run-dir", out / method,
             "--overwrite", "--set", f"prune.granularity={granularity}", *sets)

    rows = collect(out)
    (out / "weight_vs_neuron.json").write_text(json.dumps(rows, indent=2))
    with open(out / "weight_vs_neuron.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    plot(rows, out / "weight_vs_neuron.png")
    print(f"\n{'method':<8}{'target':>8}{'sparsity':>10}{'response':>10}{'resolution':>12}{'params':>8}"
          f"{'gzip bytes':>12}")
    for r in rows:
        print(f"{r['method']:<8}{r['target']:>8.2f}{r['sparsity']:>10.3f}{r['response']:>10.4f}"
              f"{r['resolution']:>12.4f}{r['params']:>8}{r['gzip_bytes']:>12}")
    print(f"\nwrote {out}/weight_vs_neuron.png, .csv, .json; one-shot scan: {out}/weight/sensitivity/sensitivity.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
