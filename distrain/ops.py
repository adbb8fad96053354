"""Reduction operations and gradient compression, with Horovod's names.

Example:
    >>> import distrain as hvd
    >>> hvd.Average, hvd.Compression.fp16.wire_dtype
    (<ReduceOp.AVERAGE: 'average'>, 'float16')
"""
from __future__ import annotations

import enum

__all__ = ["ReduceOp", "Average", "Sum", "Min", "Max", "Product", "Adasum", "Compressor", "Compression",
           "COMPRESSIONS", "parse_op", "compressor_of"]

COMPRESSIONS = ("none", "fp16", "bf16")  # the names Compression.by_name takes


class ReduceOp(enum.Enum):
    """How values from every rank combine in an allreduce."""

    AVERAGE = "average"
    SUM = "sum"
    MIN = "min"
    MAX = "max"
    PRODUCT = "product"
    ADASUM = "adasum"


Average = ReduceOp.AVERAGE
Sum = ReduceOp.SUM
Min = ReduceOp.MIN
Max = ReduceOp.MAX
Product = ReduceOp.PRODUCT
Adasum = ReduceOp.ADASUM


def parse_op(op) -> ReduceOp:
    """Accepts a :class:`ReduceOp` or its name (``"average"``, ``"Sum"``, ...).

    Raises:
        ValueError: ``op`` names no reduction distrain supports.
    """
    if isinstance(op, ReduceOp):
        return op
    if isinstance(op, str):
        try:
            return ReduceOp(op.lower())
        except ValueError:
            pass
    names = ", ".join(o.name.capitalize() for o in ReduceOp)
    raise ValueError(f"unknown reduction op {op!r}; use one of {names}")


class Compressor:
    """Casts floating-point tensors to a narrower type on the wire and back after reduction.

    distrain applies compression while packing the fusion buffer, so it costs no extra pass;
    :meth:`compress` and :meth:`decompress` are there for code written against Horovod's
    ``hvd.Compression`` objects.

    Attributes:
        name: ``"none"``, ``"fp16"`` or ``"bf16"``.
        wire_dtype: the numpy/TensorFlow dtype name sent over MPI, or None for no cast.
    """

    def __init__(self, name: str, wire_dtype: str | None):
        self.name = name
        self.wire_dtype = wire_dtype

    def __repr__(self) -> str:
        return f"Compression.{self.name}"

    def compress(self, tensor):
        """Casts a TensorFlow tensor to the wire type.

        Returns:
            ``(compressed, ctx)`` where ``ctx`` is the original dtype for :meth:`decompress`.
        """
        import tensorflow as tf
        if self.wire_dtype is None or not tensor.dtype.is_floating:
            return tensor, None
        return tf.cast(tensor, self.wire_dtype), tensor.dtype

    def decompress(self, tensor, ctx):
        """Casts a tensor back to the dtype :meth:`compress` recorded."""
        import tensorflow as tf
        return tensor if ctx is None else tf.cast(tensor, ctx)


class Compression:
    """The available compressors: ``none``, ``fp16`` and ``bf16``."""

    none = Compressor("none", None)
    fp16 = Compressor("fp16", "float16")
    bf16 = Compressor("bf16", "bfloat16")

    @classmethod
    def by_name(cls, name: str) -> Compressor:
        """Looks a compressor up by name (``none``, ``fp16``, ``bf16``).

        Raises:
            ValueError: the name is unknown.
        """
        key = str(name).lower()
        if key not in COMPRESSIONS:
            raise ValueError(f"unknown compression {name!r}; use "
                             f"{', '.join(COMPRESSIONS[:-1])} or {COMPRESSIONS[-1]}")
        return getattr(cls, key)


def compressor_of(compression) -> Compressor:
    """The compressor for a :class:`Compressor`, its name, or None (no compression).

    Raises:
        ValueError: an unknown name.
    """
    if compression is None:
        return Compression.none
    if isinstance(compression, Compressor):
        return compression
    return Compression.by_name(compression)
