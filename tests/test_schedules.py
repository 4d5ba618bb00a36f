"""Mixture and LR schedules are pure functions of the step with the shapes users configure."""
import numpy as np
import pytest

from midsweep.config import ConfigError, RunConfig, StageConfig, TrainConfig
from midsweep.data.sampler import MixtureSampler
from midsweep.schedules import LRSchedule, MixtureSchedule
from midsweep.sharing.keys import Signature, agreement


def make_run(**mixture) -> RunConfig:
    run = RunConfig(train=TrainConfig(tokens=100 * 32 * 256, global_batch=32))  # 100 steps
    for key, value in mixture.items():
        setattr(run.mixture, key, value)
    return run.validate()


def test_introduce_weights_at_every_step():
    run = make_run(kind="introduce", introduce_at=0.3, weight=0.25, ramp=0.1, domain="code")
    s = MixtureSchedule(run)
    for step in range(100):
        w = s.weights_at(step)
        assert sum(w.values()) == pytest.approx(1.0)
        if step < 30:
            assert w == {"general": 1.0}
            assert s.phase_at(step) == "pretrain"
        elif step < 40:  # linear ramp from 0 to 0.25 over 10 steps
            assert w.get("code", 0.0) == pytest.approx(0.25 * (step - 30) / 10)
            assert s.phase_at(step) == "midtrain"
        else:
            assert w == pytest.approx({"general": 0.75, "code": 0.25})
    assert s.boundaries() == [30]


def test_until_continued_upsample_and_stages():
    s = MixtureSchedule(make_run(kind="introduce", introduce_at=0.2, weight=0.5, until=0.6))
    assert s.weights_at(59) == pytest.approx({"general": 0.5, "code": 0.5})
    assert s.weights_at(60) == {"general": 1.0}
    s = MixtureSchedule(make_run(kind="continued", introduce_at=0.5, replay=0.1, domain="math"))
    assert s.weights_at(50) == pytest.approx({"general": 0.1, "math": 0.9})
    assert s.phase_at(50) == "continued"
    s = MixtureSchedule(make_run(kind="upsample_end", base_weights={"general": 0.9, "code": 0.1},
                                 upsample_fraction=0.2, upsample_weights={"general": 0.5, "code": 0.5}))
    assert s.weights_at(79) == pytest.approx({"general": 0.9, "code": 0.1})
    assert s.weights_at(80) == pytest.approx({"general": 0.5, "code": 0.5}) and s.phase_at(80) == "upsample"
    s = MixtureSchedule(make_run(kind="stages", stages=[
        StageConfig(start=0.5, weights={"general": 0.5, "math": 0.5}, name="mid"),
        StageConfig(start=0.9, weights={"math": 1.0}, name="anneal")]))
    assert [s.phase_at(i) for i in (49, 50, 89, 90)] == ["pretrain", "mid", "mid", "anneal"]


def test_introduction_at_zero_has_no_pretraining_phase():
    s = MixtureSchedule(make_run(kind="introduce", introduce_at=0.0, weight=0.4))
    assert s.weights_at(0) == pytest.approx({"general": 0.6, "code": 0.4}) and s.boundaries() == []


@pytest.mark.parametrize("weight", [0.05, 0.2, 0.5])
def test_token_shares_within_one_percent_over_a_window(weight):
    run = make_run(kind="introduce", introduce_at=0.2, weight=weight)
    sampler = MixtureSampler(MixtureSchedule(run), {"general": 1000, "code": 1000}, seed=3, global_batch=32)
    batches = [sampler.next_batch(step) for step in range(100)]
    # every 10-step window (320 samples) after the introduction: code share within 1% of the target
    for start in range(20, 100, 10):
        window = [d for b in batches[start:start + 10] for d, _ in b]
        assert abs(window.count("code") / len(window) - weight) < 0.01
    assert all(d == "general" for b in batches[:20] for d, _ in b)


def test_runs_that_differ_after_t_draw_identical_batches_before_t():
    a = MixtureSampler(MixtureSchedule(make_run(introduce_at=0.6, weight=0.2)), {"general": 500, "code": 400}, 7, 32)
    b = MixtureSampler(MixtureSchedule(make_run(introduce_at=0.6, weight=0.4, ramp=0.1)),
                       {"general": 500, "code": 400}, 7, 32)
    c = MixtureSampler(MixtureSchedule(make_run(introduce_at=0.6, weight=0.2)), {"general": 500, "code": 400}, 8, 32)
    batches_a = [a.next_batch(s) for s in range(80)]
    batches_b = [b.next_batch(s) for s in range(80)]
    assert batches_a[:60] == batches_b[:60]
    assert batches_a[60] != batches_b[60]
    assert batches_a[:5] != [c.next_batch(s) for s in range(5)]  # another seed, another order


def test_sampler_state_round_trip_gives_the_same_continuation():
    run = make_run(introduce_at=0.3, weight=0.3)
    a = MixtureSampler(MixtureSchedule(run), {"general": 50, "code": 30}, 1, 32)
    for s in range(40):
        a.next_batch(s)
    state = a.state()
    expected = [a.next_batch(s) for s in range(40, 60)]
    b = MixtureSampler(MixtureSchedule(run), {"general": 50, "code": 30}, 1, 32)
    b.load_state(state)
    assert [b.next_batch(s) for s in range(40, 60)] == expected


def test_epochs_visit_every_sequence_once():
    run = make_run(kind="none")
    sampler = MixtureSampler(MixtureSchedule(run), {"general": 64}, 0, 32)
    first = [i for s in range(2) for _, i in sampler.next_batch(s)]
    assert sorted(first) == list(range(64))


def lr_run(**optim):
    run = make_run(introduce_at=0.5, weight=0.2)
    for key, value in optim.items():
        setattr(run.optim, key, value)
    return run.validate()


def test_cosine_warmup_then_decay_to_floor():
    run = lr_run(schedule="cosine", lr=1e-3, warmup=0.1, min_lr_ratio=0.1)
    lr = LRSchedule(run, MixtureSchedule(run))
    values = np.array([lr(s) for s in range(100)])
    assert values[9] == pytest.approx(1e-3) and values[0] == pytest.approx(1e-4)
    assert np.all(np.diff(values[:10]) > 0) and np.all(np.diff(values[10:]) <= 0)
    assert values[-1] == pytest.approx(1e-4, rel=0.01)


@pytest.mark.parametrize("shape", ["linear", "cosine", "sqrt"])
def test_wsd_is_flat_then_decays(shape):
    run = lr_run(schedule="wsd", lr=1e-3, warmup=0.0, min_lr_ratio=0.0, decay_fraction=0.2, decay_shape=shape)
    lr = LRSchedule(run, MixtureSchedule(run))
    assert all(lr(s) == 1e-3 for s in range(80))
    assert lr(90) < 1e-3 and lr(99) < lr(90)


def test_rewarm_and_cooldown_at_the_phase_boundary():
    base = lr_run(schedule="cosine", warmup=0.02)
    cont = LRSchedule(base, MixtureSchedule(base))
    rew = lr_run(schedule="cosine", warmup=0.02, boundary="rewarm", rewarm_lr=2e-3, rewarm_warmup=0.05)
    rewarm = LRSchedule(rew, MixtureSchedule(rew))
    assert [rewarm(s) for s in range(50)] == [cont(s) for s in range(50)]  # identical before the fork
    assert rewarm(54) == pytest.approx(2e-3) and rewarm(50) < rewarm(54)
    assert rewarm(99) == pytest.approx(2e-4, rel=0.02)
    cool = lr_run(schedule="constant", warmup=0.0, boundary="cooldown", min_lr_ratio=0.0, decay_shape="linear")
    cooldown = LRSchedule(cool, MixtureSchedule(cool))
    assert cooldown(49) == 1e-3 and cooldown(75) == pytest.approx(0.5e-3, rel=0.03) and cooldown(99) < 1e-4


def test_posttrain_has_its_own_schedule():
    run = make_run(introduce_at=0.5, weight=0.2)
    run.posttrain.enabled, run.posttrain.tokens, run.posttrain.lr, run.posttrain.warmup = True, 20 * 32 * 256, 5e-4, 0.1
    run.validate()
    s = MixtureSchedule(run)
    lr = LRSchedule(run, s)
    assert s.weights_at(100) == {"target": 1.0} and s.phase_at(100) == "posttrain"
    assert lr(101) == pytest.approx(5e-4) and lr(119) < lr(101)


def test_every_mixture_kind_compiles_and_has_its_group_option():
    """A kind is declared once (midsweep.config.mixture.KINDS: the fields it reads, its compiler); the schedule
    and the Hydra group follow from it."""
    from midsweep.app import CONF_DIR
    from midsweep.config.mixture import KINDS

    assert set(KINDS) == {p.stem for p in (CONF_DIR / "mixture").glob("*.yaml")}
    for declared in KINDS.values():
        assert callable(declared.compile) and "base_weights" in declared.reads
    runs = {"none": make_run(kind="none"), "introduce": make_run(kind="introduce", introduce_at=0.5),
            "continued": make_run(kind="continued", introduce_at=0.5),
            "upsample_end": make_run(kind="upsample_end", upsample_weights={"code": 1.0}),
            "stages": make_run(kind="stages", stages=[StageConfig(start=0.5, weights={"code": 1.0})])}
    assert set(runs) == set(KINDS)
    for kind, run in runs.items():
        s = MixtureSchedule(run)
        assert s.weights_at(0) == {"general": 1.0}
        assert (s.boundaries() == []) == (kind == "none")


def test_a_token_horizon_is_the_cosine_s_own_length_whatever_the_run_s():
    tokens = 200 * 32 * 256  # the schedule of a 200-step run
    short, full = make_run(kind="none"), make_run(kind="none")
    full.train.tokens = tokens
    for run in (short, full):
        run.optim.warmup, run.optim.min_lr_ratio = 0.1, 1 / 300
    short.optim.horizon = str(tokens)
    short_lr, full_lr = LRSchedule(short, MixtureSchedule(short)), LRSchedule(full, MixtureSchedule(full))
    assert [short_lr(s) for s in range(100)] == [full_lr(s) for s in range(100)]  # stops mid-cosine
    floor = 1e-3 / 300
    assert short_lr(99) == pytest.approx(floor + (1e-3 - floor) * 0.5 * (1 + np.cos(np.pi * 79 / 180)))  # ~60%
    assert agreement(Signature.of(short), Signature.of(full)) == 100  # so they share a prefix


def test_a_horizon_that_is_neither_a_name_nor_a_token_count_is_refused():
    with pytest.raises(ConfigError, match=r"optim.horizon.*positive token count"):
        lr_run(horizon="1e3 tokens")
    assert lr_run(horizon="1.28e11").optim.horizon_tokens() == 128_000_000_000
