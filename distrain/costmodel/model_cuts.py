"""Where the cost model cuts a model into sub-models, each timed on its own.

A layer's output is a cut point when nothing computed before it is needed after it: a chain
of layers (an MLP, a plain CNN) is cut after every layer, a residual network between its
blocks. Cutting only there keeps every sub-model a function of one tensor, so the sub-models
run one after the other compute what the model computes.

Hundreds of one-layer sub-models (a MobileNet's chains of convolution, batch norm and
activation) would each pay a call's cost and tell nothing a block's time does not. Where
layers are named by block (:func:`block_of`: Keras Applications' ``conv2_block1_...``,
``block_3_...``, ``block2a_...``, the transformer's ``encoder_block1``), only the cuts between
blocks are kept: each block is one sub-model, and so is each run of layers outside any block
(a stem, a head, a transition). ResNet50, MobileNetV2 and EfficientNetB0 are 18 sub-models
each; the transformer is its embedding, one per encoder block, and its head.

Example:
    >>> [name for name, _ in submodels(resnet50)][:3]
    ['conv1_pad..pool1_pool', 'conv2_block1', 'conv2_block2']
"""
from __future__ import annotations

import re

__all__ = ["submodels", "block_of"]


def _ids(tensors) -> list[int]:
    return [id(t) for t in (tensors if isinstance(tensors, (list, tuple)) else [tensors])]


_BLOCK = re.compile(r"(.*?block_?\d+[a-z]?)(?:_|$)")


def block_of(layer_name: str) -> str | None:
    """The block a layer belongs to by its name, or None.

    Example:
        >>> [block_of(n) for n in ("conv2_block1_1_conv", "block_3_expand", "block2a_se",
        ...                        "encoder_block4", "conv1_pad")]
        ['conv2_block1', 'block_3', 'block2a', 'encoder_block4', None]
    """
    match = _BLOCK.match(layer_name)
    return match.group(1) if match else None


def _by_block(layers, spans: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Merges adjacent ``(first, last)`` layer spans that start in the same block, and the
    runs of spans outside any block, when some layer is named by block."""
    blocks = [block_of(layer.name) for layer in layers]
    if not any(blocks):
        return spans
    merged = []
    for first, last in spans:
        if merged and blocks[merged[-1][0]] == blocks[first]:
            merged[-1] = (merged[-1][0], last)
        else:
            merged.append((first, last))
    return merged


def submodels(model) -> list:
    """Cuts ``model`` into sub-models at the tensors every path passes through.

    A layer's output is a cut point when nothing computed before it is needed after it. A
    chain of layers (an MLP, a plain CNN) is cut after every layer; a residual network is cut
    between its blocks, so each block, shortcut included, is one sub-model. Where layers are
    named by block (:func:`block_of`), only the cuts between blocks are kept: each block is
    one sub-model, and so is each run of layers outside any block (a stem, a head). A model
    whose layers cannot be traced (a subclassed model) is one sub-model.

    Returns:
        ``(name, sub-model)`` pairs in order; a name is the block's, or ``first..last``
        layer names (one layer: its name).
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
    spans, first = [], 0
    for i in range(len(layers)):
        live = {tid for later in needs[i + 1:] for tid in later if made_at.get(tid, i) <= i}
        if i + 1 < len(layers) and live != {outputs[i]}:
            continue
        spans.append((first, i))
        first = i + 1
    pieces = []
    for first, last in _by_block(layers, spans):
        block = block_of(layers[first].name)
        name = block or (layers[first].name if first == last else
                         f"{layers[first].name}..{layers[last].name}")
        piece = keras.Model(start, layers[last].output, name=name.replace("..", "_to_"))
        pieces.append((name, piece))
        start = layers[last].output
    return pieces
