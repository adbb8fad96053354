"""The training program of ``python -m distrain.bench elastic``: a Horovod-style elastic loop.

A small Keras MLP trained with ``hvd.elastic.run`` and ``TensorFlowKerasState``; each step
also sleeps ``--pause`` seconds so a run lasts. Rank 0 prints ``elastic-bench`` lines the
benchmark reads: ``restored STEP`` after a relaunch, ``step STEP`` after every step, ``commit
STEP`` after every commit; with ``--progress FILE`` it also appends them, with the time, to
FILE, which keeps what a killed process wrote (its output may be lost with it). The run ends at the first commit after ``--stop-file`` exists
(every rank agrees through one allreduce), or after ``--steps`` steps.

Usage (under an elastic distrain-run)::

    python -m distrain.bench.elastic_program --commit-every 10 --stop-file /tmp/stop
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

TAG = "elastic-bench"


def main(argv: list[str] | None = None) -> int:
    """Runs the loop; prints one JSON row per rank at the end.

    Returns:
        0 when it ended by the stop file or the step limit.
    """
    p = argparse.ArgumentParser(prog="python -m distrain.bench.elastic_program")
    p.add_argument("--commit-every", type=int, default=10)
    p.add_argument("--pause", type=float, default=0.03)
    p.add_argument("--steps", type=int, default=10 ** 6)
    p.add_argument("--stop-file", default=None)
    p.add_argument("--progress", default=None)
    args = p.parse_args(argv)

    import keras
    import numpy as np
    import tensorflow as tf
    import distrain.tensorflow as hvd
    from distrain.train.checkpoint import weights_digest

    hvd.init()
    keras.utils.set_random_seed(0)
    log = os.open(args.progress, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644) \
        if args.progress and hvd.rank() == 0 else None

    def say(kind: str, step: int) -> None:
        if hvd.rank() != 0:
            return
        print(f"{TAG} {kind} {step}", flush=True)
        if log is not None:
            os.write(log, f"{time.time():.6f} {kind} {step}\n".encode())
    model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(32, activation="relu"),
                              keras.layers.Dense(1)])
    optimizer = keras.optimizers.SGD(0.01 * hvd.size())
    optimizer.build(model.trainable_variables)
    state = hvd.elastic.TensorFlowKerasState(model, optimizer, step=0)

    def rescale():
        optimizer.learning_rate.assign(0.01 * hvd.size())
        say("restored", state.step)

    state.register_reset_callbacks([rescale])

    @tf.function
    def train_step(x, y):
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean((model(x, training=True) - y) ** 2)
        tape = hvd.DistributedGradientTape(tape)
        optimizer.apply_gradients(zip(tape.gradient(loss, model.trainable_variables),
                                      model.trainable_variables))
        return loss

    def stop_now() -> bool:
        found = bool(args.stop_file and os.path.exists(args.stop_file))
        return bool(hvd.allreduce(np.int32(found), op=hvd.Max, name="stop file"))

    @hvd.elastic.run
    def train(state):
        while state.step < args.steps:
            rng = np.random.default_rng((state.step, hvd.rank()))
            x = rng.standard_normal((32, 8)).astype(np.float32)
            train_step(x, x.sum(axis=1, keepdims=True))
            time.sleep(args.pause)
            state.step += 1
            say("step", state.step)
            if state.step % args.commit_every == 0:
                state.save()                     # state.commit(), with the line between
                state.persist()
                say("commit", state.step)
                state.check_host_updates()
                if stop_now():
                    return

    train(state)
    row = {"rank": hvd.rank(), "size": hvd.size(), "step": state.step,
           "digest": weights_digest(np.asarray(v) for v in model.weights)}
    sys.stdout.write(json.dumps(row) + "\n")
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
