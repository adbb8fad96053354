"""The API in one process: the local backend, errors before init, backend selection."""
import numpy as np
import pytest

import distrain as hvd
from distrain.backends import create_backend
from distrain.environment import World, WorldError


@pytest.fixture
def local():
    hvd.init("local")
    yield
    hvd.shutdown()


def test_calls_before_init_name_the_fix():
    hvd.shutdown()  # another in-process test may have left distrain running
    assert not hvd.is_initialized()
    for call in (hvd.rank, hvd.size, lambda: hvd.allreduce(np.ones(2)), hvd.barrier):
        with pytest.raises(hvd.NotInitializedError, match=r"call distrain.init\(\) first"):
            call()


def test_local_world_is_one_rank(local):
    assert (hvd.rank(), hvd.size(), hvd.local_rank(), hvd.local_size(), hvd.cross_rank(),
            hvd.cross_size()) == (0, 1, 0, 1, 0, 1)
    assert hvd.collectives.backend().name == "local"


def test_local_collectives_return_copies_of_the_same_kind(local):
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    for op in (hvd.Average, hvd.Sum, hvd.Min, hvd.Max):
        out = hvd.allreduce(x, op=op)
        np.testing.assert_array_equal(out, x)
        assert out is not x and out.dtype == x.dtype
    np.testing.assert_array_equal(hvd.broadcast(x, 0), x)
    np.testing.assert_array_equal(hvd.allgather(x), x)
    hvd.barrier()


def test_local_compression_still_rounds(local):
    x = np.full(4, 1.0 + 2.0 ** -14, np.float32)
    np.testing.assert_array_equal(hvd.allreduce(x, compression=hvd.Compression.fp16),
                                  np.float32(np.float16(x[0])))


def test_average_flag_and_op_conflict(local):
    np.testing.assert_array_equal(hvd.allreduce(np.ones(2), average=False), np.ones(2))
    with pytest.raises(ValueError, match="op parameter supersedes average"):
        hvd.allreduce(np.ones(2), average=True, op=hvd.Sum)


def test_unknown_backend_is_named():
    with pytest.raises(ValueError, match="unknown backend 'nccl'"):
        hvd.init("nccl")
    assert not hvd.is_initialized()


def test_local_backend_refuses_a_multi_rank_launch():
    with pytest.raises(WorldError, match="local backend runs a single rank, but openmpi "
                                         "started 4"):
        create_backend("local", World(1, 4, 1, 4, 0, 1, "openmpi"))


def test_horovodrun_gloo_without_horovod_is_a_clear_error():
    from distrain.backends.horovod import horovod_importable
    if horovod_importable():
        pytest.skip("Horovod is installed here; the Gloo fallback error needs it absent")
    with pytest.raises(WorldError, match="Gloo mode.*horovodrun --mpi"):
        create_backend(None, World(0, 2, 0, 2, 0, 1, "horovodrun", gloo=True))


def test_tensorflow_values_come_back_as_tensors(local):
    tf = pytest.importorskip("tensorflow")
    t = tf.constant([[1.0, 2.0]])
    out = hvd.allreduce(t)
    assert isinstance(out, tf.Tensor) and out.shape == (1, 2)
    v = tf.Variable([3, 4])
    assert hvd.allreduce(v, op=hvd.Sum).numpy().tolist() == [3, 4]
