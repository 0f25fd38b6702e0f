"""hydra/launcher=slurm on the real single-machine cluster of scripts/slurm/start.sh (two nodes):
a sweep, preemption with SLURM's requeue, DDP across the nodes. Skipped, with the reason, when the
cluster is not running (tests/slurm_cluster.py)."""

from __future__ import annotations

import csv
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import torch
from hydra.utils import instantiate
from slurm_cluster import job_restarts, scontrol_job, slurm_cluster_fixture  # noqa: F401
from test_train import TINY, compose_train

from diffusion_lab.runs.layout import RESULT_FILE

# what a cluster user sets and nothing else: the partition, CPUs per task, the time limit
# (submitit's timeout_min >= 15: at 10 or less it takes every signal for its time limit)
ON_SLURM = ["hydra/launcher=slurm", "hydra.launcher.cpus_per_task=1"]
ON_SLURM += ["hydra.launcher.timeout_min=20"]
CHEAP = ["logger=csv", "~callbacks.quality", "callbacks.progress=null"]
CHEAP += ["+trainer.limit_val_batches=1"]


def multirun(sweep: Path, partition: str, *overrides: str) -> subprocess.Popen:
    """`diffusion-train -m` submitting to the cluster; its jobs inherit this environment."""
    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true"}
    command = [sys.executable, "-m", "diffusion_lab.train", "-m", f"hydra.sweep.dir={sweep}"]
    command += [*TINY, *ON_SLURM, f"hydra.launcher.partition={partition}", *CHEAP, *overrides]
    return subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env
    )


def finish(process: subprocess.Popen, timeout: float = 900) -> str:
    output, _ = process.communicate(timeout=timeout)
    assert process.returncode == 0, output[-6000:]
    return output


def summary_rows(sweep: Path) -> list[dict]:
    with open(sweep / "summary.csv") as stream:
        return list(csv.DictReader(stream))


def slurm_job_ids(sweep: Path) -> dict[str, str]:
    """{sweep job number: SLURM job id} from submitit's folders (an array of jobs:
    ``<array>_<task>``; a one-job sweep: the job's id)."""
    folders = [p.name for p in (sweep / ".submitit").iterdir() if p.is_dir()]
    tasks = {name.rsplit("_", 1)[1]: name for name in folders if "_" in name}
    if tasks:
        return tasks
    (job,) = folders
    return {"0": job}


def result(job_dir: Path) -> dict:
    return json.loads((job_dir / RESULT_FILE).read_text())


def weights(checkpoint: Path) -> dict[str, torch.Tensor]:
    return torch.load(checkpoint, map_location="cpu", weights_only=False)["state_dict"]


def wait_for_checkpoint_of_epoch(path: Path, epoch: int, process: subprocess.Popen) -> None:
    """Until ``path`` (the epoch-end last.ckpt) is the one saved at the end of ``epoch``."""
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        assert process.poll() is None, process.communicate()[0][-6000:]
        try:
            if torch.load(path, map_location="cpu", weights_only=False)["epoch"] >= epoch:
                return
        except (OSError, EOFError, RuntimeError, KeyError):
            pass  # not written yet
        time.sleep(0.1)
    raise AssertionError(f"{path} of epoch {epoch} did not appear")


def test_a_two_job_sweep_where_one_is_signalled_requeues_resumes_and_equals_the_other(
    slurm_cluster, tmp_path
):
    """A sweep of two SLURM jobs of one config (``+run=...`` is read by nothing) and its summary;
    job 1 gets SLURM's requeue signal early in its last epoch (as `--signal=USR1@N` sends it
    before the time limit), job 0 runs to the end undisturbed."""
    sweep = tmp_path / "sweep"
    process = multirun(sweep, slurm_cluster, "trainer.max_epochs=3", "+run=plain,preempted")
    wait_for_checkpoint_of_epoch(sweep / "1" / "checkpoints" / "last.ckpt", 1, process)
    job = slurm_job_ids(sweep)["1"]
    subprocess.run(["scancel", "--signal=USR1", job], check=True)
    finish(process)
    assert job_restarts(job) == 1, scontrol_job(job)
    assert (sweep / "1" / "hpc_ckpt_1.ckpt").is_file()
    assert not (sweep / "1" / "interrupted.json").exists()  # the requeued job went on
    hpc = torch.load(sweep / "1" / "hpc_ckpt_1.ckpt", map_location="cpu", weights_only=False)
    assert hpc["epoch"] == 2  # saved inside the last epoch (index 2)
    plain, preempted = result(sweep / "0"), result(sweep / "1")
    assert preempted["status"] == "ok" and preempted["epochs"] == plain["epochs"] == 3
    assert preempted["value"] == plain["value"]
    # the same final metrics, except timings, and the learning rate, which LearningRateMonitor
    # logs at an epoch's start: the requeued job started inside its epoch
    timings = {key for key in plain["metrics"] if key.endswith("seconds")}
    assert set(plain["metrics"]) - set(preempted["metrics"]) == {"lr-Adam"}
    for key in set(preempted["metrics"]) - timings:
        assert preempted["metrics"][key] == plain["metrics"][key], key
    ids = slurm_job_ids(sweep)
    assert sorted(ids) == ["0", "1"]  # two SLURM jobs, one per sweep job
    assert "JobState=COMPLETED" in scontrol_job(ids["0"])  # SLURM ran it to the end
    rows = summary_rows(sweep)
    assert [row["status"] for row in rows] == ["ok", "ok"]
    assert "+run=plain" in rows[0]["overrides"].split()
    assert "+run=preempted" in rows[1]["overrides"].split()
    assert float(rows[0]["optimized_value"]) == plain["value"] == plain["metrics"]["val/loss"]
    assert (sweep / "summary.md").is_file() and (sweep / "summary.png").is_file()
    final = [weights(sweep / name / "checkpoints" / "last.ckpt") for name in ("0", "1")]
    assert final[0].keys() == final[1].keys()
    different = [key for key in final[0] if not torch.equal(final[0][key], final[1][key])]
    assert different == []  # bitwise, EMA included


def test_ddp_across_the_two_slurm_nodes_writes_one_run(slurm_cluster, tmp_path):
    sweep = tmp_path / "sweep"
    ddp = ["trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=1", "trainer.num_nodes=2"]
    finish(multirun(sweep, slurm_cluster, *ddp, "trainer.max_epochs=1"))
    (job,) = slurm_job_ids(sweep).values()
    shown = scontrol_job(job)
    assert "NumNodes=2" in shown and "NodeList=n[1-2]" in shown
    logs = sorted((sweep / ".submitit" / job).glob("*_log.err"))
    assert len(logs) == 2  # one task per node
    rank_lines = " ".join(log.read_text() for log in logs)
    assert "GLOBAL_RANK: 0, MEMBER: 1/2" in rank_lines
    assert "GLOBAL_RANK: 1, MEMBER: 2/2" in rank_lines
    jobs = [p.name for p in sweep.iterdir() if p.is_dir() and not p.name.startswith(".")]
    assert jobs == ["0"]  # one run folder: rank 1 wrote into rank 0's
    checkpoints = sorted(p.name for p in (sweep / "0" / "checkpoints").iterdir())
    assert len(checkpoints) == 2 and "last.ckpt" in checkpoints  # one best, one last
    written = result(sweep / "0")
    assert written["status"] == "ok" and written["epochs"] == 1
    # each rank served its half of the training set: half the steps of one device
    datamodule = instantiate(compose_train(tmp_path, *TINY).data)
    datamodule.prepare_data()
    datamodule.setup("fit")
    images, batch = len(datamodule.train_set), datamodule.batch_size
    state = torch.load(sweep / "0" / "checkpoints" / "last.ckpt", weights_only=False)
    assert state["global_step"] == math.ceil(math.ceil(images / 2) / batch)
    assert state["global_step"] < math.ceil(images / batch)


def test_ddp_syncs_batchnorm_on_gpus_only(tmp_path):
    """torch's SyncBatchNorm refuses CPU modules: DDP on CPU nodes keeps per-rank statistics."""
    cpu = compose_train(tmp_path, "trainer=ddp", "trainer.accelerator=cpu")
    assert cpu.trainer.sync_batchnorm is False
    assert compose_train(tmp_path, "trainer=ddp").trainer.sync_batchnorm is True  # accelerator=gpu
