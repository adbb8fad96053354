"""``python -m distrain.bench memory``: what distrain adds to a rank's resident memory.

Runs the same small training program twice and compares peak resident memory (``ru_maxrss``):
once as plain single-process Keras (forward, backward and apply in ``tf.function``s, no
collective), once per rank under ``distrain-run -np --ranks`` with the gradients averaged by
distrain's grouped allreduce between backward and apply, as ``python -m distrain.train``
does. Both build ``--model`` for ``--image-size`` images and train ``--steps`` steps on one
synthetic batch, so the difference is distrain's: MPI, its message and fusion buffers
(pooled, :mod:`distrain.engine.buffers`) and the staging copies of the gradients. It prints
both peaks, the difference per rank, the gradients' bytes and the bytes distrain's buffer
pool holds at the end. Nothing here is timed or asserted by a test.

Example:
    python -m distrain.bench memory --model resnet50 --image-size 64 --ranks 2
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys

from distrain import environment as env
from distrain.cores import threads_per_rank
from distrain.run.command import launcher_argv

__all__ = ["main", "peak_rss_mb"]

_ROLES = ("plain", "distrain")


def peak_rss_mb() -> float:
    """This process's peak resident memory so far, in MiB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _train(args) -> dict:
    """Trains ``args.steps`` steps in this process and returns its memory figures."""
    import numpy as np
    from distrain.engine.buffers import pooled_bytes
    from distrain.tfimport import import_tensorflow
    from distrain.train.models import build_model
    tf = import_tensorflow()
    import keras
    distributed = args.role == "distrain"
    if distributed:
        from distrain import collectives
        collectives.init()
    model = build_model(args.model, (args.image_size, args.image_size, 3), 10)
    variables = list(model.trainable_variables)
    optimizer = keras.optimizers.SGD(0.01, momentum=0.9)
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    rng = np.random.default_rng(0)
    x = tf.constant(rng.random((args.batch_size, args.image_size, args.image_size, 3),
                               np.float32))
    y = tf.constant(rng.integers(0, 10, args.batch_size))

    @tf.function
    def compute():
        with tf.GradientTape() as tape:
            loss = loss_fn(y, model(x, training=True))
        return tape.gradient(loss, variables)

    apply = tf.function(lambda grads: optimizer.apply_gradients(zip(grads, variables)))
    before = peak_rss_mb()
    for _ in range(args.steps):
        grads = compute()
        if distributed:
            grads = collectives.grouped_allreduce(grads, name="gradients")
        apply(grads)
    figures = {"peak_rss_mb": peak_rss_mb(), "peak_rss_before_training_mb": before,
               "gradient_bytes": int(sum(np.asarray(v).nbytes for v in variables)),
               "pooled_bytes": pooled_bytes()}
    if distributed:
        every = collectives.allgather_object(figures)
        figures = {key: max(rank[key] for rank in every) for key in figures}
        figures["ranks"] = collectives.size()
        if collectives.rank() != 0:
            return {}
    return figures


def _child(args, role: str, ranks: int) -> dict:
    argv = [sys.executable, "-m", "distrain.bench", "memory", "--role", role,
            "--model", args.model, "--image-size", str(args.image_size),
            "--batch-size", str(args.batch_size), "--steps", str(args.steps)]
    if role == "distrain":
        argv = [*launcher_argv(), "-np", str(ranks), *argv]
    threads = str(threads_per_rank(ranks))
    settings = {env.OMP_NUM_THREADS: threads, env.TF_NUM_INTRAOP_THREADS: threads,
                env.TF_NUM_INTEROP_THREADS: "1", env.TF_CPP_MIN_LOG_LEVEL: "3"}
    done = subprocess.run(argv, capture_output=True, text=True, timeout=args.timeout,
                          env=dict(os.environ, **settings))
    if done.returncode != 0:
        raise RuntimeError(f"the {role} run failed (exit {done.returncode}):\n"
                           f"{done.stderr[-2000:]}")
    for line in reversed(done.stdout.splitlines()):
        text = line[line.find("{"):] if "{" in line else ""
        if text:
            return json.loads(text)
    raise RuntimeError(f"the {role} run printed no figures:\n{done.stdout[-2000:]}")


def main(argv: list[str] | None = None) -> int:
    """Runs the benchmark and prints its figures.

    Returns:
        0; 2 for bad arguments; 1 when a run failed.
    """
    p = argparse.ArgumentParser(prog="python -m distrain.bench memory",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="cnn")
    p.add_argument("--image-size", type=int, default=32, metavar="N")
    p.add_argument("--batch-size", type=int, default=16, help="per rank (default 16)")
    p.add_argument("--steps", type=int, default=5, help="training steps (default 5)")
    p.add_argument("--ranks", type=int, default=2, help="ranks of the distrain run "
                                                        "(default 2)")
    p.add_argument("--timeout", type=float, default=900, help="seconds per run (default 900)")
    p.add_argument("--role", choices=_ROLES, default=None, help=argparse.SUPPRESS)
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    if min(args.image_size, args.batch_size, args.steps, args.ranks) < 1:
        p.error("--image-size, --batch-size, --steps and --ranks must be >= 1")
    if args.role is not None:  # one run of the program, started by the parent below
        figures = _train(args)
        if figures:
            print(json.dumps(figures), flush=True)
        return 0
    try:
        plain = _child(args, "plain", 1)
        distributed = _child(args, "distrain", args.ranks)
    except (RuntimeError, subprocess.TimeoutExpired) as exc:
        print(f"distrain.bench memory: {exc}", file=sys.stderr)
        return 1
    result = {"model": args.model, "image_size": args.image_size,
              "batch_size": args.batch_size, "plain": plain, "distrain": distributed,
              "added_mb": round(distributed["peak_rss_mb"] - plain["peak_rss_mb"], 1)}
    if args.json:
        print(json.dumps(result), flush=True)
        return 0
    print(f"memory {args.model}: images {args.image_size}x{args.image_size}, batch "
          f"{args.batch_size}, {args.steps} steps; gradients "
          f"{plain['gradient_bytes'] / 2**20:.1f} MiB")
    print(f"  plain Keras, one process: peak {plain['peak_rss_mb']:.0f} MiB")
    print(f"  distrain, {distributed['ranks']} ranks: peak {distributed['peak_rss_mb']:.0f} "
          f"MiB on the largest rank, {result['added_mb']:+.0f} MiB; distrain's buffer pool "
          f"holds {distributed['pooled_bytes'] / 2**20:.1f} MiB", flush=True)
    return 0
