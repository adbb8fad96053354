"""How far a run's comparison with the cost model can be trusted.

A prediction is only as good as the run it is held against and the calibration it used:

- a run whose ranks were disturbed (another process took the cores) scatters its own step
  times, or leaves one rank far behind the others, and a prediction whose timing rounds
  were disturbed scatters those; the error then says more about the host than about the
  model (:func:`disturbances`);
- a calibration measured on a busier or quieter host than today's predicts an allreduce the
  run does not see; when the measured allreduce is more than :data:`CALIBRATION_MARGIN` off
  the prediction the calibration is re-measured next run (:func:`calibration_disagreement`;
  the training program marks the cache stale); an overlapped run's exposed allreduce as far
  off is the overlap schedule's error, said so, and the calibration kept
  (:func:`overlap_disagreement`);
- a fit that was implausible twice was used but never cached, and the report says so.

Pure functions over a :class:`~distrain.timing.report.Report`-like object: ``ranks``
(:class:`~distrain.timing.summary.RankSummary`), ``aggregate`` and ``prediction``.
"""
from __future__ import annotations

import math
import time

from distrain.timing.summary import compare

__all__ = ["disturbances", "calibration_disagreement", "overlap_disagreement", "trust_lines",
           "SPREAD_LIMIT", "IMBALANCE_LIMIT", "CALIBRATION_MARGIN"]

SPREAD_LIMIT = 1.0        # (p90 - p10) / median of a rank's step times, or of the rounds
IMBALANCE_LIMIT = 1.25    # slowest rank's median step / the median rank's
CALIBRATION_MARGIN = 0.5  # |measured - predicted| / measured of the allreduce phase


def disturbances(report) -> list[str]:
    """Why the run's step times are not a clean measurement; empty when they are.

    Args:
        report: has ``ranks`` (summaries with ``rank``, ``spread``, ``steps``) and
            ``aggregate.total`` (``imbalance``, ``slowest_rank``).

    Returns:
        One phrase per finding, e.g. ``"rank 1's steps scatter 72 % (p10-p90 / median)"``.
    """
    found = []
    for summary in report.ranks:
        spread = getattr(summary, "spread", math.nan)
        if summary.steps >= 2 and math.isfinite(spread) and spread > SPREAD_LIMIT:
            found.append(f"rank {summary.rank}'s steps scatter {spread:.0%} "
                         f"(p10-p90 / median)")
    total = report.aggregate.total
    if math.isfinite(total.imbalance) and total.imbalance > IMBALANCE_LIMIT:
        found.append(f"rank {total.slowest_rank}'s median step is "
                     f"{total.imbalance - 1:.0%} above the median rank's")
    prediction = getattr(report, "prediction", None)
    rounds = getattr(prediction, "rounds_spread", None)
    if rounds is not None and math.isfinite(rounds) and rounds > SPREAD_LIMIT:
        found.append(f"the cost model's timing rounds scatter {rounds:.0%} (p10-p90 / "
                     f"median)")
    return found


def calibration_disagreement(report) -> float | None:
    """The allreduce's relative error when it is past :data:`CALIBRATION_MARGIN`, else None.

    Not judged for an overlapped run (its measured allreduce is only the exposed part: see
    :func:`overlap_disagreement`) or without a predicted allreduce.
    """
    prediction = report.prediction
    if prediction is None or prediction.overlap:
        return None
    return _allreduce_error(report)


def overlap_disagreement(report) -> float | None:
    """An overlapped run's exposed allreduce's relative error when it is past
    :data:`CALIBRATION_MARGIN`, else None. The overlap schedule counts each bucket reduced
    during backward at its own time and at no cost to backward; where ranks have no core
    to spare for communication it predicts the exposed part far too short (namespace hosts
    at 1 Gbit, one core per rank, 128/256 KiB buckets: 4.9-10.1 ms against 21.8-23.3 ms).
    That is the schedule's error, not the calibration's, which is kept."""
    prediction = report.prediction
    if prediction is None or not prediction.overlap:
        return None
    return _allreduce_error(report)


def _allreduce_error(report) -> float | None:
    """The allreduce phase's relative error past the margin (above 0.1 ms measured)."""
    for row in compare(report.aggregate, report.prediction):
        if row.phase == "allreduce" and row.error_pct is not None:
            error = row.error_pct / 100
            measured = row.measured
            # a sub-0.1 ms allreduce (one rank) is all host share: nothing to calibrate
            if abs(error) > CALIBRATION_MARGIN and measured > 1e-4:
                return error
    return None


def _when(seconds) -> str:
    if not seconds:
        return "at an unknown time"
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(float(seconds)))


def trust_lines(report) -> list[str]:
    """The report's lines on the calibration used and on a disturbed run."""
    lines = []
    prediction = report.prediction
    calibration = {} if prediction is None else dict(prediction.calibration or {})
    if calibration:
        load = calibration.get("load")
        under = "" if load is None else f", load {load:.2f} per core"
        how = ("measured for this run" if calibration.get("source") == "measured"
               else f"cached, measured {_when(calibration.get('measured_at'))}")
        lines.append(f"calibration: {how}{under}")
        if calibration.get("problem"):
            lines.append(f"  implausible fit, measured twice: {calibration['problem']}; "
                         f"used for this run only, not cached: the allreduce prediction "
                         f"is unreliable")
    error = calibration_disagreement(report)
    if error is not None:
        lines.append(f"  the predicted allreduce is {error:+.0%} off the measured one "
                     f"(margin {CALIBRATION_MARGIN:.0%}): the calibration is measured again "
                     f"next run")
    error = overlap_disagreement(report)
    if error is not None:
        lines.append(f"  the predicted exposed allreduce is {error:+.0%} off the measured one "
                     f"(margin {CALIBRATION_MARGIN:.0%}): the overlap schedule counts buckets "
                     f"reduced during backward as free for backward, which ranks without a "
                     f"core to spare for communication are not (docs/cost-model.md, Known "
                     f"limits); the calibration is kept")
    found = disturbances(report)
    if found:
        lines.append("disturbed run: " + "; ".join(found) + ". The errors above measure "
                     "the host's noise as much as the model; run again on a quiet host")
    return lines
