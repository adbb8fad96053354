"""Hosts from a discovery script (--host-discovery-script, DISTRAIN_HOST_DISCOVERY_SCRIPT) and
the DNS discovery script of the compose setup (python -m distrain.run.service_hosts): real
scripts, real sockets, a real mpirun."""
import os
import socket
import subprocess
import sys
import threading

import pytest

from distrain import environment as env
from distrain.errors import UsageError
from distrain.run import service_hosts
from distrain.run.cli import build_parser, config_from_args, main
from distrain.run.config import LaunchConfig
from distrain.run.discovery import (DiscoveryTimeout, parse_discovered, script_argv,
                                    wait_for_hosts)
from distrain.run.hosts import Host

from run_helpers import PROGRAM, FakeClock


def _script(tmp_path, body: str) -> str:
    path = tmp_path / "discover.sh"
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(0o755)
    return str(path)


def _counting(tmp_path, *answers: str) -> str:
    """A script printing answers[k] on its k-th call (the last one from then on)."""
    cases = "\n".join(f'  {k}) printf "{a}" ;;' for k, a in enumerate(answers[:-1], 1))
    return _script(tmp_path, f"""n=$(cat "{tmp_path}/calls" 2>/dev/null || echo 0)
n=$((n + 1)); echo "$n" > "{tmp_path}/calls"
case "$n" in
{cases}
  *) printf "{answers[-1]}" ;;
esac
""")


def test_parse_reads_host_slots_lines_comments_and_blank_lines():
    assert parse_discovered("w1:2\n\n# all\nw2   # one slot\n") == (Host("w1", 2), Host("w2", 1))
    assert parse_discovered("") == ()


@pytest.mark.parametrize("text, words", [
    ("w1 slots=2\n", "line 1: 'w1 slots=2' is not host:slots"),
    ("w1:2\nw1:1\n", "appears twice"),
    ("w1:0\n", "slots must be a positive integer"),
    ("a,b\n", "is not host:slots"),
])
def test_parse_names_what_is_malformed(text, words):
    with pytest.raises(UsageError, match=words):
        parse_discovered(text)


def test_waits_until_the_script_lists_enough_slots(tmp_path):
    script = _counting(tmp_path, "w1:1\\n", "w1:1\\nw2:1\\n")
    clock, told = FakeClock(), []
    hosts = wait_for_hosts(script_argv(script), 2, 30, on_wait=told.append, clock=clock,
                           sleep=clock.sleep)
    assert hosts == (Host("w1"), Host("w2"))
    assert told == ["waiting up to 30 s for hosts: it lists w1:1 (1 slot), -np 2 needs 2"]


def test_without_np_the_first_answer_listing_a_host_counts(tmp_path):
    script = _counting(tmp_path, "", "w1:3\\n")
    clock = FakeClock()
    assert wait_for_hosts([script], None, 30, clock=clock, sleep=clock.sleep) == (Host("w1", 3),)


def test_a_script_failing_until_the_timeout_is_reported_with_its_last_words(tmp_path):
    script = _script(tmp_path, "echo 'worker: 1 of 2 answer; not yet: w2' >&2\nexit 1\n")
    clock = FakeClock()
    with pytest.raises(DiscoveryTimeout) as raised:
        wait_for_hosts([script], 2, 5, clock=clock, sleep=clock.sleep)
    assert str(raised.value) == (f"host discovery found too few hosts in 5 s: {script} exited "
                                 f"with code 1: worker: 1 of 2 answer; not yet: w2")


def test_the_flag_and_the_environment_variable_and_their_precedence():
    parse = build_parser().parse_args
    flag = config_from_args(parse(["--host-discovery-script", "d.sh", "p"]), environ={})
    assert flag.host_discovery_script == "d.sh" and flag.np is None
    from_env = config_from_args(parse(["-np", "2", "p"]),
                                environ={env.HOST_DISCOVERY_SCRIPT: "e.sh --x"})
    assert from_env.host_discovery_script == "e.sh --x" and from_env.np == 2
    given = config_from_args(parse(["-H", "a:1", "p"]), environ={env.HOST_DISCOVERY_SCRIPT: "e"})
    assert given.host_discovery_script is None and given.hosts == (Host("a"),)
    with pytest.raises(UsageError, match="not both"):
        LaunchConfig(["p"], hosts="a:1", host_discovery_script="d.sh")
    with pytest.raises(UsageError, match="empty"):
        LaunchConfig(["p"], host_discovery_script="  ")


@pytest.mark.parametrize("body, words", [
    ("echo 'w1 slots=2'\n", "output line 1: 'w1 slots=2' is not host:slots"),
    (None, "not found; give its path"),
])
def test_bad_scripts_are_one_line_and_exit_2(capsys, tmp_path, body, words):
    script = _script(tmp_path, body) if body else str(tmp_path / "missing.sh")
    code = main(["-np", "1", "--host-discovery-script", script, sys.executable, PROGRAM])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and words in err[0], err


def test_discovery_and_dash_h_together_are_refused(capsys):
    assert main(["-H", "a:1", "--host-discovery-script", "d", "p"]) == 2
    assert "not allowed with argument" in capsys.readouterr().err


@pytest.mark.mpi
@pytest.mark.timeout(60)
def test_distrain_run_waits_for_the_slots_then_runs_on_the_hosts_found(tmp_path):
    script = _counting(tmp_path, "localhost:1\\n", "localhost:1\\n", "localhost:2\\n")
    done = subprocess.run(["distrain-run", "-np", "2", "--host-discovery-script", script,
                           sys.executable, PROGRAM, "--print-env", "OMPI_COMM_WORLD_SIZE"],
                          capture_output=True, text=True, timeout=50)
    assert done.returncode == 0, done.stderr
    assert done.stderr.count("waiting up to 30 s for hosts: it lists localhost:1") == 1
    assert "2 ranks on the hosts found: localhost:2" in done.stderr
    assert sorted(line.split(": ", 1)[1] for line in done.stdout.splitlines()
                  if "OMPI_COMM_WORLD_SIZE" in line) == ["OMPI_COMM_WORLD_SIZE=2"] * 2


@pytest.mark.timeout(60)
def test_too_few_slots_until_the_start_timeout_exits_124(tmp_path):
    script = _script(tmp_path, "echo localhost:1\n")
    done = subprocess.run(["distrain-run", "-np", "2", "--start-timeout", "2",
                           "--host-discovery-script", script, sys.executable, PROGRAM],
                          capture_output=True, text=True, timeout=50)
    assert done.returncode == 124, done.stderr
    assert done.stderr.strip().splitlines()[-1] == (
        "distrain-run: host discovery found too few hosts in 2 s: it lists localhost:1 "
        "(1 slot), -np 2 needs 2")


class Greeter:
    """A TCP server on loopback that greets each connection with ``banner``."""

    def __init__(self, banner: bytes):
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.banner = banner
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        while True:
            try:
                conn, _ = self.server.accept()
            except OSError:
                return
            with conn:
                conn.sendall(self.banner)
                conn.recv(64)

    def close(self):
        self.server.close()


@pytest.fixture
def sshd_like():
    server = Greeter(b"SSH-2.0-OpenSSH_9.2\r\n")
    yield server
    server.close()


def test_service_hosts_prints_each_address_answering_ssh(capsys, sshd_like):
    assert service_hosts.main(["localhost", "--port", str(sshd_like.port), "--slots", "2"]) == 0
    assert capsys.readouterr().out == "localhost:2\n"


def test_service_hosts_fails_naming_hosts_that_do_not_answer_ssh(capsys):
    web = Greeter(b"HTTP/1.1 400 Bad Request\r\n\r\n")
    try:
        assert not service_hosts.answers_ssh("127.0.0.1", web.port)
        assert service_hosts.main(["localhost", "--port", str(web.port)]) == 1
    finally:
        web.close()
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == (f"service_hosts: 0 of 1 hosts of 'localhost' answer ssh on port "
                            f"{web.port}; not yet: localhost\n")


def test_service_hosts_with_a_name_that_resolves_to_nothing(capsys):
    assert service_hosts.main(["no-such-host.invalid"]) == 1
    assert "resolves to no address yet" in capsys.readouterr().err


def test_short_names_are_used_only_where_they_resolve_back():
    assert service_hosts.short_name("p_worker_1.p_mpi", "10.0.0.3", lambda n: "10.0.0.3") == \
        "p_worker_1"
    assert service_hosts.short_name("p_worker_1.p_mpi", "10.0.0.3", lambda n: "10.0.0.9") == \
        "p_worker_1.p_mpi"

    def unknown(name):
        raise socket.gaierror(name)
    assert service_hosts.short_name("a.b", "10.0.0.3", unknown) == "a.b"


def test_service_hosts_runs_as_a_module(sshd_like):
    done = subprocess.run([sys.executable, "-m", "distrain.run.service_hosts", "localhost",
                           "--port", str(sshd_like.port)], capture_output=True, text=True,
                          timeout=30, env=dict(os.environ))
    assert done.returncode == 0 and done.stdout == "localhost:1\n", done.stderr
