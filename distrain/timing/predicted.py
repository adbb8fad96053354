"""What the timing report shows of the cost model's prediction, as named attributes.

The report renders a :class:`PredictedStep`: made from a ``distrain.costmodel.Prediction``'s
attributes (:meth:`PredictedStep.of`) or from the JSON form the report writes
(:meth:`PredictedStep.from_dict`). Any field may be missing: the report leaves out what is.

Example:
    >>> step = PredictedStep.from_dict({"phases": {"compute": 0.002}, "total": 0.002})
    >>> step.phases["compute"], step.alpha
    (0.002, None)
"""
from __future__ import annotations

import dataclasses
import math
from typing import Mapping

from distrain.timing.summary import spread

__all__ = ["PredictedStep"]


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None



@dataclasses.dataclass(frozen=True)
class PredictedStep:
    """A predicted step, as the report shows it (docs/timing.md, ``prediction.*``).

    Attributes:
        phases: predicted seconds of each phase (those predicted).
        total: the predicted step, seconds.
        submodels: ``(name, seconds)`` of each sub-model.
        call_overhead: the cost of the step's one function call, seconds.
        interaction: what the whole model takes beyond its sub-models' sum, seconds
            (signed).
        allreduce_host: the allreduce's host share, seconds.
        wait: the wait for the slowest rank, seconds (inside ``phases["allreduce"]``).
        alpha: the ring's latency per step, seconds.
        beta: the ring's seconds per byte.
        gamma: host copy seconds per byte.
        fusion_threshold: the fusion buffer size the prediction assumes, bytes.
        recommended_fusion_threshold: the size the model recommends, bytes.
        whatif: rows ``{"ranks", "step_s", "samples_per_s", "efficiency"}``.
        calibration: where alpha and beta came from (``CommModel.calibration``: source,
            measured_at, load, problem, path).
        overlap: the run overlapped its allreduce with backward, so its measured allreduce
            phase is only the exposed part (and so is the predicted one).
        recommended_bucket_bytes: with overlap, the bucket size that leaves the least
            allreduce exposed.
        rounds_spread: how far the cost model's timing rounds (data and compute, pooled
            over ranks) scatter: (90th - 10th percentile) / median.
    """

    phases: Mapping[str, float] = dataclasses.field(default_factory=dict)
    total: float | None = None
    submodels: tuple[tuple[str, float], ...] = ()
    call_overhead: float | None = None
    allreduce_host: float | None = None
    wait: float | None = None
    alpha: float | None = None
    beta: float | None = None
    gamma: float | None = None
    fusion_threshold: int | None = None
    recommended_fusion_threshold: int | None = None
    whatif: tuple[Mapping, ...] = ()
    calibration: Mapping = dataclasses.field(default_factory=dict)
    overlap: bool = False
    recommended_bucket_bytes: int | None = None
    rounds_spread: float | None = None
    interaction: float | None = None

    @classmethod
    def of(cls, prediction) -> "PredictedStep":
        """From a ``distrain.costmodel.Prediction``, by its attributes.

        Args:
            prediction: has ``phases``, ``total``, ``submodels``, ``call_overhead``, ``host``,
                ``wait``, ``whatif`` and ``comm`` (``alpha``, ``beta``, ``gamma``,
                ``fusion_threshold``, ``recommended_fusion_threshold()``).
        """
        comm = prediction.comm
        return cls(dict(prediction.phases), prediction.total,
                   tuple((name, seconds) for name, seconds in prediction.submodels),
                   prediction.call_overhead, prediction.host, prediction.wait, comm.alpha,
                   comm.beta, comm.gamma, comm.fusion_threshold,
                   comm.recommended_fusion_threshold(), tuple(prediction.whatif),
                   {k: v for k, v in getattr(comm, "calibration", {}).items() if k != "sweep"},
                   getattr(prediction, "buckets", None) is not None,
                   getattr(prediction, "recommended_bucket_bytes", lambda: None)(),
                   _finite(spread(getattr(prediction, "rounds", None) or [])),
                   getattr(prediction, "interaction", None))

    @classmethod
    def from_dict(cls, data: Mapping) -> "PredictedStep":
        """From the JSON form (:meth:`to_dict`, ``Prediction.to_dict()``); missing keys
        are missing fields."""
        return cls(dict(data.get("phases") or {}), data.get("total"),
                   tuple((str(m.get("name", "?")), m.get("seconds"))
                         for m in data.get("submodels") or []),
                   data.get("call_overhead"), data.get("allreduce_host"), data.get("wait"),
                   data.get("alpha"), data.get("beta"), data.get("gamma"),
                   data.get("fusion_threshold"), data.get("recommended_fusion_threshold"),
                   tuple(data.get("whatif") or []), dict(data.get("calibration") or {}),
                   bool(data.get("overlap")), data.get("recommended_bucket_bytes"),
                   data.get("rounds_spread"), data.get("interaction"))

    def to_dict(self) -> dict:
        """The JSON form: the report's ``prediction`` object."""
        return {"phases": dict(self.phases), "total": self.total,
                "submodels": [{"name": n, "seconds": s} for n, s in self.submodels],
                "call_overhead": self.call_overhead, "allreduce_host": self.allreduce_host,
                "wait": self.wait, "alpha": self.alpha, "beta": self.beta, "gamma": self.gamma,
                "fusion_threshold": self.fusion_threshold,
                "recommended_fusion_threshold": self.recommended_fusion_threshold,
                "whatif": [dict(w) for w in self.whatif],
                "calibration": dict(self.calibration), "overlap": self.overlap,
                "recommended_bucket_bytes": self.recommended_bucket_bytes,
                "rounds_spread": self.rounds_spread, "interaction": self.interaction}
