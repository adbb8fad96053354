"""One rank's medians, the spread across ranks and predicted-vs-measured, on synthetic steps.

Phases of whole milliseconds (1, 2, 3, 4 ms unless a test says otherwise) make every
expected figure exact; floats are compared to 1e-12 relative.
"""
import math

import pytest

from distrain.timing.predicted import PredictedStep
from distrain.timing.summary import aggregate, compare, summarize_rank
from distrain.timing.timer import PHASES, StepRecord

MS = 1e-3


def exact(value):
    return pytest.approx(value, rel=1e-12, abs=1e-15)


def record(step: int, start_ms: float, ms=(1, 2, 3, 4), gap_ms: float = 0.0) -> StepRecord:
    """A step starting at ``start_ms`` whose phases (in PHASES order) last ``ms``; the step
    ends ``gap_ms`` after the last phase."""
    spans, t = [], start_ms
    for phase, length in zip(PHASES, ms):
        spans.append((phase, t * MS, (t + length) * MS))
        t += length
    return StepRecord(step, start_ms * MS, spans, (t + gap_ms) * MS)


def steps(count: int, ms=(1, 2, 3, 4), first: int = 0, warm=None, warm_ms=(50, 60, 70, 80)):
    """``count`` steps 20 ms apart; the first ``warm`` of them take ``warm_ms``."""
    return [record(first + i, (first + i) * 20.0, warm_ms if warm and i < warm else ms)
            for i in range(count)]


def test_medians_of_each_phase_and_the_total():
    summary = summarize_rank(steps(5), rank=3, host="node-a", warmup=0)
    assert (summary.rank, summary.host, summary.steps, summary.excluded) == (3, "node-a", 5, 0)
    assert not summary.includes_warmup
    assert [summary.phases[p] for p in PHASES] == [exact(1 * MS), exact(2 * MS), exact(3 * MS),
                                                   exact(4 * MS)]
    assert summary.total == exact(10 * MS)
    assert summary.steps_per_s == exact(100.0)


def test_median_of_an_even_count_is_the_mean_of_the_middle_two():
    records = [record(0, 0, (1, 2, 3, 4)), record(1, 20, (1, 4, 3, 4)),
               record(2, 40, (1, 8, 3, 4)), record(3, 60, (1, 100, 3, 4))]
    summary = summarize_rank(records, 0, "h", warmup=0)
    assert summary.phases["compute"] == exact(6 * MS)      # (4 + 8) / 2
    assert summary.total == exact(14 * MS)                 # (12 + 16) / 2


def test_warmup_steps_are_left_out():
    summary = summarize_rank(steps(6, warm=2), 0, "h", warmup=2)
    assert (summary.steps, summary.excluded, summary.includes_warmup) == (4, 2, False)
    assert summary.phases["data"] == exact(1 * MS)
    assert summary.total == exact(10 * MS)
    counted_warm = summarize_rank(steps(6, warm=2), 0, "h", warmup=1)
    assert counted_warm.steps == 5 and counted_warm.total == exact(10 * MS)  # median resists


def test_too_few_steps_counts_all_and_says_so():
    summary = summarize_rank(steps(3, warm=1), 0, "h", warmup=3)
    assert (summary.steps, summary.excluded, summary.includes_warmup) == (3, 0, True)
    assert summary.phases["data"] == exact(1 * MS)


def test_no_steps_gives_nan_and_bad_warmup_is_refused():
    summary = summarize_rank([], 0, "h", warmup=2)
    assert summary.steps == 0 and not summary.includes_warmup
    assert math.isnan(summary.total) and math.isnan(summary.steps_per_s)
    assert all(math.isnan(v) for v in summary.phases.values())
    with pytest.raises(ValueError, match="warmup"):
        summarize_rank(steps(3), 0, "h", warmup=-1)


def test_total_holds_time_between_phases_and_repeated_phases_add_up():
    gap = summarize_rank([record(0, 0, gap_ms=5)], 0, "h", 0)
    assert gap.total == exact(15 * MS) and gap.phases["apply"] == exact(4 * MS)
    twice = StepRecord(0, 0.0, [("data", 0.0, 1 * MS), ("data", 2 * MS, 5 * MS)], 5 * MS)
    summary = summarize_rank([twice], 0, "h", 0)
    assert summary.phases["data"] == exact(4 * MS)
    assert summary.phases["apply"] == 0.0


def three_ranks():
    return [summarize_rank(steps(3, ms=(1, 2, allreduce, 4)), rank, f"node-{rank}", 0)
            for rank, allreduce in enumerate((3, 5, 4))]


def test_aggregate_min_median_max_imbalance_slowest():
    agg = aggregate(three_ranks(), global_batch=96)
    assert agg.ranks == 3 and agg.global_batch == 96
    allreduce = agg.phases["allreduce"]
    assert (allreduce.min, allreduce.median, allreduce.max) == (exact(3 * MS), exact(4 * MS),
                                                                exact(5 * MS))
    assert allreduce.imbalance == exact(1.25)
    assert allreduce.slowest_rank == 1
    assert (agg.total.min, agg.total.median, agg.total.max) == (exact(10 * MS), exact(11 * MS),
                                                                exact(12 * MS))
    assert agg.total.imbalance == exact(12 / 11) and agg.total.slowest_rank == 1
    assert agg.samples_per_s == exact(96 / (12 * MS))  # the slowest rank sets the pace
    assert agg.stats("total") is agg.total


def test_balanced_phase_and_ties_name_the_lowest_rank():
    agg = aggregate(three_ranks(), global_batch=96)
    data = agg.phases["data"]
    assert (data.min, data.median, data.max, data.imbalance) == (exact(MS), exact(MS), exact(MS),
                                                                 exact(1.0))
    assert data.slowest_rank == 0
    zero = [summarize_rank(steps(2, ms=(1, 2, 3, 0)), r, "h", 0) for r in range(2)]
    assert aggregate(zero, 8).phases["apply"].imbalance == 1.0


def test_ranks_without_steps_are_left_out():
    summaries = three_ranks() + [summarize_rank([], 3, "empty", 0)]
    agg = aggregate(summaries, global_batch=128)
    assert agg.ranks == 4
    assert agg.phases["allreduce"].median == exact(4 * MS)
    nothing = aggregate([summarize_rank([], 0, "h", 0)], 8)
    assert nothing.total.slowest_rank is None and math.isnan(nothing.samples_per_s)


PREDICTION = {"phases": {"data": 1.1 * MS, "compute": 1.9 * MS, "allreduce": 3.5 * MS,
                         "apply": 4 * MS}, "total": 10.5 * MS}


def test_compare_gives_signed_errors_per_phase_and_total():
    rows = compare(aggregate(three_ranks(), 96), PredictedStep.from_dict(PREDICTION))
    assert [r.phase for r in rows] == [*PHASES, "total"]
    by_phase = {r.phase: r for r in rows}
    assert by_phase["data"].error_pct == exact(10.0)          # predicted too much: +
    assert by_phase["compute"].error_pct == exact(-5.0)
    assert by_phase["allreduce"].measured == exact(4 * MS)    # median of rank medians
    assert by_phase["allreduce"].error_pct == exact(-12.5)
    assert by_phase["apply"].error_pct == pytest.approx(0.0, abs=1e-9)
    assert by_phase["total"].predicted == exact(10.5 * MS)
    assert by_phase["total"].error_pct == exact((10.5 - 11) / 11 * 100)


def test_compare_without_a_prediction_or_with_gaps():
    agg = aggregate(three_ranks(), 96)
    assert all(r.predicted is None and r.error_pct is None for r in compare(agg, None))
    partial = {r.phase: r for r in compare(agg, PredictedStep({"compute": 2 * MS},
                                                              float("nan")))}
    assert partial["compute"].error_pct == exact(0.0)
    assert partial["data"].predicted is None and partial["total"].predicted is None
