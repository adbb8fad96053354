"""TensorFlow 1 graphs (tf.compat.v1 sessions): collectives matched by name, whatever order
each rank's session reaches them in (see tests/test_mpi_suite.py)."""
import numpy as np
import tensorflow as tf

import distrain as hvd

hvd.init()
RANK, SIZE = hvd.rank(), hvd.size()


def session(graph):
    # one inter-op thread per collective that may run at once (name_matching's rule)
    config = tf.compat.v1.ConfigProto(inter_op_parallelism_threads=6,
                                      intra_op_parallelism_threads=1)
    return tf.compat.v1.Session(graph=graph, config=config)


def test_independent_collectives_built_in_different_orders_match_by_name():
    graph = tf.Graph()
    with graph.as_default():
        a = tf.compat.v1.placeholder(tf.float32, [3])
        b = tf.compat.v1.placeholder(tf.int64, [2, 2])
        c = tf.compat.v1.placeholder(tf.float64, [None, 2])
        built = {}
        order = ["a", "b", "c"] if RANK % 2 == 0 else ["c", "b", "a"]
        for key in order:   # every rank builds the same named ops, in its own order
            if key == "a":
                built[key] = hvd.allreduce(a, op=hvd.Sum, name="sum_a")
            elif key == "b":
                built[key] = hvd.broadcast(b, root_rank=SIZE - 1, name="bcast_b")
            else:
                built[key] = hvd.allgather(c, name="gather_c")
    with session(graph) as sess:
        for _ in range(3):
            out = sess.run(built, {a: np.full(3, RANK + 1.0), b: np.full((2, 2), RANK),
                                   c: np.full((RANK + 1, 2), float(RANK))})
            np.testing.assert_allclose(out["a"], np.full(3, sum(range(1, SIZE + 1))))
            np.testing.assert_array_equal(out["b"], np.full((2, 2), SIZE - 1))
            want = np.concatenate([np.full((r + 1, 2), float(r)) for r in range(SIZE)])
            np.testing.assert_array_equal(out["c"], want)


def test_gradients_in_a_graph():
    graph = tf.Graph()
    with graph.as_default():
        x = tf.constant([1.0, 2.0])
        y = hvd.allreduce(x * (RANK + 1.0), op=hvd.Sum, name="graph_grad")
        grad = tf.gradients(tf.reduce_sum(y), x)[0]
        with session(graph) as sess:
            value, gradient = sess.run([y, grad])
    total = sum(range(1, SIZE + 1))
    np.testing.assert_allclose(value, [total, 2.0 * total])
    np.testing.assert_allclose(gradient, [SIZE * (RANK + 1.0)] * 2)


def test_broadcast_global_variables_in_a_graph():
    graph = tf.Graph()
    with graph.as_default():
        v = tf.compat.v1.Variable([float(RANK), 1.0])
        init = tf.compat.v1.global_variables_initializer()
        sync = hvd.broadcast_global_variables(0)
        with session(graph) as sess:
            sess.run(init)
            sess.run(sync)
            np.testing.assert_array_equal(sess.run(v), [0.0, 1.0])
