"""Shared helpers: running programs under a real mpirun with a timeout."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys

import pytest

from distrain import environment as env

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def mpirun_argv(np_: int) -> list[str]:
    """``mpirun -np N`` for this machine: root allowed, oversubscribed past the cores."""
    mpirun = shutil.which("mpirun")
    if mpirun is None:
        pytest.fail("mpirun is not on PATH: install distrain with its dependencies "
                    "(pip install -e '.[test]') or a system MPI")
    argv = [mpirun, "-np", str(np_)]
    if os.geteuid() == 0:
        argv.append("--allow-run-as-root")
    if np_ > (os.cpu_count() or 1):
        argv.append("--oversubscribe")
    return argv


def rank_env(np_: int, **extra: str) -> dict[str, str]:
    """The environment for ranks: a fair thread share each, quiet TensorFlow."""
    child = dict(os.environ)
    threads = str(max(1, (os.cpu_count() or 1) // np_))
    child.update({env.OMP_NUM_THREADS: threads, env.TF_NUM_INTRAOP_THREADS: threads,
                  env.TF_NUM_INTEROP_THREADS: "1", env.TF_CPP_MIN_LOG_LEVEL: "3",
                  "PYTHONPATH": ROOT + os.pathsep + child.get("PYTHONPATH", "")})
    child.update(extra)
    return child


def run_launcher(argv: list[str], timeout: float, env: dict[str, str]):
    """Runs a launcher (mpirun, horovodrun) in a session of its own; a hang becomes a test
    failure after ``timeout``, and every process of the session is killed then, ranks
    included (killing the launcher alone left its ranks running)."""
    process = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        stdout, stderr = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        stdout = stderr = ""
        # SIGTERM first: the launcher ends its ranks (they live in its daemon's session,
        # which a SIGKILL of the launcher's group does not reach); then SIGKILL what is left.
        for sig, grace in ((signal.SIGTERM, 10), (signal.SIGKILL, None)):
            try:
                os.killpg(process.pid, sig)
            except ProcessLookupError:
                break
            try:
                stdout, stderr = process.communicate(timeout=grace)
                break
            except subprocess.TimeoutExpired:
                continue
        pytest.fail(f"{' '.join(argv)} did not finish in {timeout} s:\n"
                    f"{(stdout or '')[-3000:]}\n{(stderr or '')[-3000:]}")
    return subprocess.CompletedProcess(argv, process.returncode, stdout, stderr)


def run_mpi(np_: int, args: list[str], timeout: float, **extra_env: str):
    """Runs ``mpirun -np N python ARGS``; a hang becomes a test failure after ``timeout``."""
    return run_launcher(mpirun_argv(np_) + [sys.executable] + args, timeout,
                        rank_env(np_, **extra_env))


def json_rows(output: str) -> list[dict]:
    """Every JSON object the ranks printed, in order, wherever the launcher's merging of
    their output put it (two ranks' lines can share one line)."""
    decoder, rows, at = json.JSONDecoder(), [], output.find("{")
    while at != -1:
        try:
            row, end = decoder.raw_decode(output, at)
        except ValueError:
            at = output.find("{", at + 1)
            continue
        rows.append(row)
        at = output.find("{", end)
    return rows


def _horovod_importable() -> bool:
    from distrain.backends.horovod import horovod_importable
    return shutil.which("horovodrun") is not None and horovod_importable()


HOROVOD = _horovod_importable()
# tests/horovod needs horovodrun and horovod.tensorflow (TensorFlow <= 2.15); .ci/run runs
# it in a Horovod environment of its own. Elsewhere it is left out, and the header says so.
collect_ignore = [] if HOROVOD else ["horovod"]


def pytest_report_header(config):
    if not HOROVOD:
        return ("tests/horovod not collected: horovodrun/horovod.tensorflow are not installed "
                "here (.ci/run runs them in its TensorFlow 2.15 + Horovod environment)")
    return "tests/horovod collected: Horovod is installed"


@pytest.fixture(scope="session", autouse=True)
def no_stale_mpi_sessions():
    """Session directories of Open MPI launchers killed by an earlier run on this machine
    would fail a launcher that gets the same pid (distrain.run.leftovers): swept first."""
    from distrain.run.leftovers import sweep
    sweep()
    yield


@pytest.fixture(scope="session")
def image():
    """distrain's image of this checkout, built once a session (tests/docker, tests/slurm)."""
    from docker_helpers import build_image
    return build_image()
