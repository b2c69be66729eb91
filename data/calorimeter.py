"""A fast, vectorised toy of a sampling calorimeter for energy-regression studies.

One event is one particle (an e/gamma or a charged pion) hitting a 5x5 tower
window of an ECAL followed by an HCAL, both calibrated to the electromagnetic
scale. The raw sum of the 50 towers is deliberately a *biased*,
resolution-limited estimator of the true energy -- hadron non-compensation
(e/h > 1), event-by-event electromagnetic-fraction fluctuations, lateral
leakage out of the window, pileup and zero suppression all distort it -- so a
network fed with the towers, eta and the number of vertices has something to
learn. ``docs/generator.md`` documents the model and every parameter.

Everything here is pure numpy and deterministic given a ``numpy.random.Generator``;
shards are seeded from ``SeedSequence(seed).spawn(n_shards)`` so the output does
not depend on how many processes write it.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import logging
import math
import multiprocessing
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hepprune.core.errors import ConfigError
from hepprune.data.schema import write_shard

log = logging.getLogger(__name__)

GRID = 5  # towers per side and layer; the central tower is index GRID // 2
LAYERS = ("ecal", "hcal")
N_TOWERS = GRID * GRID
FEATURE_NAMES = tuple(
    [f"{layer}_r{r}c{c}" for layer in LAYERS for r in range(GRID) for c in range(GRID)]
    + ["eta", "npv"]
)
TARGET_NAME = "E_true"
TARGET_UNIT = "GeV"
REFERENCE_NAME = "raw_tower_sum"
SOURCE = "hepprune calorimeter generator"
GENERATOR_VERSION = 1
EVENTS_PER_SHARD = 1_000_000  # default shard size
# Events generated per vectorised step: bounds memory (~0.5 GB of float64
# temporaries). It fixes how the random stream is consumed, so it is part of
# the output's definition and recorded in every shard.
BATCH_EVENTS = 200_000
PID_EM, PID_HADRON = 0, 1
SHARD_NAME = "shard_{:05d}.h5"
_SHARD_RE = re.compile(r"^shard_(\d{5})\.h5$")


@dataclass(frozen=True)
class CalorimeterParams:
    """Every knob of the generator. Energies in GeV, lateral sizes in tower units.

    Construction validates the values and raises :class:`ConfigError` for
    out-of-range ones, so a bad ``--set`` never reaches the physics.
    """

    # --- particle mix and kinematics
    em_fraction_of_particles: float = 0.5  # probability that the particle is an e/gamma
    e_min: float = 1.0  # GeV, lower edge of the true-energy spectrum
    e_max: float = 500.0  # GeV, upper edge
    spectrum_alpha: float = 1.0  # p(E) ~ E^-alpha; 1 = log-uniform
    eta_max: float = 2.5  # eta uniform in [-eta_max, eta_max]
    impact_offset_max: float = 0.5  # towers; impact point uniform in +-this around the centre
    # --- e/gamma: longitudinal leakage of the EM shower into the HCAL
    em_hcal_leak_base: float = 0.01  # mean leaked fraction at 1 GeV
    em_hcal_leak_slope: float = 0.003  # growth of the mean leaked fraction per unit ln(E/GeV)
    em_hcal_leak_shape: float = 2.0  # Gamma shape of the event-by-event leak fluctuation
    # --- hadrons: non-compensation and longitudinal sharing
    e_over_h: float = 1.4  # e/h of the calorimeter (1 = compensating)
    hadron_em_e0: float = 1.0  # GeV, E0 in the Groom/Wigmans f_em = 1 - (E/E0)^(k-1)
    hadron_em_k: float = 0.82  # k in the same formula
    hadron_em_fraction_std: float = 0.1  # event-by-event std of f_em (Beta distributed)
    hadron_ecal_start_prob: float = 0.6  # probability the hadron shower starts in the ECAL
    hadron_ecal_fraction_mean: float = 0.3  # mean fraction deposited in ECAL if it starts there
    hadron_ecal_fraction_std: float = 0.15  # its std (Beta distributed)
    hadron_mip_energy: float = 0.3  # GeV, ECAL deposit of a hadron crossing it as a MIP
    # --- per-layer sampling resolution sigma/E = a/sqrt(E) (+) c
    ecal_stochastic: float = 0.03  # a, GeV^1/2
    ecal_constant: float = 0.003  # c
    hcal_stochastic: float = 1.00  # a, GeV^1/2
    hcal_constant: float = 0.05  # c
    # --- lateral profile: core + halo 2-D Gaussians
    ecal_core_width: float = 0.4  # towers (Gaussian sigma)
    ecal_halo_width: float = 1.0  # towers
    ecal_halo_fraction: float = 0.1  # energy fraction in the halo
    hcal_core_width: float = 0.8  # towers
    hcal_halo_width: float = 1.5  # towers
    hcal_halo_fraction: float = 0.3
    width_fluctuation: float = 0.1  # lognormal sigma of the per-event, per-layer width scale
    # --- pileup
    pileup_mu: float = 20.0  # mean number of pileup interactions (Poisson)
    pileup_ecal_energy: float = 0.005  # GeV per interaction per ECAL tower at eta = 0
    pileup_hcal_energy: float = 0.008  # GeV per interaction per HCAL tower at eta = 0
    pileup_occupancy: float = 0.3  # Gamma shape per interaction per tower (lower = spikier)
    pileup_eta_slope: float = 0.4  # pileup energy scales as 1 + slope*|eta|
    vertex_efficiency: float = 0.7  # probability a pileup vertex is reconstructed
    # --- electronics
    ecal_noise: float = 0.05  # GeV, Gaussian noise per ECAL tower
    hcal_noise: float = 0.1  # GeV, per HCAL tower
    ecal_zs_threshold: float = 0.1  # GeV, ECAL towers below are zeroed
    hcal_zs_threshold: float = 0.3  # GeV, HCAL towers below are zeroed

    def __post_init__(self) -> None:
        problems = list(_range_problems(self))
        if problems:
            raise ConfigError("invalid generator parameter(s): " + "; ".join(problems))

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


_UNIT_INTERVAL = ("em_fraction_of_particles", "hadron_ecal_start_prob", "hadron_ecal_fraction_mean",
                  "ecal_halo_fraction", "hcal_halo_fraction", "vertex_efficiency")
_POSITIVE = ("e_min", "e_over_h", "hadron_em_e0", "hadron_em_k", "em_hcal_leak_shape",
             "ecal_core_width", "ecal_halo_width", "hcal_core_width", "hcal_halo_width",
             "pileup_occupancy")


MAX_PILEUP_MU = 1000  # far beyond any collider; keeps the Poisson draw and tower sums sane


def _range_problems(p: CalorimeterParams) -> Iterable[str]:
    """Yield one short message per out-of-range parameter."""
    for f in dataclasses.fields(p):
        value = getattr(p, f.name)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            yield f"{f.name}={value!r} is not a number"
        elif not math.isfinite(value):
            yield f"{f.name}={value} is not finite"
        elif f.name in _UNIT_INTERVAL and not 0.0 <= value <= 1.0:
            yield f"{f.name}={value} must be in [0, 1]"
        elif f.name in _POSITIVE and value <= 0:
            yield f"{f.name}={value} must be > 0"
        elif f.name not in _UNIT_INTERVAL + _POSITIVE + ("spectrum_alpha",) and value < 0:
            yield f"{f.name}={value} must be >= 0"
    numeric = all(isinstance(getattr(p, n), (int, float)) for n in ("e_min", "e_max"))
    if numeric and p.e_max < p.e_min:
        yield f"e_max={p.e_max} must be >= e_min={p.e_min}"
    if isinstance(p.hadron_em_k, (int, float)) and p.hadron_em_k > 1:
        yield f"hadron_em_k={p.hadron_em_k} must be <= 1 (f_em grows with energy)"
    if isinstance(p.pileup_mu, (int, float)) and p.pileup_mu > MAX_PILEUP_MU:
        yield f"pileup_mu={p.pileup_mu} must be <= {MAX_PILEUP_MU} (the HL-LHC expects ~200)"
    if isinstance(p.impact_offset_max, (int, float)) and p.impact_offset_max > 0.5:
        yield f"impact_offset_max={p.impact_offset_max} must be <= 0.5 (inside the central tower)"


def params_with_overrides(overrides: Iterable[str], base: CalorimeterParams | None = None,
                          ) -> CalorimeterParams:
    """Apply ``name=value`` strings (the CLI's ``--set``) to ``base``.

    Unknown names and unparsable values raise :class:`ConfigError` naming the
    valid parameters, so a typo is reported instead of silently ignored.
    """
    base = base or CalorimeterParams()
    types = {f.name: f.type for f in dataclasses.fields(CalorimeterParams)}
    changes: dict[str, float | int] = {}
    for item in overrides:
        name, sep, text = item.partition("=")
        name = name.strip()
        if not sep or not name:
            raise ConfigError(f"--set expects name=value, got '{item}'")
        if name not in types:
            raise ConfigError(f"unknown generator parameter '{name}'; valid: {', '.join(types)}")
        kind = int if types[name] in (int, "int") else float
        try:
            changes[name] = kind(text.strip())
        except ValueError:
            raise ConfigError(f"--set {name}: '{text}' is not a valid {kind.__name__}") from None
    return dataclasses.replace(base, **changes)


# ---------------------------------------------------------------------------
# numerics


_AS_P = 0.3275911
_AS_A = (0.254829592, -0.284496736, 1.421413741, -1.453152027, 1.061405429)


def erf(x: np.ndarray) -> np.ndarray:
    """Vectorised erf, Abramowitz & Stegun 7.1.26 (|error| < 1.5e-7).

    numpy has no erf and the project avoids scipy; this accuracy is far below
    any tower energy that matters.
    """
    x = np.asarray(x, dtype=np.float64)
    ax = np.abs(x)
    t = 1.0 / (1.0 + _AS_P * ax)
    a1, a2, a3, a4, a5 = _AS_A
    poly = t * (a1 + t * (a2 + t * (a3 + t * (a4 + t * a5))))
    return np.copysign(1.0 - poly * np.exp(-ax * ax), x)


def _beta_with_mean_std(rng: np.random.Generator, mean: np.ndarray, std: float) -> np.ndarray:
    """Beta variates with the given mean(s) and (at most) the given std.

    Where the mean is too close to 0 or 1 for the requested std, the
    concentration is floored at 2, i.e. the std is reduced: a Beta cannot be
    wider than that without piling up at the edges.
    """
    mean = np.clip(np.asarray(mean, dtype=np.float64), 1e-3, 1 - 1e-3)
    if std <= 0:
        return mean.copy()
    concentration = np.maximum(mean * (1 - mean) / std**2 - 1.0, 2.0)
    return rng.beta(mean * concentration, (1 - mean) * concentration)


def sample_power_law(rng: np.random.Generator, n: int, e_min: float, e_max: float,
                     alpha: float) -> np.ndarray:
    """Draw from p(E) ~ E^-alpha on [e_min, e_max] by inverting the CDF."""
    u = rng.random(n)
    if abs(alpha - 1.0) < 1e-9:  # log-uniform: the general formula divides by 0
        return e_min * (e_max / e_min) ** u
    g = 1.0 - alpha
    return (e_min**g + u * (e_max**g - e_min**g)) ** (1.0 / g)


# ---------------------------------------------------------------------------
# physics steps (each takes and returns arrays over events)


def hadron_em_fraction_mean(energy: np.ndarray, p: CalorimeterParams) -> np.ndarray:
    """Groom/Wigmans mean electromagnetic fraction of a hadron shower."""
    return np.clip(1.0 - (energy / p.hadron_em_e0) ** (p.hadron_em_k - 1.0), 0.0, 1.0)


def _longitudinal(rng: np.random.Generator, energy: np.ndarray, is_em: np.ndarray,
                  p: CalorimeterParams) -> tuple[np.ndarray, np.ndarray]:
    """Visible (EM-scale) energy deposited in ECAL and HCAL, before sampling smearing."""
    n = len(energy)
    # e/gamma: a small, fluctuating fraction leaks out of the back of the ECAL.
    leak_mean = np.clip(p.em_hcal_leak_base + p.em_hcal_leak_slope * np.log(energy), 0.0, 1.0)
    leak = np.minimum(rng.gamma(p.em_hcal_leak_shape, leak_mean / p.em_hcal_leak_shape), 1.0)
    # hadrons: only the EM part of the shower is seen at full scale (e/h > 1).
    f_em = _beta_with_mean_std(rng, hadron_em_fraction_mean(energy, p), p.hadron_em_fraction_std)
    response = f_em + (1.0 - f_em) / p.e_over_h
    starts_in_ecal = rng.random(n) < p.hadron_ecal_start_prob
    ecal_share = _beta_with_mean_std(rng, np.full(n, p.hadron_ecal_fraction_mean),
                                     p.hadron_ecal_fraction_std)
    mip = np.minimum(p.hadron_mip_energy, energy)
    had_ecal = np.where(starts_in_ecal, ecal_share * energy * response, mip)
    had_hcal = np.where(starts_in_ecal, (1.0 - ecal_share) * energy * response,
                        (energy - mip) * response)
    ecal = np.where(is_em, (1.0 - leak) * energy, had_ecal)
    hcal = np.where(is_em, leak * energy, had_hcal)
    return ecal, hcal


def smear(rng: np.random.Generator, deposit: np.ndarray, stochastic: float,
          constant: float) -> np.ndarray:
    """Gaussian sampling fluctuation sigma = sqrt(a^2 E + c^2 E^2), clipped at 0."""
    sigma = np.sqrt(stochastic**2 * deposit + (constant * deposit) ** 2)
    return np.maximum(deposit + sigma * rng.standard_normal(len(deposit)), 0.0)


def _cell_fractions(centre: np.ndarray, width: np.ndarray) -> np.ndarray:
    """Fraction of a 1-D Gaussian (per event) falling in each of the GRID towers."""
    edges = np.arange(GRID + 1, dtype=np.float64) - GRID / 2.0  # central tower is [-0.5, 0.5]
    z = (edges[None, :] - centre[:, None]) / (math.sqrt(2.0) * width[:, None])
    return np.maximum(0.5 * np.diff(erf(z), axis=1), 0.0)


def lateral_profile(rng: np.random.Generator, x0: np.ndarray, y0: np.ndarray, core_width: float,
                    halo_width: float, halo_fraction: float, fluctuation: float) -> np.ndarray:
    """(n, GRID, GRID) energy fractions of a core+halo shower centred at (x0, y0).

    Each 2-D Gaussian is separable, so its tower integral is a product of 1-D
    integrals. Fractions sum to < 1: what falls outside the window is lost.
    Rows follow y, columns follow x.
    """
    n = len(x0)
    scale = np.exp(fluctuation * rng.standard_normal(n)) if fluctuation > 0 else np.ones(n)
    core_w, halo_w = core_width * scale, halo_width * scale
    profile = (1.0 - halo_fraction) * (_cell_fractions(y0, core_w)[:, :, None]
                                       * _cell_fractions(x0, core_w)[:, None, :])
    if halo_fraction > 0:
        profile += halo_fraction * (_cell_fractions(y0, halo_w)[:, :, None]
                                    * _cell_fractions(x0, halo_w)[:, None, :])
    return profile


def pileup_towers(rng: np.random.Generator, n_pileup: np.ndarray, eta: np.ndarray,
                  energy_per_interaction: float, p: CalorimeterParams) -> np.ndarray:
    """(n, GRID, GRID) pileup energy: per tower Gamma(N_PU * occupancy, scale).

    A sum of N_PU independent Gamma(occupancy) deposits is Gamma(N_PU * occupancy),
    so one draw per tower suffices; N_PU = 0 gives exactly 0.
    """
    n = len(eta)
    if energy_per_interaction <= 0:
        return np.zeros((n, GRID, GRID))
    mean = energy_per_interaction * (1.0 + p.pileup_eta_slope * np.abs(eta))
    shape = np.broadcast_to((n_pileup * p.pileup_occupancy)[:, None, None], (n, GRID, GRID))
    scale = np.broadcast_to((mean / p.pileup_occupancy)[:, None, None], (n, GRID, GRID))
    return rng.gamma(shape, scale)


def _readout(rng: np.random.Generator, towers: np.ndarray, noise: float,
             threshold: float) -> np.ndarray:
    """Add electronic noise, then zero-suppress; no tower ends up negative."""
    if noise > 0:
        towers = towers + noise * rng.standard_normal(towers.shape)
    return np.where(towers >= max(threshold, 0.0), np.maximum(towers, 0.0), 0.0)


def generate_events(n: int, params: CalorimeterParams, rng: np.random.Generator,
                    image: bool = False) -> dict:
    """Simulate ``n`` events; returns the keyword arguments of ``schema.write_shard``
    that carry data: ``inputs``, ``target``, ``reference``, ``aux`` and, with
    ``image``, ``image`` (n, GRID, GRID, 2).

    Pure: all randomness comes from ``rng``, consumed in a fixed order.
    """
    p = params
    if n < 1:
        raise ConfigError(f"number of events must be >= 1, got {n}")
    is_em = rng.random(n) < p.em_fraction_of_particles
    energy = sample_power_law(rng, n, p.e_min, p.e_max, p.spectrum_alpha)
    eta = rng.uniform(-p.eta_max, p.eta_max, n)
    x0 = rng.uniform(-p.impact_offset_max, p.impact_offset_max, n)
    y0 = rng.uniform(-p.impact_offset_max, p.impact_offset_max, n)

    ecal_dep, hcal_dep = _longitudinal(rng, energy, is_em, p)
    ecal_dep = smear(rng, ecal_dep, p.ecal_stochastic, p.ecal_constant)
    hcal_dep = smear(rng, hcal_dep, p.hcal_stochastic, p.hcal_constant)
    ecal = ecal_dep[:, None, None] * lateral_profile(
        rng, x0, y0, p.ecal_core_width, p.ecal_halo_width, p.ecal_halo_fraction,
        p.width_fluctuation)
    hcal = hcal_dep[:, None, None] * lateral_profile(
        rng, x0, y0, p.hcal_core_width, p.hcal_halo_width, p.hcal_halo_fraction,
        p.width_fluctuation)

    n_pileup = rng.poisson(p.pileup_mu, n) if p.pileup_mu > 0 else np.zeros(n, dtype=np.int64)
    npv = rng.binomial(n_pileup, p.vertex_efficiency) + 1  # + the hard-scatter vertex
    ecal += pileup_towers(rng, n_pileup, eta, p.pileup_ecal_energy, p)
    hcal += pileup_towers(rng, n_pileup, eta, p.pileup_hcal_energy, p)

    ecal = _readout(rng, ecal, p.ecal_noise, p.ecal_zs_threshold)
    hcal = _readout(rng, hcal, p.hcal_noise, p.hcal_zs_threshold)

    inputs = np.empty((n, len(FEATURE_NAMES)), dtype=np.float32)
    inputs[:, :N_TOWERS] = ecal.reshape(n, N_TOWERS)
    inputs[:, N_TOWERS:2 * N_TOWERS] = hcal.reshape(n, N_TOWERS)
    inputs[:, -2] = eta
    inputs[:, -1] = npv
    events = {
        "inputs": inputs,
        "target": energy.astype(np.float32),
        # Sum the stored float32 towers so the reference is exactly what a
        # consumer of the file would compute.
        "reference": inputs[:, :2 * N_TOWERS].sum(axis=1, dtype=np.float64).astype(np.float32),
        "aux": {"pid": np.where(is_em, PID_EM, PID_HADRON).astype(np.int8),
                "n_pileup": n_pileup.astype(np.int32)},
    }
    if image:
        towers = inputs[:, :2 * N_TOWERS].reshape(n, len(LAYERS), GRID, GRID)
        events["image"] = np.ascontiguousarray(towers.transpose(0, 2, 3, 1))
    return events


# ---------------------------------------------------------------------------
# shards


def split_events(n_events: int, n_shards: int) -> list[int]:
    """Events per shard, as even as possible (the first ones get the remainder)."""
    base, extra = divmod(n_events, n_shards)
    return [base + (i < extra) for i in range(n_shards)]


def generate_shard(n: int, params: CalorimeterParams, seed_seq: np.random.SeedSequence,
                   image: bool = False, batch_events: int = BATCH_EVENTS) -> dict:
    """One shard's events, generated ``batch_events`` at a time to bound memory."""
    rng = np.random.default_rng(seed_seq)
    out: dict = {}
    for start in range(0, n, batch_events):
        part = generate_events(min(batch_events, n - start), params, rng, image)
        if not out:
            if len(part["target"]) == n:  # a single batch: nothing to copy
                return part
            # Preallocate rather than concatenate: peak memory stays at one shard plus one batch.
            out = {k: np.empty((n, *v.shape[1:]), v.dtype) for k, v in part.items() if k != "aux"}
            out["aux"] = {k: np.empty(n, v.dtype) for k, v in part["aux"].items()}
        stop = start + len(part["target"])
        for key, value in part.items():
            if key == "aux":
                for name, column in value.items():
                    out["aux"][name][start:stop] = column
            else:
                out[key][start:stop] = value
    return out


@dataclass(frozen=True)
class _ShardTask:
    path: Path
    n_events: int
    seed_seq: np.random.SeedSequence
    params: CalorimeterParams
    image: bool
    batch_events: int
    metadata: dict


def _write_shard_task(task: _ShardTask) -> Path:
    """Generate and write one shard; top-level so spawned workers can run it."""
    events = generate_shard(task.n_events, task.params, task.seed_seq, task.image,
                            task.batch_events)
    path = write_shard(
        task.path, **events,
        feature_names=list(FEATURE_NAMES), target_name=TARGET_NAME, target_unit=TARGET_UNIT,
        reference_name=REFERENCE_NAME, source=SOURCE,
        parameters={**task.params.to_dict(), **task.metadata},
        image_layers=list(LAYERS) if task.image else None,
    )
    log.debug("wrote %s (%d events)", path, task.n_events)
    return path


def default_shards(n_events: int) -> int:
    return max(1, math.ceil(n_events / EVENTS_PER_SHARD))


def _check_no_stale_shards(out_dir: Path, n_shards: int) -> None:
    """Refuse to leave shards of an earlier, larger run beside the new ones:
    a ``DIR/*.h5`` glob would silently mix the two datasets."""
    if not out_dir.is_dir():
        return
    stale = sorted(f.name for f in out_dir.iterdir()
                   if (m := _SHARD_RE.match(f.name)) and int(m.group(1)) >= n_shards)
    if stale:
        shown = ", ".join(stale[:3]) + (" ..." if len(stale) > 3 else "")
        raise ConfigError(f"{out_dir} already holds {len(stale)} shard(s) of another run "
                          f"({shown}); remove them or choose another --out")


def write_dataset(out_dir: str | os.PathLike, n_events: int, seed: int = 0,
                  n_shards: int | None = None, params: CalorimeterParams | None = None,
                  image: bool = False, jobs: int | None = None,
                  batch_events: int = BATCH_EVENTS) -> list[Path]:
    """Generate ``n_events`` into ``out_dir/shard_NNNNN.h5`` and return the paths.

    Shard i is seeded with ``SeedSequence(seed).spawn(n_shards)[i]``, so the
    files are identical for any ``jobs``. ``n_shards`` defaults to one per
    ~1 M events, ``jobs`` to min(2, n_shards).
    """
    params = params or CalorimeterParams()
    if isinstance(n_events, bool) or not isinstance(n_events, int) or n_events < 1:
        raise ConfigError(f"--events must be an integer >= 1, got {n_events}")
    n_shards = default_shards(n_events) if n_shards is None else n_shards
    if not 1 <= n_shards <= n_events:
        raise ConfigError(f"--shards must be between 1 and the number of events ({n_events}), "
                          f"got {n_shards}")
    if seed < 0:
        raise ConfigError(f"--seed must be >= 0, got {seed}")
    jobs = min(2, n_shards) if jobs is None else jobs
    if jobs < 1:
        raise ConfigError(f"--jobs must be >= 1, got {jobs}")
    if batch_events < 1:
        raise ConfigError(f"batch_events must be >= 1, got {batch_events}")
    jobs = min(jobs, n_shards)
    out_dir = Path(out_dir)
    _check_no_stale_shards(out_dir, n_shards)
    out_dir.mkdir(parents=True, exist_ok=True)

    seeds = np.random.SeedSequence(seed).spawn(n_shards)
    tasks = [
        _ShardTask(out_dir / SHARD_NAME.format(i), n, seeds[i], params, image, batch_events,
                   {"seed": seed, "shard_index": i, "n_shards": n_shards,
                    "n_events_total": n_events, "batch_events": batch_events,
                    "generator_version": GENERATOR_VERSION})
        for i, n in enumerate(split_events(n_events, n_shards))
    ]
    log.debug("generating %d events in %d shard(s) with %d job(s)", n_events, n_shards, jobs)
    if jobs == 1:
        return [_write_shard_task(t) for t in tasks]
    # spawn, not fork: safe whatever threads the parent holds, and the same on every OS.
    ctx = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(max_workers=jobs, mp_context=ctx) as pool:
        return list(pool.map(_write_shard_task, tasks))
