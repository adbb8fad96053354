"""The job's timing report: gathered on rank 0, printed as tables, written as JSON.

:func:`gather_report` is a collective: every rank calls it at the same point; each sends its
:class:`~distrain.timing.summary.RankSummary` and its raw phase spans, and rank 0 gets the
:class:`Report` (the others get None). Rank 0 then prints :func:`format_report`, writes
:func:`write_json` (schema ``distrain.timing/1``, every field in docs/timing.md), and hands the
same report to :func:`distrain.timing.trace.write_trace` and :func:`distrain.timing.plot.plot`.

Example:
    >>> report = gather_report(timer, rank, host, warmup=5, global_batch=256)  # doctest: +SKIP
    >>> if report is not None:                                                 # doctest: +SKIP
    ...     print(format_report(report))
    ...     write_json(report, "timing.json")
"""
from __future__ import annotations

import dataclasses
import json
import math
import time
from typing import Mapping, Sequence

from distrain import collectives
from distrain.files import write_atomically
from distrain.timing.predicted import PredictedStep
from distrain.timing.summary import (TOTAL, Aggregate, RankSummary, aggregate, compare,
                                     summarize_rank)
from distrain.timing.timer import PHASES, StepRecord
from distrain.timing.trust import (calibration_disagreement, disturbances, overlap_disagreement,
                                   trust_lines)

__all__ = ["SCHEMA", "Report", "build_report", "gather_report", "format_report",
           "report_to_json", "write_json"]

SCHEMA = "distrain.timing/1"


@dataclasses.dataclass
class Report:
    """Every rank's timing, on rank 0.

    Attributes:
        world_size: the number of ranks.
        warmup: the warm-up steps each rank left out of its medians.
        global_batch: samples per step across all ranks.
        ranks: one :class:`RankSummary` per rank, in rank order.
        aggregate: the cross-rank :class:`Aggregate`.
        prediction: the cost model's :class:`PredictedStep`, or None.
        spans: per rank, its :class:`StepRecord` list (warm-up included) on one clock
            shared by every rank: rank 0's, with other ranks shifted by the difference of
            their wall-clock offsets.
    """

    world_size: int
    warmup: int
    global_batch: int
    ranks: list[RankSummary]
    aggregate: Aggregate
    prediction: PredictedStep | None = None
    spans: list[list[StepRecord]] = dataclasses.field(default_factory=list)


def build_report(summaries: Sequence[RankSummary], spans: Sequence[Sequence[StepRecord]],
                 warmup: int, global_batch: int, prediction=None) -> Report:
    """Assembles a :class:`Report` from per-rank parts (no communication).

    Args:
        summaries: one per rank, in rank order.
        spans: per rank, the records for the trace (may be empty lists).
        warmup: the warm-up steps left out.
        global_batch: samples per step across all ranks.
        prediction: a ``distrain.costmodel.Prediction`` (read by its attributes), a
            :class:`PredictedStep`, its JSON form (a mapping), or None.

    Returns:
        The report.
    """
    return Report(len(summaries), warmup, global_batch, list(summaries),
                  aggregate(summaries, global_batch), _predicted(prediction),
                  [list(s) for s in spans])


def _predicted(prediction) -> PredictedStep | None:
    if prediction is None or isinstance(prediction, PredictedStep):
        return prediction
    if isinstance(prediction, Mapping):
        return PredictedStep.from_dict(prediction)
    return PredictedStep.of(prediction)


def _pack(records: Sequence[StepRecord]) -> list[tuple]:
    """Records as plain tuples, phases by their index in PHASES (others are dropped)."""
    code = {p: i for i, p in enumerate(PHASES)}
    return [(r.step, r.start, r.end,
             tuple((code[p], s, e) for p, s, e in r.spans if p in code)) for r in records]


def _unpack(packed: Sequence[tuple], shift: float) -> list[StepRecord]:
    return [StepRecord(step, start + shift,
                       [(PHASES[i], s + shift, e + shift) for i, s, e in spans], end + shift)
            for step, start, end, spans in packed]


def gather_report(timer, rank: int, host: str, warmup: int, global_batch: int,
                  prediction=None, comm=None,
                  trace_steps: int | None = None) -> Report | None:
    """Gathers every rank's timing on rank 0. A collective: every rank must call it.

    Each rank sends its :class:`RankSummary`, the offset between the wall clock and its
    timer's clock (to put every rank's spans on one time line), and its spans as tuples.

    Args:
        timer: this rank's :class:`~distrain.timing.timer.StepTimer`.
        rank: this rank; ranks must call in rank order of the communicator.
        host: this rank's host name.
        warmup: the first steps to leave out of the medians.
        global_batch: samples per step across all ranks.
        prediction: as :func:`build_report` takes it; only rank 0's is used.
        comm: anything with ``allgather_object(obj)``; distrain's collectives when None.
        trace_steps: send only the last this many steps' spans (None: all; 0: none).
            The medians always use every step.

    Returns:
        The :class:`Report` on rank 0, None on the other ranks.

    Raises:
        ValueError: ``warmup`` or ``trace_steps`` is negative (on the calling rank, before
            sending), or the ``rank`` arguments do not match the ranks' order (on all ranks).
        NotInitializedError: ``comm`` is None and distrain has not been initialized.
    """
    if trace_steps is not None and trace_steps < 0:
        raise ValueError(f"trace_steps must be >= 0 or None, not {trace_steps}")
    records = list(timer.steps)
    summary = summarize_rank(records, rank, host, warmup)
    kept = records if trace_steps is None else records[max(0, len(records) - trace_steps):]
    offset = time.time() - timer.clock()
    if comm is None:
        comm = collectives
    gathered = comm.allgather_object((summary, offset, _pack(kept)))
    order = [s.rank for s, _, _ in gathered]
    if order != list(range(len(gathered))):
        raise ValueError(f"gather_report: ranks passed rank={order} in communicator order; "
                         f"pass each process's own rank")
    if rank != 0:
        return None
    base = gathered[0][1]
    spans = [_unpack(packed, off - base) for _, off, packed in gathered]
    return build_report([s for s, _, _ in gathered], spans, warmup, global_batch, prediction)


# ---------------------------------------------------------------- text

def _ms(seconds) -> str:
    if seconds is None or not math.isfinite(seconds):
        return "-"
    return f"{seconds * 1e3:.3f}"


def _number(value, spec: str, suffix: str = "") -> str:
    if value is None or not math.isfinite(value):
        return "inf" if value == math.inf else "-"
    return f"{value:{spec}}{suffix}"


def _percent(value) -> str:
    """A signed percentage to 0.1; no sign on zero (rounding leaves no ``-0.0%``)."""
    if value is None or not math.isfinite(value):
        return "-"
    value = round(value, 1)
    return "0.0%" if value == 0 else f"{value:+.1f}%"


def _bytes(count) -> str:
    if count is None:
        return "-"
    count = float(count)
    for unit, size in (("GiB", 2 ** 30), ("MiB", 2 ** 20), ("KiB", 2 ** 10)):
        if count >= size:
            return f"{count / size:.1f} {unit}"
    return f"{count:.0f} B"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]], left: int = 1) -> list[str]:
    """Fixed-width columns: the first ``left`` columns left-aligned, the rest right-aligned."""
    widths = [max(len(str(c)) for c in column) for column in zip(header, *rows)]
    lines = []
    for row in [header, *rows]:
        cells = [str(c).ljust(w) if i < left else str(c).rjust(w)
                 for i, (c, w) in enumerate(zip(row, widths))]
        lines.append("  " + "  ".join(cells).rstrip())
    lines.insert(1, "  " + "  ".join("-" * w for w in widths))
    return lines


def _heading(report: Report) -> list[str]:
    counted = sorted({s.steps for s in report.ranks})
    steps = "/".join(str(c) for c in counted) if counted else "0"
    lines = [f"distrain timing: {report.world_size} rank{'s' if report.world_size != 1 else ''}"
             f", global batch {report.global_batch}, {steps} steps per rank after "
             f"{report.warmup} warm-up step{'s' if report.warmup != 1 else ''}"]
    short = [str(s.rank) for s in report.ranks if s.includes_warmup]
    if short:
        lines.append(f"  note: rank(s) {', '.join(short)} ran no more than {report.warmup} "
                     f"steps; all their steps are counted, warm-up included")
    return lines


def _rank_table(report: Report) -> list[str]:
    rows = [[str(s.rank), s.host, *(_ms(s.phases[p]) for p in PHASES), _ms(s.total),
             _number(s.steps_per_s, ".2f")] for s in report.ranks]
    return ["per rank (median ms per step)",
            *_table(["rank", "host", *PHASES, TOTAL, "steps/s"], rows, left=2)]


def _aggregate_table(report: Report) -> list[str]:
    agg = report.aggregate
    rows = []
    for phase in PHASES + (TOTAL,):
        st = agg.stats(phase)
        rows.append([phase, _ms(st.min), _ms(st.median), _ms(st.max),
                     _number(st.imbalance, ".2f", "x"),
                     "-" if st.slowest_rank is None else str(st.slowest_rank)])
    return ["across ranks (ms; imbalance = max / median)",
            *_table(["phase", "min", "median", "max", "imbalance", "slowest rank"], rows),
            f"throughput: {_number(agg.samples_per_s, ',.1f')} samples/s (global batch "
            f"{agg.global_batch} / slowest rank's median step {_ms(agg.total.max)} ms)"]


def _comparison_lines(report: Report) -> list[str]:
    rows = [[c.phase, _ms(c.predicted), _ms(c.measured), _percent(c.error_pct)]
            for c in compare(report.aggregate, report.prediction)]
    return ["cost model (ms; measured = median of the ranks' medians; error = (predicted - "
            "measured) / measured)", *_table(["phase", "predicted", "measured", "error"], rows)]


def _submodel_lines(prediction: PredictedStep) -> list[str]:
    terms = [(name, math.nan if s is None else float(s)) for name, s in prediction.submodels]
    if not terms:
        return []
    if prediction.call_overhead is not None:
        terms.append(("(call overhead)", float(prediction.call_overhead)))
    if prediction.interaction is not None:
        terms.append(("(whole model less the sum)", float(prediction.interaction)))
    rows = [[name, _ms(s)] for name, s in terms]
    rows.append(["sum", _ms(math.fsum(s for _, s in terms))])
    return ["", "sub-models (predicted forward + backward on the per-rank batch, ms; the "
                "whole model timed as one function less the rest is its own line)",
            *_table(["sub-model", "ms"], rows)]


def _communication_lines(prediction: PredictedStep) -> list[str]:
    terms = []
    alpha, beta, gamma = prediction.alpha, prediction.beta, prediction.gamma
    if alpha is not None:
        terms.append(f"alpha {_number(alpha * 1e6, '.2f')} us")
    if beta is not None:
        bandwidth = f" ({_number(1e-9 / beta, '.2f')} GB/s)" if beta > 0 else ""
        terms.append(f"beta {_number(beta * 1e9, '.4f')} ns/byte{bandwidth}")
    if gamma is not None:
        terms.append(f"gamma {_number(gamma * 1e9, '.4f')} ns/byte")
    lines = ["", "communication model: " + ", ".join(terms)] if terms else []
    phases = prediction.phases
    if prediction.allreduce_host is not None and phases.get("allreduce") is not None:
        host, wait = float(prediction.allreduce_host), float(prediction.wait or 0)
        lines.append(f"predicted allreduce {_ms(phases['allreduce'])} ms = host share "
                     f"{_ms(host)} + negotiation and messages "
                     f"{_ms(phases['allreduce'] - host - wait)} + "
                     f"wait for the slowest rank {_ms(wait)}")
    return lines


def _whatif_lines(prediction: PredictedStep) -> list[str]:
    rows = [[str(w.get("ranks", "?")), _ms(w.get("step_s")),
             _number(w.get("samples_per_s"), ",.1f"),
             _number(w["efficiency"] * 100 if w.get("efficiency") is not None else None,
                     ".1f", "%")] for w in prediction.whatif]
    if not rows:
        return []
    return ["", "what-if (assumes a ring allreduce, every link with this run's alpha and "
                "beta, the same per-rank batch and compute per rank; efficiency 100% = "
                "linear scaling)",
            *_table(["ranks", "step ms", "samples/s", "efficiency"], rows, left=0)]


def _fusion_lines(prediction: PredictedStep) -> list[str]:
    bucket = [] if prediction.recommended_bucket_bytes is None else [
        f"recommended overlap bucket size: {_bytes(prediction.recommended_bucket_bytes)} "
        f"(DISTRAIN_BUCKET_BYTES)"]
    return _threshold_lines(prediction) + bucket


def _threshold_lines(prediction: PredictedStep) -> list[str]:
    recommended = prediction.recommended_fusion_threshold
    current = prediction.fusion_threshold
    if recommended is None:
        return [] if current is None else [f"fusion threshold: {_bytes(current)}"]
    now = "" if current is None else f" (now {_bytes(current)})"
    return [f"recommended fusion threshold: {_bytes(recommended)}{now}"]


def format_report(report: Report) -> str:
    """The report as fixed-width text tables.

    Args:
        report: from :func:`gather_report` or :func:`build_report`.

    Returns:
        A block of lines: heading, per-rank table, cross-rank table and throughput, and,
        with a prediction, the cost-model tables (no trailing newline).
    """
    lines = [*_heading(report), "", *_rank_table(report), "", *_aggregate_table(report)]
    prediction = report.prediction
    if prediction is not None:
        lines += ["", *_comparison_lines(report), *trust_lines(report),
                  *_submodel_lines(prediction),
                  *_communication_lines(prediction), *_whatif_lines(prediction),
                  *_fusion_lines(prediction)]
    return "\n".join(lines)


# ---------------------------------------------------------------- JSON

def _plain(value):
    """``value`` with numpy values made Python ones and NaN/inf made None."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if hasattr(value, "tolist"):  # numpy scalar or array
        return _plain(value.tolist())
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value if value is None or isinstance(value, (str, int, float)) else str(value)


def report_to_json(report: Report) -> dict:
    """The report as plain JSON data, schema ``distrain.timing/1`` (docs/timing.md).

    Args:
        report: the report.

    Returns:
        A dict of lists, strings, numbers, booleans and None (NaN and inf become None).
    """
    def stats(st):
        return {"min_s": st.min, "median_s": st.median, "max_s": st.max,
                "imbalance": st.imbalance, "slowest_rank": st.slowest_rank}

    agg = report.aggregate
    data = {
        "schema": SCHEMA,
        "world_size": report.world_size,
        "warmup": report.warmup,
        "global_batch": report.global_batch,
        "phases": list(PHASES),
        "ranks": [{"rank": s.rank, "host": s.host, "steps": s.steps, "excluded": s.excluded,
                   "includes_warmup": s.includes_warmup,
                   "median_s": {**{p: s.phases[p] for p in PHASES}, TOTAL: s.total},
                   "steps_per_s": s.steps_per_s, "spread": s.spread}
                  for s in report.ranks],
        "aggregate": {"samples_per_s": agg.samples_per_s,
                      "phases": {p: stats(agg.stats(p)) for p in PHASES + (TOTAL,)}},
        "comparison": {c.phase: {"predicted_s": c.predicted, "measured_s": c.measured,
                                 "error_pct": c.error_pct}
                       for c in compare(agg, report.prediction)},
        "prediction": None if report.prediction is None else report.prediction.to_dict(),
        "disturbed": disturbances(report),
        "calibration_disagreement": calibration_disagreement(report),
        "overlap_disagreement": overlap_disagreement(report),
    }
    return _plain(data)


def write_json(report: Report, path: str) -> None:
    """Writes :func:`report_to_json` to ``path`` atomically, indented.

    Raises:
        UsageError: the file cannot be written.
    """
    text = json.dumps(report_to_json(report), indent=2, allow_nan=False) + "\n"
    write_atomically(path, lambda handle: handle.write(text.encode()))
