"""Per-step phase clocks on one rank.

A training step is timed in four phases, in order:

- ``data``: getting this rank's batch and handing it to TensorFlow;
- ``compute``: forward and backward (the gradients exist when it ends);
- ``allreduce``: averaging the gradients across ranks, fusion copies included;
- ``apply``: the optimizer's update.

The clock is ``time.perf_counter`` (monotonic). Recording a phase is two clock reads and a
list append; the overhead is measured by ``python -m distrain.bench costmodel`` and stated in
docs/timing.md.

Example:
    >>> timer = StepTimer()
    >>> with timer.step(0):
    ...     with timer.phase("data"):
    ...         pass
    >>> timer.steps[0].step
    0
"""
from __future__ import annotations

import contextlib
import dataclasses
import time

__all__ = ["PHASES", "StepRecord", "StepTimer"]

PHASES = ("data", "compute", "allreduce", "apply")


@dataclasses.dataclass
class StepRecord:
    """One step's phases on one rank.

    Attributes:
        step: the global step number.
        start: the clock at the step's start (seconds).
        spans: ``(phase, start, end)`` for each phase, clock seconds.
        end: the clock at the step's end.
    """

    step: int
    start: float
    spans: list = dataclasses.field(default_factory=list)
    end: float = 0.0

    @property
    def total(self) -> float:
        return self.end - self.start

    def seconds(self, phase: str) -> float:
        """Time spent in ``phase`` during this step (0 if it did not run)."""
        return sum(e - s for p, s, e in self.spans if p == phase)


class StepTimer:
    """Collects :class:`StepRecord` objects for a rank.

    Args:
        clock: a monotonic clock in seconds.
    """

    def __init__(self, clock=time.perf_counter):
        self.clock = clock
        self.steps: list[StepRecord] = []
        self._current: StepRecord | None = None

    @contextlib.contextmanager
    def step(self, number: int):
        """Times one whole step; phases inside it are recorded on it."""
        record = StepRecord(number, self.clock())
        self._current = record
        try:
            yield record
        finally:
            record.end = self.clock()
            self._current = None
            self.steps.append(record)

    @contextlib.contextmanager
    def phase(self, name: str):
        """Times one phase of the current step (a no-op outside a step)."""
        start = self.clock()
        try:
            yield
        finally:
            if self._current is not None:
                self._current.spans.append((name, start, self.clock()))
