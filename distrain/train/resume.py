"""Resuming from a checkpoint: whether a run resumes, what its checkpoints record, the check
that a checkpoint fits the run, and the line a resumed run prints.

A checkpoint's header (:func:`header`) records the run's model, dataset, optimizer and batch,
its :class:`~distrain.train.position.Position`, its size and the learning rate's state
(:meth:`~distrain.train.lr_schedule.Schedule.header`). A run resumes only from a checkpoint of
the same model, dataset, optimizer and per-rank batch, or, when the global batch is fixed,
the same global batch on any number of ranks.

Example:
    >>> if should_resume(config, rank):  # doctest: +SKIP
    ...     meta = restore(config, model, optimizer, size) if rank == 0 else None
"""
from __future__ import annotations

from distrain import collectives
from distrain import environment as env
from distrain.errors import UsageError
from distrain.keras_compat import optimizer_variables
from distrain.train import checkpoint
from distrain.train.config import TrainConfig
from distrain.train.lr_schedule import Schedule
from distrain.train.position import Position

__all__ = ["should_resume", "header", "restore", "resumed_line"]


def should_resume(config: TrainConfig, rank: int) -> bool:
    """Whether the run resumes: ``--resume``, or a relaunch by distrain-run
    (``DISTRAIN_RESTART_COUNT`` > 0) of a run with a checkpoint directory that already holds
    a checkpoint (rank 0 looks; a collective then).

    Args:
        config: the run's configuration.
        rank: this rank.

    Returns:
        The same answer on every rank.
    """
    if config.resume:
        return True
    if not config.checkpoint_dir or env.int_setting(env.RESTART_COUNT, 0) <= 0:
        return False
    import os
    found = rank == 0 and os.path.isfile(os.path.join(config.checkpoint_dir,
                                                      checkpoint.CHECKPOINT_NAME))
    return bool(collectives.allgather_object(found)[0])


def header(config: TrainConfig, position: Position, size: int, schedule: Schedule) -> dict:
    """What a checkpoint written at ``position`` by ``size`` ranks records beside the arrays.

    Args:
        config: the run's configuration, with this rank's batch size.
        position: where the run is.
        size: the number of ranks.
        schedule: the run's learning rate.

    Returns:
        The header, for :func:`distrain.train.checkpoint.save`.
    """
    return dict(_identity(config), epoch_samples=position.epoch_samples,
                epoch_budget=position.epoch_budget, size=size,
                global_batch=config.global_batch_size(size), batch_size=config.batch_size,
                **schedule.header(position.step))


def restore(config: TrainConfig, model, optimizer, size: int) -> dict:
    """Loads the checkpoint in ``config.checkpoint_dir`` into the model and optimizer.

    Args:
        config: the run's configuration, with this rank's batch size.
        model: the built Keras model.
        optimizer: its built optimizer.
        size: the number of ranks.

    Returns:
        The checkpoint's header.

    Raises:
        UsageError: the checkpoint is from another run, or does not fit the model.
    """
    meta, model_arrays, opt_arrays = checkpoint.load(config.checkpoint_dir)
    expected = _identity(config)
    if "size" not in meta:     # written before elastic jobs: it knows the global batch only
        expected = {k: v for k, v in expected.items() if k not in ("batch_size",
                                                                   "global_batch")}
        expected["global_batch"] = config.global_batch_size(size)
    differs = {k: (meta.get(k), v) for k, v in expected.items() if meta.get(k) != v}
    if differs:
        detail = ", ".join(f"{k} {a!r} there but {b!r} here" for k, (a, b) in differs.items())
        raise UsageError(f"the checkpoint in {config.checkpoint_dir!r} is from another run "
                         f"({detail})")
    targets = [(model.weights, model_arrays), (optimizer_variables(optimizer),
                                                opt_arrays)]
    for variables, arrays in targets:
        shapes = [tuple(v.shape) for v in variables]
        if shapes != [a.shape for a in arrays]:
            raise UsageError(f"the checkpoint in {config.checkpoint_dir!r} does not fit this "
                             f"model ({len(arrays)} arrays there, {len(shapes)} here)")
        for variable, array in zip(variables, arrays):
            variable.assign(array)
    return meta


def resumed_line(meta: dict, position: Position, size: int, per_step: int, changed: str,
                 digest: str) -> str:
    """The line a resumed run prints: from where, and what a change of size changed.

    Args:
        meta: the checkpoint's header.
        position: where the run resumes.
        size: the number of ranks now.
        per_step: the global batch now.
        changed: what :meth:`~distrain.train.lr_schedule.Schedule.resume` said changed.
        digest: the weights' digest.

    Returns:
        The line, without a newline.
    """
    saved = int(meta.get("size", size))
    line = f"resumed from step {position.step}, weights {digest}"
    if saved != size:
        line += (f"; saved at {saved} rank(s), now {size}: epoch {position.epoch} goes on "
                 f"from sample {position.epoch_samples} of its shuffle, global batch "
                 f"{meta.get('global_batch', '?')} -> {per_step}")
    return line + (f"; {changed}" if changed else "")


def _identity(config: TrainConfig) -> dict:
    """What a checkpoint must share with the run that resumes it: the per-rank batch, or
    the global batch when it is fixed (any number of ranks may resume it)."""
    batch = {"global_batch": config.global_batch} if config.global_batch else \
        {"batch_size": config.batch_size}
    return {"model": config.model, "dataset": config.dataset, "optimizer": config.optimizer,
            **batch}
