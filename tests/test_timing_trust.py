"""Whether a run's comparison with the cost model can be trusted: disturbed ranks, a
calibration that disagrees with the run, an implausible fit that is never cached."""
import json
import math

import pytest

import distrain
from distrain.costmodel import calibrate as calibration
from distrain.timing.predicted import PredictedStep
from distrain.timing.report import build_report, format_report, report_to_json
from distrain.timing.summary import summarize_rank
from distrain.timing.trust import (calibration_disagreement, disturbances,
                                   overlap_disagreement, trust_lines)
from test_timing_summary import MS, record, steps


def report_of(*ranks, prediction=None):
    summaries = [summarize_rank(records, rank, f"h{rank}", warmup=0)
                 for rank, records in enumerate(ranks)]
    return build_report(summaries, [[] for _ in ranks], 0, 64, prediction)


def predicted(allreduce_ms=3.0, **fields):
    phases = {"data": 1 * MS, "compute": 2 * MS, "allreduce": allreduce_ms * MS,
              "apply": 4 * MS}
    return PredictedStep(phases, sum(phases.values()), **fields)


def scattered(count):
    """Steps whose compute alternates 2 and 42 ms: a rank another process kept waiting."""
    return [record(i, i * 60.0, (1, 2 if i % 2 else 42, 3, 4)) for i in range(count)]


def test_steady_ranks_are_not_disturbed():
    report = report_of(steps(10), steps(10), prediction=predicted())
    assert report.ranks[0].spread == pytest.approx(0.0, abs=1e-12)
    assert disturbances(report) == []
    assert not any("disturbed" in line for line in trust_lines(report))


def test_a_scattered_rank_and_a_lagging_rank_are_named():
    report = report_of(steps(10), scattered(10), prediction=predicted())
    found = disturbances(report)
    assert found[0].startswith("rank 1's steps scatter ")
    assert found[1] == "rank 1's median step is 50% above the median rank's"
    lagging = report_of(steps(9), steps(9), steps(9, ms=(1, 12, 3, 4)))
    assert disturbances(lagging) == ["rank 2's median step is 100% above the median rank's"]
    text = format_report(report_of(steps(10), scattered(10), prediction=predicted()))
    assert "disturbed run: rank 1's steps scatter" in text


def test_scattered_cost_model_rounds_are_named():
    shaken = predicted(rounds_spread=1.4)
    assert disturbances(report_of(steps(5), prediction=shaken)) == [
        "the cost model's timing rounds scatter 140% (p10-p90 / median)"]
    assert disturbances(report_of(steps(5), prediction=predicted(rounds_spread=0.3))) == []


def test_spread_needs_two_steps():
    assert math.isnan(summarize_rank(steps(1), 0, "h", warmup=0).spread)


def test_an_allreduce_far_from_its_prediction_is_reported_unless_overlapped():
    assert calibration_disagreement(report_of(steps(5), prediction=predicted(3.0))) is None
    off = report_of(steps(5), prediction=predicted(1.0))          # 1 ms predicted, 3 measured
    assert calibration_disagreement(off) == pytest.approx(-2 / 3)
    assert any("predicted allreduce is -67% off the measured one" in line
               for line in trust_lines(off))
    overlapped = report_of(steps(5), prediction=predicted(1.0, overlap=True))
    assert calibration_disagreement(overlapped) is None
    # an overlapped run as far off blames the overlap schedule and keeps the calibration
    assert overlap_disagreement(overlapped) == pytest.approx(-2 / 3)
    assert overlap_disagreement(off) is None
    lines = trust_lines(overlapped)
    assert any("predicted exposed allreduce is -67% off" in line and "calibration is kept"
               in line for line in lines)
    assert not any("measured again next run" in line for line in lines)
    close = report_of(steps(5), prediction=predicted(2.5, overlap=True))
    assert overlap_disagreement(close) is None
    assert report_to_json(overlapped)["overlap_disagreement"] == pytest.approx(-2 / 3)
    assert report_to_json(off)["calibration_disagreement"] == pytest.approx(-2 / 3)


def test_the_report_says_where_the_calibration_came_from():
    cached = predicted(calibration={"source": "cache", "measured_at": 0, "load": 0.4})
    assert trust_lines(report_of(steps(5), prediction=cached))[0].startswith(
        "calibration: cached, measured at an unknown time, load 0.40 per core")
    refused = predicted(calibration={"source": "measured", "measured_at": 1.8e9,
                                     "problem": "beta = 0 ns/byte"})
    lines = trust_lines(report_of(steps(5), prediction=refused))
    assert "implausible fit, measured twice: beta = 0 ns/byte; used for this run only, " \
           "not cached" in lines[1]
    data = report_to_json(report_of(steps(5), prediction=refused))
    assert data["prediction"]["calibration"]["problem"] == "beta = 0 ns/byte"
    assert PredictedStep.from_dict(data["prediction"]).calibration["problem"] == \
        "beta = 0 ns/byte"


@pytest.mark.parametrize("seconds, beta, problem", [
    ([1e-5, 1e-4, 1e-3], 1e-9, ""),
    ([1e-5, 1e-5, 1e-5], 0.0, "beta = 0 ns/byte"),
    ([1e-4, 1e-4, 1e-3], 1e-9, "latency 2(p-1) alpha = 10.0 us against 100.0 us"),
    ([1e-5, 1e-3, 1e-3], 1e-9, "the fit misses one of the sweep's sizes by a factor of"),
    ([1e-5, 2e-4, 1e-3], 1e-9, ""),  # 2.6 times the line: a transport changing protocol
])
def test_implausible_fits_are_named(seconds, beta, problem):
    sizes = [256, 65536, 1 << 20]
    found = calibration.fit_problem(sizes, seconds, 2, 5e-6, beta)
    assert (found == "") if not problem else found.startswith(problem)


def test_an_implausible_sweep_is_measured_once_more_with_more_repeats(monkeypatch):
    asked = []

    def flat_sweep(chunk, repeats, threshold):   # every size as fast as the smallest: beta 0
        asked.append(repeats)
        return [256, 4096, 65536], [1e-5, 1e-5, 1e-5]

    monkeypatch.setattr(calibration, "_sweep", flat_sweep)
    alpha, beta, problem, sweep = calibration._fit(1 << 20, 10, 2, 64 << 20)
    assert asked == [10, 20] and "larger messages were not slower" in problem
    assert sweep["seconds"] == [1e-5, 1e-5, 1e-5]


@pytest.fixture
def local(tmp_path, monkeypatch):
    monkeypatch.setenv("DISTRAIN_CACHE_DIR", str(tmp_path))
    distrain.init("local")
    yield tmp_path
    distrain.shutdown()


def test_a_cache_is_reused_until_a_run_marks_it_stale(local):
    first = calibration.load_or_calibrate()
    assert first.calibration["source"] == "measured" and first.calibration["load"] is not None
    path = first.calibration["path"]
    with open(path) as handle:
        assert json.load(handle)["measured_at"] == first.calibration["measured_at"]
    assert calibration.load_or_calibrate().calibration["source"] == "cache"
    assert calibration.mark_stale(path, "a run's allreduce was predicted -67% off")
    again = calibration.load_or_calibrate()
    assert again.calibration["source"] == "measured"
    with open(path) as handle:
        assert "stale" not in json.load(handle)
    assert not calibration.mark_stale(str(local / "missing.json"), "nothing there")


def test_a_cached_calibrations_sweep_is_the_models_curve(local):
    path = calibration.load_or_calibrate().calibration["path"]
    with open(path) as handle:
        record = json.load(handle)
    record["sweep"] = {"sizes": [256, 1 << 20], "seconds": [1e-5, 1e-3]}
    with open(path, "w") as handle:
        json.dump(record, handle)
    model = calibration.load_or_calibrate()
    assert model.calibration["source"] == "cache"
    assert model.curve == ((256, 1e-5), (1 << 20, 1e-3))


def test_an_implausible_fit_is_used_but_never_cached(local, monkeypatch):
    real = calibration.calibrate

    def implausible():
        model = real()
        return calibration.dataclasses.replace(
            model, calibration=dict(model.calibration, problem="beta = 0 ns/byte"))

    monkeypatch.setattr(calibration, "calibrate", implausible)
    model = calibration.load_or_calibrate()
    assert model.calibration["problem"] == "beta = 0 ns/byte"
    assert not any(name.endswith(".json") for name in __import__("os").listdir(local))
