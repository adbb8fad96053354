"""Hosts from a discovery script, asked before every launch (``--host-discovery-script``).

The script (a command line: a path, or a program with arguments) prints one host a line,
``host:slots`` or ``host`` (1 slot); ``#`` starts a comment, blank lines are skipped. It exits
0 when what it printed is the answer. distrain-run runs it before the first launch and before
every relaunch, and waits, asking again every second, until it lists at least ``-np`` slots
(all it lists, when ``-np`` is not given): hosts still starting, or a host that was lost and is
coming back, are waited for instead of failing the launch. A script that keeps failing, or
too few slots after ``--start-timeout`` seconds, ends distrain-run with exit code 124 and the
script's last words; output that is not ``host:slots`` lines is bad input (exit code 2).

Example:
    >>> parse_discovered("w1:2\\nw2  # a comment\\n")
    (Host(name='w1', slots=2), Host(name='w2', slots=1))
"""
from __future__ import annotations

import dataclasses
import shlex
import subprocess
import time

from distrain.errors import UsageError
from distrain.run.hosts import Host, parse_hosts

__all__ = ["DiscoveryTimeout", "Discovered", "parse_discovered", "script_argv", "ask",
           "wait_for_hosts"]

POLL_SECONDS = 1.0
SCRIPT_TIMEOUT = 30.0


class DiscoveryTimeout(Exception):
    """The script did not list enough slots in time; the message says what it last said."""


@dataclasses.dataclass(frozen=True)
class Discovered:
    """One answer of the script.

    Attributes:
        hosts: the hosts it listed (empty when it failed).
        problem: why the answer does not count (its exit code and last stderr line), or "".
    """

    hosts: tuple[Host, ...] = ()
    problem: str = ""

    @property
    def slots(self) -> int:
        """The hosts' total slots."""
        return sum(host.slots for host in self.hosts)


def script_argv(script: str) -> list[str]:
    """The discovery command line as an argument list.

    Raises:
        UsageError: it is empty or unbalanced in its quotes.
    """
    try:
        argv = shlex.split(script)
    except ValueError as exc:
        raise UsageError(f"--host-discovery-script {script!r}: {exc}") from None
    if not argv:
        raise UsageError("--host-discovery-script is empty; give a script that prints "
                         "host:slots lines")
    return argv


def parse_discovered(text: str, source: str = "host discovery") -> tuple[Host, ...]:
    """Reads the script's output: ``host:slots`` or ``host`` lines, comments, blank lines.

    Raises:
        UsageError: a malformed line or a host listed twice (naming the line).
    """
    entries = []
    for number, line in enumerate(text.splitlines(), 1):
        entry = line.split("#", 1)[0].strip()
        if not entry:
            continue
        if any(ch.isspace() for ch in entry) or "," in entry:
            raise UsageError(f"{source} line {number}: {entry!r} is not host:slots")
        entries.append(entry)
    if not entries:
        return ()
    try:
        return parse_hosts(",".join(entries))
    except UsageError as exc:
        raise UsageError(f"{source} printed {', '.join(entries)!r}: "
                         f"{str(exc).split(': ', 1)[-1]}") from None


def ask(argv: list[str], timeout: float = SCRIPT_TIMEOUT) -> Discovered:
    """Runs the script once.

    Returns:
        What it listed, or, when it failed, ran too long or could not start, the problem.

    Raises:
        UsageError: it printed something that is not ``host:slots`` lines.
    """
    name = shlex.join(argv)
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout,
                              stdin=subprocess.DEVNULL)
    except FileNotFoundError:
        raise UsageError(f"--host-discovery-script: {argv[0]!r} not found; give its path")
    except PermissionError:
        raise UsageError(f"--host-discovery-script: {argv[0]!r} is not executable")
    except subprocess.TimeoutExpired:
        return Discovered(problem=f"{name} did not answer in {timeout:g} s")
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["(no message)"])[-1]
        return Discovered(problem=f"{name} exited with code {done.returncode}: {last}")
    return Discovered(parse_discovered(done.stdout, f"{argv[0]} output"))


def wait_for_hosts(argv: list[str], np_: int | None, timeout: float, *, on_wait=None,
                   clock=time.monotonic, sleep=time.sleep) -> tuple[Host, ...]:
    """Asks the script until it lists at least ``np_`` slots (or any host, for None).

    Args:
        argv: the script's command line.
        np_: the slots needed; None takes whatever it lists first.
        timeout: seconds to keep asking.
        on_wait: called once with a line saying what is awaited, if the first answer falls
            short.
        clock, sleep: time functions (tests give their own).

    Returns:
        The hosts of the first answer with enough slots.

    Raises:
        DiscoveryTimeout: no such answer within ``timeout``.
        UsageError: the script cannot be run or printed something malformed.
    """
    deadline = clock() + timeout
    told = False
    while True:
        answer = ask(argv, timeout=max(1.0, min(SCRIPT_TIMEOUT, deadline - clock())))
        wanted = np_ if np_ is not None else 1
        if not answer.problem and answer.slots >= wanted:
            return answer.hosts
        said = answer.problem or _short_of(answer, np_)
        if clock() >= deadline:
            raise DiscoveryTimeout(f"host discovery found too few hosts in {timeout:g} s: "
                                   f"{said}")
        if not told and on_wait is not None:
            on_wait(f"waiting up to {timeout:g} s for hosts: {said}")
            told = True
        sleep(POLL_SECONDS)


def _short_of(answer: Discovered, np_: int | None) -> str:
    if np_ is None:
        return "it lists no host"
    listed = ", ".join(f"{host.name}:{host.slots}" for host in answer.hosts) or "no host"
    plural = "" if answer.slots == 1 else "s"
    return f"it lists {listed} ({answer.slots} slot{plural}), -np {np_} needs {np_}"
