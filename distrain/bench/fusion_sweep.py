"""``bench allreduce --chunk-sizes ... --thresholds ...``: every fusion threshold and chunk
size timed in one process, in turn each iteration, against one raw MPI Allreduce.

Alternating matters on a shared host: the copy bandwidth between two cores can halve for
seconds at a time (measured here, see docs/benchmarks.md), so configurations timed in
separate invocations, or one after another, compare the host's moods, not the settings.
"""
from __future__ import annotations

import json

import numpy as np

from distrain import collectives
from distrain.bench.collective_ops import paired_times

__all__ = ["megabytes_list", "sweep", "print_records"]

MIB = 1 << 20


def megabytes_list(text: str) -> list[int]:
    """``1,4,16,0`` (MiB) as bytes; 0 stays 0 (one message per bucket).

    Raises:
        ValueError: not a comma-separated list of numbers >= 0.
    """
    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ValueError(f"takes MiB as N,N,... (got {text!r})") from None
    if not values or any(v < 0 for v in values):
        raise ValueError(f"takes MiB as N,N,... of numbers >= 0 (got {text!r})")
    return [int(v * MIB) for v in values]


def sweep(grouped_allreduce, raw, comm, chunk_sizes: list[int], thresholds: list[int],
          iters: int, warmup: int) -> list[dict]:
    """Times the grouped allreduce at every (threshold, chunk) against ``raw``.

    Each iteration times ``raw`` and every configuration once, in turn
    (:func:`~distrain.bench.collective_ops.paired_times`); a configuration's ratio is the
    median over iterations of its time over raw's time in the same iteration.

    The fusion threshold and chunk size of :mod:`distrain.collectives` are set in turn,
    and restored afterwards.

    Args:
        grouped_allreduce: reduces the gradient list once.
        raw: the reference (one raw MPI Allreduce of the same bytes).
        comm: the mpi4py communicator to synchronise on.
        chunk_sizes, thresholds: bytes.
        iters, warmup: timed and untimed repetitions of each.

    Returns:
        One record per configuration: ``fusion_threshold``, ``chunk_bytes``,
        ``distrain_ms`` and ``raw_mpi_ms`` (the slowest rank's medians), ``ratio`` (the
        median of the per-iteration ratios) and ``ratio_q1``, ``ratio_q3`` (its quartiles).
    """
    configs = [(t, c) for t in thresholds for c in chunk_sizes]
    saved = collectives.fusion_threshold(), collectives.chunk_bytes()

    def configured(threshold: int, chunk: int):
        def call():
            collectives.set_fusion(threshold, chunk)
            grouped_allreduce()
        return call

    try:
        times = np.array(paired_times([raw] + [configured(t, c) for t, c in configs], comm,
                                      iters, warmup)).T
    finally:
        collectives.set_fusion(*saved)
    slowest = np.max(comm.allgather(times), axis=0)
    medians = np.median(slowest, axis=0)
    ratios = slowest[:, 1:] / slowest[:, :1]
    q1, q2, q3 = np.quantile(ratios, [0.25, 0.5, 0.75], axis=0)
    return [{"fusion_threshold": t, "chunk_bytes": c,
             "distrain_ms": round(float(medians[i + 1]) * 1e3, 2),
             "raw_mpi_ms": round(float(medians[0]) * 1e3, 2), "ratio": round(float(q2[i]), 3),
             "ratio_q1": round(float(q1[i]), 3), "ratio_q3": round(float(q3[i]), 3)}
            for i, (t, c) in enumerate(configs)]


def print_records(records: list[dict], model: str, ranks: int, nbytes: int,
                  as_json: bool) -> None:
    """Prints each configuration's record, one line (or one JSON object) each."""
    for record in records:
        record.update(model=model, ranks=ranks, megabytes=round(nbytes / 1e6, 1))
        print(json.dumps(record) if as_json else
              f"threshold {record['fusion_threshold'] >> 20:4d} MiB  chunk "
              f"{record['chunk_bytes'] / MIB:6.2f} MiB  distrain "
              f"{record['distrain_ms']:8.2f} ms  raw {record['raw_mpi_ms']:8.2f} ms  "
              f"ratio {record['ratio']:.3f} ({record['ratio_q1']:.3f}-"
              f"{record['ratio_q3']:.3f})", flush=True)
