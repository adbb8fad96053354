"""Compute, data and apply costs, timed on this rank as separate terms.

**Sub-models.** A model is cut where every path passes through one tensor
(:func:`submodels`): after every layer of a chain, between the blocks of a residual network.
The loss is one more sub-model. Each sub-model's forward and backward (gradients of its
weights and, where a weight lies before it, of its input: backpropagation stops at the first
weight) is timed on random inputs of its input shape at the per-rank batch, as its own
``tf.function``.

**In turn.** All terms (data fetch, each sub-model, the loss, the optimizer update) run one
after another, as in a step, for several rounds, and each term's median counts
(:func:`time_in_turn`). Timing one term many times in a row would find its data hot in the
caches and predict too little; measured here, that under-predicted a ResNet step by ~19 %.

**Call costs.** Each separate ``tf.function`` call has fixed costs (dispatch, arguments,
results) that the whole model, run as one function, pays once. Each sub-model has a twin
of its signature that computes nothing (:func:`_null_function`), timed in its place in
rounds that take turns with the step's (see :func:`distrain.costmodel.predict`), and the
whole model's call cost is timed on one with the model's signature:

    compute = call(model) + sum over sub-models max(T_i - null_i, 0)
"""
from __future__ import annotations

import statistics
import time

import numpy as np

__all__ = ["submodels", "step_functions", "twin_rounds", "time_in_turn", "median_seconds"]


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


def _output_gradients(tf, layer, batch_size: int, rng):
    """Random upstream gradients of the shapes and dtypes of ``layer``'s outputs, or None
    where the outputs cannot be read (a subclassed model)."""
    try:
        outputs = tf.nest.flatten(layer.output)
    except (AttributeError, ValueError):
        return None
    return [_random(tf, tuple(batch_size if d is None else int(d) for d in o.shape),
                    str(getattr(o.dtype, "name", o.dtype)), rng) for o in outputs]


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


def _layer_function(tf, call, xs, weights, input_gradients: bool = True, upstream=None):
    """A ``tf.function`` of one sub-model's forward and backward on fixed inputs.

    Args:
        input_gradients: also differentiate with respect to the inputs, as backpropagation
            does wherever a weight lies before the sub-model (not for the first ones, whose
            inputs are the data).
        upstream: the gradients arriving at the sub-model's outputs from the ones after it,
            as in backpropagation; None seeds the backward pass with ones (the loss).
    """
    @tf.function
    def forward_backward(*inputs):
        floating = [x for x in inputs if x.dtype.is_floating] if input_gradients else []
        with tf.GradientTape() as tape:
            tape.watch(floating)
            out = tf.nest.flatten(call(*inputs))
        sources = list(weights) + floating
        if not sources:
            return out
        return tape.gradient(out, sources, output_gradients=upstream)

    return lambda: forward_backward(*xs)


def _null_function(tf, xs, weights, outputs: int):
    """A ``tf.function`` with a sub-model's inputs and outputs that computes nothing.

    Its time is the fixed cost of calling a function of that signature (dispatch, argument
    and result handling), which the whole model, run as one function, does not pay per
    sub-model.

    Args:
        xs: the inputs.
        weights: variables whose values it returns (no copy is made).
        outputs: how many tensors it returns (at least the weights).
    """
    @tf.function
    def nothing(*inputs):
        values = [tf.identity(w) for w in weights]
        values += [tf.identity(inputs[i % len(inputs)]) if inputs else tf.zeros([])
                   for i in range(outputs - len(values))]
        return values

    return lambda: nothing(*xs)


def time_in_turn(turns: list[dict], rounds: int, warmup: int = 2) -> dict:
    """Times each function once per round, all of them in turn, for ``rounds`` rounds.

    Running the terms in turn, as a training step does, means each one starts with the
    caches the others left, not with its own data still hot.

    Args:
        turns: dicts of name -> zero-argument callable, in step order, which take turns
            round by round (each gets ``rounds`` rounds), so that terms of one round can
            be replaced by others in the same places (:func:`twin_rounds`).
        rounds: timed rounds (of each dict).
        warmup: untimed rounds first (of each dict; tracing, allocation).

    Returns:
        name -> the seconds of each timed round, in order.
    """
    times = {name: [] for turn in turns for name in turn}
    for round_ in range((warmup + rounds) * len(turns)):
        turn = turns[round_ % len(turns)]
        for name, fn in turn.items():
            start = time.perf_counter()
            fn()
            if round_ >= warmup * len(turns):
                times[name].append(time.perf_counter() - start)
    return times


def twin_rounds(functions: dict) -> list[dict]:
    """The step's round and its twin round, for :func:`time_in_turn` to alternate.

    Args:
        functions: :func:`step_functions`' terms.

    Returns:
        ``[step, twins]``: ``step`` holds every term but the ``null:`` ones; ``twins`` is
        the same round with each ``layer:NAME`` replaced by its ``null:NAME`` and the other
        terms kept in place under ``twin:`` names (timed, not used).
    """
    step = {k: f for k, f in functions.items() if not k.startswith("null:")}
    twins = {}
    for name, fn in step.items():
        if name.startswith("layer:"):
            null = "null:" + name[len("layer:"):]
            twins[null] = functions[null]
        else:
            twins["twin:" + name] = fn
    return [step, twins]


def step_functions(model, batch_size: int, num_classes: int | None = None,
                   optimizer=None, data=None, seed: int = 0, comm=None, sync=None) -> dict:
    """The cost model's terms as callables, in step order.

    ``data`` (when arrays are given); ``call``, a function with the whole model's
    signature doing nothing; per sub-model, ``layer:NAME`` and ``null:NAME``, its forward
    and backward and a function of its signature doing nothing; ``layer:loss`` and
    ``null:loss`` (when ``num_classes`` is given); ``wait`` (when ``sync`` is given): the
    job's ranks meet, as the allreduce makes them meet in a step, so every rank's later
    terms run at the same time as they do in a step and the time spent here is the wait
    for the slowest; ``allreduce`` (the host's share of averaging the gradients,
    :mod:`distrain.costmodel.host`, when ``comm`` is given); ``apply`` (when an optimizer
    is given, working on copies of the weights and on the averaged gradients, fresh each
    round). Layers' non-trainable state must be saved by the caller.
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
    specs, _ = _input_specs(model, batch_size)
    inputs = [_random(tf, shape, dtype, rng) for shape, dtype in specs]
    if num_classes:
        inputs.append(tf.constant(rng.integers(0, num_classes, size=batch_size), tf.int64))
    weights = list(model.trainable_variables)
    functions["call"] = _null_function(tf, inputs, weights, len(weights) + 2)  # loss, correct
    weights_before = False  # backpropagation needs a sub-model's input gradient only then
    for name, layer in submodels(model):
        specs, many = _input_specs(layer, batch_size)
        xs = [_random(tf, shape, dtype, rng) for shape, dtype in specs]

        def run(*inputs, _layer=layer, _many=many):
            return _layer(list(inputs) if _many else inputs[0], training=True)

        functions[f"layer:{name}"] = _layer_function(
            tf, run, xs, layer.trainable_weights, weights_before,
            _output_gradients(tf, layer, batch_size, rng))
        gradients = len(layer.trainable_weights) + (
            sum(1 for x in xs if x.dtype.is_floating) if weights_before else 0)
        functions[f"null:{name}"] = _null_function(tf, xs, layer.trainable_weights,
                                                   max(gradients, 1))
        weights_before = weights_before or bool(layer.trainable_weights)
    if num_classes:
        loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
        labels = tf.constant(rng.integers(0, num_classes, size=batch_size), tf.int64)
        logits = _random(tf, (batch_size, num_classes), "float32", rng)
        functions["layer:loss"] = _layer_function(tf, lambda z: loss_fn(labels, z),
                                                  [logits], [])
        functions["null:loss"] = _null_function(tf, [logits], [], 1)
    gradients = [tf.ones(v.shape, v.dtype) * 1e-6 for v in model.trainable_variables]
    averaged = [gradients]
    if sync is not None:
        functions["wait"] = sync
    if comm is not None:
        from distrain.costmodel.host import host_allreduce
        reduce = host_allreduce(gradients, comm.size, comm.fusion_threshold, comm.chunk_bytes)

        def allreduce():
            averaged[0] = reduce()
        functions["allreduce"] = allreduce
    if optimizer is not None:
        make = getattr(keras, "Variable", tf.Variable)  # Keras 3 updates its own Variable type
        copies = [make(np.zeros(v.shape, np.float32)) for v in model.trainable_variables]
        twin = optimizer.__class__.from_config(optimizer.get_config())
        twin.build(copies)

        @tf.function
        def apply(gradients):  # an argument, not a capture: no constant folding
            twin.apply_gradients(zip(gradients, copies))
        functions["apply"] = lambda: apply(averaged[0])
    return functions
