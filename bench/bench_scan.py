"""Benchmark: the bit-width scan's cost per (model, width) point, numpy emulation vs compiling every width.

    python bench/bench_scan.py [--run-dir runs/demo] [--models baseline,prune_0.75] [--samples 1000]

Both ways run in one run, on the same models, widths and test events, as the
scan runs them (ptq/quantization.scan). "Compiled" is the scan before
issue 14: every width converted, compiled with g++ (a fresh C-simulation
cache, so every build is paid, two in parallel) and C-simulated.
"Emulated" converts every width, emulates it in numpy, and compiles and
C-simulates the chosen width only, to check it bit for bit (timed apart: once
per model). Outputs at every width must be identical. Target (issue 14):
emulated <= 0.1 x compiled per point.
"""

if __package__ in (None, ""):  # run as `python bench/bench_scan.py`: import from the checkout
    import pathlib
    import sys

    sys.path[0] = str(pathlib.Path(__file__).resolve().parents[1])

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run-dir", default=str(ROOT / "runs/demo"), help="a finished run (make demo writes the default)")
    p.add_argument("--config", default=str(ROOT / "configs/demo.yaml"))
    p.add_argument("--models", default="baseline,prune_0.75")
    p.add_argument("--samples", type=int, default=1000)
    args = p.parse_args()

    from hepprune.core import config as config_mod
    from hepprune.core.models import load_model
    from hepprune.core.runs import resolve_config
    from hepprune.data.prepare import prepare_data, test_events
    from hepprune.ptq import hls_bridge, quantization

    run_dir = Path(args.run_dir)
    cfg = resolve_config(config_mod.load(args.config), "scan", run_dir=run_dir)
    with prepare_data(cfg, run_dir / "baseline") as prepared:
        x_raw, true, ref = test_events(prepared, args.samples)
        std = prepared.standardization
    widths = cfg.ptq.widths
    times: dict[str, float] = {"compiled": 0.0, "emulated": 0.0, "check": 0.0}
    real_check = quantization.check_emulation

    def timed_check(*a, **k):  # the chosen width's compile and C simulation, once per model
        t0 = time.perf_counter()
        try:
            return real_check(*a, **k)
        finally:
            times["check"] += time.perf_counter() - t0

    quantization.check_emulation = timed_check
    for name in args.models.split(","):
        model = load_model(run_dir / name / "model.h5", cfg.model)
        exported, to_input, _ = hls_bridge.firmware_model(model, std, [x_raw])
        x_in = to_input(x_raw)
        results = {}
        for how in ("compiled", "emulated"):
            real = quantization.emulate.emulate
            if how == "compiled":  # the scan as it was: the emulation refuses, every width is compiled
                def refuse(graph, x):
                    raise quantization.emulate.Unsupported("benchmark: compile every width")
                quantization.emulate.emulate = refuse
            os.environ["HEPPRUNE_CACHE_DIR"] = tempfile.mkdtemp(prefix="bench_scan_cache.")  # every build paid
            try:
                with tempfile.TemporaryDirectory() as work:
                    t0 = time.perf_counter()
                    results[how] = quantization.scan(exported, x_in, true, ref, cfg, Path(work), widths)
                    times[how] += time.perf_counter() - t0
            finally:
                quantization.emulate.emulate = real
        for a, b in zip(results["compiled"]["widths"], results["emulated"]["widths"]):
            assert {k: v for k, v in a.items()} == b, (name, a, b)
        assert results["emulated"]["emulation_check"]["events_differing"] == 0
    points = len(args.models.split(",")) * len(widths)
    per = {k: v / points for k, v in times.items()}
    points_only = per["emulated"] - per["check"]
    print(json.dumps({"models": args.models, "widths": widths, "samples": args.samples, "points": points,
                      "compiled_s_per_point": round(per["compiled"], 3),
                      "emulated_s_per_point_without_check": round(points_only, 3),
                      "check_s_per_model": round(times["check"] * len(widths) / points, 2),
                      "ratio_per_point": round(points_only / per["compiled"], 3),
                      "ratio_whole_scan": round(per["emulated"] / per["compiled"], 3)}))


if __name__ == "__main__":
    main()
