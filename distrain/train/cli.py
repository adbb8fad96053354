"""``python -m distrain.train``: data-parallel Keras training on every rank of an MPI job.

Usage::

    distrain-run -np 4 python -m distrain.train --model cnn --dataset digits --epochs 3
    mpirun -np 4 python -m distrain.train ...
    horovodrun -np 4 python -m distrain.train ...
    python -m distrain.train ...                 # one rank, no launcher

Each rank reads its part of every global batch (``--batch-size`` per rank), averages
gradients with the others, and applies them; rank 0 prints progress and summaries. Bad
input ends every rank with one line on rank 0 and exit code 2. ``--help`` lists the flags;
docs/training.md explains them.
"""
from __future__ import annotations

import sys

from distrain.environment import WorldError, detect_world
from distrain.errors import UsageError
from distrain.protocol import ExitCode

__all__ = ["main", "check_args"]


def main(argv: list[str] | None = None) -> int:
    """Parses ``argv``, trains, and returns the exit code.

    Returns:
        0 on success, 2 for bad input, 1 when ranks' weights diverged, 75 when an elastic
        job stopped at a checkpoint to be relaunched at a new size.
    """
    from distrain.train.config import config_from_argv
    try:
        rank = detect_world().rank
    except WorldError:
        rank = 0
    try:
        config = config_from_argv(argv)
        from distrain.elastic import HostsUpdatedInterrupt
        from distrain.train.runner import DivergenceError, run
        try:
            run(config)
        except DivergenceError as exc:
            if rank == 0:
                print(f"distrain.train: error: {exc}", file=sys.stderr, flush=True)
            return ExitCode.FAILED
        except HostsUpdatedInterrupt as exc:
            if rank == 0:
                print(f"distrain.train: {exc}", flush=True)
            return ExitCode.RESIZE
    except (UsageError, WorldError) as exc:
        if rank == 0:
            print(f"distrain.train: error: {exc}", file=sys.stderr, flush=True)
        return ExitCode.USAGE
    return ExitCode.OK


def check_args(argv: list[str]) -> int:
    """Checks training arguments without training, for a job script to run before it starts
    any rank (``launch/slurm.sbatch``): bad input then costs one line, not one per rank.

    Returns:
        0 when ``argv`` parses; 2 after printing the error in one line on stderr.

    Example:
        >>> check_args(["--epochs", "2"])
        0
    """
    from distrain.train.config import config_from_argv
    try:
        config_from_argv(argv)
    except UsageError as exc:
        print(f"distrain.train: error: {exc}", file=sys.stderr, flush=True)
        return ExitCode.USAGE
    return ExitCode.OK
