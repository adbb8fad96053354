"""Every rank's steps as a Chrome trace: open it in chrome://tracing or ui.perfetto.dev.

The trace is in the Trace Event Format's JSON object form. One process, ``distrain``
(pid 0), holds one thread per rank (tid = rank, named ``rank N``). Each step is a complete
event (``"ph": "X"``) named ``step``, and each of its phases a complete event named after the
phase nested inside it; all carry ``args = {"step": n}``. Times are microseconds from the
earliest span of any rank, on the report's shared clock, so a rank waiting in the
allreduce for a slower one shows as a longer ``allreduce`` slice on its track.

Example:
    >>> write_trace(report, "timeline.json")    # doctest: +SKIP
"""
from __future__ import annotations

import json

from distrain.timing.report import SCHEMA, Report, write_atomically

__all__ = ["chrome_trace", "write_trace"]

PROCESS = "distrain"
PID = 0


def _us(seconds: float) -> float:
    return round(seconds * 1e6, 3)


def _metadata(report: Report) -> list[dict]:
    events = [{"name": "process_name", "ph": "M", "pid": PID, "tid": 0,
               "args": {"name": PROCESS}}]
    for summary in report.ranks:
        events.append({"name": "thread_name", "ph": "M", "pid": PID, "tid": summary.rank,
                       "args": {"name": f"rank {summary.rank}"}})
        events.append({"name": "thread_sort_index", "ph": "M", "pid": PID,
                       "tid": summary.rank, "args": {"sort_index": summary.rank}})
    return events


def _slice(name: str, category: str, start: float, end: float, origin: float, rank: int,
           step: int) -> dict:
    begin, finish = _us(start - origin), _us(end - origin)
    return {"name": name, "cat": category, "ph": "X", "ts": begin,
            "dur": round(max(finish - begin, 0.0), 3), "pid": PID, "tid": rank,
            "args": {"step": step}}


def chrome_trace(report: Report) -> dict:
    """The report's spans as a Chrome trace.

    Args:
        report: a report whose ``spans`` hold each rank's step records.

    Returns:
        ``{"traceEvents": [...], "displayTimeUnit": "ms", "otherData": {...}}``: metadata
        events first, then complete events sorted by ``ts`` (a step before the phases that
        start with it).
    """
    records = [(summary.rank, r) for summary, spans in zip(report.ranks, report.spans)
               for r in spans]
    starts = [r.start for _, r in records] + [s for _, r in records for _, s, _ in r.spans]
    origin = min(starts, default=0.0)
    slices = []
    for rank, record in records:
        slices.append(_slice("step", "step", record.start, record.end, origin, rank,
                             record.step))
        slices.extend(_slice(phase, "phase", start, end, origin, rank, record.step)
                      for phase, start, end in record.spans)
    slices.sort(key=lambda e: (e["ts"], -e["dur"], e["tid"]))
    return {"traceEvents": _metadata(report) + slices, "displayTimeUnit": "ms",
            "otherData": {"schema": SCHEMA, "world_size": report.world_size,
                          "global_batch": report.global_batch, "warmup": report.warmup}}


def write_trace(report: Report, path: str) -> None:
    """Writes :func:`chrome_trace` to ``path`` atomically, as compact JSON.

    Raises:
        UsageError: the file cannot be written.
    """
    text = json.dumps(chrome_trace(report), separators=(",", ":"), allow_nan=False)
    write_atomically(path, lambda handle: handle.write(text.encode()))
