"""Dataset factories for tests of ``--dataset package.module:factory``."""
import numpy as np
import tensorflow as tf

from distrain.train.data import RankShard


def samples(count: int = 128, seed: int = 0):
    """The tests' fixed samples: 8x8x1 images whose class is the brightest quadrant."""
    rng = np.random.default_rng(seed)
    x = rng.random((count, 8, 8, 1)).astype(np.float32)
    quadrants = x.reshape(count, 2, 4, 2, 4).mean(axis=(2, 4)).reshape(count, 4)
    return x, np.argmax(quadrants, axis=1).astype(np.int64)


def whole(rank, size, seed, batch_size):
    """The same samples on every rank; distrain shards them."""
    return tf.data.Dataset.from_tensor_slices(samples())


def arrays(rank, size, seed, batch_size):
    return samples()


def uneven(rank, size, seed, batch_size):
    """Rank r holds 8 x (r + 1) + 3 samples of its own."""
    x, y = samples(8 * (rank + 1) + 3, seed=rank + 1)
    return RankShard(tf.data.Dataset.from_tensor_slices((x, y)))


def empty_on_last(rank, size, seed, batch_size):
    x, y = samples(0 if rank == size - 1 else 64)
    return RankShard(tf.data.Dataset.from_tensor_slices((x, y)))


def raising(rank, size, seed, batch_size):
    raise FileNotFoundError("/data/train-*.tfrecord")


def wrong_type(rank, size, seed, batch_size):
    return "train.csv"


def batched(rank, size, seed, batch_size):
    return tf.data.Dataset.from_tensor_slices(samples()).batch(batch_size)


def token_ids(rank, size, seed, batch_size):
    """96 sequences of 16 token ids (int64) under 50; the class is whether token 7 occurs
    more often than token 3."""
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 50, (96, 16))
    y = (np.sum(x == 7, axis=1) > np.sum(x == 3, axis=1)).astype(np.int64)
    return tf.data.Dataset.from_tensor_slices((x, y))
