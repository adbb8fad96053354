"""The learning rate at each step: Horovod's warm-up, and the ramp across a change of size.

With N ranks the global batch is N times larger, so the rate is ``--lr`` x N (Horovod's linear
scaling rule), reached over ``--warmup-epochs`` from ``--lr``. A run resumed at another size
ramps linearly, over ``--resize-warmup-steps`` steps, from the rate its checkpoint was taken
at to the new size's rate; with ``--global-batch-size`` the global batch, and so the rate, stay
as they were.

Example:
    >>> learning_rate_at(5, 0.1, 4, True, 10)
    0.25
"""
from __future__ import annotations

import dataclasses

__all__ = ["learning_rate_at", "Schedule"]


def learning_rate_at(step: int, base: float, size: int, scale: bool,
                     warmup_steps: int) -> float:
    """The learning rate for ``step``: ``base x size``, ramped up from ``base``.

    Horovod's rule: with N ranks the global batch is N times larger, so the rate is N times
    larger; warming up from the single-rank rate avoids early divergence.

    Args:
        step: the step about to run.
        base: the single-rank learning rate.
        size: the number of ranks.
        scale: False keeps ``base`` on any number of ranks.
        warmup_steps: steps to reach the scaled rate (0: at once).

    Returns:
        The rate.
    """
    if not scale or size == 1:
        return base
    target = base * size
    if warmup_steps <= 0 or step >= warmup_steps:
        return target
    return base + (target - base) * step / warmup_steps


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
