"""Gradient shapes of real models, for benchmarks that need a realistic tensor list."""
from __future__ import annotations

__all__ = ["resnet50_shapes"]


def resnet50_shapes(classes: int = 1000) -> list[tuple[int, ...]]:
    """The trainable-variable shapes of ResNet-50 (v1.5, no conv biases, as in torchvision).

    Args:
        classes: width of the final dense layer.

    Returns:
        161 shapes holding 25.6 M float32 values (102 MB): convolution kernels (HWIO), batch-norm
        scales and offsets, the dense kernel and bias, in the order the layers run forward.
    """
    shapes: list[tuple[int, ...]] = []

    def conv_bn(k: int, cin: int, cout: int) -> None:
        shapes.extend([(k, k, cin, cout), (cout,), (cout,)])

    conv_bn(7, 3, 64)
    cin = 64
    for width, blocks in ((64, 3), (128, 4), (256, 6), (512, 3)):
        for block in range(blocks):
            conv_bn(1, cin, width)
            conv_bn(3, width, width)
            conv_bn(1, width, width * 4)
            if block == 0:
                conv_bn(1, cin, width * 4)
            cin = width * 4
    shapes.extend([(cin, classes), (classes,)])
    return shapes
