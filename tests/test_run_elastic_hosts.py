"""Elastic jobs across hosts, on one machine: three network namespaces are three hosts
(distrain.bench.netns), listed by a discovery script that reads a file the test edits.
distrain.train runs on them with checkpoints; a host is killed (every process in its
namespace), added, or made to fail whenever it joins."""
import os
import re
import shutil
import subprocess
import sys
import time

import numpy as np
import pytest

from distrain.train import checkpoint

from conftest import ROOT, rank_env
from run_helpers import namespace_hosts

pytestmark = pytest.mark.mpi

TRAIN = ["-m", "distrain.train", "--model", "models_for_tests:slow", "--steps-per-epoch", "20",
         "--threads", "1", "--checkpoint-every", "5", "--keep-checkpoints", "100",
         "--no-cost-model"]


@pytest.fixture(scope="module")
def hosts():
    yield from namespace_hosts(3)


@pytest.fixture(autouse=True)
def nothing_left(hosts):
    yield
    assert hosts.end_processes() == []


def _env(**extra):
    return rank_env(1, PYTHONPATH=os.path.join(ROOT, "tests", "user_programs") + os.pathsep
                    + ROOT, **extra)


class Job:
    """An elastic distrain-run job on ``hosts``, whose discovery script reads ``listing``."""

    def __init__(self, hosts, tmp_path, listed, *flags, epochs=3, model=None, **extra_env):
        self.listing = tmp_path / "hosts.txt"
        self.ckpt = tmp_path / "ckpt"
        self.list(hosts, listed)
        train = list(TRAIN) if model is None else [
            a if a != "models_for_tests:slow" else model for a in TRAIN]
        argv = ["distrain-run", "--host-discovery-script", f"cat {self.listing}",
                *hosts.mpi_flags(), *flags, sys.executable, *train, "--epochs", str(epochs),
                "--checkpoint-dir", str(self.ckpt)]
        self.out = tmp_path / "out.txt"
        self.proc = subprocess.Popen(argv, cwd=ROOT, env=_env(**extra_env),
                                     stdout=open(self.out, "w"), stderr=subprocess.STDOUT)

    def list(self, hosts, indices) -> None:
        self.listing.write_text("".join(f"{hosts.addresses[i]}:1\n" for i in indices))

    def wait_for_checkpoint(self, step: int, timeout: float = 90) -> None:
        deadline = time.monotonic() + timeout
        while not (self.ckpt / f"checkpoint-{step}.npz").exists():
            assert self.proc.poll() is None, self.text()
            assert time.monotonic() < deadline, f"no checkpoint {step}:\n{self.text()}"
            time.sleep(0.1)

    def finish(self, timeout: float = 150) -> int:
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            pytest.fail(f"the elastic job did not end in {timeout} s:\n{self.text()}")

    def text(self) -> str:
        return self.out.read_text()


def _digest(path) -> str:
    with np.load(path) as data:
        return checkpoint.weights_digest(data[k] for k in sorted(data.files)
                                         if k.startswith("model/"))


def _step(path) -> int:
    meta, _, _ = checkpoint.load(os.path.dirname(path))
    return meta["step"]


@pytest.mark.timeout(300)
def test_a_killed_host_leaves_the_job_at_two_ranks_as_if_resumed_there(hosts, tmp_path):
    job = Job(hosts, tmp_path, [0, 1, 2], "--min-np", "2", "--max-np", "3",
              "--blacklist-cooldown", "600")
    job.wait_for_checkpoint(10)
    assert hosts.kill_host(2)
    assert job.finish() == 0, job.text()
    out = job.text()
    assert f"elastic: host {hosts.addresses[2]} left out for 600 s" in out
    assert (f"elastic: 3 -> 2 ranks on {hosts.addresses[0]}:1,{hosts.addresses[1]}:1 "
            f"({hosts.addresses[2]} failed), from the last checkpoint (launch 2)") in out
    resumed = int(re.search(r"resumed from step (\d+), weights \w+; saved at 3 rank\(s\), "
                            r"now 2", out)[1])
    assert resumed >= 10
    final = _step(job.ckpt / "checkpoint.npz")
    # the same checkpoint resumed by a fixed-size job of 2 ranks ends with the same weights
    again = tmp_path / "again"
    again.mkdir()
    shutil.copy(job.ckpt / f"checkpoint-{resumed}.npz", again / "checkpoint.npz")
    done = subprocess.run(
        ["distrain-run", "-np", "2", "-H", f"{hosts.addresses[0]}:1,{hosts.addresses[1]}:1",
         *hosts.mpi_flags(), sys.executable, *TRAIN, "--epochs", "3", "--checkpoint-dir",
         str(again), "--resume"], cwd=ROOT, env=_env(), capture_output=True, text=True,
        timeout=120)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert _step(again / "checkpoint.npz") == final
    assert _digest(again / "checkpoint.npz") == _digest(job.ckpt / "checkpoint.npz")


@pytest.mark.timeout(300)
def test_a_host_listed_while_the_job_runs_grows_it_at_a_checkpoint(hosts, tmp_path):
    job = Job(hosts, tmp_path, [0, 1], "--min-np", "2", "--max-np", "3", epochs=6)
    job.wait_for_checkpoint(5)
    job.list(hosts, [0, 1, 2])
    assert job.finish() == 0, job.text()
    out = job.text()
    assert f"discovery lists more slots ({hosts.addresses[2]}:1): 2 -> 3 ranks; the job grows " \
           f"at its next checkpoint" in out
    stopped = int(re.search(r"stopping at step (\d+) for a resize; the checkpoint is saved",
                            out)[1])
    assert f"elastic: 2 -> 3 ranks on {hosts.addresses[0]}:1,{hosts.addresses[1]}:1," \
           f"{hosts.addresses[2]}:1 ({hosts.addresses[2]} added), from the last checkpoint " \
           f"(launch 2)" in out
    assert re.search(rf"resumed from step {stopped}, weights \w+; saved at 2 rank\(s\), now 3",
                     out)
    assert "left out" not in out
    meta, _, _ = checkpoint.load(str(job.ckpt))
    assert meta["size"] == 3 and meta["epoch"] == 6


@pytest.mark.timeout(200)
def test_below_min_np_longer_than_the_timeout_ends_the_job_naming_the_host(hosts, tmp_path):
    job = Job(hosts, tmp_path, [0, 1], "--min-np", "2", "--elastic-timeout", "3",
              "--blacklist-cooldown", "600")
    job.wait_for_checkpoint(5)
    hosts.kill_host(1)
    assert job.finish() == 124, job.text()
    last = job.text().strip().splitlines()[-1]
    assert last.startswith(f"distrain-run: error: fewer than 2 usable slots for 3 s (--min-np 2, "
                           f"--elastic-timeout): it lists {hosts.addresses[0]}:1,"
                           f"{hosts.addresses[1]}:1, 1 usable slot(s). Hosts lost: host "
                           f"{hosts.addresses[1]}: rank 1 on host"), last


@pytest.mark.timeout(400)
def test_a_host_that_fails_whenever_it_joins_is_left_out_longer_each_time(hosts, tmp_path):
    bad = hosts.namespaces[2]
    job = Job(hosts, tmp_path, [0, 1, 2], "--min-np", "2", "--max-np", "3",
              "--blacklist-cooldown", "1", epochs=6, model="models_for_tests:slow_failing_on_host",
              DISTRAIN_TEST_BAD_HOST=bad)
    assert job.finish(timeout=380) == 0, job.text()
    out = job.text()
    bad_address = hosts.addresses[2]
    assert f"elastic: host {bad_address} left out for 1 s (--blacklist-cooldown)" in out
    assert f"elastic: host {bad_address} failed 2 times: left out for 2 s" in out
    assert f"injected failure on {bad}" in out
    meta, _, _ = checkpoint.load(str(job.ckpt))
    assert meta["epoch"] == 6
