"""`midsweep prepare --slurm PROFILE` on a real local SLURM: one CPU job tokenizes every domain into the cache
that training then finds (README: "Data at cluster scale")."""
import dataclasses
import re
import subprocess
import sys

import pytest
from cluster import ENV, REPO, wait_for

from midsweep.config import to_run_config
from midsweep.data.shards import cached_train_tokens
from midsweep.launch.prepare import compose

pytestmark = pytest.mark.slurm


def test_prepare_runs_as_one_cpu_job_and_fills_the_shard_cache(slurm_cluster, tmp_path):
    overrides = ["experiment=nano_test", f"data.cache_dir={tmp_path / 'cache'}", f"train.out_dir={tmp_path / 'runs'}"]
    data = to_run_config(compose(overrides)).data
    assert not any(cached_train_tokens(data).values())  # a fresh cache

    cmd = [sys.executable, "-m", "midsweep.launch.cli", "prepare", *overrides, "--slurm", "slurm_local"]
    out = subprocess.run(cmd, cwd=REPO, env=ENV, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    job = re.search(r"submitted SLURM job (\d+)", out.stdout).group(1)
    log = re.search(r"log: (\S+)", out.stdout).group(1)

    def ended() -> str:
        state = subprocess.run(["sacct", "-j", job, "-n", "-X", "-P", "-o", "State"], capture_output=True,
                               text=True).stdout.strip()
        return state if state and state not in ("PENDING", "RUNNING", "REQUEUED") else ""

    assert wait_for(ended, 600, every=2, why=f"prepare job {job}") == "COMPLETED"
    tokens = cached_train_tokens(data)
    assert set(tokens) == set(data.domains) and all(n and n > 0 for n in tokens.values()), tokens
    report = open(log).read()
    assert f"{len(tokens)} domain(s) tokenized" in report, report[-2000:]


def test_prepare_splits_a_domain_into_an_array_whose_shards_equal_one_process(slurm_cluster, tmp_path):
    """--parts 2: every domain as an array of two CPU jobs and a merge job after it (what a domain over a day of
    tokenizing gets); the shards are the bytes a one-process preparation writes."""
    from midsweep.data import prepare_domains

    overrides = ["experiment=nano_test", f"data.cache_dir={tmp_path / 'cache'}", f"train.out_dir={tmp_path / 'runs'}"]
    cmd = [sys.executable, "-m", "midsweep.launch.cli", "prepare", *overrides, "--slurm", "slurm_local", "--parts", "2"]
    out = subprocess.run(cmd, cwd=REPO, env=ENV, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    merges = re.findall(r"submitted SLURM array \d+ \(2 jobs, a part of (\w+) each\) and merge job (\d+)", out.stdout)
    data = to_run_config(compose(overrides)).data
    assert sorted(name for name, _ in merges) == sorted(data.domains), out.stdout

    def ended(job: str) -> str:
        state = subprocess.run(["sacct", "-j", job, "-n", "-X", "-P", "-o", "State"], capture_output=True,
                               text=True).stdout.strip()
        return state if state and state not in ("PENDING", "RUNNING", "REQUEUED") else ""

    for name, job in merges:
        assert wait_for(lambda job=job: ended(job), 600, every=2, why=f"merge job {job} of {name}") == "COMPLETED"
    merged = prepare_domains(data, build=False)
    (tmp_path / "one").mkdir()
    (tmp_path / "one" / "corpora").symlink_to(tmp_path / "cache" / "corpora")  # the corpora the jobs built
    one = prepare_domains(dataclasses.replace(data, cache_dir=str(tmp_path / "one")))
    for name in data.domains:
        assert merged[name].content == one[name].content
        for f in ("train.bin", "heldout.bin"):
            assert (merged[name].path / f).read_bytes() == (one[name].path / f).read_bytes(), (name, f)
