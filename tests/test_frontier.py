"""prune/frontier.py as a user runs it, on the tiny finished run (baseline, prune_0.50)."""

import json

import pytest
from conftest import assert_one_line_error

pytestmark = pytest.mark.slow

GRID = ["--set", "frontier.bits=[0]", "--set", "frontier.min_sparsity=0.3", "--set", "frontier.max_sparsity=0.7",
        "--set", "frontier.step=0.2"]


def _frontier(run_cli, run, *args, check_ok=True):
    return run_cli("prune/frontier.py", "--config", run.parent / "config.yaml", "--run-dir", run, *GRID, *args,
                   check_ok=check_ok)


def test_the_frontier_bisects_chooses_the_cheapest_accepted_model_and_resumes(run, run_cli):
    """Loose tolerances: every candidate is accepted, so the bisection climbs
    from the middle (prune_0.50, already trained, is not trained again) to
    0.7, the cheapest; its hls4ml project is written. A second run trains
    nothing and finds the same."""
    trained = (run / "prune_0.50/metrics.json").stat().st_mtime_ns
    loose = ["--set", "analysis.response_tolerance=0.5", "--set", "analysis.resolution_tolerance=0.9"]
    proc = _frontier(run_cli, run, *loose)
    f = json.loads((run / "frontier/frontier.json").read_text())
    assert [c["name"] for c in f["candidates"]] == ["prune_0.50", "prune_0.70"]
    assert (run / "prune_0.50/metrics.json").stat().st_mtime_ns == trained
    assert all(c["accepted"] and not c["beyond"] for c in f["candidates"])
    costs = {c["name"]: c["cost"] for c in f["candidates"]}
    assert costs["prune_0.70"]["total"] < costs["prune_0.50"]["total"] < f["reference"]["total"]
    assert all(c["source"] == "estimate" and c["DSP"] == 0 and c["precision"] == "ap_fixed<16,I>"
               for c in costs.values())  # no scan, no RTL stage: hls.precision's width, estimated
    assert f["chosen"] == "prune_0.70" and f["chosen_cost_fraction"] == pytest.approx(
        costs["prune_0.70"]["total"] / f["reference"]["total"])
    cand = f["candidates"][1]["physics"]
    assert cand["resolution_shift_err"] > 0 and len(cand["binned"]) == 3
    assert (run / "frontier/hls4ml/prune_0.70/firmware/hepprune.cpp").is_file()
    assert (run / "frontier/pareto.png").stat().st_size > 5000
    assert "chosen: prune_0.70" in proc.stdout
    again = _frontier(run_cli, run, *loose)
    assert "already complete" in again.stderr and "Epoch" not in again.stdout
    assert json.loads((run / "frontier/frontier.json").read_text())["candidates"] == f["candidates"]


def test_a_frontier_with_no_acceptable_model_says_so(run, run_cli):
    """Zero tolerance at 0.1 sigma: the middle is refused, so the search goes
    down to 0.3, is refused again, and ends without a chosen model."""
    strict = ["--set", "analysis.response_tolerance=0", "--set", "analysis.resolution_tolerance=0",
              "--set", "analysis.significance=0.1"]
    proc = _frontier(run_cli, run, *strict)
    f = json.loads((run / "frontier/frontier.json").read_text())
    assert [c["name"] for c in f["candidates"]] == ["prune_0.50", "prune_0.30"]
    assert not any(c["accepted"] for c in f["candidates"]) and all(c["beyond"] for c in f["candidates"])
    assert f["chosen"] is None and "no candidate stays within the tolerances" in proc.stdout
    assert not (run / "frontier/hls4ml").exists()
    # How close the setting came: the candidate whose worst shift is the fewest sigma beyond tolerance.
    near = f["closest"]["float"]
    excess = {c["name"]: max(max(abs(r["response_shift"]) / r["response_shift_err"],
                                 r["resolution_shift"] / r["resolution_shift_err"])
                             for r in [c["physics"], *c["physics"]["binned"]]) for c in f["candidates"]}
    assert near["name"] == min(excess, key=excess.get)
    assert near["worst_excess_sigma"] == pytest.approx(excess[near["name"]])
    assert near["cost_fraction"] == pytest.approx(
        next(c["cost"]["total"] for c in f["candidates"] if c["name"] == near["name"]) / f["reference"]["total"])
    assert f"closest at float: {near['name']}, its worst shift {near['worst_excess_sigma']:.1f}σ" in proc.stdout


@pytest.mark.parametrize("args, fragments", [
    (["--set", "analysis.resolution_tolerance=-0.01"], ("analysis.resolution_tolerance",)),
    (["--set", "frontier.min_sparsity=0.9", "--set", "frontier.max_sparsity=0.8"], ("no candidate",)),
    (["--set", "frontier.bits=[]"], ("frontier.bits", "no candidate")),
])
def test_bad_frontier_input_is_one_line(run, run_cli, args, fragments):
    proc = run_cli("prune/frontier.py", "--config", run.parent / "config.yaml", "--run-dir", run, *args)
    assert_one_line_error(proc, *fragments)
    assert not (run / "frontier").exists()


def test_the_bisection_finds_the_last_accepted_target_in_few_probes():
    from hepprune.core.config import Config, FrontierConfig
    from hepprune.prune.search import grid, next_target

    targets = grid(Config(frontier=FrontierConfig()))
    assert targets == [0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95]
    for threshold in (None, *targets):  # every target up to the threshold is accepted
        for seed in (None, 0.7, 0.95):
            results = {}
            while (t := next_target(targets, results, seed)) is not None:
                assert t not in results
                results[t] = threshold is not None and t <= threshold
            if seed is not None:
                assert next(iter(results)) == seed  # the sensitivity scan's guess goes first
            assert len(results) <= 5  # ceil(log2(10)) + the seed
            assert max((t for t, ok in results.items() if ok), default=None) == threshold


def test_a_candidate_whose_training_does_not_finish_is_refused_and_the_search_goes_on(run, run_cli):
    """An absurd learning rate diverges every new candidate (its loss is not
    finite): each is refused with the reason, the bisection goes down from 0.8
    to 0.6, and the search ends without a chosen model instead of a traceback."""
    proc = run_cli("prune/frontier.py", "--config", run.parent / "config.yaml", "--run-dir", run,
                   "--set", "frontier.bits=[0]", "--set", "frontier.min_sparsity=0.6",
                   "--set", "frontier.max_sparsity=0.8", "--set", "frontier.step=0.2",
                   "--set", "prune.learning_rate=1e30")
    f = json.loads((run / "frontier/frontier.json").read_text())
    assert [c["name"] for c in f["candidates"]] == ["prune_0.80", "prune_0.60"]
    for c in f["candidates"]:
        assert not c["accepted"] and "the training loss is nan" in c["failed"] and c["physics"] == {}
        assert c["beyond"] == [f"training did not finish: {c['failed']}"]
    assert f["chosen"] is None and proc.stdout.count("refused (training did not finish)") == 2
    assert f["closest"]["float"]["worst_excess_sigma"] is None  # nothing finished: no shift to be close with
    assert not (run / "prune_0.80/metrics.json").exists()  # left unfinished, so a rerun trains it again
