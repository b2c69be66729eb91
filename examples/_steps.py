"""What every example's run.py shares: run one of the project's commands as a step."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def step(name: str, *args) -> None:
    """Run ``python ARGS...`` from the checkout; stop the example, naming the step, if it fails."""
    print(f"\n== {name}: {' '.join(map(str, args))}", flush=True)
    if subprocess.run([sys.executable, *map(str, args)], cwd=ROOT).returncode != 0:
        sys.exit(f"error: the {name} step failed (its message is above)")


def overrides(tiny: bool, settings: list[str]) -> list[str]:
    """``--set key=value`` arguments for ``--tiny`` runs (none otherwise)."""
    return [a for s in (settings if tiny else []) for a in ("--set", s)]


def parse_args(doc: str):
    """``--out DIR`` and ``--tiny``, the options every example takes; ``out`` resolved."""
    p = argparse.ArgumentParser(description=doc.splitlines()[0])
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--tiny", action="store_true", help="a few epochs on little data (what the tests run)")
    args = p.parse_args()
    args.out = Path(args.out).resolve()
    return args
