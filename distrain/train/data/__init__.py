"""Training data: where samples come from and which rank reads which.

Sources (``--dataset``):

- ``synthetic``, ``digits``, ``npz:PATH``: arrays in memory (:mod:`.arrays`; ``synthetic``
  images or token ids in the model's shape, :mod:`.synthetic`);
- ``images:DIR``: class subfolders of image files (:mod:`.images`);
- ``tfrecord:GLOB``: TFRecord files in one feature spec (:mod:`.tfrecord`);
- ``package.module:factory``: the user's ``tf.data`` pipeline or arrays (:mod:`.factory`).

Every source gives every rank the same number of steps per epoch and drops the remainder:
in-memory arrays and image folders compute it from the global sample count every rank
sees; TFRecords and factories from the smallest rank's shard, gathered with one collective
(:mod:`.stream`). A rank that cannot fill one batch is an error on every rank, not a hang.
"""
from __future__ import annotations

from distrain.train.data.arrays import (ArraySource, Dataset, eval_shard, load_dataset,
                                        shard_batches, steps_per_epoch)
from distrain.train.data.factory import RankShard
from distrain.train.data.synthetic import SyntheticSpec
from distrain.train.data.tfrecord import FEATURE_SPEC, example

__all__ = ["Dataset", "ArraySource", "RankShard", "open_source", "load_dataset", "SyntheticSpec",
           "shard_batches", "steps_per_epoch", "eval_shard", "example", "FEATURE_SPEC"]


def open_source(spec: str, seed: int, batch_size: int, rank: int, size: int,
                image_size=None, synthetic: SyntheticSpec = SyntheticSpec()):
    """Opens the source ``spec`` names on this rank (no collectives).

    Args:
        spec: the ``--dataset`` value.
        seed: the base seed.
        batch_size: samples per rank per step.
        rank: this rank.
        size: the number of ranks.
        image_size: ``(height, width)`` for images, or None for the first image's size.
        synthetic: the count, shape and kind of ``synthetic``'s samples.

    Returns:
        A source: ``name``, ``input_shape``, ``num_classes``, ``summary()``,
        ``settle(summaries, ...)``, ``batches(...)``, ``eval_shard(...)``, ``sample(...)``.

    Raises:
        UsageError: missing or malformed data.
    """
    if spec.startswith("images:"):
        from distrain.train.data.images import ImageFolderSource
        return ImageFolderSource(spec[len("images:"):], image_size, rank, size)
    if spec.startswith("tfrecord:"):
        from distrain.train.data.tfrecord import TFRecordSource
        return TFRecordSource(spec[len("tfrecord:"):], image_size, rank, size)
    if spec in ("synthetic", "digits") or spec.startswith("npz:"):
        return ArraySource(load_dataset(spec, seed, synthetic))
    from distrain.train.data.factory import open_factory
    return open_factory(spec, seed, batch_size, rank, size)
