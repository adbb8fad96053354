"""The few places where Keras 2 (TensorFlow 2.15) and Keras 3 differ for distrain."""
from __future__ import annotations

__all__ = ["is_keras3", "optimizer_variables"]


def is_keras3() -> bool:
    """True when ``import keras`` gives Keras 3."""
    import keras
    return int(keras.__version__.split(".")[0]) >= 3


def optimizer_variables(optimizer) -> list:
    """The optimizer's state variables (a property in Keras 3, a method in older Keras)."""
    found = optimizer.variables
    return list(found() if callable(found) else found)
