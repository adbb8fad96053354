"""The overlap schedule (which gradients go into which bucket, in which order) and the queue
that runs the buckets' collectives in the background, in the order they were issued."""
import threading
import time

import pytest

from distrain.engine.bucket_queue import CollectiveQueue, on_queue_thread, plan_buckets
from distrain.overlap import bucket_sizes, overlap_enabled


def test_buckets_go_from_the_last_tensor_to_the_first_the_first_bucket_small():
    sizes = [400, 100, 100, 100, 100, 50]
    assert plan_buckets(sizes, first_bucket_bytes=100, bucket_bytes=250) == \
        [(5, 4), (3, 2, 1), (0,)]


def test_a_tensor_above_the_limit_is_a_bucket_of_its_own_and_nothing_is_lost():
    plan = plan_buckets([10, 5000, 10, 10], first_bucket_bytes=15, bucket_bytes=100)
    assert plan == [(3, 2), (1,), (0,)]
    assert plan_buckets([], 1, 1) == []
    assert plan_buckets([7], 100, 100) == [(0,)]


def test_the_queue_runs_in_submission_order_and_drain_waits_for_all():
    queue, ran = CollectiveQueue(), []

    def job(k):
        def run():
            time.sleep(0.02 if k % 2 else 0)
            ran.append((k, threading.current_thread().name))
            return k * k
        return run

    handles = [queue.submit(job(k)) for k in range(6)]
    queue.drain()
    assert [k for k, _ in ran] == list(range(6))
    assert all(name.startswith("distrain-collectives") for _, name in ran)
    assert queue.wait(queue.submit(on_queue_thread)) is True and not on_queue_thread()
    assert [queue.wait(h) for h in handles] == [k * k for k in range(6)]
    assert queue.pending() == 0
    queue.close()


def test_an_error_in_a_queued_collective_reaches_its_waiter():
    queue = CollectiveQueue()

    def fail():
        raise ValueError("ranks disagree on shapes")

    handle = queue.submit(fail)
    queue.drain()
    with pytest.raises(ValueError, match="ranks disagree"):
        queue.wait(handle)
    with pytest.raises(KeyError):
        queue.wait(handle)
    queue.close()


@pytest.mark.parametrize("value, on", [("1", True), ("0", False), ("off", False),
                                       ("false", False), ("yes", True), ("on", True)])
def test_the_overlap_switch_is_off_unless_set(value, on):
    assert overlap_enabled({"DISTRAIN_OVERLAP": value}) is on
    assert overlap_enabled({}) is False


def test_bucket_sizes_from_the_environment():
    assert bucket_sizes({}) == (1024 * 1024, 25 * 1024 * 1024)
    assert bucket_sizes({"DISTRAIN_FIRST_BUCKET_BYTES": "64",
                         "DISTRAIN_BUCKET_BYTES": "512"}) == (64, 512)
    with pytest.raises(ValueError, match="DISTRAIN_BUCKET_BYTES"):
        bucket_sizes({"DISTRAIN_BUCKET_BYTES": "0"})


def test_collective_work_runs_with_autograph_off_in_graph_ops_and_on_the_queue(monkeypatch):
    # Closures made while tf.function traces are AutoGraph-rewritten; running them per step
    # with AutoGraph on went through its conversion machinery at every call (a step of
    # overlapped resnet spent ~90 ms there). Record AutoGraph's state where the work runs.
    import numpy as np
    import tensorflow as tf
    from tensorflow.python.autograph.core import ag_ctx

    import distrain as hvd
    from distrain import collectives
    from distrain.overlap import overlapped_allreduce

    seen = []
    real_runner = collectives.allreduce_runner

    def recording_runner(*args):
        run = real_runner(*args)

        def recorded(arrays):
            seen.append(("queue", ag_ctx.control_status_ctx().status))
            return run(arrays)
        return recorded

    monkeypatch.setattr(collectives, "allreduce_runner", recording_runner)
    monkeypatch.setenv("DISTRAIN_OVERLAP", "1")
    monkeypatch.setenv("DISTRAIN_FIRST_BUCKET_BYTES", "8")
    hvd.init("local")
    try:
        @tf.function
        def step(tensors):
            def probe(arrays):          # made during tracing, so AutoGraph rewrites it
                seen.append(("op", ag_ctx.control_status_ctx().status))
                return arrays
            from distrain.engine.tensors import graph_collective
            echoed = graph_collective(probe, tensors, [t.shape for t in tensors])
            return overlapped_allreduce(echoed, op=hvd.Sum)

        tensors = [tf.ones([3]), tf.fill([2, 2], 2.0)]
        out = step(tensors)
        np.testing.assert_array_equal(out[1].numpy(), np.full((2, 2), 2.0))
    finally:
        hvd.shutdown()
    assert {where for where, _ in seen} == {"op", "queue"}
    assert all(status == ag_ctx.Status.DISABLED for _, status in seen), seen


def test_gradients_that_fill_one_bucket_take_the_grouped_path(monkeypatch):
    import tensorflow as tf

    import distrain as hvd
    from distrain.overlap import start_overlapped_allreduce

    monkeypatch.setenv("DISTRAIN_OVERLAP", "1")
    hvd.init("local")
    try:
        def started(first_bucket_bytes):
            monkeypatch.setenv("DISTRAIN_FIRST_BUCKET_BYTES", str(first_bucket_bytes))
            return tf.function(lambda t: start_overlapped_allreduce(t) is not None)(
                [tf.ones([4]), tf.ones([4])])
        assert not started(1 << 20)     # 32 bytes in a 1 MiB first bucket: nothing overlaps
        assert started(16)              # two buckets: the last tensor's starts first
    finally:
        hvd.shutdown()
