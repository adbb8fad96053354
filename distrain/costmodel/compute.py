"""Compute, data and apply costs, timed on this rank as separate terms.

**Sub-models.** A model is cut into sub-models where every path passes through one tensor,
and by block where layers are named by block (:mod:`distrain.costmodel.model_cuts`). The
loss is one more sub-model. Each sub-model's forward and backward (gradients of its
weights and, where a weight lies before it, of its input: backpropagation stops at the first
weight) is timed on random inputs of its input shape at the per-rank batch, as its own
``tf.function``.

**In turn.** All terms (data fetch, each sub-model, the loss, the optimizer update) run one
after another, as in a step, for several rounds, and each term's median counts
(:func:`time_in_turn`). Timing one term many times in a row would find its data hot in the
caches and predict too little; measured here, that under-predicted a ResNet step by ~19 %.

**Call costs.** Each separate ``tf.function`` call has costs of its own (dispatch, argument
and result handling, handing the work to TensorFlow's thread pool and back) that the whole
model, run as one function, pays once. Rounds of the step take turns with rounds in which
adjacent sub-models are merged in pairs, each pair one function running the two one after
the other (:func:`pair_rounds`). What merging a pair saves is the cost ``C`` of one call.
The sub-models' functions capture their inputs; the step's takes the batch as arguments,
which costs ``A``, timed on two do-nothing functions, one with the batch's arguments and one
without. Then

    compute = (C + A) + sum over sub-models (T_i - C)

Measured here (2026-11-25, one rank, 2 threads), ``C`` is ~0.25 ms and ``A`` ~0.07 ms: the
earlier do-nothing twin of each sub-model took off too little (~0.2 ms less than merging
saves), and over-predicted a CNN's compute by 30 %.

**Interaction.** The sub-models timed one by one are not the whole model: in a step, every
sub-model's activations are held until backward reaches it, and the graph optimizer works
across sub-models' borders. The step's rounds also time the whole model's forward and
backward as one function (``whole``); what it takes beyond ``C + sum (T_i - C)`` is the
interaction term, signed, its own line in the prediction. Measured here (2026-12-05, one
rank, 1 thread), the transformer's four encoder blocks took 8-13 % longer nested, as in the
model, than one after the other in one function; two blocks 2.5-3.5 %.
"""
from __future__ import annotations

import dataclasses
import statistics
import time
from typing import Callable

import numpy as np

from distrain.costmodel.model_cuts import submodels
from distrain.costmodel.step_terms import (allreduce_term, apply_term, batch_fetch,
                                         sparse_gradient, sparse_rows, whole_function)
from distrain.train.objective import correct_count, loss_function, step_loss

__all__ = ["step_functions", "pair_rounds", "adjacent_pairs", "time_in_turn",
           "median_seconds"]


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


@dataclasses.dataclass
class _Piece:
    """One sub-model's forward and backward, on fixed inputs.

    Attributes:
        call: takes the inputs, returns the outputs.
        xs: the inputs.
        weights: the variables whose gradients backpropagation computes.
        input_gradients: also differentiate with respect to the inputs, as backpropagation
            does wherever a weight lies before the sub-model (not for the first ones, whose
            inputs are the data).
        upstream: the gradients arriving at the outputs from the sub-models after it, as in
            backpropagation; None seeds the backward pass with ones (the loss).
    """

    call: Callable
    xs: list
    weights: list
    input_gradients: bool = True
    upstream: list | None = None


def _pieces_function(tf, pieces: list[_Piece]):
    """A ``tf.function`` running the pieces' forwards and backwards one after the other.

    Each piece starts when the one before has finished (its inputs wait on the other's
    gradients), as sub-models do in a step, so two pieces never share the threads.

    Returns:
        A ``tf.function`` of no arguments: the inputs are captured, so that a sub-model's
        time does not include passing arguments, which the step pays for its own inputs
        alone (:func:`_null_function`). Captured tensors (beyond a handful of elements) become
        inputs of the graph, not constants, so nothing is folded away.
    """
    counts = [len(piece.xs) for piece in pieces]
    inputs = [x for piece in pieces for x in piece.xs]

    @tf.function
    def forward_backward():
        results, done, offset = [], [], 0
        for piece, count in zip(pieces, counts):
            with tf.control_dependencies(done):
                xs = [tf.identity(x) for x in inputs[offset:offset + count]]
            offset += count
            floating = [x for x in xs if x.dtype.is_floating] if piece.input_gradients else []
            with tf.GradientTape() as tape:
                tape.watch(floating)
                out = tf.nest.flatten(piece.call(*xs))
            sources = list(piece.weights) + floating
            result = tape.gradient(out, sources, output_gradients=piece.upstream) \
                if sources else out
            results.append(result)
            done = [t for t in tf.nest.flatten(result) if t is not None]
        return results

    return forward_backward


def _null_function(tf, xs: list):
    """A ``tf.function`` taking ``xs`` as arguments and doing nothing: with and without
    the step's inputs, the difference is what passing them costs the step's call."""
    @tf.function
    def nothing(*inputs):
        return tf.zeros([])

    return lambda: nothing(*xs)


def time_in_turn(turns: list[dict], rounds: int, warmup: int = 2) -> dict:
    """Times each function once per round, all of them in turn, for ``rounds`` rounds.

    Running the terms in turn, as a training step does, means each one starts with the
    caches the others left, not with its own data still hot.

    Args:
        turns: dicts of name -> zero-argument callable, in step order, which take turns
            round by round (each gets ``rounds`` rounds), so that terms of one round can
            be replaced by others in the same places (:func:`pair_rounds`).
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


def adjacent_pairs(items: list) -> list[tuple]:
    """The pairs the cost model merges: the 1st and 2nd item, the 3rd and 4th, and so on
    (an odd last item is in none)."""
    return list(zip(items[::2], items[1::2]))


def pair_rounds(functions: dict) -> list[dict]:
    """The step's round and its paired round, for :func:`time_in_turn` to alternate.

    Args:
        functions: :func:`step_functions`' terms.

    Returns:
        ``[step, paired]``: ``step`` holds every term but the ``pair:`` ones; ``paired`` is
        the same round with the 1st and 2nd ``layer:`` terms replaced by the ``pair:`` of
        the 1st, the 3rd and 4th by the ``pair:`` of the 3rd, and so on; the other terms
        (an odd last sub-model too) stay in place under ``twin:`` names (timed, not used),
        but for ``whole``, which is in the step's round alone.
    """
    step = {k: f for k, f in functions.items() if not k.startswith("pair:")}
    layers = [k for k in step if k.startswith("layer:")]
    merged = {}
    for first, second in adjacent_pairs(layers):
        merged[first], merged[second] = "pair:" + first[len("layer:"):], None
    paired = {}
    for name, fn in step.items():
        if name == "whole":
            continue
        if name not in merged:
            paired["twin:" + name] = fn
        elif merged[name] is not None:
            paired[merged[name]] = functions[merged[name]]
    return [step, paired]


def step_functions(model, batch_size: int, num_classes: int | None = None,
                   optimizer=None, data=None, seed: int = 0, comm=None, sync=None,
                   sparse: dict | None = None) -> dict:
    """The cost model's terms as zero-argument callables, in step order.

    - ``data`` (when ``data`` is given): one batch fetch;
    - ``call:arguments`` and ``call:none``: functions doing nothing, with and without the
      step's arguments (the batch, and the labels when ``num_classes`` is given);
    - ``layer:NAME``: each sub-model's forward and backward; ``layer:loss`` the loss's
      (when ``num_classes`` is given);
    - ``pair:NAME``: for the 1st, 3rd, ... sub-model that has one after it, the forward and
      backward of it and the next in one function (:func:`pair_rounds`);
    - ``whole``: the whole model's forward and backward (and loss, when ``num_classes`` is
      given) as one function on the same kind of inputs, as the step runs it;
    - ``wait`` (when ``sync`` is given): the job's ranks meet, as the allreduce makes them
      meet in a step, so every rank's later terms run at the same time as they do in a
      step and the time spent here is the wait for the slowest;
    - ``allreduce`` (when ``comm`` is given): the host's share of averaging the gradients
      (:mod:`distrain.costmodel.host`);
    - ``apply`` (when ``optimizer`` is given): the update of copies of the weights by the
      averaged gradients, fresh each round.

    Layers' non-trainable state must be saved by the caller.

    Args:
        model: a built ``keras.Model``.
        batch_size: samples per rank.
        num_classes: include the loss (sparse categorical cross-entropy).
        optimizer: the optimizer whose update to time.
        data: ``(x_train, y_train)`` arrays to fetch batches from.
        seed: seeds the random inputs.
        comm: the :class:`~distrain.costmodel.ring.CommModel` (world size, fusion
            threshold, chunk size) of the allreduce.
        sync: a barrier across the job's ranks.
        sparse: filled with ``index -> rows`` for each trainable variable whose gradient
            is a ``tf.IndexedSlices`` (an embedding's): the allreduce gathers those rows, not
            the dense tensor, and so do the allreduce and apply terms here.

    Returns:
        name -> callable, in the order above.
    """
    import tensorflow as tf
    rng = np.random.default_rng(seed)
    functions = {}
    if data is not None:
        functions["data"] = batch_fetch(tf, data, batch_size, rng)
    specs, _ = _input_specs(model, batch_size)
    arguments = [_random(tf, shape, dtype, rng) for shape, dtype in specs]
    pieces = _submodel_pieces(tf, model, batch_size, rng)
    if num_classes:
        labels, loss = _loss_piece(tf, num_classes, batch_size, rng)
        arguments.append(labels)
        pieces.append(("loss", loss))
    functions["call:arguments"] = _null_function(tf, arguments)
    functions["call:none"] = _null_function(tf, [])
    for name, piece in pieces:
        functions[f"layer:{name}"] = _pieces_function(tf, [piece])
    for (name, first), (_, second) in adjacent_pairs(pieces):
        functions[f"pair:{name}"] = _pieces_function(tf, [first, second])
    functions["whole"] = whole = whole_function(tf, model, arguments, bool(num_classes))
    rows = sparse_rows(tf, whole, bool(num_classes))
    if sparse is not None:
        sparse.update(rows)
    size = comm.size if comm is not None else 1
    gradients = [sparse_gradient(tf, v, rows[i] * size, rng) if i in rows
                 else tf.ones(v.shape, v.dtype) * 1e-6
                 for i, v in enumerate(model.trainable_variables)]
    averaged = [gradients]  # the allreduce term's latest result, for the apply term
    if sync is not None:
        functions["wait"] = sync
    if comm is not None:
        functions["allreduce"] = allreduce_term(gradients, comm, averaged, set(rows))
    if optimizer is not None:
        functions["apply"] = apply_term(tf, optimizer, model, averaged)
    return functions


def _submodel_pieces(tf, model, batch_size: int, rng) -> list[tuple[str, _Piece]]:
    """Each sub-model's forward and backward on random inputs, with random gradients
    arriving from the sub-models after it."""
    pieces = []
    weights_before = False  # backpropagation needs a sub-model's input gradient only then
    for name, layer in submodels(model):
        specs, many = _input_specs(layer, batch_size)

        def run(*inputs, _layer=layer, _many=many):
            return _layer(list(inputs) if _many else inputs[0], training=True)

        xs = [_random(tf, shape, dtype, rng) for shape, dtype in specs]
        pieces.append((name, _Piece(run, xs, layer.trainable_weights, weights_before,
                                    _output_gradients(tf, layer, batch_size, rng))))
        weights_before = weights_before or bool(layer.trainable_weights)
    return pieces


def _loss_piece(tf, num_classes: int, batch_size: int, rng) -> tuple:
    """The step's loss on random logits, and the count of correct predictions it reports.

    Returns:
        ``(labels, piece)``: the labels the step takes as an argument, and the piece.
    """
    loss_fn = loss_function()
    labels = tf.constant(rng.integers(0, num_classes, size=batch_size), tf.int64)
    logits = _random(tf, (batch_size, num_classes), "float32", rng)

    def loss_and_correct(z):
        # the model's own losses are in the whole model's term, not in this sub-model's
        return step_loss(None, loss_fn, labels, z), tf.stop_gradient(correct_count(z, labels))
    return labels, _Piece(loss_and_correct, [logits], [])
