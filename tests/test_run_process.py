"""distrain-run driving the real mpirun: tagging, failures, signals, timeouts, restarts.

Ranks run tests/launcher_ranks/rank_program.py (no TensorFlow, no MPI calls) and write their pid
to a file, so every test can check that no rank outlives distrain-run.
"""
import io
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest

from distrain import environment as env
from distrain.run import LaunchConfig, launch
from distrain.run.command import with_huge_pages

from run_helpers import PROGRAM, alive

pytestmark = pytest.mark.mpi

HYDRA = shutil.which("mpiexec.hydra") or shutil.which("mpiexec.mpich")


def _pids(pid_dir) -> dict[str, int]:
    return {p.stem: int(p.read_text()) for p in pid_dir.glob("*.pid") if p.read_text()}


def _processes_mentioning(token: str) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit() and int(entry) != os.getpid():
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as stream:
                    if token.encode() in stream.read() and alive(int(entry)):
                        found.append(int(entry))
            except OSError:
                pass
    return found


def assert_no_orphans(pid_dir, grace: float = 3.0) -> None:
    """Every rank, and every process started for the job, is gone."""
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        left = [p for p in _pids(pid_dir).values() if alive(p)]
        left += _processes_mentioning(str(pid_dir))
        if not left:
            return
        time.sleep(0.1)
    pytest.fail(f"processes of the job outlived distrain-run: {sorted(set(left))}")


def run(args, pid_dir, program_args=(), timeout=40, **kw):
    argv = ["distrain-run", *args, sys.executable, PROGRAM, "--pid-dir", str(pid_dir),
            *program_args]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, **kw)
    assert_no_orphans(pid_dir)
    return done


@pytest.fixture
def pid_dir(tmp_path):
    path = tmp_path / "pids"
    path.mkdir()
    return path


@pytest.mark.timeout(60)
@pytest.mark.parametrize("np_", [2, 4])
def test_every_rank_runs_with_tagged_output_and_its_environment(pid_dir, np_):
    done = run(["-np", str(np_), "-x", "DISTRAIN_TEST_VALUE=42", "--stall-warning-seconds",
                "7", "--stall-shutdown-seconds", "30"], pid_dir,
               ["--print-env", env.OMP_NUM_THREADS, "--print-env", env.LAUNCHER,
                "--print-env", "DISTRAIN_TEST_VALUE", "--print-env", env.STALL_WARNING_SECONDS,
                "--print-env", env.STALL_SHUTDOWN_SECONDS, "--print-env", env.RESTART_COUNT,
                "--print-env", env.GLIBC_TUNABLES])
    assert done.returncode == 0, done.stderr
    assert sorted(map(int, _pids(pid_dir))) == list(range(np_))
    threads = max(1, len(os.sched_getaffinity(0)) // np_)
    lines = done.stdout.splitlines()
    for rank in range(np_):
        tag = f"[{rank}]<stdout>: "
        assert tag + f"hello from rank {rank}" in lines
        for expected in (f"{env.OMP_NUM_THREADS}={threads}", f"{env.LAUNCHER}=distrain-run",
                         "DISTRAIN_TEST_VALUE=42", f"{env.STALL_WARNING_SECONDS}=7",
                         f"{env.STALL_SHUTDOWN_SECONDS}=30", f"{env.RESTART_COUNT}=<unset>",
                         f"{env.GLIBC_TUNABLES}="
                         f"{with_huge_pages(os.environ.get(env.GLIBC_TUNABLES))}"):
            assert tag + expected in lines
    if np_ > len(os.sched_getaffinity(0)):
        assert "oversubscribing" in done.stderr


@pytest.mark.timeout(60)
@pytest.mark.parametrize("np_, failing, code", [(2, 1, 7), (4, 2, 5), (4, 0, 3)])
def test_a_failing_rank_stops_the_others_and_names_itself(pid_dir, np_, failing, code):
    done = run(["-np", str(np_)], pid_dir,
               ["--fail-rank", str(failing), "--code", str(code), "--sleep", "120"])
    assert done.returncode == code
    message = done.stderr.split("distrain-run: ", )[-1]
    host = os.uname().nodename
    assert message.startswith(f"rank {failing} on host {host} exited with code {code}; "
                              f"stopped the other ranks")
    assert f"rank {failing} failing on purpose" in message


@pytest.mark.timeout(60)
def test_a_rank_killed_by_a_signal_is_reported_as_such(pid_dir):
    done = run(["-np", "2"], pid_dir, ["--fail-rank", "1", "--code", "-9", "--sleep", "120"])
    assert done.returncode == 128 + 9
    assert "rank 1 on host" in done.stderr and "was killed by SIGKILL" in done.stderr


@pytest.mark.timeout(60)
@pytest.mark.parametrize("signum, code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_sigterm_and_sigint_stop_every_rank(pid_dir, signum, code):
    argv = ["distrain-run", "-np", "4", sys.executable, PROGRAM, "--pid-dir", str(pid_dir),
            "--sleep", "120"]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 30
        while len(_pids(pid_dir)) < 4:
            assert time.monotonic() < deadline and proc.poll() is None, "ranks did not start"
            time.sleep(0.1)
        proc.send_signal(signum)
        out, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == code
    assert f"stopped by {signal.Signals(signum).name}" in err
    assert_no_orphans(pid_dir)


@pytest.mark.timeout(60)
def test_start_timeout_names_the_host_that_never_started(pid_dir, tmp_path):
    agent = tmp_path / "hanging-ssh"
    agent.write_text(f"#!/bin/sh\necho $$ > {pid_dir}/agent.pid\nexec sleep 300\n")
    agent.chmod(0o755)
    done = run(["-np", "2", "-H", "localhost:1,ghost-host:1", "--start-timeout", "2",
                "--mpi-args", f"--prtemca plm_ssh_agent {agent}"], pid_dir)
    assert done.returncode == 124
    assert "did not start within 2 s (--start-timeout)" in done.stderr
    assert "ghost-host" in done.stderr


@pytest.mark.timeout(60)
def test_max_restarts_relaunches_with_the_restart_count(pid_dir, tmp_path):
    done = run(["-np", "2", "--max-restarts", "2"], pid_dir,
               ["--fail-rank", "1", "--fail-once", str(tmp_path / "failed-once"),
                "--print-env", env.RESTART_COUNT])
    assert done.returncode == 0, done.stderr
    assert "rank 1 on host" in done.stderr
    assert f"restart 1 of 2: relaunching every rank with {env.RESTART_COUNT}=1" in done.stderr
    assert "restart 2 of 2" not in done.stderr, done.stderr
    assert f"[0]<stdout>: {env.RESTART_COUNT}=<unset>" in done.stdout
    assert f"[0]<stdout>: {env.RESTART_COUNT}=1" in done.stdout


@pytest.mark.timeout(60)
def test_max_restarts_gives_up_with_the_rank_code(pid_dir):
    done = run(["-np", "2", "--max-restarts", "1"], pid_dir, ["--fail-rank", "0", "--code", "9"])
    assert done.returncode == 9
    assert done.stderr.count("rank 0 on host") == 2
    assert "restart 1 of 1" in done.stderr


@pytest.mark.timeout(60)
def test_rank_0_progress_bar_is_redrawn_on_one_tagged_line(pid_dir, tmp_path):
    done = run(["-np", "2", "--output-filename", str(tmp_path / "logs")], pid_dir, ["--bar"])
    assert done.returncode == 0, done.stderr
    pieces = [p for line in done.stdout.split("\n") for p in line.split("\r") if p]
    assert all(p.startswith(("[0]<stdout>: ", "[1]<stdout>: ")) for p in pieces), pieces
    assert "[0]<stdout>: step 3/3\n" in done.stdout
    assert "[0]<stdout>: step 1/3\r" in done.stdout or "step 1/3\n" in done.stdout
    logs = sorted(os.listdir(tmp_path / "logs"))
    assert logs == ["rank.0.log", "rank.1.log"]
    assert (tmp_path / "logs" / "rank.0.log").read_text() == "hello from rank 0\nstep 3/3\n"


@pytest.mark.timeout(60)
def test_stall_shutdown_flag_ends_a_job_whose_rank_never_joins():
    code = ("import distrain as hvd, numpy as np, time; hvd.init(); "
            "time.sleep(120) if hvd.rank() == 1 else None; hvd.allreduce(np.ones(1), "
            "name='grad')")
    done = subprocess.run(["distrain-run", "-np", "2", "--stall-warning-seconds", "1",
                           "--stall-shutdown-seconds", "3", sys.executable, "-c", code],
                          capture_output=True, text=True, timeout=50)
    assert done.returncode == 124
    assert "ranks not joined: 1" in done.stderr
    assert "rank 0 on host" in done.stderr and "exited with code 124" in done.stderr


@pytest.mark.timeout(60)
def test_python_api_launch_takes_the_same_config(pid_dir):
    out, err = io.StringIO(), io.StringIO()
    config = LaunchConfig([sys.executable, PROGRAM, "--pid-dir", str(pid_dir)], np=2)
    assert launch(config, out=out, err=err) == 0, err.getvalue()
    assert "[1]<stdout>: hello from rank 1" in out.getvalue().splitlines()
    assert_no_orphans(pid_dir)


@pytest.mark.timeout(60)
@pytest.mark.skipif(HYDRA is None, reason="MPICH's mpiexec.hydra is not installed")
def test_mpich_hydra_table_tags_output_and_stops_a_failed_job(pid_dir):
    done = run(["-np", "2"], pid_dir, ["--print-env", env.OMP_NUM_THREADS, "--fail-rank", "1",
                                       "--code", "4", "--sleep", "120"],
               env={**os.environ, env.MPIRUN: HYDRA})
    assert done.returncode == 4, done.stderr
    threads = max(1, len(os.sched_getaffinity(0)) // 2)
    for rank in range(2):
        assert f"[{rank}]<stdout>: hello from rank {rank}" in done.stdout.splitlines()
        assert f"[{rank}]<stdout>: {env.OMP_NUM_THREADS}={threads}" in done.stdout.splitlines()
    assert f"rank 1 on host {os.uname().nodename} exited with code 4" in done.stderr
    assert "rank 1 failing on purpose" in done.stderr
