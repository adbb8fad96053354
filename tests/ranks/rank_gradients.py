"""Gradients through every collective, as Horovod 0.28.1 defines them, eagerly and inside
tf.function, checked against the formulas and against finite differences of the global
loss where the formula is a derivative (see tests/test_mpi_suite.py)."""
import numpy as np
import pytest
import tensorflow as tf

import distrain as hvd

hvd.init()
RANK, SIZE = hvd.rank(), hvd.size()
MODES = ["eager", "function"]


def gradient(fn, x, mode):
    """d sum(fn(x) * weights) / dx, with weights that tell positions apart."""
    def loss(v):
        out = fn(v)
        out = out[0] if isinstance(out, (tuple, list)) else out
        weights = tf.reshape(tf.range(tf.size(out), dtype=out.dtype) + 1.0, tf.shape(out))
        return tf.reduce_sum(out * weights)

    def run(v):
        with tf.GradientTape() as tape:
            tape.watch(v)
            value = loss(v)
        return tape.gradient(value, v)
    if mode == "function":
        run = tf.function(run)
    return run(tf.constant(x)).numpy()


def weights_like(shape):
    return (np.arange(int(np.prod(shape))) + 1.0).reshape(shape)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("op", [hvd.Sum, hvd.Average, hvd.Min, hvd.Max, hvd.Product],
                         ids=lambda o: o.name)
def test_allreduce_gradient_is_the_same_allreduce(op, mode):
    x = np.full((2, 3), RANK + 1.0, np.float32)
    grad = gradient(lambda v: hvd.allreduce(v, op=op, prescale_factor=2.0), x, mode)
    # Horovod: the upstream gradients reduced with the same op and factors
    upstream = weights_like((2, 3)) * 2.0
    want = {hvd.Sum: upstream * SIZE, hvd.Average: upstream}.get(op, upstream)
    if op is hvd.Product:
        want = (weights_like((2, 3)) * 2.0) ** SIZE
    np.testing.assert_allclose(grad, want, rtol=1e-5)


@pytest.mark.parametrize("mode", MODES)
def test_allreduce_sum_gradient_matches_finite_differences(mode):
    """For Sum the formula is the derivative of the global loss sum_r loss(x_r)."""
    x = np.random.default_rng(RANK).standard_normal((4,)).astype(np.float64)
    grad = gradient(lambda v: hvd.allreduce(v, op=hvd.Sum) / SIZE, x, mode)
    everyone = [np.random.default_rng(r).standard_normal((4,)) for r in range(SIZE)]
    weights = weights_like((4,))

    def global_loss(values):  # every rank's loss, summed over the ranks
        return SIZE * np.sum(sum(values) / SIZE * weights)

    eps, numeric = 1e-6, np.zeros(4)
    for i in range(4):
        up, down = [e.copy() for e in everyone], [e.copy() for e in everyone]
        up[RANK][i] += eps
        down[RANK][i] -= eps
        numeric[i] = (global_loss(up) - global_loss(down)) / (2 * eps)
    np.testing.assert_allclose(grad, numeric, rtol=1e-5)


@pytest.mark.parametrize("mode", MODES)
def test_grouped_allreduce_gradient(mode):
    def fn(v):
        a, b = hvd.grouped_allreduce([v, v * 2.0], op=hvd.Sum)
        return a + b
    grad = gradient(fn, np.ones(5, np.float32), mode)
    np.testing.assert_allclose(grad, weights_like((5,)) * SIZE * 3)


@pytest.mark.parametrize("mode", MODES)
def test_allgather_gradient_is_my_rows_of_the_average(mode):
    x = np.ones((RANK + 1, 2), np.float32)
    grad = gradient(hvd.allgather, x, mode)
    start = sum(r + 1 for r in range(RANK))
    total = sum(r + 1 for r in range(SIZE))
    np.testing.assert_allclose(grad, weights_like((total, 2))[start:start + RANK + 1])


@pytest.mark.parametrize("mode", MODES)
def test_broadcast_gradient_only_on_the_root(mode):
    for root in range(SIZE):
        grad = gradient(lambda v: hvd.broadcast(v, root_rank=root), np.ones(4, np.float32),
                        mode)
        want = weights_like((4,)) if RANK == root else np.zeros(4)
        np.testing.assert_allclose(grad, want)


@pytest.mark.parametrize("mode", MODES)
def test_alltoall_gradient_goes_back_along_the_received_splits(mode):
    splits = [(RANK + d) % 2 + 1 for d in range(SIZE)]
    x = np.ones((sum(splits), 3), np.float32)
    grad = gradient(lambda v: hvd.alltoall(v, splits=splits), x, mode)
    # what this rank sent to rank d came back from d's upstream weights at its position
    want = []
    for dest in range(SIZE):
        received = [(src + dest) % 2 + 1 for src in range(SIZE)]
        start = sum(received[:RANK])
        w = weights_like((sum(received), 3))
        want.append(w[start:start + splits[dest]])
    np.testing.assert_allclose(grad, np.concatenate(want))


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("op", [hvd.Sum, hvd.Average], ids=lambda o: o.name)
def test_reducescatter_gradient_is_the_allgather(op, mode):
    rows = 2 * SIZE + 1
    grad = gradient(lambda v: hvd.reducescatter(v, op=op), np.ones((rows, 2), np.float32),
                    mode)
    # every rank's upstream weights restart at 1 for its own rows
    parts = []
    for r in range(SIZE):
        count = rows // SIZE + (r < rows % SIZE)
        parts.append(weights_like((count, 2)))
    want = np.concatenate(parts) * (SIZE if op is hvd.Sum else 1)
    np.testing.assert_allclose(grad, want)


def test_integer_collectives_need_no_gradient():
    with tf.GradientTape() as tape:
        x = tf.constant([1, 2], tf.int32)
        out = hvd.allreduce(x, op=hvd.Sum)
    assert out.dtype == tf.int32
    assert tape.gradient(out, x) is None
