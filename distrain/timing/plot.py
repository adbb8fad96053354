"""The report as a PNG: one stacked bar of phase medians per rank, the prediction beside.

matplotlib is an optional extra (``pip install 'distrain[plot]'``); it is imported only when
:func:`plot` runs, and drawn with the Agg backend without pyplot, so no display is needed and
no global matplotlib state changes.

Example:
    >>> plot(report, "timing.png")    # doctest: +SKIP
"""
from __future__ import annotations

import math

from distrain.errors import UsageError
from distrain.files import write_atomically
from distrain.timing.report import Report
from distrain.timing.timer import PHASES

__all__ = ["plot"]

COLORS = {"data": "#4c72b0", "compute": "#dd8452", "allreduce": "#55a868", "apply": "#c44e52"}


def _ms(seconds) -> float:
    return seconds * 1e3 if seconds is not None and math.isfinite(seconds) else 0.0


def _matplotlib():
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        raise UsageError("plotting the timing report needs matplotlib: pip install matplotlib "
                         "(or pip install 'distrain[plot]')") from None
    return Figure, FigureCanvasAgg


def _bars(report: Report) -> tuple[list[str], list[dict], list[float]]:
    """Labels, phase milliseconds and step-total milliseconds of each bar."""
    labels = [f"rank {s.rank}" for s in report.ranks]
    phases = [{p: _ms(s.phases[p]) for p in PHASES} for s in report.ranks]
    totals = [_ms(s.total) for s in report.ranks]
    if report.prediction is not None:
        predicted = report.prediction.phases
        labels.append("predicted")
        phases.append({p: _ms(predicted.get(p)) for p in PHASES})
        totals.append(_ms(report.prediction.total))
    return labels, phases, totals


def plot(report: Report, path: str) -> None:
    """Draws the per-rank phase medians (and the predicted phases) and saves a PNG.

    Each bar stacks data, compute, allreduce and apply (median ms); a black tick marks the
    median step total, which also holds the time between phases. The predicted bar is
    hatched and set apart.

    Args:
        report: the report.
        path: the PNG file, written atomically.

    Raises:
        UsageError: matplotlib is not installed, or the file cannot be written.
    """
    Figure, FigureCanvasAgg = _matplotlib()
    labels, phases, totals = _bars(report)
    ranks = len(report.ranks)
    xs = [float(i) for i in range(ranks)] + ([ranks + 0.5] if len(labels) > ranks else [])
    figure = Figure(figsize=(min(max(6.0, 0.45 * len(xs) + 3.0), 30.0), 4.8), dpi=110)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    bottoms = [0.0] * len(xs)
    for phase in PHASES:
        heights = [bar[phase] for bar in phases]
        drawn = axes.bar(xs, heights, width=0.7, bottom=bottoms, color=COLORS[phase],
                         label=phase, edgecolor="white", linewidth=0.5)
        if len(xs) > ranks:
            drawn[-1].set_hatch("//")
            drawn[-1].set_alpha(0.75)
        bottoms = [b + h for b, h in zip(bottoms, heights)]
    axes.scatter(xs, totals, marker="_", s=600 if len(xs) < 32 else 80, color="black",
                 zorder=3, label="step total")
    step = max(1, math.ceil(len(xs) / 32))
    shown = set(range(0, ranks, step)) | set(range(ranks, len(xs)))
    axes.set_xticks([x for i, x in enumerate(xs) if i in shown],
                    [lab for i, lab in enumerate(labels) if i in shown],
                    rotation=0 if len(shown) <= 12 else 60)
    axes.set_ylabel("median ms per step")
    axes.set_ylim(bottom=0)
    agg = report.aggregate
    rate = f"{agg.samples_per_s:,.0f}" if math.isfinite(agg.samples_per_s) else "-"
    axes.set_title(f"distrain: {report.world_size} rank{'s' if report.world_size != 1 else ''}"
                   f", global batch {report.global_batch}, {rate} samples/s\n"
                   f"median per phase after {report.warmup} warm-up "
                   f"step{'s' if report.warmup != 1 else ''}", fontsize=10)
    handles, names = axes.get_legend_handles_labels()
    by_name = dict(zip(names, handles))
    order = ["step total", *PHASES[::-1]]  # as stacked: the top first
    axes.legend([by_name[n] for n in order], order, loc="upper left",
                bbox_to_anchor=(1.0, 1.0), fontsize=9, frameon=False)
    axes.grid(axis="y", alpha=0.3)
    axes.set_axisbelow(True)
    figure.tight_layout()
    write_atomically(path, lambda handle: figure.savefig(handle, format="png"))
