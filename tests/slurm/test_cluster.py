"""launch/slurm.sbatch on a real Slurm cluster in containers (docker/slurm/compose.yaml).

One cluster a session: a controller and 3 nodes, from the image of this checkout (distrain's
image, built once a session, plus Slurm). Jobs are submitted as the user distrain from
/shared, as docs/slurm.md says. Cases: both recipe modes as written, salloc with distrain-run,
bad input, scancel, a requeue resuming from the checkpoint, a node killed mid-job (in each
mode), and in mpirun mode with restarts left the job resuming on the nodes left. Where no
Docker engine answers these tests are skipped, saying why; with
``DISTRAIN_REQUIRE_DOCKER=1`` (as .ci/run sets) that is a failure instead.
"""
from __future__ import annotations

import contextlib
import os
import re
import subprocess
import time

import pytest

from docker_helpers import Project, ROOT, compose_base

pytestmark = [pytest.mark.docker, pytest.mark.slurm]

SLURM_COMPOSE_FILE = os.path.join(ROOT, "docker", "slurm", "compose.yaml")
NODES = 3
LONG = ["--model", "cnn", "--epochs", "1000", "--no-cost-model", "--checkpoint-every", "20"]


@pytest.fixture(scope="session")
def slurm_image(image):
    """The cluster's image: distrain's image of this checkout plus Slurm."""
    name = "distrain-slurm:test"
    env = dict(os.environ, DISTRAIN_IMAGE=image, DISTRAIN_SLURM_IMAGE=name)
    done = subprocess.run(compose_base() + ["-f", SLURM_COMPOSE_FILE, "build"], env=env,
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return name


def report_hosts(out: str) -> dict[int, str]:
    """Each rank's host in the last timing report's per-rank table (tags removed)."""
    lines = [re.sub(r"^\[\d+\]<std\w+>: ", "", line) for line in out.splitlines()]
    table = "\n".join(lines).split("per rank (median ms per step)")[-1]
    return {int(rank): host for rank, host in re.findall(r"^  (\d+)\s+(\S+)\s+[\d.]", table,
                                                         re.M)}


class Cluster(Project):
    """The session's cluster: commands on its controller, its jobs and its nodes."""

    def up(self) -> None:
        self.compose("up", "-d", "--scale", f"node={NODES}", check=True, timeout=180)
        self.controller = self.containers("slurmctld")[0]
        self.nodes = self.containers("node")
        self.wait_idle(self.nodes, within=120)

    def run(self, *argv: str, timeout: float = 60, **env: str):
        """``argv`` on the controller as distrain in /shared (sbatch, squeue, sacct...)."""
        flags = [item for name, value in env.items() for item in ("-e", f"{name}={value}")]
        return subprocess.run(["docker", "exec", "-u", "distrain", "-w", "/shared", *flags,
                               self.controller, *argv], capture_output=True, text=True,
                              timeout=timeout)

    def submit(self, *args: str, **env: str) -> str:
        """``sbatch args`` (its options, the script, the script's arguments): the job's id."""
        done = self.run("sbatch", "--parsable", *args, **env)
        assert done.returncode == 0, done.stderr
        return done.stdout.strip().split(";")[0]

    def submit_and_wait(self, *args: str, **env: str) -> tuple[str, int]:
        """``sbatch --wait args``: the job's id and exit code, once it has ended."""
        done = self.run("sbatch", "--parsable", "--wait", *args, timeout=240, **env)
        assert done.stdout.strip(), done.stderr
        return done.stdout.strip().split(";")[0], done.returncode

    def output(self, job: str) -> str:
        done = self.run("bash", "-c", f"cat /shared/distrain-{job}.out 2>/dev/null")
        return done.stdout.replace("\r", "\n")

    def wait_for(self, job: str, text: str, within: float) -> None:
        deadline = time.monotonic() + within
        while text not in self.output(job):
            assert time.monotonic() < deadline, f"{text!r} not seen:\n{self.output(job)[-3000:]}"
            time.sleep(1)

    def state(self, job: str) -> str:
        """The job's state in squeue (``RUNNING``...), ``""`` once it has left the queue."""
        return self.run("squeue", "-h", "-j", job, "-o", "%T").stdout.strip()

    def wait_gone(self, job: str, within: float, allow: tuple = ()) -> float:
        """Seconds until the job is no longer running (squeue shows it in none of RUNNING and
        ``allow``)."""
        began = time.monotonic()
        while self.state(job) in ("RUNNING", *allow):
            assert time.monotonic() - began < within, f"job {job} still {self.state(job)}"
            time.sleep(0.25)
        return time.monotonic() - began

    def accounting(self, job: str) -> dict[str, tuple[str, str, str]]:
        """sacct's rows of the job: step -> (state, exit code, node list)."""
        done = self.run("sacct", "-n", "-P", "-j", job, "-o", "JobID,State,ExitCode,NodeList")
        return {row.split("|")[0]: tuple(row.split("|")[1:]) for row in done.stdout.splitlines()}

    def job_nodes(self, job: str) -> tuple[list[str], str]:
        """The job's nodes and its batch host."""
        show = self.run("scontrol", "show", "job", job).stdout
        nodes = self.run("scontrol", "show", "hostnames",
                         re.search(r" NodeList=(\S+)", show)[1]).stdout.split()
        return nodes, re.search(r"BatchHost=(\S+)", show)[1]

    def wait_idle(self, nodes, within: float) -> None:
        deadline = time.monotonic() + within
        while True:
            listing = self.run("sinfo", "-N", "-h", "-o", "%N %t").stdout
            states = dict(line.split() for line in listing.splitlines())
            if all(states.get(node) == "idle" for node in nodes):
                return
            assert time.monotonic() < deadline, f"nodes not idle: {listing}"
            time.sleep(1)


@pytest.fixture(scope="session")
def cluster(image, slurm_image, tmp_path_factory):
    with Cluster(image, tmp_path_factory.mktemp("slurm"), SLURM_COMPOSE_FILE, prefix="dslurm",
                 DISTRAIN_SLURM_IMAGE=slurm_image) as made:
        made.up()
        yield made


@pytest.fixture(autouse=True)
def empty_queue(cluster):
    """No job of a test outlives it, so a failed test holds no node the next one needs."""
    yield
    cluster.run("scancel", "-u", "distrain")
    deadline = time.monotonic() + 60
    while cluster.run("squeue", "-h").stdout.strip() and time.monotonic() < deadline:
        time.sleep(0.5)


@pytest.mark.timeout(300)
def test_every_node_registers_and_the_munge_key_is_made_at_start(cluster, slurm_image):
    listing = cluster.run("sinfo", "-N", "-h", "-o", "%N %t %c").stdout
    assert sorted(listing.splitlines()) == [f"{node} idle 8" for node in cluster.nodes]
    key = subprocess.run(["docker", "exec", cluster.nodes[0], "stat", "-c", "%a %U %s",
                          "/keys/munge.key", "/etc/munge/munge.key"],
                         capture_output=True, text=True, timeout=30).stdout.split("\n")
    assert key[:2] == ["600 root 128", "400 munge 128"], key
    found = subprocess.run(["docker", "run", "--rm", "--entrypoint", "sh", slurm_image, "-c",
                            "find / -xdev -name '*.key' -not -path '/proc/*' 2>/dev/null; "
                            "find /keys /etc/munge -mindepth 1"],
                           capture_output=True, text=True, timeout=60)
    assert found.returncode == 0 and found.stdout.strip() == "", found.stdout


@pytest.mark.timeout(300)
def test_srun_mode_trains_as_written(cluster):
    job, code = cluster.submit_and_wait("launch/slurm.sbatch", "--model", "cnn", "--epochs", "2")
    assert code == 0
    out = cluster.output(job)
    assert "slurm.sbatch: MPI's TCP traffic on eth0" in out
    assert "distrain: 4 rank(s), backend mpi" in out and "epoch 2: loss" in out, out[-3000:]
    assert "cost model" in out and "Sorry!" not in out     # PMIx found its help files
    rows = cluster.accounting(job)
    state, code, nodes = rows[job]
    assert (state, code) == ("COMPLETED", "0:0"), rows
    names, batch = cluster.job_nodes(job)
    assert len(names) == 2
    # the report names each rank's node by its Slurm name; ranks 0-1 on the batch host (the
    # job's first node), 2-3 on the other
    other = next(name for name in names if name != batch)
    assert report_hosts(out) == {0: batch, 1: batch, 2: other, 3: other}, out[-3000:]
    print(f"job {job} on {nodes}")


@pytest.mark.timeout(300)
def test_mpirun_mode_runs_distrain_run_on_the_allocation(cluster):
    job, code = cluster.submit_and_wait("launch/slurm.sbatch", "--model", "cnn", "--epochs",
                                        "1", "--steps-per-epoch", "5", "--no-cost-model",
                                        MODE="mpirun")
    assert code == 0
    out = cluster.output(job)
    assert "[0]<stdout>: distrain: 4 rank(s), backend mpi" in out, out[-3000:]
    assert "[0]<stdout>: epoch 1: loss" in out
    assert sorted(set(report_hosts(out).values())) == sorted(cluster.job_nodes(job)[0]), out
    state, code, nodes = cluster.accounting(job)[job]
    assert (state, code) == ("COMPLETED", "0:0")
    print(f"job {job} on {nodes}")


@pytest.mark.timeout(180)
def test_salloc_two_nodes_runs_distrain_run_there(cluster):
    program = ("import os; from mpi4py import MPI; c = MPI.COMM_WORLD; "
               "print('on', os.environ['SLURMD_NODENAME'], c.allreduce(1))")
    done = cluster.run("salloc", "-N", "2", "--ntasks-per-node", "1", "distrain-run", "-np",
                       "2", "python", "-c", program, timeout=120)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    seen = re.findall(r"\[\d\]<stdout>: on (\S+) 2", done.stdout)
    assert len(seen) == 2 and len(set(seen)) == 2 and set(seen) <= set(cluster.nodes), seen


@pytest.mark.timeout(120)
@pytest.mark.parametrize("args, env, line", [
    (["--epochs", "two"], {}, "distrain.train: error: argument --epochs: invalid int value"),
    (["--epochs", "2"], {"MODE": "bogus"}, "slurm.sbatch: MODE must be srun or mpirun"),
])
def test_bad_input_is_one_line_and_exit_2_in_the_job_output(cluster, args, env, line):
    job, code = cluster.submit_and_wait("launch/slurm.sbatch", *args, **env)
    assert code == 2
    lines = [text for text in cluster.output(job).splitlines() if text.strip()]
    assert len(lines) == 1 and lines[0].startswith(line), lines
    assert cluster.accounting(job)[job][:2] == ("FAILED", "2:0")


@pytest.mark.timeout(240)
def test_scancel_stops_every_rank_within_10_seconds(cluster):
    job = cluster.submit("launch/slurm.sbatch", *LONG)
    cluster.wait_for(job, "checkpoint saved at step 20", within=150)
    began = time.monotonic()
    assert cluster.run("scancel", job).returncode == 0
    while (left := cluster.ranks_left("node")) and time.monotonic() - began < 10:
        time.sleep(0.25)
    took = time.monotonic() - began
    assert not left, left
    print(f"every rank gone {took:.1f} s after scancel")
    cluster.wait_gone(job, within=30, allow=("COMPLETING",))
    assert cluster.accounting(job)[job][0] == "CANCELLED by 1000"


@pytest.mark.timeout(300)
def test_a_requeued_job_resumes_from_the_checkpoint(cluster):
    job = cluster.submit("--requeue", "launch/slurm.sbatch", *LONG,
                         CHECKPOINT_DIR="/shared/requeue")
    cluster.wait_for(job, "checkpoint saved at step 20", within=150)
    assert cluster.run("scontrol", "requeue", job).returncode == 0
    # Slurm holds a requeued job for about 2 minutes (Reason=BeginTime): start it now
    deadline = time.monotonic() + 30
    while "Reason=BeginTime" not in cluster.run("scontrol", "show", "job", job).stdout:
        assert time.monotonic() < deadline, cluster.run("scontrol", "show", "job", job).stdout
        time.sleep(0.5)
    assert cluster.run("scontrol", "update", f"jobid={job}", "starttime=now").returncode == 0
    cluster.wait_for(job, "resumed from step", within=150)
    out = cluster.output(job)
    resumed = int(out.split("resumed from step ")[1].split(",")[0])
    assert resumed >= 20 and resumed % 20 == 0, out[-3000:]
    assert cluster.run("scontrol", "show", "job", job).stdout.count("Restarts=1") == 1
    cluster.run("scancel", job)
    cluster.wait_gone(job, within=30, allow=("COMPLETING", "PENDING"))


@contextlib.contextmanager
def _node_killed(cluster, job: str):
    """``docker kill`` of a node of the running job other than its batch host: yields the
    node, the batch host and when it was killed; afterwards the job is cancelled, the node
    started again and every node idle."""
    nodes, batch = cluster.job_nodes(job)
    victim = next(node for node in nodes if node != batch)
    began = time.monotonic()
    subprocess.run(["docker", "kill", victim], check=True, capture_output=True, timeout=30)
    try:
        yield victim, batch, began
    finally:
        cluster.run("scancel", job)
        subprocess.run(["docker", "start", victim], check=True, capture_output=True,
                       timeout=60)
        cluster.wait_gone(job, within=60, allow=("COMPLETING",))
        cluster.wait_idle(cluster.nodes, within=120)
        assert time.monotonic() - began < 200


def _kill_a_node_mid_job(cluster, mode: str):
    job = cluster.submit("--no-requeue", "launch/slurm.sbatch", *LONG, MODE=mode,
                         MAX_RESTARTS="0", CHECKPOINT_DIR=f"/shared/kill-{mode}")
    cluster.wait_for(job, "checkpoint saved at step 20", within=150)
    with _node_killed(cluster, job) as (victim, _, began):
        cluster.wait_gone(job, within=10)
        print(f"{mode}: job {job} ended {time.monotonic() - began:.1f} s after docker kill "
              f"{victim}")
        time.sleep(2)                                  # its last lines and sacct's record
        return job, victim, cluster.output(job), cluster.accounting(job)


@pytest.mark.timeout(400)
def test_a_node_killed_mid_job_ends_it_naming_the_ranks_and_the_node(cluster):
    job, victim, out, rows = _kill_a_node_mid_job(cluster, "mpirun")
    last = [line for line in out.splitlines() if line.startswith("distrain-run: ")][-1]
    assert re.match(rf"distrain-run: ranks 2, 3 on host \w+ \({victim}\) ended without an "
                    rf"exit status", last), out[-3000:]
    assert rows[job][0] == "FAILED", rows


@pytest.mark.timeout(400)
def test_a_node_killed_mid_srun_job_ends_it_naming_the_ranks_and_the_node(cluster):
    job, victim, out, rows = _kill_a_node_mid_job(cluster, "srun")
    assert "srun: error:" in out, out[-3000:]
    last = [line for line in out.splitlines() if line.startswith("distrain")][-1]
    assert re.match(rf"distrain: ranks 2, 3 on node {victim} were lost: its slurmd "
                    rf"\([\d.]+:6818\) does not answer \(srun ended with exit code \d+\)$",
                    last), out[-3000:]
    assert rows[job][0] == "FAILED", rows


@pytest.mark.timeout(400)
def test_a_node_killed_mid_mpirun_job_resumes_on_the_nodes_left_and_completes(cluster):
    job = cluster.submit("--no-requeue", "launch/slurm.sbatch", "--model", "cnn", "--epochs",
                         "100", "--no-cost-model", "--checkpoint-every", "20", MODE="mpirun",
                         CHECKPOINT_DIR="/shared/resume-mpirun")
    cluster.wait_for(job, "checkpoint saved at step 20", within=150)
    with _node_killed(cluster, job) as (victim, batch, began):
        cluster.wait_for(job, "resumed from step", within=60)
        resumed_after = time.monotonic() - began
        cluster.wait_gone(job, within=240)
        ended_after = time.monotonic() - began
        time.sleep(2)                                  # its last lines and sacct's record
        out, rows = cluster.output(job), cluster.accounting(job)
    relaunch = (f"distrain-run: elastic: 4 -> 2 ranks on {batch}:2 ({victim} failed), from "
                f"the last checkpoint (launch 2)")
    assert relaunch in out, out[-3000:]
    after = out.split(relaunch, 1)[1]
    resumed = int(after.split("resumed from step ", 1)[1].split(",")[0])
    assert resumed >= 20 and resumed % 20 == 0, out[-3000:]
    assert "saved at 4 rank(s), now 2" in after and "epoch 100: loss" in after, out[-3000:]
    assert report_hosts(out) == {0: batch, 1: batch}, out[-3000:]
    # Slurm dropped the dead node from the job (--no-kill): sacct's last record of the job
    # is on the batch host alone (an earlier one, RESIZING, holds the job's first nodes)
    assert rows[job] == ("COMPLETED", "0:0", batch), rows
    print(f"job {job}: resumed from step {resumed} {resumed_after:.1f} s after docker kill "
          f"{victim}, ended COMPLETED on {batch} {ended_after:.1f} s after it")
