"""How a job ended, in words: the :class:`Outcome` the supervisor returns and its message.

Pure functions of what the supervisor saw (each rank's host, exit and stderr tail; which
ranks failed, never started or fell silent; the signals that arrived), so every message can
be read here in one place.
"""
from __future__ import annotations

import dataclasses
import signal

__all__ = ["Outcome", "describe", "TIMEOUT_EXIT_CODE"]

TIMEOUT_EXIT_CODE = 124
VANISHED_EXIT_CODE = 1


@dataclasses.dataclass(frozen=True)
class Outcome:
    """How a job ended.

    Attributes:
        code: distrain-run's exit code for it.
        kind: ``ok``, ``rank`` (a rank failed), ``interrupted``, ``start-timeout``, ``lost``,
            ``vanished`` (a started rank never reported how it ended) or ``mpirun`` (mpirun
            failed and no rank said why).
        message: one paragraph for the user; empty when ``ok``.
        hosts: the planned hosts of the ranks that failed, fell silent, vanished or never
            started (what an elastic job leaves out next); empty when none is known.
        resize_asked: the job was asked to stop at its next checkpoint and grow.
    """

    code: int
    kind: str
    message: str = ""
    hosts: tuple[str, ...] = ()
    resize_asked: bool = False


def describe(job, kind: str | None, returncode: int, ranks: dict, started, failed: list,
             lost: list, signals: list, mpirun_tail: list,
             mpirun_first: list = ()) -> Outcome:
    """The outcome of a job that has ended.

    Args:
        job: the :class:`~distrain.run.supervisor.Job` (its size, hosts and timeouts).
        kind: why the supervisor stopped it (``rank``, ``interrupted``, ``start-timeout``,
            ``lost``), or None when it ended by itself.
        returncode: mpirun's exit status.
        ranks: rank -> what was heard of it (``host``, ``exit_code``, ``signal``, ``ended``,
            ``stderr`` lines).
        started: the ranks that reported their start.
        failed: the ranks whose programs failed on their own.
        lost: the ranks that fell silent.
        signals: the signals distrain-run received, in order.
        mpirun_tail: mpirun's own last lines.
        mpirun_first: mpirun's own first lines (their words name lost hosts).

    Returns:
        The :class:`Outcome`.
    """
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

    if kind == "interrupted":
        signum = signals[0]
        return Outcome(128 + signum, "interrupted",
                       f"stopped by {signal.Signals(signum).name}: every rank was stopped")
    if kind == "start-timeout":
        missing = [r for r in range(job.np) if r not in started]
        return Outcome(TIMEOUT_EXIT_CODE, "start-timeout",
                       f"rank{_s(missing)} {_list(missing)} did not start within "
                       f"{job.start_timeout:g} s (--start-timeout) on "
                       f"{hosts(missing)}: check that each can be reached (ssh) and "
                       f"has Python and distrain at the same paths", blamed(missing))
    if kind == "lost":
        return Outcome(TIMEOUT_EXIT_CODE, "lost",
                       f"lost contact with rank{_s(lost)} {_list(lost)} on "
                       f"{hosts(lost)}: no output or heartbeat "
                       f"for {job.heartbeat_timeout:g} s (--heartbeat-timeout); the "
                       f"host is down, its network cut, or its MPI daemon died. Stopped "
                       f"every rank", blamed(lost))
    if kind == "rank":
        # The rank whose program ended first names the failure; later ones are listed.
        first, *others = sorted(failed, key=lambda r: (ranks[r].ended, r))
        state = ranks[first]
        tail = ("; the last lines of its stderr:\n" + "\n".join(
            f"    {line}" for line in state.stderr)) if state.stderr else (
            "; it wrote nothing to stderr")
        also = "".join(f"; then rank {r} on {hosts([r])} {_how(ranks[r])}" for r in others)
        return Outcome(state.exit_code, "rank",
                       f"rank {first} on {hosts([first])} {_how(state)}"
                       f"{also}; stopped the other ranks{tail}", blamed([first]))
    vanished = [r for r in sorted(started) if ranks[r].exit_code is None]
    if vanished:
        # Open MPI 5's mpirun may exit 0 after losing a daemon: name the ranks whose host its
        # messages name ("Connection to X closed", "... on node X"), else every such rank.
        words = {word.strip(".,:;()[]'\"") for line in mpirun_first for word in line.split()}
        named = [r for r in vanished if {ranks[r].host, planned(r)} & words] or vanished
        why = f" (mpirun: {mpirun_first[0].strip()})" if mpirun_first else ""
        return Outcome(VANISHED_EXIT_CODE, "vanished",
                       f"rank{_s(named)} {_list(named)} on {hosts(named)} ended without an "
                       f"exit status: the host, its container or its MPI daemon went "
                       f"away{why}; every rank was stopped", blamed(named))
    if returncode != 0:
        lines = "\n".join(f"    {line}" for line in mpirun_tail)
        return Outcome(returncode if returncode > 0 else 128 - returncode, "mpirun",
                       f"mpirun exited with code {returncode} and no rank reported a failure"
                       + (f"; its last messages:\n{lines}" if lines else ""))
    return Outcome(0, "ok")


def _how(state) -> str:
    if state.signal:
        return f"was killed by {signal.Signals(state.signal).name}"
    return f"exited with code {state.exit_code}"


def _s(items) -> str:
    return "s" if len(items) > 1 else ""


def _list(items) -> str:
    return ", ".join(map(str, items))
