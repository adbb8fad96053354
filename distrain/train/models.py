"""The built-in models, and loading a user's ``package.module:factory``.

Built here: ``mlp``, ``cnn`` and ``resnet``, small models for tests and examples. Keras
Applications (``resnet50``, ``mobilenet_v2``, ``efficientnet_b0``,
``keras.applications.NAME``) are built by :mod:`distrain.train.applications`, the encoder
classifier ``transformer`` by :mod:`distrain.train.transformer`.

A factory is called as ``factory(input_shape=..., num_classes=...)`` and must return a
``keras.Model`` producing one logit per class.
"""
from __future__ import annotations

from distrain.errors import UsageError
from distrain.train.applications import application_name, build_application
from distrain.train.transformer import TransformerShape, build_transformer
from distrain.train.user_code import call_factory

__all__ = ["build_model"]


def _mlp(keras, input_shape, num_classes):
    inputs = keras.Input(input_shape)
    x = keras.layers.Flatten()(inputs)
    x = keras.layers.Dense(128, activation="relu", name="dense_1")(x)
    x = keras.layers.Dense(64, activation="relu", name="dense_2")(x)
    outputs = keras.layers.Dense(num_classes, dtype="float32", name="logits")(x)
    return keras.Model(inputs, outputs, name="mlp")


def _cnn(keras, input_shape, num_classes):
    inputs = keras.Input(input_shape)
    x = keras.layers.Conv2D(16, 3, padding="same", activation="relu", name="conv_1")(inputs)
    x = keras.layers.MaxPooling2D(2, name="pool_1")(x)
    x = keras.layers.Conv2D(32, 3, padding="same", activation="relu", name="conv_2")(x)
    x = keras.layers.MaxPooling2D(2, name="pool_2")(x)
    x = keras.layers.Flatten()(x)
    x = keras.layers.Dense(64, activation="relu", name="dense")(x)
    outputs = keras.layers.Dense(num_classes, dtype="float32", name="logits")(x)
    return keras.Model(inputs, outputs, name="cnn")


def _resnet(keras, input_shape, num_classes):
    """A small ResNet: a stem, three stages of two basic blocks (16, 32, 64 filters)."""
    layers = keras.layers

    def block(x, filters, stride, name):
        shortcut = x
        y = layers.Conv2D(filters, 3, stride, padding="same", use_bias=False,
                          name=f"{name}_conv1")(x)
        y = layers.BatchNormalization(name=f"{name}_bn1")(y)
        y = layers.ReLU(name=f"{name}_relu1")(y)
        y = layers.Conv2D(filters, 3, padding="same", use_bias=False, name=f"{name}_conv2")(y)
        y = layers.BatchNormalization(name=f"{name}_bn2")(y)
        if stride != 1 or shortcut.shape[-1] != filters:
            shortcut = layers.Conv2D(filters, 1, stride, use_bias=False,
                                     name=f"{name}_proj")(shortcut)
            shortcut = layers.BatchNormalization(name=f"{name}_proj_bn")(shortcut)
        return layers.ReLU(name=f"{name}_out")(layers.Add(name=f"{name}_add")([y, shortcut]))

    inputs = keras.Input(input_shape)
    x = layers.Conv2D(16, 3, padding="same", use_bias=False, name="stem_conv")(inputs)
    x = layers.BatchNormalization(name="stem_bn")(x)
    x = layers.ReLU(name="stem_relu")(x)
    for stage, filters in enumerate((16, 32, 64)):
        for index in range(2):
            stride = 2 if stage > 0 and index == 0 else 1
            x = block(x, filters, stride, f"stage{stage + 1}_block{index + 1}")
    x = layers.GlobalAveragePooling2D(name="pool")(x)
    outputs = layers.Dense(num_classes, dtype="float32", name="logits")(x)
    return keras.Model(inputs, outputs, name="resnet")


_BUILTIN = {"mlp": _mlp, "cnn": _cnn, "resnet": _resnet}


def build_model(spec: str, input_shape: tuple[int, ...], num_classes: int,
                transformer: TransformerShape | None = None):
    """Builds a model by name or factory path.

    Args:
        spec: ``mlp``, ``cnn``, ``resnet``, ``resnet50``, ``mobilenet_v2``,
            ``efficientnet_b0``, ``keras.applications.NAME``, ``transformer`` or
            ``package.module:factory``.
        input_shape: one sample's shape.
        num_classes: the number of logits.
        transformer: the transformer's size (None: the defaults).

    Returns:
        A built ``keras.Model``.

    Raises:
        UsageError: an application that does not exist or refuses ``input_shape``;
            samples the transformer cannot read; a factory that cannot be imported,
            raises, or returns no Keras model.
    """
    import keras
    if spec in _BUILTIN:
        return _BUILTIN[spec](keras, tuple(input_shape), num_classes)
    if spec == "transformer":
        return build_transformer(transformer or TransformerShape(), tuple(input_shape),
                                 num_classes)
    if application_name(spec) is not None:
        return build_application(spec, tuple(input_shape), num_classes)
    model = call_factory(spec, "model", input_shape=tuple(input_shape),
                         num_classes=num_classes)
    if not isinstance(model, keras.Model):
        raise UsageError(f"model factory {spec} returned {type(model).__name__}, not a "
                         f"keras.Model")
    return model
