"""Horovod's optimizer and tape options on every rank under a real mpirun (see
tests/test_mpi_suite.py): gradient accumulation, explicit groups, partial (local-layer)
reduction, argument checks. Each rank trains on its own rows; references are computed
from every rank's rows on each rank."""
import numpy as np
import pytest
import tensorflow as tf

import distrain.keras as hvd

hvd.init()
RANK, SIZE = hvd.rank(), hvd.size()
keras = tf.keras
BATCH = 4                      # rows per rank per backward pass


def data(rows: int = 32, seed: int = 0):
    """This rank's rows of a regression problem (different on every rank)."""
    rng = np.random.default_rng(seed * 100 + RANK)
    x = rng.standard_normal((rows, 5)).astype("float32")
    return x, (x @ np.arange(1, 6, dtype="float32")[:, None] * 0.1 +
               rng.standard_normal((rows, 1)).astype("float32") * 0.01)


def model(seed: int = 1):
    keras.utils.set_random_seed(seed)
    return keras.Sequential([keras.Input((5,)), keras.layers.Dense(4, activation="tanh"),
                             keras.layers.Dense(1)])


def fit(optimizer, batch: int, rows: int = 32):
    m = model()
    m.compile(optimizer=optimizer, loss="mse")
    x, y = data(rows)
    m.fit(x, y, batch_size=batch, epochs=1, shuffle=False, verbose=0)
    return m


def weights(m) -> list:
    return [np.asarray(w) for w in m.get_weights()]


def assert_weights_close(a, b, rtol=1e-5, atol=1e-6):
    for u, v in zip(weights(a), weights(b)):
        np.testing.assert_allclose(u, v, rtol=rtol, atol=atol)


def test_four_accumulated_passes_equal_one_pass_of_four_times_the_batch(momentum=0.9):
    opt = hvd.DistributedOptimizer(keras.optimizers.SGD(0.1, momentum=momentum),
                                   backward_passes_per_step=4,
                                   average_aggregated_gradients=True)
    accumulated = fit(opt, BATCH)
    whole = fit(hvd.DistributedOptimizer(keras.optimizers.SGD(0.1, momentum=momentum)),
                4 * BATCH)
    assert_weights_close(accumulated, whole)
    assert int(opt.iterations.numpy()) == 32 // BATCH      # every pass counts, as Horovod's


def test_without_averaging_the_accumulated_sum_is_applied():
    summed = fit(hvd.DistributedOptimizer(keras.optimizers.SGD(0.025),
                                          backward_passes_per_step=4), BATCH)
    averaged = fit(hvd.DistributedOptimizer(keras.optimizers.SGD(0.1),
                                            backward_passes_per_step=4,
                                            average_aggregated_gradients=True), BATCH)
    assert_weights_close(summed, averaged)


def test_accumulation_reduces_once_per_step_and_matches_the_global_batch():
    """One process on every rank's rows (the global batch) is the reference."""
    x, y = data(16)
    everyone_x = np.concatenate(hvd.allgather_object(x))
    everyone_y = np.concatenate(hvd.allgather_object(y))
    reference = model()
    reference.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
    # each rank's 4 passes of BATCH rows are one step of all SIZE * 16 rows
    reference.fit(everyone_x, everyone_y, batch_size=SIZE * 16, epochs=1, shuffle=False,
                  verbose=0)
    opt = hvd.DistributedOptimizer(keras.optimizers.SGD(0.1), backward_passes_per_step=4,
                                   average_aggregated_gradients=True)
    accumulated = fit(opt, BATCH, rows=16)
    assert_weights_close(accumulated, reference)


@pytest.mark.parametrize("mode", ["eager", "function"])
def test_accumulation_in_a_custom_loop(mode):
    x, y = data(16)
    m = model()
    opt = hvd.DistributedOptimizer(keras.optimizers.SGD(0.1), backward_passes_per_step=2,
                                   average_aggregated_gradients=True)

    def step(xb, yb):
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(tf.square(m(xb, training=True) - yb))
        grads = tape.gradient(loss, m.trainable_variables)
        opt.apply_gradients(zip(grads, m.trainable_variables))
    if mode == "function":
        step = tf.function(step)
    for start in range(0, 16, BATCH):
        step(x[start:start + BATCH], y[start:start + BATCH])
    whole = fit(hvd.DistributedOptimizer(keras.optimizers.SGD(0.1)), 2 * BATCH, rows=16)
    assert_weights_close(m, whole)


def tape_gradients(mode, **options):
    x, y = data(8, seed=3)
    m = model()

    def run():
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(tf.square(m(x, training=True) - y))
        tape = hvd.DistributedGradientTape(tape, **options)
        return tape.gradient(loss, m.trainable_variables)
    if mode == "function":
        run = tf.function(run)
    return m, [g.numpy() for g in run()]


@pytest.mark.parametrize("mode", ["eager", "function"])
@pytest.mark.parametrize("options", [{"groups": 2}, {"groups": 3}, {"groups": 0},
                                     {"num_groups": 1}])
def test_groups_give_the_same_gradients_as_no_groups(mode, options):
    plain = tape_gradients(mode)[1]
    if "num_groups" in options:
        with pytest.warns(DeprecationWarning, match="num_groups"):
            _, grads = tape_gradients(mode, **options)
    else:
        _, grads = tape_gradients(mode, **options)
    for a, b in zip(grads, plain):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)


def test_groups_of_this_models_variables_reduce_like_no_groups():
    x, y = data(8, seed=3)
    m = model()
    with tf.GradientTape() as tape:
        loss = tf.reduce_mean(tf.square(m(x, training=True) - y))
    variables = m.trainable_variables
    grouped = hvd.DistributedGradientTape(tape, groups=[[variables[0], variables[3]],
                                                        [variables[1]]])
    grads = [g.numpy() for g in grouped.gradient(loss, variables)]
    for a, b in zip(grads, tape_gradients("eager")[1]):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("scale", [True, False])
@pytest.mark.parametrize("mode", ["eager", "function"])
def test_partial_tape_leaves_local_layers_unreduced(scale, mode):
    x, y = data(8, seed=5)
    m = model()

    def run(distributed: bool):
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(tf.square(m(x, training=True) - y))
        if distributed:
            tape = hvd.PartialDistributedGradientTape(tape, local_layers=m.layers[-1],
                                                      scale_local_gradients=scale)
        return tape.gradient(loss, m.trainable_variables)
    partial = tf.function(run) if mode == "function" else run
    got = [g.numpy() for g in partial(True)]
    local = [g.numpy() for g in run(False)]
    everyone = hvd.allgather_object(local)
    for i, g in enumerate(got):
        if i >= 2:   # the last Dense layer: local
            np.testing.assert_allclose(g, local[i] / (SIZE if scale else 1), rtol=1e-5,
                                       atol=1e-7)
        else:
            np.testing.assert_allclose(g, np.mean([e[i] for e in everyone], axis=0),
                                       rtol=1e-5, atol=1e-7)


def test_partial_optimizer_keeps_local_layers_apart():
    opt = hvd.PartialDistributedOptimizer(keras.optimizers.SGD(0.1),
                                          local_layers=[])
    assert type(opt).__name__ == "SGD"
    m = model()
    opt = hvd.PartialDistributedOptimizer(keras.optimizers.SGD(0.1), local_layers=m.layers[-1])
    m.compile(optimizer=opt, loss="mse")
    x, y = data(16, seed=7)
    m.fit(x, y, batch_size=BATCH, epochs=1, shuffle=False, verbose=0)
    everyone = hvd.allgather_object(weights(m))
    for i in range(2):   # the first layer: reduced, the same everywhere
        for other in everyone:
            np.testing.assert_allclose(other[i], everyone[0][i], rtol=1e-6)
    if SIZE > 1:         # the last layer trained on each rank's own rows
        assert not np.allclose(everyone[0][2], everyone[1][2])


def test_bad_arguments_are_named():
    sgd = keras.optimizers.SGD(0.1)
    with pytest.raises(TypeError, match="backward_passes"):
        hvd.DistributedOptimizer(sgd, backward_passes=2)
    with pytest.raises(ValueError, match="backward_passes_per_step must be > 0"):
        hvd.DistributedOptimizer(sgd, backward_passes_per_step=0)
    with pytest.raises(ValueError, match="groups should be"):
        hvd.DistributedOptimizer(sgd, groups="all")
    with pytest.raises(ValueError, match="groups should be"):
        hvd.DistributedGradientTape(tf.GradientTape(), groups=-1)
    with pytest.raises(ValueError, match="local layers must be"):
        hvd.PartialDistributedGradientTape(tf.GradientTape(), local_layers=["dense"])
    with pytest.raises(TypeError, match="compresion"):
        hvd.DistributedGradientTape(tf.GradientTape(), compresion=None)


def test_sparse_gradients_need_sparse_as_dense_to_accumulate():
    keras.utils.set_random_seed(2)
    embed = keras.layers.Embedding(10, 3)
    embed.build((None,))
    opt = hvd.DistributedOptimizer(keras.optimizers.SGD(0.1), backward_passes_per_step=2)
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(embed(tf.constant([1, 2])))
    grads = tape.gradient(loss, embed.trainable_variables)
    assert isinstance(grads[0], tf.IndexedSlices)
    with pytest.raises(ValueError, match="IndexedSlices are not supported"):
        opt.apply_gradients(zip(grads, embed.trainable_variables))
