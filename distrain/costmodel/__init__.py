"""The step-time cost model: the sum of the sub-models' times plus the allreduce.

    step = data + sum_i T_i + interaction + allreduce + apply

- ``T_i``: each sub-model's forward and backward at the per-rank batch
  (:mod:`distrain.costmodel.compute`);
- ``interaction``: what the whole model, timed as one function, takes beyond the sum
  (signed; activations held until backward, optimizations across sub-models);
- ``allreduce``: the host's share (conversions, fusion copies, scaling) timed on the
  gradients' shapes (:mod:`distrain.costmodel.host`), plus the ring model over the actual
  fusion plan (:mod:`distrain.costmodel.ring`) with constants calibrated on the job
  (:mod:`distrain.costmodel.calibrate`), plus the wait for the slowest rank;
- ``data`` and ``apply``: a batch fetch and an optimizer update, timed alone.

The same model answers "what would p ranks buy" at the same per-rank batch.

Example (no training, no MPI needed)::

    from distrain import costmodel
    model = keras.applications.MobileNetV2(weights=None)
    prediction = costmodel.predict(model, batch_size=32,
                                   comm=costmodel.CommModel(size=8, alpha=5e-6, beta=1e-10))
    print(prediction.total, prediction.whatif[3])
"""
from distrain.costmodel.predict import (Prediction, call_cost, combine, expected_wait, predict,
                                       whatif)
from distrain.costmodel.ring import WHATIF_SIZES, CommModel, fit_alpha_beta, ring_time

__all__ = ["Prediction", "predict", "call_cost", "whatif", "combine", "expected_wait",
           "CommModel", "fit_alpha_beta", "ring_time", "WHATIF_SIZES"]
