"""Elastic jobs: the job carries on at a new size when hosts leave or join.

``distrain-run --min-np N --max-np M --host-discovery-script SCRIPT`` runs the job on the
hosts the script lists (at most ``M`` slots), and then:

- a rank fails, falls silent or vanishes: its host is left out (blacklisted) for
  ``--blacklist-cooldown`` seconds, doubled on each further failure of that host up to
  16 times as long (a host that keeps failing is tried less and less often, never in a
  loop). The job is relaunched
  at once on the hosts still listed, from its last checkpoint (``DISTRAIN_RESTART_COUNT``
  counts the launches), if they hold at least ``N`` slots;
- the script lists new hosts while the job runs below ``M`` ranks: the ranks are asked
  (SIGUSR1 through mpirun) to stop at their next checkpoint, and the job is relaunched on
  the larger set;
- fewer than ``N`` usable slots for ``--elastic-timeout`` seconds: the job ends with exit
  code 124, naming the hosts lost and why;
- the same failure (exit code and last words) on two hosts in a row is the program's, not
  the hosts': the job ends with it instead of working through every host.

The MPI world of a launch has a fixed size, so a new size is a new launch; the training
program resumes from its checkpoint (:mod:`distrain.train`, :mod:`distrain.elastic`).
Every change is logged once: the old and new size, the hosts, and why.
"""
from __future__ import annotations

import dataclasses
import threading
import time

from distrain.protocol import ExitCode
from distrain.run.discovery import POLL_SECONDS, ask, script_argv
from distrain.run.hosts import Host, format_hosts
from distrain.run.outcome import Outcome, Reason

__all__ = ["Blacklist", "usable_hosts", "HostWatcher", "run_elastic", "UNNAMED_FAILURES",
           "MAX_BACKOFF", "WATCH_SECONDS"]

UNNAMED_FAILURES = 3    # failures in a row that name no host end the job
MAX_BACKOFF = 16        # a host's cool-down grows to at most this many times the first
WATCH_SECONDS = 2.0     # how often a running job's discovery script is asked for new hosts


@dataclasses.dataclass
class _Failures:
    count: int
    until: float
    reason: str


class Blacklist:
    """Hosts left out after failures, each for a cool-down that doubles with every failure
    of that host, up to :data:`MAX_BACKOFF` times the first.

    Args:
        cooldown: seconds a host is left out after its first failure.
        clock: the time function (tests give their own).
    """

    def __init__(self, cooldown: float, clock=time.monotonic):
        self.cooldown, self.clock = cooldown, clock
        self._hosts: dict[str, _Failures] = {}

    def fail(self, host: str, reason: str) -> str:
        """Records a failure of ``host``.

        Returns:
            A line saying for how long it is left out.
        """
        record = self._hosts.setdefault(host, _Failures(0, 0.0, reason))
        record.count += 1
        record.reason = reason
        seconds = self.cooldown * min(MAX_BACKOFF, 2 ** (record.count - 1))
        record.until = self.clock() + seconds
        if record.count == 1:
            return f"host {host} left out for {seconds:g} s (--blacklist-cooldown)"
        return (f"host {host} failed {record.count} times: left out for {seconds:g} s "
                f"(doubled with each failure, up to {MAX_BACKOFF}x)")

    def excluded(self) -> set[str]:
        """The hosts left out now."""
        now = self.clock()
        return {host for host, record in self._hosts.items() if record.until > now}

    def reason(self, host: str) -> str:
        """Why ``host`` was last left out, or ``""``."""
        record = self._hosts.get(host)
        return record.reason if record else ""


def usable_hosts(listed, excluded, max_np: int | None, previous=()) -> tuple[Host, ...]:
    """The hosts a launch takes: those listed and not left out, the previous launch's first
    (so rank 0 stays where its checkpoint is, while it can), at most ``max_np`` slots.

    Example:
        >>> usable_hosts([Host("a"), Host("b", 2), Host("c")], {"a"}, 2, [Host("c")])
        (Host(name='c', slots=1), Host(name='b', slots=1))
    """
    by_name = {host.name: host for host in listed if host.name not in excluded}
    order = [h.name for h in previous if h.name in by_name]
    order += [name for name in by_name if name not in order]
    chosen, room = [], max_np if max_np is not None else float("inf")
    for name in order:
        slots = min(by_name[name].slots, room)
        if slots <= 0:
            break
        chosen.append(Host(name, int(slots)))
        room -= slots
    return tuple(chosen)


def _slots(hosts) -> int:
    return sum(host.slots for host in hosts)


class HostWatcher:
    """Asks the discovery script every :data:`WATCH_SECONDS` in a thread while a launch runs,
    and says when it lists usable slots beyond the launch's.

    Args:
        argv: the script's command line.
        blacklist: the hosts left out.
        max_np: the most ranks.
        running: the launch's hosts.
    """

    def __init__(self, argv, blacklist: Blacklist, max_np: int | None, running):
        self.argv, self.blacklist, self.max_np = argv, blacklist, max_np
        self.running = tuple(running)
        self._wish: str | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="distrain-host-watch",
                                        daemon=True)

    def __enter__(self) -> "HostWatcher":
        if self.max_np is None or _slots(self.running) < self.max_np:
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()

    def wish(self) -> str | None:
        """A line naming the hosts added, once there are more usable slots, else None."""
        return self._wish

    def _watch(self) -> None:
        while not self._stop.wait(WATCH_SECONDS):
            try:
                answer = ask(self.argv)
            except Exception:      # a malformed answer now is for the next launch to report
                continue
            if answer.problem:
                continue
            hosts = usable_hosts(answer.hosts, self.blacklist.excluded(), self.max_np,
                                 self.running)
            if _slots(hosts) > _slots(self.running):
                names = {h.name for h in self.running}
                added = [h for h in hosts if h.name not in names] or list(hosts)
                self._wish = (f"discovery lists more slots ({format_hosts(added)}): "
                              f"{_slots(self.running)} -> {_slots(hosts)} ranks")
                return


def _same_failure(one: Outcome | None, other: Outcome) -> bool:
    """Two outcomes that are one program failure on different hosts: a rank exited by itself
    with the same code and the same last words (a kill by signal may look alike and says
    nothing)."""
    return (one is not None and one.reason is other.reason is Reason.RANK
            and one.code == other.code and not one.signal and not other.signal
            and bool(one.last_words) and one.last_words == other.last_words
            and set(one.hosts) != set(other.hosts))


def run_elastic(config, start, tell, *, clock=time.monotonic, sleep=time.sleep) -> int:
    """Runs an elastic job to its end.

    Args:
        config: the launch (:class:`~distrain.run.config.LaunchConfig` with ``elastic``).
        start: ``start(hosts, restart, grow) -> Outcome``: runs one launch on ``hosts``
            (``restart`` = how many launches came before; ``grow`` as for
            :func:`~distrain.run.supervisor.supervise`).
        tell: prints one line for the user.
        clock, sleep: time functions (tests give their own).

    Returns:
        0, the code of the failure that ended it, 2 for bad input, 124 when it stayed below
        ``--min-np`` for ``--elastic-timeout`` seconds, or 130/143 after SIGINT/SIGTERM.

    Raises:
        UsageError: the discovery script cannot be run or prints something malformed.
    """
    argv = script_argv(config.host_discovery_script)
    blacklist = Blacklist(config.blacklist_cooldown, clock)
    least = config.min_np if config.min_np is not None else 1
    running: tuple[Host, ...] = ()
    lost: list[str] = []
    launches = failures = unnamed = 0
    last = None
    failed: tuple[str, ...] = ()
    while True:
        wanted = config.np if not launches and config.np is not None else least
        hosts = _wait(argv, blacklist, config, wanted, least, running, lost, tell, clock,
                      sleep)
        if hosts is None:
            return ExitCode.TIMEOUT
        if running:
            tell(f"elastic: {_slots(running)} -> {_slots(hosts)} ranks on "
                 f"{format_hosts(hosts)} ({_change(running, hosts, failed)}), from the last "
                 f"checkpoint (launch {launches + 1})")
        else:
            tell(f"elastic: {_slots(hosts)} ranks on {format_hosts(hosts)} "
                 f"(--min-np {least}, --max-np {config.max_np or 'any'})")
        with HostWatcher(argv, blacklist, config.max_np, hosts) as watcher:
            outcome = start(hosts, launches, watcher.wish)
        launches += 1
        running = hosts
        if outcome.reason in (Reason.OK, Reason.INTERRUPTED) or outcome.code == ExitCode.USAGE:
            if outcome.message:
                tell(outcome.message)
            return outcome.code
        if outcome.resize_asked and outcome.code == ExitCode.RESIZE:
            last, failed = None, ()
            continue                                  # stopped at a checkpoint to grow
        tell(outcome.message)
        if _same_failure(last, outcome):
            tell("elastic: the same failure on another host: the program fails wherever it "
                 "runs; not relaunching")
            return outcome.code
        last = outcome
        failures += 1
        if config.reset_limit is not None and failures > config.reset_limit:
            tell(f"elastic: {failures} failures, more than --reset-limit "
                 f"{config.reset_limit}: not relaunching")
            return outcome.code
        unnamed = 0 if outcome.hosts else unnamed + 1
        if unnamed >= UNNAMED_FAILURES:
            tell(f"elastic: {unnamed} failures in a row that name no host: not relaunching")
            return outcome.code
        failed = outcome.hosts or ("?",)
        for host in outcome.hosts:
            tell(f"elastic: {blacklist.fail(host, outcome.summary)}")
            if host not in lost:
                lost.append(host)


def _change(running, hosts, failed) -> str:
    """Why a launch's hosts differ from the last one's, in a few words."""
    now, before = {h.name for h in hosts}, [h.name for h in running]
    parts = [f"{name} {'failed' if name in failed else 'not listed'}" for name in before
             if name not in now]
    parts += [f"{h.name} added" for h in hosts if h.name not in before]
    if parts:
        return ", ".join(parts)
    return "after a failure" if failed else "more slots"


def _wait(argv, blacklist, config, wanted, least, previous, lost, tell, clock,
          sleep) -> tuple[Host, ...] | None:
    """The hosts of the next launch, once discovery lists ``wanted`` usable slots; None, the
    error told, when that takes longer than ``--elastic-timeout`` (``least`` and ``lost`` are
    for the message)."""
    deadline = clock() + config.elastic_timeout
    told = False
    while True:
        answer = ask(argv)
        hosts = usable_hosts(answer.hosts, blacklist.excluded(), config.max_np, previous)
        if not answer.problem and _slots(hosts) >= wanted:
            return hosts
        said = answer.problem or (f"it lists {format_hosts(answer.hosts) or 'no host'}, "
                                  f"{_slots(hosts)} usable slot(s)")
        if clock() >= deadline:
            listed = {host.name for host in answer.hosts}
            gone = "; ".join(f"host {h}: {blacklist.reason(h)}" for h in lost
                             if h in blacklist.excluded() or h not in listed) or "none"
            tell(f"error: fewer than {wanted} usable slots for {config.elastic_timeout:g} s "
                 f"(--min-np {least}, --elastic-timeout): {said}. Hosts lost: {gone}")
            return None
        if not told:
            tell(f"elastic: waiting up to {config.elastic_timeout:g} s for {wanted} usable "
                 f"slot(s): {said}")
            told = True
        sleep(POLL_SECONDS)
