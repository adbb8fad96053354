"""Model factories for tests of ``--model package.module:factory``."""
import keras
import tensorflow as tf

import distrain


class _Drift(keras.layers.Layer):
    """Adds a rank-dependent amount to its own trainable kernel on every call: a bug that
    --check-consistency must catch."""

    def build(self, input_shape):
        self.kernel = self.add_weight(shape=(input_shape[-1],), initializer="ones")

    def call(self, x):
        self.kernel.assign_add(tf.fill(tf.shape(self.kernel), 1e-3 * distrain.rank()))
        return x * self.kernel


def diverging(input_shape, num_classes):
    inputs = keras.Input(input_shape)
    x = _Drift()(keras.layers.Flatten()(inputs))
    return keras.Model(inputs, keras.layers.Dense(num_classes)(x))


def raising(input_shape, num_classes):
    raise ValueError("no such width")


def not_a_model(input_shape, num_classes):
    return "a string"


class _FailAtCall(keras.layers.Layer):
    """Fails the step once it has been called ``limit`` times (a crash to restart from)."""

    def __init__(self, limit, **kwargs):
        super().__init__(**kwargs)
        self.limit = limit

    def build(self, input_shape):
        self.calls = self.add_weight(shape=(), initializer="zeros", trainable=False)

    def call(self, x):
        self.calls.assign_add(1.0)
        tf.debugging.assert_less(self.calls, float(self.limit), message="injected crash")
        return x


def crash_once(input_shape, num_classes):
    """An MLP that crashes at its 15th training call, unless distrain-run relaunched it."""
    import os
    inputs = keras.Input(input_shape)
    x = keras.layers.Flatten()(inputs)
    first_run = os.environ.get("DISTRAIN_RESTART_COUNT", "0") == "0"
    x = _FailAtCall(15 if first_run else 10 ** 9)(x)
    x = keras.layers.Dense(16, activation="relu")(x)
    return keras.Model(inputs, keras.layers.Dense(num_classes)(x))



class _Pause(keras.layers.Layer):
    """Sleeps 40 ms on every call (a numpy_function, so inside tf.function too)."""

    def call(self, x):
        import time

        def pause(value):
            time.sleep(0.04)
            return value

        return tf.ensure_shape(tf.numpy_function(pause, [x], x.dtype, stateful=True), x.shape)


def slow(input_shape, num_classes):
    """An MLP whose every forward pass also sleeps 40 ms: a run long enough to act on (kill a
    host, add one) while it trains, whatever the machine's speed."""
    inputs = keras.Input(input_shape)
    x = _Pause()(keras.layers.Flatten()(inputs))
    x = keras.layers.Dense(16, activation="relu")(x)
    return keras.Model(inputs, keras.layers.Dense(num_classes)(x))


class _FailOnHost(keras.layers.Layer):
    """Fails the step on the host named by ``DISTRAIN_TEST_BAD_HOST`` (a flapping host)."""

    def call(self, x):
        import os
        import socket

        def check(value):
            bad = os.environ.get("DISTRAIN_TEST_BAD_HOST")
            if socket.gethostname() == bad:
                raise RuntimeError(f"injected failure on {bad}")
            return value

        return tf.ensure_shape(tf.numpy_function(check, [x], x.dtype, stateful=True), x.shape)


def slow_failing_on_host(input_shape, num_classes):
    """:func:`slow`, failing at its first step on the host ``DISTRAIN_TEST_BAD_HOST``."""
    inputs = keras.Input(input_shape)
    x = _Pause()(_FailOnHost()(keras.layers.Flatten()(inputs)))
    x = keras.layers.Dense(16, activation="relu")(x)
    return keras.Model(inputs, keras.layers.Dense(num_classes)(x))
