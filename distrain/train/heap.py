"""The Python heap during the step loop: a full collection before it, none inside it.

Building a Keras model and tracing its functions leaves half a million Python objects or
more. CPython's oldest-generation collection walks all of them; measured here (2026-12-05,
ResNet-50, TensorFlow 2.21), one such pass took 400-800 ms and fell inside the timed steps
in one run of five: a 530 ms step became 1,108 ms, and in a job every other rank waited
for it at the next allreduce. :func:`frozen_heap` collects once before the loop and moves
what survives to the permanent generation (``gc.freeze``), so collections during the loop
walk only what the steps themselves allocate; afterwards the heap is unfrozen, so that what
the loop left behind (another model in the same process, a benchmark's next run) can be
collected again.

Example:
    >>> with frozen_heap():
    ...     pass
"""
from __future__ import annotations

import contextlib
import gc

__all__ = ["frozen_heap"]


@contextlib.contextmanager
def frozen_heap():
    """Collects, freezes what is left for the block, and unfreezes it after."""
    gc.collect()
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()
