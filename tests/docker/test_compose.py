"""The docker compose multi-worker run (docker/compose.yaml), on a real Docker engine.

Each test runs its own compose project (its own network, key volume and output folder) on the
image built once per session from this checkout. Faults: a worker killed (``docker kill``), a
worker cut off (``docker network disconnect``), and a killed worker started again under
``--max-restarts 1``. Where no engine answers these tests are skipped, saying why; with
``DISTRAIN_REQUIRE_DOCKER=1`` (as .ci/run sets) that is a failure instead.
"""
from __future__ import annotations

import json
import re
import subprocess
import threading
import time

import pytest

from distrain.train import checkpoint

from docker_helpers import Project

pytestmark = pytest.mark.docker

TRAIN_LONG = ["python", "-m", "distrain.train", "--epochs", "1000", "--no-cost-model",
              "--checkpoint-dir", "/out/ck", "--checkpoint-every", "20"]


@pytest.fixture
def project(image, tmp_path):
    with Project(image, tmp_path) as made:
        yield made


class Reader:
    """Reads a process's stdout and stderr in threads, so a test can wait for a line."""

    def __init__(self, proc: subprocess.Popen):
        self.proc, self.lines, self.cond = proc, {"stdout": [], "stderr": []}, threading.Condition()
        self.threads = [threading.Thread(target=self._pump, args=(name, stream), daemon=True)
                        for name, stream in (("stdout", proc.stdout), ("stderr", proc.stderr))]
        for thread in self.threads:
            thread.start()

    def _pump(self, name, stream):
        for line in stream:
            with self.cond:
                self.lines[name].append(line)
                self.cond.notify_all()

    def wait_for(self, text: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        with self.cond:
            while not any(text in line for line in self.lines["stdout"] + self.lines["stderr"]):
                left = deadline - time.monotonic()
                assert left > 0 and self.proc.poll() is None, (
                    f"{text!r} not seen:\n{self.text('stdout')[-3000:]}\n"
                    f"{self.text('stderr')[-3000:]}")
                self.cond.wait(min(left, 0.5))

    def finish(self, timeout: float) -> int:
        code = self.proc.wait(timeout=timeout)
        for thread in self.threads:
            thread.join(timeout=10)
        return code

    def text(self, name: str) -> str:
        with self.cond:
            return "".join(self.lines[name])


@pytest.mark.timeout(400)
def test_up_trains_across_three_workers_and_writes_the_outputs(project):
    done = project.compose("up", "--scale", "worker=3", "--exit-code-from", "launcher",
                           timeout=360)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    out = done.stdout
    names = project.containers("worker")
    assert len(names) == 3
    assert f"3 ranks on the hosts found: {','.join(f'{n}:1' for n in names)}" in out
    assert re.search(r"\b(\d+)/\1 - ", out) and "epoch 1: loss" in out   # rank 0's bar, summary
    assert "per rank (median ms per step)" in out and "cost model" in out
    report = json.loads((project.out / "report.json").read_text())
    assert sorted(row["rank"] for row in report["ranks"]) == [0, 1, 2]
    assert len({row["host"] for row in report["ranks"]}) == 3    # one rank per container
    for name in ("trace.json", "timing.png", "checkpoints/checkpoint.npz"):
        assert (project.out / name).stat().st_size > 0, name


@pytest.mark.timeout(300)
def test_keys_are_made_at_first_start_private_and_not_in_the_image(project, image):
    project.compose("up", "-d", "--scale", "worker=2", "worker", check=True, timeout=120)
    listing = project.run_in_volume("stat -c '%a %U %n' /keys/* && cat /keys/known_hosts")
    modes = {line.split()[2]: line.split()[:2] for line in listing.splitlines()
             if line.startswith(("6", "7"))}
    for key in ("id_ed25519", "ssh_host_ed25519_key", "authorized_keys", "known_hosts"):
        assert modes[f"/keys/{key}"] == ["600", "distrain"], listing
    # the image holds no key of any kind and no known_hosts
    found = subprocess.run(
        ["docker", "run", "--rm", "--entrypoint", "sh", image, "-c",
         "find / -xdev \\( -name 'id_*' -o -name 'ssh_host_*' -o -name known_hosts "
         "-o -name authorized_keys \\) -not -path '/proc/*' 2>/dev/null; ls -A /keys"],
        capture_output=True, text=True, timeout=60)
    assert found.returncode == 0 and found.stdout.strip() == "", found.stdout
    # a second project start keeps the keys it made
    first = project.run_in_volume("sha256sum /keys/id_ed25519")
    project.compose("restart", "worker", check=True, timeout=120)
    assert project.run_in_volume("sha256sum /keys/id_ed25519") == first
    # sshd takes no password and no root
    config = subprocess.run(["docker", "exec", "-u", "distrain", project.containers("worker")[0],
                             "/usr/sbin/sshd",
                             "-T", "-f", "/etc/distrain/sshd_config"],
                            capture_output=True, text=True, timeout=60).stdout
    assert "passwordauthentication no" in config and "permitrootlogin no" in config


def _start_long_job(project, *flags):
    project.compose("up", "-d", "--scale", "worker=2", "worker", check=True, timeout=120)
    proc = subprocess.Popen(project.compose_argv("run", "--rm", "-T", "launcher", "distrain-run",
                                                 *flags, *TRAIN_LONG),
                            env=project.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    reader = Reader(proc)
    reader.wait_for("checkpoint saved at step 20", timeout=120)
    return reader


def _wait_no_ranks(project, within: float) -> list[str]:
    deadline = time.monotonic() + within
    while (left := project.ranks_left("worker")) and time.monotonic() < deadline:
        time.sleep(0.5)
    return left


@pytest.mark.timeout(300)
def test_killing_a_worker_ends_the_job_naming_its_rank_and_host(project):
    reader = _start_long_job(project)
    victim = project.containers("worker")[1]                  # rank 1: names sort
    began = time.monotonic()
    subprocess.run(["docker", "kill", victim], check=True, capture_output=True, timeout=30)
    code = reader.finish(timeout=30)
    took = time.monotonic() - began
    err = reader.text("stderr")
    assert code != 0, err[-3000:]
    assert "rank 1 on host" in err and f"({victim})" in err, err[-3000:]
    assert "rank 0 on" not in err, err[-3000:]
    print(f"job ended {took:.1f} s after docker kill")
    assert not _wait_no_ranks(project, within=10)


@pytest.mark.timeout(300)
def test_disconnecting_a_worker_ends_the_job_within_the_timeouts(project):
    reader = _start_long_job(project, "--heartbeat-timeout", "8", "--stall-warning-seconds",
                             "3", "--stall-shutdown-seconds", "8")
    victim = project.containers("worker")[1]
    subprocess.run(["docker", "network", "disconnect", f"{project.name}_mpi", victim],
                   check=True, capture_output=True, timeout=30)
    code = reader.finish(timeout=60)
    err = reader.text("stderr")
    assert code == 124, err[-3000:]
    assert "lost contact with rank 1" in err or "ranks not joined: 1" in err, err[-3000:]
    assert not _wait_no_ranks(project, within=15)


@pytest.mark.timeout(400)
def test_a_relaunch_after_the_worker_returns_resumes_from_the_checkpoint(project):
    reader = _start_long_job(project, "--max-restarts", "1", "--start-timeout", "90")
    victim = project.containers("worker")[1]
    subprocess.run(["docker", "kill", victim], check=True, capture_output=True, timeout=30)
    reader.wait_for("restart 1 of 1", timeout=60)
    subprocess.run(["docker", "start", victim], check=True, capture_output=True, timeout=60)
    reader.wait_for("resumed from step", timeout=150)
    reader.proc.terminate()                               # the rest of 1000 epochs: not needed
    reader.finish(timeout=60)
    out = reader.text("stdout")
    resumed = int(out.split("resumed from step ")[1].split(",")[0])
    saved = [int(line.split("checkpoint saved at step ")[1].split(":")[0])
             for line in out.splitlines() if "checkpoint saved at step " in line]
    assert resumed >= 20 and resumed in saved, out[-3000:]


TRAIN_ELASTIC = ["python", "-m", "distrain.train", "--model", "resnet", "--steps-per-epoch",
                 "30", "--no-cost-model", "--checkpoint-dir", "/out/ck", "--checkpoint-every",
                 "10"]


def _start_elastic_job(project, workers: int, *flags, epochs: int = 4):
    project.compose("up", "-d", "--scale", f"worker={workers}", "worker", check=True,
                    timeout=120)
    proc = subprocess.Popen(project.compose_argv(
        "run", "--rm", "-T", "launcher", "distrain-run", "--min-np", "2", "--max-np", "3",
        "--start-timeout", "90", *flags, *TRAIN_ELASTIC, "--epochs", str(epochs)),
        env=project.env,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    reader = Reader(proc)
    reader.wait_for("checkpoint saved at step 10", timeout=180)
    return reader


@pytest.mark.timeout(500)
def test_an_elastic_job_carries_on_at_two_ranks_when_a_worker_is_killed(project):
    reader = _start_elastic_job(project, 3, "--blacklist-cooldown", "600")
    names = project.containers("worker")
    victim = names[2]
    subprocess.run(["docker", "kill", victim], check=True, capture_output=True, timeout=30)
    code = reader.finish(timeout=400)
    out, err = reader.text("stdout"), reader.text("stderr")
    assert code == 0, out[-3000:] + err[-3000:]
    assert f"elastic: host {victim} left out for 600 s" in err, err[-3000:]
    assert f"elastic: 3 -> 2 ranks on {names[0]}:1,{names[1]}:1 ({victim} failed), from the " \
           f"last checkpoint" in err
    assert re.search(r"resumed from step \d+, weights \w+; saved at 3 rank\(s\), now 2", out)
    assert "epoch 4: loss" in out
    meta, _, _ = checkpoint.load(str(project.out / "ck"))
    assert meta["size"] == 2 and meta["epoch"] == 4


@pytest.mark.timeout(500)
def test_an_elastic_job_grows_when_a_worker_is_added(project):
    reader = _start_elastic_job(project, 2, epochs=8)     # long enough to be grown
    project.compose("up", "-d", "--scale", "worker=3", "--no-recreate", "worker", check=True,
                    timeout=120)
    code = reader.finish(timeout=400)
    out, err = reader.text("stdout"), reader.text("stderr")
    assert code == 0, out[-3000:] + err[-3000:]
    names = project.containers("worker")
    assert len(names) == 3
    assert f"discovery lists more slots ({names[2]}:1): 2 -> 3 ranks" in err, err[-3000:]
    assert "elastic: 2 -> 3 ranks on" in err
    assert re.search(r"stopping at step \d+ for a resize", out)
    assert re.search(r"resumed from step \d+, weights \w+; saved at 2 rank\(s\), now 3", out)
    assert "left out" not in err
