"""A custom training loop written for horovod.tensorflow, with only the import changed."""
import json
import sys

import keras
import numpy as np
import tensorflow as tf

import distrain.tensorflow as hvd
from distrain.train.checkpoint import weights_digest

hvd.init()
tf.config.threading.set_intra_op_parallelism_threads(1)
keras.utils.set_random_seed(hvd.rank())

model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(8, activation="tanh"),
                          keras.layers.Dense(1)])
opt = keras.optimizers.SGD(0.1)
x = tf.constant(np.random.default_rng(hvd.rank()).standard_normal((32, 4)), tf.float32)
y = tf.reduce_sum(x, axis=1, keepdims=True)


@tf.function
def train_step():
    with tf.GradientTape() as tape:
        loss = tf.reduce_mean((model(x, training=True) - y) ** 2)
    tape = hvd.DistributedGradientTape(tape, compression=hvd.Compression.fp16)
    grads = tape.gradient(loss, model.trainable_variables)
    opt.apply_gradients(zip(grads, model.trainable_variables))
    return loss


opt.build(model.trainable_variables)
hvd.broadcast_variables(model.variables, root_rank=0)
for _ in range(5):
    train_step()
row = {"rank": hvd.rank(), "digest": weights_digest(np.asarray(v) for v in model.weights),
       "tracings": train_step.experimental_get_tracing_count()}
sys.stdout.write(json.dumps(row) + "\n")  # one write: the launcher merges ranks' output
sys.stdout.flush()
