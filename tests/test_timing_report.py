"""The gathered report: the collective (local backend, and two ranks on threads), its text
tables, its JSON and the atomic write."""
import concurrent.futures
import json
import os
import re
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

import distrain
from distrain.errors import UsageError
from distrain.timing import (SCHEMA, PredictedStep, StepTimer, build_report, format_report,
                             gather_report, report_to_json, summarize_rank, write_json)
from distrain.files import write_atomically
from distrain.timing.timer import PHASES, StepRecord
from test_timing_summary import MS, PREDICTION, exact, record, steps

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WHATIF = [{"ranks": p, "step_s": (10 + p) * MS, "samples_per_s": 64 * p / ((10 + p) * MS),
           "efficiency": 11 / (10 + p)} for p in (1, 2, 4)]
FULL_PREDICTION = dict(PREDICTION, submodels=[{"name": "dense", "seconds": 1.2 * MS},
                                              {"name": "dense_1", "seconds": 0.5 * MS}],
                       call_overhead=0.1 * MS, interaction=0.1 * MS,
                       alpha=25e-6, beta=0.5e-9, gamma=0.1e-9, fusion_threshold=64 * 2 ** 20,
                       recommended_fusion_threshold=16 * 2 ** 20, whatif=WHATIF)


@pytest.fixture
def local():
    distrain.shutdown()  # another in-process test may have left distrain running
    distrain.init("local")
    yield
    distrain.shutdown()


def timer_with(records, clock=time.perf_counter) -> StepTimer:
    timer = StepTimer(clock)
    timer.steps.extend(records)
    return timer


def two_ranks(prediction=None):
    """Rank 0 with allreduce 3 ms, rank 1 with 5 ms; 2 warm-up steps of 50-80 ms each."""
    records = [steps(6, ms=(1, 2, a, 4), warm=2) for a in (3, 5)]
    summaries = [summarize_rank(r, rank, f"node-{rank}", 2) for rank, r in enumerate(records)]
    return build_report(summaries, records, 2, 64, prediction)


def test_gather_report_on_the_local_backend(local):
    records = steps(5, warm=1)
    report = gather_report(timer_with(records), 0, "node-a", warmup=1, global_batch=32,
                           prediction=PREDICTION)
    assert (report.world_size, report.warmup, report.global_batch) == (1, 1, 32)
    assert report.ranks[0].host == "node-a" and report.ranks[0].steps == 4
    assert report.aggregate.samples_per_s == exact(32 / (10 * MS))
    assert report.prediction == PredictedStep.from_dict(PREDICTION)
    [spans] = report.spans
    assert [(r.step, r.start, r.end, r.spans) for r in spans] == \
        [(r.step, r.start, r.end, r.spans) for r in records]


def test_importing_timing_loads_no_tensorflow_mpi_or_matplotlib():
    code = ("import sys, distrain.timing, distrain.timing.plot; print(sorted({m.split('.')[0] "
            "for m in sys.modules} & {'tensorflow', 'keras', 'mpi4py', 'matplotlib'}))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                         text=True, timeout=60, check=True)
    assert out.stdout.strip() == "[]"


def test_gather_report_before_init_names_the_fix():
    distrain.shutdown()
    with pytest.raises(distrain.NotInitializedError, match="init"):
        gather_report(timer_with(steps(2)), 0, "h", 0, 8)


def test_trace_steps_limits_the_spans_not_the_medians(local):
    timer = timer_with(steps(6, warm=2))
    last = gather_report(timer, 0, "h", warmup=2, global_batch=8, trace_steps=3)
    assert [r.step for r in last.spans[0]] == [3, 4, 5] and last.ranks[0].steps == 4
    assert gather_report(timer, 0, "h", 2, 8, trace_steps=0).spans == [[]]
    assert len(gather_report(timer, 0, "h", 2, 8, trace_steps=99).spans[0]) == 6
    with pytest.raises(ValueError, match="trace_steps"):
        gather_report(timer, 0, "h", 2, 8, trace_steps=-1)


def test_phases_outside_PHASES_are_left_out_of_the_spans(local):
    odd = StepRecord(0, 0.0, [("data", 0.0, MS), ("eval", MS, 2 * MS)], 2 * MS)
    report = gather_report(timer_with([odd]), 0, "h", 0, 8)
    assert [p for p, _, _ in report.spans[0][0].spans] == ["data"]


class ThreadWorld:
    """Ranks as threads: allgather_object puts each rank's object in its slot and waits."""

    def __init__(self, size: int):
        self.slots = [None] * size
        self.barrier = threading.Barrier(size, timeout=10)

    def comm(self, rank: int):
        world = self

        class Comm:
            def allgather_object(self, obj):
                world.slots[rank] = obj
                world.barrier.wait()
                return list(world.slots)
        return Comm()


def run_ranks(size, call):
    world = ThreadWorld(size)
    with concurrent.futures.ThreadPoolExecutor(size) as pool:
        futures = [pool.submit(call, rank, world.comm(rank)) for rank in range(size)]
        return [f.result(timeout=20) for f in futures]


def test_two_ranks_report_on_rank_0_on_one_clock():
    # Each rank's clock is the wall clock plus its own origin; its records, on its clock,
    # start at the same wall times. The report puts both on rank 0's clock.
    origins = (100.0, 5000.0)

    def rank_call(rank, comm):
        timer = timer_with([record(i, origins[rank] / MS + 20 * i, (1, 2, 3 + 2 * rank, 4))
                            for i in range(4)], clock=lambda: time.time() + origins[rank])
        return gather_report(timer, rank, f"node-{rank}", 1, 64, FULL_PREDICTION, comm)

    report, other = run_ranks(2, rank_call)
    assert other is None
    assert [s.rank for s in report.ranks] == [0, 1] and report.world_size == 2
    assert report.aggregate.phases["allreduce"].slowest_rank == 1
    assert report.aggregate.samples_per_s == pytest.approx(64 / (12 * MS), rel=1e-9)
    for r0, r1 in zip(*report.spans):
        assert r1.start == pytest.approx(r0.start, abs=0.01)
        assert r1.spans[2][2] - r1.spans[2][1] == pytest.approx(5 * MS, abs=1e-9)


def test_ranks_passing_wrong_rank_numbers_all_raise():
    def rank_call(rank, comm):
        try:
            gather_report(timer_with(steps(2)), 0, "h", 0, 8, comm=comm)  # both say rank 0
        except ValueError as exc:
            return str(exc)

    messages = run_ranks(2, rank_call)
    assert all(m and "rank=[0, 0]" in m for m in messages)


def row(text: str, first: str) -> list[str]:
    """The cells of the table row of ``text`` whose first cell is ``first``."""
    rows = [line.split() for line in text.splitlines() if line.split()[:1] == [first]]
    assert len(rows) == 1, (first, text)
    return rows[0]


def test_text_report_tables():
    text = format_report(two_ranks())
    assert "2 ranks, global batch 64, 4 steps per rank after 2 warm-up steps" in text
    assert row(text, "0") == ["0", "node-0", "1.000", "2.000", "3.000", "4.000", "10.000",
                              "100.00"]
    assert row(text, "1") == ["1", "node-1", "1.000", "2.000", "5.000", "4.000", "12.000",
                              "83.33"]
    assert row(text, "allreduce") == ["allreduce", "3.000", "4.000", "5.000", "1.25x", "1"]
    assert row(text, "total") == ["total", "10.000", "11.000", "12.000", "1.09x", "1"]
    assert "throughput: 5,333.3 samples/s" in text  # 64 / 12 ms
    assert "cost model" not in text
    widths = {len(line) for line in text.splitlines()[3:7]}  # per-rank table: fixed width
    assert len(widths) == 1


def test_text_report_with_a_prediction():
    text = format_report(two_ranks(FULL_PREDICTION))
    section = text[text.index("cost model"):]
    assert row(section, "data") == ["data", "1.100", "1.000", "+10.0%"]
    assert row(section, "compute") == ["compute", "1.900", "2.000", "-5.0%"]
    assert row(section, "allreduce") == ["allreduce", "3.500", "4.000", "-12.5%"]
    assert row(section, "apply") == ["apply", "4.000", "4.000", "0.0%"]
    assert row(section, "total") == ["total", "10.500", "11.000", "-4.5%"]
    assert row(section, "dense_1") == ["dense_1", "0.500"]
    assert row(section, "(call") == ["(call", "overhead)", "0.100"]
    assert row(section, "(whole") == ["(whole", "model", "less", "the", "sum)", "0.100"]
    assert row(section, "sum") == ["sum", "1.900"]  # = predicted compute
    assert row(section, "4") == ["4", "14.000", "18,285.7", "78.6%"]
    assert "alpha 25.00 us, beta 0.5000 ns/byte (2.00 GB/s), gamma 0.1000 ns/byte" in section
    assert "recommended fusion threshold: 16.0 MiB (now 64.0 MiB)" in section


def test_text_report_tolerates_sparse_predictions_and_empty_ranks():
    text = format_report(two_ranks({"phases": {"compute": 2 * MS}, "total": None}))
    assert row(text[text.index("cost model"):], "compute")[-1] == "0.0%"
    assert "sub-models" not in text and "what-if" not in text
    empty = build_report([summarize_rank([], 0, "h", 3)], [[]], 3, 8)
    assert row(format_report(empty), "0") == ["0", "h", "-", "-", "-", "-", "-", "-"]
    short = build_report([summarize_rank(steps(2), 0, "h", 3)], [[]], 3, 8)
    assert "all their steps are counted, warm-up included" in format_report(short)


def test_json_holds_predicted_and_measured_per_phase():
    prediction = dict(FULL_PREDICTION, total=np.float64(10.5 * MS), alpha=np.float32(25e-6))
    data = report_to_json(two_ranks(prediction))
    assert json.loads(json.dumps(data, allow_nan=False)) == data
    assert data["schema"] == SCHEMA == "distrain.timing/1"
    assert (data["world_size"], data["warmup"], data["global_batch"]) == (2, 2, 64)
    assert data["phases"] == list(PHASES)
    assert set(data["comparison"]) == {*PHASES, "total"}
    allreduce = data["comparison"]["allreduce"]
    assert allreduce["predicted_s"] == exact(3.5 * MS)
    assert allreduce["measured_s"] == exact(4 * MS)
    assert allreduce["error_pct"] == exact(-12.5)
    assert data["comparison"]["total"]["predicted_s"] == exact(10.5 * MS)
    rank1 = data["ranks"][1]
    assert (rank1["rank"], rank1["host"], rank1["steps"], rank1["excluded"]) == (1, "node-1", 4, 2)
    assert rank1["median_s"]["allreduce"] == exact(5 * MS)
    assert rank1["median_s"]["total"] == exact(12 * MS)
    stats = data["aggregate"]["phases"]["allreduce"]
    assert (stats["imbalance"], stats["slowest_rank"]) == (exact(1.25), 1)
    assert data["aggregate"]["samples_per_s"] == exact(64 / (12 * MS))
    assert data["prediction"]["whatif"][2]["ranks"] == 4
    assert type(data["prediction"]["alpha"]) is float


def test_a_cost_model_prediction_is_read_through_its_attributes():
    from distrain.costmodel import CommModel, Prediction
    comm = CommModel(size=2, alpha=25e-6, beta=0.5e-9, gamma=0.1e-9,
                     fusion_threshold=64 * 2 ** 20)
    phases = {"data": 1.1 * MS, "compute": 1.9 * MS, "allreduce": 3.5 * MS, "apply": 4 * MS}
    prediction = Prediction(phases, [("dense", 1.2 * MS), ("dense_1", 0.6 * MS)], 0.1 * MS,
                            comm, 32, [(1000,)], ["float32"], host=0.5 * MS, wait=0.2 * MS,
                            whatif=WHATIF)
    predicted = two_ranks(prediction).prediction
    assert predicted == PredictedStep(
        phases, 10.5 * MS, (("dense", 1.2 * MS), ("dense_1", 0.6 * MS)), 0.1 * MS, 0.5 * MS,
        0.2 * MS, 25e-6, 0.5e-9, 0.1e-9, 64 * 2 ** 20, comm.recommended_fusion_threshold(),
        tuple(WHATIF), interaction=0.0)
    text = format_report(two_ranks(prediction))
    assert row(text[text.index("cost model"):], "total") == ["total", "10.500", "11.000",
                                                             "-4.5%"]
    assert "alpha 25.00 us, beta 0.5000 ns/byte (2.00 GB/s), gamma 0.1000 ns/byte" in text
    assert "host share 0.500 + negotiation and messages 2.800 + wait for the slowest rank " \
           "0.200" in text


def test_json_without_a_prediction_and_with_nan():
    data = report_to_json(build_report([summarize_rank([], 0, "h", 0)], [[]], 0, 8))
    json.dumps(data, allow_nan=False)
    assert data["prediction"] is None
    assert data["comparison"]["total"] == {"predicted_s": None, "measured_s": None,
                                           "error_pct": None}


def test_write_json_is_atomic_and_readable(tmp_path):
    path = tmp_path / "timing.json"
    path.write_text("old")
    write_json(two_ranks(PREDICTION), str(path))
    assert json.loads(path.read_text()) == report_to_json(two_ranks(PREDICTION))
    assert os.listdir(tmp_path) == ["timing.json"]
    umask = os.umask(0)
    os.umask(umask)
    assert os.stat(path).st_mode & 0o777 == 0o666 & ~umask


def test_failed_write_keeps_the_old_file(tmp_path):
    path = tmp_path / "timing.json"
    path.write_text("old")

    def broken(handle):
        handle.write(b"half")
        raise RuntimeError("disk on fire")

    with pytest.raises(RuntimeError):
        write_atomically(str(path), broken)
    assert path.read_text() == "old" and os.listdir(tmp_path) == ["timing.json"]
    with pytest.raises(UsageError, match=re.escape("cannot write") + ".*choose another path"):
        write_json(two_ranks(), str(tmp_path / "missing" / "timing.json"))


DOCS = os.path.join(ROOT, "docs", "timing.md")


def test_docs_show_what_format_report_prints():
    with open(DOCS) as handle:
        assert format_report(two_ranks()) in handle.read()


def test_docs_describe_every_json_field():
    data = report_to_json(two_ranks(FULL_PREDICTION))
    fields = [*data, *(f"ranks[].{k}" for k in data["ranks"][0]),
              *(f"aggregate.{k}" for k in data["aggregate"]),
              *(f"aggregate.phases.*.{k}" for k in data["aggregate"]["phases"]["total"]),
              *(f"comparison.*.{k}" for k in data["comparison"]["total"]),
              *(f"prediction.{k}" for k in data["prediction"])]
    with open(DOCS) as handle:
        text = handle.read()
    assert [f for f in fields if f"| `{f}` |" not in text] == []
