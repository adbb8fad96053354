"""The elastic driver of distrain-run (distrain.run.relaunch): flags, the blacklist, which
hosts a launch takes, and what the driver does after each way a launch can end. The
launches here are stand-ins that return an Outcome (the real ones run in
tests/test_run_elastic_hosts.py and tests/docker); the discovery script is a real script."""
import pytest

from distrain.errors import UsageError
from distrain.protocol import ExitCode
from distrain.run.cli import build_parser, config_from_args, main
from distrain.run.config import LaunchConfig
from distrain.run.relaunch import Blacklist, UNNAMED_FAILURES, run_elastic, usable_hosts
from distrain.run.hosts import Host
from distrain.run.outcome import Outcome

from run_helpers import FakeClock


def _listing(tmp_path, text: str) -> tuple[str, object]:
    """A discovery script printing the file it reads; returns (script, the file)."""
    hosts = tmp_path / "hosts.txt"
    hosts.write_text(text)
    return f"cat {hosts}", hosts


def _config(script, **kwargs) -> LaunchConfig:
    kwargs.setdefault("min_np", 2)
    return LaunchConfig(["prog"], host_discovery_script=script, **kwargs)


class Launches:
    """Stands in for the launches: returns the given outcomes in turn, recording hosts."""

    def __init__(self, *outcomes):
        self.outcomes = list(outcomes)
        self.hosts, self.restarts = [], []

    def __call__(self, hosts, restart, grow):
        self.hosts.append(",".join(f"{h.name}:{h.slots}" for h in hosts))
        self.restarts.append(restart)
        return self.outcomes.pop(0)


def _drive(config, launches, clock=None):
    lines = []
    clock = clock or FakeClock()
    code = run_elastic(config, launches, lines.append, clock=clock, sleep=clock.sleep)
    return code, lines


def _failed(host, code=137, words="Killed"):
    summary = f"rank 1 on host {host} exited with code {code}"
    return Outcome(code, "rank", f"{summary}; stopped the other ranks; the last lines of its "
                                 f"stderr:\n    {words}", (host,), summary=summary,
                   signal=code - 128 if code > 128 else 0, last_words=words)


# --- flags ---------------------------------------------------------------------------------

def test_the_elastic_flags_reach_the_config():
    ns = build_parser().parse_args(["--min-np", "2", "--max-np", "4", "--host-discovery-script",
                                    "d.sh", "--elastic-timeout", "30", "--blacklist-cooldown",
                                    "5", "--reset-limit", "3", "prog"])
    config = config_from_args(ns, environ={})
    assert (config.min_np, config.max_np, config.elastic_timeout, config.blacklist_cooldown,
            config.reset_limit, config.elastic) == (2, 4, 30.0, 5.0, 3, True)
    assert not LaunchConfig(["prog"], np=2).elastic


@pytest.mark.parametrize("kwargs, words", [
    (dict(min_np=2), "--min-np/--max-np need --host-discovery-script"),
    (dict(min_np=3, max_np=2, host_discovery_script="d"), "--min-np 3 is more than --max-np 2"),
    (dict(np=5, max_np=4, host_discovery_script="d"), "-np 5 is outside --min-np 1 .. --max-np 4"),
    (dict(min_np=0, host_discovery_script="d"), "--min-np 0 must be at least 1"),
    (dict(min_np=2, max_restarts=1, host_discovery_script="d"), "--max-restarts is for fixed"),
    (dict(reset_limit=1, np=2), "--reset-limit is for elastic jobs"),
    (dict(min_np=1, elastic_timeout=-1, host_discovery_script="d"), "--elastic-timeout -1"),
])
def test_bad_elastic_flags_are_one_line(kwargs, words):
    with pytest.raises(UsageError) as raised:
        LaunchConfig(["prog"], **kwargs)
    assert words in str(raised.value)


def test_bad_elastic_flags_exit_2_on_the_command_line(capsys):
    assert main(["--min-np", "2", "prog"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "need --host-discovery-script" in err


# --- the blacklist and the hosts a launch takes -------------------------------------------

def test_a_failed_host_is_left_out_for_a_cooldown_that_doubles():
    clock = FakeClock()
    blacklist = Blacklist(10, clock)
    assert blacklist.fail("a", "rank 0 died") == "host a left out for 10 s (--blacklist-cooldown)"
    assert blacklist.excluded() == {"a"}
    clock.now = 10.5
    assert blacklist.excluded() == set()
    assert "failed 2 times: left out for 20 s" in blacklist.fail("a", "again")
    clock.now = 30
    assert blacklist.excluded() == {"a"}
    clock.now = 31
    assert blacklist.excluded() == set() and blacklist.reason("a") == "again"
    assert "left out for 40 s" in blacklist.fail("a", "third")
    for _ in range(5):
        line = blacklist.fail("a", "and again")
    assert line == ("host a failed 8 times: left out for 160 s (doubled with each failure, up "
                    "to 16x)")


def test_a_launch_keeps_the_previous_hosts_first_and_at_most_max_np_slots():
    listed = [Host("a", 2), Host("b", 2), Host("c", 1)]
    assert usable_hosts(listed, set(), None) == tuple(listed)
    assert usable_hosts(listed, {"a"}, 3) == (Host("b", 2), Host("c", 1))
    assert usable_hosts(listed, set(), 3, previous=[Host("c"), Host("b", 2)]) == (
        Host("c", 1), Host("b", 2))
    assert usable_hosts(listed, set(), 1, previous=[Host("b", 2)]) == (Host("b", 1),)


# --- the driver ----------------------------------------------------------------------------

def test_a_job_that_ends_well_is_launched_once_on_every_listed_slot(tmp_path):
    script, _ = _listing(tmp_path, "a:1\nb:2\n")
    launches = Launches(Outcome(0, "ok"))
    code, lines = _drive(_config(script), launches)
    assert code == 0 and launches.hosts == ["a:1,b:2"] and launches.restarts == [0]
    assert lines == ["elastic: 3 ranks on a:1,b:2 (--min-np 2, --max-np any)"]


def test_a_failed_host_is_left_out_and_the_job_goes_on_without_it(tmp_path):
    script, _ = _listing(tmp_path, "a:1\nb:1\nc:1\n")
    launches = Launches(_failed("c"), Outcome(0, "ok"))
    code, lines = _drive(_config(script, max_np=3), launches)
    assert code == 0 and launches.hosts == ["a:1,b:1,c:1", "a:1,b:1"]
    assert launches.restarts == [0, 1]
    assert "elastic: host c left out for 30 s (--blacklist-cooldown)" in lines
    assert "elastic: 3 -> 2 ranks on a:1,b:1 (c failed), from the last checkpoint (launch 2)" in lines


def test_below_min_np_for_the_elastic_timeout_is_an_error_naming_the_hosts_lost(tmp_path):
    script, _ = _listing(tmp_path, "a:1\nb:1\n")
    launches = Launches(_failed("b"))
    code, lines = _drive(_config(script, elastic_timeout=5), launches)
    assert code == 124 and launches.hosts == ["a:1,b:1"]
    assert lines[-1] == ("error: fewer than 2 usable slots for 5 s (--min-np 2, "
                         "--elastic-timeout): it lists a:1,b:1, 1 usable slot(s). Hosts lost: "
                         "host b: rank 1 on host b exited with code 137")
    assert any(line.startswith("elastic: waiting up to 5 s for 2 usable slot(s)")
               for line in lines)


def test_a_host_back_within_the_timeout_lets_the_job_go_on(tmp_path):
    script, listing = _listing(tmp_path, "a:1\nb:1\n")
    clock = FakeClock()
    launches = Launches(_failed("b"), Outcome(0, "ok"))

    def sleep(seconds):          # the lost host's replacement is listed after 3 s
        clock.now += seconds
        if clock.now >= 3:
            listing.write_text("a:1\nb:1\nd:1\n")

    lines = []
    code = run_elastic(_config(script, elastic_timeout=60), launches, lines.append,
                       clock=clock, sleep=sleep)
    assert code == 0 and launches.hosts == ["a:1,b:1", "a:1,d:1"]


def test_a_resize_at_a_checkpoint_relaunches_without_blaming_a_host(tmp_path):
    script, _ = _listing(tmp_path, "a:1\nb:1\nc:1\n")
    grown = Outcome(ExitCode.RESIZE, "rank", "rank 0 exited with code 75", ("a",),
                    resize_asked=True)
    launches = Launches(grown, Outcome(0, "ok"))
    code, lines = _drive(_config(script, np=2, max_np=3), launches)
    assert code == 0 and launches.hosts == ["a:1,b:1,c:1", "a:1,b:1,c:1"]
    assert not any("left out" in line for line in lines)


def test_the_same_program_failure_on_two_hosts_ends_the_job(tmp_path):
    script, _ = _listing(tmp_path, "a:1\nb:1\nc:1\n")
    launches = Launches(_failed("c", 1, "ValueError: bad"), _failed("b", 1, "ValueError: bad"),
                        Outcome(0, "ok"))
    code, lines = _drive(_config(script), launches)
    assert code == 1 and len(launches.hosts) == 2
    assert "the program fails wherever it runs" in lines[-1]


def test_bad_input_from_the_ranks_is_not_relaunched(tmp_path):
    script, _ = _listing(tmp_path, "a:1\nb:1\n")
    launches = Launches(Outcome(2, "rank", "rank 0 exited with code 2", ("a",)))
    code, _ = _drive(_config(script), launches)
    assert code == 2 and len(launches.hosts) == 1


def test_the_reset_limit_and_failures_that_name_no_host_bound_the_relaunches(tmp_path):
    script, _ = _listing(tmp_path, "a:1\nb:1\nc:1\nd:1\n")
    launches = Launches(_failed("d"), _failed("c"), Outcome(0, "ok"))
    code, lines = _drive(_config(script, reset_limit=1), launches)
    assert code == 137 and len(launches.hosts) == 2
    assert lines[-1] == "elastic: 2 failures, more than --reset-limit 1: not relaunching"
    nameless = Outcome(1, "mpirun", "mpirun exited with code 1 and no rank reported a failure")
    launches = Launches(*[nameless] * UNNAMED_FAILURES)
    code, lines = _drive(_config(script), launches)
    assert code == 1 and len(launches.hosts) == UNNAMED_FAILURES
    assert "failures in a row that name no host" in lines[-1]


def test_a_failing_discovery_script_is_waited_for_then_named(tmp_path):
    script = tmp_path / "discover.sh"
    script.write_text("#!/bin/sh\necho 'the scheduler does not answer' >&2\nexit 3\n")
    script.chmod(0o755)
    launches = Launches()
    code, lines = _drive(_config(str(script), elastic_timeout=4), launches)
    assert code == 124 and launches.hosts == []
    assert lines[-1] == (f"error: fewer than 2 usable slots for 4 s (--min-np 2, "
                         f"--elastic-timeout): {script} exited with code 3: the scheduler "
                         f"does not answer. Hosts lost: none")


def test_a_malformed_discovery_answer_is_bad_input(tmp_path):
    script, _ = _listing(tmp_path, "w1 slots=2\n")
    with pytest.raises(UsageError) as raised:
        _drive(_config(script), Launches())
    assert "line 1: 'w1 slots=2' is not host:slots" in str(raised.value)
