"""The physics frontier: ``python prune/frontier.py --config FILE --run-dir RUN``.

Searches, per bit setting (frontier.bits: float and QAT widths), for the
sparsest target whose response and resolution stay within tolerance of the
baseline's in every bin (paired, on the whole test split), by bisection in
sparsity seeded from the sensitivity scan; then chooses the cheapest
accepted model. Candidates are ordinary RUN/prune_* stages, so a rerun
after a kill trains none twice. Writes RUN/frontier/: frontier.json,
pareto.png, hls4ml/<chosen>/ (its hls4ml project) and metrics.json.
"""

if __package__ in (None, ""):  # `python prune/frontier.py`: the working directory, not this folder, on sys.path
    import os
    import sys

    sys.path[0] = os.getcwd()

import logging
import sys
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from hepprune.core import artifacts, lifecycle
from hepprune.core import config as config_mod
from hepprune.core.cli import ArgumentParser, run
from hepprune.core.config import Config
from hepprune.core.errors import RunError
from hepprune.core.runs import BASELINE, MODEL_FILE, config_text, prune_stage, resolve_config
from hepprune.core.task import task_of
from hepprune.prune import plan, search
from hepprune.prune.search import Failures, Pair

log = logging.getLogger("hepprune.frontier")


Trainer = Callable[[Config, Path, list[Pair]], Failures]  # trains one round's candidates, returns the failed ones


def train_locally(cfg: Config, run_dir: Path, pairs: list[Pair]) -> Failures:
    """One candidate after the other, in this process. A training that does
    not finish (RunError: diverged, missed its sparsity) fails only its own
    candidate; a bad config or a crash still stops the search."""
    from hepprune.prune import pruning  # noqa: PLC0415 - deferred: TensorFlow

    pruning.check_sweep(cfg, run_dir, pairs)
    failures: Failures = {}
    for t, b in pairs:
        try:
            pruning.prune_target(cfg, run_dir, t, b)
        except RunError as exc:
            failures[prune_stage(t, b)] = str(exc)
    return failures


def main(argv: Sequence[str] | None = None, *, trainer: Trainer = train_locally, prog: str = "frontier.py") -> int:
    """The search; ``trainer`` trains each round (slurm/frontier_jobs.py passes SLURM arrays)."""
    p = ArgumentParser(prog=prog, description=__doc__.splitlines()[0])
    p.add_argument("--config", required=True, help="experiment YAML; its frontier and analysis sections drive it")
    p.add_argument("--run-dir", required=True, help="run directory holding baseline/ from ptq/trainModel.py")
    p.add_argument("--data", help="HDF5 file or glob; default: the baseline's dataset")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override any config key, e.g. --set frontier.bits=[8] (repeatable)")
    args = p.parse_args(argv)
    cfg = config_mod.load(args.config, args.overrides)
    run_dir = Path(args.run_dir)
    prune_cfg = resolve_config(cfg, "prune", run_dir=run_dir, data=args.data)
    task_of(prune_cfg).refuse_pred_true("frontier.py")
    analysis_cfg = resolve_config(cfg, "analysis", run_dir=run_dir, data=args.data)
    plan.refuse_early(prune_cfg, run_dir)  # bad layer choices, from model.h5 without TensorFlow
    from hepprune.core.models import load_model  # noqa: PLC0415 - deferred: TensorFlow, after the cheap checks
    from hepprune.data.prepare import HeldOutEvents, prepare_data, test_events  # noqa: PLC0415 - deferred: TensorFlow
    from hepprune.prune import analysis  # noqa: PLC0415 - deferred: TensorFlow, hls4ml
    from hepprune.ptq import da, hls_bridge  # noqa: PLC0415 - deferred: hls4ml

    out = run_dir / search.FRONTIER
    with lifecycle.stage(out, config_text(analysis_cfg), overwrite=True) as stage, \
            prepare_data(analysis_cfg, run_dir / BASELINE) as prepared:
        stage.acquire()
        n_test = len(HeldOutEvents(prepared, None))
        x_raw = test_events(prepared, min(search.RANGE_EVENTS, n_test))[0]  # the fixed-point ranges
        std, width = prepared.standardization, search.float_width(analysis_cfg, run_dir)

        def estimate(name: str, bits: int | None, at: int | None) -> dict[str, Any]:
            model = load_model(run_dir / name / MODEL_FILE, analysis_cfg.model)
            m = da.da_model(model, std, x_raw, analysis_cfg.hls, at)
            return {"LUT": da.lut_estimate(m)["total"], "DSP": 0, "source": "estimate", "precision": m.label}

        def cost_of(name: str, bits: int | None) -> dict[str, Any]:
            """Yosys's figures where the RTL stage built this model at the types it is costed at, else the estimate."""
            built = search.synthesised(run_dir, name)
            label = "trained" if bits else f"ap_fixed<{width},I>"
            return built if built and built.get("precision") == label else estimate(name, bits, None if bits else width)

        def train(pairs: list[Pair]) -> Failures:
            return trainer(prune_cfg, run_dir, pairs)

        f = analysis_cfg.frontier
        reference = search.with_total(estimate(BASELINE, None, f.reference_width), f.dsp_luts)
        result = search.run_search(
            analysis_cfg, run_dir, train=train, cost_of=cost_of, reference_cost=reference,
            evaluate=lambda name: analysis.physics(analysis_cfg, run_dir, [name])[name])
        stage.begin()
        search.pareto_plot(result, out / "pareto.png")
        if result.chosen:
            chosen = next(c for c in result.candidates if c.name == result.chosen)
            model = load_model(run_dir / chosen.name / MODEL_FILE, analysis_cfg.model)
            m = da.da_model(model, std, x_raw, analysis_cfg.hls, None if chosen.bits else width)
            hls_bridge.convert(m.exported, out / "hls4ml" / chosen.name, m.hls, m.precisions).write()
        artifacts.write_json(out / "frontier.json", asdict(result))
        stage.finish({"stage": search.FRONTIER, "chosen": result.chosen, "candidates": len(result.candidates),
                      "chosen_cost_fraction": result.chosen_cost_fraction})
    print_summary(result, out)
    return 0


def print_summary(result: search.Frontier, out: Path) -> None:
    print(f"\n{'candidate':<18}{'sparsity':>9}{'resolution shift':>20}{'response shift':>20}{'cost':>9}  verdict")
    def pm(value: float | None, err: float | None, scale: float, digits: int, unit: str = "") -> str:
        if value is None:
            return "-"
        return f"{scale * value:+.{digits}f}" + (f" ± {scale * err:.{digits}f}" if err is not None else "") + unit

    for c in result.candidates:
        if c.failed:
            print(f"{c.name:<18}{'-':>9}{'-':>20}{'-':>20}{'-':>9}  refused (training did not finish)")
            continue
        ph = c.physics
        res = pm(ph["resolution_shift"], ph["resolution_shift_err"], 100, 1, " %")
        resp = pm(ph["response_shift"], ph["response_shift_err"], 1, 4)
        print(f"{c.name:<18}{c.sparsity:>9.3f}{res:>20}{resp:>20}{c.cost['total']:>9.0f}  "
              + ("accepted" if c.accepted else f"refused ({len(c.beyond)} beyond)"))
    ref = result.reference
    for label, near in result.closest.items():  # a bit setting where nothing passed: how close it came
        z = near["worst_excess_sigma"]
        print(f"closest at {label}: {near['name']}, its worst shift "
              + (f"{z:.1f}σ beyond its tolerance" if z is not None else "not a number (training did not finish)")
              + (f", cost {near['cost_fraction']:.3f} of the dense reference" if near["cost_fraction"] else ""))
    if result.chosen:
        print(f"\nchosen: {result.chosen}, cost {result.chosen_cost_fraction:.3f} of the dense baseline at "
              f"{ref['precision']} ({ref['total']:.0f}); hls4ml project in {out}/hls4ml/{result.chosen}/")
    else:
        print("\nno candidate stays within the tolerances; the closest are in frontier.json")
    print(f"wrote {out}/frontier.json, pareto.png")


def cli() -> None:
    sys.exit(run(main))


if __name__ == "__main__":
    cli()
