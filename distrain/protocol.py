"""What a rank and distrain-run tell each other: the record lines on a rank's stdout and the
exit codes.

The rank wrapper (:mod:`distrain.run.rank`), the rank-side elastic API
(:mod:`distrain.elastic.requests`) and a rank that aborts the job (:mod:`distrain.failfast`)
write records; the supervisor reads them; every exit code distrain gives or reads is named
here. Standard library only: the rank wrapper, started as ``python -I -S``, imports it.

Example:
    >>> format_record(Record.EXIT, code=3, signal=0)
    '\\x1edistrain exit code=3 signal=0\\n'
    >>> parse_record('\\x1edistrain exit code=3 signal=0')
    (<Record.EXIT: 'exit'>, {'code': '3', 'signal': '0'})
    >>> int(ExitCode.TIMEOUT), signal_exit_code(15)
    (124, 143)
"""
from __future__ import annotations

import enum

__all__ = ["RECORD", "Record", "format_record", "parse_record", "ExitCode", "signal_exit_code"]

RECORD = "\x1edistrain "


class Record(str, enum.Enum):
    """The kinds of record, each with the fields it carries."""

    START = "start"        # host, pid, program_pid, rank: the wrapper started the program
    BEAT = "beat"          # none: the wrapper is alive (every --heartbeat seconds)
    EXIT = "exit"          # code, signal, stopped (after a stop request), time, rank
    ELASTIC = "elastic"    # listening=1: the program takes resize requests (SIGUSR1)
    ABORT = "abort"        # code, time, rank: the program is ending every rank (MPI_Abort)


def format_record(kind: Record, **fields) -> str:
    """One record line.

    Args:
        kind: what the record says.
        **fields: its ``key=value`` fields; values must hold no whitespace.

    Returns:
        The line, ending in ``\\n``.
    """
    words = " ".join(f"{key}={value}" for key, value in fields.items())
    return f"{RECORD}{kind.value} {words}\n"


def parse_record(text: str) -> tuple[Record, dict[str, str]] | None:
    """Reads a record line.

    Returns:
        ``(kind, fields)``; None for ordinary output, a line of another kind included.
    """
    if not text.startswith(RECORD):
        return None
    kind, *fields = text[len(RECORD):].split() or [""]
    try:
        return Record(kind), dict(field.partition("=")[::2] for field in fields)
    except ValueError:
        return None


class ExitCode(enum.IntEnum):
    """The exit codes distrain gives (distrain-run, the rank wrapper, the training program)
    and reads (an elastic job's relaunch policy)."""

    OK = 0
    FAILED = 1             # an error with no code of its own; a rank that ended unreported
    USAGE = 2              # bad input: one line names the problem, nothing ran
    RESIZE = 75            # EX_TEMPFAIL: every rank of an elastic job, saved, stops to resize
    TIMEOUT = 124          # a rank did not start or fell silent, a stall, too few hosts
    NOT_STARTED = 127      # the rank wrapper could not start the program
    INTERRUPTED = 130      # Ctrl-C: 128 + SIGINT
    KILLED = 137           # 128 + SIGKILL
    TERMINATED = 143       # 128 + SIGTERM


def signal_exit_code(signum: int) -> int:
    """The exit code of a process ended by signal ``signum``: ``128 + signum``, as a shell
    reports it."""
    return 128 + signum
