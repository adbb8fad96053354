"""distrain.keras on one rank (the local backend): Horovod's learning-rate callbacks checked
batch by batch against Horovod's formulas and against SGD done by hand, BestModelCheckpoint,
load_model, BroadcastGlobalVariablesCallback's arguments and the collectives on values.

Runs on Keras 3 and on Keras 2 (TensorFlow 2.15) alike."""
import os
import warnings

import numpy as np
import pytest

keras = pytest.importorskip("keras")
tf = pytest.importorskip("tensorflow")

import distrain.keras as hvd  # noqa: E402
from distrain import collectives  # noqa: E402
from distrain.keras import optimizer as distributed_optimizer  # noqa: E402
from distrain.keras_compat import is_keras3  # noqa: E402

STEPS, BATCH = 4, 8
RNG = np.random.default_rng(3)
X = RNG.standard_normal((STEPS * BATCH, 3)).astype(np.float32)
Y = (X @ np.array([[1.0], [-2.0], [0.5]], np.float32) + 0.1).astype(np.float32)


@pytest.fixture(autouse=True)
def one_rank():
    hvd.init("local")
    yield
    hvd.shutdown()


def linear_model(optimizer):
    """y = x w, w from zeros: its MSE gradient is 2/B x^T (x w - y), easy to follow by hand."""
    model = keras.Sequential([keras.Input((3,)),
                              keras.layers.Dense(1, use_bias=False, kernel_initializer="zeros")])
    model.compile(optimizer=optimizer, loss=keras.losses.MeanSquaredError())
    return model


class RateProbe(keras.callbacks.Callback):
    """The learning rate each batch runs with (it follows the schedule callbacks)."""

    def __init__(self):
        super().__init__()
        self.rates, self.momenta = [], []

    def on_train_batch_begin(self, batch, logs=None):
        self.rates.append(float(np.asarray(self.model.optimizer.learning_rate)))
        self.momenta.append(float(np.asarray(self.model.optimizer.momentum))
                            if hasattr(self.model.optimizer, "momentum") else None)


def fit(model, callbacks, epochs):
    probe = RateProbe()
    history = model.fit(X, Y, batch_size=BATCH, epochs=epochs, shuffle=False, verbose=0,
                        callbacks=list(callbacks) + [probe])
    return probe, history


def f32(value):
    return float(np.float32(value))


def test_staircase_schedule_sets_the_rate_at_each_epochs_first_batch():
    model = linear_model(keras.optimizers.SGD(0.3))
    schedule = hvd.callbacks.LearningRateScheduleCallback(0.1, 0.5, start_epoch=1, end_epoch=3)
    probe, history = fit(model, [schedule], epochs=4)
    # Horovod: initial_lr * multiplier ** (epoch - start_epoch) inside [start, end)
    want = [0.3] * STEPS + [0.1] * STEPS + [0.05] * STEPS + [0.05] * STEPS
    np.testing.assert_allclose(probe.rates, want, rtol=1e-6)
    np.testing.assert_allclose(history.history["lr"], [0.3, 0.1, 0.05, 0.05], rtol=1e-6)


def test_per_batch_schedule_reads_the_fractional_epoch():
    model = linear_model(keras.optimizers.SGD(0.3))
    schedule = hvd.callbacks.LearningRateScheduleCallback(
        0.2, lambda epoch: 1.0 / (1.0 + epoch), staircase=False)
    probe, _ = fit(model, [schedule], epochs=2)
    want = [0.2 / (1 + e + b / STEPS) for e in range(2) for b in range(STEPS)]
    np.testing.assert_allclose(probe.rates, want, rtol=1e-6)


@pytest.mark.parametrize("size", [1, 4])
def test_warmup_ramps_to_the_rate_with_horovods_multiplier(monkeypatch, size):
    monkeypatch.setattr(collectives, "size", lambda: size)
    model = linear_model(keras.optimizers.SGD(0.01))
    warmup = hvd.callbacks.LearningRateWarmupCallback(0.4, warmup_epochs=2)
    probe, history = fit(model, [warmup], epochs=3)
    ramp = [0.4 / size * ((e + b / STEPS + 1 / STEPS) * (size - 1) / 2 + 1)
            for e in range(2) for b in range(STEPS)]
    np.testing.assert_allclose(probe.rates, ramp + [0.4] * STEPS, rtol=1e-6)
    assert probe.rates[0] == pytest.approx(0.4 / size * (1 + (size - 1) / 8), rel=1e-6)
    assert history.history["lr"][-1] == pytest.approx(0.4)


def test_warmup_prints_when_it_ends_on_rank_0(capsys):
    warmup = hvd.callbacks.LearningRateWarmupCallback(0.4, warmup_epochs=1, verbose=1)
    fit(linear_model(keras.optimizers.SGD(0.01)), [warmup], epochs=2)
    assert "Epoch 1: finished gradual learning rate warmup to 0.4." in capsys.readouterr().out


def sgd_by_hand(rates, momentum, corrected, start_lr):
    """Keras' SGD (v = m v - lr g; w += v) over the batches, with Horovod's momentum
    correction: in a batch whose rate changes, the momentum is m * new / old."""
    w, v, old = np.zeros((3, 1)), np.zeros((3, 1)), start_lr
    for step, lr in enumerate(rates):
        x, y = X[step % STEPS * BATCH:][:BATCH], Y[step % STEPS * BATCH:][:BATCH]
        grad = 2.0 / BATCH * x.T @ (x @ w - y)
        m = momentum * lr / old if corrected else momentum
        v = m * v - lr * grad
        w, old = w + v, lr
    return w


@pytest.mark.parametrize("corrected", [True, False], ids=["corrected", "uncorrected"])
def test_momentum_correction_gives_horovods_update(corrected):
    model = linear_model(hvd.DistributedOptimizer(keras.optimizers.SGD(0.05, momentum=0.9)))
    schedule = hvd.callbacks.LearningRateScheduleCallback(
        0.05, lambda epoch: 1.0 / (1.0 + 2 * epoch), staircase=False,
        momentum_correction=corrected)
    probe, _ = fit(model, [schedule], epochs=2)
    want = sgd_by_hand(probe.rates, 0.9, corrected, f32(0.05))
    np.testing.assert_allclose(np.asarray(model.weights[0]), want, rtol=2e-4, atol=1e-6)
    other = sgd_by_hand(probe.rates, 0.9, not corrected, f32(0.05))
    assert not np.allclose(want, other, rtol=1e-3)          # the correction shows
    assert probe.momenta == [pytest.approx(0.9)] * len(probe.rates)   # the 0.9 it restores


@pytest.mark.skipif(is_keras3(), reason="legacy optimizers are Keras 2's")
def test_momentum_correction_of_a_legacy_optimizer_scales_the_momentum_for_one_batch():
    model = linear_model(keras.optimizers.legacy.SGD(0.05, momentum=0.9))
    schedule = hvd.callbacks.LearningRateScheduleCallback(0.05, 0.5, staircase=True)
    seen = []

    class During(keras.callbacks.Callback):
        def on_train_batch_begin(self, batch, logs=None):
            seen.append(float(np.asarray(self.model.optimizer.momentum)))

    probe, _ = fit(model, [schedule, During()], epochs=2)
    # epoch 1's first batch: the rate halves, the momentum is 0.9 * 0.5 for that batch only
    assert seen == pytest.approx([0.9] * STEPS + [0.45] + [0.9] * (STEPS - 1))
    want = sgd_by_hand(probe.rates, 0.9, True, f32(0.05))
    np.testing.assert_allclose(np.asarray(model.weights[0]), want, rtol=2e-4, atol=1e-6)


def test_a_learning_rate_schedule_is_refused_in_one_line():
    decay = keras.optimizers.schedules.ExponentialDecay(0.1, decay_steps=10, decay_rate=0.9)
    model = linear_model(keras.optimizers.SGD(decay))
    schedule = hvd.callbacks.LearningRateScheduleCallback(0.1, 0.5)
    with pytest.raises(ValueError, match="LearningRateSchedule.*learning_rate=0.01"):
        fit(model, [schedule], epochs=1)


def test_schedule_needs_initial_lr():
    with pytest.raises(ValueError, match="initial_lr"):
        hvd.callbacks.LearningRateScheduleCallback(None, 0.5)


class ScriptedLoss(keras.callbacks.Callback):
    """Replaces the epoch's ``val_loss`` by a scripted sequence, before the checkpoint runs."""

    def __init__(self, values):
        super().__init__()
        self.values = values

    def on_epoch_end(self, epoch, logs=None):
        logs["val_loss"] = self.values[epoch]


class FileWatch(keras.callbacks.Callback):
    """The checkpoint file's identity after each epoch (an atomic replace makes a new inode),
    and the model's weights then."""

    def __init__(self, path):
        super().__init__()
        self.path, self.identities, self.weights = path, [], []

    def on_epoch_end(self, epoch, logs=None):
        stat = os.stat(self.path)
        self.identities.append((stat.st_ino, stat.st_mtime_ns))
        self.weights.append([np.asarray(w).copy() for w in self.model.weights])


@pytest.mark.parametrize("weights_only", [False, True], ids=["model", "weights"])
def test_best_model_checkpoint_writes_only_improvements_atomically(tmp_path, weights_only):
    ending = (".weights.h5" if weights_only else ".keras") if is_keras3() else ".h5"
    path = str(tmp_path / f"best{ending}")
    checkpoint = hvd.callbacks.BestModelCheckpoint(save_weights_only=weights_only)
    assert checkpoint.filepath is None and checkpoint.save_best_only
    checkpoint.filepath = path                      # set later, as Horovod's estimator does
    watch = FileWatch(path)
    model = linear_model(keras.optimizers.SGD(0.01))
    fit(model, [ScriptedLoss([3.0, 1.0, 2.0, 0.5, 0.7]), checkpoint, watch], epochs=5)
    changed = [watch.identities[i] != watch.identities[i - 1] for i in range(1, 5)]
    assert changed == [True, False, True, False]     # epochs 1 and 3 improved; 2 and 4 not
    assert os.listdir(tmp_path) == [os.path.basename(path)]   # no temporary file left
    fresh = linear_model(keras.optimizers.SGD(0.01))
    if weights_only:
        fresh.load_weights(path)
    else:
        fresh = keras.models.load_model(path)
    for saved, best in zip(fresh.weights, watch.weights[3]):
        np.testing.assert_array_equal(np.asarray(saved), best)


def test_best_model_checkpoint_without_a_filepath_fails_before_training():
    model = linear_model(keras.optimizers.SGD(0.01))
    with pytest.raises(ValueError, match="set callback.filepath"):
        fit(model, [hvd.callbacks.BestModelCheckpoint(monitor="loss")], epochs=1)


def train_adam(epochs=2):
    keras.utils.set_random_seed(5)
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(4, activation="tanh"),
                              keras.layers.Dense(1)])
    model.compile(optimizer=hvd.DistributedOptimizer(keras.optimizers.Adam(0.01)),
                  loss=keras.losses.MeanSquaredError())
    model.fit(X, Y, batch_size=BATCH, epochs=epochs, shuffle=False, verbose=0)
    return model


def optimizer_state(model):
    from distrain.keras_compat import optimizer_variables
    return [np.asarray(v).copy() for v in optimizer_variables(model.optimizer)]


def test_load_model_restores_weights_state_and_the_distributed_optimizer(tmp_path):
    model = train_adam()
    path = str(tmp_path / ("model.keras" if is_keras3() else "model.h5"))
    model.save(path)                     # a distributed optimizer saves as the plain one
    loaded = hvd.load_model(path, compression=hvd.Compression.fp16)
    optimizer = loaded.optimizer
    assert type(optimizer).__name__ == "Adam" and isinstance(optimizer, keras.optimizers.Adam)
    assert type(optimizer) in distributed_optimizer._CLASSES.values()
    assert optimizer._distrain_reduction.compression is hvd.Compression.fp16
    for a, b in zip(loaded.weights, model.weights):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    for a, b in zip(optimizer_state(loaded), optimizer_state(model)):
        np.testing.assert_array_equal(a, b)
    # the restored state carries training on exactly as the original does (no fp16 here)
    loaded = hvd.load_model(path)
    assert loaded.optimizer._distrain_reduction.compression is hvd.Compression.none
    for m in (model, loaded):
        m.fit(X, Y, batch_size=BATCH, epochs=1, shuffle=False, verbose=0)
    for a, b in zip(loaded.weights, model.weights):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-7)


def test_a_plain_keras_load_gives_the_plain_optimizer_with_its_state(tmp_path):
    model = train_adam()
    path = str(tmp_path / ("model.keras" if is_keras3() else "model.h5"))
    model.save(path)
    loaded = keras.models.load_model(path)
    assert type(loaded.optimizer) is keras.optimizers.Adam
    for a, b in zip(optimizer_state(loaded), optimizer_state(model)):
        np.testing.assert_array_equal(a, b)


def test_load_model_takes_custom_optimizers(tmp_path):
    class HalfSGD(keras.optimizers.SGD):
        """An optimizer of the user's own, unknown to Keras."""

    model = linear_model(hvd.DistributedOptimizer(HalfSGD(0.01, momentum=0.5)))
    model.fit(X, Y, batch_size=BATCH, epochs=1, shuffle=False, verbose=0)
    path = str(tmp_path / ("model.keras" if is_keras3() else "model.h5"))
    model.save(path)
    loaded = hvd.load_model(path, custom_optimizers=[HalfSGD])
    assert isinstance(loaded.optimizer, HalfSGD)
    assert type(loaded.optimizer) in distributed_optimizer._CLASSES.values()


@keras.saving.register_keras_serializable(package="distrain_tests")
class RegisteredSGD(keras.optimizers.SGD):
    """An optimizer of the user's own, registered with Keras."""


def test_a_registered_optimizer_saves_under_its_registered_name(tmp_path):
    model = linear_model(hvd.DistributedOptimizer(RegisteredSGD(0.01)))
    model.fit(X, Y, batch_size=BATCH, epochs=1, shuffle=False, verbose=0)
    path = str(tmp_path / ("model.keras" if is_keras3() else "model.h5"))
    model.save(path)
    assert type(keras.models.load_model(path).optimizer) is RegisteredSGD   # plain Keras
    loaded = hvd.load_model(path)
    assert isinstance(loaded.optimizer, RegisteredSGD)
    assert type(loaded.optimizer) in distributed_optimizer._CLASSES.values()


def test_broadcast_callback_trains_a_model_built_by_its_first_batch():
    """A Sequential given no input shape has no weights at train begin (Horovod's own
    tensorflow2_keras_mnist.py builds its model so): the broadcast waits for the first
    batch, and the rank's weights are the root's after it."""
    model = keras.Sequential([keras.layers.Dense(4), keras.layers.Dense(2)])
    model.compile(optimizer=hvd.DistributedOptimizer(keras.optimizers.SGD(0.1)), loss="mse")
    assert not model.built
    calls = []
    callback = hvd.callbacks.BroadcastGlobalVariablesCallback(0)
    original = callback._broadcast
    callback._broadcast = lambda: calls.append(len(model.weights)) or original()
    x, y = np.ones((8, 3), np.float32), np.zeros((8, 2), np.float32)
    model.fit(x, y, batch_size=4, epochs=1, verbose=0, callbacks=[callback])
    assert calls == [4]   # once, after the first batch, with both layers' kernels and biases


def test_broadcast_callback_takes_one_variable_or_many_and_refuses_others():
    model = linear_model(keras.optimizers.SGD(0.01))
    kernel = model.weights[0]
    one = hvd.callbacks.BroadcastGlobalVariablesCallback(0, local_variables=kernel)
    many = hvd.callbacks.BroadcastGlobalVariablesCallback(0, local_variables=[kernel])
    assert one._local_keys == many._local_keys != set()
    with pytest.raises(ValueError, match="local_variables must be a variable"):
        hvd.callbacks.BroadcastGlobalVariablesCallback(0, local_variables=[np.ones(2)])
    with pytest.raises(ValueError, match="local_variables must be a variable"):
        hvd.callbacks.BroadcastGlobalVariablesCallback(0, local_variables=3)
    fit(model, [one], epochs=1)       # one rank: the broadcast leaves everything as it is


def test_values_become_tensors_as_horovods_keras_collectives_return():
    summed = hvd.allreduce([1.0, 2.0], op=hvd.Sum)
    assert isinstance(summed, tf.Tensor) and summed.dtype == tf.float32
    np.testing.assert_allclose(summed.numpy(), [1.0, 2.0])
    assert hvd.allreduce(3, op=hvd.Sum, prescale_factor=2.0).numpy() == 6
    gathered = hvd.allgather(np.arange(4).reshape(2, 2), name="rows")
    assert isinstance(gathered, tf.Tensor) and gathered.shape == (2, 2)
    assert hvd.broadcast(7.5, root_rank=0).numpy() == 7.5
    assert hvd.reducescatter(np.ones((3, 2))).shape == (3, 2)
    with pytest.warns(DeprecationWarning, match="average"):
        hvd.allreduce([1.0], average=False)
    with pytest.raises(ValueError, match="supersedes average"):
        hvd.allreduce([1.0], average=True, op=hvd.Sum)


def test_in_a_tf1_graph_the_values_are_run_in_a_session():
    with tf.Graph().as_default():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            result = hvd.allreduce([2.0, 4.0], name="graph_value", op=hvd.Average)
    assert isinstance(result, np.ndarray)
    np.testing.assert_allclose(result, [2.0, 4.0])


def test_the_keras_face_has_every_name_of_horovods():
    names = """init shutdown is_initialized start_timeline stop_timeline size local_size
    cross_size rank local_rank cross_rank mpi_threads_supported mpi_enabled mpi_built
    gloo_enabled gloo_built ProcessSet global_process_set add_process_set remove_process_set
    nccl_built ddl_built ccl_built cuda_built rocm_built sycl_built Average Sum Compression callbacks
    elastic DistributedOptimizer broadcast_global_variables allreduce allgather broadcast
    reducescatter load_model""".split()
    assert [n for n in names if not hasattr(hvd, n)] == []
    callbacks = """BroadcastGlobalVariablesCallback MetricAverageCallback
    LearningRateScheduleCallback LearningRateWarmupCallback BestModelCheckpoint""".split()
    assert [n for n in callbacks if not hasattr(hvd.callbacks, n)] == []


def test_horovods_keras_import_path_names_the_same_module():
    """``import horovod.tensorflow.keras as hvd`` becomes ``distrain.tensorflow.keras``: every
    name is the Keras face's own object."""
    import distrain.tensorflow.keras as tf_keras_face
    assert sorted(tf_keras_face.__all__) == sorted(hvd.__all__)
    assert [n for n in hvd.__all__ if getattr(tf_keras_face, n) is not getattr(hvd, n)] == []
