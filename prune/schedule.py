"""Pruning schedules in tfmot's steps, derived so the target is always reached.

How tfmot 0.8 counts: every pruning wrapper increments its own
``pruning_step`` on each training batch, so the n-th batch of the run is
step n (1-based, restored with the checkpoint). The mask is updated only at
steps ``s`` with ``begin_step <= s <= end_step`` and
``(s - begin_step) % frequency == 0``, and PolynomialDecay reaches its final
sparsity only at ``s == end_step``. So ``end_step - begin_step`` must be a
multiple of ``frequency``, ``end_step`` must be a step that is actually
trained, and the ramp needs enough updates to be a ramp. With tfmot's
default frequency of 100, a 3-epoch ramp of 32 steps per epoch updates the
mask once, at sparsity 0, and prunes nothing; this module refuses or avoids
every such schedule instead of letting it silently under-prune.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from hepprune.core.config import PruneConfig
from hepprune.core.errors import ConfigError

TFMOT_DEFAULT_FREQUENCY = 100


@dataclass(frozen=True)
class Schedule:
    kind: str
    initial_sparsity: float
    final_sparsity: float
    power: float
    begin_step: int
    end_step: int
    frequency: int
    steps_per_epoch: int
    total_steps: int

    @property
    def mask_updates(self) -> int:
        """Mask updates in the ramp, counting the one at ``begin_step``."""
        return (self.end_step - self.begin_step) // self.frequency + 1

    def sparsity_at(self, step: int) -> float:
        """The mask's sparsity after training step ``step``: tfmot's rule, in
        plain Python, so tests and logs can check the plan before training."""
        if step < self.begin_step:
            return 0.0
        last = min(step, self.end_step)
        last -= (last - self.begin_step) % self.frequency  # the last update at or before `step`
        if self.kind == "constant":
            return self.final_sparsity
        progress = (last - self.begin_step) / max(1, self.end_step - self.begin_step)
        return self.final_sparsity + (self.initial_sparsity - self.final_sparsity) * (1 - progress) ** self.power

    def to_dict(self) -> dict:
        return {**asdict(self), "mask_updates": self.mask_updates}

    def tfmot(self):
        """The tfmot PruningSchedule object."""
        from hepprune.core.backend import tfmot  # noqa: PLC0415 - deferred: tfmot (~1 s), only where a model is pruned

        sk = tfmot.sparsity.keras
        if self.kind == "constant":
            return sk.ConstantSparsity(self.final_sparsity, self.begin_step, self.end_step, self.frequency)
        return sk.PolynomialDecay(self.initial_sparsity, self.final_sparsity, self.begin_step, self.end_step,
                                  self.power, self.frequency)


def derive_schedule(cfg: PruneConfig, target: float, steps_per_epoch: int) -> Schedule:
    """The schedule for ``target`` given the data's steps per epoch, or a
    ConfigError saying why the configuration cannot reach the target."""
    if not 0 < target < 1:
        raise ConfigError(f"target sparsity must be in (0, 1), got {target:g}")
    if steps_per_epoch < 1:
        raise ConfigError("the training split yields no batches")
    spe = steps_per_epoch
    begin = cfg.warmup_epochs * spe + 1  # the first batch after the warm-up epochs
    ramp_last = (cfg.warmup_epochs + cfg.pruning_epochs) * spe  # the last batch of the ramp epochs
    span = ramp_last - begin
    what = (f"the ramp has {span + 1} steps (prune.pruning_epochs={cfg.pruning_epochs} x {spe} steps per "
            f"epoch)")
    if cfg.schedule == "constant":  # the first update already applies the target
        frequency = cfg.frequency or max(1, min(TFMOT_DEFAULT_FREQUENCY, span // cfg.min_mask_updates or 1))
        n = span // frequency
        return Schedule("constant", target, target, 1.0, begin, begin + n * frequency, frequency, spe,
                        cfg.epochs * spe)
    if cfg.frequency:
        frequency = cfg.frequency
    else:
        frequency = min(TFMOT_DEFAULT_FREQUENCY, span // cfg.min_mask_updates)
        if frequency < 1:
            raise ConfigError(f"prune schedule cannot reach target {target:g}: {what}, too few for "
                              f"prune.min_mask_updates={cfg.min_mask_updates} mask updates; raise "
                              "prune.pruning_epochs, use a smaller prune.batch_size or more events")
    updates = span // frequency
    if updates < cfg.min_mask_updates:
        raise ConfigError(f"prune schedule cannot reach target {target:g}: {what} and prune.frequency="
                          f"{frequency} gives {updates} mask update(s) after the first, fewer than "
                          f"prune.min_mask_updates={cfg.min_mask_updates}; set prune.frequency=0 (auto) "
                          "or lower it, or raise prune.pruning_epochs")
    # End exactly on an update step, inside the ramp epochs: the final sparsity is applied.
    end = begin + updates * frequency
    return Schedule("polynomial", cfg.initial_sparsity, target, cfg.power, begin, end, frequency, spe,
                    cfg.epochs * spe)
