"""Tiny datasets on disk, made by the tests: image folders and TFRecord files."""
from __future__ import annotations

import os

import numpy as np


def image_folder(directory, x: np.ndarray, y: np.ndarray) -> str:
    """Writes ``x`` (NHWC floats in [0, 1], 1 or 3 channels) as PNGs in class subfolders.

    Returns:
        The directory.
    """
    from PIL import Image
    for index, (image, label) in enumerate(zip(x, y)):
        folder = os.path.join(directory, f"class_{int(label):02d}")
        os.makedirs(folder, exist_ok=True)
        pixels = np.round(np.clip(image, 0, 1) * 255).astype(np.uint8)
        pixels = pixels[..., 0] if pixels.shape[-1] == 1 else pixels
        Image.fromarray(pixels).save(os.path.join(folder, f"{index:05d}.png"))
    return str(directory)


def tfrecord_files(directory, x: np.ndarray, y: np.ndarray, files: int = 1,
                   sizes: list[int] | None = None) -> str:
    """Writes ``(x, y)`` as ``files`` TFRecord files of ``x``/``shape``/``label`` records
    (``sizes`` records in each, or an even split).

    Returns:
        The glob matching them.
    """
    import tensorflow as tf
    from distrain.train.data import example
    sizes = sizes or [len(x) // files + (i < len(x) % files) for i in range(files)]
    os.makedirs(directory, exist_ok=True)
    at = 0
    for index, count in enumerate(sizes):
        with tf.io.TFRecordWriter(os.path.join(directory, f"part-{index:03d}.tfrecord")) as w:
            for row in range(at, at + count):
                w.write(example(x[row], int(y[row])))
        at += count
    return os.path.join(str(directory), "part-*.tfrecord")
