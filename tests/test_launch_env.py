"""Distributed environment of a submitit SLURM task, and SIGUSR2 handling (no SLURM needed)."""
import os
import signal

import pytest

from midsweep.launch import distributed, preemption

TASK = {"SUBMITIT_EXECUTOR": "slurm", "SLURM_JOB_ID": "4242", "SLURM_NTASKS": "4", "SLURM_JOB_NUM_NODES": "2",
        "SLURM_NODEID": "1", "SLURM_PROCID": "3", "SLURM_LOCALID": "1", "SLURM_JOB_NODELIST": "gpu[07-08]"}
DIST = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT", "CUDA_VISIBLE_DEVICES")


@pytest.fixture
def clean_env(monkeypatch):
    # setup_environment() writes os.environ itself: restore all of it, or later tests' subprocesses would
    # inherit RANK/WORLD_SIZE and wait for ranks that never come
    saved = dict(os.environ)
    for k in (*TASK, *DIST, "SLURM_ARRAY_JOB_ID", "SLURM_ARRAY_TASK_ID", "MIDSWEEP_MASTER_PORT"):
        monkeypatch.delenv(k, raising=False)
    yield monkeypatch
    os.environ.clear()
    os.environ.update(saved)


def exported_port(env, **task) -> str:
    for k, v in {**TASK, **task}.items():
        env.setenv(k, v)
    distributed.setup_environment()
    return os.environ["MASTER_PORT"]


def test_a_slurm_task_exports_ranks_and_rendezvous_across_nodes(clean_env):
    for k, v in TASK.items():
        clean_env.setenv(k, v)
    env = distributed.setup_environment()
    assert env is not None
    want = {"RANK": "3", "LOCAL_RANK": "1", "WORLD_SIZE": "4", "LOCAL_WORLD_SIZE": "2", "MASTER_ADDR": "gpu07"}
    assert {k: os.environ[k] for k in want} == want
    assert 20000 <= int(os.environ["MASTER_PORT"]) <= 60000
    assert "CUDA_VISIBLE_DEVICES" not in os.environ  # left to SLURM: accelerate picks cuda:LOCAL_RANK


def test_ranks_agree_on_the_port_concurrent_jobs_differ_and_it_can_be_pinned(clean_env):
    port = exported_port(clean_env)
    assert exported_port(clean_env, SLURM_PROCID="0", SLURM_LOCALID="0", SLURM_NODEID="0") == port
    assert exported_port(clean_env, MASTER_PORT="1234") == port  # one inherited from a parent job is not ours
    assert exported_port(clean_env, SLURM_JOB_ID="4243") != port
    assert exported_port(clean_env, MIDSWEEP_MASTER_PORT="29500") == "29500"


def test_outside_slurm_or_with_one_task_the_environment_is_left_alone(clean_env):
    clean_env.setenv("RANK", "7")  # e.g. set by torchrun
    assert distributed.setup_environment() is None
    assert os.environ["RANK"] == "7"
    for k, v in {**TASK, "SLURM_NTASKS": "1", "SLURM_JOB_NUM_NODES": "1", "SLURM_PROCID": "0"}.items():
        clean_env.setenv(k, v)
    assert distributed.setup_environment() is None
    assert os.environ["RANK"] == "7" and "MASTER_PORT" not in os.environ


def test_one_gpu_per_task_binding_is_refused_with_the_fix(clean_env):
    for k, v in TASK.items():
        clean_env.setenv(k, v)
    clean_env.setenv("CUDA_VISIBLE_DEVICES", "3")  # SLURM bound one GPU; rank 3 would ask for cuda:1
    with pytest.raises(RuntimeError, match="gpus_per_node"):
        distributed.setup_environment()
    clean_env.setenv("CUDA_VISIBLE_DEVICES", "4,5")  # all of the node's GPUs: cuda:LOCAL_RANK is right
    assert distributed.setup_environment().local_rank == 1
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "4,5"


@pytest.fixture
def restore_usr2():
    old = signal.getsignal(signal.SIGUSR2)
    yield
    signal.signal(signal.SIGUSR2, old)


def test_usr2_only_sets_a_flag_and_checkpointed_hands_over_to_submitits_handler(restore_usr2):
    seen = []

    def submitit_handler(signum, frame):
        seen.append(signum)
        raise SystemExit(-1)  # what submitit does on rank 0 after `scontrol requeue`

    signal.signal(signal.SIGUSR2, submitit_handler)
    interrupt = preemption.install()
    assert not interrupt.requested()
    os.kill(os.getpid(), signal.SIGUSR2)
    assert interrupt.requested() and seen == []  # training goes on to the step boundary
    with pytest.raises(SystemExit):
        interrupt.checkpointed()
    assert seen == [signal.SIGUSR2]


def test_outside_submitit_checkpointed_exits_with_the_resumable_code(restore_usr2):
    signal.signal(signal.SIGUSR2, signal.SIG_DFL)
    interrupt = preemption.install()
    with pytest.raises(SystemExit) as exit_:
        interrupt.checkpointed()
    assert exit_.value.code == preemption.EXIT_INTERRUPTED
