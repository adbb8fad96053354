"""The gradients of the collectives, as Horovod 0.28.1 defines them.

- allreduce: the allreduce of the upstream gradients with the same op, compression and
  scale factors (for every op, Min, Max, Product and Adasum included, as Horovod does);
- allgather: the upstream gradient averaged over the set, this rank's rows of it;
- broadcast: the upstream gradient averaged over the set on the root, zeros elsewhere;
- alltoall: the upstream gradient sent back along the received splits;
- reducescatter: the upstream gradient scaled by the factors (and by the set's size for
  Sum), allgathered.

Importing this module registers them (:func:`distrain.op_bridge.register_gradient`);
:mod:`distrain.collectives` imports it.
"""
from __future__ import annotations

import sys

from distrain import gathering, reducing
from distrain.op_bridge import Call, register_gradient
from distrain.ops import Average, Sum

__all__: list[str] = []


@register_gradient("allreduce")
def _allreduce(call: Call, upstream, inputs, outputs):
    return reducing.grouped_allreduce(upstream, compression=call.compression, op=call.op,
                                      prescale_factor=call.prescale,
                                      postscale_factor=call.postscale,
                                      process_set=call.process_set,
                                      name=f"{call.label} (gradient)")


def _averaged(call: Call, upstream) -> list:
    return [reducing.allreduce(u, op=Average, name=f"{call.label} (gradient)",
                               process_set=call.process_set) for u in upstream]


@register_gradient("allgather")
def _allgather(call: Call, upstream, inputs, outputs):
    tf = sys.modules["tensorflow"]
    rows = [tf.reshape(tf.shape(x)[0] if x.shape.rank else tf.constant(1), [1])
            for x in inputs]
    counts = gathering.grouped_allgather(rows, name=f"{call.label} (gradient rows)",
                                         process_set=call.process_set)
    grads = []
    for x, g, c in zip(inputs, _averaged(call, upstream), counts):
        start = tf.reduce_sum(c[:call.rank])
        grads.append(tf.reshape(g[start:start + c[call.rank]], tf.shape(x)))
    return grads


@register_gradient("broadcast")
def _broadcast(call: Call, upstream, inputs, outputs):
    tf = sys.modules["tensorflow"]
    averaged = _averaged(call, upstream)
    return averaged if call.rank == call.root else [tf.zeros_like(g) for g in averaged]


@register_gradient("alltoall")
def _alltoall(call: Call, upstream, inputs, outputs):
    grad, _ = gathering.alltoall(upstream[0], splits=outputs[1],
                                 name=f"{call.label} (gradient)",
                                 process_set=call.process_set)
    return [grad]


@register_gradient("reducescatter")
def _reducescatter(call: Call, upstream, inputs, outputs):
    tf = sys.modules["tensorflow"]
    scale = call.prescale * call.postscale * (call.size if call.op is Sum else 1)
    return [gathering.allgather(u if scale == 1.0 else u * tf.cast(scale, u.dtype),
                                name=f"{call.label} (gradient)",
                                process_set=call.process_set) for u in upstream]
