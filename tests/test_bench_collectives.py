"""``python -m distrain.bench allreduce --op ...`` under a real mpirun: it runs each collective
against its raw MPI call and prints the figures; bad input is one line and exit code 2.
The speed itself is the benchmark's to report, not a test's."""
import json

import pytest

from conftest import json_rows, run_mpi

BENCH = ["-m", "distrain.bench", "allreduce", "--iters", "2", "--warmup", "1",
         "--megabytes", "0.2", "--json"]


@pytest.mark.mpi
@pytest.mark.timeout(240)
@pytest.mark.parametrize("ranks, op, process_set", [
    (2, "alltoall", None), (2, "reducescatter", None), (3, "allgather", "0,2"),
    (3, "broadcast", None)])
def test_bench_times_each_collective(ranks, op, process_set):
    extra = ["--process-set", process_set] if process_set else []
    result = run_mpi(ranks, BENCH + ["--op", op] + extra, timeout=200)
    assert result.returncode == 0, result.stderr[-3000:]
    rows = json_rows(result.stdout)
    assert len(rows) == 1, result.stdout
    row = rows[0]
    assert row["op"] == op and row["distrain_ms"] > 0 and row["raw_mpi_ms"] > 0
    assert row["ranks"] == (2 if process_set else ranks)
    assert row["process_set"] == ([0, 2] if process_set else None)


@pytest.mark.mpi
@pytest.mark.timeout(120)
def test_bench_refuses_a_process_set_outside_the_world():
    result = run_mpi(2, BENCH + ["--op", "alltoall", "--process-set", "0,5"], timeout=100)
    assert result.returncode == 2, result.stderr[-2000:]
    lines = [line for line in result.stderr.splitlines() if "--process-set" in line]
    assert lines and "Traceback" not in result.stderr
    assert len(lines) == 1 and "must be ranks of the world" in lines[0]


@pytest.mark.mpi
@pytest.mark.timeout(240)
def test_bench_reduces_a_models_own_gradient_list():
    result = run_mpi(2, ["-m", "distrain.bench", "allreduce", "--iters", "2", "--warmup", "1",
                         "--model", "mlp", "--image-size", "8", "--json"], timeout=200)
    assert result.returncode == 0, result.stderr[-3000:]
    (row,) = json_rows(result.stdout)
    weights = 8 * 8 * 3 * 128 + 128 + 128 * 64 + 64 + 64 * 1000 + 1000
    assert (row["model"], row["tensors"], row["ranks"]) == ("mlp", 6, 2)
    assert row["megabytes"] == round(weights * 4 / 1e6, 1)
    assert row["distrain_ms"] > 0 and row["raw_mpi_ms"] > 0 and row["raw_mpi_chunked_ms"] > 0
    assert row["raw_mpi_in_place_ms"] > 0 and row["distrain_numpy_ms"] > 0


@pytest.mark.mpi
@pytest.mark.timeout(240)
def test_bench_sweeps_thresholds_and_chunk_sizes_in_one_process():
    result = run_mpi(2, ["-m", "distrain.bench", "allreduce", "--iters", "3", "--warmup", "1",
                         "--model", "mlp", "--image-size", "8", "--chunk-sizes", "0.25,0",
                         "--thresholds", "0.1,64", "--json"], timeout=200)
    assert result.returncode == 0, result.stderr[-3000:]
    rows = json_rows(result.stdout)
    assert [(r["fusion_threshold"], r["chunk_bytes"]) for r in rows] == [
        (int(0.1 * 2**20), 2**18), (int(0.1 * 2**20), 0), (64 << 20, 2**18), (64 << 20, 0)]
    for row in rows:
        assert row["distrain_ms"] > 0 and row["raw_mpi_ms"] > 0
        assert 0 < row["ratio_q1"] <= row["ratio"] <= row["ratio_q3"]


@pytest.mark.mpi
@pytest.mark.timeout(120)
def test_bench_refuses_a_chunk_size_that_is_not_a_number():
    result = run_mpi(2, ["-m", "distrain.bench", "allreduce", "--chunk-sizes", "1,big"],
                     timeout=100)
    assert result.returncode == 2, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if "--chunk-sizes" in line]
    assert lines == [
        "distrain.bench allreduce: --chunk-sizes takes MiB as N,N,... (got '1,big')"]
