"""A rank's runtime setup before training: threads, devices, seeds.

Every rank gets ``--threads`` TensorFlow threads, else ``TF_NUM_INTRAOP_THREADS`` where it is
set (distrain-run's rank wrapper sets it to the fair share unless the user set it: a compose
run, whose containers share one machine's cores, sets 1), else a fair share of the host's
cores (cores / ranks on the host), one GPU per local rank where GPUs exist (with memory
growth), and a seed derived from the base seed and its rank.
"""
from __future__ import annotations

import os

from distrain import environment as env
from distrain.errors import UsageError
from distrain.cores import threads_per_rank
from distrain.tfimport import import_tensorflow

__all__ = ["fair_threads", "rank_threads", "quiet_tensorflow", "configure_tensorflow"]


def fair_threads(local_size: int, cores: int | None = None) -> int:
    """Cores per rank on this host, at least 1: the share distrain-run's rank wrapper
    exports (:func:`distrain.cores.threads_per_rank`).

    Args:
        local_size: ranks on this host.
        cores: the host's usable cores; this process's CPU affinity when None.
    """
    return threads_per_rank(local_size, cores)


def rank_threads(threads: int | None, local_size: int, environ=None) -> int:
    """This rank's TensorFlow intra-op threads.

    Args:
        threads: ``--threads``, or None.
        local_size: ranks on this host.
        environ: where ``TF_NUM_INTRAOP_THREADS`` is read; ``os.environ`` when None.

    Returns:
        ``threads``, else ``TF_NUM_INTRAOP_THREADS`` when set, else :func:`fair_threads`.

    Raises:
        UsageError: ``TF_NUM_INTRAOP_THREADS`` is not a whole number of at least 1.
    """
    if threads:
        return threads
    try:
        exported = env.int_setting(env.TF_NUM_INTRAOP_THREADS, 0, environ, minimum=1)
    except ValueError as exc:
        raise UsageError(f"{exc}; set a whole number of threads, or unset it") from None
    return exported or fair_threads(local_size)


def quiet_tensorflow() -> None:
    """Imports TensorFlow hiding its C++ log lines (Python exceptions still carry real
    errors) unless the user set ``TF_CPP_MIN_LOG_LEVEL``; see :mod:`distrain.tfimport`."""
    os.environ.setdefault(env.TF_CPP_MIN_LOG_LEVEL, "3")
    import_tensorflow()


def configure_tensorflow(threads: int, local_rank: int, seed: int) -> str:
    """Applies threads, device placement and seeds; call before building models.

    Overlap needs no extra inter-op thread: the op that hands a bucket to the collective
    queue returns at once, and distrain.train's step waits for the buckets outside its
    ``tf.function``; a second inter-op thread on a one-core share only made backward slower
    (cnn over a 10 Gbit namespace link: 13.4 against 8.8 ms a step).

    Args:
        threads: intra-op threads for this rank.
        local_rank: picks this rank's GPU.
        seed: this rank's seed.

    Returns:
        A short description of the device used, e.g. ``"CPU, 1 thread"``.
    """
    import keras
    import tensorflow as tf
    try:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(min(2, threads))
    except RuntimeError:  # TensorFlow already started in this process (run() called twice)
        threads = tf.config.threading.get_intra_op_parallelism_threads() or threads
    gpus = tf.config.list_physical_devices("GPU")
    device = f"CPU, {threads} thread{'s' if threads > 1 else ''}"
    if gpus:
        gpu = gpus[local_rank % len(gpus)]
        try:
            tf.config.set_visible_devices(gpu, "GPU")
            tf.config.experimental.set_memory_growth(gpu, True)
        except RuntimeError:  # devices already initialised in this process
            pass
        device = f"GPU {local_rank % len(gpus)} ({gpu.name})"
    keras.utils.set_random_seed(seed)
    return device
