"""Schedule derivation: every accepted schedule reaches its target, every other is refused."""

import pytest

from hepprune.core.config import PruneConfig
from hepprune.core.errors import ConfigError
from hepprune.prune.schedule import derive_schedule


@pytest.mark.parametrize("steps_per_epoch", [1, 7, 32, 313, 5000])
@pytest.mark.parametrize("target", [0.3, 0.5, 0.75, 0.95])
def test_auto_frequency_always_reaches_the_target_inside_the_ramp(steps_per_epoch, target):
    cfg = PruneConfig(epochs=13, pruning_epochs=10) if steps_per_epoch == 1 else PruneConfig()
    if steps_per_epoch == 1:  # 10 ramp steps: too few for 10 updates
        with pytest.raises(ConfigError, match="cannot reach target") as err:
            derive_schedule(cfg, target, steps_per_epoch)
        assert "prune.batch_size" in str(err.value)  # the key that works at the pruning stage
        return
    s = derive_schedule(cfg, target, steps_per_epoch)
    assert s.begin_step == cfg.warmup_epochs * steps_per_epoch + 1  # nothing removed during warm-up
    assert s.sparsity_at(s.begin_step - 1) == 0.0
    assert (s.end_step - s.begin_step) % s.frequency == 0  # an update lands exactly on end_step
    assert s.end_step <= (cfg.warmup_epochs + cfg.pruning_epochs) * steps_per_epoch  # inside the ramp epochs
    assert s.sparsity_at(s.end_step) == pytest.approx(target)
    assert s.sparsity_at(s.total_steps) == pytest.approx(target)
    assert s.mask_updates >= cfg.min_mask_updates
    assert 1 <= s.frequency <= 100


def test_the_silent_failure_from_the_issue_is_refused():
    # 3-epoch ramp x 32 steps with tfmot's default frequency 100: one update at sparsity 0.
    cfg = PruneConfig(warmup_epochs=0, pruning_epochs=3, epochs=3, frequency=100)
    with pytest.raises(ConfigError, match=r"prune.frequency=100 gives 0 mask update"):
        derive_schedule(cfg, 0.8, 32)


def test_sparsity_follows_the_polynomial_ramp():
    s = derive_schedule(PruneConfig(warmup_epochs=1, pruning_epochs=2, epochs=4, frequency=10,
                                    min_mask_updates=2, initial_sparsity=0.1, power=1.0), 0.5, 50)
    assert (s.begin_step, s.end_step, s.frequency) == (51, 141, 10)
    assert s.sparsity_at(51) == pytest.approx(0.1)
    assert s.sparsity_at(59) == pytest.approx(0.1)  # no update between mask updates
    assert s.sparsity_at(96) == pytest.approx(0.1 + 0.4 * 40 / 90)
    assert s.sparsity_at(141) == pytest.approx(0.5)


def test_constant_schedule_applies_the_target_at_the_first_pruning_step():
    s = derive_schedule(PruneConfig(schedule="constant"), 0.6, 20)
    assert s.kind == "constant" and s.sparsity_at(s.begin_step) == 0.6 and s.sparsity_at(s.begin_step - 1) == 0


@pytest.mark.parametrize("kwargs, target, fragment", [
    ({}, 1.0, "must be in (0, 1)"),
    ({}, 0.0, "must be in (0, 1)"),
    ({"frequency": 50, "pruning_epochs": 4}, 0.5, "gives 2 mask update"),
    ({"pruning_epochs": 1, "min_mask_updates": 40}, 0.5, "too few"),
])
def test_refusals(kwargs, target, fragment):
    with pytest.raises(ConfigError) as exc:
        derive_schedule(PruneConfig(**kwargs), target, 32)
    assert fragment in str(exc.value)


@pytest.mark.parametrize("raw, fragment", [
    ({"targets": [0.3, 1.5]}, "in (0, 1)"),
    ({"targets": []}, "at least one"),
    ({"warmup_epochs": 5, "pruning_epochs": 6, "epochs": 10}, "exceeds prune.epochs = 10"),
    ({"initial_sparsity": 0.6, "targets": [0.5]}, "not above prune.initial_sparsity"),
    ({"block_size": [1]}, "block_size"),
])
def test_config_refusals(raw, fragment):
    with pytest.raises(ConfigError) as exc:
        PruneConfig(**raw)
    assert fragment in str(exc.value)
