"""Two launches of one sweep at once (``wait=false``, a fraction of a second apart): every run is submitted once,
and ``midsweep status`` believes the job that trains a run over a manifest that names another."""
import threading
import time
from pathlib import Path
from types import SimpleNamespace

from omegaconf import OmegaConf

from hydra_plugins.midsweep_launcher.slurm_launcher import MidsweepSlurmLauncher
from midsweep import rundir
from midsweep.config import RunConfig, TrainConfig
from midsweep.launch import manifest, slurm_state, status
from midsweep.launch.sweep import NEW, Point


class FakeSlurm:
    """squeue over the jobs submitted so far; a submission takes as long as sbatch does on a busy controller."""

    def __init__(self):
        self.queue, self.submitted, self.lock = {}, [], threading.Lock()

    def squeue(self, ids):
        with self.lock:
            return {str(j): self.queue[str(j)] for j in ids if str(j) in self.queue}

    def submit(self, launch: str):
        def submit(todo, sharing):
            time.sleep(0.3)
            with self.lock:
                jobs = [SimpleNamespace(job_id=f"{launch}_{i}", paths=SimpleNamespace(stdout="o", stderr="e"))
                        for i in range(len(todo))]
                self.queue.update({j.job_id: {"state": "PENDING", "reason": "Priority"} for j in jobs})
                self.submitted += [(p.run_id, j.job_id) for p, j in zip(todo, jobs)]
            return jobs, "fake"
        return submit


def points(sweep: Path) -> list[Point]:
    runs = [RunConfig(train=TrainConfig(out_dir=str(sweep), share_prefixes=False, seed=s)).validate() for s in range(3)]
    return [Point(i, [f"train.seed={i}"], r.run_id(), Path(r.run_dir()).absolute(), NEW, run=r)
            for i, r in enumerate(runs)]


def launcher(sweep: Path, slurm: FakeSlurm, name: str) -> MidsweepSlurmLauncher:
    launch = object.__new__(MidsweepSlurmLauncher)  # only what send() reads: the launch is otherwise Hydra's
    launch.config = OmegaConf.create({"hydra": {"sweep": {"dir": str(sweep / "_hydra")}}})
    launch.submit = slurm.submit(name)
    return launch


def test_two_launches_at_once_submit_each_run_once_and_the_manifest_names_its_job(tmp_path, monkeypatch):
    slurm = FakeSlurm()
    monkeypatch.setattr(slurm_state, "squeue", slurm.squeue)
    sweep = tmp_path / "sweep"
    threads = [threading.Thread(target=launcher(sweep, slurm, name).send, args=(points(sweep),))
               for name in ("41", "42")]
    for t in threads:
        t.start()
        time.sleep(0.05)
    for t in threads:
        t.join()
    runs = [p.run_id for p in points(sweep)]
    assert sorted(rid for rid, _ in slurm.submitted) == sorted(runs)  # each run once, not twice
    recorded = {rid: e["job_id"] for rid, e in manifest.read(sweep)["runs"].items()}
    assert recorded == dict(slurm.submitted)


def test_status_believes_the_job_a_run_says_trains_it_over_the_manifests(tmp_path):
    sweep = tmp_path / "sweep"
    run = sweep / "e00000000001"
    run.mkdir(parents=True)
    # the manifest names the losing launch's job (it failed on the run lock); the winner's job trains the run
    manifest.update(sweep, {run.name: manifest.entry([], run, "new", job_id="56_0")})
    rundir.atomic_write_json(run / "status.json", {"contract": rundir.CONTRACT, "status": "running", "step": 7,
                                                   "updated": rundir.utc_now(), "slurm_job_id": "55_0"})
    jobs = {"56_0": {"state": "FAILED", "reason": "1:0"}, "55_0": {"state": "RUNNING", "reason": None}}
    (row,) = status.collect(sweep, query=lambda ids: {j: jobs[j] for j in ids if j in jobs})
    assert (row.state, row.job_id, row.reason) == ("running", "55_0", "at step 7")
    # a relaunch's job that resumes a run whose own job was killed is followed instead
    jobs = {"56_0": {"state": "PENDING", "reason": "Priority"}, "55_0": {"state": "FAILED", "reason": "0:9"}}
    (row,) = status.collect(sweep, query=lambda ids: {j: jobs[j] for j in ids if j in jobs})
    assert (row.state, row.job_id, row.reason) == ("pending", "56_0", "Priority")


def test_a_relaunch_does_not_resubmit_a_run_whose_own_job_is_live_while_the_manifest_names_another(tmp_path,
                                                                                                   monkeypatch):
    slurm = FakeSlurm()
    slurm.queue = {"55_0": {"state": "RUNNING", "reason": None}}
    monkeypatch.setattr(slurm_state, "squeue", slurm.squeue)
    sweep = tmp_path / "sweep"
    first, *rest = points(sweep)
    manifest.update(sweep, {first.run_id: manifest.entry([], first.run_dir, "new", job_id="56_0")})  # ended
    rundir.atomic_write_json(first.run_dir / "status.json", {"contract": rundir.CONTRACT, "status": "running",
                                                             "step": 7, "slurm_job_id": "55_0"})
    launcher(sweep, slurm, "57").send([first, *rest])
    assert sorted(rid for rid, _ in slurm.submitted) == sorted(p.run_id for p in rest)
    assert (first.action, first.reason) == ("queued", "job 55_0 is still RUNNING")
