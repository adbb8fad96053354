"""The few places where Keras 2 (TensorFlow 2.15) and Keras 3 differ for distrain."""
from __future__ import annotations

import numpy as np

__all__ = ["is_keras3", "optimizer_variables", "learning_rate", "set_learning_rate",
           "momentum_variable", "momentum_buffers", "variable_keys", "is_variable",
           "checkpoint_path_problem", "run_in_session", "share_registered_name"]


def is_keras3() -> bool:
    """True when ``import keras`` gives Keras 3."""
    import keras
    return int(keras.__version__.split(".")[0]) >= 3


def optimizer_variables(optimizer) -> list:
    """The optimizer's state variables (a property in Keras 3, a method in older Keras)."""
    found = optimizer.variables
    return list(found() if callable(found) else found)


def learning_rate(optimizer) -> float:
    """The optimizer's current learning rate (a variable in Keras 3 and in Keras 2's optimizers,
    old and legacy alike)."""
    return float(np.asarray(optimizer.learning_rate))


def set_learning_rate(optimizer, value: float) -> None:
    """Sets the optimizer's learning rate in place; a compiled train step reads it at run time
    (Keras assigns its learning-rate variable).

    Raises:
        ValueError: the optimizer's learning rate is a ``LearningRateSchedule``.
    """
    try:
        optimizer.learning_rate = float(value)
    except TypeError:   # Keras 2 and 3 refuse to set a schedule's rate
        raise ValueError(f"{type(optimizer).__name__}'s learning rate is a "
                         f"LearningRateSchedule, which a learning-rate callback cannot set; "
                         f"create the optimizer with a number (learning_rate=0.01) or drop "
                         f"the callback") from None


def momentum_variable(optimizer):
    """The optimizer's momentum when it is a variable a compiled step reads at run time (Keras
    2's legacy optimizers), else None."""
    value = getattr(optimizer, "momentum", None)
    return value if hasattr(value, "assign") else None


def momentum_buffers(optimizer) -> list:
    """The velocity variables of an optimizer whose momentum is a Python number (Keras 3, and
    Keras 2's optimizers since TensorFlow 2.11): ``SGD.momentums``, ``RMSprop._momentums``.

    A compiled train step reads such a momentum once, when it is traced, so it cannot be
    changed for one step; multiplying the velocity instead is the same update.

    Returns:
        The variables; empty when the momentum is 0, is a variable, or the optimizer is not
        built yet.
    """
    momentum = getattr(optimizer, "momentum", None)
    if isinstance(momentum, bool) or not isinstance(momentum, (int, float)) or not momentum:
        return []
    for attribute in ("momentums", "_momentums"):
        found = getattr(optimizer, attribute, None)
        if found:
            return [v for v in found if v is not None]
    return []


def is_variable(value) -> bool:
    """True for a tf.Variable or a Keras 3 variable."""
    import keras
    import tensorflow as tf
    return isinstance(value, tf.Variable) or (
        hasattr(keras, "Variable") and isinstance(value, keras.Variable))


def variable_keys(variable) -> set:
    """The ids a model's variable is known by: its own, and in Keras 3 the tf.Variable it
    holds (a user may pass either)."""
    import tensorflow as tf
    keys = {id(variable)}
    if not isinstance(variable, tf.Variable):
        held = getattr(variable, "value", None)
        if isinstance(held, tf.Variable):
            keys.add(id(held))
    return keys


def checkpoint_path_problem(filepath: str, weights_only: bool) -> str | None:
    """What is wrong with a ModelCheckpoint path for this Keras, or None.

    Keras 3 saves a model to ``.keras`` (or legacy ``.h5``) files and weights to
    ``.weights.h5``; Keras 2 also writes SavedModel directories and TF checkpoints.
    """
    if not is_keras3():
        return None
    endings = (".weights.h5",) if weights_only else (".keras", ".h5")
    if filepath.endswith(endings):
        return None
    return (f"filepath {filepath!r} must end in {' or '.join(endings)} (Keras 3's "
            f"{'weights' if weights_only else 'model'} files)")


def run_in_session(fetches):
    """Runs TF1 graph tensors: in the default session, Keras 2's own session (which
    initializes Keras' variables), or a new session on the default graph (Keras 3 has none).

    Returns:
        The fetched values, as numpy.
    """
    import tensorflow as tf
    session = tf.compat.v1.get_default_session()
    if session is None and not is_keras3():
        session = tf.compat.v1.keras.backend.get_session()
    if session is not None:
        return session.run(fetches)
    with tf.compat.v1.Session() as session:
        return session.run(fetches)


def share_registered_name(base, cls) -> None:
    """Makes Keras save ``cls`` under the name ``base`` is registered by
    (``@keras.saving.register_keras_serializable``), so that a file written with ``cls``
    names a class a plain load finds. An unregistered ``base`` needs nothing: Keras saves a
    class by its ``__name__``, which ``cls`` shares.

    The registry of names is Keras' own mapping (``GLOBAL_CUSTOM_NAMES`` in Keras 3,
    ``_GLOBAL_CUSTOM_NAMES`` in Keras 2), read by ``keras.saving.get_registered_name``.
    """
    import keras
    from keras.src.saving import object_registration
    name = keras.saving.get_registered_name(base)
    if name == base.__name__:
        return
    names = getattr(object_registration, "GLOBAL_CUSTOM_NAMES" if is_keras3()
                    else "_GLOBAL_CUSTOM_NAMES")
    names[cls] = name
