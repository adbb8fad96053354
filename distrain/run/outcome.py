"""How a job ended: the :class:`Outcome` the supervisor returns, its :class:`Reason` and its
message.

Pure functions of what the supervisor saw (:class:`Ending`: each rank's host, exit and stderr
tail; which ranks failed, never started or fell silent; the signals that arrived), so every
message can be read here in one place. Policies (an elastic job's relaunches, ``--max-restarts``)
read the outcome's fields, never its message.
"""
from __future__ import annotations

import dataclasses
import enum
import signal

from distrain.protocol import ExitCode, signal_exit_code

__all__ = ["Reason", "Outcome", "Ending", "describe"]


class Reason(str, enum.Enum):
    """Why a job ended."""

    OK = "ok"
    RANK = "rank"                      # a rank's program failed
    INTERRUPTED = "interrupted"        # SIGINT or SIGTERM reached distrain-run
    START_TIMEOUT = "start-timeout"    # a rank did not start within --start-timeout
    LOST = "lost"                      # a rank fell silent for --heartbeat-timeout
    VANISHED = "vanished"              # a started rank never reported how it ended
    MPIRUN = "mpirun"                  # mpirun failed and no rank said why


@dataclasses.dataclass(frozen=True)
class Outcome:
    """How a job ended.

    Attributes:
        code: distrain-run's exit code for it.
        reason: why it ended (a :class:`Reason`, or its value).
        message: one paragraph for the user; empty when ``ok``.
        hosts: the planned hosts of the ranks that failed, fell silent, vanished or never
            started (what an elastic job leaves out next); empty when none is known.
        resize_asked: the job was asked to stop at its next checkpoint and grow.
        summary: the failure in one line, without the rank's stderr (why its hosts are left
            out); empty when ``ok``.
        signal: the signal that killed the failed rank, 0 when it exited by itself.
        last_words: the last line of the failed rank's stderr, ``""`` when it wrote none.
    """

    code: int
    reason: Reason
    message: str = ""
    hosts: tuple[str, ...] = ()
    resize_asked: bool = False
    summary: str = ""
    signal: int = 0
    last_words: str = ""

    def __post_init__(self):
        object.__setattr__(self, "reason", Reason(self.reason))


@dataclasses.dataclass(frozen=True)
class Ending:
    """What the supervisor saw of a job that has ended.

    Attributes:
        stopped_for: why the supervisor stopped it (``RANK``, ``INTERRUPTED``,
            ``START_TIMEOUT``, ``LOST``), or None when it ended by itself.
        returncode: mpirun's exit status.
        ranks: rank -> what was heard of it (``host``, ``exit_code``, ``signal``, ``ended``,
            ``stderr`` lines).
        started: the ranks that reported their start.
        failed: the ranks whose programs failed on their own.
        lost: the ranks that fell silent.
        signals: the signals distrain-run received, in order.
        mpirun_tail: mpirun's own last lines.
        mpirun_first: mpirun's own first lines (their words name lost hosts).
    """

    stopped_for: Reason | None
    returncode: int
    ranks: dict
    started: frozenset = frozenset()
    failed: tuple[int, ...] = ()
    lost: tuple[int, ...] = ()
    signals: tuple[int, ...] = ()
    mpirun_tail: tuple[str, ...] = ()
    mpirun_first: tuple[str, ...] = ()


#: How mpirun's messages begin a line about its own daemon (Open MPI 5's PRTE: "HNP daemon :
#: [prterun-...] on node X", beside "Remote daemon: [...] on node Y", the lost one).
LAUNCHER_DAEMON_LINES = ("HNP daemon",)


def describe(job, ending: Ending) -> Outcome:
    """The outcome of a job that has ended.

    Args:
        job: the :class:`~distrain.run.supervisor.Job` (its size, hosts and timeouts).
        ending: what the supervisor saw.

    Returns:
        The :class:`Outcome`.
    """
    ranks, kind = ending.ranks, ending.stopped_for

    def planned(rank):
        return job.hosts[rank] if rank < len(job.hosts) else None

    def blamed(of) -> tuple[str, ...]:
        return tuple(dict.fromkeys(planned(r) for r in of if planned(r)))

    def hosts(of) -> str:
        """``host a`` or ``hosts a, b``: where ranks said they run, else were planned;
        ``a (b)`` where a rank's own name ``a`` differs from its planned host ``b`` (a
        container's id and the name it was reached by)."""
        names = []
        for rank in of:
            state = ranks.get(rank)
            host = state.host if state and state.host else planned(rank)
            if planned(rank) and host != planned(rank):
                host = f"{host} ({planned(rank)})"
            if host not in names:
                names.append(host)
        return f"host{_s(names)} {_list(names)}"

    if kind is Reason.INTERRUPTED:
        signum = ending.signals[0]
        return Outcome(signal_exit_code(signum), kind,
                       f"stopped by {signal.Signals(signum).name}: every rank was stopped")
    if kind is Reason.START_TIMEOUT:
        missing = [r for r in range(job.np) if r not in ending.started]
        message = (f"rank{_s(missing)} {_list(missing)} did not start within "
                   f"{job.start_timeout:g} s (--start-timeout) on {hosts(missing)}: check "
                   f"that each can be reached (ssh) and has Python and distrain at the same "
                   f"paths")
        return Outcome(ExitCode.TIMEOUT, kind, message, blamed(missing), summary=message)
    if kind is Reason.LOST:
        lost = ending.lost
        message = (f"lost contact with rank{_s(lost)} {_list(lost)} on {hosts(lost)}: no "
                   f"output or heartbeat for {job.heartbeat_timeout:g} s "
                   f"(--heartbeat-timeout); the host is down, its network cut, or its MPI "
                   f"daemon died. Stopped every rank")
        return Outcome(ExitCode.TIMEOUT, kind, message, blamed(lost), summary=message)
    if kind is Reason.RANK:
        # The rank whose program ended first names the failure; later ones are listed.
        first, *others = sorted(ending.failed, key=lambda r: (ranks[r].ended, r))
        state = ranks[first]
        tail = ("; the last lines of its stderr:\n" + "\n".join(
            f"    {line}" for line in state.stderr)) if state.stderr else (
            "; it wrote nothing to stderr")
        also = "".join(f"; then rank {r} on {hosts([r])} {_how(ranks[r])}" for r in others)
        summary = f"rank {first} on {hosts([first])} {_how(state)}{also}"
        return Outcome(state.exit_code, kind, f"{summary}; stopped the other ranks{tail}",
                       blamed([first]), summary=summary, signal=state.signal,
                       last_words=state.stderr[-1] if state.stderr else "")
    vanished = [r for r in sorted(ending.started) if ranks[r].exit_code is None]
    if vanished:
        # Open MPI 5's mpirun may exit 0 after losing a daemon: name the ranks whose host its
        # messages name ("Connection to X closed", "Remote daemon: ... on node X"), else
        # every such rank. The lines naming mpirun's own daemon name no lost host.
        first_lines = ending.mpirun_first
        words = {word.strip(".,:;()[]'\"") for line in first_lines
                 if not line.strip().startswith(LAUNCHER_DAEMON_LINES)
                 for word in line.split()}
        named = [r for r in vanished if {ranks[r].host, planned(r)} & words] or vanished
        why = f" (mpirun: {first_lines[0].strip()})" if first_lines else ""
        summary = (f"rank{_s(named)} {_list(named)} on {hosts(named)} ended without an exit "
                   f"status: the host, its container or its MPI daemon went away{why}")
        return Outcome(ExitCode.FAILED, Reason.VANISHED, f"{summary}; every rank was stopped",
                       blamed(named), summary=summary)
    returncode = ending.returncode
    if returncode != 0:
        lines = "\n".join(f"    {line}" for line in ending.mpirun_tail)
        summary = f"mpirun exited with code {returncode} and no rank reported a failure"
        return Outcome(returncode if returncode > 0 else signal_exit_code(-returncode),
                       Reason.MPIRUN, summary + (f"; its last messages:\n{lines}" if lines
                                                 else ""), summary=summary)
    return Outcome(ExitCode.OK, Reason.OK)


def _how(state) -> str:
    if state.signal:
        return f"was killed by {signal.Signals(state.signal).name}"
    return f"exited with code {state.exit_code}"


def _s(items) -> str:
    return "s" if len(items) > 1 else ""


def _list(items) -> str:
    return ", ".join(map(str, items))
