"""Print what a run directory holds: ``python ptq/summarize_run.py RUN``.

Reads each stage's ``metrics.json`` (the marker that the stage finished) and
prints one row per stage, then where the artifacts are.
"""

if __package__ in (None, ""):  # `python ptq/summarize_run.py`: the working directory, not this folder, on sys.path
    import os
    import sys

    sys.path[0] = os.getcwd()

import sys
from collections.abc import Sequence
from pathlib import Path

from hepprune.core import artifacts
from hepprune.core.cli import ArgumentParser, run
from hepprune.core.errors import RunError


def summary_rows(run_dir: Path) -> list[dict]:
    rows = []
    for stage in sorted(p for p in run_dir.iterdir() if p.is_dir()):
        if not artifacts.is_complete(stage):
            continue
        m = artifacts.read_json(stage / artifacts.METRICS_FILE)
        test, ref = m.get("test"), m.get("reference", {})
        if test is None:  # e.g. sensitivity/: listed below the table, not a model
            rows.append({"stage": stage.name, "path": str(stage), "table": False})
            continue
        rows.append({"stage": stage.name, "bits": "float" if m.get("bits") is None else str(m["bits"]),
                     "target": m.get("target_sparsity"),
                     "sparsity": m.get("achieved_sparsity", 0.0 if stage.name == "baseline" else None),
                     "val_loss": m.get("val_loss"), "response": test.get("response_median"),
                     "resolution": test.get("resolution_q68"), "raw_response": ref.get("response_median"),
                     "raw_resolution": ref.get("resolution_q68"), "params": m.get("params"),
                     "nonzero": m.get("nonzero_params"), "gzip_bytes": m.get("gzip_bytes"), "path": str(stage),
                     "accuracy": test.get("accuracy"), "auc_mean": test.get("auc_mean"),
                     "table": True})
    return rows


COLUMNS = ("stage", "bits", "target", "sparsity", "val_loss", "response", "resolution", "raw_response",
           "raw_resolution", "params", "nonzero", "gzip_bytes")
CLASSIFICATION_COLUMNS = ("stage", "bits", "target", "sparsity", "val_loss", "accuracy", "auc_mean", "params",
                          "nonzero", "gzip_bytes")


def format_table(rows: list[dict]) -> str:
    def fmt(v):
        return "-" if v is None else f"{v:.4g}" if isinstance(v, float) else str(v)

    columns = CLASSIFICATION_COLUMNS if any(r.get("accuracy") is not None for r in rows) else COLUMNS

    cells = [columns] + [tuple(fmt(r[c]) for c in columns) for r in rows if r["table"]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(columns))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in cells)


def main(argv: Sequence[str] | None = None) -> int:
    p = ArgumentParser(prog="summarize_run.py", description=__doc__.splitlines()[0])
    p.add_argument("run_dir")
    run_dir = Path(p.parse_args(argv).run_dir)
    if not run_dir.is_dir():
        raise RunError(f"run directory not found: {run_dir}")
    rows = summary_rows(run_dir)
    if not rows:
        raise RunError(f"{run_dir} has no finished stage (no */metrics.json)")
    print(f"\nRun {run_dir.resolve()}\n(sparsity = achieved fraction of zero weights in pruned kernels; "
          "bits = the QAT bit setting; response = median pred/true and resolution = half its 68% width, on the "
          "held-out test split; raw = the reference estimator; for classification, accuracy and the mean "
          "one-vs-rest ROC AUC)\n")
    print(format_table(rows))
    print()
    for r in rows:
        files = sorted(p.name + ("/" if p.is_dir() else "") for p in Path(r["path"]).iterdir())
        print(f"{r['path']}: {' '.join(files)}")
    scans = sorted(p for p in (run_dir / "ptq").glob("*") if artifacts.is_complete(p))
    if scans:
        print("\nBit-width scan (ptq/bitwidth_scan.py): smallest ap_fixed width within tolerance of float")
        for scan_dir in scans:
            m = artifacts.read_json(scan_dir / artifacts.METRICS_FILE)
            project = f"  (I per layer in scan.json; project {scan_dir / 'hls4ml'})" if m["chosen_width"] else ""
            print(f"  {m['model']:<12} W = {m['chosen_width'] or 'none in the scanned range'}{project}")
    hls = run_dir / "hls4ml"
    if hls.is_dir():
        print(f"{hls}: hls4ml projects {' '.join(sorted(p.name + '/' for p in hls.iterdir() if p.is_dir()))}")
    print(f"\nTensorBoard: tensorboard --logdir {run_dir}")
    return 0


def cli() -> None:
    sys.exit(run(main))


if __name__ == "__main__":
    cli()
