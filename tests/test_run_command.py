"""distrain-run's pure parts: vendor tables, the mpirun argv, the ranks' environment, the
config's checks, and the output pipeline (rank wrapper splitting, console tagging)."""
import io

import pytest

from distrain import environment as env
from distrain.cores import thread_defaults
from distrain.errors import UsageError
from distrain.protocol import Record, format_record, parse_record
from distrain.run.command import (WRAPPER, env_flags, forwarded_names, heartbeat_interval,
                                  job_env, mpirun_argv, rank_command,
                                  with_huge_pages)
from distrain.run.config import LaunchConfig
from distrain.run.output import Console
from distrain.run.rank import Splitter
from distrain.run.vendors import MPICH, OPENMPI4, OPENMPI5, detect_vendor

PY = "/usr/bin/python3"


@pytest.mark.parametrize("text, vendor", [
    ("mpirun (Open MPI) 5.0.11\n\nReport bugs to https://www.open-mpi.org", OPENMPI5),
    ("mpirun (Open MPI) 4.1.5\n", OPENMPI4),
    ("mpirun (Open MPI) 3.1.6\n", OPENMPI4),
    ("HYDRA build details:\n    Version:  4.1.2\n", MPICH),
    ("Intel(R) MPI Library for Linux* OS, Version 2021.10", MPICH),
])
def test_vendor_is_read_from_version_output(text, vendor):
    assert detect_vendor(text) is vendor


def test_unknown_vendor_is_a_usage_error():
    with pytest.raises(UsageError, match="unrecognised MPI launcher"):
        detect_vendor("SomeMPI 1.0")


def _argv(vendor, config, **kw):
    options = dict(forward=["A", "B"], is_root=False, oversubscribe=False,
                   ranks=["python", "t.py"])
    options.update(kw)
    return mpirun_argv("/x/mpirun", vendor, config, **options)


def test_open_mpi_5_argv_carries_every_flag_as_its_own_item():
    config = LaunchConfig(["python", "t.py"], np=4, hosts="n1:2,n2:2", ssh_port=2222,
                          ssh_identity_file="/k/id", network_interfaces="eth0,10.0.0.0/24",
                          mpi_args="--mca btl self,tcp")
    assert _argv(OPENMPI5, config, is_root=True, oversubscribe=True) == [
        "/x/mpirun", "-np", "4", "--tag-output", "--map-by", "slot", "--bind-to", "none",
        "--allow-run-as-root", "--oversubscribe", "-H", "n1:2,n2:2",
        "--prtemca", "plm_ssh_args", "-p 2222 -i /k/id",
        "--mca", "btl_tcp_if_include", "eth0,10.0.0.0/24",
        "--prtemca", "prte_if_include", "eth0,10.0.0.0/24",
        "-x", "A", "-x", "B", "--mca", "btl", "self,tcp", "python", "t.py"]


def test_open_mpi_4_uses_its_own_mca_names():
    config = LaunchConfig(["p"], np=2, ssh_port=22, network_interfaces="eth1")
    joined = "\0".join(_argv(OPENMPI4, config))
    assert "\0".join(["--mca", "plm_rsh_args", "-p 22"]) in joined
    assert "\0".join(["--mca", "oob_tcp_if_include", "eth1"]) in joined


def test_mpich_argv_uses_hydra_flags_and_no_root_or_oversubscribe_flags():
    config = LaunchConfig(["p"], np=3, hosts="a:2,b:2", network_interfaces="ib0")
    assert _argv(MPICH, config, is_root=True, oversubscribe=True) == [
        "/x/mpirun", "-n", "3", "-prepend-rank", "-hosts", "a:2,b:2", "-iface", "ib0",
        "-genvlist", "A,B", "python", "t.py"]


def test_plain_user_argv_has_no_root_or_oversubscribe_flags():
    argv = _argv(OPENMPI5, LaunchConfig(["p"], np=2))
    assert "--allow-run-as-root" not in argv and "--oversubscribe" not in argv
    assert "-H" not in argv


def test_env_flags_per_vendor():
    assert env_flags(OPENMPI4, ["X"]) == ["-x", "X"]
    assert env_flags(MPICH, ["X", "Y"]) == ["-genvlist", "X,Y"]
    assert env_flags(OPENMPI5, []) == []


def test_rank_command_puts_the_wrapper_before_the_program():
    assert rank_command(OPENMPI5, ("python", "t.py", "--x"), PY, 2.0) == [
        PY, "-I", "-S", WRAPPER, "--rank-var", env.OMPI_RANK,
        "--local-size-var", env.OMPI_LOCAL_SIZE,
        "--thread-vars", f"{env.OMP_NUM_THREADS},{env.TF_NUM_INTRAOP_THREADS}",
        "--heartbeat", "2", "--", "python", "t.py", "--x"]
    assert rank_command(MPICH, ("p",), PY, 0)[4:8] == [
        "--rank-var", env.PMI_RANK, "--local-size-var", env.MPICH_LOCAL_SIZE]


def test_forwarded_names_leave_out_launcher_and_shell_variables():
    environ = {"PATH": "/bin", "HOME": "/root", "DISTRAIN_BACKEND": "mpi",
               "OMPI_COMM_WORLD_RANK": "0", "PMIX_RANK": "0", "PRTE_X": "1", "PMI_RANK": "1",
               "BASH_FUNC_f%%": "() {}", "PWD": "/w", "SHLVL": "2", "_": "/bin/x",
               "bad name": "1", "OMPI_MCA_btl": "tcp", "SLURMD_NODENAME": "node_1"}
    assert forwarded_names(environ) == ["DISTRAIN_BACKEND", "HOME", "PATH"]
    assert forwarded_names(environ, forced=["PWD"]) == ["DISTRAIN_BACKEND", "HOME", "PATH",
                                                        "PWD"]


def test_job_env_sets_launcher_stall_settings_and_x_values():
    config = LaunchConfig(["p"], np=2, env=["FOO=bar", "KEEP"], stall_warning_seconds=5,
                          stall_shutdown_seconds=12.5)
    child = job_env({"PATH": "/bin", "KEEP": "k"}, config)
    assert child == {"PATH": "/bin", "KEEP": "k", "FOO": "bar",
                     env.LAUNCHER: "distrain-run", env.STALL_WARNING_SECONDS: "5",
                     env.STALL_SHUTDOWN_SECONDS: "12.5",
                     env.GLIBC_TUNABLES: "glibc.malloc.hugetlb=1"}


@pytest.mark.parametrize("given, expected", [
    (None, "glibc.malloc.hugetlb=1"),
    ("", "glibc.malloc.hugetlb=1"),
    ("glibc.malloc.arena_max=2", "glibc.malloc.arena_max=2:glibc.malloc.hugetlb=1"),
    ("glibc.malloc.hugetlb=0", "glibc.malloc.hugetlb=0"),             # the user's choice
    ("glibc.malloc.arena_max=2:glibc.malloc.hugetlb=2",
     "glibc.malloc.arena_max=2:glibc.malloc.hugetlb=2"),
    ("glibc.malloc.hugetlbx=1", "glibc.malloc.hugetlbx=1:glibc.malloc.hugetlb=1"),
])
def test_ranks_get_huge_page_malloc_unless_the_user_chose(given, expected):
    config = LaunchConfig(["p"], np=2)
    environ = {} if given is None else {env.GLIBC_TUNABLES: given}
    assert job_env(environ, config)[env.GLIBC_TUNABLES] == expected
    assert with_huge_pages(given) == expected


def test_job_env_restart_count_only_on_relaunch():
    config = LaunchConfig(["p"], np=2)
    assert env.RESTART_COUNT not in job_env({env.RESTART_COUNT: "7"}, config, restart=0)
    assert job_env({}, config, restart=2)[env.RESTART_COUNT] == "2"


def test_job_env_lets_the_daemons_step_overlap_inside_a_slurm_job_only():
    config = LaunchConfig(["p"], np=2)
    assert job_env({env.SLURM_JOB_ID: "7"}, config)[env.SLURM_OVERLAP] == "1"
    assert job_env({env.SLURM_JOB_ID: "7", env.SLURM_OVERLAP: "0"}, config)[
        env.SLURM_OVERLAP] == "0"                                       # the user's choice
    assert env.SLURM_OVERLAP not in job_env({}, config)


def test_thread_defaults_share_the_cores_between_the_host_ranks():
    names = (env.OMP_NUM_THREADS, env.TF_NUM_INTRAOP_THREADS)
    assert thread_defaults({}, names, local_size=2, cores=8) == {
        env.OMP_NUM_THREADS: "4", env.TF_NUM_INTRAOP_THREADS: "4"}
    assert thread_defaults({env.OMP_NUM_THREADS: "3"}, names, local_size=4, cores=2) == {
        env.TF_NUM_INTRAOP_THREADS: "1"}


def test_heartbeat_interval_is_a_fifth_of_the_timeout_within_bounds():
    assert heartbeat_interval(0) == 0
    assert heartbeat_interval(10) == 2
    assert heartbeat_interval(600) == 5
    assert heartbeat_interval(0.5) == 0.2


@pytest.mark.parametrize("kwargs, words", [
    (dict(command=[]), "no program given"),
    (dict(np=0), "-np 0 must be at least 1"),
    (dict(np=None), "give -np N"),
    (dict(np=5, hosts="a:2,b:2"), "more than the 4 slots"),
    (dict(ssh_port=70000), "is not a port"),
    (dict(start_timeout=0), "must be positive"),
    (dict(heartbeat_timeout=-1), "must be 0 or more"),
    (dict(max_restarts=-1), "must be 0 or more"),
    (dict(env=["9X=1"]), "not a variable name"),
    (dict(network_interfaces="eth0;rm"), "not an interface name"),
    (dict(mpi_args="'unclosed"), "--mpi-args"),
    (dict(ssh_identity_file="/my key"), "without spaces"),
])
def test_config_rejects_bad_values_with_one_line(kwargs, words):
    values = dict(command=["p"], np=2)
    values.update(kwargs)
    with pytest.raises(UsageError, match=words) as info:
        LaunchConfig(**values)
    assert "\n" not in str(info.value)


def test_config_defaults_np_to_the_slots_and_allows_oversubscription_when_asked():
    assert LaunchConfig(["p"], hosts="a:2,b:3").np == 5
    assert LaunchConfig(["p"], np=9, hosts="a:2", oversubscribe=True).np == 9


def test_splitter_passes_lines_and_each_bar_state_at_once():
    s = Splitter()
    assert s.feed(b"hello\nwor") == [b"hello\n"]
    assert s.feed(b"ld\n\r1/3") == [b"world\n", b"1/3\r\n"]
    assert s.feed(b"\r2/3") == [b"2/3\r\n"]
    assert s.feed(b"\r3/3 done\n") == [b"3/3 done\n"]
    assert s.feed(b"a\r\nb\r\n") == [b"a\n", b"b\n"]
    assert s.feed(b"tail") == []
    assert s.close() == [b"tail\n"]


def test_splitter_ends_a_bar_left_open_as_a_line():
    s = Splitter()
    assert s.feed(b"50%\r") == [b"50%\r\n"]
    assert s.feed(b"\n") == [b"50%\n"]
    assert s.feed(b"80%\r") == [b"80%\r\n"]
    assert s.close() == [b"80%\n"]


def test_records_are_told_from_output():
    assert parse_record("\x1edistrain exit code=3 signal=0 stopped=1") == (
        "exit", {"code": "3", "signal": "0", "stopped": "1"})
    assert parse_record("exit code=3") is None


def test_a_record_reads_back_as_written_and_an_unknown_kind_is_output():
    line = format_record(Record.START, host="n1", pid=7)
    assert parse_record(line) == (Record.START, {"host": "n1", "pid": "7"})
    assert parse_record(format_record(Record.BEAT)) == (Record.BEAT, {})
    assert parse_record("\x1edistrain nonsense a=1") is None


def test_console_tags_lines_and_redraws_rank_0_bar_in_place():
    out = io.StringIO()
    console = Console(out, out)
    console.rank_line(0, "stdout", "1/3", bar=True)
    console.rank_line(0, "stdout", "2/3", bar=True)
    console.rank_line(1, "stdout", "1/3", bar=True)          # other ranks' bars: not drawn
    console.rank_line(1, "stderr", "warn", bar=False)         # ends the bar's line first
    console.rank_line(0, "stdout", "3/3", bar=True)
    console.rank_line(0, "stdout", "3/3 done", bar=False)     # replaces the bar
    console.plain("stderr", "mpirun says")
    console.close()
    assert out.getvalue() == (
        "[0]<stdout>: 1/3\r[0]<stdout>: 2/3\n[1]<stderr>: warn\n"
        "[0]<stdout>: 3/3\r[0]<stdout>: 3/3 done\nmpirun says\n")


def test_console_on_a_terminal_keeps_the_bar_below_other_output():
    class Tty(io.StringIO):
        def isatty(self):
            return True
    out = Tty()
    console = Console(out, out)
    console.rank_line(0, "stdout", "1/3", bar=True)
    console.rank_line(1, "stdout", "hi", bar=False)
    bar = "[0]<stdout>: 1/3"
    assert out.getvalue() == bar + "\r" + " " * len(bar) + "\r[1]<stdout>: hi\n" + bar
