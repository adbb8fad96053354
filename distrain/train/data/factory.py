"""``--dataset package.module:factory``: the user's own ``tf.data`` pipeline or arrays.

The factory is called as ``factory(rank=..., size=..., seed=..., batch_size=...)`` (the
per-rank batch size) and returns one of:

- a ``tf.data.Dataset`` of single ``(x, y)`` samples (``y`` an integer class), the same
  on every rank in the same order: distrain shuffles it with the shared seed and keeps
  every ``size``-th sample per rank, so N ranks reproduce one rank at the same global batch;
- :class:`RankShard` wrapping such a dataset that already holds only this rank's part:
  distrain shuffles it and batches it as it is;
- a pair of arrays ``(x_train, y_train)``: read like ``npz:`` arrays.

Either way distrain batches, prefetches, and agrees the steps per epoch across ranks.
"""
from __future__ import annotations

import dataclasses

import numpy as np

from distrain.errors import UsageError
from distrain.train.data.arrays import ArraySource, Dataset
from distrain.train.data.stream import (StreamSource, epoch_seed, op_message, skip_records,
                                        window_shuffle)
from distrain.train.user_code import call_factory

__all__ = ["RankShard", "FactorySource", "open_factory"]


@dataclasses.dataclass(frozen=True)
class RankShard:
    """A dataset that holds only this rank's samples (the factory sharded it itself).

    Example:
        >>> def factory(rank, size, seed, batch_size):
        ...     return RankShard(tf.data.TFRecordDataset(my_files[rank::size]).map(parse))
    """

    dataset: object


class FactorySource(StreamSource):
    """A factory's ``tf.data.Dataset`` of ``(x, y)`` samples.

    Args:
        spec: ``package.module:factory``, for messages.
        dataset: the dataset.
        sharded: True when it already holds only this rank's part.
        rank: this rank.
        size: the number of ranks.

    Raises:
        UsageError: elements that are not ``(x, y)`` with a fixed shape and integer labels.
    """

    def __init__(self, spec: str, dataset, sharded: bool, rank: int, size: int):
        super().__init__(rank, size)
        import tensorflow as tf
        self.name, self.dataset, self.sharded = spec, dataset, sharded
        element = dataset.element_spec
        if not (isinstance(element, tuple) and len(element) == 2):
            raise UsageError(f"dataset factory {spec} yields {element}, not (x, y) pairs")
        x, y = element
        if not (y.dtype.is_integer and y.shape.rank == 0):
            raise UsageError(f"dataset factory {spec} yields labels {y}; they must be single "
                             f"integer classes (unbatched samples)")
        if not x.shape.is_fully_defined():
            raise UsageError(f"dataset factory {spec} yields x of shape {x.shape}; samples "
                             f"need one fixed shape (unbatched, e.g. resized)")
        self.input_shape = tuple(x.shape)
        self._tf = tf

    def _mine(self, records):
        return records if self.sharded else records.shard(self.size, self.rank)

    def scan(self) -> tuple[int, int]:
        """Reads this rank's part once: ``(samples, largest label)``.

        Raises:
            UsageError: the pipeline fails.
        """
        tf = self._tf
        count, largest = 0, -1
        try:
            for _, y in self._mine(self.dataset).batch(1024):
                count += int(y.shape[0])
                largest = max(largest, int(tf.reduce_max(y)))
        except tf.errors.OpError as exc:
            raise UsageError(f"dataset factory {self.name}'s pipeline failed: "
                             f"{op_message(exc)}") from None
        return count, largest

    def epoch_records(self, epoch: int, seed: int, skip: int = 0):
        """This rank's samples of one epoch, shuffled with the shared seed, after the first
        ``skip`` of all ranks' (:func:`~distrain.train.data.stream.skip_records`)."""
        records = window_shuffle(self.dataset, epoch_seed(seed, epoch))
        return skip_records(records, skip, self.size, self.rank, shared=not self.sharded)


def open_factory(spec: str, seed: int, batch_size: int, rank: int, size: int):
    """Imports and calls the factory ``spec`` names.

    Args:
        spec: ``package.module:factory``.
        seed: the base seed.
        batch_size: samples per rank per step.
        rank: this rank.
        size: the number of ranks.

    Returns:
        A :class:`FactorySource` or an :class:`ArraySource`.

    Raises:
        UsageError: the factory cannot be imported, raises, or returns the wrong type.
    """
    import tensorflow as tf
    made = call_factory(spec, "dataset", rank=rank, size=size, seed=seed,
                        batch_size=batch_size)
    sharded = isinstance(made, RankShard)
    dataset = made.dataset if sharded else made
    if isinstance(dataset, tf.data.Dataset):
        return FactorySource(spec, dataset, sharded, rank, size)
    if isinstance(made, tuple) and len(made) == 2:
        x, y = (np.asarray(a) for a in made)
        if len(x) == 0 or len(x) != len(y) or y.ndim != 1 or \
                not np.issubdtype(y.dtype, np.integer):
            raise UsageError(f"dataset factory {spec} returned arrays of shapes {x.shape} and "
                             f"{y.shape}; give (x, y) with as many samples as integer labels")
        x = x[..., None] if x.ndim == 3 else x
        return ArraySource(Dataset(spec, x.astype(np.float32), y.astype(np.int64), None, None,
                                   int(y.max()) + 1))
    raise UsageError(f"dataset factory {spec} returned {type(made).__name__}, not a "
                     f"tf.data.Dataset of (x, y), a RankShard or a pair of arrays")
