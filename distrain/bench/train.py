"""``python -m distrain.bench train``: training throughput at the current world size.

Runs the training program on synthetic data (or ``--dataset``) for ``--warmup`` + ``--steps`` steps and prints
samples/s over the timed steps: global batch / median step time of the slowest rank (each
rank's medians as the timing report takes them, :func:`distrain.timing.summarize_rank`), so
runs at 1, 2, 4... ranks can be compared. Then it times the allreduce alone: the model's
gradient list (eager tensors, as the step hands them over) reduced back to back with the
same compression, ``--steps`` times, the slowest rank's median.

Example:
    mpirun -np 2 python -m distrain.bench train --model cnn --json
"""
from __future__ import annotations

import argparse
import json
import statistics
import time

from distrain.timing.summary import summarize_rank

__all__ = ["main", "allreduce_alone"]


def allreduce_alone(specs, compression: str, repeats: int) -> float:
    """Seconds one grouped allreduce of tensors shaped as ``specs`` takes without training
    around it: the slowest rank's median of ``repeats`` back-to-back calls after 3 untimed.

    Args:
        specs: ``(shape, dtype name)`` of each tensor.
        compression: the wire compression's name.
        repeats: timed calls.
    """
    from distrain import collectives
    from distrain.tfimport import import_tensorflow
    tf = import_tensorflow()
    tensors = [tf.ones(shape, dtype) for shape, dtype in specs]
    collectives.barrier()
    seconds = []
    for number in range(3 + repeats):
        start = time.perf_counter()
        collectives.grouped_allreduce(tensors, compression=compression, name="allreduce alone")
        if number >= 3:
            seconds.append(time.perf_counter() - start)
    return max(collectives.allgather_object(statistics.median(seconds)))


def _config(args, steps: int):
    """The training program's configuration for ``steps`` steps of ``args``."""
    from distrain.train.config import TrainConfig
    return TrainConfig(model=args.model, dataset=args.dataset, image_size=args.image_size,
                       batch_size=args.batch_size, steps_per_epoch=steps,
                       backward_passes=args.backward_passes,
                       synthetic_samples=max(4096, steps * args.batch_size *
                                             args.backward_passes * 64),
                       compression=args.compression, quiet=True, cost_model=False,
                       backend=args.backend, overlap=args.overlap)


def main(argv: list[str] | None = None) -> int:
    """Trains briefly and prints throughput on rank 0.

    Returns:
        0, or 2 for bad arguments.
    """
    p = argparse.ArgumentParser(prog="python -m distrain.bench train",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="cnn")
    p.add_argument("--batch-size", type=int, default=32, help="per rank (default 32)")
    p.add_argument("--steps", type=int, default=50, help="timed steps (default 50)")
    p.add_argument("--warmup", type=int, default=5, help="untimed steps (default 5)")
    p.add_argument("--compression", default="none")
    p.add_argument("--overlap", action="store_true",
                   help="reduce gradient buckets while backward runs")
    p.add_argument("--backward-passes", type=int, default=1, metavar="N",
                   help="passes of --batch-size per step, reduced once (default 1)")
    p.add_argument("--dataset", default="synthetic",
                   help="any --dataset of python -m distrain.train, e.g. images:DIR "
                        "(default synthetic)")
    p.add_argument("--image-size", type=int, default=None, metavar="N")
    p.add_argument("--backend", default="auto",
                   help="the collectives' backend, as python -m distrain.train --backend: "
                        "horovod under horovodrun times Horovod's own allreduce on the same "
                        "program (default auto)")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    if args.steps < 1 or args.warmup < 0 or args.batch_size < 1 or args.backward_passes < 1:
        p.error("--steps, --batch-size and --backward-passes must be >= 1, --warmup >= 0")

    from distrain import collectives
    from distrain.errors import UsageError
    from distrain.train.runner import run
    steps = args.warmup + args.steps
    try:
        config = _config(args, steps)
    except UsageError as exc:
        p.error(str(exc))
    result = run(config)
    size = collectives.size()
    mine = summarize_rank(result.timer.steps, collectives.rank(), "", args.warmup)
    slowest = max(collectives.allgather_object(mine.total))
    phases = mine.phases
    global_batch = args.batch_size * args.backward_passes * size
    figures = {"model": args.model, "dataset": args.dataset, "ranks": size,
               "backend": args.backend,
               "overlap": args.overlap, "batch_per_rank": args.batch_size,
               "backward_passes": args.backward_passes,
               "global_batch": global_batch, "steps": args.steps,
               "step_ms": round(slowest * 1e3, 3),
               "samples_per_s": round(global_batch / slowest, 1),
               "gradient_bytes": result.gradient_bytes,
               "allreduce_alone_ms": round(allreduce_alone(
                   result.gradient_specs, args.compression, args.steps) * 1e3, 3)
               if size > 1 else 0.0,
               "rank0_phase_ms": {k: round(v * 1e3, 3) for k, v in phases.items()}}
    if collectives.rank() == 0:
        if args.json:
            print(json.dumps(figures), flush=True)
        else:
            passes = "" if args.backward_passes == 1 else \
                f" ({args.backward_passes} backward passes of {args.batch_size})"
            print(f"train {args.model} on {args.dataset}: {size} rank(s), global batch "
                  f"{figures['global_batch']}{passes}, {args.steps} timed steps")
            print(f"  step {figures['step_ms']:.2f} ms (median, slowest rank)   "
                  f"{figures['samples_per_s']:.0f} samples/s")
            print(f"  allreduce alone {figures['allreduce_alone_ms']:.2f} ms (median, "
                  f"slowest rank)")
            print("  rank 0 phases (ms): " + ", ".join(
                f"{k} {v:.2f}" for k, v in figures["rank0_phase_ms"].items()), flush=True)
    return 0
