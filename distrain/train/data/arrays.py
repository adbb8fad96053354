"""In-memory datasets (``synthetic``, ``digits``, ``npz:PATH``, a factory's arrays) and how
each rank reads its own part of every global batch.

Every epoch the training set is shuffled with a seed all ranks share. Global batch ``s`` is
the block of ``batch_size * size`` samples starting at ``s * batch_size * size``; rank ``r``
reads the ``r``-th sub-block of ``batch_size`` samples. Ranks read disjoint samples, and one
rank with the whole global batch sees exactly what the ranks together see, which is why
training on N ranks reproduces training on one.
"""
from __future__ import annotations

import dataclasses
import zipfile

import numpy as np

from distrain.errors import UsageError
from distrain.train.data.synthetic import CLASSES, SyntheticSpec, synthetic_arrays

__all__ = ["Dataset", "ArraySource", "load_dataset", "shard_batches", "steps_per_epoch",
           "eval_shard"]


@dataclasses.dataclass
class Dataset:
    """Arrays of one dataset (images are NHWC float32, labels int64)."""

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray | None
    y_test: np.ndarray | None
    num_classes: int

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.x_train.shape[1:])


def _digits(seed: int) -> Dataset:
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        raise UsageError("--dataset digits needs scikit-learn: pip install scikit-learn "
                         "(or distrain[digits])") from None
    bunch = load_digits()
    x = (bunch.images / 16.0).astype(np.float32)[..., None]
    y = bunch.target.astype(np.int64)
    order = np.random.default_rng(seed).permutation(len(x))
    x, y = x[order], y[order]
    split = int(len(x) * 0.8)
    return Dataset("digits", x[:split], y[:split], x[split:], y[split:], 10)


def _npz(path: str) -> Dataset:
    try:
        with np.load(path, allow_pickle=False) as arrays:
            found = {k: arrays[k] for k in arrays.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise UsageError(f"cannot read {path!r} as .npz ({exc}); save it with "
                         f"numpy.savez(path, x_train=..., y_train=...)") from None
    missing = [k for k in ("x_train", "y_train") if k not in found]
    if missing:
        raise UsageError(f"{path!r} has no {' or '.join(missing)}; it holds "
                         f"{', '.join(sorted(found)) or 'nothing'}")
    if ("x_test" in found) != ("y_test" in found):
        raise UsageError(f"{path!r} must hold both x_test and y_test, or neither")
    x, y = found["x_train"], found["y_train"]
    if len(x) != len(y) or len(x) == 0:
        raise UsageError(f"{path!r}: x_train has {len(x)} samples but y_train has {len(y)}; "
                         f"they must match and be non-empty")
    if not np.issubdtype(y.dtype, np.integer) or y.ndim != 1:
        raise UsageError(f"{path!r}: y_train must be 1-D integer class labels, got "
                         f"{y.dtype} of shape {y.shape}")
    if x.ndim == 3:
        x = x[..., None]
    classes = int(max(y.max(), found["y_test"].max() if "y_test" in found else 0)) + 1
    test = ((found["x_test"][..., None] if found["x_test"].ndim == 3 else found["x_test"])
            .astype(np.float32), found["y_test"].astype(np.int64)) if "x_test" in found \
        else (None, None)
    return Dataset(f"npz:{path}", x.astype(np.float32), y.astype(np.int64), *test, classes)


def load_dataset(spec: str, seed: int, synthetic: SyntheticSpec = SyntheticSpec()) -> Dataset:
    """Loads ``synthetic``, ``digits`` or ``npz:PATH``.

    Args:
        spec: the ``--dataset`` value.
        seed: the base seed.
        synthetic: the count, shape and kind of ``synthetic``'s samples.

    Returns:
        The :class:`Dataset`.

    Raises:
        UsageError: a missing or malformed file, or a missing optional dependency.
    """
    if spec == "synthetic":
        return Dataset("synthetic", *synthetic_arrays(synthetic, seed), CLASSES)
    if spec == "digits":
        return _digits(seed)
    return _npz(spec[4:])


def steps_per_epoch(samples: int, batch_size: int, size: int, limit: int | None) -> int:
    """Full global batches per epoch, capped at ``limit``.

    Raises:
        UsageError: the data cannot fill one global batch.
    """
    steps = samples // (batch_size * size)
    if steps == 0:
        raise UsageError(f"{samples} training samples cannot fill one global batch of "
                         f"{batch_size} x {size} ranks; lower --batch-size")
    return min(steps, limit) if limit else steps


def shard_batches(data: Dataset, epoch: int, seed: int, batch_size: int, rank: int,
                  size: int, steps: int, start: int = 0, offset: int = 0):
    """Yields this rank's ``(x, y)`` for each step of one epoch.

    Args:
        data: the dataset.
        epoch: the epoch, which picks the shuffle.
        seed: the shared base seed.
        batch_size: samples per rank.
        rank: this rank.
        size: the number of ranks.
        steps: the epoch's number of steps.
        start: the first step to yield (after a resume).
        offset: samples of the shuffle consumed before step 0 (by a run of another size,
            before a resume): the global batches start there.
    """
    order = np.random.default_rng((seed, epoch)).permutation(len(data.x_train))
    per_step = batch_size * size
    for step in range(start, steps):
        first = offset + step * per_step + rank * batch_size
        rows = np.sort(order[first:first + batch_size])
        yield data.x_train[rows], data.y_train[rows]


def eval_shard(data: Dataset, rank: int, size: int):
    """This rank's strided part of the test set, or None when there is no test set."""
    if data.x_test is None:
        return None
    return data.x_test[rank::size], data.y_test[rank::size]


class ArraySource:
    """A :class:`Dataset` as a training source: every rank holds all of it and reads its
    sub-block of each global batch (:func:`shard_batches`).

    The steps per epoch come from the global sample count, which every rank sees, so no
    collective is needed; the remainder of the shuffled set past the last full global
    batch is dropped.

    Args:
        data: the arrays.
    """

    def __init__(self, data: Dataset):
        self.data = data
        self.name = data.name
        self.input_shape = data.input_shape
        self.num_classes = data.num_classes

    def summary(self):
        """Nothing to share: every rank sees the whole set."""
        return None

    def settle(self, summaries, batch_size: int, size: int, limit: int | None) -> int:
        """The steps per epoch (see :func:`steps_per_epoch`).

        Raises:
            UsageError: the data cannot fill one global batch.
        """
        return steps_per_epoch(len(self.data.x_train), batch_size, size, limit)

    def batches(self, epoch: int, seed: int, batch_size: int, rank: int, size: int,
                steps: int, start: int = 0, offset: int = 0):
        """This rank's ``(x, y)`` numpy batches of one epoch (:func:`shard_batches`)."""
        return shard_batches(self.data, epoch, seed, batch_size, rank, size, steps, start,
                             offset)

    def eval_shard(self, rank: int, size: int):
        """This rank's strided part of the test set, or None."""
        return eval_shard(self.data, rank, size)

    def sample(self, batch_size: int):
        """The training arrays, for the cost model's data term."""
        return self.data.x_train, self.data.y_train
