"""``python -m distrain.bench allreduce``: distrain's grouped allreduce against raw MPI.

Reduces a ResNet-50-sized gradient list (161 float32 tf.Tensors, 102 MB; ``--model NAME``:
that model's own gradient list) with ``distrain.grouped_allreduce`` and, for reference, the same number of bytes in one contiguous
numpy buffer with one ``mpi4py`` ``Allreduce``. Prints the median of each, their ratio, and
the bus bandwidth as nccl-tests define it. The same bytes Allreduced in distrain's chunk size
are printed too, to show what chunking alone buys: busbw = algbw x 2(p-1)/p, algbw = bytes / time.
Two more rows show where distrain's time goes: the raw call in place (no copy of the input:
what is left once the tensors are in one buffer), and the same gradients passed to
``grouped_allreduce`` as numpy arrays (no TensorFlow conversions).

``--op alltoall|reducescatter|allgather|broadcast`` times that collective of one
``--megabytes`` tensor against its raw mpi4py call instead, and ``--process-set R,R,...``
runs on those ranks only (:mod:`distrain.bench.collective_ops`).

Example:
    mpirun -np 2 python -m distrain.bench allreduce --json
    mpirun -np 2 python -m distrain.bench allreduce --model mobilenet_v2 --image-size 96
    mpirun -np 4 python -m distrain.bench allreduce --op alltoall --process-set 0,1
"""
from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np

from distrain import environment as env
from distrain.bench.collective_ops import OPS, paired_medians
from distrain.bench.collective_ops import run as run_op
from distrain.bench.fusion_sweep import megabytes_list, print_records, sweep
from distrain.bench.shapes import resnet50_shapes
from distrain.ops import COMPRESSIONS
from distrain.protocol import ExitCode
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
    p.add_argument("--op", default="allreduce", choices=OPS,
                   help="the collective to time against its raw MPI call (default allreduce: "
                        "ResNet-50's gradient list)")
    p.add_argument("--megabytes", type=float, default=64.0,
                   help="the tensor's size for --op other than allreduce (default 64)")
    p.add_argument("--model", default=None,
                   help="reduce this model's gradient list instead of ResNet-50's (any "
                        "--model of python -m distrain.train, built for --image-size images)")
    p.add_argument("--image-size", type=int, default=64, metavar="N",
                   help="the images --model is built for (default 64)")
    p.add_argument("--process-set", default=None, metavar="R,R,...",
                   help="run on these ranks only, as a process set (raw MPI: the matching "
                        "sub-communicator)")
    p.add_argument("--chunk-sizes", default=None, metavar="MIB,MIB,...",
                   help="sweep: time these chunk sizes (MiB, 0: one message per bucket), "
                        "each with every --thresholds, in turn each iteration")
    p.add_argument("--thresholds", default=None, metavar="MIB,MIB,...",
                   help="sweep: the fusion thresholds (MiB) to time (default: the running "
                        "one)")
    p.add_argument("--json", action="store_true", help="print one JSON object (a sweep: "
                   "one per configuration)")
    return p


def _gradient_shapes(model: str | None, image_size: int) -> list[tuple[int, ...]]:
    """The trainable variables' shapes of ``model`` (ResNet-50's when None)."""
    if model is None:
        return resnet50_shapes()
    from distrain.train.models import build_model
    from distrain.train.transformer import TransformerShape
    sample = (TransformerShape().sequence_length,) if model == "transformer" else \
        (image_size, image_size, 3)   # the transformer at its default size
    built = build_model(model, sample, 1000)
    return [tuple(int(d) for d in v.shape) for v in built.trainable_variables]


def _ranks(text: str | None) -> list[int] | None:
    """``--process-set``'s ranks.

    Raises:
        ValueError: not a comma-separated list of integers.
    """
    if not text:
        return None
    try:
        return sorted({int(r) for r in text.split(",")})
    except ValueError:
        raise ValueError(f"takes ranks as R,R,... (got {text!r})") from None


def _other_op(args, collectives, process_sets) -> int:
    """``--op`` other than allreduce, or any op on a process set."""
    process_set = process_sets[0] if process_sets else collectives.global_process_set
    result = run_op(args.op, args.megabytes, process_set, args.iters, args.warmup)
    if result is not None:
        if args.json:
            print(json.dumps(result), flush=True)
        else:
            where = f"ranks {result['process_set']}" if result["process_set"] else \
                f"{result['ranks']} ranks"
            print(f"{args.op} of {result['megabytes']} MB on {where}: distrain "
                  f"{result['distrain_ms']:.2f} ms, raw MPI {result['raw_mpi_ms']:.2f} ms, "
                  f"ratio {result['ratio']:.3f}", flush=True)
    collectives.shutdown()
    return 0


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
    from distrain.errors import UsageError
    try:
        ranks = _ranks(args.process_set)
        process_sets = [collectives.ProcessSet(ranks)] if ranks else None
        collectives.init(backend="mpi", process_sets=process_sets)
    except ValueError as exc:  # not ranks, a set outside the world, or the world again
        if env.detect_world().rank == 0:
            print(f"distrain.bench allreduce: --process-set {exc}", file=sys.stderr)
        return ExitCode.USAGE
    if args.op != "allreduce" or ranks:
        return _other_op(args, collectives, process_sets)
    # checked once MPI runs: a rank that returned before MPI_Init could have mpirun kill
    # rank 0 before it prints; MPI's finalize waits for every rank
    try:
        flag = "--chunk-sizes"
        chunk_sizes = megabytes_list(args.chunk_sizes) if args.chunk_sizes else None
        flag = "--thresholds"
        thresholds = megabytes_list(args.thresholds) if args.thresholds else None
    except ValueError as exc:
        if collectives.rank() == 0:
            print(f"distrain.bench allreduce: {flag} {exc}", file=sys.stderr)
        return ExitCode.USAGE
    from mpi4py import MPI
    comm = MPI.COMM_WORLD
    size, rank = collectives.size(), collectives.rank()
    rng = np.random.default_rng(rank)
    try:
        shapes = _gradient_shapes(args.model, args.image_size)
    except UsageError as exc:
        if rank == 0:
            print(f"distrain.bench allreduce: --model: {exc}", file=sys.stderr)
        return ExitCode.USAGE
    grads = [tf.constant(rng.standard_normal(s, dtype=np.float32)) for s in shapes]
    nbytes = sum(int(np.prod(s)) * 4 for s in shapes)
    compression = ops.Compression.by_name(args.compression)

    flat_in = np.ones(nbytes // 4, np.float32)
    flat_out = np.empty_like(flat_in)
    # 0: distrain sends every bucket whole, and so does this reference
    chunk = max(1, collectives.chunk_bytes() // 4) if collectives.chunk_bytes() > 0 else \
        flat_in.size

    def raw_chunked():
        for start in range(0, flat_in.size, chunk):
            comm.Allreduce(flat_in[start:start + chunk], flat_out[start:start + chunk], MPI.SUM)

    if chunk_sizes or thresholds:
        records = sweep(lambda: collectives.grouped_allreduce(grads, compression=compression),
                        lambda: comm.Allreduce(flat_in, flat_out, MPI.SUM), comm,
                        chunk_sizes or [collectives.chunk_bytes()],
                        thresholds or [collectives.fusion_threshold()], args.iters, args.warmup)
        if rank == 0:
            print_records(records, args.model or "resnet50 (shapes)", size, nbytes, args.json)
        collectives.shutdown()
        return 0
    arrays = [np.asarray(g) for g in grads]   # the same gradients, with no TensorFlow around
    # in turn each iteration, so a slow spell of the host falls on all of them alike
    raw, raw_chunked_time, raw_in_place, ours, ours_numpy = paired_medians(
        [lambda: comm.Allreduce(flat_in, flat_out, MPI.SUM), raw_chunked,
         lambda: comm.Allreduce(MPI.IN_PLACE, flat_out, MPI.SUM),
         lambda: collectives.grouped_allreduce(grads, compression=compression),
         lambda: collectives.grouped_allreduce(arrays, compression=compression)],
        comm, args.iters, args.warmup)
    result = {
        "model": args.model or "resnet50 (shapes)",
        "ranks": size, "tensors": len(shapes), "megabytes": round(nbytes / 1e6, 1),
        "compression": args.compression,
        "distrain_ms": round(ours * 1e3, 2), "raw_mpi_ms": round(raw * 1e3, 2),
        "raw_mpi_chunked_ms": round(raw_chunked_time * 1e3, 2),
        "raw_mpi_in_place_ms": round(raw_in_place * 1e3, 2),
        "distrain_numpy_ms": round(ours_numpy * 1e3, 2),
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
            print(f"allreduce of {result['model']}'s {result['tensors']} gradients, "
                  f"{result['megabytes']} MB, "
                  f"{size} ranks ({result['mpi']}), compression {args.compression}")
            print(f"  distrain grouped_allreduce  {result['distrain_ms']:9.2f} ms   "
                  f"busbw {result['distrain_busbw_gbs']:6.2f} GB/s")
            print(f"  raw MPI Allreduce (1 call)  {result['raw_mpi_ms']:9.2f} ms   "
                  f"busbw {result['raw_mpi_busbw_gbs']:6.2f} GB/s")
            print(f"  raw MPI, chunked as distrain {result['raw_mpi_chunked_ms']:8.2f} ms")
            print(f"  raw MPI, in place (1 call)  {result['raw_mpi_in_place_ms']:9.2f} ms")
            print(f"  distrain, numpy arrays      {result['distrain_numpy_ms']:9.2f} ms")
            print(f"  ratio distrain / raw        {result['ratio']:9.3f}", flush=True)
    collectives.shutdown()
    return 0
