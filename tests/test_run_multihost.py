"""distrain-run across hosts, on one machine: two network namespaces act as two hosts.

Each namespace (its own address on a bridge, over a veth pair) is a host. Open MPI reaches
them through an rsh agent that enters the namespace (``ip netns exec``) and gives it its own
host name (``unshare --uts``), where ssh would log in. MPI traffic goes over TCP only.
Faults: a rank on one host is killed; one host's link is cut (``ip link set ... down``).
Each must end the job with a clear error, never a hang.
"""
import os
import signal
import subprocess
import sys
import time

import pytest

from run_helpers import namespace_hosts, wait_gone

pytestmark = pytest.mark.mpi

TRAIN = """
import os, sys, time
import numpy as np
import distrain as hvd
hvd.init()
rank, size = hvd.rank(), hvd.size()
open(os.path.join(sys.argv[1], f"{rank}.pid"), "w").write(str(os.getpid()))
rng = np.random.default_rng(rank)
x = rng.normal(size=(64, 3)); y = x @ np.array([1.0, -2.0, 0.5])
w = np.zeros(3)
for step in range(int(sys.argv[2])):
    grad = hvd.allreduce(2 * x.T @ (x @ w - y) / len(x), op=hvd.Average, name="grad")
    w -= 0.1 * grad
    time.sleep(float(sys.argv[3]))
loss = hvd.allreduce(np.array([np.mean((x @ w - y) ** 2)]), op=hvd.Average, name="loss")
print(f"{os.uname().nodename} rank {rank}/{size} w={np.round(w, 3).tolist()} "
      f"loss={loss[0]:.5f}", flush=True)
"""


@pytest.fixture(scope="module")
def hosts():
    """Two namespaced hosts (:class:`distrain.bench.netns.NamespaceHosts`, no rate limit)."""
    yield from namespace_hosts(2)


@pytest.fixture(autouse=True)
def nothing_left(hosts):
    """No process of one test's job (a daemon cut off with its host, say) meets the next's."""
    yield
    assert hosts.end_processes() == []


def _names(hosts) -> dict:
    """address -> the host name its rank reports (its namespace's)."""
    return dict(zip(hosts.addresses, hosts.namespaces))


def _argv(hosts, *extra, steps=10, pause=0.0, pid_dir="."):
    return ["distrain-run", "-np", "2", *hosts.launch_args(), *extra,
            sys.executable, "-c", TRAIN, str(pid_dir), str(steps), str(pause)]


def _wait_for_pids(pid_dir, proc, count=2, timeout=30.0):
    deadline = time.monotonic() + timeout
    while True:
        pids = {p.stem: int(p.read_text()) for p in pid_dir.glob("*.pid") if p.read_text()}
        if len(pids) >= count:
            return pids
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "ranks did not start"
        time.sleep(0.1)


@pytest.mark.timeout(40)
def test_training_runs_across_two_hosts_over_tcp(hosts, tmp_path):
    done = subprocess.run(_argv(hosts, pid_dir=tmp_path), capture_output=True,
                          text=True, timeout=35)
    assert done.returncode == 0, done.stderr
    lines = [line for line in done.stdout.splitlines() if " rank " in line]
    assert len(lines) == 2
    names = sorted(hosts.namespaces)
    assert lines[0].startswith(f"[0]<stdout>: {names[0]} rank 0/2") or \
        lines[1].startswith(f"[0]<stdout>: {names[0]} rank 0/2")
    assert any(line.startswith(f"[1]<stdout>: {names[1]} rank 1/2") for line in lines)
    weights = {line.split(" w=")[1] for line in lines}
    assert len(weights) == 1, "the two hosts ended with different weights"


@pytest.mark.timeout(40)
def test_hosts_with_unequal_rank_counts_train_together(hosts, tmp_path):
    # two ranks on one host, one on the other: every rank must cut messages alike (the
    # lone second rank once took the one-host chunk size, and the first allreduce failed)
    slots = f"{hosts.addresses[0]}:2,{hosts.addresses[1]}:1"
    done = subprocess.run(["distrain-run", "-np", "3", "-H", slots, *hosts.mpi_flags(),
                           sys.executable, "-c", TRAIN, str(tmp_path), "10", "0"],
                          capture_output=True, text=True, timeout=35)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = [line for line in done.stdout.splitlines() if " rank " in line]
    assert sorted(line.split(" rank ")[1].split()[0] for line in lines) == \
        ["0/3", "1/3", "2/3"]
    assert len({line.split(" w=")[1] for line in lines}) == 1


@pytest.mark.timeout(40)
def test_ranks_that_abort_the_job_are_named_with_their_error(hosts):
    # both ranks find the mismatch and abort at once; the teardown can take the rank
    # wrappers' exit records with it, and mpirun may pass the last lines on untagged: the
    # summary must still name a rank that failed and its code, not a host gone away
    addresses, names = hosts.addresses, _names(hosts)
    program = ("import distrain as hvd, numpy as np\nhvd.init()\n"
               "hvd.allreduce(np.ones(4 + hvd.rank()), name='mismatched')\n")
    done = subprocess.run(["distrain-run", "-np", "2", *hosts.launch_args(), sys.executable,
                           "-c", program], capture_output=True, text=True, timeout=35)
    assert done.returncode == 1, done.stderr[-3000:]
    named = [f"rank {r} on host {names[addresses[r]]} ({addresses[r]}) exited with code 1"
             for r in (0, 1)]
    summary = [line for line in done.stderr.splitlines() if line.startswith("distrain-run:")]
    assert summary and any(summary[-1].startswith(f"distrain-run: {n}") for n in named), \
        done.stderr[-3000:]
    assert "CollectiveMismatchError" in done.stderr
    assert "went away" not in done.stderr


@pytest.mark.timeout(40)
def test_killing_one_hosts_rank_ends_the_job_naming_it(hosts, tmp_path):
    addresses, names = hosts.addresses, _names(hosts)
    proc = subprocess.Popen(_argv(hosts, steps=100000, pause=0.01,
                                  pid_dir=tmp_path),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        pids = _wait_for_pids(tmp_path, proc)
        os.kill(pids["1"], signal.SIGKILL)
        out, err = proc.communicate(timeout=25)
    finally:
        if proc.poll() is None:
            proc.kill()
    # rank 1's wrapper reports the kill. On a loaded machine rank 0 can abort first (Open
    # MPI's code 14 on losing its peer) and mpirun's teardown drop rank 1's record in flight:
    # then rank 0's exit is what distrain-run heard of first, and names the job's end.
    killed = f"rank 1 on host {names[addresses[1]]} ({addresses[1]}) was killed by SIGKILL"
    aborted = f"rank 0 on host {names[addresses[0]]} ({addresses[0]}) exited with code 14"
    assert (killed in err and proc.returncode == 128 + signal.SIGKILL) or (
        aborted in err and proc.returncode == 14), err
    assert not wait_gone(pids.values())


@pytest.mark.timeout(50)
@pytest.mark.parametrize("watch, flags, expected", [
    ("stall inspector", ["--stall-warning-seconds", "2", "--stall-shutdown-seconds", "4",
                         "--heartbeat-timeout", "30"],
     # cut while waiting for the negotiation, or while moving the data (the watchdog)
     [("ranks not joined: 1", "has moved its data for"),
      "rank 0 on host {a} ({aip}) exited with code 124"]),
    ("heartbeat", ["--stall-shutdown-seconds", "0", "--heartbeat-timeout", "4"],
     ["lost contact with rank 1 on host {b} ({bip}): no output or heartbeat for 4 s"]),
])
def test_cutting_one_hosts_link_ends_the_job_within_the_timeouts(hosts, tmp_path, watch, flags,
                                                                 expected):
    addresses, names = hosts.addresses, _names(hosts)
    links = dict(zip(addresses, hosts.links))
    proc = subprocess.Popen(_argv(hosts, *flags, steps=100000, pause=0.01,
                                  pid_dir=tmp_path),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        pids = _wait_for_pids(tmp_path, proc)
        time.sleep(0.5)
        subprocess.run(["ip", "link", "set", links[addresses[1]], "down"], check=True)
        out, err = proc.communicate(timeout=30)
    finally:
        subprocess.run(["ip", "link", "set", links[addresses[1]], "up"])
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 124, err
    for words in expected:
        choices = words if isinstance(words, tuple) else (words,)
        assert any(w.format(a=names[addresses[0]], b=names[addresses[1]], aip=addresses[0],
                            bip=addresses[1]) in err
                   for w in choices), err
    # While the link is down nothing can reach the cut host's daemon; once it is back, the
    # daemon finds distrain-run's mpirun gone and stops its ranks.
    assert not wait_gone(pids.values(), within=10.0)
