"""Where a run is, and its learning rate, kept right when it resumes at another size.

A checkpoint records the run's position as ``(step, epoch, epoch_samples, epoch_budget)``:
steps done in all, the epoch in progress, how many of that epoch's shuffled samples the ranks
have consumed, and how many it holds (its steps x global batch, as cut when it began). Every
rank reads the epoch's global batches from the shared shuffle, starting at ``epoch_samples``
(:mod:`distrain.train.data`), so a run resumed on another number of ranks cuts the rest of the
epoch into the new global batches: within an epoch no sample is skipped or read twice (but
the last fewer-than-a-global-batch samples, dropped as at every epoch's end) wherever the
ranks share one shuffled order (:func:`distrain.train.data.stream.skip_records`); a source
whose ranks read their own files is exact on the same number of ranks only.

The learning rate of a resized run ramps linearly, over ``--resize-warmup-steps`` steps,
from the rate the checkpoint was taken at to the new size's rate (Horovod's linear scaling
rule: ``--lr`` x ranks); with ``--global-batch-size`` the global batch, and so the rate, stay
as they were.

Example:
    >>> Position(10, 0, 320, 320).normalised(64, 640)
    Position(step=10, epoch=1, epoch_samples=0, epoch_budget=640)
"""
from __future__ import annotations

import dataclasses

from distrain.errors import UsageError
from distrain.train.step import learning_rate_at

__all__ = ["Position", "Schedule", "rank_batch", "position_of"]


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


def rank_batch(batch_size: int, global_batch: int | None, size: int) -> int:
    """The per-rank batch: ``batch_size``, or ``global_batch / size`` when it is fixed.

    Raises:
        UsageError: ``global_batch`` does not split evenly over ``size`` ranks.
    """
    if global_batch is None:
        return batch_size
    if global_batch % size:
        raise UsageError(f"--global-batch-size {global_batch} does not split evenly over "
                         f"{size} ranks; give a multiple of every job size it may run at")
    return global_batch // size


@dataclasses.dataclass
class Schedule:
    """The learning rate at each step: Horovod's warm-up from ``--lr`` to ``--lr`` x ranks,
    then, after a resize, a ramp from the old rate to the new one.

    Attributes:
        base: ``--lr``.
        size: the number of ranks.
        scale: multiply ``base`` by the ranks (off with ``--no-scale-lr`` or a fixed global
            batch).
        warmup_steps: steps of the initial warm-up.
        ramp: ``(first step, rate it starts from, steps)`` of a resize ramp, or None.
    """

    base: float
    size: int
    scale: bool
    warmup_steps: int
    ramp: tuple[int, float, int] | None = None

    def target(self, step: int) -> float:
        """The rate without a resize ramp."""
        return learning_rate_at(step, self.base, self.size, self.scale, self.warmup_steps)

    def at(self, step: int) -> float:
        """The rate for ``step``."""
        target = self.target(step)
        if self.ramp is None:
            return target
        first, start, steps = self.ramp
        if step >= first + steps:
            return target
        return start + (target - start) * (step - first + 1) / (steps + 1)

    def header(self, step: int) -> dict:
        """What a checkpoint records for :meth:`resume`."""
        return {"learning_rate": self.at(step), "lr_ramp": list(self.ramp) if self.ramp
                else None}

    def resume(self, meta: dict, step: int, saved_size: int, ramp_steps: int) -> str:
        """Carries on from a checkpoint: continues its ramp, or, when the size changed and
        the rate with it, starts one from the rate it was saved at.

        Returns:
            A line saying what changed, or ``""``.
        """
        if meta.get("lr_ramp"):
            self.ramp = tuple(meta["lr_ramp"])
        saved = meta.get("learning_rate")
        if saved_size == self.size or saved is None:
            return ""
        new = self.target(step)
        self.ramp = None
        if abs(new - saved) <= 1e-9 * max(abs(new), 1e-12):
            return ""
        if ramp_steps > 0:
            self.ramp = (step, float(saved), ramp_steps)
            return (f"learning rate {saved:.4g} -> {new:.4g} over {ramp_steps} steps "
                    f"(--resize-warmup-steps)")
        return f"learning rate {saved:.4g} -> {new:.4g}"
