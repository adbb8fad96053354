"""Step timing: per-phase clocks on each rank, the cross-rank report, trace and plot.

Importing this package loads neither TensorFlow nor MPI nor matplotlib; the plot lives in
:mod:`distrain.timing.plot` (``from distrain.timing.plot import plot``), which imports
matplotlib when it draws.
"""
from distrain.timing.predicted import PredictedStep
from distrain.timing.report import (SCHEMA, Report, build_report, format_report,
                                    gather_report, report_to_json, write_json)
from distrain.timing.summary import (Aggregate, Comparison, PhaseStats, RankSummary,
                                     aggregate, compare, summarize_rank)
from distrain.timing.timer import PHASES, StepRecord, StepTimer
from distrain.timing.trace import chrome_trace, write_trace

__all__ = ["PHASES", "StepRecord", "StepTimer", "RankSummary", "PhaseStats", "Aggregate",
           "Comparison", "summarize_rank", "aggregate", "compare", "PredictedStep", "SCHEMA",
           "Report", "build_report", "gather_report", "format_report", "report_to_json",
           "write_json", "chrome_trace", "write_trace"]
