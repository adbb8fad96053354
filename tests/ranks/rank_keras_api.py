"""distrain.keras across ranks, as horovod.tensorflow.keras 0.28.1 defines it: the collectives
on values against numpy, BroadcastGlobalVariablesCallback's local variables, the warm-up at
the real size, and BestModelCheckpoint written by rank 0 alone (see tests/test_mpi_suite.py)."""
import os

import keras
import numpy as np
import pytest
import tensorflow as tf

import distrain.keras as hvd

hvd.init()
RANK, SIZE = hvd.rank(), hvd.size()
STEPS, BATCH = 3, 4


def rank_value(rank, shape=(2, 3)):
    return np.full(shape, rank + 1.0, np.float32) * (np.arange(np.prod(shape)).reshape(shape)
                                                     + 1)


def test_allreduce_of_values_average_sum_and_scaling():
    mine = rank_value(RANK)
    everyone = [rank_value(r) for r in range(SIZE)]
    averaged = hvd.allreduce(mine, name="keras.avg")
    assert isinstance(averaged, tf.Tensor)
    np.testing.assert_allclose(averaged.numpy(), sum(everyone) / SIZE, rtol=1e-6)
    summed = hvd.allreduce(mine.tolist(), op=hvd.Sum, prescale_factor=2.0,
                           postscale_factor=0.5, name="keras.sum")
    np.testing.assert_allclose(summed.numpy(), sum(everyone), rtol=1e-6)
    with pytest.warns(DeprecationWarning):
        old_style = hvd.allreduce(float(RANK), average=False, name="keras.average_flag")
    assert old_style.numpy() == pytest.approx(sum(range(SIZE)))


def test_allgather_of_values_with_rows_of_each_rank():
    mine = [[RANK, r] for r in range(RANK + 1)]          # rank r gives r + 1 rows
    gathered = hvd.allgather(mine, name="keras.gather")
    want = np.array([[r, i] for r in range(SIZE) for i in range(r + 1)], np.int32)
    assert isinstance(gathered, tf.Tensor) and gathered.dtype == tf.int32
    np.testing.assert_array_equal(gathered.numpy(), want)


def test_broadcast_of_a_value_from_the_last_rank():
    got = hvd.broadcast(np.arange(4.0) * (RANK + 1), root_rank=SIZE - 1, name="keras.bcast")
    np.testing.assert_allclose(got.numpy(), np.arange(4.0) * SIZE)


@pytest.mark.parametrize("op", [hvd.Average, hvd.Sum], ids=["average", "sum"])
def test_reducescatter_of_a_value_gives_horovods_rows(op):
    rows = 2 * SIZE + 1
    everyone = [np.arange(rows * 2, dtype=np.float64).reshape(rows, 2) * (r + 1)
                for r in range(SIZE)]
    got = hvd.reducescatter(everyone[RANK], op=op, name=f"keras.rs.{op.name}")
    total = sum(everyone) / (SIZE if op is hvd.Average else 1)
    counts = [rows // SIZE + (1 if r < rows % SIZE else 0) for r in range(SIZE)]
    start = sum(counts[:RANK])
    np.testing.assert_allclose(got.numpy(), total[start:start + counts[RANK]])


def small_model(optimizer):
    keras.utils.set_random_seed(100 + RANK)               # different weights on every rank
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(4), keras.layers.Dense(1)])
    model.compile(optimizer=optimizer, loss=keras.losses.MeanSquaredError())
    return model


def data():
    rng = np.random.default_rng(RANK)
    return (rng.standard_normal((STEPS * BATCH, 3)).astype(np.float32),
            rng.standard_normal((STEPS * BATCH, 1)).astype(np.float32))


def test_broadcast_callback_keeps_each_ranks_local_variables():
    model = small_model(hvd.DistributedOptimizer(keras.optimizers.SGD(0.0, momentum=0.5)))
    local = model.layers[1].kernel
    before = [np.asarray(w).copy() for w in model.weights]
    x, y = data()
    model.fit(x, y, batch_size=BATCH, epochs=1, shuffle=False, verbose=0, callbacks=[
        hvd.callbacks.BroadcastGlobalVariablesCallback(0, local_variables=[local])])
    roots = hvd.broadcast_object(before, root_rank=0)
    for weight, own, root in zip(model.weights, before, roots):
        want = own if weight is local else root       # a zero rate leaves the values as set
        np.testing.assert_array_equal(np.asarray(weight), want)
    everyone = hvd.allgather_object(np.asarray(local).tobytes())
    assert len(set(everyone)) == SIZE                  # every rank kept its own


def test_warmup_at_the_real_size_follows_horovods_multiplier():
    model = small_model(hvd.DistributedOptimizer(keras.optimizers.SGD(0.01)))
    rates = []

    class Probe(keras.callbacks.Callback):
        def on_train_batch_begin(self, batch, logs=None):
            rates.append(float(np.asarray(self.model.optimizer.learning_rate)))

    x, y = data()
    model.fit(x, y, batch_size=BATCH, epochs=2, shuffle=False, verbose=0, callbacks=[
        hvd.callbacks.LearningRateWarmupCallback(0.1 * SIZE, warmup_epochs=1), Probe()])
    ramp = [0.1 * ((b + 1) / STEPS * (SIZE - 1) + 1) for b in range(STEPS)]
    np.testing.assert_allclose(rates, ramp + [0.1 * SIZE] * STEPS, rtol=1e-6)


def test_best_model_checkpoint_is_written_by_rank_0_only(tmp_path):
    path = str(tmp_path / ("best.keras" if int(keras.__version__[0]) >= 3 else "best.h5"))
    checkpoint = hvd.callbacks.BestModelCheckpoint(monitor="loss")
    checkpoint.filepath = path
    model = small_model(hvd.DistributedOptimizer(keras.optimizers.SGD(0.01)))
    x, y = data()
    model.fit(x, y, batch_size=BATCH, epochs=2, shuffle=False, verbose=0, callbacks=[
        hvd.callbacks.MetricAverageCallback(), checkpoint])
    wrote = hvd.allgather_object(sorted(os.listdir(tmp_path)))
    assert wrote == [[os.path.basename(path)]] + [[]] * (SIZE - 1)
