"""``run(config)``: the training program from rank setup to the final report."""
from __future__ import annotations

import dataclasses
import time

import numpy as np

from distrain import collectives, ops
from distrain import environment as env
from distrain.keras_compat import optimizer_variables
from distrain.timing.timer import StepTimer
from distrain.train import checkpoint, data as datasets, resume
from distrain.train.agreement import agree
from distrain.train.config import TrainConfig
from distrain.train.heap import frozen_heap
from distrain.train.lr_schedule import Schedule
from distrain.train.models import build_model
from distrain.train.position import Position, position_of, rank_batch
from distrain.train.progress import Printer
from distrain.overlap import bucket_sizes, overlap_enabled
from distrain.train.rank_setup import configure_tensorflow, quiet_tensorflow, rank_threads
from distrain.train.step import TrainStep

__all__ = ["run", "TrainResult", "DivergenceError"]


class DivergenceError(RuntimeError):
    """Ranks hold different weights where data-parallel training keeps them identical."""


@dataclasses.dataclass
class TrainResult:
    """What a run did, on this rank."""

    steps: int
    loss: float
    accuracy: float
    test_accuracy: float | None
    weights_digest: str
    timer: StepTimer
    resumed_from: int | None = None
    prediction: object = None  # a distrain.costmodel.Prediction when the cost model ran
    gradient_bytes: int = 0    # the bytes of one rank's gradients, as allreduced (no wire cast)
    gradient_specs: tuple = ()  # (shape, dtype name) of each gradient, in the variables' order


def _build(config: TrainConfig, data):
    import keras
    if config.mixed_precision:
        keras.mixed_precision.set_global_policy("mixed_bfloat16")
    model = build_model(config.model, data.input_shape, data.num_classes,
                        config.transformer_shape())
    if config.sync_batch_norm:
        from distrain.tensorflow.sync_batch_norm import synchronized  # imports Keras
        model = synchronized(model)
    opt_class = keras.optimizers.SGD if config.optimizer == "sgd" else keras.optimizers.Adam
    kwargs = {"momentum": config.momentum} if config.optimizer == "sgd" else {}
    optimizer = opt_class(learning_rate=config.learning_rate, **kwargs)
    optimizer.build(model.trainable_variables)
    return model, optimizer


def run(config: TrainConfig) -> TrainResult:
    """Trains ``config.model`` on ``config.dataset`` on every rank of the job.

    Args:
        config: the run's configuration.

    Returns:
        This rank's :class:`TrainResult`.

    Raises:
        UsageError: bad input, raised on every rank alike.
        DivergenceError: ``--check-consistency`` found ranks with different weights.
    """
    world = env.detect_world()
    quiet_tensorflow()
    threads = rank_threads(config.threads, world.local_size)
    overlap = (overlap_enabled() if config.overlap is None else config.overlap) and \
        world.size > 1
    device = configure_tensorflow(threads, world.local_rank, config.seed + world.rank)
    collectives.init(None if config.backend == "auto" else config.backend)
    rank, size = collectives.rank(), collectives.size()
    printer = Printer(rank, config.verbose, config.quiet)
    config = agree(lambda: dataclasses.replace(
        config, batch_size=rank_batch(config.batch_size, config.global_batch, size,
                                      config.backward_passes)))
    elastic = _take_resize_requests(config, printer)
    data, steps = _open_data(config, rank, size)
    model, optimizer = agree(lambda: _build(config, data))
    if config.checkpoint_dir:
        agree(lambda: checkpoint.check_writable(config.checkpoint_dir) if rank == 0 else None)
    training = _Run(config, rank, size, printer, data, steps, model, optimizer, elastic,
                    overlap)
    resumed = training.resume_from_checkpoint() if resume.should_resume(config, rank) else None
    collectives.broadcast_variables(list(model.weights) + optimizer_variables(optimizer),
                                    root_rank=0)
    training.announce(device, resumed)
    return training.run()


def _open_data(config: TrainConfig, rank: int, size: int):
    """Opens this rank's shard of the dataset; returns it and the steps of an epoch, agreed
    by every rank."""
    data = agree(lambda: datasets.open_source(
        config.dataset, config.seed, config.rank_step_batch(), rank, size, config.image_size,
        config.synthetic_spec()))
    summary = agree(data.summary)  # this rank's shard, read once
    summaries = collectives.allgather_object(summary) if size > 1 else [summary]
    steps = agree(lambda: data.settle(summaries, config.rank_step_batch(), size,
                                       config.steps_per_epoch))
    return data, steps


@dataclasses.dataclass
class _Run:
    """One rank's training once its data, model and optimizer are built: what the loop, the
    checkpoints and the reports share.

    Attributes:
        config: the run's configuration, with this rank's batch size.
        steps, per_step, fresh: an epoch's steps, the global batch, and the samples of an
            epoch begun at this size.
        elastic: distrain-run's resize requests are listened for.
        position: where the run is between epochs (during one, where that epoch began).
        loss, accuracy: the last epoch's metrics, averaged over every rank.
        learning_rate: the rate the optimizer holds (None before the first step).
        saved: the step of the last checkpoint boundary, or None.
    """

    config: TrainConfig
    rank: int
    size: int
    printer: Printer
    data: object
    steps: int
    model: object
    optimizer: object
    elastic: bool
    overlap: bool
    timer: StepTimer = dataclasses.field(default_factory=StepTimer)
    prediction: object = None  # a distrain.costmodel.Prediction when the cost model ran
    resumed_from: int | None = None
    loss: float = float("nan")
    accuracy: float = float("nan")
    learning_rate: float | None = None
    saved: int | None = None

    def __post_init__(self):
        config = self.config
        self.per_step = config.global_batch_size(self.size)
        self.fresh = self.steps * self.per_step
        self.schedule = Schedule(config.learning_rate, self.size,
                                 config.scale_lr and not config.global_batch,
                                 int(config.warmup_epochs * self.steps))
        self.position = Position(0, 0, 0, self.fresh)

    def resume_from_checkpoint(self) -> tuple[dict, str]:
        """Rank 0 loads the checkpoint; every rank takes its position and learning rate.

        Returns:
            The checkpoint's header and what a change of size changed (``""`` if nothing).

        Raises:
            UsageError: the checkpoint is from another run or model, on every rank alike.
        """
        meta = agree(lambda: resume.restore(self.config, self.model, self.optimizer, self.size)
                      if self.rank == 0 else None)
        meta = collectives.allgather_object(meta)[0] if self.size > 1 else meta
        self.position = position_of(meta, self.steps, self.per_step).normalised(
            self.per_step, self.fresh)
        self.resumed_from = self.position.step
        changed = self.schedule.resume(meta, self.position.step,
                                       int(meta.get("size", self.size)),
                                       self.config.resize_warmup_steps)
        return meta, changed

    def announce(self, device: str, resumed: tuple[dict, str] | None) -> None:
        """Prints the run's first line and, after :meth:`resume_from_checkpoint`, where it
        resumed from.

        Args:
            device: what :func:`configure_tensorflow` placed this rank on.
            resumed: what :meth:`resume_from_checkpoint` returned, or None.
        """
        self.printer.line(f"distrain: {self.size} rank(s), backend "
                          f"{collectives.backend_name()}, {device}; model {self.config.model} "
                          f"({self.model.count_params():,} parameters"
                          f"{', SyncBatchNormalization' if self.config.sync_batch_norm else ''}"
                          f"), dataset {self.data.name}, global batch {self.per_step}, "
                          f"{self.steps} steps/epoch")
        if resumed:
            meta, changed = resumed
            self.printer.line(resume.resumed_line(meta, self.position, self.size,
                                                  self.per_step, changed, self._digest()))

    def run(self) -> TrainResult:
        """Trains from :attr:`position` to the last epoch, then saves, evaluates and reports.

        Returns:
            This rank's :class:`TrainResult`.

        Raises:
            DivergenceError: ``--check-consistency`` found ranks with different weights.
            HostsUpdatedInterrupt: distrain-run asked for a resize at a checkpoint boundary.
        """
        config, start = self.config, self.position.step
        if config.cost_model:
            self.prediction = self.predict()
        train_step = TrainStep(self.model, self.optimizer,
                               ops.Compression.by_name(config.compression), self.timer,
                               self.overlap, config.backward_passes)
        with frozen_heap():
            while self.position.epoch < config.epochs:
                self._epoch(train_step)
        step = self.position.step
        if self.rank == 0 and config.checkpoint_dir and step > start and self.saved != step:
            self.save(self.position)
        test_accuracy = self.evaluate()
        if test_accuracy is not None:
            self.printer.line(f"test accuracy {test_accuracy:.4f}")
        if self.timer.steps or self.size > 1:
            self.report(final=True)
        trainable = self.model.trainable_variables
        return TrainResult(step, self.loss, self.accuracy, test_accuracy, self._digest(),
                           self.timer, self.resumed_from, self.prediction,
                           sum(np.asarray(v).nbytes for v in trainable),
                           tuple((tuple(v.shape), np.asarray(v).dtype.name)
                                 for v in trainable))

    def _epoch(self, train_step: TrainStep) -> None:
        """Trains what is left of the epoch at :attr:`position`, prints its progress and
        metrics, and moves :attr:`position` to the start of the next one."""
        config, per_step, position = self.config, self.per_step, self.position
        step, epoch = position.step, position.epoch
        offset, budget = position.epoch_samples, position.epoch_budget
        first, remaining = -(-offset // per_step), position.steps_left(per_step)
        self.printer.start_epoch(epoch, config.epochs, first + remaining)
        sums = np.zeros(3)  # loss x samples, correct, samples
        began = time.perf_counter()
        batches = self.data.batches(epoch, config.seed, config.rank_step_batch(), self.rank,
                                    self.size, remaining, offset=offset)
        for index in range(remaining):
            lr = self.schedule.at(step)
            if lr != self.learning_rate:
                self.optimizer.learning_rate.assign(lr)
                self.learning_rate = lr
            with self.timer.step(step):
                step_loss, correct, samples = train_step(step, batches)
            step_loss, correct = float(step_loss), float(correct)
            step += 1
            offset += per_step
            sums += (step_loss * samples, correct, samples)
            self.printer.update(first + index + 1, step_loss, correct / samples, lr)
            last = epoch + 1 == config.epochs and index + 1 == remaining
            self._between_steps(Position(step, epoch, offset, budget), last)
        totals = collectives.allreduce(sums, op=ops.Sum, name="epoch metrics")
        if totals[2]:
            self.loss, self.accuracy = totals[0] / totals[2], totals[1] / totals[2]
        self.printer.end_epoch(epoch, self.loss, self.accuracy, time.perf_counter() - began,
                               int(totals[2]), self.size)
        self.position = Position(step, epoch + 1, 0, self.fresh)
        if self.elastic and not config.checkpoint_every and epoch + 1 < config.epochs:
            self.boundary(self.position)

    def _between_steps(self, here: Position, last: bool) -> None:
        """After the step that brought the run ``here``: the consistency check, the
        checkpoint boundary and the timing report whose interval has come round (no report
        after the run's ``last`` step: the final one follows)."""
        config, step = self.config, here.step
        if config.check_consistency and step % config.check_consistency == 0:
            self.check_consistency(step)
        if config.checkpoint_every and step % config.checkpoint_every == 0:
            self.boundary(here.normalised(self.per_step, self.fresh))
        if config.report_every and step % config.report_every == 0 and not last:
            self.report(final=False)

    def boundary(self, position: Position) -> None:
        """A checkpoint boundary: rank 0 saves; in an elastic job every rank then learns
        whether distrain-run asked for a resize, and if so the run stops here (the checkpoint
        is on disk before any rank leaves).

        Raises:
            HostsUpdatedInterrupt: distrain-run asked for a resize.
        """
        if self.rank == 0:
            self.save(position)
        self.saved = position.step
        if self.elastic:
            from distrain.elastic import HostsUpdatedInterrupt, requests
            if requests.agreed():
                collectives.barrier()
                raise HostsUpdatedInterrupt(False, f"stopping at step {position.step} for a "
                                                   f"resize; the checkpoint is saved")

    def save(self, position: Position) -> None:
        """Writes a checkpoint of the model, the optimizer and ``position`` (rank 0 only)."""
        config = self.config
        path = checkpoint.save(config.checkpoint_dir, position.step, position.epoch,
                               [np.asarray(v) for v in self.model.weights],
                               [np.asarray(v) for v in optimizer_variables(self.optimizer)],
                               resume.header(config, position, self.size, self.schedule),
                               keep=config.keep_checkpoints)
        self.printer.line(f"checkpoint saved at step {position.step}: {path}")

    def check_consistency(self, step: int) -> None:
        """Compares every rank's trainable weights (a collective).

        Raises:
            DivergenceError: some rank's weights differ from rank 0's.
        """
        digest = checkpoint.weights_digest(np.asarray(v) for v in self.model.trainable_variables)
        digests = collectives.allgather_object(digest)
        diverged = [r for r, d in enumerate(digests) if d != digests[0]]
        if diverged:
            raise DivergenceError(
                f"weights diverged at step {step}: rank{'s' if len(diverged) > 1 else ''} "
                f"{', '.join(map(str, diverged))} differ{'' if len(diverged) > 1 else 's'} "
                f"from rank 0; look for rank-dependent updates to trainable variables")

    def report(self, final: bool) -> None:
        """Gathers every rank's timing on rank 0, prints it, and writes the files asked for;
        a final report whose allreduce disagrees with the calibration marks the cache stale."""
        from distrain.timing.report import format_report, gather_report, write_json
        from distrain.timing.trust import calibration_disagreement
        config, printer = self.config, self.printer
        trace = final and config.timeline is not None
        report = gather_report(self.timer, self.rank, env.node_name(),
                               config.timing_warmup, self.per_step, self.prediction,
                               trace_steps=None if trace else 0)
        if report is None:
            return
        printer.line(format_report(report))
        if not final:
            return
        error = calibration_disagreement(report)
        if error is not None and report.prediction.calibration.get("path"):
            from distrain.costmodel.calibrate import mark_stale
            mark_stale(report.prediction.calibration["path"],
                       f"a run's allreduce was predicted {error:+.0%} off")
        if config.report:
            write_json(report, config.report)
            printer.line(f"timing report written to {config.report}")
        if config.timeline:
            from distrain.timing.trace import write_trace
            write_trace(report, config.timeline)
            printer.line(f"timeline written to {config.timeline} (open in ui.perfetto.dev)")
        if config.plot:
            from distrain.timing.plot import plot
            plot(report, config.plot)
            printer.line(f"plot written to {config.plot}")

    def predict(self):
        """Every rank times the cost model's terms; the median across ranks is the prediction
        (with overlap, of the step that reduces buckets during backward)."""
        from distrain import costmodel
        from distrain.costmodel.calibrate import load_or_calibrate
        config = self.config
        wire_dtype = ops.Compression.by_name(config.compression).wire_dtype
        comm = dataclasses.replace(load_or_calibrate(config.calibrate), wire_dtype=wire_dtype)
        batch = config.rank_step_batch()  # N backward passes timed as one on N batches
        mine = costmodel.predict(
            self.model, batch, self.data.num_classes, self.optimizer,
            self.data.sample(batch), comm, sync=collectives.barrier,
            agree=lambda rounds: collectives.allreduce(np.int64(rounds), op=ops.Max,
                                                       name="cost model rounds"),
            buckets=bucket_sizes() if self.overlap else None)
        return costmodel.combine(collectives.allgather_object(mine))

    def evaluate(self) -> float | None:
        """The test accuracy over every rank's evaluation shard, or None without one."""
        shard = self.data.eval_shard(self.rank, self.size)
        if shard is None:
            return None
        x, y = shard
        correct = 0
        if len(x):
            logits = self.model.predict(x, batch_size=max(self.config.batch_size, 256),
                                        verbose=0)
            correct = int(np.sum(np.argmax(logits, axis=-1) == y))
        totals = collectives.allreduce(np.array([correct, len(x)], np.int64), op=ops.Sum,
                                       name="test accuracy")
        return float(totals[0] / totals[1]) if totals[1] else None

    def _digest(self) -> str:
        return checkpoint.weights_digest(np.asarray(v) for v in self.model.weights)


def _take_resize_requests(config, printer) -> bool:
    """In an elastic job with checkpoints, listen for distrain-run's resize requests; without
    checkpoints say what a relaunch would cost."""
    from distrain.elastic import requests
    if not requests.elastic_job():
        return False
    if not config.checkpoint_dir:
        printer.line("distrain.train: warning: an elastic job without --checkpoint-dir starts "
                     "again from step 0 after every failure, and cannot grow")
        return False
    return requests.listen()
