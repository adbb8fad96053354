"""``--dataset synthetic``: learnable random data in the shape the model reads.

- Images (``shape`` ``(height, width, channels)``): each of 10 classes is a fixed random
  pattern, each sample its class's pattern under Gaussian noise twice as strong.
- Token ids (``vocab_size`` set, ``shape`` ``(length,)``): each of 10 classes owns 8 marker
  tokens; a sample is uniform random tokens of which a quarter, at random positions, are
  replaced by markers of its class. A bag of its tokens tells the class.

Both are drawn from the seed alone (the same on every rank), with a test split of a quarter
of the training samples. They are held in memory: ``samples * 1.25`` samples of ``shape``
(float32 images take ``4 * height * width * channels`` bytes each).

Example:
    >>> x_train, y_train, x_test, y_test = synthetic_arrays(
    ...     SyntheticSpec(samples=64, shape=(32, 32, 3)), seed=42)
    >>> x_train.shape, x_test.shape
    ((64, 32, 32, 3), (16, 32, 32, 3))
"""
from __future__ import annotations

import dataclasses

import numpy as np

__all__ = ["SyntheticSpec", "synthetic_arrays", "CLASSES"]

CLASSES = 10
_MARKERS = 8          # marker tokens per class
_MARKED = 0.25        # the share of a sequence's tokens that are its class's markers


@dataclasses.dataclass(frozen=True)
class SyntheticSpec:
    """What ``synthetic`` holds.

    Attributes:
        samples: training samples (a quarter as many more are the test set).
        shape: one sample's shape: ``(height, width, channels)`` images, or ``(length,)``
            token ids.
        vocab_size: token ids are ``0 .. vocab_size - 1``; None: images.
    """

    samples: int = 4096
    shape: tuple[int, ...] = (16, 16, 1)
    vocab_size: int | None = None


def _images(spec: SyntheticSpec, rng) -> tuple[np.ndarray, np.ndarray]:
    patterns = rng.standard_normal((CLASSES,) + tuple(spec.shape)).astype(np.float32)
    y = rng.integers(0, CLASSES, spec.samples + spec.samples // 4).astype(np.int64)
    x = patterns[y] + 2.0 * rng.standard_normal((len(y),) + tuple(spec.shape)).astype(
        np.float32)
    return x, y


def _tokens(spec: SyntheticSpec, rng) -> tuple[np.ndarray, np.ndarray]:
    vocab, total = spec.vocab_size, spec.samples + spec.samples // 4
    shape = (total,) + tuple(spec.shape)
    markers = rng.choice(vocab, (CLASSES, _MARKERS), replace=vocab < CLASSES * _MARKERS)
    y = rng.integers(0, CLASSES, total).astype(np.int64)
    x = rng.integers(0, vocab, shape)
    picks = markers[y.reshape((-1,) + (1,) * len(spec.shape)),
                    rng.integers(0, _MARKERS, shape)]
    x = np.where(rng.random(shape) < _MARKED, picks, x).astype(np.int32)
    return x, y


def synthetic_arrays(spec: SyntheticSpec, seed: int) -> tuple[np.ndarray, ...]:
    """Draws the synthetic data ``spec`` describes from ``seed``.

    Args:
        spec: the samples' count, shape and kind.
        seed: the base seed; every rank draws the same data from it.

    Returns:
        ``(x_train, y_train, x_test, y_test)``, of :data:`CLASSES` classes.
    """
    rng = np.random.default_rng(seed)
    x, y = (_tokens if spec.vocab_size else _images)(spec, rng)
    n = spec.samples
    return x[:n], y[:n], x[n:], y[n:]
