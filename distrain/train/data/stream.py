"""Sources read through ``tf.data``: a shuffle all ranks agree on, and equal steps per rank.

Each rank builds its own pipeline for every epoch: its records in an order drawn from the
shared seed and the epoch, parsed by a parallel ``map``, batched with the remainder dropped,
cut to the agreed number of steps, and prefetched. The shuffle is stateless (a fixed
permutation inside consecutive windows of records) so it does not depend on TensorFlow's
global seed, which differs per rank.

Steps per epoch: before training every rank counts its own shard (:meth:`StreamSource.scan`);
the counts are gathered with one collective and every rank runs ``min(count) // batch``
steps, so no rank runs out of batches while the others wait in an allreduce. A rank whose
shard cannot fill one batch is an error on every rank.
"""
from __future__ import annotations

import re

import numpy as np

from distrain.errors import UsageError

__all__ = ["StreamSource", "SHUFFLE_WINDOW", "epoch_seed", "window_shuffle", "skip_records",
           "decode_image", "op_message"]

SHUFFLE_WINDOW = 2048


def op_message(exc) -> str:
    """A TensorFlow op error's message on one line, without the node and op names."""
    text = re.sub(r"\{\{[^}]*\}\}\s*", "", exc.message.splitlines()[0])
    return re.sub(r"\s*\[(Op|\[)?.*$", "", text).strip() or type(exc).__name__


def epoch_seed(seed: int, epoch: int) -> int:
    """A seed every rank derives alike from the base seed and the epoch."""
    return int(np.random.default_rng((seed, epoch)).integers(2 ** 31 - 1))


def window_shuffle(dataset, seed: int, window: int = SHUFFLE_WINDOW):
    """Permutes each window of ``window`` consecutive elements of ``dataset`` by a stateless
    draw from ``seed``, the same on every rank.

    Args:
        dataset: a ``tf.data.Dataset``.
        seed: the epoch's shared seed.
        window: elements per window.

    Returns:
        The shuffled dataset.
    """
    import tensorflow as tf

    def permute(index, block):
        count = tf.shape(tf.nest.flatten(block)[0])[0]
        keys = tf.random.stateless_uniform([count], seed=tf.stack([tf.constant(seed, tf.int64),
                                                                   index]))
        order = tf.argsort(keys)
        return tf.data.Dataset.from_tensor_slices(
            tf.nest.map_structure(lambda t: tf.gather(t, order), block))

    return dataset.batch(window).enumerate().flat_map(permute)


def skip_records(records, skip: int, size: int, rank: int, shared: bool):
    """One rank's records after the first ``skip`` samples of an epoch.

    Args:
        records: the epoch's records in their shuffled order: all ranks' (``shared``), or
            this rank's own.
        skip: samples the ranks consumed together (a resume's ``epoch_samples``).
        size: the number of ranks now.
        rank: this rank.
        shared: every rank sees the same records and keeps every ``size``-th.

    Returns:
        For a shared order, the rest of it cut anew over ``size`` ranks: exact at any size
        (the samples consumed are its first ``skip``). For a rank's own records, its first
        ``skip // size`` dropped: exact on the number of ranks that consumed them.
    """
    if shared:
        return records.skip(skip).shard(size, rank)
    return records.skip(skip // size)


def decode_image(contents, channels: int, size: tuple[int, int]):
    """An encoded PNG/JPEG/GIF/BMP image as float32 in [0, 1], resized to ``size``.

    Args:
        contents: the file's bytes (a string tensor).
        channels: 1 (grey) or 3 (RGB).
        size: ``(height, width)``.

    Returns:
        A ``(height, width, channels)`` tensor.
    """
    import tensorflow as tf
    image = tf.io.decode_image(contents, channels=channels, expand_animations=False)
    image = tf.cast(image, tf.float32) / 255.0
    image = tf.image.resize(image, size)
    image.set_shape(tuple(size) + (channels,))
    return image


class StreamSource:
    """A ``tf.data`` source; subclasses give ``name``, ``input_shape``, ``scan`` and
    ``epoch_records``.

    Args:
        rank: this rank.
        size: the number of ranks.
    """

    name = "stream"
    input_shape: tuple[int, ...] = ()

    def __init__(self, rank: int, size: int):
        self.rank, self.size = rank, size
        self.num_classes = 0
        self._summary = None

    def scan(self) -> tuple[int, int]:
        """Reads this rank's shard once: ``(samples, largest label)``.

        Raises:
            UsageError: a record that cannot be read or does not match the spec.
        """
        raise NotImplementedError

    def epoch_records(self, epoch: int, seed: int, skip: int = 0):
        """This rank's ``(x, y)`` samples of one epoch, shuffled, as a ``tf.data.Dataset``,
        after the first ``skip`` samples of the epoch (all ranks' together)."""
        raise NotImplementedError

    def summary(self) -> tuple[int, int]:
        """This rank's ``(samples, largest label)``, shared with the others by the caller."""
        if self._summary is None:
            self._summary = self.scan()
        return self._summary

    def settle(self, summaries, batch_size: int, size: int, limit: int | None) -> int:
        """Agrees the class count and the steps per epoch from every rank's summary.

        Args:
            summaries: every rank's :meth:`summary`, in rank order.
            batch_size: samples per rank per step.
            size: the number of ranks.
            limit: ``--steps-per-epoch``, or None.

        Returns:
            ``min(samples) // batch_size``, capped at ``limit``.

        Raises:
            UsageError: some rank's shard cannot fill one batch.
        """
        counts = [int(c) for c, _ in summaries]
        self.num_classes = max(int(m) for _, m in summaries) + 1
        short = [r for r, c in enumerate(counts) if c < batch_size]
        if short:
            which = ", ".join(f"rank {r} has {counts[r]}" for r in short)
            raise UsageError(f"{self.name}: {which} sample(s), fewer than one batch of "
                             f"{batch_size} per rank; lower --batch-size, add data or use "
                             f"fewer ranks")
        steps = min(counts) // batch_size
        return min(steps, limit) if limit else steps

    def batches(self, epoch: int, seed: int, batch_size: int, rank: int, size: int,
                steps: int, start: int = 0, offset: int = 0):
        """This rank's ``(x, y)`` batches of one epoch: exactly ``steps - start`` of them.

        ``offset``: the samples the ranks consumed before a resume (:func:`skip_records`).

        Returns:
            An iterator of tensor pairs.
        """
        import tensorflow as tf
        dataset = (self.epoch_records(epoch, seed, skip=offset)
                   .batch(batch_size, drop_remainder=True).take(steps).skip(start)
                   .prefetch(tf.data.AUTOTUNE))
        return iter(dataset)

    def eval_shard(self, rank: int, size: int):
        """No test set for streamed sources."""
        return None

    def sample(self, batch_size: int):
        """A few of epoch 0's batches as arrays, for the cost model's data term."""
        xs, ys = [], []
        for x, y in self.epoch_records(0, 0).batch(batch_size).take(4):
            xs.append(np.asarray(x))
            ys.append(np.asarray(y))
        return np.concatenate(xs), np.concatenate(ys)
