"""A Horovod elastic training loop (hvd.elastic.run, TensorFlowKerasState, commit, reset
callbacks), with only the import changed.

Arguments: BATCHES_PER_EPOCH EPOCHS [CRASH_AT]: with CRASH_AT, rank 0 of the first launch
fails at that global batch (a failure to resume from). Prints one JSON row per rank at the
end, and ``commit E B`` lines as it commits.
"""
import json
import os
import sys
import time

import keras
import numpy as np
import tensorflow as tf

import distrain.tensorflow as hvd
from distrain.train.checkpoint import weights_digest

hvd.init()
tf.config.threading.set_intra_op_parallelism_threads(1)
keras.utils.set_random_seed(1)
batches, epochs = int(sys.argv[1]), int(sys.argv[2])
crash_at = int(sys.argv[3]) if len(sys.argv) > 3 else None
first_launch = os.environ.get("DISTRAIN_RESTART_COUNT", "0") == "0"

model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(8, activation="tanh"),
                          keras.layers.Dense(1)])
opt = keras.optimizers.SGD(0.01 * hvd.size())
opt.build(model.trainable_variables)
resets = []


def on_state_reset():
    opt.learning_rate.assign(0.01 * hvd.size())
    resets.append(hvd.size())


state = hvd.elastic.TensorFlowKerasState(model, opt, epoch=0, batch=0, seen=0)
state.register_reset_callbacks([on_state_reset])


@tf.function
def train_step(x, y):
    with tf.GradientTape() as tape:
        loss = tf.reduce_mean((model(x, training=True) - y) ** 2)
    tape = hvd.DistributedGradientTape(tape)
    opt.apply_gradients(zip(tape.gradient(loss, model.trainable_variables),
                            model.trainable_variables))
    return loss


@hvd.elastic.run
def train(state):
    for state.epoch in range(state.epoch, epochs):
        for state.batch in range(state.batch, batches):
            done = state.epoch * batches + state.batch
            if crash_at is not None and first_launch and hvd.rank() == 0 and done == crash_at:
                raise RuntimeError(f"injected crash at batch {done}")
            rng = np.random.default_rng((done, hvd.rank()))
            x = rng.standard_normal((16, 4)).astype(np.float32)
            train_step(x, x.sum(axis=1, keepdims=True))
            state.seen += 1
            time.sleep(0.03)
            if (state.batch + 1) % 5 == 0:
                state.batch += 1
                if hvd.rank() == 0:
                    print(f"commit {state.epoch} {state.batch}", flush=True)
                state.commit()
        state.batch = 0
    return state.epoch


train(state)
row = {"rank": hvd.rank(), "size": hvd.size(), "epoch": state.epoch, "resets": resets,
       "lr": float(opt.learning_rate.numpy()), "commits": state.commits,
       "digest": weights_digest(np.asarray(v) for v in model.weights)}
sys.stdout.write(json.dumps(row) + "\n")
sys.stdout.flush()
