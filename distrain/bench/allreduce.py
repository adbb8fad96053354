"""``python -m distrain.bench allreduce``: distrain's grouped allreduce against raw MPI.

Reduces a ResNet-50-sized gradient list (161 float32 tf.Tensors, 102 MB) with
``distrain.grouped_allreduce`` and, for reference, the same number of bytes in one contiguous
numpy buffer with one ``mpi4py`` ``Allreduce``. Prints the median of each, their ratio, and
the bus bandwidth as nccl-tests define it. The same bytes Allreduced in distrain's chunk size
are printed too, to show what chunking alone buys: busbw = algbw x 2(p-1)/p, algbw = bytes / time.

Example:
    mpirun -np 2 python -m distrain.bench allreduce --json
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import time

import numpy as np

from distrain import environment as env
from distrain.ops import COMPRESSIONS
from distrain.tfimport import import_tensorflow

__all__ = ["main", "bus_bandwidth"]


def bus_bandwidth(nbytes: int, seconds: float, size: int) -> float:
    """Bus bandwidth in bytes/s: algbw x 2(p-1)/p, the per-link traffic of a ring allreduce.

    Args:
        nbytes: the message size.
        seconds: the time of one allreduce.
        size: the number of ranks.
    """
    return nbytes / seconds * (2 * (size - 1) / size) if size > 1 and seconds > 0 else 0.0


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m distrain.bench allreduce",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("--iters", type=int, default=20, help="timed repetitions (default 20)")
    p.add_argument("--warmup", type=int, default=3, help="untimed repetitions (default 3)")
    p.add_argument("--compression", default="none", choices=COMPRESSIONS)
    p.add_argument("--json", action="store_true", help="print one JSON object")
    return p


def _median_time(fn, comm, iters: int, warmup: int) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(iters):
        comm.Barrier()
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    # The slowest rank's time is the collective's time.
    return comm.allreduce(statistics.median(times), op=_max(comm))


def _max(comm):
    from mpi4py import MPI
    return MPI.MAX


def main(argv: list[str] | None = None) -> int:
    """Runs the benchmark on every rank; rank 0 prints.

    Returns:
        0, or 2 for bad arguments.
    """
    args = _parser().parse_args(argv)
    if args.iters < 1 or args.warmup < 0:
        _parser().error("--iters must be >= 1 and --warmup >= 0")
    os.environ.setdefault(env.TF_CPP_MIN_LOG_LEVEL, "3")  # as the training program
    tf = import_tensorflow()

    from distrain import collectives, ops
    from distrain.bench.shapes import resnet50_shapes
    collectives.init("mpi")
    from mpi4py import MPI
    comm = MPI.COMM_WORLD
    size, rank = collectives.size(), collectives.rank()
    rng = np.random.default_rng(rank)
    shapes = resnet50_shapes()
    grads = [tf.constant(rng.standard_normal(s, dtype=np.float32)) for s in shapes]
    nbytes = sum(int(np.prod(s)) * 4 for s in shapes)
    compression = ops.Compression.by_name(args.compression)

    flat_in = np.ones(nbytes // 4, np.float32)
    flat_out = np.empty_like(flat_in)
    raw = _median_time(lambda: comm.Allreduce(flat_in, flat_out, MPI.SUM), comm,
                       args.iters, args.warmup)
    chunk = max(1, collectives.chunk_bytes() // 4)

    def raw_chunked():
        for start in range(0, flat_in.size, chunk):
            comm.Allreduce(flat_in[start:start + chunk], flat_out[start:start + chunk], MPI.SUM)

    raw_chunked_time = _median_time(raw_chunked, comm, args.iters, args.warmup)
    ours = _median_time(lambda: collectives.grouped_allreduce(grads, compression=compression),
                        comm, args.iters, args.warmup)
    result = {
        "ranks": size, "tensors": len(shapes), "megabytes": round(nbytes / 1e6, 1),
        "compression": args.compression,
        "distrain_ms": round(ours * 1e3, 2), "raw_mpi_ms": round(raw * 1e3, 2),
        "raw_mpi_chunked_ms": round(raw_chunked_time * 1e3, 2),
        "ratio": round(ours / raw, 3) if raw > 0 else None,
        "distrain_busbw_gbs": round(bus_bandwidth(nbytes, ours, size) / 1e9, 2),
        "raw_mpi_busbw_gbs": round(bus_bandwidth(nbytes, raw, size) / 1e9, 2),
        "fusion_threshold": collectives.fusion_threshold(),
        "chunk_bytes": collectives.chunk_bytes(),
        "mpi": MPI.Get_library_version().split(",")[0].strip(),
    }
    if rank == 0:
        if args.json:
            print(json.dumps(result), flush=True)
        else:
            print(f"allreduce of {result['tensors']} tensors, {result['megabytes']} MB, "
                  f"{size} ranks ({result['mpi']}), compression {args.compression}")
            print(f"  distrain grouped_allreduce  {result['distrain_ms']:9.2f} ms   "
                  f"busbw {result['distrain_busbw_gbs']:6.2f} GB/s")
            print(f"  raw MPI Allreduce (1 call)  {result['raw_mpi_ms']:9.2f} ms   "
                  f"busbw {result['raw_mpi_busbw_gbs']:6.2f} GB/s")
            print(f"  raw MPI, chunked as distrain {result['raw_mpi_chunked_ms']:8.2f} ms")
            print(f"  ratio distrain / raw        {result['ratio']:9.3f}", flush=True)
    collectives.shutdown()
    return 0
