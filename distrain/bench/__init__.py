"""distrain's benchmarks: ``python -m distrain.bench NAME [options]``.

Each benchmark is a module of this package with a ``main(argv) -> int``; it prints figures
(and JSON with ``--json``) and asserts nothing about time.

Example:
    mpirun -np 2 python -m distrain.bench allreduce --json
"""
from __future__ import annotations

import importlib
import sys

__all__ = ["BENCHMARKS", "main"]

BENCHMARKS = {
    "allreduce": ("distrain.bench.allreduce", "grouped allreduce of ResNet-50-sized gradients "
                  "against one raw MPI Allreduce"),
    "launch": ("distrain.bench.launch", "distrain-run's start-up overhead over bare mpirun"),
    "train": ("distrain.bench.train", "training throughput (samples/s) at this world size"),
    "costmodel": ("distrain.bench.costmodel", "predicted against measured step time"),
    "memory": ("distrain.bench.memory", "peak resident memory per rank against plain "
               "single-process Keras"),
    "network": ("distrain.bench.network", "training over namespace hosts whose links are "
                "limited by tc (root)"),
    "elastic": ("distrain.bench.host_kills", "an elastic job through random host kills on "
                "namespace hosts (root)"),
}


def main(argv: list[str] | None = None) -> int:
    """Runs the benchmark named by ``argv[0]``.

    Returns:
        The benchmark's exit code; 2 for an unknown name.
    """
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] in ("-h", "--help"):
        print("usage: python -m distrain.bench NAME [options]\n\nbenchmarks:")
        for name, (_, what) in BENCHMARKS.items():
            print(f"  {name:10s} {what}")
        return 0 if argv else 2
    entry = BENCHMARKS.get(argv[0])
    if entry is None:
        print(f"distrain.bench: unknown benchmark {argv[0]!r}; choose from "
              f"{', '.join(BENCHMARKS)}", file=sys.stderr)
        return 2
    return importlib.import_module(entry[0]).main(argv[1:])
