"""Horovod's elastic API for user programs, on distrain's relaunch model.

Example (a Horovod elastic program with the import changed)::

    import distrain.keras as hvd
    hvd.init()
    state = hvd.elastic.TensorFlowKerasState(model, optimizer, epoch=0, batch=0)

    def on_state_reset():
        optimizer.learning_rate.assign(0.01 * hvd.size())
    state.register_reset_callbacks([on_state_reset])

    @hvd.elastic.run
    def train(state):
        for state.epoch in range(state.epoch, epochs):
            for state.batch in range(state.batch, steps):
                train_one_batch()
                if state.batch % 10 == 0:
                    state.commit()
            state.batch = 0

    train(state)

Run it with ``distrain-run --min-np 2 --max-np 4 --host-discovery-script ./hosts.sh``.

How it differs from Horovod: within a launch the State behaves as Horovod's (``commit`` saves
in memory, ``restore`` returns there, ``sync`` broadcasts from rank 0), but Horovod also
resets in the same processes after a host change. An MPI world has a fixed size, so distrain
relaunches the job at the new size (:mod:`distrain.run.relaunch`): :meth:`State.commit` also
writes the state to disk atomically (:mod:`distrain.elastic.state`), and when the job is to grow, ``commit()`` raises
:class:`HostsUpdatedInterrupt` on every rank, :func:`run` ends the launch with exit code 75,
and the relaunched program's ``run`` restores the last commit, broadcasts it from rank 0 and
calls the reset callbacks before ``train`` is entered again. After a failure the same happens
without the interrupt: work since the last commit is lost, as in Horovod. A program's
Python state other than the State's attributes starts afresh in each launch.
"""
from __future__ import annotations

import functools

from distrain import environment as env
from distrain.elastic.requests import agreed, elastic_job, listen, requested
from distrain.elastic.state import (HostsUpdatedInterrupt, ObjectState, State,
                                    TensorFlowKerasState, TensorFlowState, state_path)
from distrain.protocol import ExitCode

__all__ = ["run", "State", "ObjectState", "TensorFlowKerasState", "TensorFlowState",
           "HostsUpdatedInterrupt", "KerasState", "CommitStateCallback",
           "UpdateBatchStateCallback", "UpdateEpochStateCallback", "listen", "requested",
           "agreed", "elastic_job", "state_path", "relaunched"]

KerasState = TensorFlowKerasState


def relaunched() -> bool:
    """Whether distrain-run relaunched this job (after a failure or to resize)."""
    return env.int_setting(env.RESTART_COUNT, 0) > 0


def run(func):
    """Horovod's ``hvd.elastic.run``: wraps ``func(state, ...)`` for an elastic job.

    Before ``func`` runs: resize requests are taken (in a job of distrain-run's elastic
    mode); on a relaunch, the last commit is restored and broadcast from rank 0 and the reset
    callbacks are called; otherwise rank 0's state is broadcast. When ``func`` is interrupted
    for a resize, the process exits with :attr:`~distrain.protocol.ExitCode.RESIZE` once every
    rank is there, and distrain-run relaunches the job at the new size.

    Returns:
        The wrapped function; it returns what ``func`` returns.
    """
    @functools.wraps(func)
    def wrapper(state, *args, **kwargs):
        from distrain import collectives
        listen()
        if relaunched() and state.restore_commit():
            state.on_reset()
        else:
            state.sync()
        try:
            return func(state, *args, **kwargs)
        except HostsUpdatedInterrupt:
            collectives.barrier()       # the commit is written before any rank leaves
            raise SystemExit(ExitCode.RESIZE) from None
    return wrapper


def __getattr__(name):
    # The Keras callbacks import Keras: only when asked for.
    if name in ("CommitStateCallback", "UpdateBatchStateCallback", "UpdateEpochStateCallback"):
        from distrain.elastic import callbacks
        return getattr(callbacks, name)
    raise AttributeError(f"module 'distrain.elastic' has no attribute {name!r}")
