"""Any uncaught error on a rank ends the whole job, so no rank waits forever for it.

After :func:`install`, an uncaught exception (Ctrl-C included) prints the rank's traceback
once, tagged with its rank, and aborts every rank through the backend (``MPI_Abort`` for the
mpi backend). A rank that calls ``sys.exit`` with a non-zero code ends normally; mpirun,
srun and distrain-run then stop the other ranks themselves.
"""
from __future__ import annotations

import sys
import traceback

from distrain.protocol import ExitCode

__all__ = ["install", "uninstall", "exit_code_of"]

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
