"""What is drawn from a report: the Chrome trace (checked against the Trace Event Format's
rules) and the PNG plot."""
import json
import sys

import pytest

from distrain.errors import UsageError
from distrain.timing import build_report, chrome_trace, summarize_rank, write_trace
from distrain.timing.plot import plot
from distrain.timing.timer import PHASES
from test_timing_summary import PREDICTION, record, steps

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def report(prediction=None, ranks=3, count=4):
    """Ranks whose steps start ``rank`` ms apart (the earliest span is rank 0's first)."""
    records = [[record(i, 100 + 20 * i + rank, (1, 2, 3 + rank, 4), gap_ms=0.5)
                for i in range(count)] for rank in range(ranks)]
    summaries = [summarize_rank(r, rank, f"node-{rank}", 1) for rank, r in enumerate(records)]
    return build_report(summaries, records, 1, 32 * ranks, prediction)


def complete_events(trace):
    return [e for e in trace["traceEvents"] if e["ph"] == "X"]


def test_trace_follows_the_trace_event_format():
    trace = chrome_trace(report())
    assert json.loads(json.dumps(trace, allow_nan=False)) == trace
    assert trace["displayTimeUnit"] == "ms"
    events = trace["traceEvents"]
    assert all(e["ph"] in ("M", "X") for e in events)
    first_x = next(i for i, e in enumerate(events) if e["ph"] == "X")
    assert all(e["ph"] == "X" for e in events[first_x:])  # metadata first
    xs = complete_events(trace)
    for event in xs:
        assert {"name", "ph", "ts", "dur", "pid", "tid"} <= set(event)
        assert isinstance(event["ts"], (int, float)) and event["dur"] >= 0
        assert event["pid"] == 0
    assert [e["ts"] for e in xs] == sorted(e["ts"] for e in xs)
    assert min(e["ts"] for e in xs) == 0


def test_one_named_thread_per_rank_in_one_process():
    events = chrome_trace(report())["traceEvents"]
    names = [e for e in events if e["ph"] == "M" and e["name"] == "thread_name"]
    assert [(e["tid"], e["args"]["name"]) for e in names] == [(0, "rank 0"), (1, "rank 1"),
                                                               (2, "rank 2")]
    [process] = [e for e in events if e["ph"] == "M" and e["name"] == "process_name"]
    assert process["args"]["name"] == "distrain" and process["pid"] == 0


def test_slices_match_the_spans():
    xs = complete_events(chrome_trace(report()))
    assert len(xs) == 3 * 4 * (1 + len(PHASES))
    for rank in range(3):
        mine = [e for e in xs if e["tid"] == rank]
        step_slices = [e for e in mine if e["name"] == "step"]
        assert [e["args"] for e in step_slices] == [{"step": i} for i in range(4)]
        assert [e["dur"] for e in step_slices] == pytest.approx([(10.5 + rank) * 1e3] * 4)
        for i, step in enumerate(step_slices):
            # relative to the earliest span: rank 0's first step at 100 ms
            assert step["ts"] == pytest.approx((20 * i + rank) * 1e3)
            phases = [e for e in mine if e["args"] == {"step": i} and e["name"] != "step"]
            assert [e["name"] for e in phases] == list(PHASES)
            assert [e["dur"] for e in phases] == pytest.approx([1e3, 2e3, (3 + rank) * 1e3,
                                                                4e3])
            for phase in phases:  # nested inside its step
                assert step["ts"] <= phase["ts"]
                assert phase["ts"] + phase["dur"] <= step["ts"] + step["dur"] + 1e-3


def test_a_step_comes_before_the_phase_that_starts_with_it():
    xs = complete_events(chrome_trace(report(ranks=1)))
    assert [e["name"] for e in xs[:2]] == ["step", "data"]
    assert xs[0]["ts"] == xs[1]["ts"]


def test_empty_spans_give_metadata_only():
    empty = build_report([summarize_rank(steps(2), 0, "h", 0)], [[]], 0, 8)
    trace = chrome_trace(empty)
    assert complete_events(trace) == [] and len(trace["traceEvents"]) == 3


def test_write_trace(tmp_path):
    path = tmp_path / "timeline.json"
    write_trace(report(), str(path))
    assert json.loads(path.read_text()) == chrome_trace(report())


@pytest.mark.parametrize("prediction", [None, PREDICTION], ids=["measured", "predicted"])
def test_plot_writes_a_png(tmp_path, prediction):
    path = tmp_path / "timing.png"
    plot(report(prediction), str(path))
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC
    assert len(data) > 10_000
    assert [p.name for p in tmp_path.iterdir()] == ["timing.png"]


def test_plot_of_many_ranks_and_empty_ranks(tmp_path):
    many = report(ranks=40, count=2)
    plot(many, str(tmp_path / "many.png"))
    empty = build_report([summarize_rank([], 0, "h", 0)], [[]], 0, 8, PREDICTION)
    plot(empty, str(tmp_path / "empty.png"))
    assert (tmp_path / "empty.png").read_bytes()[:8] == PNG_MAGIC


def test_plot_without_matplotlib_names_the_install(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    monkeypatch.setitem(sys.modules, "matplotlib.backends.backend_agg", None)
    with pytest.raises(UsageError, match="pip install matplotlib"):
        plot(report(), str(tmp_path / "timing.png"))
    assert not (tmp_path / "timing.png").exists()
