"""python -m distrain.bench network: its rate and bandwidth arithmetic, and one short run over
real namespace hosts with a tc-limited link (figures checked for form, never for time)."""
import json

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


def test_bad_flags_exit_2(capsys):
    with pytest.raises(SystemExit) as raised:
        network.main(["--compression", "fp8"])
    assert raised.value.code == 2


@pytest.mark.mpi
@pytest.mark.timeout(300)
def test_a_short_run_prints_a_row_per_compression_without_and_with_overlap(capsys):
    problem = requirements_problem()
    if problem:
        pytest.skip(problem)
    code = network.main(["--model", "mlp", "--steps", "3", "--warmup", "1", "--rate",
                         "100mbit", "--compression", "none,fp16", "--json"])
    out = capsys.readouterr().out
    assert code == 0, out
    result = json.loads(out.strip().splitlines()[-1])
    assert result["hosts"] == 2 and result["rate"] == "100mbit"
    assert [(row["compression"], row["overlap"]) for row in result["runs"]] == [
        ("none", False), ("none", True), ("fp16", False), ("fp16", True)]
    for row in result["runs"]:
        assert row["ranks"] == 2 and row["gradient_bytes"] > 0
        assert set(row["rank0_phase_ms"]) == {"data", "compute", "allreduce", "apply"}
        assert row["allreduce_gbit_s"] > 0
