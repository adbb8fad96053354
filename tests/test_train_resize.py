"""Resuming on another number of ranks (distrain.train.position, distrain.train.lr_schedule):
where the run is, the per-rank batch, the learning-rate ramp, the re-cut shards, and the kept
checkpoints."""
import numpy as np
import pytest

from distrain.errors import UsageError
from distrain.train import checkpoint
from distrain.train.data.arrays import Dataset, shard_batches
from distrain.train.lr_schedule import Schedule
from distrain.train.position import Position, position_of, rank_batch


def _data(samples=1000):
    x = np.arange(samples, dtype=np.float32).reshape(samples, 1, 1, 1)
    return Dataset("ids", x, np.zeros(samples, np.int64), None, None, 10)


def _ids(batches) -> list[int]:
    return [int(v) for x, _ in batches for v in x.reshape(-1)]


def test_an_epoch_cut_at_3_ranks_then_2_reads_every_sample_once():
    data, batch, seed, epoch = _data(), 16, 7, 3
    budget = (1000 // (batch * 3)) * batch * 3           # 20 steps of 48
    before = [i for r in range(3) for i in _ids(shard_batches(data, epoch, seed, batch, r, 3,
                                                              steps=8))]
    at = Position(8, epoch, 8 * batch * 3, budget)
    after = [i for r in range(2) for i in _ids(shard_batches(
        data, epoch, seed, batch, r, 2, at.steps_left(batch * 2), offset=at.epoch_samples))]
    seen = before + after
    assert len(seen) == len(set(seen))                     # nothing read twice
    order = np.random.default_rng((seed, epoch)).permutation(1000)
    assert sorted(seen) == sorted(order[:len(seen)].tolist())   # nothing skipped
    assert len(seen) == budget                             # 960: no remainder at 2 x 16 either


def test_a_shared_stream_cut_at_3_ranks_then_2_reads_every_sample_once():
    import tensorflow as tf
    from distrain.train.data.stream import skip_records
    records = tf.data.Dataset.range(100)          # an epoch's shared, shuffled order
    batch = 4

    def taken(size, rank, skip, steps):
        part = skip_records(records, skip, size, rank, shared=True).batch(batch)
        return [int(v) for b in part.take(steps) for v in b.numpy()]

    before = [i for r in range(3) for i in taken(3, r, 0, 5)]      # 5 steps of 12
    after = [i for r in range(2) for i in taken(2, r, 60, 5)]      # 5 steps of 8
    assert sorted(before + after) == list(range(100))
    # the same size resumed reads what the uninterrupted epoch would
    assert taken(3, 1, 24, 3) == taken(3, 1, 0, 5)[2 * batch:]
    own = tf.data.Dataset.range(40)                                # a rank's own files
    assert [int(v) for v in skip_records(own, 24, 3, 0, shared=False).take(2)] == [8, 9]


def test_the_same_size_resume_reads_what_the_uninterrupted_epoch_would():
    data = _data()
    whole = _ids(shard_batches(data, 0, 1, 8, 1, 2, steps=10))
    resumed = _ids(shard_batches(data, 0, 1, 8, 1, 2, steps=10, start=4))
    offset = _ids(shard_batches(data, 0, 1, 8, 1, 2, steps=6, offset=4 * 16))
    assert resumed == offset == whole[4 * 8:]


def test_positions_move_to_the_next_epoch_when_this_one_is_used_up():
    assert Position(30, 1, 960, 960).normalised(64, 4096) == Position(30, 2, 0, 4096)
    assert Position(30, 1, 900, 960).normalised(64, 4096) == Position(30, 2, 0, 4096)
    assert Position(30, 1, 896, 960).normalised(64, 4096) == Position(30, 1, 896, 960)
    assert Position(30, 1, 0, 960).normalised(64, 4096) == Position(30, 1, 0, 4096)
    assert Position(0, 0, 896, 960).steps_left(32) == 2


def test_a_checkpoint_without_a_position_is_read_as_one_of_this_size():
    assert position_of({"step": 25, "epoch": 1}, 10, 64) == Position(25, 2, 320, 640)
    assert position_of({"step": 25, "epoch": 2, "epoch_samples": 100, "epoch_budget": 900},
                       10, 64) == Position(25, 2, 100, 900)


def test_a_fixed_global_batch_is_split_over_the_ranks_or_refused():
    assert rank_batch(32, None, 3) == 32
    assert rank_batch(32, 96, 3) == 32 and rank_batch(32, 96, 2) == 48
    with pytest.raises(UsageError) as raised:
        rank_batch(32, 96, 5)
    assert str(raised.value) == ("--global-batch-size 96 does not split evenly over 5 ranks; "
                                 "give a multiple of every job size it may run at")


def test_a_resize_ramps_the_rate_from_the_saved_one_to_the_new_size():
    saved = Schedule(0.01, 3, True, warmup_steps=0)
    meta = dict(saved.header(40), size=3)
    assert meta["learning_rate"] == pytest.approx(0.03)
    resumed = Schedule(0.01, 2, True, warmup_steps=0)
    said = resumed.resume(meta, 40, 3, ramp_steps=4)
    assert said == "learning rate 0.03 -> 0.02 over 4 steps (--resize-warmup-steps)"
    rates = [resumed.at(step) for step in range(40, 46)]
    assert rates == pytest.approx([0.028, 0.026, 0.024, 0.022, 0.02, 0.02])
    # a checkpoint taken during the ramp carries it on
    again = Schedule(0.01, 2, True, warmup_steps=0)
    assert again.resume(dict(resumed.header(42), size=2), 42, 2, ramp_steps=4) == ""
    assert again.at(42) == pytest.approx(0.024)


def test_no_ramp_when_the_rate_does_not_depend_on_the_size():
    fixed = Schedule(0.05, 2, False, warmup_steps=0)
    assert fixed.resume({"learning_rate": 0.05}, 10, 4, ramp_steps=20) == ""
    assert fixed.at(10) == 0.05
    assert Schedule(0.01, 2, True, 0).resume({"learning_rate": 0.03}, 5, 3, 0) == \
        "learning rate 0.03 -> 0.02"


def test_kept_checkpoints_are_whole_files_and_only_the_last_n_stay(tmp_path):
    for step in (5, 10, 15, 20):
        checkpoint.save(str(tmp_path), step, 0, [np.full(3, step)], [], {"m": 1}, keep=2)
    assert [s for s, _ in checkpoint.kept(str(tmp_path))] == [15, 20]
    meta, model, _ = checkpoint.load(str(tmp_path))
    assert meta["step"] == 20 and model[0].tolist() == [20, 20, 20]
    with np.load(tmp_path / "checkpoint-15.npz") as kept:
        assert kept["model/00000"].tolist() == [15, 15, 15]
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "checkpoint-15.npz", "checkpoint-20.npz", "checkpoint.npz"]
