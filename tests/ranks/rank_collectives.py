"""Collective checks run on every rank under a real mpirun (see tests/test_mpi_suite.py).

Each rank builds its inputs from its rank, so every rank can compute the expected result of
the whole world with numpy and compare. Values are small integers (exact in float16 and
bfloat16) unless a test says otherwise.
"""
import os

import numpy as np
import pytest
import tensorflow as tf

import distrain as hvd
from distrain.engine.buffers import bfloat16
from distrain.engine.halfprec import FAST_MIN_ELEMENTS

hvd.init()
RANK, SIZE = hvd.rank(), hvd.size()
DTYPES = ["float16", "bfloat16", "float32", "float64", "int32", "int64"]
OPS = [hvd.Average, hvd.Sum, hvd.Min, hvd.Max]
KINDS = ["numpy", "tensor", "variable"]


def np_dtype(name):
    return np.dtype(bfloat16) if name == "bfloat16" else np.dtype(name)


def value_of(rank, shape, dtype, salt=0):
    count = int(np.prod(shape))
    base = (np.arange(count) * 7 + salt) % 11 - 5 + rank * 3
    return base.reshape(shape).astype(np_dtype(dtype))


def expected(shape, dtype, op, salt=0):
    stack = np.stack([value_of(r, shape, dtype, salt).astype(np.float64) for r in range(SIZE)])
    if op is hvd.Sum:
        out = stack.sum(0)
    elif op is hvd.Min:
        out = stack.min(0)
    elif op is hvd.Max:
        out = stack.max(0)
    else:
        out = stack.sum(0) / SIZE
        if np_dtype(dtype).kind in "iu":
            out = np.trunc(out)
    return out


def wrap(array, kind):
    if kind == "numpy":
        return array
    tensor = tf.constant(array)
    return tf.Variable(tensor) if kind == "variable" else tensor


def unwrap(value, kind):
    if kind == "numpy":
        assert isinstance(value, np.ndarray)
        return value
    assert isinstance(value, tf.Tensor), type(value)
    return value.numpy()


WIRE_TOLERANCE = {"none": 1e-6, "fp16": 1e-3, "bf16": 1e-2}  # an average's 1/size is not exact


def check(actual, want, dtype, shape, wire="none"):
    actual = np.asarray(actual)
    assert actual.dtype == np_dtype(dtype), (actual.dtype, dtype)
    assert actual.shape == tuple(shape)
    tol = max({"float16": 1e-3, "bfloat16": 1e-2}.get(dtype, 1e-6), WIRE_TOLERANCE[wire])
    np.testing.assert_allclose(actual.astype(np.float64), want, rtol=tol, atol=tol)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("op", OPS, ids=lambda o: o.name)
@pytest.mark.parametrize("dtype", DTYPES)
def test_allreduce_every_op_dtype_kind(dtype, op, kind):
    shape = (3, 5)
    result = hvd.allreduce(wrap(value_of(RANK, shape, dtype), kind), op=op, name="t")
    check(unwrap(result, kind), expected(shape, dtype, op), dtype, shape)


@pytest.mark.parametrize("compression", ["fp16", "bf16"])
@pytest.mark.parametrize("op", OPS, ids=lambda o: o.name)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_allreduce_compressed(dtype, op, compression):
    shape = (4, 300)  # exact small integers survive the narrow wire type
    codec = hvd.Compression.by_name(compression)
    result = hvd.allreduce(tf.constant(value_of(RANK, shape, dtype)), op=op,
                           compression=codec)
    check(result.numpy(), expected(shape, dtype, op), dtype, shape, compression)


def test_compression_rounds_like_the_wire_type():
    x = np.full((1000,), 1.0 + 2.0 ** -12 + RANK * 2.0 ** -20, np.float32)
    result = hvd.allreduce(x, op=hvd.Sum, compression=hvd.Compression.fp16)
    want = sum(np.float32(np.float16(1.0 + 2.0 ** -12 + r * 2.0 ** -20)) for r in range(SIZE))
    np.testing.assert_allclose(result, want, rtol=2e-3)
    assert result.dtype == np.float32


@pytest.mark.parametrize("op", [hvd.Average, hvd.Sum], ids=lambda o: o.name)
def test_fp16_buckets_long_enough_for_tensorflows_conversions(op):
    shape = (3 * FAST_MIN_ELEMENTS + 5,)  # packed, converted and summed by TensorFlow
    want = expected(shape, "float32", op)
    compressed = hvd.allreduce(tf.constant(value_of(RANK, shape, "float32")), op=op,
                               compression=hvd.Compression.fp16)
    check(compressed.numpy(), want, "float32", shape, "fp16")
    halves = hvd.grouped_allreduce([value_of(RANK, shape, "float16"), np.ones(3, np.float16)],
                                   op=op)
    check(halves[0], expected(shape, "float16", op), "float16", shape)


@pytest.mark.parametrize("shape", [(), (0,), (0, 4), (1,), (1 << 19,)],
                         ids=["scalar", "empty", "empty2d", "one", "large"])
@pytest.mark.parametrize("dtype", ["float32", "int64", "float16"])
def test_allreduce_shapes(shape, dtype):
    for op in OPS:
        result = hvd.allreduce(tf.constant(value_of(RANK, shape, dtype)), op=op)
        check(result.numpy(), expected(shape, dtype, op), dtype, shape)


@pytest.mark.parametrize("threshold", [0, 4096, 64 << 20])
@pytest.mark.parametrize("compression", ["none", "fp16"])
def test_grouped_allreduce_hundreds_of_mixed_tensors(threshold, compression):
    rng = np.random.default_rng(1234)  # the same list of shapes on every rank
    specs = []
    for i in range(300):
        dtype = DTYPES[rng.integers(len(DTYPES))]
        ndim = int(rng.integers(0, 4))
        shape = tuple(int(d) for d in rng.integers(0, 9, size=ndim))
        if i % 50 == 7:
            shape = (300_000,)  # past the 1 MiB direct-reduction size set below
        specs.append((shape, dtype))
    engine = getattr(hvd.collectives.backend(), "engine", None)  # the horovod backend has none
    if engine is None and threshold:
        pytest.skip("fusion thresholds are the mpi backend's; run once with the default")
    saved = (engine.fusion_threshold, engine.chunk_bytes) if engine else None
    if engine:
        engine.fusion_threshold, engine.chunk_bytes = threshold, 1 << 20
    try:
        inputs = [wrap(value_of(RANK, s, d, salt=i), KINDS[i % 3])
                  for i, (s, d) in enumerate(specs)]
        results = hvd.grouped_allreduce(inputs, op=hvd.Average, compression=compression)
    finally:
        if engine:
            engine.fusion_threshold, engine.chunk_bytes = saved
    assert len(results) == len(specs)
    for i, ((shape, dtype), result) in enumerate(zip(specs, results)):
        check(unwrap(result, KINDS[i % 3]), expected(shape, dtype, hvd.Average, salt=i),
              dtype, shape, compression if dtype in ("float32", "float64") else "none")


def test_random_floats_average_matches_numpy():
    shapes = [(64, 33), (5,), (1 << 18,)]
    data = [[np.random.default_rng(r * 100 + i).standard_normal(s).astype(np.float32)
             for i, s in enumerate(shapes)] for r in range(SIZE)]
    results = hvd.grouped_allreduce([tf.constant(a) for a in data[RANK]])
    for i, result in enumerate(results):
        want = np.mean([data[r][i].astype(np.float64) for r in range(SIZE)], axis=0)
        np.testing.assert_allclose(result.numpy(), want, rtol=1e-5, atol=1e-6)


def test_ranks_on_one_host_send_16_mib_chunks():
    if hvd.collectives.backend_name() != "mpi" or "DISTRAIN_CHUNK_BYTES" in os.environ:
        pytest.skip("the mpi backend's default chunk size")
    assert hvd.cross_size() == 1   # the suite runs on one host
    assert hvd.collectives.chunk_bytes() == 16 << 20


@pytest.mark.parametrize("kind", ["numpy", "tensor"])
def test_held_results_keep_their_values_through_later_calls(kind):
    # a bucket past 1 MiB: its buffer is pooled, and the results are views of it
    shapes = [(3, 5), (200_000,), (17,), (64, 65), (200_001,)]
    held = hvd.grouped_allreduce([wrap(value_of(RANK, s, "float32", salt=1), kind)
                                  for s in shapes], op=hvd.Sum)
    for salt in (2, 3, 4):
        later = hvd.grouped_allreduce([wrap(value_of(RANK, s, "float32", salt=salt), kind)
                                       for s in shapes], op=hvd.Sum)
        for shape, result in zip(shapes, later):
            check(unwrap(result, kind), expected(shape, "float32", hvd.Sum, salt=salt),
                  "float32", shape)
        del later, result
    for shape, result in zip(shapes, held):
        check(unwrap(result, kind), expected(shape, "float32", hvd.Sum, salt=1), "float32",
              shape)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_broadcast_every_root(dtype, kind):
    for root in range(SIZE):
        for shape in [(2, 3), (), (0,), (1 << 18,)]:
            result = hvd.broadcast(wrap(value_of(RANK, shape, dtype), kind), root_rank=root)
            check(unwrap(result, kind), value_of(root, shape, dtype).astype(np.float64),
                  dtype, shape)


def test_broadcast_variables_every_root():
    import keras
    for root in range(SIZE):
        tf_vars = [tf.Variable(value_of(RANK, s, "float32", salt=i))
                   for i, s in enumerate([(3, 3), (7,), ()])]
        make = getattr(keras, "Variable", tf.Variable)  # Keras 2 models hold tf.Variables
        keras_var = make(value_of(RANK, (4, 2), "float32"))
        hvd.broadcast_variables(tf_vars + [keras_var], root_rank=root)
        for i, (v, s) in enumerate(zip(tf_vars, [(3, 3), (7,), ()])):
            np.testing.assert_array_equal(v.numpy(), value_of(root, s, "float32", salt=i))
        np.testing.assert_array_equal(np.asarray(keras_var.numpy()),
                                      value_of(root, (4, 2), "float32"))


@pytest.mark.parametrize("kind", ["numpy", "tensor"])
@pytest.mark.parametrize("dtype", DTYPES)
def test_allgather_uneven_first_dimension(dtype, kind):
    rows = [(r * 2 + 1) % 4 for r in range(SIZE)]  # includes a rank with 3 rows and with 1
    rows[-1] = 0 if SIZE > 2 else rows[-1]          # and an empty contribution
    mine = value_of(RANK, (rows[RANK], 3), dtype)
    result = unwrap(hvd.allgather(wrap(mine, kind)), kind)
    want = np.concatenate([value_of(r, (rows[r], 3), dtype) for r in range(SIZE)])
    check(result, want.astype(np.float64), dtype, want.shape)


def test_allgather_scalar_counts_as_one_row():
    result = hvd.allgather(np.int64(RANK * 10))
    np.testing.assert_array_equal(result, np.arange(SIZE) * 10)


def test_indexed_slices_are_gathered():
    values = tf.constant(value_of(RANK, (2, 4), "float32"))
    indices = tf.constant([RANK, (RANK + 1) % 5], tf.int64)
    slices = tf.IndexedSlices(values, indices, dense_shape=tf.constant([5, 4], tf.int64))
    for op in (hvd.Sum, hvd.Average):
        result = hvd.allreduce(slices, op=op)
        assert isinstance(result, tf.IndexedSlices)
        dense = tf.convert_to_tensor(result).numpy()
        want = np.zeros((5, 4))
        for r in range(SIZE):
            for row, index in enumerate([r, (r + 1) % 5]):
                want[index] += value_of(r, (2, 4), "float32")[row]
        np.testing.assert_allclose(dense, want / (SIZE if op is hvd.Average else 1))
    with pytest.raises(NotImplementedError, match="Only Sum and Average"):
        hvd.allreduce(slices, op=hvd.Max)


def test_inside_tf_function():
    @tf.function
    def step(a, b, c):
        summed = hvd.grouped_allreduce([a, b], op=hvd.Sum)
        gathered = hvd.allgather(c)
        root = hvd.broadcast(a, root_rank=SIZE - 1)
        return summed, gathered, root

    a = tf.constant(value_of(RANK, (3, 2), "float32"))
    b = tf.constant(value_of(RANK, (4,), "int32"))
    c = tf.constant(value_of(RANK, (RANK + 1, 2), "float64"))
    for _ in range(3):  # traced once, run three times
        (sa, sb), gathered, root = step(a, b, c)
        check(sa.numpy(), expected((3, 2), "float32", hvd.Sum), "float32", (3, 2))
        check(sb.numpy(), expected((4,), "int32", hvd.Sum), "int32", (4,))
        want = np.concatenate([value_of(r, (r + 1, 2), "float64") for r in range(SIZE)])
        check(gathered.numpy(), want, "float64", want.shape)
        check(root.numpy(), value_of(SIZE - 1, (3, 2), "float32"), "float32", (3, 2))
    assert step.experimental_get_tracing_count() == 1


def test_prescale_and_postscale():
    x = value_of(RANK, (6,), "float32")
    result = hvd.allreduce(x, op=hvd.Sum, prescale_factor=2.0, postscale_factor=0.5)
    np.testing.assert_allclose(result, expected((6,), "float32", hvd.Sum))


needs_two = pytest.mark.skipif(SIZE == 1, reason="a cross-rank mismatch needs two ranks")
BACKEND = hvd.collectives.backend().name
mpi_messages = pytest.mark.skipif(BACKEND != "mpi", reason="the rank-naming message is the "
                                  "mpi backend's; Horovod's own message is checked elsewhere")


@needs_two
def test_mismatched_shapes_raise_on_every_backend():
    with pytest.raises(hvd.CollectiveMismatchError, match="grad/v"):
        hvd.allreduce(np.zeros((2, 3 + (RANK == SIZE - 1)), np.float32), name="grad/v")
    np.testing.assert_array_equal(hvd.allreduce(np.ones(2), op=hvd.Sum), np.full(2, SIZE))


@needs_two
@mpi_messages
def test_mismatched_shapes_name_the_ranks():
    with pytest.raises(hvd.CollectiveMismatchError) as info:
        hvd.allreduce(np.zeros((2, 3 + (RANK == SIZE - 1)), np.float32), name="grad/w")
    message = str(info.value)
    assert "grad/w" in message and "tensor 0 differs" in message
    assert f"rank {SIZE - 1} has float32[2, 4]" in message
    # The world is still usable afterwards.
    np.testing.assert_array_equal(hvd.allreduce(np.ones(2), op=hvd.Sum), np.full(2, SIZE))


@needs_two
@mpi_messages
def test_mismatched_dtypes_and_counts_are_caught():
    dtype = np.float64 if RANK == 0 else np.float32
    with pytest.raises(hvd.CollectiveMismatchError, match="rank 0 has float64"):
        hvd.allreduce(np.zeros(3, dtype))
    with pytest.raises(hvd.CollectiveMismatchError, match="tensor counts differ"):
        hvd.grouped_allreduce([np.zeros(2)] * (1 + (RANK == 0)))
    with pytest.raises(hvd.CollectiveMismatchError, match="dimensions|float32"):
        hvd.allgather(np.zeros((1, 2 + RANK), np.float32))
    with pytest.raises(hvd.CollectiveMismatchError, match="root 0.*root 1"):
        hvd.broadcast(np.zeros(2), root_rank=RANK % 2)


@needs_two
@mpi_messages
def test_ranks_that_fuse_differently_are_caught():
    collectives = hvd.collectives
    saved = collectives.fusion_threshold(), collectives.chunk_bytes()
    collectives.set_fusion(saved[0] if RANK else saved[0] // 2, saved[1])
    try:
        with pytest.raises(hvd.CollectiveMismatchError, match="fusion"):
            hvd.grouped_allreduce([np.ones(4, np.float32)], op=hvd.Sum)
    finally:
        collectives.set_fusion(*saved)
    np.testing.assert_array_equal(hvd.allreduce(np.ones(2), op=hvd.Sum), np.full(2, SIZE))


def test_bad_arguments_raise_before_communicating():
    with pytest.raises(ValueError, match="unknown reduction op 'median'"):
        hvd.allreduce(np.ones(2), op="median")
    with pytest.raises(ValueError, match="out of range"):
        hvd.broadcast(np.ones(2), root_rank=SIZE)
    with pytest.raises(ValueError, match="out of range"):
        hvd.broadcast(np.ones(2), root_rank=-1)
    with pytest.raises(ValueError, match="unknown compression"):
        hvd.allreduce(np.ones(2), compression="int8")
    with pytest.raises(TypeError, match="numeric"):
        hvd.allreduce(np.array(["a", "b"]))


def test_world_matches_mpi():
    from mpi4py import MPI
    assert (RANK, SIZE) == (MPI.COMM_WORLD.Get_rank(), MPI.COMM_WORLD.Get_size())
    assert hvd.local_size() == SIZE and hvd.local_rank() == RANK  # one host
    assert (hvd.cross_rank(), hvd.cross_size()) == (0, 1)
    hvd.barrier()
