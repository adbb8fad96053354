"""Any uncaught error on a rank ends the whole job, so no rank waits forever for it.

After :func:`install`, an uncaught exception (Ctrl-C included) prints the rank's traceback
once, tagged with its rank, and aborts every rank through the backend (``MPI_Abort`` for the
mpi backend). A rank that calls ``sys.exit`` with a non-zero code ends normally; mpirun,
srun and distrain-run then stop the other ranks themselves.
"""
from __future__ import annotations

import sys
import time
import traceback

from distrain import environment as env
from distrain.protocol import ExitCode, Record, format_record

__all__ = ["install", "uninstall", "exit_code_of", "announce_abort"]

_previous_hook = None


def exit_code_of(exc: BaseException) -> int:
    """The process exit code an exception stands for (SystemExit's code, 130 for Ctrl-C)."""
    if isinstance(exc, KeyboardInterrupt):
        return ExitCode.INTERRUPTED
    if isinstance(exc, SystemExit):
        code = exc.code
        if code is None:
            return ExitCode.OK
        return code if isinstance(code, int) else ExitCode.FAILED
    return ExitCode.FAILED


def announce_abort(rank: int, code: int) -> None:
    """Tells distrain-run, where it started this rank, that this rank is ending the job with
    ``code`` (a record line on stdout, :mod:`distrain.protocol`).

    An abort tears every rank down at once, the rank wrappers with them: across hosts the
    wrapper's own report of its program's exit can be lost in that teardown, and what mpirun
    still passes on may come untagged. This record, written before the abort and naming its
    rank, lets distrain-run name the rank that ended the job and why.
    """
    if env.setting(env.LAUNCHER) == "distrain-run":
        sys.stdout.write(format_record(Record.ABORT, code=int(code),
                                       time=f"{time.time():.6f}", rank=rank))
        sys.stdout.flush()


def install(rank: int, abort) -> None:
    """Routes uncaught exceptions on this rank to ``abort``.

    Args:
        rank: printed before the traceback.
        abort: ends every rank; called with the exit code.
    """
    global _previous_hook
    if _previous_hook is not None:
        return
    _previous_hook = sys.excepthook

    def hook(exc_type, exc, tb):
        lines = traceback.format_exception(exc_type, exc, tb)
        sys.stderr.write("".join(f"[rank {rank}] {line}" for chunk in lines
                                 for line in chunk.splitlines(keepends=True)))
        sys.stderr.write(f"[rank {rank}] uncaught {exc_type.__name__}: aborting every rank\n")
        sys.stderr.flush()
        abort(exit_code_of(exc))

    sys.excepthook = hook


def uninstall() -> None:
    """Restores the hook :func:`install` replaced."""
    global _previous_hook
    if _previous_hook is not None:
        sys.excepthook = _previous_hook
        _previous_hook = None
