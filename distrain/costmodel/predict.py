"""The cost model's prediction of one step: timing the terms, summing them, asking what
other world sizes would buy, and merging every rank's prediction.

The model itself is described in :mod:`distrain.costmodel`.
"""
from __future__ import annotations

import dataclasses
import math
import statistics

import numpy as np

from distrain.costmodel.compute import adjacent_pairs
from distrain.costmodel.exposed_allreduce import exposed_allreduce, recommended_bucket_bytes
from distrain.costmodel.ring import WHATIF_SIZES, CommModel

__all__ = ["Prediction", "predict", "call_cost", "whatif", "combine", "expected_wait"]


@dataclasses.dataclass
class Prediction:
    """A predicted step.

    Attributes:
        phases: predicted seconds of ``data``, ``compute``, ``allreduce`` and ``apply``.
        submodels: ``(name, seconds)``: each sub-model's time less the cost of its own
            function call; their sum, plus ``call_overhead``, is compute.
        call_overhead: the cost of the step's one function call: one call
            (:func:`call_cost`) and passing it the batch.
        interaction: what the whole model's forward and backward, timed as one function,
            takes beyond its sub-models' sum (signed; :mod:`distrain.costmodel.compute`);
            compute is ``call_overhead`` + the sub-models + ``interaction``.
        comm: the communication model used.
        batch_size: samples per rank.
        gradient_shapes: the gradients' shapes, for what-if questions.
        gradient_dtypes: their dtypes.
        host: the allreduce's host share, seconds (see :mod:`distrain.costmodel.host`).
        wait: the time a rank waits for the slowest before the allreduce can start,
            seconds (timed at a barrier where a step's allreduce makes the ranks meet;
            inside ``phases["allreduce"]``).
        rounds: the seconds of each timed round up to the allreduce (data and compute),
            pooled over ranks after :func:`combine`; the spread behind :func:`expected_wait`.
        whatif: rows for p = 1, 2, 4, ... (see :func:`whatif`).
        owners: for each gradient, the index of its sub-model in ``submodels``.
        buckets: ``(first bucket bytes, bucket bytes)`` when the step overlaps the
            allreduce with backward (its allreduce phase is then the exposed part,
            :mod:`distrain.costmodel.exposed_allreduce`); None when it does not.
        sparse: ``index -> rows`` of the gradients that are ``tf.IndexedSlices`` (an
            embedding's): allgathered, not reduced (:meth:`CommModel.sparse_time`).
    """

    phases: dict
    submodels: list
    call_overhead: float
    comm: CommModel
    batch_size: int
    gradient_shapes: list
    gradient_dtypes: list
    interaction: float = 0.0
    host: float = 0.0
    wait: float = 0.0
    rounds: list = dataclasses.field(default_factory=list)
    whatif: list = dataclasses.field(default_factory=list)
    owners: list = dataclasses.field(default_factory=list)
    buckets: tuple | None = None
    sparse: dict = dataclasses.field(default_factory=dict)

    def allreduce_at(self, size: int | None = None) -> float:
        """The allreduce phase less the wait, at ``size`` ranks (default: the measured)."""
        if self.buckets is not None:
            return exposed_allreduce([s for _, s in self.submodels], self.owners,
                                     self.gradient_shapes, self.gradient_dtypes, self.comm,
                                     *self.buckets, size=size)
        dense = [i for i in range(len(self.gradient_shapes)) if i not in self.sparse]
        gathered = sum(self.comm.sparse_time(
            rows, int(np.prod(self.gradient_shapes[i][1:], dtype=np.int64))
            * np.dtype(self.gradient_dtypes[i]).itemsize, size)
            for i, rows in self.sparse.items())
        return gathered + self.comm.allreduce_time(
            [self.gradient_shapes[i] for i in dense], [self.gradient_dtypes[i] for i in dense],
            size=size, host=self.host)

    def recommended_bucket_bytes(self) -> int | None:
        """The overlap bucket size that leaves the least allreduce exposed; None without
        overlap."""
        if self.buckets is None:
            return None
        return recommended_bucket_bytes([s for _, s in self.submodels], self.owners,
                                        self.gradient_shapes, self.gradient_dtypes,
                                        self.comm, self.buckets[0])

    @property
    def total(self) -> float:
        """The predicted step time: the sum of the phases."""
        return sum(self.phases.values())


def expected_wait(rounds, size: int) -> float:
    """The expected wait of a typical rank for the slowest of ``size`` ranks.

    Every rank of a synchronous step starts the allreduce when the slowest has finished its
    compute. With per-round times ``x`` drawn as in ``rounds``, the slowest of ``p`` ranks
    takes ``E[max of p draws]``, which for the sorted sample ``x_1 <= ... <= x_n`` is
    ``sum_i x_i ((i/n)^p - ((i-1)/n)^p)``; a typical rank takes the median.

    Args:
        rounds: seconds of each timed round up to the allreduce (any ranks, pooled).
        size: ranks, p.

    Returns:
        ``E[max of p] - median``, at least 0; 0 for one rank or no rounds.
    """
    if size <= 1 or not len(rounds):
        return 0.0
    x = np.sort(np.asarray(rounds, float))
    n = len(x)
    cdf = (np.arange(n + 1) / n) ** size
    return max(float(np.dot(x, np.diff(cdf)) - np.median(x)), 0.0)


def _wait_at(prediction: Prediction, size: int) -> float:
    """The wait at ``size`` ranks: the measured wait, grown as the expected slowest of
    ``size`` draws of the rounds grows from the measured size (or, measured at one rank,
    that expectation itself)."""
    measured = prediction.comm.size
    if size <= 1:
        return 0.0
    if size == measured:
        return prediction.wait
    grown = expected_wait(prediction.rounds, size)
    base = expected_wait(prediction.rounds, measured)
    return prediction.wait * grown / base if measured > 1 and base > 0 else grown


def whatif(prediction: Prediction, sizes=WHATIF_SIZES) -> list[dict]:
    """Predicted step time, samples/s and scaling efficiency at other world sizes.

    The per-rank batch, compute, data, apply and the allreduce's host share stay as they
    are; the messages change with p, using the calibrated constants (which hold for this
    host's interconnect), and so does the wait for the slowest rank: the measured wait,
    grown with p as :func:`expected_wait` grows.

    Returns:
        One row per size: ``ranks``, ``step_s``, ``samples_per_s``, ``efficiency``
        (step time at 1 rank / step time at p).
    """
    fixed = sum(v for k, v in prediction.phases.items() if k != "allreduce")
    rows = []
    base = None
    for p in sizes:
        step = fixed + _wait_at(prediction, p) + prediction.allreduce_at(p)
        base = step if base is None else base
        rows.append({"ranks": p, "step_s": step,
                     "samples_per_s": prediction.batch_size * p / step,
                     "efficiency": base / step})
    return rows


def call_cost(times: dict, names: list[str]) -> float:
    """The cost of one more function call: what merging two sub-models into one saves.

    Args:
        times: median seconds of each ``layer:NAME`` and ``pair:NAME`` term.
        names: the sub-models, in order; the 1st and 2nd make the pair of the 1st, and so on.

    Returns:
        The median over the pairs of ``T(first) + T(second) - T(pair)``, at least 0; 0 with
        fewer than two sub-models.
    """
    savings = [times[f"layer:{first}"] + times[f"layer:{second}"] - times[f"pair:{first}"]
               for first, second in adjacent_pairs(names)]
    return max(statistics.median(savings), 0.0) if savings else 0.0


def predict(model, batch_size: int, num_classes: int | None = None, optimizer=None,
            data=None, comm: CommModel | None = None, repeats: int = 15,
            sync=None, min_seconds: float = 0.5, agree=None,
            buckets: tuple[int, int] | None = None) -> Prediction:
    """Predicts one training step of ``model`` on this process.

    Args:
        model: a built ``keras.Model``.
        batch_size: samples per rank.
        num_classes: include the loss (sparse categorical cross-entropy) as a sub-model.
        optimizer: time its update on copies of the weights (0 when None).
        data: ``(x_train, y_train)`` arrays to time batch fetches from (0 when None).
        comm: the communication model; one rank with no communication when None.
        repeats: the fewest timed rounds of all terms in turn; more are run until they
            fill ``min_seconds``, so that a small model's prediction is not a few
            milliseconds' sample of a machine whose speed drifts.
        min_seconds: the least time the timed rounds should take.
        agree: takes this rank's number of rounds and returns the number every rank runs
            (the largest), where ranks meet in ``sync``.
        sync: a barrier across the job's ranks, met once per round where a step's
            allreduce makes the ranks meet; the time spent in it is the predicted wait
            for the slowest rank (0 when None).
        buckets: ``(first bucket bytes, bucket bytes)`` when the step overlaps its
            allreduce with backward; the allreduce is then the part left exposed.

    Returns:
        The :class:`Prediction`, what-if rows included.
    """
    from distrain.costmodel.compute import pair_rounds, step_functions, time_in_turn
    comm = comm or CommModel(size=1, alpha=0.0, beta=0.0)
    state = [(v, np.asarray(v)) for v in model.non_trainable_variables]
    import tensorflow as tf
    logger = tf.get_logger()
    level = logger.level
    logger.setLevel("ERROR")  # one function per sub-model is meant, not a retracing bug
    try:
        # Rounds of the step take turns with rounds in which adjacent sub-models are merged
        # in pairs, so each pair is timed in its sub-models' place.
        sparse: dict = {}
        turns = pair_rounds(step_functions(model, batch_size, num_classes, optimizer, data,
                                           comm=comm, sync=sync, sparse=sparse))
        probe = time_in_turn(turns, 1)  # after two untimed rounds of each
        took = sum(sum(values) for values in probe.values())
        repeats = min(max(repeats, math.ceil(min_seconds / max(took, 1e-9))), 2000)
        repeats = int(agree(repeats)) if agree is not None else repeats
        rounds = time_in_turn(turns, repeats, warmup=0)
    finally:
        logger.setLevel(level)
        for variable, value in state:  # batch-norm statistics the timing moved
            variable.assign(value)
    times = {name: statistics.median(values) for name, values in rounds.items()}
    names = [key[len("layer:"):] for key in rounds if key.startswith("layer:")]
    per_call = call_cost(times, names)
    terms = [(name, max(times[f"layer:{name}"] - per_call, 0.0)) for name in names]
    # The step's one call also takes the batch as arguments, which the sub-models do not.
    passing = max(times.get("call:arguments", 0.0) - times.get("call:none", 0.0), 0.0)
    call = per_call + passing
    # The whole model, one function on captured inputs, against one call and the sub-models.
    interaction = times["whole"] - per_call - sum(s for _, s in terms)
    data_rounds = rounds.get("data", [0.0] * repeats)
    up_to_allreduce = [data_rounds[k] + rounds["whole"][k] + passing for k in range(repeats)]
    variables = list(model.trainable_variables)
    shapes = [tuple(v.shape) for v in variables]
    dtypes = [str(getattr(v.dtype, "name", v.dtype)) for v in variables]
    host, wait = times.get("allreduce", 0.0), times.get("wait", 0.0)
    phases = {"data": times.get("data", 0.0),
              "compute": call + sum(s for _, s in terms) + interaction,
              "allreduce": 0.0,
              "apply": times.get("apply", 0.0)}
    prediction = Prediction(phases, terms, call, comm, batch_size, shapes, dtypes,
                            interaction=interaction, host=host, wait=wait,
                            rounds=up_to_allreduce, sparse=sparse,
                            owners=_owners(model, names, variables), buckets=buckets)
    phases["allreduce"] = wait + prediction.allreduce_at()
    prediction.whatif = whatif(prediction)
    return prediction


def _owners(model, names: list[str], variables) -> list[int]:
    """For each variable, the index in ``names`` of the sub-model that holds it (the last
    sub-model where none does)."""
    from distrain.costmodel.model_cuts import submodels
    index = {name: i for i, name in enumerate(names)}
    holder = {}
    for name, piece in submodels(model):
        for v in piece.trainable_variables:
            holder.setdefault(id(v), index.get(name, len(names) - 1))
    return [holder.get(id(v), len(names) - 1) for v in variables]


def combine(predictions: list[Prediction]) -> Prediction:
    """One prediction from every rank's: the median of each term across ranks.

    Args:
        predictions: every rank's :func:`predict`.

    Returns:
        The merged :class:`Prediction`; ``rounds`` pools every rank's rounds.
    """
    first = predictions[0]
    phases = {k: statistics.median(p.phases[k] for p in predictions) for k in first.phases}
    terms = [(name, statistics.median(p.submodels[i][1] for p in predictions))
             for i, (name, _) in enumerate(first.submodels)]
    merged = dataclasses.replace(
        first, phases=phases, submodels=terms,
        call_overhead=statistics.median(p.call_overhead for p in predictions),
        interaction=statistics.median(p.interaction for p in predictions),
        host=statistics.median(p.host for p in predictions),
        wait=statistics.median(p.wait for p in predictions),
        rounds=[x for p in predictions for x in p.rounds])
    merged.whatif = whatif(merged)
    return merged
