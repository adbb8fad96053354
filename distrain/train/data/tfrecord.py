"""``tfrecord:GLOB``: TFRecord files of ``tf.train.Example`` records in one feature spec.

The feature spec (extra features are ignored):

- ``label``: ``int64``, one value, the class (0 to classes - 1);
- and either ``image``: ``bytes``, one encoded PNG/JPEG/GIF/BMP image (decoded to float32
  in [0, 1] with the first record's channels, resized to ``--image-size``, default the
  first record's size),
- or ``x``: ``float`` list, the sample flattened, with an optional ``shape``: ``int64``
  list (e.g. ``[8, 8, 1]``) it is reshaped to (default: a vector).

:func:`example` writes a record in this spec.

Sharding: with at least as many files as ranks, rank ``r`` reads the files ``r::size`` (in a
per-epoch order) and the steps per epoch are the smallest shard's full batches; with fewer
files, every rank reads all records and keeps every ``size``-th (``Dataset.shard``) after a
shuffle all ranks share, so N ranks then reproduce one rank at the same global batch.
"""
from __future__ import annotations

import glob as globbing

import numpy as np

from distrain.errors import UsageError
from distrain.train.data.stream import (StreamSource, decode_image, epoch_seed, op_message,
                                        skip_records, window_shuffle)

__all__ = ["TFRecordSource", "example", "FEATURE_SPEC"]

FEATURE_SPEC = ("label: int64 class, and either image: encoded PNG/JPEG bytes or x: float "
                "list (optional shape: int64 list)")


def example(x, label: int) -> bytes:
    """One serialized record in the feature spec.

    Args:
        x: encoded image bytes, or an array (written as ``x`` with its ``shape``).
        label: the class.

    Returns:
        The serialized ``tf.train.Example``.

    Example:
        >>> with tf.io.TFRecordWriter("train.tfrecord") as writer:
        ...     writer.write(example(np.zeros((8, 8, 1)), 3))
    """
    import tensorflow as tf
    feature = {"label": tf.train.Feature(int64_list=tf.train.Int64List(value=[int(label)]))}
    if isinstance(x, bytes):
        feature["image"] = tf.train.Feature(bytes_list=tf.train.BytesList(value=[x]))
    else:
        x = np.asarray(x, np.float32)
        feature["x"] = tf.train.Feature(float_list=tf.train.FloatList(value=x.ravel()))
        feature["shape"] = tf.train.Feature(int64_list=tf.train.Int64List(value=x.shape))
    return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()


def _mismatch(path: str, detail: str) -> UsageError:
    return UsageError(f"{path!r} does not match the TFRecord feature spec ({detail}); write "
                      f"records with {FEATURE_SPEC} (distrain.train.data.example)")


class TFRecordSource(StreamSource):
    """The records of the files matching ``pattern`` (see the module docstring).

    Args:
        pattern: a glob of TFRecord files.
        image_size: ``(height, width)`` for image records, or None for the first's size.
        rank: this rank.
        size: the number of ranks.

    Raises:
        UsageError: no files, or a first record that does not match the spec.
    """

    def __init__(self, pattern: str, image_size, rank: int, size: int):
        super().__init__(rank, size)
        self.name = f"tfrecord:{pattern}"
        self.files = sorted(globbing.glob(pattern))
        if not self.files:
            raise UsageError(f"no files match {pattern!r}; give tfrecord:GLOB of existing "
                             f"TFRecord files")
        self.by_file = len(self.files) >= size
        self.mine = self.files[rank::size] if self.by_file else self.files
        self._probe(self.files[0], image_size)

    def _probe(self, path: str, image_size) -> None:
        import tensorflow as tf
        try:
            raw = next(iter(tf.data.TFRecordDataset(path).take(1)), None)
        except tf.errors.OpError as exc:
            raise _mismatch(path, f"cannot read it: {op_message(exc)}") from None
        if raw is None:
            raise _mismatch(path, "it holds no records")
        try:
            features = tf.train.Example.FromString(raw.numpy()).features.feature
        except Exception as exc:  # protobuf's DecodeError: not an Example
            raise _mismatch(path, f"a record is not a tf.train.Example: {exc}") from None
        if "label" not in features or len(features["label"].int64_list.value) != 1:
            raise _mismatch(path, "no int64 label")
        spec = {"label": tf.io.FixedLenFeature([], tf.int64)}
        if "image" in features and len(features["image"].bytes_list.value) == 1:
            spec["image"] = tf.io.FixedLenFeature([], tf.string)
            try:
                decoded = tf.io.decode_image(features["image"].bytes_list.value[0],
                                             expand_animations=False)
            except tf.errors.OpError as exc:
                raise _mismatch(path, f"its image cannot be decoded: "
                                      f"{op_message(exc)}") from None
            self.channels = 1 if decoded.shape[-1] == 1 else 3
            self.image_size = tuple(image_size) if image_size else tuple(decoded.shape[:2])
            self.input_shape = self.image_size + (self.channels,)
        elif "x" in features and features["x"].float_list.value:
            length = len(features["x"].float_list.value)
            shape = tuple(features["shape"].int64_list.value) if "shape" in features else ()
            if shape and int(np.prod(shape)) != length:
                raise _mismatch(path, f"shape {list(shape)} does not hold {length} values")
            spec["x"] = tf.io.FixedLenFeature([length], tf.float32)
            self.input_shape = shape or (length,)
        else:
            raise _mismatch(path, "neither an image nor an x feature")
        self.spec = spec

    def _parse(self, record):
        import tensorflow as tf
        parsed = tf.io.parse_single_example(record, self.spec)
        if "image" in parsed:
            x = decode_image(parsed["image"], self.channels, self.image_size)
        else:
            x = tf.reshape(parsed["x"], self.input_shape)
        return x, parsed["label"]

    def scan(self) -> tuple[int, int]:
        """Parses this rank's files once: ``(samples in its shard, largest label)``.

        Raises:
            UsageError: a file that cannot be read or a record that does not match.
        """
        import tensorflow as tf
        count, largest = 0, -1
        for path in self.mine:
            dataset = (tf.data.TFRecordDataset(path)
                       .map(self._parse, num_parallel_calls=tf.data.AUTOTUNE).batch(1024))
            try:
                for _, y in dataset:
                    count += int(y.shape[0])
                    largest = max(largest, int(tf.reduce_max(y)))
            except tf.errors.OpError as exc:
                raise _mismatch(path, op_message(exc)) from None
        if not self.by_file:  # every rank read all records; it keeps every size-th
            count = len(range(self.rank, count, self.size))
        return count, largest

    def epoch_records(self, epoch: int, seed: int, skip: int = 0):
        """This rank's records of one epoch, shuffled with the shared seed and parsed, after
        the first ``skip`` of all ranks' (:func:`~distrain.train.data.stream.skip_records`)."""
        import tensorflow as tf
        shared = epoch_seed(seed, epoch)
        if self.by_file:
            order = np.random.default_rng(shared).permutation(len(self.mine))
            records = (tf.data.Dataset.from_tensor_slices([self.mine[i] for i in order])
                       .interleave(tf.data.TFRecordDataset, cycle_length=min(4, len(order)),
                                   num_parallel_calls=tf.data.AUTOTUNE, deterministic=True))
            records = skip_records(window_shuffle(records, shared), skip, self.size, self.rank,
                                   shared=False)
        else:
            records = skip_records(window_shuffle(tf.data.TFRecordDataset(self.files), shared),
                                   skip, self.size, self.rank, shared=True)
        return records.map(self._parse, num_parallel_calls=tf.data.AUTOTUNE)
