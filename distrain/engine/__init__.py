"""How bytes move: the fused collective engine, below every backend that has one.

- :mod:`distrain.engine.fusion`: the fusion plan, a pure function of shapes and dtypes that
  cuts a tensor list into messages, identical on every rank;
- :mod:`distrain.engine.fused`: :class:`~distrain.engine.fused.FusedEngine`, which packs,
  reduces or broadcasts in chunks, unpacks and scales over a ``Transport``;
- :mod:`distrain.engine.buffers`: aligned host buffers and the wire dtypes;
- :mod:`distrain.engine.halfprec`: float16 conversions and sums at memory speed (through
  TensorFlow's kernels when the caller has loaded it) for fp16 compression;
- :mod:`distrain.engine.tensors`: the numpy ⇄ TensorFlow bridge (no copies where none is
  needed; one graph op per collective inside ``tf.function``).

The engine imports nothing of distrain but :mod:`distrain.ops`, and neither MPI nor
TensorFlow: a transport moves the bytes, and the bridge uses TensorFlow only when the
caller has loaded it.
"""

__all__: list[str] = []
