"""Prefix keys and the fork plan: exactly what shapes training before step t enters the key at t, and a grid
trains each distinct prefix once (pure config arithmetic, no training)."""
import dataclasses

import pytest

from midsweep.config import RunConfig, TrainConfig
from midsweep.sharing.keys import Signature, agreement
from midsweep.sharing.plan import Job, plan

N = 100  # steps of every run below


def make_run(tokens_steps: int = N, **keys) -> RunConfig:
    """A validated run of ``tokens_steps`` steps with dotted ``keys`` set (``mixture__weight=0.2``)."""
    run = RunConfig(train=TrainConfig(tokens=tokens_steps * 32 * 256, global_batch=32))
    for dotted, value in keys.items():
        group, name = dotted.split("__")
        setattr(getattr(run, group), name, value)
    return run.validate()


def sig(**keys) -> Signature:
    return Signature.of(make_run(**keys))


INTRO = dict(mixture__kind="introduce", mixture__introduce_at=0.4, mixture__weight=0.2)


def test_what_happens_after_t_does_not_change_the_key_at_t():
    base = sig(**INTRO)
    t = 40  # the introduction step
    for other in (sig(**{**INTRO, "mixture__weight": 0.8}), sig(**{**INTRO, "mixture__domain": "math"}),
                  sig(**{**INTRO, "mixture__introduce_at": 0.7}), sig(mixture__kind="none"),
                  sig(**INTRO, optim__boundary="rewarm"), sig(**INTRO, posttrain__enabled=True),
                  sig(**INTRO, train__pin_steps=[5], train__checkpoint_every=7, train__keep_last=3)):
        assert other.key(t) == base.key(t)
        assert agreement(base, other) >= t
    assert sig(**{**INTRO, "mixture__weight": 0.8}).key(t + 1) != base.key(t + 1)


@pytest.mark.parametrize("change", [dict(train__seed=1), dict(model__n_layers=3), dict(optim__lr=2e-3),
                                   dict(optim__weight_decay=0.0), dict(optim__beta2=0.99),
                                   dict(train__global_batch=16, train__micro_batch=8),
                                   dict(eval__every_tokens=2 * 8192),
                                   dict(train__log_every=7), dict(eval__batch=8), dict(train__precision="bf16")])
def test_what_shapes_training_before_t_changes_every_key(change):
    base, other = sig(**INTRO), sig(**INTRO, **change)
    assert other.static != base.static or other.lr[:1] != base.lr[:1]
    assert other.key(1) != base.key(1) and agreement(base, other) == 0


def test_the_data_the_tokenizer_and_init_from_are_part_of_the_key(tmp_path):
    base = make_run(**INTRO)
    assert sig(**INTRO, train__init_from=str(tmp_path)).static != Signature.of(base).static
    fewer = make_run(**INTRO)
    fewer.data.domains["general"] = dataclasses.replace(base.data.domains["general"], max_documents=123)
    other_tok = make_run(**INTRO)
    other_tok.data.tokenizer = "gpt2"
    for changed in (fewer, other_tok):
        assert Signature.of(changed).static != Signature.of(base).static


def test_total_steps_change_the_prefix_under_cosine_but_not_under_wsd_or_constant_before_the_decay():
    cos_a, cos_b = sig(tokens_steps=100, mixture__kind="none"), sig(tokens_steps=200, mixture__kind="none")
    assert agreement(cos_a, cos_b) < 5  # the cosine horizon changes the LR right after warmup
    assert cos_a.key(50) != cos_b.key(50)
    wsd_a = sig(tokens_steps=100, mixture__kind="none", optim__schedule="wsd", optim__warmup=0.1)
    wsd_b = sig(tokens_steps=200, mixture__kind="none", optim__schedule="wsd", optim__warmup=0.05)
    # same 10 warmup steps, then constant until the decay starts at 80 (100 steps) and 160 (200 steps); the
    # first decay step (80) still has the peak LR
    assert agreement(wsd_a, wsd_b) == 81 and wsd_a.key(81) == wsd_b.key(81) and wsd_a.key(82) != wsd_b.key(82)
    const_a = sig(tokens_steps=100, mixture__kind="none", optim__schedule="constant", optim__warmup=0.0)
    const_b = sig(tokens_steps=300, mixture__kind="none", optim__schedule="constant", optim__warmup=0.0)
    assert agreement(const_a, const_b) == 100  # the whole shorter run


def test_a_ramp_straddling_t_and_phase_labels_count():
    ramped = sig(**INTRO, mixture__ramp=0.2)
    assert agreement(sig(**INTRO), ramped) == 40  # the phase label changes at 40 in both, weights after it
    stages_a = sig(mixture__kind="stages", mixture__stages=[_stage(0.3, "midtrain")])
    stages_b = sig(mixture__kind="stages", mixture__stages=[_stage(0.3, "other_label")])
    assert agreement(stages_a, stages_b) == 30


def _stage(start, name):
    from midsweep.config import StageConfig

    return StageConfig(start=start, weights={"general": 0.5, "code": 0.5}, name=name)


def plasticity_grid():
    runs = [make_run(mixture__kind="none")]
    runs += [make_run(mixture__kind="introduce", mixture__introduce_at=t / 10, mixture__weight=w)
             for t in range(1, 9) for w in (0.05, 0.1, 0.2, 0.4, 0.8)]
    return runs


def test_the_standard_plasticity_grid_trains_23_of_41_run_lengths_forked_from_the_baseline():
    runs = plasticity_grid()
    p = plan([Job(Signature.of(r)) for r in reversed(runs)])  # the grid order does not matter
    baseline = len(runs) - 1
    assert sum(p.steps(i) for i in range(len(runs))) == 23 * N
    assert sum(p.steps(i, shared=False) for i in range(len(runs))) == 41 * N
    assert p.order[0] == baseline and baseline not in p.forks
    assert {f.parent for f in p.forks.values()} == {baseline}
    assert sorted(p.publish[baseline]) == [10, 20, 30, 40, 50, 60, 70, 80]
    assert all(p.depth(i) == 1 for i in p.forks)


def test_without_the_baseline_a_run_is_the_trunk_and_parents_are_whoever_trains_the_step():
    runs = plasticity_grid()[1:]
    p = plan([Job(Signature.of(r)) for r in runs])
    assert sum(p.steps(i) for i in range(len(runs))) == 22 * N + 80  # a 0.8 run carries the 80 general steps
    for fork in p.forks.values():
        parent = fork.parent
        assert parent not in p.forks or p.forks[parent].step < fork.step  # the parent trains the step itself
        assert fork.step in p.publish[parent]


def test_a_fork_of_a_fork_upsampling_rewarm_and_model_reuse():
    base = make_run(mixture__kind="none")
    up = make_run(mixture__kind="upsample_end", mixture__upsample_fraction=0.2,
                  mixture__upsample_weights={"general": 0.5, "code": 0.5})
    cont = make_run(mixture__kind="continued", mixture__introduce_at=0.5, mixture__domain="code")
    rewarm = make_run(mixture__kind="continued", mixture__introduce_at=0.5, mixture__domain="code",
                      optim__boundary="rewarm", optim__rewarm_lr=5e-4)
    until = make_run(**INTRO, mixture__until=0.7)
    intro = make_run(**INTRO)
    p = plan([Job(Signature.of(r)) for r in (base, up, cont, rewarm, until, intro)])
    assert p.forks[1].step == 80 and p.forks[1].parent == 0  # upsampling forks at 1 - f from its base
    assert p.forks[3].step == 50 and p.forks[3].parent in (0, 2)  # the re-warm forks at the switch
    assert {p.forks[4].step, p.forks[5].step} == {40, 70}  # until forks from the plain introduction at 0.7
    late = 4 if p.forks[4].step == 70 else 5
    assert p.forks[late].parent == 9 - late and p.depth(late) == 2
    assert p.order.index(late) > p.order.index(9 - late)


def test_a_resumed_parent_cannot_publish_a_step_it_has_passed_and_sharing_off_stays_out():
    base, intro = make_run(mixture__kind="none"), make_run(**INTRO)
    resumed = plan([Job(Signature.of(base), start=60, checkpoints=frozenset({60})), Job(Signature.of(intro))])
    assert resumed.forks == {}
    kept = plan([Job(Signature.of(base), start=60, checkpoints=frozenset({40, 60})), Job(Signature.of(intro))])
    assert kept.forks[1].step == 40 and kept.publish[0] == [40]
    off = plan([Job(Signature.of(base)), Job(Signature.of(intro), shares=False)])
    assert off.forks == {} and off.publish == {}


def test_published_entries_are_used_without_a_parent():
    intro = Signature.of(make_run(**INTRO))
    p = plan([Job(intro)], available=[("", intro.static, 40, intro.key(40)), ("", intro.static, 50, "not-this-run")])
    assert p.forks[0].step == 40 and p.forks[0].parent is None and p.depth(0) == 0
    elsewhere = plan([Job(intro, store="/other/sweep")], available=[("", intro.static, 40, intro.key(40))])
    assert elsewhere.forks == {}


def test_runs_of_different_sweep_directories_do_not_share():
    base, intro = Signature.of(make_run(mixture__kind="none")), Signature.of(make_run(**INTRO))
    assert plan([Job(base, store="a"), Job(intro, store="b")]).forks == {}


def test_model_reuse_continuations_share_their_pretraining_with_horizon_boundary():
    def reuse(total_steps, **optim):
        return Signature.of(make_run(tokens_steps=total_steps, mixture__kind="continued", mixture__unit="tokens",
                                     mixture__introduce_at=40 * 32 * 256, optim__boundary="rewarm", **optim))

    complete = [reuse(n, optim__horizon="boundary") for n in (60, 100, 200)]  # D1 = 40 steps, D2 = 20, 60, 160
    assert all(agreement(complete[0], s) >= 40 for s in complete[1:])  # (the re-warm's first steps may agree too)
    assert complete[0].lr[38] < 0.2 * complete[0].lr[5]  # the pretraining's cosine has decayed by the switch
    assert agreement(reuse(60), reuse(100)) == 0  # one cosine over D1 + D2: nothing in common
    p = plan([Job(s) for s in complete])
    assert sum(p.steps(i) for i in range(3)) <= 40 + 20 + 60 + 160  # D1 once, each D2 once


def test_horizon_boundary_is_a_finished_pretraining_shared_by_the_rewarm_and_no_rewarm_arms():
    """The re-warming study: every arm starts from the same complete pretraining (cosine to the floor by the
    switch); no-rewarm then stays at the floor, re-warm climbs to its new peak. One trunk, trained once."""
    from midsweep.config import ConfigError

    switch = dict(mixture__kind="continued", mixture__introduce_at=0.5, optim__horizon="boundary")
    rewarm = sig(**switch, optim__boundary="rewarm", optim__rewarm_warmup=0.05)
    stay = sig(**switch)
    assert agreement(rewarm, stay) >= N // 2
    floor = make_run().optim.lr * make_run().optim.min_lr_ratio
    assert stay.lr[N // 2 - 1] == pytest.approx(floor, rel=0.05)  # the pretraining's cosine ends at the switch
    assert all(lr == pytest.approx(floor) for lr in stay.lr[N // 2:N])  # no re-warm: the floor to the end
    assert max(rewarm.lr[N // 2:N]) > 5 * floor
    with pytest.raises(ConfigError, match="optim.horizon"):
        make_run(**switch, optim__boundary="cooldown")  # nothing left to cool down
    with pytest.raises(ConfigError, match="optim.horizon"):
        make_run(mixture__kind="none", optim__horizon="boundary")  # no switch to end the schedule at
