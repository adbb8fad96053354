"""Where a run is, kept right when it resumes at another size.

A checkpoint records the run's position as ``(step, epoch, epoch_samples, epoch_budget)``:
steps done in all, the epoch in progress, how many of that epoch's shuffled samples the ranks
have consumed, and how many it holds (its steps x global batch, as cut when it began). Every
rank reads the epoch's global batches from the shared shuffle, starting at ``epoch_samples``
(:mod:`distrain.train.data`), so a run resumed on another number of ranks cuts the rest of the
epoch into the new global batches: within an epoch no sample is skipped or read twice (but
the last fewer-than-a-global-batch samples, dropped as at every epoch's end) wherever the
ranks share one shuffled order (:func:`distrain.train.data.stream.skip_records`); a source
whose ranks read their own files is exact on the same number of ranks only.

The learning rate across a change of size is :mod:`distrain.train.lr_schedule`'s.

Example:
    >>> Position(10, 0, 320, 320).normalised(64, 640)
    Position(step=10, epoch=1, epoch_samples=0, epoch_budget=640)
"""
from __future__ import annotations

import dataclasses

from distrain.errors import UsageError

__all__ = ["Position", "rank_batch", "position_of"]


@dataclasses.dataclass(frozen=True)
class Position:
    """How far a run is.

    Attributes:
        step: steps done in all.
        epoch: the epoch in progress.
        epoch_samples: the samples of that epoch's shuffle the ranks have consumed.
        epoch_budget: the samples that epoch holds.
    """

    step: int
    epoch: int
    epoch_samples: int
    epoch_budget: int

    def steps_left(self, per_step: int) -> int:
        """The global batches of ``per_step`` samples left in the epoch."""
        return max(0, (self.epoch_budget - self.epoch_samples) // per_step)

    def normalised(self, per_step: int, fresh_budget: int) -> "Position":
        """The same place, as the start of the next epoch (of ``fresh_budget`` samples) when
        this one has no global batch of ``per_step`` samples left; an epoch not begun yet
        holds ``fresh_budget`` samples too."""
        if self.steps_left(per_step) == 0:
            return Position(self.step, self.epoch + 1, 0, fresh_budget)
        if self.epoch_samples == 0:
            return Position(self.step, self.epoch, 0, fresh_budget)
        return self


def position_of(meta: dict, steps: int, per_step: int) -> Position:
    """The position a checkpoint's header records (older checkpoints hold only the step:
    they come from a run of this size, ``steps`` per epoch of ``per_step`` samples)."""
    step = int(meta["step"])
    budget = int(meta.get("epoch_budget", steps * per_step))
    if "epoch_samples" in meta:
        return Position(step, int(meta["epoch"]), int(meta["epoch_samples"]), budget)
    epoch, first = divmod(step, steps)
    return Position(step, epoch, first * per_step, budget)


def rank_batch(batch_size: int, global_batch: int | None, size: int, passes: int = 1) -> int:
    """The batch of one backward pass on one rank: ``batch_size``, or
    ``global_batch / (size * passes)`` when the global batch is fixed.

    Raises:
        UsageError: ``global_batch`` does not split evenly over ``size`` ranks and
            ``passes`` backward passes.
    """
    if global_batch is None:
        return batch_size
    if global_batch % (size * passes):
        per = f"{size} ranks" if passes == 1 else f"{size} ranks x {passes} backward passes"
        raise UsageError(f"--global-batch-size {global_batch} does not split evenly over "
                         f"{per}; give a multiple of every job size it may run at")
    return global_batch // (size * passes)
