"""python -m distrain.bench network: its rate and bandwidth arithmetic, and one short run over
real namespace hosts with a tc-limited link (figures checked for form, never for time)."""
import json
import subprocess
import sys
import types

import pytest

from distrain.bench import network
from distrain.bench.netns import parse_rate, requirements_problem


@pytest.mark.parametrize("text, bits", [("1gbit", 1e9), ("10gbit", 1e10), ("500mbit", 5e8),
                                        ("64kbit", 64e3), ("none", None)])
def test_rates(text, bits):
    assert parse_rate(text) == bits


@pytest.mark.parametrize("text", ["1gb", "fast", "0gbit", ""])
def test_bad_rates_are_refused(text):
    with pytest.raises(ValueError, match="write e.g. 1gbit"):
        parse_rate(text)


def test_bus_bandwidth_is_the_rings_share_of_the_bytes_per_second():
    # 2 ranks: each sends and receives (n-1)/n of the buffer twice (reduce-scatter, allgather)
    assert network.bus_bandwidth(1e6, 2, 0.008) == pytest.approx(1e9)
    assert network.bus_bandwidth(1e6, 4, 0.008) == pytest.approx(1.5e9)
    assert network.bus_bandwidth(1e6, 2, 0.008, wire_ratio=0.5) == pytest.approx(5e8)
    assert network.bus_bandwidth(1e6, 1, 0.008) == 0.0


def test_the_launcher_starts_through_this_interpreter_not_path(monkeypatch):
    # from a virtual environment that is not activated, PATH has no distrain-run
    monkeypatch.setenv("PATH", "/nowhere")
    started = []

    def run(argv, **kwargs):
        started.append(argv)
        return subprocess.CompletedProcess(argv, 0, stdout='{"step_ms": 1}\n', stderr="")

    monkeypatch.setattr(network.subprocess, "run", run)
    hosts = types.SimpleNamespace(addresses=["10.0.0.1", "10.0.0.2"], launch_args=lambda: [])
    args = types.SimpleNamespace(model="mlp", steps=3, warmup=1, batch_size=8, timeout=60,
                                 image_size=None)
    assert network._train(hosts, args, "none", False, 2, 1) == {"step_ms": 1}
    assert started[0][:3] == [sys.executable, "-m", "distrain.run"]
    assert started[0][started[0].index("--backward-passes") + 1] == "2"


@pytest.mark.parametrize("flags", [["--compression", "fp8"], ["--rounds", "0"],
                                   ["--overlap", "sometimes"], ["--overlap", "on,on"],
                                   ["--backward-passes", "0"], ["--backward-passes", "1,x"]])
def test_bad_flags_exit_2(flags):
    with pytest.raises(SystemExit) as raised:
        network.main(flags)
    assert raised.value.code == 2


@pytest.mark.mpi
@pytest.mark.timeout(300)
def test_a_short_run_prints_a_row_per_compression_without_and_with_overlap(capsys):
    problem = requirements_problem()
    if problem:
        pytest.skip(problem)
    code = network.main(["--model", "mlp", "--steps", "3", "--warmup", "1", "--rate",
                         "100mbit", "--compression", "none,fp16", "--rounds", "1",
                         "--backward-passes", "2", "--json"])
    out = capsys.readouterr().out
    assert code == 0, out
    result = json.loads(out.strip().splitlines()[-1])
    assert result["hosts"] == 2 and result["rate"] == "100mbit"
    # TCP streams before and after the runs, one way and both ways: carried, and held to the
    # link's 100 Mbit/s
    assert len(result["link_gbit_s"]) == 2
    for link in result["link_gbit_s"]:
        assert all(0 < gbit <= 0.15 for gbit in [link["one_way"], *link["both_ways"]]), link
    assert [(row["compression"], row["overlap"]) for row in result["runs"]] == [
        ("none", False), ("none", True), ("fp16", False), ("fp16", True)]
    for row in result["runs"]:
        assert row["ranks"] == 2 and row["gradient_bytes"] > 0 and row["round"] == 1
        assert row["backward_passes"] == 2 and row["global_batch"] == 2 * 2 * 32
        assert set(row["rank0_phase_ms"]) == {"data", "compute", "allreduce", "apply"}
        assert row["allreduce_gbit_s"] > 0 and row["allreduce_alone_ms"] > 0
    assert len(result["settings"]) == 4 and set(result["overlap_ratio"]) == {"none", "fp16"}
    assert len(result["allreduce_speedup"]["fp16"]["runs"]) == 1


def _row(compression, overlap, number, compute, allreduce, step, passes=1):
    return {"compression": compression, "overlap": overlap, "round": number,
            "backward_passes": passes, "samples_per_s": 64 * passes / step,
            "step_ms": step, "allreduce_gbit_s": 0.5, "allreduce_alone_ms": allreduce,
            "rank0_phase_ms": {"data": 0.0, "compute": compute, "allreduce": allreduce,
                               "apply": 1.0}}


def test_the_summary_pairs_each_rounds_runs():
    rows = [_row("none", False, 1, 40.0, 10.0, 52.0), _row("none", False, 2, 50.0, 8.0, 60.0),
            _row("none", False, 3, 44.0, 9.0, 55.0),
            _row("none", True, 1, 40.0, 2.0, 44.0), _row("none", True, 2, 50.0, 1.0, 75.0),
            _row("none", True, 3, 44.0, 3.0, 48.4),
            _row("fp16", False, 1, 40.0, 5.0, 47.0), _row("fp16", False, 2, 50.0, 2.0, 53.0),
            _row("fp16", False, 3, 44.0, 4.5, 50.0),
            _row("fp16", True, 1, 40.0, 1.0, 42.0), _row("fp16", True, 2, 50.0, 1.0, 52.0),
            _row("fp16", True, 3, 44.0, 1.0, 46.0)]
    summary = network._summary(rows, ["none", "fp16"], [False, True], [1])
    # round by round: the overlapped step over that round's max(compute, allreduce alone)
    assert summary["overlap_ratio"]["none"] == {"median": 1.1, "min": 1.1, "max": 1.5,
                                                "runs": [1.1, 1.5, 1.1]}
    assert summary["allreduce_speedup"]["fp16"]["runs"] == [2.0, 4.0, 2.0]
    none_alone = summary["settings"][0]
    assert (none_alone["compression"], none_alone["overlap"]) == ("none", False)
    assert none_alone["step_ms"]["median"] == 55.0 and none_alone["phase_ms"]["compute"] == 44.0
    assert (none_alone["step_ms"]["min"], none_alone["step_ms"]["max"]) == (52.0, 60.0)


def test_the_allreduce_share_falls_with_backward_passes():
    # the same allreduce (10 ms) after 1, 2 and 4 passes of 40 ms compute
    rows = [_row("none", False, number, 40.0 * passes, 10.0, 40.0 * passes + 11.0, passes)
            for passes in (1, 2, 4) for number in (1, 2)]
    summary = network._summary(rows, ["none"], [False], [1, 2, 4])
    shares = [row["allreduce_share"]["median"] for row in summary["settings"]]
    assert [row["backward_passes"] for row in summary["settings"]] == [1, 2, 4]
    assert shares == [round(10 / 51, 3), round(10 / 91, 3), round(10 / 171, 3)]
    assert summary["overlap_ratio"] == {}  # overlap was not run both ways
