"""Step records reduced to numbers: one rank's medians, the spread across ranks, the error.

Pure functions over :class:`~distrain.timing.timer.StepRecord` lists: no MPI, no TensorFlow,
so they run anywhere and are tested with exact arithmetic. A rank's figure for a phase is the
median over its counted steps (the first ``warmup`` steps are left out); the job's figures
compare those medians across ranks.

Example:
    >>> from distrain.timing.timer import StepRecord
    >>> record = StepRecord(0, 0.0, [("data", 0.0, 0.001), ("compute", 0.001, 0.003)], 0.003)
    >>> summary = summarize_rank([record], rank=0, host="a", warmup=0)
    >>> round(summary.phases["compute"], 6), round(summary.steps_per_s)
    (0.002, 333)
"""
from __future__ import annotations

import dataclasses
import math
import statistics
from typing import Mapping, Sequence

from distrain.timing.timer import PHASES, StepRecord

__all__ = ["RankSummary", "PhaseStats", "Aggregate", "Comparison", "summarize_rank",
           "aggregate", "compare", "spread"]

TOTAL = "total"


def _median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else math.nan


@dataclasses.dataclass(frozen=True)
class RankSummary:
    """One rank's medians.

    Attributes:
        rank: the rank.
        host: the host it ran on.
        steps: the steps counted.
        excluded: the warm-up steps left out.
        includes_warmup: True when the rank ran no more than ``warmup`` steps, so every step
            was counted, warm-up included.
        phases: median seconds of each phase in ``PHASES`` (NaN when no steps).
        total: median seconds of the whole step, which also holds the time between phases.
        steps_per_s: ``1 / total``.
        spread: how far the counted steps scatter: (90th - 10th percentile) / median of
            the step times; NaN with fewer than two steps.
    """

    rank: int
    host: str
    steps: int
    excluded: int
    includes_warmup: bool
    phases: Mapping[str, float]
    total: float
    steps_per_s: float
    spread: float = math.nan

    def seconds(self, phase: str) -> float:
        """The median of ``phase``, or of the step for ``"total"``."""
        return self.total if phase == TOTAL else self.phases[phase]


def summarize_rank(records: Sequence[StepRecord], rank: int, host: str,
                   warmup: int) -> RankSummary:
    """Medians of one rank's steps after the warm-up.

    Args:
        records: the rank's steps, in the order they ran.
        rank: the rank.
        host: its host name.
        warmup: how many first steps to leave out; when no step would remain, every step is
            counted and ``includes_warmup`` says so.

    Returns:
        The rank's :class:`RankSummary`.

    Raises:
        ValueError: ``warmup`` is negative.
    """
    if warmup < 0:
        raise ValueError(f"warmup must be >= 0, not {warmup}")
    records = list(records)
    includes_warmup = 0 < len(records) <= warmup
    counted = records if includes_warmup else records[warmup:]
    phases = {p: _median([r.seconds(p) for r in counted]) for p in PHASES}
    total = _median([r.total for r in counted])
    rate = 1.0 / total if total > 0 else math.nan
    return RankSummary(rank, host, len(counted), len(records) - len(counted), includes_warmup,
                       phases, total, rate, spread([r.total for r in counted]))


def spread(values: Sequence[float]) -> float:
    """(90th - 10th percentile) / median of ``values``: how far they scatter; NaN for
    fewer than two values or a median of 0."""
    values = [float(v) for v in values]
    median = _median(values)
    if len(values) < 2 or not median > 0:
        return math.nan
    tenth, *_, ninetieth = statistics.quantiles(values, n=10, method="inclusive")
    return (ninetieth - tenth) / median


@dataclasses.dataclass(frozen=True)
class PhaseStats:
    """One phase's rank medians compared across ranks (seconds).

    Attributes:
        min: the smallest rank median.
        median: the median of the rank medians.
        max: the largest rank median.
        imbalance: ``max / median``; 1.0 when every rank took the same time.
        slowest_rank: the rank with the largest median (the lowest such rank on a tie);
            None when no rank counted a step.
    """

    min: float
    median: float
    max: float
    imbalance: float
    slowest_rank: int | None


@dataclasses.dataclass(frozen=True)
class Aggregate:
    """The job's figures.

    Attributes:
        ranks: how many ranks were summarized.
        global_batch: samples per step across all ranks.
        phases: :class:`PhaseStats` of each phase in ``PHASES``.
        total: :class:`PhaseStats` of the whole step.
        samples_per_s: ``global_batch`` over the slowest rank's median step: every step
            waits for that rank in the allreduce.
    """

    ranks: int
    global_batch: int
    phases: Mapping[str, PhaseStats]
    total: PhaseStats
    samples_per_s: float

    def stats(self, phase: str) -> PhaseStats:
        """The :class:`PhaseStats` of ``phase``, or of the step for ``"total"``."""
        return self.total if phase == TOTAL else self.phases[phase]


def _imbalance(largest: float, median: float) -> float:
    if median > 0:
        return largest / median
    if largest == median:  # every rank 0 s: balanced
        return 1.0
    return math.inf if largest > 0 else math.nan


def _stats(summaries: Sequence[RankSummary], phase: str) -> PhaseStats:
    pairs = [(s.seconds(phase), s.rank) for s in summaries if s.steps]
    if not pairs:
        return PhaseStats(math.nan, math.nan, math.nan, math.nan, None)
    values = [v for v, _ in pairs]
    largest = max(values)
    slowest = min(r for v, r in pairs if v == largest)
    median = _median(values)
    return PhaseStats(min(values), median, largest, _imbalance(largest, median), slowest)


def aggregate(summaries: Sequence[RankSummary], global_batch: int) -> Aggregate:
    """Compares the ranks' medians.

    Ranks that counted no step are left out of every figure.

    Args:
        summaries: one :class:`RankSummary` per rank.
        global_batch: samples per step across all ranks.

    Returns:
        The :class:`Aggregate`.
    """
    phases = {p: _stats(summaries, p) for p in PHASES}
    total = _stats(summaries, TOTAL)
    rate = global_batch / total.max if total.max > 0 else math.nan
    return Aggregate(len(summaries), global_batch, phases, total, rate)


@dataclasses.dataclass(frozen=True)
class Comparison:
    """A phase's predicted time against the measured one.

    Attributes:
        phase: a phase of ``PHASES`` or ``"total"``.
        predicted: the cost model's seconds; None without a prediction.
        measured: the median of the ranks' medians, seconds.
        error_pct: ``(predicted - measured) / measured x 100``, signed: positive when the
            model predicts too much; None when either side is missing or measured is 0.
    """

    phase: str
    predicted: float | None
    measured: float
    error_pct: float | None


def _seconds(value) -> float | None:
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def compare(result: Aggregate, prediction) -> list[Comparison]:
    """Predicted against measured for each phase and the step total.

    Args:
        result: the measured :class:`Aggregate`.
        prediction: anything with ``phases`` (``{phase: seconds}``) and ``total``
            attributes (a :class:`~distrain.timing.predicted.PredictedStep`), or None;
            missing phases count as not predicted.

    Returns:
        One :class:`Comparison` per phase of ``PHASES``, then ``"total"``.
    """
    predicted = {} if prediction is None else dict(prediction.phases or {})
    if prediction is not None:
        predicted[TOTAL] = prediction.total
    rows = []
    for phase in PHASES + (TOTAL,):
        guess = _seconds(predicted.get(phase))
        measured = result.stats(phase).median
        error = None
        if guess is not None and math.isfinite(measured) and measured > 0:
            error = (guess - measured) / measured * 100.0
        rows.append(Comparison(phase, guess, measured, error))
    return rows
