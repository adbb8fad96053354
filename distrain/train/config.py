"""The training program's configuration: one dataclass, built from argv or in Python.

Validation happens here, before TensorFlow is imported, so bad input costs nothing.

Example:
    >>> cfg = TrainConfig(model="cnn", dataset="digits", epochs=2)
    >>> cfg.global_batch_size(4)
    128
"""
from __future__ import annotations

import argparse
import dataclasses
import glob
import os
import re

from distrain.environment import BACKENDS
from distrain.errors import UsageError
from distrain.ops import COMPRESSIONS
from distrain.train.applications import APPLICATIONS, DEFAULT_IMAGE_SIZE, application_name
from distrain.train.data.synthetic import SyntheticSpec
from distrain.train.transformer import TransformerShape

__all__ = ["TrainConfig", "build_parser", "config_from_argv", "BUILTIN_MODELS",
           "BUILTIN_DATASETS"]

BUILTIN_MODELS = ("mlp", "cnn", "resnet") + tuple(APPLICATIONS) + ("transformer",)
BUILTIN_DATASETS = ("synthetic", "digits")
_FACTORY = re.compile(r"[A-Za-z_][\w.]*:[A-Za-z_]\w*")


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Everything one training run needs.

    Attributes:
        model: ``mlp``, ``cnn``, ``resnet``, ``resnet50``, ``mobilenet_v2``,
            ``efficientnet_b0``, ``keras.applications.NAME``, ``transformer`` or
            ``package.module:factory``.
        dataset: ``synthetic``, ``digits``, ``npz:PATH``, ``images:DIR``,
            ``tfrecord:GLOB`` or ``package.module:factory`` (see :mod:`distrain.train.data`).
        image_size: ``(height, width)`` images are resized to (None: the first image's),
            and the size of synthetic images (None: 16, or 224 for Keras Applications).
        epochs: passes over the training data.
        steps_per_epoch: stop an epoch after this many steps (None: the whole shard).
        batch_size: samples per rank per step; the global batch is this times the size.
        learning_rate: the base rate, before scaling by the number of ranks.
        optimizer: ``sgd`` or ``adam``.
        momentum: SGD momentum.
        scale_lr: multiply the rate by the number of ranks (Horovod's rule).
        warmup_epochs: ramp the scaled rate up from the base rate over this many epochs.
        compression: ``none``, ``fp16`` or ``bf16`` for the gradient allreduce.
        mixed_precision: compute in bfloat16, keep variables in float32.
        seed: the base seed; each rank derives its own from it.
        threads: TensorFlow intra-op threads per rank (None: cores / ranks on the host).
        checkpoint_dir: where rank 0 writes checkpoints (None: no checkpoints).
        checkpoint_every: save every this many steps (0: only at the end).
        resume: restore the checkpoint in ``checkpoint_dir`` before training.
        keep_checkpoints: also keep the last this many checkpoints as
            ``checkpoint-STEP.npz`` (0: only the latest, ``checkpoint.npz``).
        global_batch: keep the global batch at this many samples whatever the number of
            ranks (the per-rank batch is it divided by the ranks, and the rate is ``--lr``
            unscaled); None: ``batch_size`` per rank.
        resize_warmup_steps: after a resume on another number of ranks, ramp the learning
            rate from the checkpoint's to the new size's over this many steps.
        check_consistency: every this many steps check all ranks hold the same weights.
        synthetic_samples: the size of the synthetic training set.
        transformer_layers, transformer_width, transformer_heads: the transformer's
            encoder blocks, width and attention heads (:class:`TransformerShape`).
        sequence_length: tokens per synthetic sample for the transformer.
        vocab_size: the transformer's vocabulary: token ids are ``0 .. vocab_size - 1``.
        backend: ``auto``, ``mpi``, ``horovod`` or ``local``.
        verbose: let every rank print, not only rank 0.
        quiet: print nothing but errors (benchmarks).
        timing_warmup: steps left out of the timing report.
        report_every: print the timing report every this many steps (0: at the end).
        report: write the timing report as JSON here.
        timeline: write a Chrome trace of every rank's phases here.
        plot: draw the per-rank phase bars here (PNG).
        calibrate: redo the cost model's allreduce calibration.
        cost_model: predict the step time and print it beside the measured one.
        overlap: reduce gradient buckets while backward runs (``--overlap``), or all after
            backward (``--no-overlap``); None follows ``DISTRAIN_OVERLAP`` (off unless 1).
        sync_batch_norm: make the model's BatchNormalization layers SyncBatchNormalization
            (statistics of the global batch, one allreduce per layer in training).
        backward_passes: forward and backward passes per step, each on ``batch_size``
            samples, their gradients averaged locally before the step's one allreduce.
    """

    model: str = "mlp"
    dataset: str = "synthetic"
    image_size: tuple[int, int] | None = None
    epochs: int = 1
    steps_per_epoch: int | None = None
    batch_size: int = 32
    learning_rate: float = 0.01
    optimizer: str = "sgd"
    momentum: float = 0.9
    scale_lr: bool = True
    warmup_epochs: float = 1.0
    compression: str = "none"
    mixed_precision: bool = False
    seed: int = 42
    threads: int | None = None
    checkpoint_dir: str | None = None
    checkpoint_every: int = 0
    resume: bool = False
    keep_checkpoints: int = 0
    global_batch: int | None = None
    resize_warmup_steps: int = 20
    check_consistency: int = 0
    synthetic_samples: int = 4096
    transformer_layers: int = 4
    transformer_width: int = 512
    transformer_heads: int = 8
    sequence_length: int = 128
    vocab_size: int = 30522
    backend: str = "auto"
    verbose: bool = False
    quiet: bool = False
    timing_warmup: int = 2
    report_every: int = 0
    report: str | None = None
    timeline: str | None = None
    plot: str | None = None
    calibrate: bool = False
    cost_model: bool = True
    overlap: bool | None = None
    backward_passes: int = 1
    sync_batch_norm: bool = False

    def __post_init__(self):
        positive = {"epochs": self.epochs, "batch-size": self.batch_size,
                    "synthetic-samples": self.synthetic_samples,
                    "backward-passes": self.backward_passes}
        for flag, value in positive.items():
            if not isinstance(value, int) or value <= 0:
                raise UsageError(f"--{flag} must be a positive integer, got {value!r}")
        if self.steps_per_epoch is not None and self.steps_per_epoch <= 0:
            raise UsageError(f"--steps-per-epoch must be positive, got {self.steps_per_epoch}")
        for flag, value in {"checkpoint-every": self.checkpoint_every,
                            "check-consistency": self.check_consistency,
                            "timing-warmup": self.timing_warmup,
                            "report-every": self.report_every,
                            "keep-checkpoints": self.keep_checkpoints,
                            "resize-warmup-steps": self.resize_warmup_steps}.items():
            if value < 0:
                raise UsageError(f"--{flag} must be 0 or more, got {value}")
        if self.threads is not None and self.threads <= 0:
            raise UsageError(f"--threads must be positive, got {self.threads}")
        if not self.learning_rate > 0:
            raise UsageError(f"--lr must be positive, got {self.learning_rate}")
        if self.warmup_epochs < 0:
            raise UsageError(f"--warmup-epochs must be 0 or more, got {self.warmup_epochs}")
        if self.model not in BUILTIN_MODELS and not _FACTORY.fullmatch(self.model) and \
                application_name(self.model) is None:
            raise UsageError(f"unknown model {self.model!r}: use one of "
                             f"{', '.join(BUILTIN_MODELS)}, keras.applications.NAME or "
                             f"package.module:factory")
        self.transformer_shape()
        _check_dataset(self.dataset)
        if isinstance(self.image_size, int):
            object.__setattr__(self, "image_size", (self.image_size, self.image_size))
        if self.image_size is not None and (len(self.image_size) != 2 or
                                            min(self.image_size) <= 0):
            raise UsageError(f"--image-size must be N or HxW with positive sizes, got "
                             f"{self.image_size!r}")
        if self.optimizer not in ("sgd", "adam"):
            raise UsageError(f"unknown optimizer {self.optimizer!r}: use sgd or adam")
        if self.compression not in COMPRESSIONS:
            raise UsageError(f"unknown compression {self.compression!r}: use "
                             f"{', '.join(COMPRESSIONS)}")
        if self.backend not in ("auto",) + BACKENDS:
            raise UsageError(f"unknown backend {self.backend!r}: use auto, "
                             f"{', '.join(BACKENDS[:-1])} or {BACKENDS[-1]}")
        if (self.resume or self.checkpoint_every or self.keep_checkpoints) and \
                not self.checkpoint_dir:
            raise UsageError("--resume, --checkpoint-every and --keep-checkpoints need "
                             "--checkpoint-dir DIR")
        if self.global_batch is not None and (not isinstance(self.global_batch, int)
                                              or self.global_batch <= 0):
            raise UsageError(f"--global-batch-size must be a positive integer, got "
                             f"{self.global_batch!r}")

    def rank_step_batch(self) -> int:
        """The samples of one step on one rank: every backward pass's batch."""
        return self.batch_size * self.backward_passes

    def global_batch_size(self, size: int) -> int:
        """The samples of one step across ``size`` ranks."""
        return self.rank_step_batch() * size

    def transformer_shape(self) -> TransformerShape:
        """The transformer's size from the ``--transformer-*``, ``--sequence-length`` and
        ``--vocab-size`` flags.

        Raises:
            UsageError: a value out of range (checked for every model).
        """
        return TransformerShape(self.transformer_layers, self.transformer_width,
                                self.transformer_heads, self.sequence_length,
                                self.vocab_size)

    def synthetic_spec(self) -> SyntheticSpec:
        """What ``--dataset synthetic`` holds for this model: token ids of
        ``--sequence-length`` for the transformer, RGB images of ``--image-size`` (default
        224) for a Keras Application, grey ones (default 16) for the others."""
        if self.model == "transformer":
            return SyntheticSpec(self.synthetic_samples, (self.sequence_length,),
                                 self.vocab_size)
        if application_name(self.model) is not None:
            size = self.image_size or (DEFAULT_IMAGE_SIZE, DEFAULT_IMAGE_SIZE)
            return SyntheticSpec(self.synthetic_samples, tuple(size) + (3,))
        return SyntheticSpec(self.synthetic_samples, tuple(self.image_size or (16, 16)) + (1,))


def _check_dataset(spec: str) -> None:
    """Raises UsageError for a ``--dataset`` that names nothing that exists."""
    if spec in BUILTIN_DATASETS:
        return
    kind, _, where = spec.partition(":")
    if kind == "npz":
        if not os.path.isfile(where):
            raise UsageError(f"dataset file {where!r} does not exist: give npz:PATH of a .npz "
                             f"with x_train and y_train")
    elif kind == "images":
        if not os.path.isdir(where):
            raise UsageError(f"image directory {where!r} does not exist: give images:DIR of a "
                             f"folder with one subfolder of images per class")
    elif kind == "tfrecord":
        if not glob.glob(where):
            raise UsageError(f"no files match {where!r}: give tfrecord:GLOB of existing "
                             f"TFRecord files")
    elif not _FACTORY.fullmatch(spec):
        raise UsageError(f"unknown dataset {spec!r}: use synthetic, digits, npz:PATH, "
                         f"images:DIR, tfrecord:GLOB or package.module:factory")


def _image_size(text: str) -> tuple[int, int]:
    height, _, width = text.lower().partition("x")
    try:
        return int(height), int(width or height)
    except ValueError:
        raise UsageError(f"--image-size must be N or HxW (e.g. 32 or 64x48), got "
                         f"{text!r}") from None


def build_parser() -> argparse.ArgumentParser:
    """The ``python -m distrain.train`` argument parser (errors raise :class:`UsageError`)."""
    p = _Parser(prog="python -m distrain.train",
                description="Data-parallel Keras training over MPI. Launch with distrain-run, "
                            "mpirun, horovodrun or srun, or run alone as one rank.")
    d = TrainConfig()
    p.add_argument("--model", default=d.model,
                   help="mlp, cnn, resnet, resnet50, mobilenet_v2, efficientnet_b0, "
                        "keras.applications.NAME (untrained), transformer, or "
                        "package.module:factory (default %(default)s)")
    p.add_argument("--dataset", default=d.dataset,
                   help="synthetic, digits (scikit-learn), npz:PATH, images:DIR (one subfolder "
                        "per class), tfrecord:GLOB (label + image or x features) or "
                        "package.module:factory returning a tf.data.Dataset of (x, y); "
                        "every rank runs the same steps, the remainder is dropped "
                        "(default %(default)s)")
    p.add_argument("--image-size", type=_image_size, default=None, metavar="N|HxW",
                   help="resize images:/tfrecord: images (default: the first image's size); "
                        "the size of synthetic images (default 16, 224 for Keras "
                        "Applications)")
    p.add_argument("--epochs", type=int, default=d.epochs)
    p.add_argument("--steps-per-epoch", type=int, default=None)
    p.add_argument("--batch-size", type=int, default=d.batch_size, help="per rank")
    p.add_argument("--lr", dest="learning_rate", type=float, default=d.learning_rate,
                   help="base learning rate, scaled by the number of ranks")
    p.add_argument("--optimizer", default=d.optimizer, choices=("sgd", "adam"))
    p.add_argument("--momentum", type=float, default=d.momentum)
    p.add_argument("--no-scale-lr", dest="scale_lr", action="store_false")
    p.add_argument("--warmup-epochs", type=float, default=d.warmup_epochs)
    p.add_argument("--compression", default=d.compression)
    p.add_argument("--mixed-precision", action="store_true")
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--threads", type=int, default=None,
                   help="TensorFlow threads per rank (default: cores / ranks on the host)")
    p.add_argument("--checkpoint-dir", default=None)
    p.add_argument("--checkpoint-every", type=int, default=d.checkpoint_every,
                   help="steps between checkpoints (0: only at the end)")
    p.add_argument("--resume", action="store_true")
    p.add_argument("--keep-checkpoints", type=int, default=d.keep_checkpoints, metavar="N",
                   help="also keep the last N checkpoints as checkpoint-STEP.npz")
    p.add_argument("--global-batch-size", dest="global_batch", type=int, default=None,
                   metavar="N", help="fix the global batch at N samples on any number of "
                                     "ranks (per-rank batch N / ranks; --lr not scaled)")
    p.add_argument("--resize-warmup-steps", type=int, default=d.resize_warmup_steps,
                   metavar="N", help="after a resume on another number of ranks, ramp the "
                                     "learning rate to the new size's over N steps")
    p.add_argument("--check-consistency", type=int, default=d.check_consistency,
                   metavar="N", help="verify identical weights on all ranks every N steps")
    p.add_argument("--synthetic-samples", type=int, default=d.synthetic_samples)
    p.add_argument("--transformer-layers", type=int, default=d.transformer_layers, metavar="N",
                   help="--model transformer: encoder blocks (default %(default)s)")
    p.add_argument("--transformer-width", type=int, default=d.transformer_width, metavar="N",
                   help="model width, a multiple of the heads (default %(default)s)")
    p.add_argument("--transformer-heads", type=int, default=d.transformer_heads, metavar="N",
                   help="attention heads (default %(default)s)")
    p.add_argument("--sequence-length", type=int, default=d.sequence_length, metavar="N",
                   help="tokens per synthetic sample (default %(default)s)")
    p.add_argument("--vocab-size", type=int, default=d.vocab_size, metavar="N",
                   help="token ids 0..N-1 (default %(default)s)")
    p.add_argument("--backend", default=d.backend)
    p.add_argument("--verbose", action="store_true", help="every rank prints")
    p.add_argument("--quiet", action="store_true", help="print nothing but errors")
    p.add_argument("--timing-warmup", type=int, default=d.timing_warmup,
                   help="steps left out of the timing report (default %(default)s)")
    p.add_argument("--report-every", type=int, default=d.report_every)
    p.add_argument("--report", default=None, metavar="FILE.json")
    p.add_argument("--timeline", default=None, metavar="FILE.json")
    p.add_argument("--plot", default=None, metavar="FILE.png")
    p.add_argument("--calibrate", action="store_true",
                   help="redo the cost model's allreduce calibration")
    p.add_argument("--no-cost-model", dest="cost_model", action="store_false")
    p.add_argument("--overlap", dest="overlap", action="store_true", default=d.overlap,
                   help="reduce gradient buckets while backward runs (DISTRAIN_OVERLAP=1)")
    p.add_argument("--no-overlap", dest="overlap", action="store_false",
                   help="reduce the gradients after backward (the default)")
    p.add_argument("--sync-batch-norm", action="store_true",
                   help="batch normalization over the global batch: the model's "
                        "BatchNormalization layers become SyncBatchNormalization, so N ranks "
                        "train as one process on the N batches together")
    p.add_argument("--backward-passes", type=int, default=d.backward_passes, metavar="N",
                   help="forward and backward passes per step, each on --batch-size samples, "
                        "gradients averaged locally and reduced once per step (Horovod's "
                        "backward_passes_per_step; default %(default)s)")
    return p


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        raise UsageError(f"{message} (see python -m distrain.train --help)")


def config_from_argv(argv: list[str] | None) -> TrainConfig:
    """Parses arguments into a validated :class:`TrainConfig`.

    Raises:
        UsageError: unknown flags or bad values.
    """
    args = build_parser().parse_args(argv)
    return TrainConfig(**vars(args))
