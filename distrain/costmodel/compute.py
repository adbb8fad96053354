"""Compute, data and apply costs, timed on this rank as separate terms.

**Sub-models.** A model is cut where every path passes through one tensor
(:func:`submodels`): after every layer of a chain, between the blocks of a residual network.
The loss is one more sub-model. Each sub-model's forward and backward (gradients of its
weights and of its input) is timed on random inputs of its input shape at the per-rank
batch, as its own ``tf.function``.

**In turn.** All terms (data fetch, each sub-model, the loss, the optimizer update) run one
after another, as in a step, for several rounds, and each term's median counts
(:func:`time_in_turn`). Timing one term many times in a row would find its data hot in the
caches and predict too little; measured here, that under-predicted a ResNet step by ~19 %.

**Call overhead.** Each separate ``tf.function`` call costs a fixed dispatch time that the
whole model, run as one function, pays once. It is timed on a function that returns its
input, taken off every sub-model, and added back once:

    compute = call + sum over sub-models max(T_i - call, 0)
"""
from __future__ import annotations

import statistics
import time

import numpy as np

__all__ = ["submodels", "step_functions", "time_in_turn", "median_seconds"]


def median_seconds(fn, repeats: int, warmup: int = 2) -> float:
    """The median wall time of ``fn()`` over ``repeats`` runs, after ``warmup`` runs."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _ids(tensors) -> list[int]:
    return [id(t) for t in (tensors if isinstance(tensors, (list, tuple)) else [tensors])]


def submodels(model) -> list:
    """Cuts ``model`` into sub-models at the tensors every path passes through.

    A layer's output is a cut point when nothing computed before it is needed after it. A
    chain of layers (an MLP, a plain CNN) is cut after every layer; a residual network is cut
    between its blocks, so each block, shortcut included, is one sub-model. A model whose
    layers cannot be traced (a subclassed model) is one sub-model.

    Returns:
        ``(name, sub-model)`` pairs in order; a name is ``first..last`` layer names.
    """
    import keras
    layers = [l for l in model.layers if not isinstance(l, keras.layers.InputLayer)]
    try:
        needs = [_ids(layer.input) for layer in layers]
        outputs = [id(layer.output) for layer in layers]
        start = model.inputs[0] if len(model.inputs) == 1 else None
    except (AttributeError, ValueError):
        return [(model.name, model)]
    if start is None:
        return [(model.name, model)]
    made_at = {tid: i for i, tid in enumerate(outputs)}
    made_at.update({tid: -1 for tid in _ids(model.inputs)})
    pieces, first = [], 0
    for i, layer in enumerate(layers):
        live = {tid for later in needs[i + 1:] for tid in later if made_at.get(tid, i) <= i}
        if i + 1 < len(layers) and live != {outputs[i]}:
            continue
        name = layer.name if first == i else f"{layers[first].name}..{layer.name}"
        piece = keras.Model(start, layer.output, name=name.replace("..", "_to_"))
        pieces.append((name, piece))
        start, first = layer.output, i + 1
    return pieces


def _input_specs(layer, batch_size: int):
    inputs = layer.input
    many = isinstance(inputs, (list, tuple))
    specs = [(tuple(batch_size if d is None else int(d) for d in t.shape),
              str(getattr(t.dtype, "name", t.dtype))) for t in (inputs if many else [inputs])]
    return specs, many


def _random(tf, shape, dtype, rng):
    if "int" in dtype:
        return tf.constant(rng.integers(0, 2, size=shape), dtype)
    return tf.constant(rng.standard_normal(shape).astype(np.float32), dtype)


def _layer_function(tf, call, xs, weights):
    """A ``tf.function`` of one sub-model's forward and backward on fixed inputs."""
    @tf.function
    def forward_backward(*inputs):
        with tf.GradientTape() as tape:
            tape.watch([x for x in inputs if x.dtype.is_floating])
            out = call(*inputs)
            loss = tf.add_n([tf.reduce_sum(tf.cast(o, tf.float32))
                             for o in tf.nest.flatten(out)])
        sources = list(weights) + [x for x in inputs if x.dtype.is_floating]
        return tape.gradient(loss, sources) if sources else loss

    return lambda: forward_backward(*xs)


def time_in_turn(functions: dict, rounds: int, warmup: int = 2) -> dict:
    """Times each function once per round, all of them in turn, for ``rounds`` rounds.

    Running the terms in turn, as a training step does, means each one starts with the
    caches the others left, not with its own data still hot; the median of each counts.

    Args:
        functions: name -> zero-argument callable, in step order.
        rounds: timed rounds.
        warmup: untimed rounds first (tracing, allocation).

    Returns:
        name -> median seconds.
    """
    times = {name: [] for name in functions}
    for round_ in range(warmup + rounds):
        for name, fn in functions.items():
            start = time.perf_counter()
            fn()
            if round_ >= warmup:
                times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in times.items()}


def step_functions(model, batch_size: int, num_classes: int | None = None,
                   optimizer=None, data=None, seed: int = 0) -> dict:
    """The cost model's terms as callables, in step order.

    ``data`` (when arrays are given), one entry per sub-model, ``loss`` (when
    ``num_classes`` is given), ``apply`` (when an optimizer is given, working on copies of
    the weights), and ``call``: a function doing almost nothing, whose time is each separate
    call's overhead. Layers' non-trainable state must be saved by the caller.
    """
    import keras
    import tensorflow as tf
    rng = np.random.default_rng(seed)
    functions = {}
    if data is not None:
        x_train, y_train = data
        order = rng.permutation(len(x_train))
        cursor = [0]

        def fetch():  # as the training program reads a batch: a sorted slice of a shuffle
            start = cursor[0] % max(1, len(order) - batch_size)
            cursor[0] += batch_size
            rows = np.sort(order[start:start + batch_size])
            tf.convert_to_tensor(x_train[rows])
            tf.convert_to_tensor(y_train[rows])
        functions["data"] = fetch
    nothing = tf.function(lambda x: x)
    one = tf.ones([1])
    functions["call"] = lambda: nothing(one)
    for name, layer in submodels(model):
        specs, many = _input_specs(layer, batch_size)
        xs = [_random(tf, shape, dtype, rng) for shape, dtype in specs]

        def run(*inputs, _layer=layer, _many=many):
            return _layer(list(inputs) if _many else inputs[0], training=True)

        functions[f"layer:{name}"] = _layer_function(tf, run, xs, layer.trainable_weights)
    if num_classes:
        loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
        labels = tf.constant(rng.integers(0, num_classes, size=batch_size), tf.int64)
        logits = _random(tf, (batch_size, num_classes), "float32", rng)
        functions["layer:loss"] = _layer_function(tf, lambda z: loss_fn(labels, z),
                                                  [logits], [])
    if optimizer is not None:
        make = getattr(keras, "Variable", tf.Variable)  # Keras 3 updates its own Variable type
        copies = [make(np.zeros(v.shape, np.float32)) for v in model.trainable_variables]
        twin = optimizer.__class__.from_config(optimizer.get_config())
        twin.build(copies)
        grads = [tf.ones(v.shape, v.dtype) * 1e-6 for v in copies]

        @tf.function
        def apply(gradients):  # an argument, not a capture: no constant folding
            twin.apply_gradients(zip(gradients, copies))
        functions["apply"] = lambda: apply(grads)
    return functions
