"""Overlapped collectives on every rank under a real mpirun (see tests/test_mpi_suite.py):
buckets reduced during backward give what one grouped allreduce gives, in one order on every
rank, beside synchronous collectives, two models and two tapes in one program."""
import numpy as np
import pytest
import tensorflow as tf

import distrain as hvd
import distrain.tensorflow as hvd_tf
from distrain.overlap import overlapped_allreduce, start_overlapped_allreduce

from rank_collectives import RANK, SIZE, expected, value_of

SHAPES = [(3,), (40, 7), (1,), (300, 300), (5, 2), (2,)]   # one above the 1 MiB first bucket


@pytest.fixture(autouse=True)
def small_buckets(monkeypatch):
    # a few hundred bytes per bucket: every test cuts its tensors into several buckets
    monkeypatch.setenv("DISTRAIN_OVERLAP", "1")
    monkeypatch.setenv("DISTRAIN_FIRST_BUCKET_BYTES", "64")
    monkeypatch.setenv("DISTRAIN_BUCKET_BYTES", "512")


@pytest.mark.parametrize("dtype", ["int32", "int64", "float32"])
def test_overlapped_sum_in_a_tf_function_is_exact(dtype):
    inputs = [tf.constant(value_of(RANK, s, dtype, salt=i)) for i, s in enumerate(SHAPES)]

    @tf.function
    def reduce(tensors):
        return overlapped_allreduce(tensors, op=hvd.Sum, name="sum test")

    for i, (shape, out) in enumerate(zip(SHAPES, reduce(inputs))):
        assert out.shape == shape and out.dtype == inputs[i].dtype
        np.testing.assert_array_equal(out.numpy(), expected(shape, dtype, hvd.Sum, salt=i))


@pytest.mark.skipif(hvd.collectives.native_backend(),
                    reason="Horovod's backend runs its own asynchronous ops: no distrain buckets")
def test_the_buckets_are_issued_last_tensor_first_with_a_small_first_bucket():
    inputs = [tf.constant(value_of(RANK, s, "float32", salt=i)) for i, s in enumerate(SHAPES)]
    plans = []

    @tf.function
    def start(tensors):
        tokens, plan = start_overlapped_allreduce(tensors, name="plan test")
        plans.append(plan)
        return tokens

    for token in start(inputs):
        hvd.synchronize(int(token))
    plan = plans[0]
    assert sorted(i for bucket in plan for i in bucket) == list(range(len(SHAPES)))
    assert plan[0][0] == 5 and plan[-1][-1] == 0     # last tensor first, first tensor last
    assert [i for bucket in plan for i in bucket] == list(reversed(range(len(SHAPES))))
    assert len(plan) > 2


@pytest.mark.skipif(not hvd.collectives.native_backend(), reason="the Horovod backend's path")
def test_under_horovods_backend_no_buckets_are_started():
    inputs = [tf.constant(value_of(RANK, s, "float32", salt=i)) for i, s in enumerate(SHAPES)]
    started = tf.function(lambda t: start_overlapped_allreduce(t, name="native") is None)
    assert started(inputs)


def test_overlapped_average_matches_one_grouped_allreduce():
    inputs = [tf.constant(value_of(RANK, s, "float32", salt=i) / 3) for i, s in
              enumerate(SHAPES)]
    overlapped = tf.function(lambda t: overlapped_allreduce(t, name="avg"))(inputs)
    grouped = hvd.grouped_allreduce(inputs)
    for a, b in zip(overlapped, grouped):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-6)


def test_async_handles_interleave_with_synchronous_collectives_in_one_order():
    handles = [hvd.grouped_allreduce_async([np.full(4, RANK + k, np.int64)], op=hvd.Sum,
                                           name=f"async {k}") for k in range(5)]
    middle = hvd.allreduce(np.array([RANK], np.int64), op=hvd.Sum, name="sync in between")
    assert middle[0] == sum(range(SIZE))
    for k, handle in enumerate(handles):
        (out,) = hvd.synchronize(handle)
        assert (out == sum(range(SIZE)) + k * SIZE).all()
    with pytest.raises(KeyError):
        hvd.synchronize(handles[0])


def _model(seed):
    tf.keras.utils.set_random_seed(seed)
    return tf.keras.Sequential([tf.keras.Input((6,)), tf.keras.layers.Dense(16),
                                tf.keras.layers.Dense(3)])


def test_two_models_and_two_tapes_in_one_tf_function_agree_on_every_rank():
    first, second = _model(1), _model(2)
    x = tf.constant(value_of(RANK, (8, 6), "float32"))

    @tf.function
    def step():
        with tf.GradientTape() as tape_a:
            loss_a = tf.reduce_sum(first(x) ** 2)
        with tf.GradientTape() as tape_b:
            loss_b = tf.reduce_sum(second(x))
        grads_a = hvd_tf.DistributedGradientTape(tape_a).gradient(loss_a,
                                                                 first.trainable_variables)
        grads_b = hvd_tf.DistributedGradientTape(tape_b).gradient(loss_b,
                                                                 second.trainable_variables)
        return grads_a, grads_b

    grads_a, grads_b = step()
    for grads in (grads_a, grads_b):
        flat = np.concatenate([g.numpy().ravel() for g in grads])
        everyone = hvd.allgather(flat[None, :])
        np.testing.assert_allclose(everyone, np.repeat(everyone[:1], SIZE, 0), rtol=1e-6)
    # the average of the ranks' own gradients
    with tf.GradientTape() as tape:
        own = tape.gradient(tf.reduce_sum(second(x)), second.trainable_variables)
    mean = [hvd.allreduce(g.numpy()) for g in own]
    for a, b in zip(grads_b, mean):
        np.testing.assert_allclose(a.numpy(), b, rtol=1e-5, atol=1e-5)


def test_overlap_off_takes_one_grouped_allreduce(monkeypatch):
    monkeypatch.setenv("DISTRAIN_OVERLAP", "0")
    inputs = [tf.constant(value_of(RANK, s, "float32")) for s in SHAPES]

    @tf.function
    def start(tensors):
        return start_overlapped_allreduce(tensors) is None

    assert bool(start(inputs))
