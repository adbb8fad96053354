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
