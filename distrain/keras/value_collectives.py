"""The Keras face's collectives on values, as ``horovod.tensorflow.keras`` 0.28.1 defines them.

They take tensor-compatible values (numpy arrays, Python lists and scalars, tensors and
variables), make a constant of each as Horovod does (``tf.constant(value, name=name)``) and
run the TensorFlow face's collective on it. What they return is Horovod's: eagerly (and inside
``tf.function``) the result tensor; in a TF1 graph the result evaluated in a session (Horovod's
``_eval``), as numpy.

Their signatures are Horovod's Keras ones, which differ from the TensorFlow face's: no process
set; ``allreduce``'s ``average`` is Horovod's deprecated flag (a ``DeprecationWarning``;
``op`` supersedes it, and giving both is a ValueError); ``reducescatter`` averages by default.

Example:
    >>> import distrain.keras as hvd
    >>> hvd.allreduce([1.0, 2.0], op=hvd.Sum)     # doctest: +SKIP
    <tf.Tensor: shape=(2,), dtype=float32, numpy=array([2., 4.], dtype=float32)>  # 2 ranks
"""
from __future__ import annotations

from distrain import collectives
from distrain.keras_compat import is_variable, run_in_session
from distrain.ops import Average, Compression

__all__ = ["allreduce", "allgather", "broadcast", "reducescatter"]


def allreduce(value, name=None, average=None, prescale_factor=1.0, postscale_factor=1.0,
              op=None, compression=Compression.none):
    """Reduces a tensor-compatible value across all ranks.

    Args:
        value: the value; the same shape on every rank.
        name: the constant's name, also shown in error and stall messages.
        average: deprecated (Horovod 0.19); True means ``op=Average``, False ``op=Sum``.
        prescale_factor: multiplies the value before the reduction.
        postscale_factor: multiplies the result.
        op: ``Average`` when None, ``Sum``, ``Min``, ``Max``, ``Product`` or ``Adasum``.
        compression: the wire compression.

    Returns:
        The reduced tensor (numpy in a TF1 graph).

    Raises:
        ValueError: both ``op`` and ``average`` are given; unknown op.
    """
    return _evaluated(collectives.allreduce(
        _constant(value, name), average=average, compression=compression, op=op,
        prescale_factor=prescale_factor, postscale_factor=postscale_factor, name=name))


def allgather(value, name=None):
    """Concatenates every rank's value along the first dimension (which may differ).

    Args:
        value: the value; the same shape past the first dimension on every rank.
        name: the constant's name, also shown in error and stall messages.

    Returns:
        The gathered tensor (numpy in a TF1 graph).
    """
    return _evaluated(collectives.allgather(_constant(value, name), name=name))


def broadcast(value, root_rank, name=None):
    """Returns rank ``root_rank``'s value on every rank.

    Args:
        value: the value; the same shape and dtype on every rank.
        root_rank: the rank whose value is sent.
        name: the constant's name, also shown in error and stall messages.

    Returns:
        Root's value as a tensor (numpy in a TF1 graph).
    """
    return _evaluated(collectives.broadcast(_constant(value, name), root_rank, name=name))


def reducescatter(value, name=None, op=Average):
    """Reduces a value across ranks and gives each rank its rows of the result (the first
    ``n % size`` ranks one row more, as Horovod splits them).

    Args:
        value: the value, at least one dimension; the same shape on every rank.
        name: the constant's name, also shown in error and stall messages.
        op: ``Average`` (default) or ``Sum``.

    Returns:
        This rank's rows as a tensor (numpy in a TF1 graph).
    """
    return _evaluated(collectives.reducescatter(_constant(value, name), op=op, name=name))


def _constant(value, name):
    import tensorflow as tf
    if tf.is_tensor(value) or is_variable(value):
        return tf.convert_to_tensor(value)
    return tf.constant(value, name=name)


def _evaluated(result):
    """Horovod's ``_eval``: the result itself, except in a TF1 graph, where it is run."""
    import tensorflow as tf
    if tf.executing_eagerly() or tf.inside_function():
        return result
    return run_in_session(result)
