"""engine/buffers.py's pool of large buffers: a buffer is handed out again only once nothing
refers to it, not even a view or a tensor TensorFlow adopted; the pool stays bounded."""
import numpy as np
import pytest

from distrain.engine import buffers

MIB = 1 << 20


@pytest.fixture(autouse=True)
def empty_pool(monkeypatch):
    monkeypatch.setattr(buffers, "_pool", [])


def test_a_large_buffer_is_reused_once_unreferenced():
    first = buffers.aligned_empty((MIB,), np.float32)
    address = first.ctypes.data
    second = buffers.aligned_empty((MIB,), np.float32)
    assert second.ctypes.data != address            # in use: a new one
    view = first.reshape(-1)[10:]
    del first
    third = buffers.aligned_empty((MIB,), np.float32)
    assert third.ctypes.data != address             # a view still holds it
    del view
    assert buffers.aligned_empty((MIB,), np.float32).ctypes.data == address
    assert buffers.is_aligned(second) and buffers.is_aligned(third)


def test_a_buffer_tensorflow_holds_is_not_reused():
    import tensorflow as tf
    array = buffers.aligned_empty((MIB,), np.float32)
    array[:] = 7.0
    address = array.ctypes.data
    tensor = tf.experimental.dlpack.from_dlpack(array.__dlpack__())
    del array
    other = buffers.aligned_empty((MIB,), np.float32)
    other[:] = 0.0
    assert other.ctypes.data != address
    assert float(tf.reduce_min(tensor)) == 7.0
    del tensor
    assert buffers.aligned_empty((MIB,), np.float32).ctypes.data == address


def test_small_buffers_are_not_pooled_and_the_pool_is_bounded():
    buffers.aligned_empty((16,), np.float32)
    assert buffers._pool == []
    held = [buffers.aligned_empty((2 * MIB,), np.uint8) for _ in range(40)]
    assert len(buffers._pool) <= buffers._POOL_MAX_BUFFERS
    del held
    for _ in range(40):
        buffers.aligned_empty((3 * MIB,), np.uint8)
    assert len(buffers._pool) <= buffers._POOL_MAX_BUFFERS
    assert sum(b.size for b in buffers._pool) <= buffers._POOL_MAX_BYTES
