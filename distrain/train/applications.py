"""Keras Applications as built-in models: ``resnet50``, ``mobilenet_v2``,
``efficientnet_b0``, and ``keras.applications.NAME`` for any other.

Each is built untrained (``weights=None``) with one logit per class (``classes``, no
softmax) for samples of the dataset's shape; a float32 ``logits`` layer follows the
application's classifier so that ``--mixed-precision`` computes the loss in float32. The
shape is the application's to accept: a size it refuses (ResNet50, MobileNetV2 and
EfficientNetB0 need at least 32x32) is a :class:`~distrain.errors.UsageError` naming the
limit and ``--image-size``.

Example:
    >>> model = build_application("resnet50", (32, 32, 3), num_classes=10)
    >>> application_name("keras.applications.DenseNet121")
    'DenseNet121'
"""
from __future__ import annotations

import difflib
import re
import types

from distrain.errors import UsageError

__all__ = ["APPLICATIONS", "APPLICATION_PREFIX", "DEFAULT_IMAGE_SIZE", "application_name",
           "build_application"]

APPLICATIONS = {"resnet50": "ResNet50", "mobilenet_v2": "MobileNetV2",
                "efficientnet_b0": "EfficientNetB0"}
APPLICATION_PREFIX = "keras.applications."
DEFAULT_IMAGE_SIZE = 224  # the ImageNet size the applications are designed for
_NAME = re.compile(r"[A-Za-z_]\w*")
_LISTING = ("python -c \"import keras; print([n for n in dir(keras.applications) "
            "if n[0].isupper()])\"")


def application_name(spec: str) -> str | None:
    """The ``keras.applications`` function ``spec`` names, or None for another model.

    Args:
        spec: a ``--model`` value.

    Returns:
        ``ResNet50`` for ``resnet50`` or ``keras.applications.ResNet50``, and so on; None
        when ``spec`` is not an application.
    """
    if spec in APPLICATIONS:
        return APPLICATIONS[spec]
    if spec.startswith(APPLICATION_PREFIX) and _NAME.fullmatch(spec[len(APPLICATION_PREFIX):]):
        return spec[len(APPLICATION_PREFIX):]
    return None


def _models(keras) -> list[str]:
    return sorted(n for n in dir(keras.applications) if n[:1].isupper())


def _factory(keras, spec: str, name: str):
    factory = getattr(keras.applications, name, None)
    if callable(factory) and not isinstance(factory, types.ModuleType):
        return factory
    close = difflib.get_close_matches(name, _models(keras), n=3)
    hint = f" (did you mean {' or '.join(close)}?)" if close else ""
    raise UsageError(f"unknown model {spec!r}: keras.applications has no model {name!r}"
                     f"{hint}; list the names with {_LISTING}")


def _refusal(spec: str, input_shape: tuple[int, ...], exc: Exception) -> UsageError:
    """The one line for an application that refuses ``input_shape``."""
    reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0].rstrip(".")
    least = re.search(r"at least (\d+)x(\d+)", reason)
    if least:
        advice = (f"give --image-size {least.group(1)} or more (it sets the size of synthetic "
                  f"images and resizes images: and tfrecord: data)")
    else:
        advice = "give samples of a shape it accepts (--image-size for images)"
    return UsageError(f"model {spec} cannot take samples of shape {tuple(input_shape)}: "
                      f"{reason}; {advice}")


def build_application(spec: str, input_shape: tuple[int, ...], num_classes: int):
    """Builds the application ``spec`` names, untrained, for ``input_shape`` samples.

    Args:
        spec: ``resnet50``, ``mobilenet_v2``, ``efficientnet_b0`` or
            ``keras.applications.NAME``.
        input_shape: one sample's shape, ``(height, width, channels)``.
        num_classes: the number of logits.

    Returns:
        A built ``keras.Model`` whose last layer, ``logits``, is float32.

    Raises:
        UsageError: no such application, or one that refuses ``input_shape``.
    """
    import keras
    name = application_name(spec)
    if name is None:
        raise UsageError(f"unknown model {spec!r}: give keras.applications.NAME")
    factory = _factory(keras, spec, name)
    try:
        application = factory(weights=None, classes=num_classes,
                              input_shape=tuple(input_shape), classifier_activation=None)
    except (ValueError, TypeError) as exc:
        raise _refusal(spec, input_shape, exc) from None
    logits = keras.layers.Activation("linear", dtype="float32",
                                     name="logits")(application.outputs[0])
    inputs = application.inputs
    return keras.Model(inputs[0] if len(inputs) == 1 else inputs, logits,
                       name=application.name)
