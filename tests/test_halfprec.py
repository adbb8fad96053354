"""float16 conversions and sums through TensorFlow give numpy's results bit for bit."""
import numpy as np
import pytest

from distrain.engine import halfprec
from distrain.engine.buffers import aligned_empty

tf = pytest.importorskip("tensorflow")
COUNT = 2 * halfprec.FAST_MIN_ELEMENTS + 3


def _random(dtype, count=COUNT, seed=0):
    rng = np.random.default_rng(seed)
    # every float16 regime: subnormals, normals, values past float16's range
    values = rng.standard_normal(count) * 10.0 ** rng.integers(-9, 6, count)
    values[:4] = [np.inf, -np.inf, np.nan, 70000.0]
    with np.errstate(over="ignore"):
        return values.astype(dtype)


def test_tensorflow_is_used_only_past_the_threshold():
    assert halfprec.fast_half(halfprec.FAST_MIN_ELEMENTS) is tf
    assert halfprec.fast_half(halfprec.FAST_MIN_ELEMENTS - 1) is None


@pytest.mark.parametrize("aligned", [True, False], ids=["aligned", "unaligned"])
@pytest.mark.parametrize("down", [True, False], ids=["float32-to-16", "float16-to-32"])
def test_casts_round_as_numpy_does(down, aligned):
    src_dtype, dst_dtype = (np.float32, np.float16) if down else (np.float16, np.float32)
    src = _random(src_dtype)
    if aligned:
        held = aligned_empty(src.shape, src.dtype)
        held[...] = src
        src = held
    else:
        src = np.concatenate([src[:1], src])[1:]  # one element past an aligned start
    dst = np.empty(src.shape, dst_dtype)
    halfprec.cast_into(dst, src)
    with np.errstate(over="ignore"):
        want = src.astype(dst_dtype)
    if down:
        np.testing.assert_array_equal(dst.view(np.uint16), want.view(np.uint16))
    else:
        np.testing.assert_array_equal(dst, want)


@pytest.mark.parametrize("count", [COUNT, 100])
def test_sums_round_as_numpy_does(count):
    addend = _random(np.float16, count, seed=1)
    addend.flags.writeable = False   # as MPI's incoming buffer may be
    total = _random(np.float16, count, seed=2)
    with np.errstate(over="ignore", invalid="ignore"):
        want = np.add(addend, total)
    halfprec.add_into(addend, total)
    np.testing.assert_array_equal(total.view(np.uint16), want.view(np.uint16))


def test_other_dtypes_keep_numpys_loops():
    total = np.arange(COUNT, dtype=np.float32)
    halfprec.add_into(np.ones(COUNT, np.float32), total)
    assert total[5] == 6.0
    out = np.empty(3, np.float64)
    halfprec.cast_into(out, np.array([1, 2, 3], np.int32))
    assert out.tolist() == [1.0, 2.0, 3.0]
