"""The step-time cost model: the sum of the sub-models' times plus the allreduce.

    step = data + sum_i T_i + allreduce + apply

- ``T_i``: each sub-model's forward and backward at the per-rank batch
  (:mod:`distrain.costmodel.compute`);
- ``allreduce``: the ring model over the actual fusion plan of the gradients
  (:mod:`distrain.costmodel.ring`), with constants calibrated on the job
  (:mod:`distrain.costmodel.calibrate`);
- ``data`` and ``apply``: a batch fetch and an optimizer update, timed alone.

The same model answers "what would p ranks buy" at the same per-rank batch.

Example (no training, no MPI needed)::

    from distrain import costmodel
    model = keras.applications.MobileNetV2(weights=None)
    prediction = costmodel.predict(model, batch_size=32,
                                   comm=costmodel.CommModel(size=8, alpha=5e-6, beta=1e-10))
    print(prediction.total, prediction.whatif[3])
"""
from __future__ import annotations

import dataclasses
import statistics

import numpy as np

from distrain.costmodel.ring import WHATIF_SIZES, CommModel, fit_alpha_beta, ring_time

__all__ = ["Prediction", "predict", "whatif", "combine", "CommModel", "fit_alpha_beta",
           "ring_time", "WHATIF_SIZES"]


@dataclasses.dataclass
class Prediction:
    """A predicted step.

    Attributes:
        phases: predicted seconds of ``data``, ``compute``, ``allreduce`` and ``apply``.
        submodels: ``(name, seconds)`` terms whose sum, plus ``call_overhead``, is compute.
        call_overhead: the one function-call cost compute pays.
        comm: the communication model used.
        batch_size: samples per rank.
        gradient_shapes: the gradients' shapes, for what-if questions.
        gradient_dtypes: their dtypes.
        whatif: rows for p = 1, 2, 4, ... (see :func:`whatif`).
    """

    phases: dict
    submodels: list
    call_overhead: float
    comm: CommModel
    batch_size: int
    gradient_shapes: list
    gradient_dtypes: list
    whatif: list = dataclasses.field(default_factory=list)

    @property
    def total(self) -> float:
        """The predicted step time: the sum of the phases."""
        return sum(self.phases.values())

    def to_dict(self) -> dict:
        """The form the timing report and its JSON file take."""
        comm = self.comm
        return {"phases": dict(self.phases), "total": self.total,
                "submodels": [{"name": n, "seconds": s} for n, s in self.submodels],
                "call_overhead": self.call_overhead,
                "alpha": comm.alpha, "beta": comm.beta, "gamma": comm.gamma,
                "fusion_threshold": comm.fusion_threshold,
                "recommended_fusion_threshold": comm.recommended_fusion_threshold(),
                "whatif": list(self.whatif)}


def whatif(prediction: Prediction, sizes=WHATIF_SIZES) -> list[dict]:
    """Predicted step time, samples/s and scaling efficiency at other world sizes.

    The per-rank batch, compute, data and apply stay as they are; only the allreduce changes
    with p, using the calibrated constants (which hold for this host's interconnect).

    Returns:
        One row per size: ``ranks``, ``step_s``, ``samples_per_s``, ``efficiency``
        (step time at 1 rank / step time at p).
    """
    fixed = sum(v for k, v in prediction.phases.items() if k != "allreduce")
    rows = []
    base = None
    for p in sizes:
        step = fixed + prediction.comm.allreduce_time(prediction.gradient_shapes,
                                                      prediction.gradient_dtypes, size=p)
        base = step if base is None else base
        rows.append({"ranks": p, "step_s": step,
                     "samples_per_s": prediction.batch_size * p / step,
                     "efficiency": base / step})
    return rows


def predict(model, batch_size: int, num_classes: int | None = None, optimizer=None,
            data=None, comm: CommModel | None = None, repeats: int = 15) -> Prediction:
    """Predicts one training step of ``model`` on this process.

    Args:
        model: a built ``keras.Model``.
        batch_size: samples per rank.
        num_classes: include the loss (sparse categorical cross-entropy) as a sub-model.
        optimizer: time its update on copies of the weights (0 when None).
        data: ``(x_train, y_train)`` arrays to time batch fetches from (0 when None).
        comm: the communication model; one rank with no communication when None.
        repeats: timed rounds of all terms in turn.

    Returns:
        The :class:`Prediction`, what-if rows included.
    """
    from distrain.costmodel.compute import step_functions, time_in_turn
    comm = comm or CommModel(size=1, alpha=0.0, beta=0.0)
    state = [(v, np.asarray(v)) for v in model.non_trainable_variables]
    import tensorflow as tf
    logger = tf.get_logger()
    level = logger.level
    logger.setLevel("ERROR")  # one function per sub-model is meant, not a retracing bug
    try:
        times = time_in_turn(step_functions(model, batch_size, num_classes, optimizer, data),
                             repeats)
    finally:
        logger.setLevel(level)
        for variable, value in state:  # batch-norm statistics the timing moved
            variable.assign(value)
    call = times.pop("call")
    terms = [(name[len("layer:"):], max(t - call, 0.0)) for name, t in times.items()
             if name.startswith("layer:")]
    variables = list(model.trainable_variables)
    shapes = [tuple(v.shape) for v in variables]
    dtypes = [str(getattr(v.dtype, "name", v.dtype)) for v in variables]
    phases = {"data": times.get("data", 0.0),
              "compute": call + sum(s for _, s in terms),
              "allreduce": comm.allreduce_time(shapes, dtypes),
              "apply": times.get("apply", 0.0)}
    prediction = Prediction(phases, terms, call, comm, batch_size, shapes, dtypes)
    prediction.whatif = whatif(prediction)
    return prediction


def combine(predictions: list[Prediction]) -> Prediction:
    """One prediction from every rank's: the median of each phase and sub-model."""
    first = predictions[0]
    phases = {k: statistics.median(p.phases[k] for p in predictions) for k in first.phases}
    terms = [(name, statistics.median(p.submodels[i][1] for p in predictions))
             for i, (name, _) in enumerate(first.submodels)]
    merged = dataclasses.replace(
        first, phases=phases, submodels=terms,
        call_overhead=statistics.median(p.call_overhead for p in predictions))
    merged.whatif = whatif(merged)
    return merged
