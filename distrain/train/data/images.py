"""``images:DIR``: a folder with one subfolder of images per class.

The files are listed as ``keras.utils.image_dataset_from_directory`` lists them (classes
are the subfolders in sorted order; ``.png``, ``.jpg``, ``.jpeg``, ``.bmp``, ``.gif``).
Each file is one sample, so sharding files and sharding records are the same thing: every
epoch all ranks draw the same permutation of the files from the shared seed, and rank ``r``
reads the ``r``-th sub-block of every global batch, exactly as for arrays. The steps per
epoch come from the file count every rank sees (the remainder is dropped), and N ranks
reproduce one rank at the same global batch.

Images are decoded to float32 in [0, 1] with the first image's number of channels (grey or
RGB) and resized to ``--image-size`` (default: the first image's size). Before training
every rank decodes its strided share of the files once, so an unreadable image is an error
before the first step, not a crash in the middle of an epoch.
"""
from __future__ import annotations

import contextlib
import io
import os

import numpy as np

from distrain.errors import UsageError
from distrain.train.data.stream import StreamSource, op_message, decode_image

__all__ = ["ImageFolderSource", "IMAGE_FORMATS"]

IMAGE_FORMATS = (".bmp", ".gif", ".jpeg", ".jpg", ".png")


def _list(directory: str):
    import keras
    try:
        with contextlib.redirect_stdout(io.StringIO()):  # "Found N files..." on every rank
            listing = keras.utils.image_dataset_from_directory(
                directory, labels="inferred", label_mode="int", shuffle=False,
                batch_size=None, image_size=(8, 8))
    except (ValueError, OSError) as exc:
        raise UsageError(f"no images found in {directory!r} ({str(exc).splitlines()[0]}); "
                         f"put each class's {'/'.join(IMAGE_FORMATS)} files in a subfolder "
                         f"named after the class") from None
    classes = list(listing.class_names)
    paths = list(listing.file_paths)
    labels = np.array([classes.index(os.path.basename(os.path.dirname(p))) for p in paths],
                      np.int64)
    return np.array(paths), labels, classes


class ImageFolderSource(StreamSource):
    """The images of ``directory`` (see the module docstring).

    Args:
        directory: the folder of class subfolders.
        image_size: ``(height, width)`` to resize to, or None for the first image's size.
        rank: this rank.
        size: the number of ranks.

    Raises:
        UsageError: no images, or the first image cannot be decoded.
    """

    def __init__(self, directory: str, image_size, rank: int, size: int):
        super().__init__(rank, size)
        import tensorflow as tf
        self.name = f"images:{directory}"
        self.paths, self.labels, self.classes = _list(directory)
        self.num_classes = len(self.classes)
        first = self._check(tf, self.paths[0], 0)
        self.channels = 1 if first.shape[-1] == 1 else 3
        self.image_size = tuple(image_size) if image_size else tuple(first.shape[:2])
        self.input_shape = self.image_size + (self.channels,)

    def _check(self, tf, path: str, channels: int):
        try:
            return tf.io.decode_image(tf.io.read_file(path), channels=channels,
                                      expand_animations=False)
        except tf.errors.OpError as exc:
            raise UsageError(f"cannot decode image {str(path)!r} ({op_message(exc)}); "
                             f"remove or replace the file") from None

    def scan(self) -> tuple[int, int]:
        """Decodes this rank's strided share of the files once, naming the first bad one.

        Raises:
            UsageError: an image that cannot be decoded.
        """
        import tensorflow as tf
        mine = self.paths[self.rank::self.size]
        dataset = (tf.data.Dataset.from_tensor_slices(mine)
                   .map(lambda p: tf.reduce_sum(tf.io.decode_image(  # a value, not pruned
                        tf.io.read_file(p), channels=self.channels, expand_animations=False)),
                        num_parallel_calls=tf.data.AUTOTUNE))
        try:
            for _ in dataset:
                pass
        except tf.errors.OpError:
            for path in mine:  # find which one, to name it
                self._check(tf, path, self.channels)
            raise UsageError(f"cannot decode the images of {self.name}") from None
        return len(self.paths), self.num_classes - 1

    def settle(self, summaries, batch_size: int, size: int, limit: int | None) -> int:
        """Full global batches of the file count, capped at ``limit``.

        Raises:
            UsageError: the files cannot fill one global batch.
        """
        steps = len(self.paths) // (batch_size * size)
        if steps == 0:
            raise UsageError(f"{self.name}: {len(self.paths)} images cannot fill one global "
                             f"batch of {batch_size} x {size} ranks; lower --batch-size, add "
                             f"images or use fewer ranks")
        return min(steps, limit) if limit else steps

    def batches(self, epoch: int, seed: int, batch_size: int, rank: int, size: int,
                steps: int, start: int = 0, offset: int = 0):
        """This rank's sub-block of each global batch, decoded by a parallel map; the global
        batches start at sample ``offset`` of the epoch's shuffle.

        Returns:
            An iterator of ``steps - start`` tensor pairs.
        """
        import tensorflow as tf
        order = np.random.default_rng((seed, epoch)).permutation(len(self.paths))
        per_step = batch_size * size
        rows = np.concatenate([np.sort(order[offset + s * per_step + rank * batch_size:]
                                       [:batch_size])
                               for s in range(start, steps)]) if steps > start else \
            np.zeros(0, np.int64)
        channels, image_size = self.channels, self.image_size
        dataset = (tf.data.Dataset.from_tensor_slices((self.paths[rows], self.labels[rows]))
                   .map(lambda p, y: (decode_image(tf.io.read_file(p), channels, image_size), y),
                        num_parallel_calls=tf.data.AUTOTUNE)
                   .batch(batch_size, drop_remainder=True)
                   .prefetch(tf.data.AUTOTUNE))
        return iter(dataset)

    def epoch_records(self, epoch: int, seed: int, skip: int = 0):
        """All images of one epoch's order after its first ``skip`` (used for the cost
        model's sample; training reads :meth:`batches`)."""
        import tensorflow as tf
        order = np.random.default_rng((seed, epoch)).permutation(len(self.paths))[skip:]
        channels, image_size = self.channels, self.image_size
        return (tf.data.Dataset.from_tensor_slices((self.paths[order], self.labels[order]))
                .map(lambda p, y: (decode_image(tf.io.read_file(p), channels, image_size), y)))
