"""A program written for Horovod's Keras API, with only the import changed.

Prints one JSON line per rank: the weights digest after fit, the averaged metrics, and the
learning rate the warm-up callback left.
"""
import json
import sys

import keras
import numpy as np
import tensorflow as tf

import distrain.keras as hvd
from distrain.train.checkpoint import weights_digest

hvd.init()
tf.config.threading.set_intra_op_parallelism_threads(1)
keras.utils.set_random_seed(1000 + hvd.rank())      # different initial weights per rank

rng = np.random.default_rng(7)
x = rng.standard_normal((256, 8)).astype(np.float32)
y = (x.sum(axis=1) > 0).astype(np.int64)
shard = slice(hvd.rank() * 64, (hvd.rank() + 1) * 64)  # each rank its own 64 samples

model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(16, activation="relu"),
                          keras.layers.Dense(2)])
opt = hvd.DistributedOptimizer(keras.optimizers.SGD(0.05 * hvd.size(), momentum=0.9))
model.compile(optimizer=opt, loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
              metrics=["accuracy"], jit_compile=False)
history = model.fit(x[shard], y[shard], batch_size=16, epochs=2, verbose=0, shuffle=False,
                    callbacks=[hvd.callbacks.BroadcastGlobalVariablesCallback(0),
                               hvd.callbacks.MetricAverageCallback(),
                               hvd.callbacks.LearningRateWarmupCallback(
                                   0.05 * hvd.size(), warmup_epochs=1)])
row = {"rank": hvd.rank(), "class": type(opt).__name__,
       "digest": weights_digest(np.asarray(w) for w in model.weights),
       "loss": history.history["loss"][-1], "lr": float(np.asarray(opt.learning_rate))}
sys.stdout.write(json.dumps(row) + "\n")  # one write: the launcher merges ranks' output
sys.stdout.flush()
sys.exit(0)
