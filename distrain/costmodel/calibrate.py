"""Calibrating the communication model on the running job, cached per host and world size.

Every rank joins (it is a collective):

- ``alpha`` and ``beta``: a sweep of single-message allreduces
  (:func:`distrain.collectives.message_allreduce`) of 256 B .. ``chunk_bytes`` float32
  messages, the slowest rank's median per size, fitted with
  :func:`distrain.costmodel.ring.fit_alpha_beta`;
- ``gamma``: one packing pass (copy and scale) over 4 MiB on the host;
- ``call_overhead``: ``grouped_allreduce`` of one small tensor less its host share
  (:mod:`distrain.costmodel.host`) and its ring time: the negotiation;
- ``tensor_overhead``: what each of 32 small tensors adds to a call (used only where the
  host share is not timed on the real tensors).

The result is written to ``$DISTRAIN_CACHE_DIR`` (default ``~/.cache/distrain``) as
``calibration-HOST-pN-BACKEND.json`` and reused until ``--calibrate`` asks again.
"""
from __future__ import annotations

import json
import os
import socket
import time

import numpy as np

import distrain
from distrain import collectives
from distrain import environment as env
from distrain.costmodel.compute import median_seconds
from distrain.costmodel.host import host_allreduce
from distrain.errors import UsageError
from distrain.files import write_atomically
from distrain.costmodel.ring import CommModel, fit_alpha_beta, ring_time

__all__ = ["calibrate", "cache_path", "load_or_calibrate", "VERSION"]

VERSION = 2  # what the constants mean; a cache of another version is measured again


def cache_path(size: int, backend: str) -> str:
    """Where the calibration of this host, world size and backend is kept."""
    root = env.setting(env.CACHE_DIR) or os.path.join(os.path.expanduser("~"), ".cache",
                                                      "distrain")
    return os.path.join(root, f"calibration-{socket.gethostname()}-p{size}-{backend}.json")


def _slowest(seconds: float) -> float:
    return max(distrain.allgather_object(seconds))


def _sweep(chunk_bytes: int, repeats: int):
    sizes, times = [], []
    nbytes = 256
    while nbytes <= max(chunk_bytes, 256):
        buf = np.ones(nbytes // 4, np.float32)
        out = np.empty_like(buf)
        run = lambda b=buf, o=out: collectives.message_allreduce(b, o)  # noqa: E731
        distrain.barrier()
        sizes.append(nbytes)
        times.append(_slowest(median_seconds(run, repeats)))
        nbytes *= 4
    return sizes, times


def calibrate(repeats: int = 20) -> CommModel:
    """Measures the communication constants on every rank of the running job.

    Returns:
        The fitted :class:`CommModel`.
    """
    size = distrain.size()
    chunk, threshold = collectives.chunk_bytes(), collectives.fusion_threshold()
    alpha = beta = 0.0
    if size > 1:
        alpha, beta = fit_alpha_beta(*_sweep(chunk, repeats), size)
    src = np.ones(1 << 20, np.float32)
    dst = np.empty_like(src)
    gamma = _slowest(median_seconds(lambda: np.multiply(src, 0.5, out=dst), repeats)) \
        / src.nbytes
    import tensorflow as tf  # the per-tensor cost includes TensorFlow's conversions
    one = [tf.ones([4])]
    many = [tf.ones([4])] * 32
    single = _slowest(median_seconds(lambda: distrain.grouped_allreduce(one), repeats))
    multi = _slowest(median_seconds(lambda: distrain.grouped_allreduce(many), repeats))
    tensor_overhead = max(multi - single, 0.0) / 31
    # What one call costs beyond its host share and its message: the negotiation.
    host = median_seconds(host_allreduce(one, size, threshold, chunk), repeats)
    call_overhead = max(single - host - ring_time(16, size, alpha, beta), 0.0)
    return CommModel(size, alpha, beta, gamma, call_overhead, tensor_overhead, chunk,
                     threshold)


def load_or_calibrate(recalibrate: bool = False) -> CommModel:
    """The cached calibration for this job's shape, measured first when missing or asked.

    Rank 0 decides and shares its constants, so every rank uses the same model.

    Args:
        recalibrate: measure even when a cache exists.

    Returns:
        The :class:`CommModel`.
    """
    path = cache_path(distrain.size(), collectives.backend_name())
    cached = None
    if distrain.rank() == 0 and not recalibrate and os.path.isfile(path):
        try:
            with open(path) as handle:
                cached = json.load(handle)
        except (OSError, ValueError):
            cached = None
    cached = distrain.allgather_object(cached)[0]
    if cached is not None and (cached.get("version") != VERSION
                               or cached.get("chunk_bytes") != collectives.chunk_bytes()):
        cached = None  # measured by an older distrain or with another chunk size
    if cached is None:
        model = calibrate()
        if distrain.rank() == 0:
            _write(path, dict(vars(model), measured=time.time(), version=VERSION))
        return model
    fields = {k: cached[k] for k in CommModel.__dataclass_fields__ if k in cached}
    fields["fusion_threshold"] = collectives.fusion_threshold()
    return CommModel(**fields)


def _write(path: str, record: dict) -> None:
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        write_atomically(path, lambda handle: handle.write(json.dumps(record, indent=1)
                                                           .encode()))
    except (OSError, UsageError):
        pass  # a cache that cannot be written is only slower next time
