"""Fusion planning is pure: the same shapes give the same messages on every rank."""
import numpy as np

from distrain.engine.fusion import (DEFAULT_CHUNK_BYTES, ONE_HOST_CHUNK_BYTES, Bucket, Direct,
                                    chunks, default_chunk_bytes, plan_fusion)


def test_small_tensors_share_a_bucket_and_large_ones_go_direct():
    plan = plan_fusion([(10,), (1 << 20,), (20,)], ["float32"] * 3, threshold=1 << 20,
                       direct_min_bytes=1 << 20)
    assert plan == [Direct(1), Bucket(np.dtype("float32"), (0, 2), (0, 16), 36)]


def test_buckets_close_at_the_threshold_and_split_by_dtype():
    plan = plan_fusion([(100,), (100,), (100,), (5,)], ["float32", "float32", "float32",
                                                        "int64"],
                       threshold=800, direct_min_bytes=1 << 30)
    assert plan == [Bucket(np.dtype("float32"), (0, 1), (0, 112), 212),
                    Bucket(np.dtype("float32"), (2,), (0,), 100),
                    Bucket(np.dtype("int64"), (3,), (0,), 5)]


def test_compression_packs_floats_even_when_large_and_skips_empty():
    plan = plan_fusion([(1 << 20,), (0, 3), (4,)], ["float32", "float32", "int32"],
                       threshold=64 << 20, direct_min_bytes=1024, wire_dtype="float16")
    assert plan == [Bucket(np.dtype("float16"), (0,), (0,), 1 << 20),
                    Bucket(np.dtype("int32"), (2,), (0,), 4)]


def test_every_member_starts_on_a_64_byte_boundary():
    for dtype, itemsize in (("float16", 2), ("float32", 4), ("float64", 8), ("int8", 1)):
        plan = plan_fusion([(3,), (17,), (1,), (64,)], [dtype] * 4, threshold=1 << 20,
                           direct_min_bytes=1 << 30)
        (bucket,) = plan
        assert all(o * itemsize % 64 == 0 for o in bucket.offsets), (dtype, bucket)
        ends = [o + n for o, n in zip(bucket.offsets, (3, 17, 1, 64))]
        assert all(e <= o for e, o in zip(ends, bucket.offsets[1:])) and \
            bucket.count == ends[-1]


def test_no_direct_size_packs_every_tensor():
    plan = plan_fusion([(1 << 20,), (3,)], ["float32"] * 2, threshold=64 << 20,
                       direct_min_bytes=0)
    assert plan == [Bucket(np.dtype("float32"), (0, 1), (0, 1 << 20), (1 << 20) + 3)]


def test_threshold_zero_gives_one_message_per_tensor():
    plan = plan_fusion([(3,), (3,)], ["float32"] * 2, threshold=0, direct_min_bytes=1 << 30)
    assert [p.members for p in plan] == [(0,), (1,)]


def test_chunks_cover_the_message_exactly():
    assert list(chunks(10, 4, 16)) == [(0, 4), (4, 8), (8, 10)]
    assert list(chunks(10, 4, 0)) == [(0, 10)]
    assert list(chunks(0, 4, 16)) == []


def test_chunks_are_larger_when_every_rank_shares_one_host():
    assert default_chunk_bytes(1) == ONE_HOST_CHUNK_BYTES == 16 << 20
    assert default_chunk_bytes(2) == default_chunk_bytes(8) == DEFAULT_CHUNK_BYTES == 1 << 20
