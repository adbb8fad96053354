"""alltoall, reducescatter, grouped allgather, Product, Adasum, broadcast_ and the object
broadcasts, Horovod's error classes, and the build queries, on every rank under a real mpirun
(see tests/test_mpi_suite.py). Expected values come from numpy over every rank's inputs.
"""
import os

import numpy as np
import pytest
import tensorflow as tf

import distrain as hvd
import distrain.tensorflow as hvd_tf
from distrain.engine.adasum import combine_pair
from distrain.engine.exchange import even_split

hvd.init()
RANK, SIZE = hvd.rank(), hvd.size()
DTYPES = ["float16", "float32", "float64", "int32", "int64", "uint8", "int8", "bool"]
needs_two = pytest.mark.skipif(SIZE == 1, reason="a cross-rank mismatch needs two ranks")
power_of_two = SIZE & (SIZE - 1) == 0


def rows_of(rank, rows, dtype, width=3, salt=0):
    base = (np.arange(rows * width).reshape(rows, width) * 5 + rank * 7 + salt) % 13
    return (base % 2 if dtype == "bool" else base).astype(dtype)


def wrap(array, kind):
    return tf.constant(array) if kind == "tensor" else array


def unwrap(value, kind):
    if kind == "tensor":
        assert isinstance(value, tf.Tensor), type(value)
        return value.numpy()
    assert isinstance(value, np.ndarray), type(value)
    return value


# ---- alltoall ----------------------------------------------------------------------------

def splits_of(rank):
    """Uneven splits with zeros: rank r sends (r + d) % 3 rows to rank d."""
    return [(rank + d) % 3 for d in range(SIZE)]


@pytest.mark.parametrize("kind", ["numpy", "tensor"])
@pytest.mark.parametrize("dtype", DTYPES)
def test_alltoall_uneven_splits_every_dtype(dtype, kind):
    mine = rows_of(RANK, sum(splits_of(RANK)), dtype)
    received, counts = hvd.alltoall(wrap(mine, kind), splits=splits_of(RANK))
    want_parts, want_counts = [], []
    for source in range(SIZE):
        sent = splits_of(source)
        start = sum(sent[:RANK])
        want_parts.append(rows_of(source, sum(sent), dtype)[start:start + sent[RANK]])
        want_counts.append(sent[RANK])
    np.testing.assert_array_equal(unwrap(received, kind), np.concatenate(want_parts))
    assert unwrap(received, kind).dtype == np.dtype(dtype)
    np.testing.assert_array_equal(unwrap(counts, kind), want_counts)
    assert unwrap(counts, kind).dtype == np.int32


@pytest.mark.parametrize("rows_each", [1, 3])
def test_alltoall_even_split_returns_the_tensor_alone(rows_each):
    mine = rows_of(RANK, rows_each * SIZE, "float32", width=2)
    received = hvd.alltoall(tf.constant(mine))
    assert isinstance(received, tf.Tensor)
    want = np.concatenate([rows_of(s, rows_each * SIZE, "float32", width=2)
                           [RANK * rows_each:(RANK + 1) * rows_each] for s in range(SIZE)])
    np.testing.assert_array_equal(received.numpy(), want)


def test_alltoall_empty_and_partial_splits():
    empty = hvd.alltoall(np.zeros((0, 4), np.float32), splits=[0] * SIZE)
    assert empty[0].shape == (0, 4) and list(empty[1]) == [0] * SIZE
    # A sum of splits below the first dimension leaves the trailing rows unsent (Horovod).
    received, counts = hvd.alltoall(np.arange(SIZE + 2, dtype=np.int64), splits=[1] * SIZE)
    np.testing.assert_array_equal(received, np.full(SIZE, RANK))
    np.testing.assert_array_equal(counts, np.ones(SIZE))


def test_alltoall_inside_tf_function():
    @tf.function
    def step(x, splits):
        return hvd.alltoall(x, splits=splits)

    mine = rows_of(RANK, sum(splits_of(RANK)), "float32")
    for _ in range(2):
        received, counts = step(tf.constant(mine), tf.constant(splits_of(RANK), tf.int32))
        eager, eager_counts = hvd.alltoall(mine, splits=splits_of(RANK))
        np.testing.assert_array_equal(received.numpy(), eager)
        np.testing.assert_array_equal(counts.numpy(), eager_counts)
    assert step.experimental_get_tracing_count() == 1


def test_alltoall_bad_splits_raise_invalid_argument_on_every_rank():
    if SIZE > 1:
        with pytest.raises(tf.errors.InvalidArgumentError, match="not an even multiple"):
            hvd.alltoall(tf.zeros([SIZE + 1, 2]))
    with pytest.raises(tf.errors.InvalidArgumentError, match="greater than the first"):
        hvd.alltoall(tf.zeros([2, 2]), splits=[3] + [0] * (SIZE - 1))
    with pytest.raises(tf.errors.InvalidArgumentError, match="number of workers"):
        hvd.alltoall(tf.zeros([2, 2]), splits=[1] * (SIZE + 1))


@needs_two
@pytest.mark.skipif(hvd.collectives.backend_name() == "horovod",
                    reason="Horovod leaves the other ranks waiting for the bad one")
def test_alltoall_one_bad_rank_gets_invalid_argument_the_others_a_mismatch():
    bad = RANK == SIZE - 1
    splits = [9] * SIZE if bad else [0] * SIZE
    expected = tf.errors.InvalidArgumentError if bad else tf.errors.FailedPreconditionError
    with pytest.raises(expected):
        hvd.alltoall(tf.zeros([1, 2]), splits=splits)


# ---- reducescatter -----------------------------------------------------------------------

def full_value(rank, rows, dtype, salt=0):
    return rows_of(rank, rows, dtype, width=2, salt=salt)


def expected_scatter(rows, dtype, op, salt=0):
    stack = np.stack([full_value(r, rows, dtype, salt).astype(np.float64) for r in range(SIZE)])
    total = stack.sum(0)
    if op is hvd.Average:
        total = total / SIZE
        if np.dtype(dtype).kind in "iu":
            total = np.trunc(total)
    split = even_split(rows, SIZE)
    start = sum(split[:RANK])
    return total[start:start + split[RANK]]


@pytest.mark.parametrize("kind", ["numpy", "tensor"])
@pytest.mark.parametrize("op", [hvd.Sum, hvd.Average], ids=lambda o: o.name)
@pytest.mark.parametrize("dtype", ["float16", "float32", "float64", "int32", "int64"])
@pytest.mark.parametrize("rows", [0, 1, 7, 64])
def test_reducescatter_uneven_rows(rows, dtype, op, kind):
    result = unwrap(hvd.reducescatter(wrap(full_value(RANK, rows, dtype), kind), op=op), kind)
    want = expected_scatter(rows, dtype, op)
    assert result.dtype == np.dtype(dtype) and result.shape == want.shape
    np.testing.assert_allclose(result.astype(np.float64), want, rtol=1e-3)


def test_grouped_reducescatter_and_compression():
    inputs = [full_value(RANK, 5 + i, "float32", salt=i) for i in range(3)]
    results = hvd.grouped_reducescatter([tf.constant(x) for x in inputs], op=hvd.Sum,
                                        compression=hvd.Compression.fp16)
    for i, result in enumerate(results):
        np.testing.assert_allclose(result.numpy(), expected_scatter(5 + i, "float32", hvd.Sum,
                                                                    salt=i), rtol=1e-3)


def test_reducescatter_integer_scaling_truncates_as_horovod():
    x = np.full((SIZE * 2,), -3 - RANK, np.int32)
    pre = hvd.reducescatter(x, op=hvd.Sum, prescale_factor=0.5)
    want_pre = sum(np.trunc(0.5 * (-3 - r)) for r in range(SIZE))
    np.testing.assert_array_equal(pre, np.full(2, want_pre))
    post = hvd.reducescatter(x, op=hvd.Average, postscale_factor=3.0)
    want_post = np.trunc(3.0 * sum(-3 - r for r in range(SIZE)) / SIZE)
    np.testing.assert_array_equal(post, np.full(2, want_post))


def test_reducescatter_refuses_other_ops_and_scalars():
    for op in (hvd.Min, hvd.Max, hvd.Product, hvd.Adasum):
        with pytest.raises(tf.errors.AbortedError, match="only supports AVERAGE and SUM"):
            hvd.reducescatter(tf.ones([SIZE]), op=op)
    with pytest.raises(tf.errors.InvalidArgumentError, match="scalar"):
        hvd.reducescatter(tf.constant(1.0))


def test_reducescatter_inside_tf_function():
    @tf.function
    def step(x):
        return hvd.reducescatter(x, op=hvd.Sum)

    x = full_value(RANK, 9, "float32")
    np.testing.assert_allclose(step(tf.constant(x)).numpy(),
                               expected_scatter(9, "float32", hvd.Sum))


# ---- allgather, allreduce with Product and Adasum, integer scaling -----------------------

def test_grouped_allgather_uneven():
    mine = [full_value(RANK, RANK % 3, "int64"), full_value(RANK, 1, "float32", salt=2)]
    results = hvd.grouped_allgather([tf.constant(m) for m in mine])
    for i, result in enumerate(results):
        want = np.concatenate([[full_value(r, r % 3, "int64"),
                                full_value(r, 1, "float32", salt=2)][i] for r in range(SIZE)])
        np.testing.assert_array_equal(result.numpy(), want)


@pytest.mark.parametrize("dtype", ["float16", "float32", "float64", "int32", "int64", "uint8"])
def test_allreduce_product(dtype):
    x = np.array([[1, 2, -1], [3, 1, 1]]) if np.dtype(dtype).kind != "u" else \
        np.array([[1, 2, 1], [3, 1, 1]])
    mine = np.where(np.arange(6).reshape(2, 3) % SIZE == RANK, x, 1).astype(dtype)
    result = hvd.allreduce(tf.constant(mine), op=hvd.Product)
    np.testing.assert_array_equal(result.numpy(), x.astype(dtype))


def test_allreduce_integer_prescale_and_postscale_as_horovod():
    x = np.array([-5, 7, 3], np.int32) + RANK
    pre = hvd.allreduce(tf.constant(x), op=hvd.Sum, prescale_factor=0.5)
    want = sum(np.trunc(0.5 * (np.array([-5, 7, 3]) + r)) for r in range(SIZE))
    np.testing.assert_array_equal(pre.numpy(), want)
    post = hvd.allreduce(tf.constant(x), op=hvd.Average, postscale_factor=3.0)
    total = sum(np.array([-5, 7, 3]) + r for r in range(SIZE))
    np.testing.assert_array_equal(post.numpy(), np.trunc(3.0 * total / SIZE))


def adasum_reference(vectors):
    level = [v.astype(np.float64) for v in vectors]
    while len(level) > 1:
        level = [combine_pair(level[i], level[i + 1]) for i in range(0, len(level), 2)]
    return level[0]


@pytest.mark.skipif(not power_of_two, reason="Adasum runs on a power-of-two number of ranks")
@pytest.mark.parametrize("dtype", ["float16", "float32", "float64"])
def test_adasum_equals_the_pairwise_tree(dtype):
    shapes = [(17,), (3, 5), (1,), (0,), (1000,)]
    rng = [np.random.default_rng(r) for r in range(SIZE)]
    every = [[g.standard_normal(s) for s in shapes] for g in rng]
    results = hvd.grouped_allreduce([tf.constant(v.astype(dtype)) for v in every[RANK]],
                                    op=hvd.Adasum)
    tol = 2e-2 if dtype == "float16" else 1e-5
    for i, result in enumerate(results):
        want = adasum_reference([e[i].astype(dtype) for e in every])
        assert result.dtype == tf.as_dtype(dtype)
        np.testing.assert_allclose(result.numpy().astype(np.float64), want, rtol=tol,
                                   atol=tol)


@pytest.mark.skipif(not power_of_two, reason="Adasum runs on a power-of-two number of ranks")
def test_adasum_scale_invariance_cases():
    same = hvd.allreduce(np.full(6, 2.0), op=hvd.Adasum)
    np.testing.assert_allclose(same, np.full(6, 2.0))           # equal gradients: averaged
    axis = np.zeros(max(SIZE, 2))
    axis[RANK] = 1.0
    np.testing.assert_allclose(hvd.allreduce(axis, op=hvd.Adasum),
                               (np.arange(len(axis)) < SIZE).astype(float))  # orthogonal: summed


def test_adasum_restrictions():
    if not power_of_two:
        with pytest.raises(NotImplementedError, match="non-power of 2"):
            hvd.allreduce(np.ones(2), op=hvd.Adasum)
    else:
        with pytest.raises(tf.errors.UnknownError, match="int32"):
            hvd.allreduce(tf.ones([2], tf.int32), op=hvd.Adasum)
    slices = tf.IndexedSlices(tf.ones([1, 2]), tf.constant([0], tf.int64), tf.constant([3, 2],
                                                                                     tf.int64))
    with pytest.raises(NotImplementedError, match="Adasum reduction does not currently"):
        hvd.allreduce(slices, op=hvd.Adasum)
    for op in (hvd.Min, hvd.Max, hvd.Product):
        with pytest.raises(NotImplementedError, match="Only Sum and Average"):
            hvd.allreduce(slices, op=op)
    with pytest.raises(NotImplementedError, match="Pre/postscale"):
        hvd.allreduce(slices, op=hvd.Sum, prescale_factor=2.0)


# ---- broadcasts ----------------------------------------------------------------------------

def test_broadcast_in_place_returns_the_new_values():
    for root in range(SIZE):
        variables = [tf.Variable(full_value(RANK, 2, "float32")), tf.Variable(RANK * 1.5)]
        values = hvd.broadcast_(variables, root_rank=root)
        np.testing.assert_array_equal(variables[0].numpy(), full_value(root, 2, "float32"))
        assert variables[1].numpy() == root * 1.5
        np.testing.assert_array_equal(values[0].numpy(), variables[0].numpy())


def test_broadcast_object_and_its_function():
    for root in range(SIZE):
        mine = {"rank": RANK, "payload": list(range(RANK * 100))}
        got = hvd.broadcast_object(mine, root_rank=root)
        assert got == {"rank": root, "payload": list(range(root * 100))}
        if RANK == root:
            assert got is mine                      # the root keeps its object, as Horovod
    fn = hvd.broadcast_object_fn(root_rank=SIZE - 1)
    assert fn(("from", RANK)) == ("from", SIZE - 1)
    assert hvd_tf.allgather_object(RANK * 2) == [r * 2 for r in range(SIZE)]


def test_broadcast_global_variables_refuses_eager_execution():
    with pytest.raises(RuntimeError, match="does not support eager execution"):
        hvd.broadcast_global_variables(0)


@needs_two
def test_mismatches_are_tensorflows_failed_precondition():
    with pytest.raises(tf.errors.FailedPreconditionError, match="rank") as info:
        hvd.allreduce(tf.zeros([2 + (RANK == 0)]), name="mismatched")
    assert isinstance(info.value, hvd.CollectiveMismatchError)
    assert isinstance(info.value, ValueError)
    np.testing.assert_array_equal(hvd.allreduce(np.ones(2), op=hvd.Sum), np.full(2, SIZE))


# ---- names and queries ---------------------------------------------------------------------

def test_basics():
    assert hvd.mpi_built() is True and hvd.gloo_built() is False
    assert hvd.mpi_enabled() is (SIZE > 1 or hvd.collectives.backend_name() == "mpi")
    assert hvd.nccl_built() == 0 and isinstance(hvd.nccl_built(), int)
    assert not any(f() for f in (hvd.cuda_built, hvd.rocm_built, hvd.ddl_built, hvd.ccl_built,
                                 hvd.gloo_enabled))
    assert hvd.is_homogeneous() is True
    assert isinstance(hvd.mpi_threads_supported(), bool)
    assert hvd.check_num_rank_power_of_2(SIZE) == power_of_two
    eager = [int(f()) for f in (hvd.rank_op, hvd.size_op, hvd.local_rank_op,
                                hvd.local_size_op, hvd.process_set_included_op)]
    assert eager == [RANK, SIZE, hvd.local_rank(), hvd.local_size(), 1]
    assert int(hvd.size_op(process_set_id=999)) == -3

    @tf.function
    def ops():
        return hvd.rank_op(), hvd.size_op()
    rank, size = ops()
    assert (int(rank), int(size), rank.dtype) == (RANK, SIZE, tf.int32)


def test_every_horovod_tensorflow_name_is_there():
    names = """allreduce grouped_allreduce allgather grouped_allgather broadcast broadcast_
    alltoall reducescatter grouped_reducescatter join broadcast_variables
    broadcast_global_variables broadcast_object broadcast_object_fn allgather_object init
    shutdown is_initialized start_timeline stop_timeline size local_size cross_size rank
    local_rank cross_rank is_homogeneous rank_op local_rank_op size_op local_size_op
    process_set_included_op mpi_threads_supported mpi_enabled mpi_built gloo_enabled
    gloo_built nccl_built ddl_built ccl_built cuda_built rocm_built ProcessSet
    global_process_set add_process_set remove_process_set Average Sum Adasum Min Max Product
    Compression DistributedGradientTape check_num_rank_power_of_2""".split()
    missing = [n for n in names if not hasattr(hvd_tf, n)]
    assert not missing


def test_timeline_records_each_collective(tmp_path_factory):
    path = os.path.join(str(tmp_path_factory.getbasetemp()), f"timeline-{SIZE}.json")
    hvd.start_timeline(path)
    hvd.allreduce(np.ones(3), name="timed/allreduce")
    hvd.broadcast(np.ones(2), root_rank=0, name="timed/broadcast")
    hvd.stop_timeline()
    import json
    written = path if RANK == 0 else path.replace(".json", f".rank{RANK}.json")
    with open(written) as stream:
        events = json.load(stream)["traceEvents"]
    names = {(e["name"], e.get("cat")) for e in events if e["ph"] == "X"}
    if hvd.collectives.backend_name() == "mpi":
        assert ("ALLREDUCE", "timed/allreduce") in names
        assert ("BROADCAST", "timed/broadcast") in names
        assert ("NEGOTIATE", "timed/allreduce") in names
