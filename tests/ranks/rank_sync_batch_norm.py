"""SyncBatchNormalization against keras.layers.BatchNormalization on one process given the
global batch (every rank's batch, in rank order): training outputs, moving statistics,
gradients, a tape loop, model.fit with DistributedOptimizer, saving (see
tests/test_mpi_suite.py). Every rank builds the global batch from the same seed."""
import numpy as np
import pytest
import tensorflow as tf
import keras

import distrain.keras as hvd
from distrain.keras_compat import is_keras3

hvd.init()
RANK, SIZE = hvd.rank(), hvd.size()
MODES = ["eager", "function"]
TOLERANCE = {"rtol": 2e-4, "atol": 2e-5}
MOMENTUM = 0.8
LAYOUTS = {  # rows of each rank's batch
    "even": [2] * SIZE,
    "uneven": [r + 1 for r in range(SIZE)],
    "rank0_empty": [0] + [r + 1 for r in range(1, SIZE)] if SIZE > 1 else [3],
}


def sample(count, shape, seed):
    """``count`` rows, channel means away from 0."""
    return np.random.default_rng(seed).normal(2.0, 1.5, (count, *shape)).astype(np.float32)


def global_batch(rows, shape, seed):
    """The global batch of ``rows`` (a count for each rank) and this rank's rows of it."""
    everyone = sample(sum(rows), shape, seed)
    return everyone, mine(everyone, rows)


def mine(everyone, rows):
    """This rank's rows of a global array whose rank r has ``rows[r]`` rows."""
    start = sum(rows[:RANK])
    return everyone[start:start + rows[RANK]]


def compiled(fn, mode):
    """``fn`` inside tf.function for mode "function". Without autograph: it would transpile
    distrain's own gradient-averaging code, seconds on the first trace, for nothing here."""
    return tf.function(fn, autograph=False) if mode == "function" else fn


def run(mode, fn, *args):
    return compiled(fn, mode)(*args)


def layer_pair(shape, axis=-1, seed=5):
    """A SyncBatchNormalization and a BatchNormalization with the same non-trivial weights."""
    sync = hvd.SyncBatchNormalization(axis=axis, momentum=MOMENTUM)
    # Keras 2's fused kernel (its default for 4-D inputs) moves the moving variance toward
    # the unbiased batch variance; SyncBatchNormalization, as Horovod's, is never fused.
    unfused = {} if is_keras3() else {"fused": False}
    reference = keras.layers.BatchNormalization(axis=axis, momentum=MOMENTUM, **unfused)
    channels = (None, *shape)[axis]   # axis counts the rows
    rng = np.random.default_rng(seed)
    weights = [rng.uniform(0.5, 1.5, channels), rng.normal(0.0, 1.0, channels),
               rng.normal(0.0, 0.5, channels), rng.uniform(0.5, 2.0, channels)]
    for layer in (sync, reference):
        layer.build((None, *shape))
        layer.set_weights([w.astype(np.float32) for w in weights])
    return sync, reference


def assert_same_weights(a, b, exact=False):
    check = np.testing.assert_array_equal if exact else (
        lambda x, y: np.testing.assert_allclose(x, y, **TOLERANCE))
    for x, y in zip(a.get_weights(), b.get_weights(), strict=True):
        check(x, y)


CASES = {  # input shape without rows, normalized axis
    "dense": ((4,), -1),
    "channels_last": ((3, 3, 2), -1),
    "channels_first": ((2, 3, 3), 1),
}


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("layout,case", [("even", "dense"), ("uneven", "dense"),
                                         ("rank0_empty", "dense"),
                                         ("uneven", "channels_last"),
                                         ("uneven", "channels_first")])
def test_training_output_and_moving_statistics_are_those_of_the_global_batch(
        layout, case, mode):
    shape, axis = CASES[case]
    rows = LAYOUTS[layout]
    sync, reference = layer_pair(shape, axis)
    step = compiled(lambda v: sync(v, training=True), mode)
    for seed in (1, 2):   # two steps: the moving statistics average both
        everyone, local = global_batch(rows, shape, seed)
        out = step(tf.constant(local))
        want = reference(everyone, training=True)
        np.testing.assert_allclose(out, mine(np.asarray(want), rows), **TOLERANCE)
        assert_same_weights(sync, reference)


def test_a_mask_weighs_the_rows_of_every_rank():
    rows = LAYOUTS["uneven"]
    everyone, local = global_batch(rows, (3, 2), seed=3)
    masks = np.random.default_rng(4).uniform(size=everyone.shape[:2]) < 0.7
    masks[0, 0] = True
    sync, reference = layer_pair((3, 2))
    out = sync(local, training=True, mask=tf.constant(mine(masks, rows)))
    want = reference(everyone, training=True, mask=tf.constant(masks))
    np.testing.assert_allclose(out, mine(np.asarray(want), rows), **TOLERANCE)
    assert_same_weights(sync, reference)


@pytest.mark.parametrize("mode", MODES)
def test_a_mean_far_above_the_spread_keeps_the_variance(mode):
    """Channels at 100 +- 0.1: float32 E[x^2] - E[x]^2 would lose much of the variance (its
    rounding error is near 100^2 * 6e-8 = 6e-4, against a variance of 1e-2);
    BatchNormalization's two-pass variance keeps it, and so must the global statistics.
    Both round x - mean at 100 to float32 (8e-6, 8e-5 of the spread): hence atol 2e-3,
    against errors near 3e-2 with float32 statistics."""
    rows = LAYOUTS["uneven"]
    shape = (4, 4, 3)
    everyone = np.random.default_rng(11).normal(100.0, 0.1, (sum(rows), *shape)).astype(
        np.float32)
    sync, reference = layer_pair(shape)
    out = compiled(lambda v: sync(v, training=True), mode)(tf.constant(mine(everyone, rows)))
    want = reference(everyone, training=True)
    np.testing.assert_allclose(out, mine(np.asarray(want), rows), rtol=2e-4, atol=2e-3)
    assert_same_weights(sync, reference)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("layout", ["even", "uneven"])
def test_gradients_are_those_of_one_process_on_the_global_batch(layout, mode):
    """Each rank's loss is its share of the global mean, so the ranks' average is the
    global mean (what DistributedGradientTape's averaged gradients then differentiate)."""
    rows = LAYOUTS[layout]
    total = sum(rows)
    everyone, local = global_batch(rows, (3,), seed=6)
    upstream = np.random.default_rng(7).normal(size=everyone.shape).astype(np.float32)
    sync, reference = layer_pair((3,))

    def gradients(x):
        with tf.GradientTape(persistent=True) as tape:
            tape.watch(x)
            loss = tf.reduce_sum(sync(x, training=True) * mine(upstream, rows)) * (SIZE / total)
        averaged = hvd.DistributedGradientTape(tape).gradient(loss, [sync.gamma, sync.beta])
        return [tape.gradient(loss, x)] + averaged

    d_input, d_gamma, d_beta = run(mode, gradients, tf.constant(local))
    x = tf.constant(everyone)
    with tf.GradientTape() as tape:
        tape.watch(x)
        loss = tf.reduce_sum(reference(x, training=True) * upstream) / total
    want_input, want_gamma, want_beta = tape.gradient(
        loss, [x, reference.gamma, reference.beta])
    np.testing.assert_allclose(d_gamma, want_gamma, **TOLERANCE)
    np.testing.assert_allclose(d_beta, want_beta, **TOLERANCE)
    # This rank's tape differentiates, through the shared statistics, every rank's loss:
    # their sum, which is SIZE times the global mean.
    np.testing.assert_allclose(d_input, SIZE * mine(np.asarray(want_input), rows),
                               **TOLERANCE)


def model_pair(seed=8):
    """Dense -> SyncBatchNormalization -> Dense and the same model with BatchNormalization,
    with the same weights on every rank."""
    def make(norm):
        return keras.Sequential([keras.Input((5,)), keras.layers.Dense(4), norm,
                                 keras.layers.Dense(2)])
    sync = make(hvd.SyncBatchNormalization(momentum=MOMENTUM))
    reference = make(keras.layers.BatchNormalization(momentum=MOMENTUM))
    rng = np.random.default_rng(seed)
    weights = [rng.uniform(0.5, 1.5, w.shape).astype(np.float32) for w in sync.get_weights()]
    sync.set_weights(weights)
    reference.set_weights(weights)
    return sync, reference


def data(count, seed=9):
    """``count`` rows of inputs and targets for :func:`model_pair`."""
    targets = np.random.default_rng(seed + 1).normal(size=(count, 2)).astype(np.float32)
    return sample(count, (5,), seed), targets


@pytest.mark.parametrize("mode", MODES)
def test_a_tape_loop_with_uneven_batches_trains_as_one_process(mode):
    rows = LAYOUTS["uneven"]
    total = sum(rows)
    x, y = data(total)
    sync, reference = model_pair()

    def train(model, optimizer, inputs, targets, scale, tape_class):
        def step():
            with tf.GradientTape() as tape:
                loss = tf.reduce_sum(tf.square(model(inputs, training=True) - targets)) * scale
            grads = tape_class(tape).gradient(loss, model.trainable_variables)
            optimizer.apply_gradients(zip(grads, model.trainable_variables))
        step = compiled(step, mode)
        for _ in range(2):
            step()

    train(sync, keras.optimizers.SGD(0.05), tf.constant(mine(x, rows)),
          tf.constant(mine(y, rows)), SIZE / total, hvd.DistributedGradientTape)
    train(reference, keras.optimizers.SGD(0.05), tf.constant(x), tf.constant(y), 1 / total,
          lambda tape: tape)
    assert_same_weights(sync, reference)


def test_model_fit_with_the_distributed_optimizer_trains_as_one_process():
    steps, rows_each = 2, 3
    x, y = data(steps * rows_each * SIZE)

    def my_rows(values):  # the k-th global batch is every rank's k-th batch, in rank order
        return values.reshape(steps, SIZE, rows_each, -1)[:, RANK].reshape(
            steps * rows_each, -1)

    sync, reference = model_pair()
    sync.compile(optimizer=hvd.DistributedOptimizer(keras.optimizers.SGD(0.05)), loss="mse",
                 jit_compile=False)
    reference.compile(optimizer=keras.optimizers.SGD(0.05), loss="mse", jit_compile=False)
    sync.fit(my_rows(x), my_rows(y), batch_size=rows_each, epochs=2, shuffle=False,
             verbose=0)
    reference.fit(x, y, batch_size=rows_each * SIZE, epochs=2, shuffle=False, verbose=0)
    assert_same_weights(sync, reference)


def test_inference_uses_the_moving_statistics_as_batch_norm():
    _, local = global_batch(LAYOUTS["uneven"], (4,), seed=10)
    sync, reference = layer_pair((4,))
    np.testing.assert_array_equal(sync(local, training=False), reference(local, training=False))
    assert_same_weights(sync, reference, exact=True)


@pytest.mark.skipif(SIZE != 1, reason="one rank only")
@pytest.mark.parametrize("mode", MODES)
def test_on_one_rank_it_is_exactly_batch_norm(mode):
    x = tf.constant(sample(5, (3, 3, 2), seed=11))
    sync, reference = layer_pair((3, 3, 2))

    def outputs(layer):
        def forward(v):
            with tf.GradientTape() as tape:
                tape.watch(v)
                out = layer(v, training=True)
                loss = tf.reduce_sum(out * out)
            return [out] + tape.gradient(loss, [v, layer.gamma, layer.beta])
        return run(mode, forward, x)

    for got, want in zip(outputs(sync), outputs(reference), strict=True):
        np.testing.assert_array_equal(got, want)
    assert_same_weights(sync, reference, exact=True)


def test_a_joined_rank_adds_no_rows():
    rows = LAYOUTS["uneven"][:-1] + [0]   # the last rank's rows: none, it joins
    everyone, local = global_batch(rows, (4,), seed=12)
    sync, reference = layer_pair((4,))
    if RANK < SIZE - 1:
        out = sync(local, training=True)
        want = reference(everyone, training=True)
        np.testing.assert_allclose(out, mine(np.asarray(want), rows), **TOLERANCE)
        assert_same_weights(sync, reference)
    hvd.join()


@pytest.mark.parametrize("fused", [True, None])
def test_fused_is_refused_as_horovod_refuses_it(fused):
    with pytest.raises(ValueError, match="does not support fused=True"):
        hvd.SyncBatchNormalization(fused=fused)


def test_the_config_round_trips():
    layer = hvd.SyncBatchNormalization(axis=1, momentum=0.5, epsilon=0.01, center=False,
                                       fused=False, name="norm")
    again = hvd.SyncBatchNormalization.from_config(layer.get_config())
    assert type(again) is hvd.SyncBatchNormalization
    assert again.get_config() == layer.get_config()
    assert (again.axis, again.momentum, again.center, again.name) == (
        layer.axis, 0.5, False, "norm")


def test_unnamed_layers_get_unique_names():
    first, second = hvd.SyncBatchNormalization(), hvd.SyncBatchNormalization()
    assert first.name.startswith("sync_batch_normalization") and first.name != second.name


FORMATS = [".keras"] + ([] if is_keras3() else [".h5", ""])   # "": Keras 2's SavedModel


@pytest.mark.parametrize("custom_objects", [False, True], ids=["registered", "custom_objects"])
@pytest.mark.parametrize("suffix", FORMATS, ids=lambda s: s or "savedmodel")
def test_a_saved_model_loads_with_the_layer(tmp_path, suffix, custom_objects):
    model, _ = model_pair()
    x, _ = data(4)
    model(x, training=True)   # moving statistics away from their initial values
    path = str(tmp_path / f"model{suffix}")
    model.save(path)
    loaded = keras.models.load_model(path, custom_objects={
        "SyncBatchNormalization": hvd.SyncBatchNormalization} if custom_objects else None)
    assert type(loaded.layers[1]) is hvd.SyncBatchNormalization
    assert loaded.layers[1].get_config() == model.layers[1].get_config()
    assert_same_weights(loaded, model, exact=True)
    np.testing.assert_allclose(loaded(x, training=False), model(x, training=False))
