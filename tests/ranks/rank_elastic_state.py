"""Horovod's elastic State semantics within one launch, on every rank under a real mpirun
(see tests/test_mpi_suite.py): commit keeps a copy in memory, restore returns to it with no
collective, sync gives every rank rank 0's state. Relaunches are tests/test_elastic_api.py's."""
import numpy as np
import pytest
import tensorflow as tf

import distrain.keras as hvd
from distrain import environment as env

hvd.init()
RANK, SIZE = hvd.rank(), hvd.size()
keras = tf.keras


@pytest.fixture(autouse=True)
def commit_dir(tmp_path, monkeypatch):
    monkeypatch.setenv(env.ELASTIC_DIR, str(tmp_path))
    return tmp_path


def keras_state(**attributes):
    keras.utils.set_random_seed(RANK)          # different weights on every rank
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    optimizer = keras.optimizers.SGD(0.1, momentum=0.9)
    optimizer.build(model.trainable_variables)
    return hvd.elastic.TensorFlowKerasState(model, optimizer, **attributes)


def values(state):
    return [np.asarray(v).copy() for v in state.model.weights]


def test_restore_returns_to_the_last_commit_without_a_collective(commit_dir):
    state = keras_state(epoch=0, batch=0)
    state.epoch, state.batch = 2, 7
    state.commit()
    committed = values(state)
    for v in state.model.weights:
        v.assign(v + 1.0)
    state.epoch, state.batch = 3, 1
    state.restore()
    assert (state.epoch, state.batch) == (2, 7)
    for got, want in zip(values(state), committed):
        np.testing.assert_array_equal(got, want)
    assert state.commits == 1
    assert (commit_dir / "state.npz").is_file() == (RANK == 0)   # for a relaunch


def test_restore_before_any_commit_returns_to_the_state_as_made():
    state = keras_state(epoch=0)
    made = values(state)
    state.epoch = 5
    for v in state.model.weights:
        v.assign(v * 3.0)
    state.restore()
    assert state.epoch == 0
    for got, want in zip(values(state), made):
        np.testing.assert_array_equal(got, want)


def test_sync_gives_every_rank_rank_zeros_model_and_saved_attributes():
    state = keras_state(epoch=RANK, note=f"rank {RANK}")
    state.sync()
    everyone = hvd.allgather_object((state.epoch, state.note, values(state)))
    for epoch, note, weights in everyone:
        assert (epoch, note) == (0, "rank 0")
        for got, want in zip(weights, everyone[0][2]):
            np.testing.assert_array_equal(got, want)
    state.epoch = 9
    state.restore()                  # sync saved what it gave
    assert state.epoch == 0


def test_object_and_variable_states():
    objects = hvd.elastic.ObjectState(step=RANK * 10, history=[RANK])
    objects.step += 1
    objects.commit()
    objects.history.append(99)        # a later change to a mutable attribute
    objects.restore()
    assert objects.step == RANK * 10 + 1 and objects.history == [RANK]
    variables = [tf.Variable(np.full((2,), float(RANK)))]
    tensors = hvd.elastic.TensorFlowState(variables, step=0)
    variables[0].assign([5.0, 6.0])
    tensors.restore()
    np.testing.assert_array_equal(variables[0].numpy(), [RANK, RANK])
    tensors.sync()
    np.testing.assert_array_equal(variables[0].numpy(), [0.0, 0.0])


def test_no_resize_outside_an_elastic_job_and_horovods_exception():
    state = hvd.elastic.ObjectState(step=0)
    state.check_host_updates()        # nothing asked for: returns
    interrupt = hvd.elastic.HostsUpdatedInterrupt(True)
    assert isinstance(interrupt, RuntimeError) and interrupt.skip_sync is True


def test_an_unbuilt_model_is_refused():
    with pytest.raises(ValueError, match="Model must be built first"):
        hvd.elastic.TensorFlowKerasState(keras.Sequential([keras.layers.Dense(2)]))
