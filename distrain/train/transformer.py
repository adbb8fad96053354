"""``--model transformer``: a BERT-like encoder that classifies sequences of token ids.

Token and position embeddings are summed, then ``layers`` pre-norm encoder blocks (multi-head
self-attention and a feed-forward network of ``4 * width``, each with a residual connection
and layer normalisation), a final layer normalisation, mean pooling over the sequence, and a
float32 ``Dense`` of one logit per class. No dropout: every rank computes what one rank would
on the same samples, so N ranks reproduce one rank at the same global batch.

Each block is one Keras layer (``encoder_block1`` ... ``encoder_blockN``) and the embedding
another, so the cost model times the embedding, each block and the head as sub-models.

The defaults are BERT-small's shape (4 layers, width 512, 8 heads) at BERT's vocabulary
(30522 WordPiece ids) and a sequence of 128: 28.3 M parameters at 10 classes (113 MB
of float32 gradients).

Example:
    >>> shape = TransformerShape(layers=2, width=64, heads=4, sequence_length=32,
    ...                          vocab_size=1000)
    >>> model = build_transformer(shape, (32,), num_classes=10)
"""
from __future__ import annotations

import dataclasses
import functools

from distrain.errors import UsageError

__all__ = ["TransformerShape", "build_transformer"]


@dataclasses.dataclass(frozen=True)
class TransformerShape:
    """The encoder's size (``--transformer-*``, ``--sequence-length``, ``--vocab-size``).

    Attributes:
        layers: encoder blocks.
        width: the model width (embedding and attention size); ``4 * width`` in the
            feed-forward network.
        heads: attention heads; ``width`` must divide into them.
        sequence_length: tokens per sample of the synthetic data (a dataset of token ids
            brings its own length).
        vocab_size: token ids are ``0 .. vocab_size - 1``.

    Raises:
        UsageError: a value that is not a positive integer, or a width the heads do not
            divide.
    """

    layers: int = 4
    width: int = 512
    heads: int = 8
    sequence_length: int = 128
    vocab_size: int = 30522

    def __post_init__(self):
        for flag, value in {"transformer-layers": self.layers,
                            "transformer-width": self.width,
                            "transformer-heads": self.heads,
                            "sequence-length": self.sequence_length,
                            "vocab-size": self.vocab_size}.items():
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise UsageError(f"--{flag} must be a positive integer, got {value!r}")
        if self.width % self.heads:
            raise UsageError(f"--transformer-width {self.width} does not split over "
                             f"--transformer-heads {self.heads}; give a width that is a "
                             f"multiple of the heads")
        if self.vocab_size < 2:
            raise UsageError(f"--vocab-size must be at least 2, got {self.vocab_size}")


@functools.lru_cache(maxsize=None)
def _layer_classes(keras):
    """The embedding and encoder-block layer classes, made once per Keras module (Keras 2
    and Keras 3 alike)."""
    layers = keras.layers

    class TokenAndPositionEmbedding(layers.Layer):
        """Token embedding plus a learned position embedding."""

        def __init__(self, vocab_size, length, width, **kwargs):
            super().__init__(**kwargs)
            self.vocab_size, self.length, self.width = vocab_size, length, width
            self.tokens = layers.Embedding(vocab_size, width, name="tokens")
            self.positions = layers.Embedding(length, width, name="positions")

        def call(self, ids):
            import tensorflow as tf
            ids = tf.cast(ids, tf.int32)
            where = tf.range(self.length)
            return self.tokens(ids) + self.positions(where)[None]

        def get_config(self):
            return {**super().get_config(), "vocab_size": self.vocab_size,
                    "length": self.length, "width": self.width}

    class EncoderBlock(layers.Layer):
        """Pre-norm self-attention and feed-forward, each with a residual connection."""

        def __init__(self, width, heads, **kwargs):
            super().__init__(**kwargs)
            self.width, self.heads = width, heads
            self.norm1 = layers.LayerNormalization(epsilon=1e-6, name="norm1")
            self.attention = layers.MultiHeadAttention(heads, width // heads,
                                                       name="attention")
            self.norm2 = layers.LayerNormalization(epsilon=1e-6, name="norm2")
            self.expand = layers.Dense(4 * width, activation="gelu", name="ffn_expand")
            self.project = layers.Dense(width, name="ffn_project")

        def call(self, x):
            y = self.norm1(x)
            x = x + self.attention(y, y)
            return x + self.project(self.expand(self.norm2(x)))

        def get_config(self):
            return {**super().get_config(), "width": self.width, "heads": self.heads}

    return TokenAndPositionEmbedding, EncoderBlock


def build_transformer(shape: TransformerShape, input_shape: tuple[int, ...],
                      num_classes: int):
    """Builds the encoder classifier for samples of ``input_shape`` token ids.

    Args:
        shape: the encoder's size.
        input_shape: one sample's shape, ``(sequence length,)``.
        num_classes: the number of logits.

    Returns:
        A built ``keras.Model`` named ``transformer``.

    Raises:
        UsageError: samples that are not 1-D sequences of token ids.
    """
    import keras
    if len(input_shape) != 1:
        raise UsageError(f"--model transformer reads 1-D sequences of token ids, but the "
                         f"dataset's samples have shape {tuple(input_shape)}; use --dataset "
                         f"synthetic or a dataset factory of token-id sequences")
    embedding_class, block_class = _layer_classes(keras)
    length = int(input_shape[0])
    inputs = keras.Input((length,), dtype="int32", name="token_ids")
    x = embedding_class(shape.vocab_size, length, shape.width, name="embedding")(inputs)
    for index in range(shape.layers):
        x = block_class(shape.width, shape.heads, name=f"encoder_block{index + 1}")(x)
    x = keras.layers.LayerNormalization(epsilon=1e-6, name="head_norm")(x)
    x = keras.layers.GlobalAveragePooling1D(name="head_pool")(x)
    outputs = keras.layers.Dense(num_classes, dtype="float32", name="logits")(x)
    return keras.Model(inputs, outputs, name="transformer")
