"""Post-training as the papers run it: a fresh AdamW, its own batch, seed and start point, unpacked examples;
runs that differ only in post-training share their main training and equal the same runs from scratch."""
from pathlib import Path

import numpy as np
import pytest
import torch

from midsweep import rundir
from midsweep.config import ConfigError, RunConfig, TrainConfig
from midsweep.config.posttrain import PosttrainConfig
from midsweep.data import load_tokenizer, prepare_domains
from midsweep.data.posttrain import PosttrainData
from midsweep.schedules import LRSchedule, MixtureSchedule
from midsweep.sharing.keys import Signature, agreement
from midsweep.sharing.plan import Job, plan
from runner import REPO, train_cli
from test_sharing_fork import same_records

# 20 main steps of 8 x 64 tokens, post-training on the target from step 10 (after=0.5) or 20
BASE = ("experiment=nano_test", "mixture=none", "train.tokens=10240", "eval.every_tokens=2560", "posttrain=target",
        "posttrain.tokens=2048")


def compose(*overrides: str) -> RunConfig:
    from hydra import compose as hydra_compose, initialize_config_dir

    from midsweep.config import to_run_config

    with initialize_config_dir(str(REPO / "conf"), version_base="1.3"):
        return to_run_config(hydra_compose("config", overrides=list(overrides)))


def post_run(steps: int = 40, **posttrain) -> RunConfig:
    run = RunConfig(train=TrainConfig(tokens=steps * 32 * 256, global_batch=32),
                    posttrain=PosttrainConfig(enabled=True, **posttrain))
    return run.validate()


@pytest.mark.parametrize("overrides,key,fix", [
    ({"optimizer": "adam"}, "posttrain.optimizer", "fresh"),
    ({"after": 1.5}, "posttrain.after", "e.g. 0.5"),
    ({"after": 0.01}, "posttrain.after", "larger fraction"),
    ({"global_batch": 24}, "posttrain.global_batch", "multiple of train.micro_batch"),
])
def test_a_wrong_posttrain_value_names_its_key_and_fix(overrides, key, fix):
    with pytest.raises(ConfigError) as err:
        post_run(**overrides)
    assert [p.key for p in err.value.problems] == [key] and fix in str(err.value)


def test_posttrain_after_without_posttraining_says_how_to_turn_it_on():
    run = RunConfig(posttrain=PosttrainConfig(after=0.5))
    assert any(p.key == "posttrain.after" and "posttrain=target" in p.fix for p in run.problems())


def test_posttrain_after_cuts_main_training_and_keeps_its_lr():
    main, half = post_run(), post_run(after=0.5)
    assert (half.posttrain_start, half.total_steps) == (20, 20 + half.posttrain_steps)
    lr_main, lr_half = LRSchedule(main, MixtureSchedule(main)), LRSchedule(half, MixtureSchedule(half))
    assert [lr_half(s) for s in range(20)] == [lr_main(s) for s in range(20)]
    assert lr_half(20) == lr_main(40)  # post-training's first step, wherever it starts
    assert MixtureSchedule(half).phase_at(20) == "posttrain"


@pytest.mark.parametrize("change", [{"seed": 7}, {"lr": 1e-4}, {"after": 0.5}, {"global_batch": 64},
                                    {"optimizer": "fresh"}, {"packing": False}])
def test_runs_that_differ_in_posttraining_only_share_main_training_and_fork_where_it_starts(change):
    main, other = post_run(), post_run(**change)
    a, b = Signature.of(main), Signature.of(other)
    assert agreement(a, b) == other.posttrain_start
    p = plan([Job(a), Job(b)])
    assert p.forks[1].step == other.posttrain_start and p.forks[1].parent == 0
    assert p.publish == {0: [other.posttrain_start]}


def test_the_run_post_trained_at_the_end_trains_the_main_run_for_those_that_start_earlier():
    runs = [post_run(after=a) for a in (0.25, 0.5, 1.0)]
    p = plan([Job(Signature.of(r)) for r in runs])
    assert {i: (f.step, f.parent) for i, f in p.forks.items()} == {0: (10, 2), 1: (20, 2)}
    assert p.publish == {2: [10, 20]}


def test_an_unset_posttrain_seed_is_the_runs_seed():
    assert Signature.of(post_run()).key(41) == Signature.of(post_run(seed=0)).key(41)


def test_packing_false_batches_hold_one_padded_example_each():
    run = compose(*BASE, "posttrain.packing=false", "model.seq_len=256", "eval.every_tokens=4096")
    eos, L = load_tokenizer(run.data.tokenizer).eos_id, run.model.seq_len
    split = prepare_domains(run.data, ["target"], seq_len=L)["target"].train
    data = PosttrainData(split, "target", L, seed=3, batch=16, start=0, first=0, packing=False, eos_id=eos)
    tokens, masks = np.asarray(split.tokens), np.asarray(split.loss_mask)
    starts = np.concatenate([[0], np.flatnonzero(tokens == eos) + 1])
    rows = [data.sequence(i, mask_prompt=True) for i in data.items(0)]
    assert len({tuple(x) for x, _ in rows}) == 16
    padded = 0
    for x, mask in rows:
        ends = np.flatnonzero(x == eos)
        n = int(ends[0]) + 1 if len(ends) else L + 1  # the example ends at its EOS (or is cut); padding follows
        start = next(s for s in starts if (tokens[s:s + n] == x[:n]).all())  # it starts where a document does
        assert (x[n:] == eos).all() and not mask[n:].any(), "padding is left out of the loss"
        assert (mask[:n] == masks[start:start + n]).all() and not mask[0], "the prompt is left out of the loss"
        assert mask[:n].any()
        padded += n <= L
    assert padded > 0
    # packed sequences (today's post-training) run across document boundaries
    packed = PosttrainData(split, "target", L, seed=3, batch=16, start=0, first=0, packing=True, eos_id=eos)
    assert any((x[:-1] == eos).sum() >= 1 for x, _ in (packed.sequence(i, True) for i in packed.items(0)))


def _params(path: Path) -> dict:
    from midsweep.train.checkpoint import model_weights

    return model_weights(path)


@pytest.mark.slow
@pytest.mark.parametrize("optimizer", ["fresh", "continue"])
def test_a_fresh_optimizers_first_step_is_a_new_adamws(tmp_path, optimizer):
    """The first post-training step, recomputed by hand: its gradient on the run's own first post-training batch
    (one micro-batch), clipped, and the first AdamW update p(1 - lr wd) - lr g / (|g| + eps) of zero moments."""
    from midsweep.model import build_model
    from midsweep.train.batches import loss_sum, to_tensors

    over = (*BASE, "posttrain.global_batch=4", "posttrain.packing=false", f"posttrain.optimizer={optimizer}",
            "train.pin_steps=[20,21]", f"train.out_dir={tmp_path}")
    train_cli(*over)
    run = compose(*over)
    ckpt = lambda step: rundir.checkpoint_dir(run.run_dir(), step)  # noqa: E731
    tokenizer = load_tokenizer(run.data.tokenizer)
    model = build_model(run.model, tokenizer.vocab_size)
    model.load_state_dict(_params(ckpt(20)))
    split = prepare_domains(run.data, ["target"], seq_len=run.model.seq_len)["target"].train
    post = PosttrainData(split, "target", run.model.seq_len, seed=run.posttrain_seed, batch=4, start=20, first=0,
                         packing=False, eos_id=tokenizer.eos_id)
    x, y, m = to_tensors(*zip(*[post.sequence(i, True) for i in post.items(20)]), torch.device("cpu"))
    (loss_sum(model, x, y, m) / m.sum().double()).backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), run.optim.grad_clip)
    o, lr = run.optim, LRSchedule(run, MixtureSchedule(run))(20)
    after = _params(ckpt(21))
    worst = 0.0
    with torch.no_grad():
        for name, p in model.named_parameters():
            wd = o.weight_decay if p.dim() >= 2 else 0.0
            g = p.grad
            by_hand = p * (1 - lr * wd) - lr * g / (g.abs() + o.eps)
            worst = max(worst, float((by_hand - after[name]).abs().max()))
    if optimizer == "fresh":
        assert worst < 1e-6
    else:  # the check tells the two apart: continued moments move the weights elsewhere
        assert worst > 1e-4


@pytest.mark.slow
def test_a_posttrain_seed_and_after_sweep_forks_and_equals_the_runs_from_scratch(tmp_path):
    shared, scratch = tmp_path / "shared", tmp_path / "scratch"
    preview = train_cli("-m", *BASE, "posttrain.after=0.5,1.0", f"train.out_dir={shared}",
                        "hydra.launcher.preview=true").stdout
    # the main run trains 20 + 4 steps, the fork at step 10 its 4 post-training steps: 28 of 38 steps
    assert "@10" in preview and "(74% of the above)" in preview
    forks = {"seed": ("posttrain.seed=7",), "after": ("posttrain.after=0.5",)}
    train_cli(*BASE, "train.publish_steps=[10,20]", f"train.out_dir={shared}")
    for over in forks.values():
        train_cli(*BASE, *over, f"train.out_dir={shared}")
        train_cli(*BASE, *over, "train.share_prefixes=false", f"train.out_dir={scratch}")
    for name, over in forks.items():
        run = compose(*BASE, *over, f"train.out_dir={shared}")
        forked, alone = run.run_dir(), scratch / run.run_dir().name
        same_records(forked, alone)
        summary = rundir.read_summary(forked)
        # the fork trained no main step of its own: it started from the main run's state where it post-trains
        assert summary["prefix"]["step"] == run.posttrain_start == {"seed": 20, "after": 10}[name]
        assert summary["steps"] == run.posttrain_start + run.posttrain_steps
        assert rundir.read_summary(alone)["prefix"] is None


# posttrain.epochs: passes over the target's training split, the step count derived from its prepared shards
EPOCHS = (*BASE[:-1], "posttrain.tokens=null", "posttrain.epochs=2", "posttrain.packing=false",
          "posttrain.global_batch=8", "data.domains.target.max_documents=440")


@pytest.mark.parametrize("overrides,key,fix", [
    ({"epochs": 2}, "posttrain.epochs", "posttrain.tokens=null"),
    ({"epochs": 0, "tokens": None}, "posttrain.epochs", "e.g. 4"),
    ({"tokens": None}, "posttrain.tokens", "posttrain.epochs"),
])
def test_a_wrong_epochs_value_names_its_key_and_fix(overrides, key, fix):
    with pytest.raises(ConfigError) as err:
        post_run(**overrides)
    assert [p.key for p in err.value.problems] == [key] and fix in str(err.value)


def test_the_run_id_changes_with_posttrain_epochs_and_not_with_the_split_size():
    two, three = compose(*EPOCHS), compose(*EPOCHS, "posttrain.epochs=3")
    assert len({two.run_id(), three.run_id(), compose(*BASE).run_id()}) == 3
    assert two.with_posttrain_items(5).run_id() == two.run_id()  # a fact of the data, named by data.domains


def test_without_prepared_shards_a_preview_says_the_posttrain_steps_are_unknown_and_a_launch_names_prepare(
        tmp_path):
    from hydra import compose as hydra_compose, initialize_config_dir

    from midsweep.config import to_run_config
    from midsweep.launch.preview import Throughput, preview
    from midsweep.launch.sweep import InvalidSweep, preflight

    grid = [[*EPOCHS, f"data.cache_dir={tmp_path}", f"train.out_dir={tmp_path / 'runs'}", f"posttrain.seed={s}"]
            for s in (0, 1)]
    with initialize_config_dir(str(REPO / "conf"), version_base="1.3"):
        task = lambda o: hydra_compose("config", overrides=o)  # noqa: E731
        with pytest.raises(InvalidSweep) as err:
            preflight(grid, task, to_run_config)
        assert "posttrain.epochs" in str(err.value) and "`midsweep prepare`" in str(err.value)
        shown = preview(preflight(grid, task, to_run_config, preview=True), Throughput())
        assert "post-training steps unknown until `midsweep prepare` for 2 run(s) (#0, #1)" in shown
        run = to_run_config(task(grid[0]))
        meta = prepare_domains(run.data, ["target"], seq_len=run.model.seq_len)["target"].meta["train"]
        points = preflight(grid, task, to_run_config)  # now read from the shards' meta.json
    assert meta["documents"] == 40 and points[0].run.posttrain_steps == 2 * 40 // 8
    assert "post-training steps unknown" not in preview(points, Throughput())


@pytest.mark.slow
def test_two_epochs_train_the_derived_steps_and_see_every_example_once_per_epoch(tmp_path):
    """40 training examples of the target (440 documents, 400 held out), 8 per step, 2 epochs: 10 steps."""
    train_cli(*EPOCHS, f"train.out_dir={tmp_path}")
    run = compose(*EPOCHS, f"train.out_dir={tmp_path}")
    split = prepare_domains(run.data, ["target"], seq_len=run.model.seq_len)["target"].train
    assert split.num_documents == 40
    summary = rundir.read_summary(run.run_dir())
    assert summary["status"] == "done" and summary["steps"] == run.main_steps + 10
    post = PosttrainData(split, "target", run.model.seq_len, seed=run.posttrain_seed, batch=8, start=20, first=0,
                         packing=False, eos_id=load_tokenizer(run.data.tokenizer).eos_id)
    seen = [i for step in range(20, 30) for i in post.items(step)]
    assert sorted(seen[:40]) == sorted(seen[40:]) == list(range(40))  # each epoch: every example once
    assert summary["tokens_by_domain"] == {"general": 20 * 8 * 64, "target": 80 * 64}  # 80 examples, 1 a row
