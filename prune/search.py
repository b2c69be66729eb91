"""The physics frontier: the cheapest model whose response and resolution stay
within tolerance of the baseline's in every bin.

For each bit setting (``frontier.bits``: float, QAT widths) the search
bisects the target sparsity over a grid (``frontier.min_sparsity`` to
``max_sparsity`` in ``step``), assuming a sparser model is never better. The
first probe is the sensitivity scan's guess where one exists: the highest
one-shot sparsity (no fine-tuning) whose validation resolution stays within
tolerance, a point fine-tuning should pass. A candidate is an ordinary pruning
stage (``RUN/prune_<target>[_q<bits>]``), so a finished one is never trained
again, and the analysis, the RTL stage and TensorBoard see it like any other.

A candidate is accepted when no shift against the baseline (response and
resolution, overall and in every bin, paired on the whole test split)
exceeds its tolerance by more than ``analysis.significance`` standard
errors. Its cost is LUT + ``frontier.dsp_luts`` x DSP of its
distributed-arithmetic firmware: Yosys's figures where the RTL stage
synthesised it, the estimate (:mod:`hepprune.ptq.da`) otherwise, and
``cost_source`` says which. The chosen model is the cheapest accepted one.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from hepprune.core import artifacts
from hepprune.core.config import Config
from hepprune.core.fixedpoint import precision_bits
from hepprune.core.metrics import MIN_BIN_EVENTS, tolerance_excess
from hepprune.core.runs import BASELINE, PTQ, RTL, SENSITIVITY, prune_stage, setting_label

log = logging.getLogger(__name__)

FRONTIER = "frontier"
RANGE_EVENTS = 20000  # test events the float candidates' fixed-point ranges are taken from

Pair = tuple[float, int | None]  # (target sparsity, bit setting: None = float)
Failures = dict[str, str]  # candidate name -> why its training did not finish


@dataclass
class Candidate:
    """One trained and judged candidate."""

    name: str
    target: float
    bits: int | None
    sparsity: float | None  # achieved (None: its training did not finish)
    accepted: bool
    beyond: list[str]  # the shifts beyond tolerance, readable
    physics: dict[str, Any]  # response, resolution, shifts and errors, overall and per bin
    cost: dict[str, Any]  # LUT, DSP, total, source, width
    failed: str | None = None  # why its training did not finish (then refused, with no physics or cost)


@dataclass
class Frontier:
    """frontier.json: every candidate, the chosen one and the reference cost."""

    settings: list[str]
    grid: list[float]
    tolerances: dict[str, float]
    reference: dict[str, Any]  # the dense baseline's cost at frontier.reference_width
    candidates: list[Candidate] = field(default_factory=list)
    chosen: str | None = None
    chosen_cost_fraction: float | None = None  # chosen cost / reference cost
    # Per bit setting with no accepted candidate: the one that came closest (smallest worst excess).
    closest: dict[str, dict[str, Any]] = field(default_factory=dict)
    stage: str = FRONTIER


def settings(cfg: Config) -> list[int | None]:
    return [None if b == 0 else b for b in cfg.frontier.bits]


def grid(cfg: Config) -> list[float]:
    """The candidate targets: min_sparsity, +step, ... up to max_sparsity."""
    f = cfg.frontier
    n = int(np.floor((f.max_sparsity - f.min_sparsity) / f.step + 1e-9))
    return sorted({round(f.min_sparsity + k * f.step, 4) for k in range(n + 1)} | {round(f.max_sparsity, 4)})


def sensitivity_seed(cfg: Config, run_dir: Path, targets: list[float]) -> float | None:
    """The grid target nearest the highest one-shot sparsity whose validation
    resolution stays within tolerance of the unpruned model's (None: no scan)."""
    path = run_dir / SENSITIVITY / "sensitivity.json"
    if not path.is_file():
        return None
    kind = "neuron" if cfg.prune.granularity == "neuron" else "weight"
    rows = sorted((r for r in artifacts.read_json(path)["rows"] if r["granularity"] == kind),
                  key=lambda r: r["sparsity"])
    if not rows or rows[0]["sparsity"] != 0:
        return None
    limit = rows[0]["resolution_q68"] * (1 + cfg.analysis.resolution_tolerance)
    within = [r["sparsity"] for r in rows if r["resolution_q68"] <= limit]
    best = max(within, default=0.0)
    return min(targets, key=lambda t: (abs(t - best), t))


def next_target(targets: list[float], results: dict[float, bool], seed: float | None) -> float | None:
    """The next target to try for one bit setting, or None when the bisection is done.

    ``results`` maps tried targets to accepted or not. The search keeps the
    open interval between the highest accepted target and the lowest refused
    one above it; the first probe is ``seed``, then the interval's middle."""
    passed = [t for t, ok in results.items() if ok]
    low = max(passed, default=None)
    high = min((t for t, ok in results.items() if not ok and (low is None or t > low)), default=None)
    inside = [t for t in targets if (low is None or t > low) and (high is None or t < high) and t not in results]
    if not inside:
        return None
    if not results and seed in inside:
        return seed
    return inside[len(inside) // 2]


def float_width(cfg: Config, run_dir: Path) -> int:
    """frontier.width, else the baseline's chosen scan width, else hls.precision's."""
    if cfg.frontier.width:
        return cfg.frontier.width
    scan = run_dir / PTQ / BASELINE
    if artifacts.is_complete(scan):
        chosen = artifacts.read_json(scan / artifacts.METRICS_FILE).get("chosen_width")
        if chosen:
            return int(chosen)
    bits = precision_bits(cfg.hls.precision)
    assert bits is not None  # hls.precision is validated as ap_fixed
    return bits[0]


def synthesised(run_dir: Path, name: str) -> dict[str, Any] | None:
    """The RTL stage's Yosys figures of a model, where it ran."""
    stage = run_dir / RTL / name
    if not artifacts.is_complete(stage):
        return None
    m = artifacts.read_json(stage / artifacts.METRICS_FILE)
    s = m["synthesis"]
    return {"LUT": int(s["LUT"]), "DSP": int(s["DSP"]), "source": f"{s['tool'].split(' (')[0]}, {s['family']}",
            "precision": m.get("precision")}


def with_total(cost: dict[str, Any], dsp_luts: float) -> dict[str, Any]:
    return {**cost, "total": cost["LUT"] + dsp_luts * cost["DSP"]}


def judge(name: str, target: float, bits: int | None, metrics: dict[str, Any], achieved: float,
          cost: dict[str, Any]) -> Candidate:
    keys = ("response_median", "resolution_q68", "response_shift", "response_shift_err", "resolution_shift",
            "resolution_shift_err")
    bins = [{k: b.get(k) for k in ("low", "high", "n_events", *keys[2:], "response_beyond", "resolution_beyond")}
            for b in metrics["binned"]]
    verdict = metrics["physics"]
    return Candidate(name, target, bits, achieved, bool(verdict["ok"]), list(verdict["beyond"]),
                     {**{k: metrics.get(k) for k in keys}, "binned": bins}, cost)


def failed(name: str, target: float, bits: int | None, reason: str) -> Candidate:
    """A candidate whose training did not finish (diverged, missed its
    sparsity, its array task died): refused, so the bisection goes below it."""
    return Candidate(name, target, bits, None, False, [f"training did not finish: {reason}"], {}, {},
                     failed=reason)


def worst_excess(c: Candidate, tolerances: dict[str, float]) -> float:
    """How far the candidate's worst shift (overall or in a bin) lies beyond its
    tolerance, in its standard errors: at most ``significance`` is accepted.
    Infinite for a failed training or a shift that is not a number."""
    if not c.physics:
        return math.inf
    worst = -math.inf
    for row in [c.physics, *c.physics.get("binned", [])]:
        for key, two_sided in (("response", True), ("resolution", False)):
            excess = tolerance_excess(row.get(f"{key}_shift"), tolerances[key], two_sided=two_sided)
            err = row.get(f"{key}_shift_err")
            worst = max(worst, excess / err if err and math.isfinite(excess) else
                        (math.inf if excess > 0 else -math.inf))
    return worst


def run_search(cfg: Config, run_dir: Path, *, train: Callable[[list[Pair]], Failures],
               evaluate: Callable[[str], dict[str, Any]], cost_of: Callable[[str, int | None], dict[str, Any]],
               reference_cost: dict[str, Any]) -> Frontier:
    """The adaptive search. Each round trains the next target of every bit
    setting still open (``train``: locally one after the other, or a SLURM
    array; it returns the candidates that failed), then judges them
    (``evaluate``: a model's metrics with its paired verdict; ``cost_of``: its
    cost). A failed candidate is refused. Rounds repeat until every bisection ends."""
    targets = grid(cfg)
    seed = sensitivity_seed(cfg, run_dir, targets)
    log.info("frontier: targets %s per bit setting (%s); first probe %s", ", ".join(f"{t:g}" for t in targets),
             ", ".join(setting_label(b) for b in settings(cfg)),
             f"{seed:g} (the sensitivity scan)" if seed is not None else "the middle (no sensitivity scan)")
    a = cfg.analysis
    result = Frontier([setting_label(b) for b in settings(cfg)], targets,
                      {"response": a.response_tolerance, "resolution": a.resolution_tolerance,
                       "significance": a.significance, "min_bin_events": MIN_BIN_EVENTS}, reference_cost)
    tried: dict[int | None, dict[float, bool]] = {b: {} for b in settings(cfg)}
    while True:
        pairs = [(t, b) for b in tried if (t := next_target(targets, tried[b], seed)) is not None]
        if not pairs:
            break
        log.info("frontier round: %s", ", ".join(prune_stage(t, b) for t, b in pairs))
        failures = train(pairs)
        for t, b in pairs:
            name = prune_stage(t, b)
            if name in failures:
                tried[b][t] = False
                result.candidates.append(failed(name, t, b, failures[name]))
                log.warning("%s: refused, its training did not finish: %s", name, failures[name])
                continue
            metrics = evaluate(name)
            achieved = float(artifacts.read_json(run_dir / name / artifacts.METRICS_FILE)["achieved_sparsity"])
            cand = judge(name, t, b, metrics, achieved, with_total(cost_of(name, b), cfg.frontier.dsp_luts))
            tried[b][t] = cand.accepted
            result.candidates.append(cand)
            log.info("%s: %s, cost %.0f (%s)", name, "accepted" if cand.accepted else
                     "refused: " + "; ".join(cand.beyond[:3]) + (" ..." if len(cand.beyond) > 3 else ""),
                     cand.cost["total"], cand.cost["source"])
    for label in result.settings:
        group = [c for c in result.candidates if setting_label(c.bits) == label]
        if group and not any(c.accepted for c in group):
            near = min(group, key=lambda c: worst_excess(c, result.tolerances))
            z = worst_excess(near, result.tolerances)
            result.closest[label] = {
                "name": near.name, "sparsity": near.sparsity, "worst_excess_sigma": z if math.isfinite(z) else None,
                "cost_fraction": near.cost["total"] / reference_cost["total"]
                if near.cost and reference_cost["total"] else None}
    accepted = [c for c in result.candidates if c.accepted]
    if accepted:
        best = min(accepted, key=lambda c: (c.cost["total"], -(c.sparsity or 0)))
        result.chosen = best.name
        if reference_cost["total"]:
            result.chosen_cost_fraction = best.cost["total"] / reference_cost["total"]
    return result


def pareto_plot(result: Frontier, path: Path) -> None:
    """Resolution shift against cost: every candidate a point, the accepted ones joined."""
    from hepprune.core.task.base import pyplot, save_figure  # noqa: PLC0415 - deferred: matplotlib

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    for k, label in enumerate(result.settings):
        group = [c for c in result.candidates if setting_label(c.bits) == label and not c.failed]
        if not group:
            continue
        for ok, marker in ((True, "o"), (False, "x")):
            sel = [c for c in group if c.accepted == ok]
            if sel:
                ax.errorbar([c.cost["total"] for c in sel], [100 * (c.physics["resolution_shift"] or 0) for c in sel],
                            yerr=[100 * (c.physics["resolution_shift_err"] or 0) for c in sel], fmt=marker,
                            color=f"C{k}", capsize=2, label=f"{label} {'accepted' if ok else 'refused'}")
        for c in group:
            ax.annotate(f"{c.target:g}", (c.cost["total"], 100 * (c.physics["resolution_shift"] or 0)),
                        textcoords="offset points", xytext=(4, 3), fontsize=7)
    accepted = sorted((c for c in result.candidates if c.accepted), key=lambda c: c.cost["total"])
    if accepted:
        ax.plot([c.cost["total"] for c in accepted], [100 * (c.physics["resolution_shift"] or 0) for c in accepted],
                "-", color="grey", lw=1, label="accepted")
    ax.axhline(100 * result.tolerances["resolution"], color="red", lw=0.8, ls="--", label="resolution tolerance")
    if result.reference.get("total"):
        ax.axvline(result.reference["total"], color="black", lw=0.8, ls=":", label="dense reference")
    ax.set(xlabel="cost (LUT + DSP-equivalents)", ylabel="resolution shift vs baseline [%]", xscale="log")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    ax.set_title("frontier: each point a candidate, labelled with its target")
    save_figure(fig, path)
