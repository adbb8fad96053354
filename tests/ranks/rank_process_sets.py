"""Process sets and join on every rank under a real mpirun (see tests/test_mpi_suite.py) or
horovodrun (tests/horovod/test_horovodrun.py)."""
import os

import numpy as np
import pytest
import tensorflow as tf

import distrain as hvd
import distrain.tensorflow as hvd_tf

STARTED_EARLIER = hvd.is_initialized()   # by another rank_*.py collected first
hvd.init(process_sets="dynamic")
RANK, SIZE = hvd.rank(), hvd.size()
needs_two = pytest.mark.skipif(SIZE == 1, reason="needs two ranks")
HOROVOD = hvd.collectives.backend_name() == "horovod"
# Horovod takes its dynamic mode when it starts: after an earlier plain init() it has none.
ADDABLE = not (HOROVOD and STARTED_EARLIER and
               os.environ.get("HOROVOD_DYNAMIC_PROCESS_SETS", "0") in ("0", ""))


@pytest.fixture
def sets():
    """Evens and odds (disjoint), and the last two ranks; removed afterwards."""
    if SIZE == 1:
        pytest.skip("at one rank every set is the global set")
    if not ADDABLE:
        pytest.skip("Horovod was started without dynamic process sets by an earlier "
                    "file's init(); tests/horovod runs this file on its own")
    made = [hvd.add_process_set(list(range(0, SIZE, 2)))]
    made.append(hvd.add_process_set(list(range(1, SIZE, 2))))
    if SIZE > 2:
        made.append(hvd.add_process_set([SIZE - 2, SIZE - 1]))
    yield made
    for process_set in made:
        assert hvd.remove_process_set(process_set)


def test_set_queries(sets):
    evens = sets[0]
    assert evens.ranks == list(range(0, SIZE, 2)) and evens.size() == len(evens.ranks)
    assert evens.included() == (RANK % 2 == 0)
    if RANK % 2 == 0:
        assert evens.rank() == RANK // 2
    else:
        with pytest.raises(ValueError, match="not part of"):
            evens.rank()
    assert hvd.global_process_set.ranks == list(range(SIZE))
    assert hvd.global_process_set.process_set_id == 0
    assert int(hvd.process_set_included_op(evens.process_set_id)) == int(RANK % 2 == 0)
    assert int(hvd.size_op(evens.process_set_id)) == evens.size()
    if HOROVOD and evens.included():   # the set's collectives are Horovod's, on its set
        assert evens._backend.process_set.ranks == evens.ranks


def test_disjoint_sets_reduce_at_once(sets):
    mine = sets[0] if RANK % 2 == 0 else sets[1]
    x = np.full(3, RANK + 1.0)
    result = hvd.allreduce(x, op=hvd.Sum, process_set=mine)
    np.testing.assert_array_equal(result, np.full(3, sum(r + 1.0 for r in mine.ranks)))
    gathered = hvd.allgather(np.array([RANK]), process_set=mine)
    np.testing.assert_array_equal(gathered, mine.ranks)
    root = mine.ranks[-1]  # a global rank, as in Horovod
    np.testing.assert_array_equal(
        hvd.broadcast(np.array([RANK]), root_rank=root, process_set=mine), [root])
    received = hvd.alltoall(np.full(len(mine.ranks), RANK), process_set=mine)
    np.testing.assert_array_equal(received, mine.ranks)
    scattered = hvd.reducescatter(np.ones((len(mine.ranks), 2)), op=hvd.Sum, process_set=mine)
    np.testing.assert_array_equal(scattered, np.full((1, 2), len(mine.ranks)))
    assert hvd.allgather_object(RANK, process_set=mine) == mine.ranks


def test_tensors_and_gradients_on_a_set(sets):
    mine = sets[0] if RANK % 2 == 0 else sets[1]
    with tf.GradientTape() as tape:
        x = tf.constant([1.0, 2.0])
        tape.watch(x)
        y = hvd.allreduce(x, op=hvd.Sum, process_set=mine)
    np.testing.assert_allclose(y.numpy(), [len(mine.ranks), 2.0 * len(mine.ranks)])
    np.testing.assert_allclose(tape.gradient(y, x).numpy(), [len(mine.ranks)] * 2)


def test_a_rank_outside_the_set_gets_invalid_argument(sets):
    evens = sets[0]
    if evens.included():
        hvd.allreduce(np.ones(1), process_set=evens)
    else:
        with pytest.raises(tf.errors.InvalidArgumentError, match="not a member"):
            hvd.allreduce(tf.ones([1]), process_set=evens)


def test_distributed_tape_on_a_set_leaves_outsiders_alone(sets):
    evens = sets[0]
    with tf.GradientTape() as tape:
        v = tf.Variable([float(RANK)])
        loss = tf.reduce_sum(v * (RANK + 1.0))
    grads = hvd_tf.DistributedGradientTape(tape, process_set=evens).gradient(loss, [v])
    want = np.mean([r + 1.0 for r in evens.ranks]) if evens.included() else RANK + 1.0
    np.testing.assert_allclose(grads[0].numpy(), [want])


def test_registration_errors():
    with pytest.raises(ValueError, match="list of process ranks"):
        hvd.ProcessSet([np.int64(0)])
    with pytest.raises(ValueError, match="duplicate"):
        hvd.add_process_set(list(range(SIZE)))
    with pytest.raises(ValueError, match="does not exist or has not been registered"):
        hvd.allreduce(np.ones(1), process_set=hvd.ProcessSet([0]))
    assert hvd.remove_process_set(hvd.global_process_set) is False
    if SIZE & (SIZE - 1) == 0 and SIZE > 1 and ADDABLE:
        evens = hvd.add_process_set(list(range(0, SIZE, 2)))
        try:
            if evens.included():
                with pytest.raises(NotImplementedError, match="non-global process sets"):
                    hvd.allreduce(np.ones(2), op=hvd.Adasum, process_set=evens)
        finally:
            hvd.remove_process_set(evens)


# ---- join ----------------------------------------------------------------------------------

# Under horovodrun distrain calls Horovod's own join, whose second call in one job returned
# before the other rank had joined (Horovod 0.28.1, CPU; Horovod tests join on GPUs only).
mpi_join = pytest.mark.skipif(HOROVOD, reason="Horovod 0.28.1's CPU join returns early "
                              "when called again; distrain's join is the mpi backend's")


@mpi_join
@pytest.mark.parametrize("op", [hvd.Sum, hvd.Average], ids=lambda o: o.name)
def test_join_lets_uneven_loops_finish(op):
    steps = RANK + 1            # rank r runs r + 1 steps; the others joined meanwhile
    for step in range(steps):
        live = [r for r in range(SIZE) if r + 1 > step]
        result = hvd.allreduce(tf.fill([2, 2], float(RANK + 1)), op=op, name=f"step {step}")
        total = sum(r + 1.0 for r in live)
        np.testing.assert_allclose(result.numpy(), np.full((2, 2), total / (
            SIZE if op is hvd.Average else 1)))   # joined ranks add zeros; Average over all
    last = hvd_tf.join()
    assert isinstance(last, tf.Tensor) and last.dtype == tf.int32
    assert int(last) == SIZE - 1
    np.testing.assert_array_equal(hvd.allreduce(np.ones(1), op=hvd.Sum), [SIZE])


@mpi_join
def test_join_with_a_loop_in_tf_function():
    @tf.function
    def train_step(x):
        return hvd.allreduce(x, op=hvd.Sum)

    for step in range(2 * (SIZE - RANK)):   # rank 0 runs longest
        train_step(tf.ones([3]))
    assert int(hvd.join()) == 0


@needs_two
@mpi_join
def test_collectives_other_than_allreduce_refuse_joined_ranks():
    if RANK == 0:
        assert hvd.join() == SIZE - 1
        return
    with pytest.raises(tf.errors.FailedPreconditionError, match="Broadcast is not supported"):
        hvd.broadcast(tf.ones([2]), root_rank=1)
    with pytest.raises(tf.errors.FailedPreconditionError, match="Allgather is not supported"):
        hvd.allgather(tf.ones([2]))
    hvd.barrier()
    assert hvd.join() == SIZE - 1
